"""Identifiers that hide as numbers or as categories are refused; rare category levels never reach a bundle."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest

from benchmark.data.dataset import DatasetWarning, load_dataset
from benchmark.errors import UserError

RNG = np.random.default_rng(0)


def _dob(n):
    return [int(f"19{30 + i % 40:02d}{1 + i % 12:02d}{1 + i % 28:02d}") for i in range(n)]


@pytest.mark.parametrize("column, values, categorical, says", [
    ("f_dat", _dob, False, "dates (yyyymmdd or yymmdd), such as a date of birth"),
    ("f_dat", lambda n: [19340117] * n, False, "dates (yyyymmdd or yymmdd)"),
    ("fd6", lambda n: [int(str(v)[2:]) for v in _dob(n)], False, "dates (yyyymmdd or yymmdd)"),
    ("contact", lambda n: [701234567 + 7919 * i for i in range(n)], False, "phone numbers stored as numbers"),
    ("note", lambda n: [["Daughter Anna visits weekly", "lives with son Erik", "Wife Karin Berg is contact",
                         "alone"][i % 4] for i in range(n)], True, "free-text notes naming people"),
    ("remark", lambda n: [["fell at home on the stairs last winter", "no fracture known in the records",
                           "fine"][i % 3] for i in range(n)], True, "look like free-text notes"),
])
def test_identifiers_hiding_as_numbers_or_categories_are_refused_without_echoing_a_value(
        tiny_dataset, column, values, categorical, says):
    ds = tiny_dataset(images=None, n_pos=8, n_neg=14)
    df = ds.read_register()
    df[column] = values(len(df))
    ds.write_register(df)
    if categorical:
        ds.update_yaml(categorical=["sex", "site", column])
    with pytest.raises(UserError) as info:
        load_dataset(ds.yaml)
    msg = str(info.value)
    assert f"column {column!r}" in msg and "direct patient identifier" in msg and says in msg and "drop_columns" in msg
    assert not any(str(v) in msg for v in df[column]), msg
    ds.update_yaml(drop_columns=["name", column], categorical=["sex", "site"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DatasetWarning)
        assert column not in load_dataset(ds.yaml).register.columns


@pytest.mark.parametrize("values, categorical", [
    (lambda n: [50 + i % 45 for i in range(n)], False),                            # ages
    (lambda n: [1990 + i % 30 for i in range(n)], False),                          # years
    (lambda n: [100_000 + 9_973 * i for i in range(n)], False),                    # six-digit amounts
    (lambda n: [10_000 + 7_717 * i for i in range(n)], False),                     # postcodes
    (lambda n: [["Ward North", "Ward South", "Clinic East"][i % 3] for i in range(n)], True),
    (lambda n: [["Karolinska University Hospital", "Sahlgrenska", "Skane"][i % 3] for i in range(n)], True),
    (lambda n: [["lives with spouse", "nursing home", "own home"][i % 3] for i in range(n)], True),
])
def test_ordinary_numbers_and_category_labels_are_not_taken_for_identifiers(tiny_dataset, values, categorical):
    ds = tiny_dataset(images=None, n_pos=8, n_neg=14)
    df = ds.read_register()
    df["x9"] = values(len(df))
    ds.write_register(df)
    if categorical:
        ds.update_yaml(categorical=["sex", "site", "x9"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DatasetWarning)
        assert "x9" in load_dataset(ds.yaml).register.columns


def test_levels_of_fewer_than_five_patients_become_other(tiny_dataset):
    from benchmark.export.schema import OTHER, conform, pool_rare_levels, schema_of

    ds = tiny_dataset(images=None, n_pos=8, n_neg=14)
    df = ds.read_register()
    df["town"] = ["Ystad"] * 2 + ["Lund"] * 10 + ["Malmo"] * (len(df) - 12)
    ds.write_register(df)
    ds.update_yaml(categorical=["sex", "site", "town"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DatasetWarning)
        cohort = pool_rare_levels(load_dataset(ds.yaml))
    assert list(cohort.register["town"].cat.categories) == ["Lund", "Malmo", OTHER]
    assert (cohort.register["town"] == OTHER).sum() == 2
    schema = schema_of(cohort, reads_register=True, image_size=None)
    assert "Ystad" not in json.dumps(schema)
    new = cohort.subset(np.arange(3))
    new.register = new.register.assign(town=pd.Categorical(["Ystad", "Visby", "Lund"]))
    with pytest.warns(UserWarning, match="count as 'other'"):
        out = conform(new, schema)
    assert list(out.register["town"]) == [OTHER, OTHER, "Lund"]


def test_an_exported_bundle_holds_no_level_seen_in_fewer_than_five_patients(tmp_path):
    from benchmark.export.export import export
    from benchmark.run.runner import RunConfig, run
    from runner_helpers import write_register_dataset, write_spaces

    data = write_register_dataset(tmp_path / "d", n=120, n_pos=30)
    reg = pd.read_csv(data.parent / "register.csv")
    reg["clinic"] = ["Rare Clinic"] * 3 + ["North"] * 60 + ["South"] * 57
    reg.to_csv(data.parent / "register.csv", index=False)
    data.write_text(data.read_text() + "categorical: [clinic]\n")
    lgbm = ("name: lgbm\nfamily: lightgbm\nmodality: register\nfixed: {n_estimators: 20, min_child_samples: 2, "
            "min_data_per_group: 1, cat_smooth: 1}\nspace:\n  num_leaves: {type: int, low: 2, high: 4}\n")
    spaces = write_spaces(tmp_path / "s", n_trials=1, outer_folds=2, extra={"lgbm": lgbm})
    out = run(RunConfig(candidates=["lgbm"], data=str(data), profile="tiny", device="cpu", spaces=[str(spaces)],
                        results_dir=str(tmp_path / "r"), run="r"))
    bundle = export(out, "lgbm", tmp_path / "b", device="cpu")
    for f in bundle.rglob("*"):
        if f.is_file():
            assert b"Rare Clinic" not in f.read_bytes(), f.name
    assert "other" in (bundle / "schema.json").read_text()
