"""``validate`` says usable only when ``run`` can make its folds; column warnings are one line each."""

from __future__ import annotations

import numpy as np
import pytest

from benchmark.data.splits import min_positives, run_folds
from benchmark.errors import UserError
from test_validate import run_validate


def test_min_positives_is_what_run_folds_accepts():
    for kw in (dict(outer=2, inner=2), dict(outer=3, inner=2), dict(outer=5, inner=3),
               dict(outer=5, inner=5, repeats=3), dict(outer=2, inner=2, max_patients=300)):
        need = min_positives(400, **kw)
        y = np.r_[np.ones(need), np.zeros(400)].astype(int)
        run_folds(y, **kw)
        with pytest.raises(UserError):
            run_folds(np.r_[np.ones(need - 1), np.zeros(400)].astype(int), **kw)
    assert min_positives(100, outer=2, inner=2) == 4
    assert min_positives(4000, outer=2, inner=2, max_patients=300) > 4   # the subsample thins the positives
    assert min_positives(1, outer=2, inner=2, upto=50) is None            # too few negatives


@pytest.mark.parametrize("n_pos", [1, 2])
def test_one_or_two_aff_patients_are_not_usable(tiny_dataset, capsys, n_pos):
    code, out = run_validate(capsys, tiny_dataset(n_pos=n_pos, n_neg=8, images=None).yaml)
    assert code == 2, out
    assert "can run: none" in out
    assert f"too few AFF patients for any profile: {n_pos}, and the smallest need is 3" in out
    assert "NO: fix the 1 problem(s)" in out and "Traceback" not in out


def test_the_profiles_line_names_each_need_and_a_profile_that_cannot_run_is_a_warning(tiny_dataset, capsys):
    code, out = run_validate(capsys, tiny_dataset(n_pos=4, n_neg=8, images=None).yaml)
    assert code == 0, out
    assert "AFF patients each profile needs (beside these 8 NFF): smoke >= 4, quick >= 3, hour >= 5, standard >= 5, paper >= 7" in out
    assert "this cohort (4 AFF) can run: smoke, quick" in out
    assert ("profile 'standard' cannot run here: it needs >= 5 AFF patients (5 outer x 3 inner folds), "
            "this cohort has 4; use --profile smoke or quick, or add patients") in out
    assert out.rstrip().endswith("yes")


def test_own_profiles_are_checked_too(tiny_dataset, tmp_path, capsys):
    spaces = tmp_path / "spaces"
    spaces.mkdir()
    (spaces / "profiles.yaml").write_text(
        "wide:\n  outer_folds: 4\n  inner_folds: 4\n  repeats: 1\n  n_trials: 1\n  study_timeout_s: null\n"
        "  max_epochs: 1\n  image_size: 16\n  max_patients: null\n  bootstrap: 10\n  mc_passes: 0\n")
    code, out = run_validate(capsys, tiny_dataset(n_pos=4, n_neg=8, images=None).yaml, "--spaces", spaces)
    assert code == 0 and "wide >= 6" in out and "profile 'wide' cannot run here" in out


def test_constant_empty_and_mostly_empty_columns_and_nul_bytes_are_one_line_warnings(tiny_dataset, capsys):
    ds = tiny_dataset(n_pos=4, n_neg=8, images=None)
    df = ds.read_register()
    df["const"] = "7"
    df["empty"] = ""
    df["sparse"] = ["1.5", "2.5", "3.5"] + [""] * 9
    df["note"] = "x" * 500       # dropped; pushes the last rows past the loader's 4 KiB look
    ds.write_register(df)
    ds.update_yaml(drop_columns=["name", "note"])
    raw = ds.register.read_bytes().replace(b"\nID-1011,", b"\nID-1011\0,", 1)
    ds.register.write_bytes(raw)
    code, out = run_validate(capsys, ds.yaml)
    assert code == 0, out
    lines = out.splitlines()
    assert "  - register.csv, column 'const': every filled cell has the same value; a constant carries nothing: " \
           "drop it (drop_columns) or check the export" in lines
    assert "  - register.csv, column 'empty': every cell is empty; it carries nothing: drop it (drop_columns) " \
           "or fill it in" in lines
    assert "  - register.csv, column 'sparse': 75.0 % of cells are empty; imputation fills them: check the " \
           "export, or drop it (drop_columns)" in lines
    assert "  - register.csv, row 12, column 'patient_id': NUL byte (1 in the file, the first here); cells holding " \
           "one may read wrong: re-export the register as plain CSV" in lines
    assert "warnings (7)" in out   # and hour, standard, paper cannot run on 4 AFF
