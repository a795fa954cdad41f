"""A second site: the validation page's answers, dataset shift against the bundle's aggregates, predict --update."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from benchmark import load_model
from benchmark.cli import main
from benchmark.errors import UserError
from benchmark.export.export import export
from benchmark.export.update import carried_thresholds, fit_update, recalibrate
from benchmark.evaluate.conformal import predict_sets
from benchmark.run.runner import RunConfig, run
from runner_helpers import write_register_dataset, write_spaces


def site(root: Path, *, n: int, n_pos: int, seed: int, shift: float = 0.0, planted: bool = False) -> Path:
    """A register cohort with sex and age; ``shift`` moves v1 (which carries signal) as recorded; ``planted``
    makes v5 unique values of 12 decimals (to search the bundle for)."""
    path = write_register_dataset(root, n=n, n_pos=n_pos, seed=seed)
    reg = pd.read_csv(path.parent / "register.csv")
    rng = np.random.default_rng(seed + 100)
    reg["sex"] = rng.choice(["F", "M"], n)
    reg["age"] = np.round(rng.normal(76, 7, n), 1)
    reg["v1"] = reg["v1"] + shift
    if planted:
        reg["v5"] = np.round(3.0 + 4 * rng.random(n), 12)
    reg.to_csv(path.parent / "register.csv", index=False)
    path.write_text(path.read_text() + "categorical: [sex]\nsubgroups: [sex, {column: age, bands: [0, 76, 200]}]\n")
    return path


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    root = tmp_path_factory.mktemp("second-site")
    data = site(root / "a", n=320, n_pos=64, seed=0, planted=True)
    spaces = write_spaces(root / "spaces", n_trials=2, outer_folds=3)
    out = run(RunConfig(candidates=["logreg"], data=str(data), profile="tiny", device="cpu", spaces=[str(spaces)],
                        results_dir=str(root / "results"), run="r"))
    path = export(Path(out), "logreg", device="cpu")
    # the second hospital: more AFF (30 % against 20 %), v1 recorded 1 SD higher (AFF have lower v1)
    other = site(root / "b", n=400, n_pos=120, seed=5, shift=1.0, planted=True)
    return {"root": root, "run": Path(out), "bundle": path, "data": data, "other": other}


def _digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_the_bundle_keeps_aggregates_of_the_training_data_and_no_patients_value(bundle):
    stats = json.loads((bundle["bundle"] / "shift_stats.json").read_text())
    v5 = next(r for r in stats["register"] if r["name"] == "v5")
    assert v5["n"] == 320 and set(v5["quantiles"]) == {"0.10", "0.25", "0.50", "0.75", "0.90"}
    sex = next(r for r in stats["register"] if r["name"] == "sex")
    assert set(sex["shares"]) == {"F", "M"} and abs(sum(sex["shares"].values()) - 1) < 1e-9
    planted = pd.read_csv(bundle["data"].parent / "register.csv")["v5"]
    for name in ("shift_stats.json", "model_card.md"):
        text = (bundle["bundle"] / name).read_text()
        hits = [v for v in planted if repr(float(v)) in text or f"{v:.6g}" in text]
        assert not hits, f"{name} holds a training patient's value: {hits[:3]}"
    assert "## Development data (for shift checks)" in (bundle["bundle"] / "model_card.md").read_text()
    assert load_model(bundle["bundle"]).shift["register"][0]["name"] == "v0"


def test_the_page_answers_first_and_names_the_calibration_drift_and_the_shifted_variable(bundle, tmp_path):
    out = tmp_path / "p"
    assert main(["predict", str(bundle["bundle"]), "--data", str(bundle["other"]), "--out", str(out)]) == 0
    page = (out / "validation.html").read_text()
    assert page.index('id="answers"') < page.index("id='shift-section'") < page.index('id="figures-section"')
    calibration = page[page.index('id="answer-calibration"'):page.index('id="answer-threshold"')]
    assert "<b>No:</b> it predicts" in calibration and "too few AFF" in calibration      # 30 % AFF here against 20 %
    assert "30.0 % of the patients here against 20.0 % in development" in calibration
    assert "predictions: v1 (SMD +" in calibration
    shift = pd.read_csv(out / "shift.csv")
    assert shift.iloc[0]["variable"] == "v1" and bool(shift.iloc[0]["shifted"])
    assert shift["shifted"].sum() <= 2          # not the noise of a dozen variables
    sub = pd.read_csv(out / "subgroups.csv")
    assert set(sub["subgroup"]) == {"sex", "age"} and set(sub["status"]) == {"ok"}
    assert "id='caveat'" in page and "tiny" in page


def test_update_intercept_brings_oe_within_0_1_out_of_fold_into_a_new_bundle(bundle, tmp_path, capsys):
    before = _digests(bundle["bundle"])
    out, new = tmp_path / "p", tmp_path / "updated"
    assert main(["predict", str(bundle["bundle"]), "--data", str(bundle["other"]), "--out", str(out),
                 "--update", "intercept", "--update-out", str(new)]) == 0
    assert "unsigned" in capsys.readouterr().out
    upd = pd.read_csv(out / "update.csv").set_index("metric")
    assert upd.loc["oe_ratio", "source"] > 1.3                              # the source under-predicts here
    assert abs(upd.loc["oe_ratio", "updated_oof"] - 1) < 0.1                # out-of-fold, not in-sample
    assert _digests(bundle["bundle"]) == before                            # the source is untouched
    model = load_model(new)
    assert not (new / "bundle.sig").exists()
    h = model.meta["updates"][-1]
    assert h["kind"] == "intercept" and h["n"] == 400 and h["n_pos"] == 120 and h["folds"] == 5
    assert h["source_bundle_sha256"] == hashlib.sha256((bundle["bundle"] / "bundle.json").read_bytes()).hexdigest()
    ids = pd.read_csv(bundle["other"].parent / "register.csv")["pid"].astype(str)
    text = "".join(p.read_text(errors="ignore") for p in new.rglob("*") if p.suffix in (".json", ".md"))
    assert not any(i in text for i in ids) and "P00001" not in text
    assert "## Updates" in (new / "model_card.md").read_text()
    # the update changes the probabilities, not the decisions or the sets
    src, upd_pred = tmp_path / "s", tmp_path / "u"
    main(["predict", str(bundle["bundle"]), "--data", str(bundle["other"]), "--out", str(src)])
    main(["predict", str(new), "--data", str(bundle["other"]), "--out", str(upd_pred)])
    a, b = pd.read_csv(src / "predictions.csv"), pd.read_csv(upd_pred / "predictions.csv")
    assert (a["above_threshold"] == b["above_threshold"]).all() and (a["set_90"] == b["set_90"]).all()
    assert b["prob"].mean() > a["prob"].mean() + 0.05


def test_an_update_needs_labels_enough_patients_and_a_new_folder(bundle, tmp_path, capsys):
    unlabelled = bundle["other"].parent / "unlabelled.yaml"
    unlabelled.write_text("\n".join(line for line in bundle["other"].read_text().splitlines()
                                    if not line.startswith("label")) + "\ndrop_columns: [group]\n")
    assert main(["predict", str(bundle["bundle"]), "--data", str(unlabelled), "--out", str(tmp_path / "p"),
                 "--update", "intercept"]) == 2
    assert "--update needs labels" in capsys.readouterr().err
    assert not (tmp_path / "p").exists()                                   # nothing written
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    assert main(["predict", str(bundle["bundle"]), "--data", str(bundle["other"]), "--out", str(tmp_path / "q"),
                 "--update", "logistic", "--update-out", str(tmp_path / "full")]) == 2
    err = capsys.readouterr().err
    assert "exists and is not empty" in err and len(err.strip().splitlines()) == 1
    with pytest.raises(UserError, match="at least 10 AFF"):
        fit_update(np.r_[np.ones(6), np.zeros(50)].astype(int), np.full(56, 0.2), "intercept")


def test_logistic_update_fixes_overconfident_predictions_out_of_fold():
    rng = np.random.default_rng(2)
    p = rng.beta(1.5, 6, 3000)
    y = (rng.random(3000) < p).astype(int)
    over = 1 / (1 + np.exp(-(2.5 * np.log(p / (1 - p)) - 0.8)))           # too extreme and shifted
    res = fit_update(y, over, "logistic", seed=0)
    from benchmark.evaluate.calibration_ci import logistic_calibration, oe_interval

    after = logistic_calibration(y, res.oof)
    assert abs(after["slope"] - 1) < 0.1 and abs(oe_interval(y, res.oof)[0] - 1) < 0.1
    assert abs(res.slope - 0.4) < 0.05                                     # the final map undoes the 2.5


def test_carried_thresholds_keep_every_decision_and_set():
    rng = np.random.default_rng(4)
    p = rng.random(5000)
    update = {"intercept": 0.7, "slope": 0.8}
    conformal = {"90": [0.61, 0.55], "95": [0.8, float("inf")]}
    t, carried = carried_thresholds(0.3, conformal, update)
    q = recalibrate(p, update)
    assert ((p >= 0.3) == (q >= t)).all()
    for level in conformal:
        assert (predict_sets(p, conformal[level]) == predict_sets(q, carried[level])).all()


def test_the_model_card_shows_the_run_subgroups_with_small_counts_withheld(bundle, tmp_path):
    from benchmark.export.card_sections import subgroup_lines

    card = (bundle["bundle"] / "model_card.md").read_text()
    assert "## Subgroups (nested cross-validation)" in card and "| sex | F |" in card
    sub = pd.read_csv(bundle["run"] / "subgroups.csv")
    small = sub.iloc[[0]].assign(level="rare", n=9, n_pos=3, status="too_small")
    pd.concat([sub, small]).to_csv(tmp_path / "subgroups.csv", index=False)
    lines = subgroup_lines(tmp_path, "logreg")
    assert "| sex | rare | 9 | fewer than 5 | too small | | |" in lines     # a count below 5 never leaves the site
