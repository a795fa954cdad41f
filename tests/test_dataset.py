"""``load_dataset``: what a valid dataset becomes, and a one-line UserError for each bad input."""

from __future__ import annotations

import hashlib
import shutil
import warnings

import numpy as np
import pandas as pd
import pytest

from benchmark.data.dataset import DatasetWarning, load_dataset, load_dataset_file
from benchmark.errors import UserError


def load_quietly(path, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DatasetWarning)
        return load_dataset(path, **kwargs)


def expect_error(path, *fragments, **kwargs) -> str:
    with pytest.raises(UserError) as info:
        load_quietly(path, **kwargs)
    msg = str(info.value)
    assert "\n" not in msg, msg
    for f in fragments:
        assert f in msg, f"{f!r} not in: {msg}"
    return msg


def tree_digest(folder) -> dict:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


# ---------------------------------------------------------------------------- valid datasets

def test_tiny_dataset_fills_every_cohort_field(tiny_dataset):
    ds = tiny_dataset(oracle=True)
    c = load_dataset(ds.yaml)
    reg = ds.read_register()
    assert c.name == "tiny" and c.n_patients == 10
    assert c.y.dtype == np.int8 and c.y.tolist() == [int(g == "AFF") for g in reg["group"]]  # register row order
    assert c.keys.tolist() == [f"P{i:05d}" for i in range(1, 11)]
    assert list(c.register.columns) == ["age", "sex", "site", "bisfo", "bisfo_d"]  # no id, label or dropped column
    assert c.register["age"].dtype == np.float64 and c.register["bisfo_d"].isna().any()
    assert str(c.register["sex"].dtype) == "category" and c.categorical == ["sex", "site"]
    assert list(c.images.columns) == ["patient", "path"] and len(c.images) == 20
    assert all(p.startswith("/") for p in c.images["path"])
    assert np.bincount(c.images["patient"]).tolist() == [2] * 10
    assert list(c.oracle.columns) == ["oracle_register", "oracle_image", "oracle_both"] and len(c.oracle) == 10
    assert len(c.fingerprint) >= 16 and c.source == ds.yaml.resolve() and c.cache_dir is not None
    assert c.has_register and c.has_images


def test_keys_do_not_depend_on_the_ids(tiny_dataset):
    a = load_dataset(tiny_dataset(id_prefix="X").yaml)
    b = load_dataset(tiny_dataset(id_prefix="Y").yaml)
    assert a.keys.tolist() == b.keys.tolist()


def test_images_are_grouped_by_patient_and_belong_to_the_right_one(tiny_dataset):
    ds = tiny_dataset()
    man = ds.read_manifest().sample(frac=1.0, random_state=1)  # shuffled manifest
    ds.write_manifest(man)
    c = load_dataset(ds.yaml)
    assert (np.diff(c.images["patient"].to_numpy()) >= 0).all()
    for pos, path in zip(c.images["patient"], c.images["path"]):
        assert f"img_{ds.ids[pos]}_" in path


def test_fingerprint_is_stable_and_follows_the_data(tiny_dataset):
    ds = tiny_dataset()
    f1, f2 = load_dataset(ds.yaml).fingerprint, load_dataset(ds.yaml).fingerprint
    df = ds.read_register()
    df.loc[0, "age"] = "99"
    ds.write_register(df)
    assert f1 == f2 != load_dataset(ds.yaml).fingerprint


def test_register_only_and_image_only_cohorts_load(tiny_dataset):
    reg_only = load_dataset(tiny_dataset(images=None).yaml)
    assert reg_only.images is None and not reg_only.has_images and reg_only.register.shape == (10, 5)
    for mode in ("manifest", "pattern"):
        img_only = load_dataset(tiny_dataset(register=False, images=mode).yaml)
        assert img_only.register is None and not img_only.has_register
        assert img_only.n_patients == 10 and int(img_only.y.sum()) == 4 and len(img_only.images) == 20


def test_pattern_matches_paths_relative_to_root(tiny_dataset):
    c = load_dataset(tiny_dataset(images="pattern").yaml)
    assert len(c.images) == 20 and np.bincount(c.images["patient"]).tolist() == [2] * 10


def test_parquet_register_loads_like_csv(tiny_dataset):
    ds = tiny_dataset()
    csv = load_dataset(ds.yaml)
    pd.read_csv(ds.register).to_parquet(ds.dir / "register.parquet")
    ds.update_yaml(register="register.parquet")
    pq = load_dataset(ds.yaml)
    np.testing.assert_array_equal(csv.y, pq.y)
    pd.testing.assert_frame_equal(csv.register[["age", "bisfo", "bisfo_d"]], pq.register[["age", "bisfo", "bisfo_d"]])


def test_semicolon_csv_with_decimal_commas_and_numeric_labels(tiny_dataset):
    ds = tiny_dataset(images=None)
    df = ds.read_register()
    df["group"] = (df["group"] == "AFF").astype(int)
    df["age"] = df["age"].str.replace(".", ",", regex=False)
    df.to_csv(ds.register, index=False, sep=";")
    ds.update_yaml(label={"column": "group", "positive": 1})
    c = load_dataset(ds.yaml)
    assert c.y.tolist() == df["group"].tolist()
    assert c.register["age"].tolist() == pytest.approx([float(a.replace(",", ".")) for a in df["age"]])


def test_oracle_rows_are_aligned_to_patients(tiny_dataset):
    ds = tiny_dataset(oracle=True)
    ora = pd.read_csv(ds.dir / "oracle.csv")
    ora.iloc[::-1].to_csv(ds.dir / "oracle.csv", index=False)
    c = load_dataset(ds.yaml)
    np.testing.assert_allclose(c.oracle["oracle_both"], ora.set_index("patient_id").loc[ds.ids, "oracle_both"])


def test_patients_without_images_are_dropped_with_a_count_or_fail(tiny_dataset):
    ds = tiny_dataset()
    man = ds.read_manifest()
    ds.write_manifest(man[man["patient_id"] != ds.ids[2]])
    with pytest.warns(DatasetWarning, match="1 patients have no image"):
        c = load_dataset(ds.yaml)
    assert c.n_patients == 9 and len(c.register) == 9 and c.keys[-1] == "P00009"
    expect_error(ds.yaml, "register.csv, row 4, column 'patient_id'", "1 patients have no image", missing="fail")
    ds.update_yaml(missing_images="fail")
    expect_error(ds.yaml, "missing_images: drop")


def test_images_without_register_row_are_dropped_with_a_count_or_fail(tiny_dataset):
    ds = tiny_dataset()
    df = ds.read_register()
    df = df[df["patient_id"] != ds.ids[0]]
    ds.write_register(df)
    with pytest.warns(DatasetWarning, match="2 images of 1 patient ids have no row"):
        c = load_dataset(ds.yaml)
    assert c.n_patients == 9 and len(c.images) == 18
    ds.update_yaml(orphan_images="fail")
    expect_error(ds.yaml, "images.csv, row 2, column 'path'", "orphan_images: drop")


def test_loading_never_modifies_the_users_files(tiny_dataset):
    ds = tiny_dataset(oracle=True)
    before = tree_digest(ds.dir)
    c = load_dataset(ds.yaml)
    c.pixels(16)
    assert tree_digest(ds.dir) == before


def test_load_dataset_file_returns_the_parsed_spec(tiny_dataset):
    ds = tiny_dataset()
    spec = load_dataset_file(ds.yaml)
    assert spec.register == ds.register.resolve() and spec.label.positive == "AFF"
    assert spec.images.manifest == ds.manifest.resolve() and spec.drop_columns == ("name",)
    assert spec.missing_images == "drop"


# ---------------------------------------------------------------------------- bad inputs

def test_missing_dataset_file(tmp_path):
    expect_error(tmp_path / "nope.yaml", "nope.yaml", "not found")


def test_missing_register_and_image_root(tiny_dataset):
    ds = tiny_dataset()
    ds.update_yaml(register="gone.csv")
    expect_error(ds.yaml, "dataset.yaml, key 'register'", "'gone.csv' not found")
    ds = tiny_dataset()
    ds.update_yaml(images={"root": "nowhere/", "manifest": "images.csv"})
    expect_error(ds.yaml, "key 'images.root'", "folder 'nowhere/' not found")


def test_missing_image_file_names_the_manifest_row(tiny_dataset):
    ds = tiny_dataset()
    man = ds.read_manifest()
    (ds.images / man.loc[3, "path"]).unlink()
    msg = expect_error(ds.yaml, "images.csv, row 5, column 'path'", "image file not found")
    assert ds.ids[1] not in msg  # the file name holds the id: never quoted


def test_unknown_yaml_key_is_named(tiny_dataset):
    ds = tiny_dataset()
    ds.update_yaml(lable={"column": "group"})
    expect_error(ds.yaml, "key 'lable'", "unknown key")
    ds = tiny_dataset()
    ds.update_yaml(images={"root": "images/", "manifest": "images.csv", "extra": 1})
    expect_error(ds.yaml, "key 'images.extra'", "unknown key")


def test_invalid_yaml_names_the_line(tiny_dataset):
    ds = tiny_dataset()
    ds.yaml.write_text("name: x\nlabel: {column: group\n")
    expect_error(ds.yaml, "dataset.yaml, line", "not valid YAML")


def test_unknown_label_value_names_row_and_column(tiny_dataset):
    ds = tiny_dataset()
    df = ds.read_register()
    df.loc[4, "group"] = "aff?"
    ds.write_register(df)
    expect_error(ds.yaml, "register.csv, row 6, column 'group'", "'aff?'", "neither positive 'AFF' nor negative 'NFF'")


def test_more_than_two_classes_without_negative(tiny_dataset):
    ds = tiny_dataset()
    df = ds.read_register()
    df.loc[4, "group"] = "unsure"
    ds.write_register(df)
    ds.update_yaml(label={"column": "group", "positive": "AFF"})
    expect_error(ds.yaml, "column 'group'", "3 different values", "more than two classes", "label.negative")


def test_one_class_only(tiny_dataset):
    ds = tiny_dataset(images=None)
    df = ds.read_register()
    df["group"] = "NFF"
    ds.write_register(df)
    expect_error(ds.yaml, "register.csv", "one class only", "label.positive")


def test_duplicate_patient_ids_name_both_rows(tiny_dataset):
    ds = tiny_dataset()
    df = ds.read_register()
    df.loc[6, "patient_id"] = df.loc[1, "patient_id"]
    ds.write_register(df)
    msg = expect_error(ds.yaml, "register.csv, rows 3 and 8, column 'patient_id'", "appears twice")
    assert ds.ids[1] not in msg


def test_empty_patient_id(tiny_dataset):
    ds = tiny_dataset(images=None)
    df = ds.read_register()
    df.loc[0, "patient_id"] = ""
    ds.write_register(df)
    expect_error(ds.yaml, "register.csv, row 2, column 'patient_id'", "empty")


def test_text_in_numeric_column_names_row_column_and_categorical(tiny_dataset):
    ds = tiny_dataset()
    df = ds.read_register()
    df.loc[2, "age"] = "eighty"
    df.loc[5, "age"] = "n/a?"
    ds.write_register(df)
    msg = expect_error(ds.yaml, "register.csv, row 4, column 'age'", "text in a numeric column (2 cells)", "categorical")
    assert "eighty" not in msg


def test_undeclared_text_column_is_an_error_until_listed_as_categorical(tiny_dataset):
    ds = tiny_dataset(images=None)
    ds.update_yaml(categorical=["site"])   # the text column 'sex' is now undeclared
    expect_error(ds.yaml, "column 'sex'", "numeric column")
    ds.update_yaml(categorical=["sex", "site"])
    assert "sex" in load_dataset(ds.yaml).register.columns
    # an identifier is refused even when listed as a category (tests/test_register_safety.py)
    ds.update_yaml(drop_columns=[], categorical=["sex", "site", "name"])
    expect_error(ds.yaml, "column 'name'", "identifier", "drop_columns")


def test_missing_id_or_label_column(tiny_dataset):
    ds = tiny_dataset()
    ds.update_yaml(id_column="pid")
    expect_error(ds.yaml, "register.csv", "column 'pid' (id_column", "not found", "'patient_id'")
    ds = tiny_dataset()
    ds.update_yaml(label={"column": "diagnosis", "positive": "AFF"})
    expect_error(ds.yaml, "register.csv", "column 'diagnosis' (label.column", "not found")


def test_unknown_drop_or_categorical_column(tiny_dataset):
    ds = tiny_dataset()
    ds.update_yaml(drop_columns=["personnummer"])
    expect_error(ds.yaml, "key 'drop_columns'", "'personnummer'", "not in register.csv")


def test_empty_register_file_and_header_only(tiny_dataset):
    ds = tiny_dataset()
    ds.register.write_bytes(b"")
    expect_error(ds.yaml, "register.csv", "empty")
    ds.register.write_text("patient_id,group,name,age\n")
    expect_error(ds.yaml, "register.csv", "no data rows")


def test_manifest_and_pattern_together_or_pattern_without_patient_group(tiny_dataset):
    ds = tiny_dataset()
    ds.update_yaml(images={"root": "images/", "manifest": "images.csv", "pattern": "x"})
    expect_error(ds.yaml, "key 'images'", "exactly one of 'manifest'")
    ds.update_yaml(images={"root": "images/", "pattern": r"img_(\d+)\.png"})
    expect_error(ds.yaml, "key 'images.pattern'", "(?P<patient_id>")


def test_neither_register_nor_images(tiny_dataset):
    ds = tiny_dataset()
    ds.update_yaml(register=None, images=None)
    expect_error(ds.yaml, "dataset.yaml", "needs 'register'")


def test_truncated_dicom_names_the_manifest_row(tiny_dataset):
    ds = tiny_dataset()
    man = ds.read_manifest()
    row = int(np.flatnonzero(man["path"].str.endswith(".dcm"))[1])
    p = ds.images / man.loc[row, "path"]
    p.write_bytes(p.read_bytes()[:-100])
    expect_error(ds.yaml, f"images.csv, row {row + 2}, column 'path'", "truncated DICOM")


def test_compressed_dicom_without_decoder_names_the_row_and_the_package(tiny_dataset, monkeypatch):
    from pydicom.data import get_testdata_file
    from pydicom.pixels.decoders.base import get_decoder
    from pydicom.uid import JPEGLSLossless

    ds = tiny_dataset()
    man = ds.read_manifest()
    shutil.copy(get_testdata_file("MR_small_jpeg_ls_lossless.dcm"), ds.images / man.loc[0, "path"])
    decoder = get_decoder(JPEGLSLossless)
    monkeypatch.setattr(decoder, "_available", {})
    monkeypatch.setattr(decoder, "_unavailable", {"pylibjpeg": ("pylibjpeg>=2.0", "pylibjpeg-libjpeg>=2.1")})
    expect_error(ds.yaml, "images.csv, row 2, column 'path'", "JPEG-LS", "pip install pylibjpeg pylibjpeg-libjpeg")


def test_image_only_patient_with_two_labels(tiny_dataset):
    ds = tiny_dataset(register=False)
    man = ds.read_manifest()
    man.loc[1, "group"] = "AFF" if man.loc[1, "group"] == "NFF" else "NFF"
    ds.write_manifest(man)
    expect_error(ds.yaml, "images.csv, row 3", "differs from that of the patient's first image")


def test_first_error_says_how_many_more_there_are(tiny_dataset):
    ds = tiny_dataset()
    df = ds.read_register()
    df.loc[2, "age"] = "old"
    df.loc[3, "bisfo"] = "yes"
    ds.write_register(df)
    expect_error(ds.yaml, "row 4, column 'age'", "1 more problem", "python -m benchmark validate")


def test_image_header_checks_are_skipped_once_the_same_files_passed(tiny_dataset, monkeypatch):
    import benchmark.data.dicom as dicom

    calls = []
    real = dicom.check_image
    monkeypatch.setattr(dicom, "check_image", lambda p, roots=None: (calls.append(p), real(p, roots))[1])
    ds = tiny_dataset()
    load_dataset(ds.yaml)
    assert len(calls) == 20
    load_dataset(ds.yaml)
    assert len(calls) == 20
    man = ds.read_manifest()
    p = ds.images / man.loc[0, "path"]
    p.write_bytes(p.read_bytes()[:-100])          # a file changed: all checks run again and catch it
    expect_error(ds.yaml, "images.csv, row 2")
    assert len(calls) == 40


def test_ids_that_never_match_between_register_and_manifest(tiny_dataset):
    ds = tiny_dataset()
    man = ds.read_manifest()
    man["patient_id"] = man["patient_id"].str.replace("ID-", "ID-0", regex=False)
    ds.write_manifest(man)
    expect_error(ds.yaml, "images.csv", "the patient ids never agree", "leading zeros")


def test_yaml_boolean_label_value_gets_a_quoting_hint(tiny_dataset):
    ds = tiny_dataset()
    ds.yaml.write_text(ds.yaml.read_text().replace("positive: AFF", "positive: yes"))
    expect_error(ds.yaml, "key 'label.positive'", "quote the value")
