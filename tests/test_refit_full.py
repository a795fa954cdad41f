"""Profile ``refit_full``: the outer-test part is predicted by a model refitted on all of outer-train."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from benchmark.data.dataset import load_dataset
from benchmark.run.runner import RunConfig, run
from runner_helpers import write_register_dataset, write_spaces


def refit_spaces(root: Path) -> Path:
    spaces = write_spaces(root, n_trials=2, outer_folds=3)
    (spaces / "profiles.yaml").write_text((spaces / "profiles.yaml").read_text() + "  refit_full: true\n")
    return spaces


def test_the_refit_sees_all_of_outer_train_and_predicts_the_test_part(tmp_path, monkeypatch):
    data = write_register_dataset(tmp_path / "d", n=150, n_pos=30)
    log = tmp_path / "probe.jsonl"
    monkeypatch.setenv("AFF_PROBE_LOG", str(log))
    out = Path(run(RunConfig(candidates=["probe"], data=str(data), profile="tiny", device="cpu",
                             spaces=[str(refit_spaces(tmp_path / "spaces"))], results_dir=str(tmp_path / "r"), run="rf")))
    folds = pd.read_csv(out / "folds.csv")
    keys = load_dataset(data).keys
    pos = {k: i for i, k in enumerate(keys)}
    fits = [json.loads(line) for line in log.read_text().splitlines()]
    refits = [f for f in fits if f["phase"] == "fit" and not f["search"]]
    assert len(refits) == 3                                  # one per outer fold, nothing else
    studies = pd.read_csv(out / "studies.csv")
    pred = pd.read_parquet(out / "predictions.parquet")
    for f in range(3):
        train = sorted(pos[k] for k in folds[(folds.outer_fold == f) & (folds.part == "train")].patient)
        test = sorted(pos[k] for k in folds[(folds.outer_fold == f) & (folds.part == "test")].patient)
        # exactly one fit outside the search saw exactly the outer-train part (so no test patient)
        assert sum(r["patients"] == train for r in refits) == 1
        # its prediction is the test part's raw probability: redo it by hand
        from sklearn.linear_model import LogisticRegression

        from benchmark.candidates.preprocess import TabularPreprocessor

        cohort = load_dataset(data)
        C = json.loads(studies.loc[studies.outer_fold == f, "best_params"].iloc[0])["C"]
        X, y = cohort.register.iloc[train], cohort.y[train]
        pre = TabularPreprocessor().fit(X)
        expect = LogisticRegression(C=C, max_iter=500).fit(pre.transform(X), y).predict_proba(
            pre.transform(cohort.register.iloc[test]))[:, 1]
        rows = pred[(pred.candidate == "probe") & (pred.outer_fold == f) & (pred.set == "test")]
        got = rows.set_index("patient").loc[keys[test], "prob_raw"].to_numpy()
        np.testing.assert_allclose(got, expect, rtol=1e-10)
        # the bag still gives K members per test patient (uncertainty)
        assert rows["members"].map(len).eq(2).all()


def test_without_refit_full_the_bag_predicts(tmp_path, monkeypatch):
    data = write_register_dataset(tmp_path / "d", n=150, n_pos=30)
    log = tmp_path / "probe.jsonl"
    monkeypatch.setenv("AFF_PROBE_LOG", str(log))
    run(RunConfig(candidates=["probe"], data=str(data), profile="tiny", device="cpu",
                  spaces=[str(write_spaces(tmp_path / "spaces", n_trials=2, outer_folds=3))],
                  results_dir=str(tmp_path / "r"), run="bag"))
    fits = [json.loads(line) for line in log.read_text().splitlines()]
    assert not [f for f in fits if f["phase"] == "fit" and not f["search"]]   # the bag reuses the search's models


def test_an_exported_refit_full_model_predicts_with_its_refit(tmp_path):
    from benchmark import load_model
    from benchmark.export.bundle import write_bundle
    from benchmark.export.export import build_export
    from benchmark.export.schema import load_for_prediction

    data = write_register_dataset(tmp_path / "d", n=150, n_pos=30)
    out = Path(run(RunConfig(candidates=["logreg"], data=str(data), profile="tiny", device="cpu",
                             spaces=[str(refit_spaces(tmp_path / "spaces"))], results_dir=str(tmp_path / "r"),
                             run="rf")))
    ex = build_export(out, "logreg", device="cpu")
    comp = ex.model.final
    assert comp.full is not None and len(comp.members) == 2
    bundle = write_bundle(ex.model, tmp_path / "b", cohort=ex.cohort, run_dir=out, oof=ex.oof)
    new = load_for_prediction(write_register_dataset(tmp_path / "e", n=60, n_pos=12, seed=3), ex.model.schema)
    a, b = ex.model.table(new), load_model(bundle).table(new)
    pd.testing.assert_frame_equal(a, b, check_exact=True)
    raw = comp.full.predict_proba(new.view(np.arange(new.n_patients), labels=False))
    np.testing.assert_array_equal(a["prob"].to_numpy(), comp.calibrator.transform(raw))


def test_refit_full_by_modality_refits_only_the_modalities_it_names(tmp_path, monkeypatch):
    import pytest

    from benchmark.errors import UserError
    from benchmark.search.profiles import get_profile

    data = write_register_dataset(tmp_path / "d", n=150, n_pos=30)
    log = tmp_path / "probe.jsonl"
    monkeypatch.setenv("AFF_PROBE_LOG", str(log))
    spaces = write_spaces(tmp_path / "spaces", n_trials=2, outer_folds=3)
    base = (spaces / "profiles.yaml").read_text()
    (spaces / "profiles.yaml").write_text(base + "  refit_full: {image: true, fusion: true}\n")
    prof = get_profile("tiny", [spaces])
    assert prof.refit_full == {"register": False, "image": True, "fusion": True}
    assert prof.budget()["image"]["refit_full"] and not prof.budget()["register"]["refit_full"]
    run(RunConfig(candidates=["probe"], data=str(data), profile="tiny", device="cpu", spaces=[str(spaces)],
                  results_dir=str(tmp_path / "r"), run="by-modality"))
    fits = [json.loads(line) for line in log.read_text().splitlines()]
    assert not [f for f in fits if f["phase"] == "fit" and not f["search"]]   # a register candidate: no refit
    for bad, says in [("{imagery: true}", "'imagery' is not a modality"), ("{image: yes please}", "refit_full.image must be"),
                      ("sometimes", "must be true, false or a mapping")]:
        (spaces / "profiles.yaml").write_text(base + f"  refit_full: {bad}\n")
        with pytest.raises(UserError, match=says):
            get_profile("tiny", [spaces])
