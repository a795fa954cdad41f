"""``load_dataset(labels="optional", categorical=...)``: datasets of new patients to predict on."""

from __future__ import annotations

import numpy as np
import pytest

from benchmark.data.dataset import DatasetWarning, inspect_dataset, load_dataset, load_dataset_file
from test_dataset import expect_error, load_quietly


def unlabelled(ds):
    """Remove the label: the ``label`` key of the file and the label column of its register/manifest."""
    ds.update_yaml(label=None)
    if ds.register is not None:
        ds.write_register(ds.read_register().drop(columns=["group"]))
    elif ds.manifest is not None:
        ds.write_manifest(ds.read_manifest().drop(columns=["group"]))
    return ds


# ---------------------------------------------------------------------------- unlabelled datasets

def test_unlabelled_register_only_file_loads_with_y_all_minus_one(tiny_dataset):
    ds = tiny_dataset(images=None)
    ref = load_dataset(ds.yaml)
    c = load_dataset(unlabelled(ds).yaml, labels="optional")
    assert c.labelled is False and ref.labelled is True
    assert c.y.dtype == np.int8 and c.y.tolist() == [-1] * 10 and c.n_patients == 10
    assert c.keys.tolist() == ref.keys.tolist() and c.images is None
    assert c.categorical == ["sex", "site"] and str(c.register["site"].dtype) == "category"
    assert list(c.register.columns) == list(ref.register.columns)
    for col in c.register.columns:
        assert c.register[col].astype(object).equals(ref.register[col].astype(object)), col
    assert len(c.fingerprint) >= 16 and c.fingerprint != ref.fingerprint  # the files changed


def test_unlabelled_register_and_images_load(tiny_dataset):
    ds = unlabelled(tiny_dataset())
    c = load_dataset(ds.yaml, labels="optional")
    assert not c.labelled and c.y.tolist() == [-1] * 10
    assert c.has_register and c.has_images and len(c.images) == 20
    assert np.bincount(c.images["patient"]).tolist() == [2] * 10
    for pos, path in zip(c.images["patient"], c.images["path"]):
        assert f"img_{ds.ids[pos]}_" in path


def test_unlabelled_image_only_cohorts_load_from_a_manifest_or_a_pattern(tiny_dataset):
    c = load_dataset(unlabelled(tiny_dataset(register=False)).yaml, labels="optional")
    assert not c.labelled and c.register is None and c.n_patients == 10 and len(c.images) == 20
    ds = tiny_dataset(register=False, images="pattern")
    ds.update_yaml(label=None)                  # the pattern's label group is then not used
    c = load_dataset(ds.yaml, labels="optional")
    assert not c.labelled and c.y.tolist() == [-1] * 10 and len(c.images) == 20


def test_unlabelled_patients_without_images_are_dropped_as_for_labelled_ones(tiny_dataset):
    ds = unlabelled(tiny_dataset())
    man = ds.read_manifest()
    ds.write_manifest(man[man["patient_id"] != ds.ids[2]])
    with pytest.warns(DatasetWarning, match="1 patients have no image"):
        c = load_dataset(ds.yaml, labels="optional")
    assert c.n_patients == 9 and not c.labelled
    expect_error(ds.yaml, "register.csv, row 4, column 'patient_id'", "1 patients have no image", missing="fail",
                 labels="optional")


def test_subset_keeps_labelled(tiny_dataset):
    c = load_dataset(unlabelled(tiny_dataset()).yaml, labels="optional")
    sub = c.subset(np.array([0, 3, 7]))
    assert sub.labelled is False and sub.y.tolist() == [-1] * 3 and sub.keys.tolist() == ["P00001", "P00004", "P00008"]
    assert load_dataset(tiny_dataset().yaml).subset(np.array([1, 2])).labelled is True


def test_inspect_dataset_of_an_unlabelled_file(tiny_dataset):
    ds = unlabelled(tiny_dataset(images=None))
    ins = inspect_dataset(ds.yaml, labels="optional")
    assert ins.problems == [] and ins.spec.label is None and not ins.cohort.labelled
    assert load_dataset_file(ds.yaml, labels="optional").label is None
    assert "required" in inspect_dataset(ds.yaml).problems[0]


# ---------------------------------------------------------------------------- what stays an error

def test_required_labels_without_a_label_key_fail_as_before(tiny_dataset):
    ds = unlabelled(tiny_dataset(images=None))
    msg = expect_error(ds.yaml, "dataset.yaml, key 'label': required, e.g. label: {column: group, positive: AFF}")
    assert expect_error(ds.yaml, labels="required") == msg
    with pytest.raises(Exception, match="key 'label': required"):
        load_dataset_file(ds.yaml)


def test_optional_labels_with_a_declared_label_column_missing_fail(tiny_dataset):
    ds = tiny_dataset()
    ds.update_yaml(label={"column": "diagnosis", "positive": "AFF"})
    expect_error(ds.yaml, "register.csv", "column 'diagnosis' (label.column", "not found", labels="optional")
    ds = tiny_dataset(register=False)
    ds.write_manifest(ds.read_manifest().drop(columns=["group"]))
    expect_error(ds.yaml, "images.csv", "column 'group' not found", labels="optional")
    ds = tiny_dataset(register=False, images="pattern")
    ds.update_yaml(images={"root": "images/", "pattern": r"[A-Z]+/img_(?P<patient_id>ID-\d+)_\d+\.(dcm|png)"})
    expect_error(ds.yaml, "key 'images.pattern'", "(?P<label>", labels="optional")


def test_optional_labels_with_an_empty_label_cell_fail(tiny_dataset):
    ds = tiny_dataset(images=None)
    df = ds.read_register()
    df.loc[3, "group"] = ""
    ds.write_register(df)
    msg = expect_error(ds.yaml, "register.csv, row 5, column 'group'", "the label is empty", labels="optional")
    assert ds.ids[3] not in msg


def test_labels_must_be_required_or_optional(tiny_dataset):
    with pytest.raises(ValueError, match="labels must be"):
        load_dataset(tiny_dataset().yaml, labels="maybe")


# ---------------------------------------------------------------------------- labelled files under "optional"

def test_labelled_file_under_optional_loads_as_under_required(tiny_dataset):
    ds = tiny_dataset(oracle=True)
    a, b = load_dataset(ds.yaml), load_dataset(ds.yaml, labels="optional")
    assert b.labelled and b.y.tolist() == a.y.tolist() and b.fingerprint == a.fingerprint
    assert b.keys.tolist() == a.keys.tolist() and len(b.images) == len(a.images)


def test_one_class_under_optional_loads_with_a_warning(tiny_dataset):
    ds = tiny_dataset(images=None)
    df = ds.read_register()
    df["group"] = "AFF"
    ds.write_register(df)
    with pytest.warns(DatasetWarning, match=r"one class only.*AUC.*missing") as rec:
        c = load_dataset(ds.yaml, labels="optional")
    assert c.labelled and c.y.tolist() == [1] * 10
    assert all("\n" not in str(w.message) for w in rec)
    expect_error(ds.yaml, "one class only", "both classes")     # still an error under "required"


# ---------------------------------------------------------------------------- categorical=

def test_categorical_keyword_makes_an_unlisted_text_column_categorical(tiny_dataset):
    ds = tiny_dataset(images=None)
    ds.update_yaml(categorical=["sex"])           # 'site' is text, not listed
    expect_error(ds.yaml, "column 'site'", "text in a numeric column")
    c = load_quietly(ds.yaml, categorical=("site", "not_in_this_register"))
    assert c.categorical == ["sex", "site"] and str(c.register["site"].dtype) == "category"
    assert load_dataset(ds.yaml, categorical=("site",), labels="optional").categorical == ["sex", "site"]


def test_categorical_keyword_changes_the_fingerprint_only_when_it_adds_a_column(tiny_dataset):
    ds = tiny_dataset()
    ref = load_dataset(ds.yaml).fingerprint
    assert load_dataset(ds.yaml, categorical=["sex", "nowhere", "name"]).fingerprint == ref  # listed, absent, dropped
    assert load_dataset(ds.yaml, categorical=["bisfo"]).fingerprint != ref


def test_categorical_keyword_with_an_unlabelled_file(tiny_dataset):
    ds = unlabelled(tiny_dataset(images=None))
    ds.update_yaml(categorical=None)
    expect_error(ds.yaml, "column 'sex'", "numeric column", labels="optional")
    c = load_dataset(ds.yaml, labels="optional", categorical=["site", "sex"])
    assert not c.labelled and c.categorical == ["sex", "site"]   # in register column order
