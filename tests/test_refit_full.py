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


def test_entropy_describes_the_scored_refit_prediction_not_the_members_mean(tmp_path):
    """With a refit, ``prob`` (what log loss and Brier score are computed on) is not the members'
    mean: ``entropy`` is the predictive entropy of ``prob``; mutual information stays the members'."""
    from benchmark.evaluate.uncertainty import binary_entropy

    data = write_register_dataset(tmp_path / "d", n=150, n_pos=30)
    out = Path(run(RunConfig(candidates=["probe"], data=str(data), profile="tiny", device="cpu",
                             spaces=[str(refit_spaces(tmp_path / "spaces"))], results_dir=str(tmp_path / "r"),
                             run="rf")))
    test = pd.read_parquet(out / "predictions.parquet").query("candidate == 'probe' and set == 'test'")
    members = np.array([np.mean(m) for m in test["members"]])
    assert np.abs(members - test["prob"]).max() > 0.01       # the refit predicts something else than the bag
    np.testing.assert_allclose(test["entropy"], binary_entropy(test["prob"].to_numpy()), atol=1e-12)
    h_members = np.array([np.mean(binary_entropy(np.asarray(m))) for m in test["members"]])
    np.testing.assert_allclose(test["mutual_info"], np.maximum(binary_entropy(members) - h_members, 0), atol=1e-12)


from test_trustworthy import LATE as LATE_FIXED   # noqa: E402  late_average of probe and probe_b, fixed weights


def test_a_fusion_refit_reads_its_inputs_bag_predictions_the_kind_it_trained_on(tmp_path):
    """A fusion trains on its inputs' single-member out-of-fold predictions; its refit must read the
    same kind at test (the inputs' bag prediction mapped to one member's spread, ``prob_bag``), not
    the inputs' own refits."""
    from scipy.special import expit, logit

    from runner_helpers import PROBE_YAML

    data = write_register_dataset(tmp_path / "d", n=150, n_pos=30)
    spaces = refit_spaces(tmp_path / "spaces")
    (spaces / "probe_b.yaml").write_text(PROBE_YAML.format(fixed="").replace("name: probe", "name: probe_b"))
    (spaces / "fused.yaml").write_text(LATE_FIXED)
    out = Path(run(RunConfig(candidates=["probe", "probe_b", "fused"], data=str(data), profile="tiny", device="cpu",
                             spaces=[str(spaces)], results_dir=str(tmp_path / "r"), run="rf")))
    parts = out / "parts"
    a, b, f = (pd.read_parquet(parts / f"{n}__r0_f0.parquet").query("set == 'test'").set_index("position")
               for n in ("probe", "probe_b", "fused"))
    a, b = a.loc[f.index], b.loc[f.index]
    from_refits = expit(0.5 * logit(a["prob"]) + 0.5 * logit(b["prob"]))
    assert np.abs(f["prob_raw"] - from_refits).max() > 1e-3, "the fusion's refit read its inputs' refits"
    from_bags = expit(0.5 * logit(a["prob_bag"]) + 0.5 * logit(b["prob_bag"]))
    assert np.abs(from_refits - from_bags).max() > 1e-3
    np.testing.assert_allclose(f["prob_raw"], from_bags, rtol=1e-9)
    # an exported model does the same: its fusion refit reads the inputs' bag predictions
    from benchmark.data.dataset import load_dataset
    from benchmark.export.export import build_export

    ex = build_export(out, "fused", device="cpu")
    outs = ex.model.outputs(load_dataset(data))
    pa, pb = outs["probe"], outs["probe_b"]
    assert pa.bag is not None and np.abs(pa.bag[0] - pa.prob).max() > 1e-3
    np.testing.assert_allclose(outs["fused"].prob_raw, expit(0.5 * logit(pa.bag[0]) + 0.5 * logit(pb.bag[0])),
                               rtol=1e-9)
