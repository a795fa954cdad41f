"""Successive halving over epochs: the profile key, the rungs, the pricing rule against Optuna's
own pruner, and a real network study (epochs out of the search, reports only at rungs, pruned
trials, the monitor reading inner-validation patients only and changing nothing it watches)."""

from __future__ import annotations

import numpy as np
import optuna
import pytest
import yaml

from benchmark.candidates.base import TrialContext
from benchmark.candidates.torch_family import TorchFamily
from benchmark.data.splits import Fold
from benchmark.errors import UserError
from benchmark.search import pruning as P
from benchmark.search.profiles import get_profile
from benchmark.search.spaces import load_candidates
from benchmark.search.study import run_study
from tabular_helpers import make_part, unlabelled

HALVING = {"type": "successive_halving", "min_epochs": 1, "reduction_factor": 3}


def test_the_profile_key_defaults_to_median_and_checks_halving(tmp_path):
    assert get_profile("quick").pruner == {"type": "median"}
    assert get_profile("standard").pruner == HALVING
    assert P.parse_pruner("successive_halving", "f", "p") == HALVING
    assert P.parse_pruner({"type": "successive_halving", "reduction_factor": 2}, "f", "p")["reduction_factor"] == 2
    for bad, says in [("hyperband", "must be 'median'"), ({"type": "successive_halving", "eta": 3}, "unknown key 'eta'"),
                      ({"type": "successive_halving", "reduction_factor": 1}, "reduction_factor must be")]:
        with pytest.raises(UserError, match=says):
            P.parse_pruner(bad, "profiles.yaml", "mine")
    (tmp_path / "profiles.yaml").write_text(yaml.safe_dump({"smoke": {"pruner": {"type": "sh"}}}))
    with pytest.raises(UserError, match=r"profiles.yaml: profile 'smoke' key 'pruner'"):
        get_profile("smoke", [tmp_path])


def test_rungs_fall_on_epochs_counted_over_the_inner_folds():
    r = P.EpochRungs(min_epochs=1, reduction_factor=3, cap=8, folds=2)
    assert r.steps() == [1, 3, 9]                       # 27 is past the trial's 16 steps
    assert r.monitor_epochs(0) == {1, 3} and r.monitor_epochs(1) == {1}
    r = P.EpochRungs(min_epochs=2, reduction_factor=2, cap=4, folds=3)
    assert r.steps() == [2, 4, 8] and r.monitor_epochs(0) == {2, 4} and r.monitor_epochs(1) == {4}


@pytest.mark.parametrize("trained", [8, 5])
def test_the_pricing_rule_prunes_where_optunas_pruner_does(trained):
    """halving_run replays the study's schedule (rung epochs, fold-end reports) with Optuna's rule."""
    rungs = P.EpochRungs(min_epochs=1, reduction_factor=3, cap=8, folds=2)
    quality = np.random.default_rng(4).random(12)
    shares = P.halving_run(quality, rungs, trained)
    study = optuna.create_study(direction="maximize", pruner=rungs.pruner())
    for q in quality:
        t = study.ask()
        done, pruned = rungs.folds * trained, False
        for k in range(rungs.folds):
            for e in range(1, trained + 1):
                if e in rungs.monitor_epochs(k):
                    t.report(float(q), rungs.offset(k) + e)
                    if t.should_prune():
                        done, pruned = k * trained + e, True
                        break
            if pruned:
                break
            end = rungs.offset(k + 1)
            if k < rungs.folds - 1 and end not in t.storage.get_trial(t._trial_id).intermediate_values:
                t.report(float(q), end)
                if t.should_prune():
                    done, pruned = (k + 1) * trained, True
                    break
        study.tell(t, state=optuna.trial.TrialState.PRUNED) if pruned else study.tell(t, float(q))
        assert done / (rungs.folds * trained) == pytest.approx(shares[len(study.trials) - 1])
    assert 0 < sum(s < 1 for s in shares) < len(shares)     # some trials pruned, the first never
    avg = P.halving_shares(10, P.EpochRungs(1, 3, 30, 3), 30)
    assert avg[0] == 1.0 and 0.1 < np.mean(avg) < 0.6


@pytest.fixture(scope="module")
def cohort():
    part = make_part(160, seed=5)
    return part


def _view(cohort, seen: list):
    def make(positions, labels):
        sub = cohort.subset(np.asarray(positions))
        if not labels:
            seen.append(np.asarray(positions))
            return unlabelled(sub)
        return sub
    return make


def test_a_halving_study_of_a_network_fixes_epochs_reports_at_rungs_and_prunes(cohort, tmp_path, monkeypatch):
    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)
    from dataclasses import replace

    mlp = load_candidates()["mlp"]                   # its epoch parameter is max_epochs, searched here
    mlp = replace(mlp, space={**mlp.space, "max_epochs": {"type": "categorical", "choices": [4, 20]}})
    pos = np.arange(len(cohort.y))
    outer_test = pos[120:]
    inner = [Fold(0, 0, pos[:60], pos[60:120]), Fold(0, 1, pos[60:120], pos[:60])]
    monitored: list = []
    real_source = TorchFamily._source

    def spy(self, data, *, labels):
        monitored.append(np.asarray(data.patients))
        return real_source(self, data, labels=labels)

    monkeypatch.setattr(TorchFamily, "_source", spy)
    seen: list = []
    res = run_study(mlp, _view(cohort, seen), cohort.y, inner, storage=f"sqlite:///{tmp_path}/o.db",
                    study_name="halving", n_trials=6, timeout_s=None, seed=3,
                    ctx_base=TrialContext(max_epochs=9, extra={"n_threads": 1}), pruner=HALVING)
    study = optuna.load_study(study_name="halving", storage=f"sqlite:///{tmp_path}/o.db")
    rungs = P.EpochRungs(1, 3, 9, 2)
    ends = {rungs.offset(1)}
    for t in study.trials:
        assert "max_epochs" not in t.params                              # the pruner owns the epochs
        assert set(t.intermediate_values) <= set(rungs.steps()) | ends    # no holdout-epoch reports
    states = [t.state for t in study.trials]
    assert optuna.trial.TrialState.PRUNED in states and res.n_pruned == states.count(optuna.trial.TrialState.PRUNED)
    assert res.best_models and all(m.epoch_budget_ == 9 for m in res.best_models)   # the cap, not 4 or 20
    # what was predicted unlabelled (scoring and monitors) and every sample source: never the outer test
    inner_test = np.concatenate([f.test for f in inner])
    for batch in seen + monitored:
        assert not np.isin(batch, outer_test).any()
    assert all(np.isin(b, inner_test).all() for b in seen)


def test_a_monitor_changes_nothing_in_the_fit_it_watches(cohort):
    pytest.importorskip("torch")
    from benchmark.candidates.base import get_family

    train, valid = cohort.subset(np.arange(100)), unlabelled(cohort.subset(np.arange(100, 160)))
    scores: list = []
    fits = []
    for watched in (False, True):
        ctx = TrialContext(seed=7, max_epochs=6, extra={"n_threads": 1})
        if watched:
            ctx.monitor = P.Monitor(valid, frozenset({1, 3}), lambda p: scores.append(p) or 0.5)
        fam = get_family("mlp")(max_epochs=6, patience=None, dropout=0.2)
        fits.append(fam.fit(train, None, ctx).predict_proba(valid))
    assert len(scores) == 2 and np.array_equal(fits[0], fits[1])


def test_a_run_and_its_export_under_halving_keep_the_epochs_at_the_cap(tiny_dataset, tmp_path):
    """Study, bag, refit and export build the same candidate: epochs fixed at the cap, not searched."""
    from pathlib import Path

    from benchmark.export.export import export
    from benchmark.run.runner import RunConfig, run
    from runner_helpers import PROFILE_YAML, TINY_CNN, write_spaces

    ds = tiny_dataset(n_pos=10, n_neg=14)
    searched = TINY_CNN.replace("epochs: 2, ", "") + "  epochs: {type: categorical, choices: [1, 3]}\n"
    spaces = write_spaces(tmp_path / "spaces", extra={"tiny_cnn": searched})
    (spaces / "profiles.yaml").write_text(
        PROFILE_YAML.format(n_trials=3, outer_folds=2)
        + "  refit_full: true\n  pruner: {type: successive_halving, min_epochs: 1, reduction_factor: 3}\n")
    out = Path(run(RunConfig(candidates=["tiny_cnn"], data=str(ds.yaml), profile="tiny", device="cpu",
                             spaces=[str(spaces)], results_dir=str(tmp_path / "results"), run="sh")))
    import json

    import pandas as pd

    trials = pd.read_csv(out / "trials.csv")
    assert len(trials) == 2 * 3 and not any("epochs" in json.loads(p) for p in trials["params"])
    studies = pd.read_csv(out / "studies.csv")
    assert (studies["status"] == "ok").all()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["budget"]["pruner"]["type"] == "successive_halving"
    bundle = export(out, None, tmp_path / "bundle", device="cpu")
    import re

    text = (bundle / "model.json").read_text()   # every member and the refit: the cap (2), never 1 or 3
    assert set(re.findall(r'"epochs": (\d+)', text)) == set(re.findall(r'"epoch_budget_": (\d+)', text)) == {"2"}
