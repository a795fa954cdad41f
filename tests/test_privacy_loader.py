"""No identifier leaves the loader: keys, feature columns and cache files carry none."""

from __future__ import annotations

import numpy as np
import pydicom

from benchmark.data.dataset import load_dataset

NAME = "Svensson"
ID_PREFIX = "19450101-"   # ids look like Swedish personal numbers: 19450101-1001, ...


def test_planted_names_and_ids_appear_in_no_key_feature_or_cache_file(tiny_dataset, tmp_path):
    ds = tiny_dataset(planted_name=NAME, id_prefix=ID_PREFIX, oracle=True)
    ds.update_yaml(cache_dir=str(tmp_path / "cache"))
    # the planted values really are in the user's files: DICOM tags, file names, CSV
    dcm = next(ds.images.glob("*.dcm"))
    tags = pydicom.dcmread(dcm)
    assert str(tags.PatientName) == NAME and tags.PatientID.startswith(ID_PREFIX) and ID_PREFIX in dcm.name
    assert NAME in ds.register.read_text() and ID_PREFIX in ds.register.read_text()

    c = load_dataset(ds.yaml)
    c.pixels(16)
    c.pixels(8)
    planted = [NAME, ID_PREFIX, *ds.ids]

    outputs = [" ".join(c.keys.tolist()), c.register.to_csv(), " ".join(map(str, c.register.columns)),
               c.oracle.to_csv(), c.fingerprint, c.name, " ".join(c.categorical)]
    for text in outputs:
        assert not any(p in text for p in planted), text[:200]
    for col in c.register.select_dtypes("category"):
        assert not any(p in str(v) for v in c.register[col].cat.categories for p in planted)

    files = [p for p in (tmp_path / "cache").rglob("*") if p.is_file()]
    assert any(p.suffix == ".npy" for p in files)
    for f in files:
        data = f.read_bytes()
        for p in planted:
            assert p not in f.name and p.encode() not in data and p.encode("utf-16-le") not in data, (f.name, p)


def test_keys_are_positions_not_hashes_of_ids(tiny_dataset):
    c = load_dataset(tiny_dataset(id_prefix=ID_PREFIX).yaml)
    assert c.keys.tolist() == [f"P{i:05d}" for i in range(1, c.n_patients + 1)]
    assert np.unique(c.keys).size == c.n_patients
