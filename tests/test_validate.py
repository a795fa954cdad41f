"""``python -m benchmark validate``: the summary, every problem listed, exit 0 only when usable."""

from __future__ import annotations

from pydicom.data import get_testdata_file

import argparse

from benchmark.data import validate


def run_validate(capsys, *args) -> tuple[int, str]:
    parser = argparse.ArgumentParser()
    validate.add_arguments(parser)
    code = validate.command(parser.parse_args([str(a) for a in args]))
    out = capsys.readouterr()
    return code, out.out + out.err


def test_valid_dataset_prints_the_summary_and_exits_0(tiny_dataset, capsys):
    code, out = run_validate(capsys, tiny_dataset(oracle=True).yaml)
    assert code == 0, out
    assert "10: AFF 4, NFF 6" in out
    assert "20 (DICOM 10, PNG 10); per patient min 2, median 2, max 2" in out
    assert "5 feature columns: 3 numeric, 2 categorical (sex, site); 1 dropped" in out
    assert "% of register cells" in out and "bisfo_d" in out
    assert "oracle_register" in out and out.rstrip().endswith("yes")


def test_every_problem_is_listed_and_the_exit_status_is_2(tiny_dataset, capsys):
    ds = tiny_dataset()
    df = ds.read_register()
    df.loc[6, "patient_id"] = df.loc[1, "patient_id"]
    df.loc[2, "age"] = "old"
    df.loc[4, "group"] = "maybe"
    ds.write_register(df)
    code, out = run_validate(capsys, ds.yaml)
    assert code == 2
    assert "problems (3)" in out
    for fragment in ("rows 3 and 8, column 'patient_id'", "row 4, column 'age'", "row 6, column 'group'"):
        assert fragment in out
    assert "NO: fix the 3 problem(s)" in out


def test_missing_dataset_file_exits_2_through_the_cli(tmp_path, capsys):
    from benchmark.cli import main

    code = main(["validate", str(tmp_path / "none.yaml")])
    assert code == 2 and "not found" in capsys.readouterr().out


def test_images_that_only_fail_when_decoded_are_found_unless_no_decode(tiny_dataset, capsys):
    ds = tiny_dataset()
    man = ds.read_manifest()
    raw = bytearray(open(get_testdata_file("MR_small_jpeg_ls_lossless.dcm"), "rb").read())
    i = raw.find(b"\xff\xda", raw.find(b"\xff\xd8\xff"))
    raw[i + 1] = 0xDB                # the JPEG-LS start-of-scan becomes a table segment; its frame header stays valid
    (ds.images / man.loc[5, "path"]).write_bytes(bytes(raw))
    code, out = run_validate(capsys, ds.yaml)
    assert code == 2 and "images.csv, row 7, column 'path': DICOM pixel data cannot be decoded" in out
    code, out = run_validate(capsys, ds.yaml, "--no-decode")
    assert code == 0, out
    j = raw.find(b"\xff\xd8\xff")
    raw[j:j + 2] = b"\x00\x00"      # without its start-of-image marker the header checks already see it
    (ds.images / man.loc[5, "path"]).write_bytes(bytes(raw))
    code, out = run_validate(capsys, ds.yaml, "--no-decode")
    assert code == 2 and "row 7, column 'path': the compressed pixel data is not a JPEG-LS stream" in out


def test_dropped_patients_are_warnings_and_the_dataset_stays_usable(tiny_dataset, capsys):
    ds = tiny_dataset()
    man = ds.read_manifest()
    ds.write_manifest(man[man["patient_id"] != ds.ids[0]])
    code, out = run_validate(capsys, ds.yaml)
    assert code == 0 and "1 patients have no image" in out   # (and the profiles 9 patients cannot run)
    assert "9: AFF" in out and "(1 without images dropped)" in out
    code, out = run_validate(capsys, ds.yaml, "--missing", "fail")
    assert code == 2


def test_image_only_summary(tiny_dataset, capsys):
    code, out = run_validate(capsys, tiny_dataset(register=False, images="pattern").yaml)
    assert code == 0 and "none (image-only cohort)" in out


def test_output_names_no_identifier(tiny_dataset, capsys):
    ds = tiny_dataset(planted_name="Svensson", id_prefix="19450101-")
    df = ds.read_register()
    df.loc[1, "patient_id"] = df.loc[0, "patient_id"]
    ds.write_register(df)
    man = ds.read_manifest()
    (ds.images / man.loc[0, "path"]).unlink()
    code, out = run_validate(capsys, ds.yaml)
    assert code == 2 and "Svensson" not in out and "19450101" not in out
