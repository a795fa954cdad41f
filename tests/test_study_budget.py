"""The search budget is trials, not seconds; the time limit is a recorded safety net; run isolation.

A fake candidate charges a fake clock for each fit, so "a slow machine" is a number here and
the tests are fast and deterministic.
"""

from __future__ import annotations

import numpy as np
import optuna
import pytest

from benchmark.candidates.base import TrialContext
from benchmark.data.splits import Fold
from benchmark.search import study as study_mod
from benchmark.search.profiles import get_profile
from benchmark.search.study import run_study
from benchmark.search.trials import INTERRUPTED, parse_study_name, study_name, trials_frame

RNG = np.random.default_rng(0)
Y = np.array([0, 1] * 20)
NOISE = RNG.normal(size=len(Y))
INNER = [Fold(0, 0, np.arange(20, 40), np.arange(0, 20)), Fold(0, 1, np.arange(0, 20), np.arange(20, 40))]


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


class FakeCandidate:
    """One float parameter; each fit costs ``cost_s`` on the fake clock; ``stop_at_fit`` raises Ctrl-C."""

    start = {"x": 1.0}

    def __init__(self, clock: Clock, cost_s: float, stop_at_fit: int | None = None) -> None:
        self.clock, self.cost_s, self.stop_at_fit, self.fits = clock, cost_s, stop_at_fit, 0

    def sample(self, trial) -> dict:
        return {"x": trial.suggest_float("x", 0.0, 2.0)}

    def build(self, params: dict):
        cand = self

        class Model:
            def fit(self, train, valid, ctx):
                cand.fits += 1
                cand.clock.t += cand.cost_s
                if cand.stop_at_fit is not None and cand.fits == cand.stop_at_fit:
                    raise KeyboardInterrupt
                return self

            def predict_proba(self, positions):
                return 1 / (1 + np.exp(-(params["x"] * Y[positions] + NOISE[positions])))

        return Model()


def _run(storage: str, name: str, cand: FakeCandidate, n_trials: int, timeout_s: float | None):
    return run_study(cand, lambda positions, labels: positions, Y, INNER, storage=storage, study_name=name,
                     n_trials=n_trials, timeout_s=timeout_s, seed=11, ctx_base=TrialContext())


def _params(storage: str, run_id: str | None = None) -> list[str]:
    return [r["params"] for r in trials_frame(storage, run_id) if r["info"] != INTERRUPTED]


@pytest.fixture
def clock(monkeypatch) -> Clock:
    c = Clock()
    monkeypatch.setattr(study_mod, "_clock", c)
    return c


def test_a_slow_machine_runs_the_same_trials_as_a_fast_one(tmp_path, clock):
    quick = get_profile("quick")
    n = quick.trials_for("image")
    out = []
    for cost_s in (0.01, 60.0):     # a GPU-fast fit and a CPU CNN fit: the quick time limit must not bite
        storage = f"sqlite:///{tmp_path / f'{cost_s}.db'}"
        res = _run(storage, study_name("r", "cnn", 0, 0), FakeCandidate(clock, cost_s), n, quick.study_timeout_s)
        assert res.n_trials == n and res.n_failed == 0 and not res.timed_out
        out.append(_params(storage))
    assert out[0] == out[1] and len(out[0]) == n


def test_the_time_limit_is_a_recorded_safety_net(tmp_path, clock):
    storage = f"sqlite:///{tmp_path / 'o.db'}"
    res = _run(storage, study_name("r", "c", 0, 0), FakeCandidate(clock, 5.0), n_trials=10, timeout_s=25)
    assert res.timed_out and res.n_trials == 3     # 10 s per trial (two inner fits): 0, 10, 20 < 25, then 30
    assert res.search_s == pytest.approx(30)
    done = _run(f"sqlite:///{tmp_path / 'p.db'}", study_name("r", "c", 0, 0), FakeCandidate(clock, 5.0),
                n_trials=2, timeout_s=25)
    assert not done.timed_out and done.n_trials == 2


def test_resume_does_not_restart_the_clock(tmp_path, clock):
    whole = f"sqlite:///{tmp_path / 'whole.db'}"
    ref = _run(whole, study_name("r", "c", 0, 0), FakeCandidate(clock, 5.0), n_trials=10, timeout_s=25)
    cut = f"sqlite:///{tmp_path / 'cut.db'}"
    with pytest.raises(KeyboardInterrupt):   # stopped in the third trial's first fit
        _run(cut, study_name("r", "c", 0, 0), FakeCandidate(clock, 5.0, stop_at_fit=5), n_trials=10, timeout_s=25)
    resumed = _run(cut, study_name("r", "c", 0, 0), FakeCandidate(clock, 5.0), n_trials=10, timeout_s=25)
    assert resumed.timed_out and resumed.n_trials == ref.n_trials == 3
    assert _params(cut) == _params(whole)


def test_study_names_carry_the_run_and_parse_back():
    for parts in [("20250101-120000-1a2b3c4d", "xgboost", 0, 2), ("run:with:colons", "my:cand", 2, 11),
                  ("a b/ä%", "x", 0, 0)]:
        name = study_name(*parts)
        assert name.count(":") == 3 and parse_study_name(name) == parts
    assert study_name("run:1", "c", 0, 0) != study_name("run", "1:c", 0, 0)
    assert parse_study_name("xgboost:r0:f1") == (None, "xgboost", 0, 1)     # the old format: no run
    assert parse_study_name("someone-elses-study") is None


def test_trials_frame_lists_only_the_runs_own_studies(tmp_path, clock):
    storage = f"sqlite:///{tmp_path / 'shared.db'}"
    for run_id, n in (("run:a", 2), ("run", 3)):      # "run" is a prefix of "run:a": no mix-up
        for fold in (0, 1):
            res = _run(storage, study_name(run_id, "c", 0, fold), FakeCandidate(clock, 1.0), n, None)
            assert res.n_trials == n                      # each run's studies get their whole budget
    _run(storage, "c:r0:f0", FakeCandidate(clock, 1.0), 1, None)                    # an old-format study
    optuna.create_study(study_name="someone-elses-study", storage=storage).optimize(lambda t: 0.0, n_trials=1)
    a, b = trials_frame(storage, "run:a"), trials_frame(storage, "run")
    assert len(a) == 2 * 2 and len(b) == 2 * 3
    assert {(r["candidate"], r["outer_fold"]) for r in a} == {("c", 0), ("c", 1)}
    assert len(trials_frame(storage)) == 4 + 6 + 1      # every study of a run (and old ones), no foreign study


def test_a_cpu_study_does_not_force_a_garbage_collection_per_trial(tmp_path, clock, monkeypatch):
    """A full collection after each trial cost 0.2-0.3 s (39 % of a standard lightgbm run on the
    CPU); only a trial that used a GPU needs one, to hand its CUDA memory back."""
    calls = []
    import gc

    monkeypatch.setattr(gc, "collect", lambda *a: calls.append(a) or 0)
    res = _run(f"sqlite:///{tmp_path / 'gc.db'}", "gc", FakeCandidate(clock, 1.0), 4, None)
    assert res.n_trials == 4 and calls == []
