"""Subgroups: the dataset file's key, each patient's level, the figures per level, and where a run shows them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from benchmark.data.dataset import inspect_dataset, load_dataset
from benchmark.errors import UserError
from benchmark.evaluate.subgroups import subgroup_rows
from benchmark.run.runner import RunConfig, run
from runner_helpers import write_register_dataset, write_spaces


@pytest.mark.parametrize("value, fragment", [
    ([{"column": "age", "bands": [80, 65]}], "key 'subgroups[0].bands': expected at least two increasing numbers"),
    ([{"column": "age", "band": [0, 80]}], "key 'subgroups[0].band': unknown key"),
    (["sex", "sex"], "column 'sex' is listed twice"),
    (3, "key 'subgroups': expected a list"),
    (["bisfo_x"], "key 'subgroups[0]': column 'bisfo_x' is not a feature column of the register"),
    (["name"], "key 'subgroups[0]': column 'name' is not a feature column"),          # a dropped column
    (["age"], "column 'age' is numeric with 10 distinct values"),
    ([{"column": "sex", "bands": [0, 1]}], "key 'subgroups[0].bands': column 'sex' is categorical"),
])
def test_a_bad_subgroups_key_is_one_line_naming_the_file_and_the_key(tiny_dataset, value, fragment, monkeypatch):
    ds = tiny_dataset()
    monkeypatch.setattr("benchmark.data.subgroups.MAX_PLAIN_LEVELS", 5)   # 10 distinct ages count as many here
    ds.update_yaml(subgroups=value)
    with pytest.raises(UserError) as info:
        load_dataset(ds.yaml)
    msg = str(info.value)
    assert str(ds.yaml) in msg and fragment in msg and "\n" not in msg, msg


def test_levels_come_from_categories_bands_and_small_values_with_rare_levels_pooled(tiny_dataset):
    ds = tiny_dataset(n_pos=6, n_neg=10)
    reg = ds.read_register()
    reg["site"] = ["north"] * 9 + ["south"] * 5 + ["west"] * 2      # west: 2 patients -> other
    reg["age"] = [50, 64.9, 65, 70, 79.9, 80, 90, 100, "", 60, 61, 62, 63, 64, 66, 67]
    reg["bisfo"] = [0, 1] * 8
    ds.write_register(reg)
    ds.update_yaml(subgroups=["site", "bisfo", {"column": "age", "bands": [0, 65, 80, 100]}])
    cohort = load_dataset(ds.yaml)
    g = cohort.groups
    assert list(g.columns) == ["site", "bisfo", "age"]
    assert g["site"].tolist() == ["north"] * 9 + ["south"] * 5 + ["other"] * 2
    assert set(g["bisfo"]) == {"0", "1"}
    # [65, 80) holds 65 and 79.9; the last band includes its upper edge; an empty cell is 'missing' (then pooled)
    assert g["age"].tolist()[:8] == ["[0, 65)", "[0, 65)", "[65, 80)", "[65, 80)", "[65, 80)", "other", "other",
                                     "other"]
    assert g["age"].iloc[8] == "other"       # 'missing' has 1 patient: pooled, never shown alone
    # the levels follow a subset of patients
    assert cohort.subset(np.array([0, 13])).groups["site"].tolist() == ["north", "south"]


def test_values_outside_the_bands_are_a_warning_and_count_as_other(tiny_dataset):
    ds = tiny_dataset()
    ds.update_yaml(subgroups=[{"column": "age", "bands": [0, 60]}])
    ins = inspect_dataset(ds.yaml)
    assert not ins.problems
    assert any("lie outside the bands" in w for w in ins.warnings)
    assert set(ins.cohort.groups["age"]) == {"other"}


def _scores(n: int, rng) -> tuple[np.ndarray, np.ndarray]:
    x = rng.normal(size=n)
    p = 1 / (1 + np.exp(-(1.5 * x - 2.5)))
    return (rng.random(n) < p).astype(int), p


def test_a_subgroup_with_another_calibration_differs_and_a_small_one_is_too_small():
    rng = np.random.default_rng(0)
    y, p = _scores(3000, rng)
    sex = rng.choice(["F", "M"], 3000)
    over = p.copy()
    over[sex == "M"] = np.clip(2.5 * p[sex == "M"], 0, 0.99)   # over-predicts in men only
    site = np.where(np.arange(3000) < 20, "tiny", rng.choice(["a", "b"], 3000))
    rows = pd.DataFrame(subgroup_rows(y, over, pd.DataFrame({"sex": sex, "site": site}))).set_index(["subgroup", "level"])
    assert rows.loc[("sex", "M"), "differs"] and rows.loc[("sex", "M"), "p_oe_holm"] < 0.001
    assert rows.loc[("sex", "M"), "oe_ratio_hi"] < 0.6 < rows.loc[("sex", "F"), "oe_ratio_lo"]
    small = rows.loc[("site", "tiny")]
    assert small["status"] == "too_small" and small["n_pos"] < 5 and np.isnan(small["auc"])
    assert not rows.loc[("site", "a"), "differs"]                # random sites: no difference claimed


def test_equal_subgroups_are_not_called_different_more_often_than_alpha():
    """Also where the AUC is near 1 and a level has about ten AFF (DeLong's variance on the AUC scale is
    too small there; the test is on the logit scale)."""
    rng = np.random.default_rng(1)
    claims = 0
    for k in range(40):
        x = rng.normal(size=1000)
        p = 1 / (1 + np.exp(-((1.5 if k % 2 else 3.0) * x - (2.5 if k % 2 else 4.5))))
        y = (rng.random(1000) < p).astype(int)
        groups = pd.DataFrame({"site": rng.choice(list("abcdefgh"), 1000), "h": rng.choice(["x", "y"], 1000)})
        claims += any(r["differs"] for r in subgroup_rows(y, p, groups))
    assert claims <= 5       # Holm over all levels and both tests: at most ~5 % of cohorts (2 of 40 expected)


@pytest.fixture(scope="module")
def subgroup_run(tmp_path_factory):
    """A run where the signal exists in women only: the model's AUC in men is near chance."""
    root = tmp_path_factory.mktemp("subgroups")
    data = write_register_dataset(root / "d", n=400, n_pos=100, seed=3)
    reg = pd.read_csv(data.parent / "register.csv")
    rng = np.random.default_rng(3)
    reg["sex"] = rng.choice(["F", "M"], len(reg))
    men = reg["sex"].eq("M").to_numpy()
    reg.loc[men, "v0"] = rng.normal(size=men.sum())          # no signal left in men
    reg.loc[men, "v1"] = rng.normal(size=men.sum())
    reg.to_csv(data.parent / "register.csv", index=False)
    data.write_text(data.read_text() + "categorical: [sex]\nsubgroups: [sex]\n")
    spaces = write_spaces(root / "spaces", n_trials=2, outer_folds=3)
    out = run(RunConfig(candidates=["probe"], data=str(data), profile="tiny", device="cpu", spaces=[str(spaces)],
                        results_dir=str(root / "results"), run="r"))
    return Path(out)


def test_a_run_writes_subgroups_csv_and_its_report_and_findings_name_the_subgroup_that_differs(subgroup_run):
    sub = pd.read_csv(subgroup_run / "subgroups.csv").set_index("level")
    assert set(sub.index) == {"F", "M"} and (sub["candidate"] == "probe").all()
    assert sub.loc["M", "auc"] < 0.7 < sub.loc["F", "auc"] and bool(sub.loc["M", "differs"])
    findings = (subgroup_run / "findings.md").read_text()
    section = findings[findings.index("## Subgroups"):findings.index("## Caveats")]
    assert "probe (best register), sex = M" in section and "AUC" in section and "Holm-adjusted p" in section
    page = (subgroup_run / "leaderboard.html").read_text()
    assert "id='subgroups-section'" in page and "id='subgroups-probe'" in page


def test_a_run_without_subgroups_writes_no_subgroup_table(tmp_path):
    data = write_register_dataset(tmp_path / "d", n=120, n_pos=30)
    spaces = write_spaces(tmp_path / "spaces", n_trials=1, outer_folds=2)
    out = Path(run(RunConfig(candidates=["probe"], data=str(data), profile="tiny", device="cpu", spaces=[str(spaces)],
                             results_dir=str(tmp_path / "results"), run="r")))
    assert not (out / "subgroups.csv").exists()
    assert "## Subgroups" not in (out / "findings.md").read_text()
    assert "subgroups-section" not in (out / "leaderboard.html").read_text()
