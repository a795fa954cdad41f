"""Register safety: identifiers refused (never turned into features), declared file formats, clear messages."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

from benchmark.data.dataset import DatasetWarning, load_dataset, load_dataset_file
from benchmark.errors import UserError


def load_quietly(path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DatasetWarning)
        return load_dataset(path)


def expect_error(path, *fragments, absent=()) -> str:
    with pytest.raises(UserError) as info:
        load_quietly(path)
    msg = str(info.value)
    assert "\n" not in msg and "Traceback" not in msg, msg
    for f in fragments:
        assert f in msg, f"{f!r} not in: {msg}"
    for a in absent:
        assert a not in msg, f"{a!r} in: {msg}"
    return msg


def register_only(tiny_dataset, n_pos=8, n_neg=14):
    return tiny_dataset(images=None, n_pos=n_pos, n_neg=n_neg)


def personnummer(n):
    return [f"19{45 + i % 40:02d}{1 + i % 12:02d}{1 + i % 28:02d}-{1000 + 7 * i:04d}" for i in range(n)]


# ---------------------------------------------------------------------------- identifiers

def test_personnummer_column_is_refused_by_name_without_echoing_values(tiny_dataset):
    ds = register_only(tiny_dataset)
    df = ds.read_register()
    df["personnummer"] = personnummer(len(df))
    ds.write_register(df)
    msg = expect_error(ds.yaml, "register.csv, column 'personnummer'", "direct patient identifier", "drop_columns",
                       absent=("numeric column", "categorical"))
    assert not any(v in msg for v in df["personnummer"]) and "1945" not in msg
    # listing it as a category (what the old message advised) is refused just the same
    ds.update_yaml(categorical=["sex", "site", "personnummer"])
    expect_error(ds.yaml, "column 'personnummer'", "direct patient identifier", "drop_columns")
    ds.update_yaml(categorical=["sex", "site"], drop_columns=["name", "personnummer"])
    c = load_dataset(ds.yaml)
    assert "personnummer" not in c.register.columns


@pytest.mark.parametrize("kind, values", [
    ("personal identity numbers", personnummer),
    ("personal identity numbers", lambda n: [f"19{45 + i % 40:02d}0101{1000 + i:04d}" for i in range(n)]),  # no dash
    ("personal identity numbers", lambda n: [f"{1 + i % 28:02d}0545-{1000 + i:04d}" for i in range(n)]),  # Danish
    ("e-mail addresses", lambda n: [f"p{i}@example.org" for i in range(n)]),
    ("phone numbers", lambda n: [f"070-{1000000 + 37 * i}" for i in range(n)]),
    ("phone numbers", lambda n: [f"+46 70 {100 + i} {10 + i % 80:02d} 00" for i in range(n)]),
    ("person names", lambda n: [f"{f} {l}" for f, l in zip(["Anna", "Erik", "Karin", "Lars", "Maria"] * 9,
                                                         ["Svensson", "Berg", "Lind", "Holm", "Ek", "Nord"] * 9)][:n]),
])
def test_identifier_values_under_an_innocent_column_name_are_refused(tiny_dataset, kind, values):
    ds = register_only(tiny_dataset, n_pos=4, n_neg=6)   # 10 rows: the patterns decide, not uniqueness
    df = ds.read_register()
    df["x7"] = values(len(df))
    ds.write_register(df)
    msg = expect_error(ds.yaml, "column 'x7'", "direct patient identifier", kind, "drop_columns")
    assert not any(v in msg for v in df["x7"])


def test_a_text_column_unique_per_patient_is_an_identifier(tiny_dataset):
    ds = register_only(tiny_dataset)
    df = ds.read_register()
    df["code"] = [f"K{i}x{(i * 7919) % 1000:03d}" for i in range(len(df))]
    ds.write_register(df)
    expect_error(ds.yaml, "column 'code'", "direct patient identifier", "22 different texts in 22 rows", "drop_columns")
    ds.update_yaml(categorical=["sex", "site", "code"])
    expect_error(ds.yaml, "column 'code'", "direct patient identifier")


def test_few_rows_or_repeated_categories_are_not_identifiers(tiny_dataset):
    ds = register_only(tiny_dataset)
    df = ds.read_register()
    df["ward"] = [["Ward North", "Ward South", "Clinic East"][i % 3] for i in range(len(df))]
    ds.write_register(df)
    ds.update_yaml(categorical=["sex", "site", "ward"])
    assert load_dataset(ds.yaml).register["ward"].nunique() == 3
    ds = tiny_dataset(images=None)   # 10 rows of distinct text: too few to call it an identifier
    df = ds.read_register()
    df["code"] = [f"K{i}x" for i in range(len(df))]
    ds.write_register(df)
    ds.update_yaml(categorical=["sex", "site", "code"])
    load_dataset(ds.yaml)


def test_identifier_like_id_column_itself_is_allowed(tiny_dataset):
    ds = tiny_dataset(images=None, id_prefix="19450101-")
    c = load_dataset(ds.yaml)
    assert c.n_patients == 10


def test_a_numeric_personal_number_is_not_taken_for_a_feature(tiny_dataset):
    ds = register_only(tiny_dataset)
    df = ds.read_register()
    df["x1"] = [p.replace("-", "") for p in personnummer(len(df))]   # parses as a number
    ds.write_register(df)
    expect_error(ds.yaml, "column 'x1'", "personal identity numbers", "drop_columns")
    df.drop(columns=["x1"]).assign(x1=df["x1"].astype("int64")).to_parquet(ds.dir / "register.parquet")
    ds.update_yaml(register="register.parquet")
    expect_error(ds.yaml, "register.parquet, column 'x1'", "personal identity numbers")


def test_text_dates_are_not_features_and_not_called_identifiers(tiny_dataset):
    ds = register_only(tiny_dataset)
    df = ds.read_register()
    df["fracture_date"] = [f"2019-{1 + i % 12:02d}-{1 + i:02d}" for i in range(len(df))]
    ds.write_register(df)
    expect_error(ds.yaml, "column 'fracture_date'", "looks like dates", "drop_columns", absent=("identifier",))
    ds = register_only(tiny_dataset)
    df = ds.read_register()
    df["birth_date"] = [f"19{40 + i}-01-01" for i in range(len(df))]
    ds.write_register(df)
    expect_error(ds.yaml, "column 'birth_date'", "direct patient identifier (its name)")


# ---------------------------------------------------------------------------- decimal commas

def test_decimal_commas_in_a_comma_separated_file_get_their_own_advice(tiny_dataset):
    ds = register_only(tiny_dataset)
    df = ds.read_register()
    ages = df["age"].tolist()
    df["age"] = df["age"].str.replace(".", ",", regex=False)
    df.to_csv(ds.register, index=False)   # pandas quotes "74,5"
    msg = expect_error(ds.yaml, "register.csv, column 'age'", "looks like numbers with decimal commas",
                       "comma-separated file", "register_format: {decimal: \",\"}",
                       absent=("drop_columns", "identifier", "categorical"))
    assert not any(a in msg for a in df["age"])
    ds.update_yaml(register_format={"decimal": ","})
    c = load_dataset(ds.yaml)
    assert c.register["age"].tolist() == pytest.approx([float(a) for a in ages])


def test_tab_separated_decimal_commas_and_declared_separator(tiny_dataset):
    ds = register_only(tiny_dataset)
    df = ds.read_register()
    df["age"] = df["age"].str.replace(".", ",", regex=False)
    df.to_csv(ds.register, index=False, sep="\t")
    expect_error(ds.yaml, "column 'age'", "decimal commas", "tab-separated file", "register_format")
    ds.update_yaml(register_format={"decimal": ",", "separator": "tab"})
    assert load_dataset(ds.yaml).register["age"].notna().all()
    # the semicolon guess can be overruled: ';' inside a value of a '|' separated file
    df.to_csv(ds.register, index=False, sep="|")
    ds.update_yaml(register_format={"decimal": ",", "separator": "|"})
    assert load_dataset(ds.yaml).register.shape == (22, 5)


# ---------------------------------------------------------------------------- encodings and file kinds

def test_excel_unicode_text_utf16_with_bom_is_read(tiny_dataset):
    ds = register_only(tiny_dataset, n_pos=4, n_neg=6)
    ref = load_dataset(ds.yaml)
    df = ds.read_register()
    df["site"] = df["site"].replace({"north": "Norrtälje", "south": "Södertälje"})
    text = df.to_csv(index=False, sep="\t", lineterminator="\r\n")
    ds.register.write_bytes(text.encode("utf-16"))             # BOM + UTF-16 LE, as Excel writes it
    assert ds.register.read_bytes()[:2] == b"\xff\xfe"
    c = load_dataset(ds.yaml)
    assert list(c.register.columns) == list(ref.register.columns)
    np.testing.assert_array_equal(c.y, ref.y)
    assert "Norrtälje" in set(c.register["site"].cat.categories) | {"Södertälje"}
    ds.register.write_bytes(text.encode("utf-16-le"))          # no BOM: recognised by its NUL bytes
    assert list(load_dataset(ds.yaml).register.columns) == list(ref.register.columns)
    ds.register.write_bytes("\ufeff".encode("utf-16-le"))      # a BOM and nothing else
    expect_error(ds.yaml, "register.csv", "is empty")


def test_declared_encoding_is_used_and_a_wrong_one_is_named(tiny_dataset):
    ds = register_only(tiny_dataset, n_pos=4, n_neg=6)
    df = ds.read_register()
    df["site"] = df["site"].replace({"north": "Malmö"})
    ds.register.write_bytes(df.to_csv(index=False).encode("cp1252"))
    ds.update_yaml(register_format={"encoding": "cp1252"})
    assert "Malmö" in load_dataset(ds.yaml).register["site"].cat.categories
    ds.update_yaml(register_format={"encoding": "utf-8"})
    expect_error(ds.yaml, "register.csv", "cannot be read as utf-8 text", "register_format.encoding")


def test_spreadsheets_and_binary_files_are_refused_by_name(tiny_dataset):
    ds = register_only(tiny_dataset, n_pos=4, n_neg=6)
    ds.register.write_bytes(b"PK\x03\x04" + b"\x00" * 200)
    expect_error(ds.yaml, "register.csv", "Excel workbook (.xlsx)", "CSV UTF-8")
    ds.register.write_bytes(b"\x01\x00\x00\x07\x00\x00\x00\x10" * 50)
    expect_error(ds.yaml, "register.csv", "NUL bytes", "not a CSV text file")


def test_register_format_keys_are_checked(tiny_dataset):
    ds = register_only(tiny_dataset, n_pos=4, n_neg=6)
    ds.update_yaml(register_format={"delimiter": ";"})
    expect_error(ds.yaml, "key 'register_format.delimiter'", "unknown key", "decimal, encoding, separator")
    ds.update_yaml(register_format={"decimal": ";"})
    expect_error(ds.yaml, "key 'register_format.decimal'", "expected \".\" or \",\"")
    ds.update_yaml(register_format={"encoding": "utf-17"})
    expect_error(ds.yaml, "key 'register_format.encoding'", "unknown encoding")
    ds.update_yaml(register_format={"separator": "ab"})
    expect_error(ds.yaml, "key 'register_format.separator'", "one character")
    ds.update_yaml(register_format={"separator": ",", "decimal": ","})
    expect_error(ds.yaml, "key 'register_format'", "must differ")
    ds.update_yaml(register_format="semicolon")
    expect_error(ds.yaml, "key 'register_format'", "expected a mapping")
    ds.update_yaml(register_format={"separator": "tab", "decimal": ".", "encoding": "UTF8"},
                   manifest_format={"separator": ";", "encoding": "utf-16"})
    spec = load_dataset_file(ds.yaml)
    assert (spec.register_format.separator, spec.register_format.encoding) == ("\t", "utf-8")
    assert (spec.manifest_format.separator, spec.manifest_format.encoding) == (";", "utf-16")


def test_register_format_is_ignored_for_parquet_with_a_warning(tiny_dataset):
    ds = register_only(tiny_dataset, n_pos=4, n_neg=6)
    pd.read_csv(ds.register).to_parquet(ds.dir / "register.parquet")
    ds.update_yaml(register="register.parquet", register_format={"decimal": ","})
    with pytest.warns(DatasetWarning, match="register_format is ignored for a Parquet file"):
        load_dataset(ds.yaml)
    (ds.dir / "register.parquet").write_bytes(b"")
    expect_error(ds.yaml, "register.parquet", "is empty")


# ---------------------------------------------------------------------------- files, folders, warnings

def test_empty_files_and_folders_in_place_of_files_are_named(tiny_dataset):
    ds = tiny_dataset()
    ds.register.write_bytes(b"\n\n  \n")
    expect_error(ds.yaml, "register.csv", "the register file is empty", "one row per patient")
    ds = tiny_dataset()
    ds.update_yaml(register="images")
    expect_error(ds.yaml, "key 'register'", "'images' is a folder, not a file")
    ds = tiny_dataset()
    ds.update_yaml(images={"root": "register.csv", "manifest": "images.csv"})
    expect_error(ds.yaml, "key 'images.root'", "'register.csv' is a file, not a folder")
    expect_error(ds.dir, "is a folder, not a file", "dataset YAML file")


def test_dataset_warnings_print_as_one_clean_line(tiny_dataset):
    ds = tiny_dataset()
    man = ds.read_manifest()
    ds.write_manifest(man[man["patient_id"] != ds.ids[2]])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        load_dataset(ds.yaml)
    w = [w for w in caught if issubclass(w.category, DatasetWarning)]
    assert len(w) == 1
    text = warnings.formatwarning(w[0].message, w[0].category, w[0].filename, w[0].lineno)
    assert text.startswith("warning: ") and text.endswith("\n") and text.count("\n") == 1
    assert "register.csv: 1 patients have no image" in text and ".py" not in text and "DatasetWarning" not in text
    other = warnings.formatwarning("x", RuntimeWarning, "f.py", 3)   # other warnings keep their usual form
    assert "RuntimeWarning" in other


def test_manifest_format_is_applied_to_the_images_manifest(tiny_dataset):
    """A pipe-separated manifest is not detected, and is read once manifest_format declares it."""
    import yaml

    from benchmark.data.dataset import load_dataset
    from benchmark.errors import UserError

    ds = tiny_dataset()
    ds.manifest.write_text(ds.manifest.read_text().replace(",", "|"))
    with pytest.raises(UserError):
        load_dataset(ds.yaml)
    doc = yaml.safe_load(ds.yaml.read_text())
    doc["manifest_format"] = {"separator": "|"}
    ds.yaml.write_text(yaml.safe_dump(doc))
    cohort = load_dataset(ds.yaml)
    assert cohort.has_images and len(cohort.images) > 0


@pytest.mark.parametrize("text, says", [("", "the dataset file is empty"), ("# only a comment\n", "the dataset file is empty"),
                                        ("- a\n- b\n", "found a list")])
def test_an_empty_or_listless_dataset_file_says_so(tmp_path, text, says):
    from benchmark.data.dataset import load_dataset
    from benchmark.errors import UserError

    path = tmp_path / "dataset.yaml"
    path.write_text(text)
    with pytest.raises(UserError, match=says):
        load_dataset(path)
