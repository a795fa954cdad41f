"""The nested protocol end to end on tiny register-only cohorts with instrumented candidates."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from benchmark.cli import main
from benchmark.data.dataset import load_dataset
from benchmark.errors import UserError
from benchmark.run.runner import RunConfig, run
from runner_helpers import PROBE_YAML, write_register_dataset, write_spaces

ROOT = Path(__file__).resolve().parents[1]


def _cfg(tmp_path: Path, data: Path, spaces: Path, **kw) -> RunConfig:
    base = dict(candidates=["probe"], data=str(data), profile="tiny", device="cpu", spaces=[str(spaces)],
                results_dir=str(tmp_path / "results"), seed=7)
    base.update(kw)
    return RunConfig(**base)


def _folds(run_dir: Path, cohort) -> list[tuple[set, set]]:
    folds = pd.read_csv(run_dir / "folds.csv")
    pos = {k: i for i, k in enumerate(cohort.keys)}
    out = []
    for _, g in folds.groupby(["repeat", "outer_fold"]):
        out.append(({pos[k] for k in g.loc[g.part == "train", "patient"]},
                    {pos[k] for k in g.loc[g.part == "test", "patient"]}))
    return out


def test_outer_test_patients_never_seen_by_search(tmp_path, monkeypatch):
    data = write_register_dataset(tmp_path / "data")
    spaces = write_spaces(tmp_path / "spaces")
    log = tmp_path / "probe.jsonl"
    monkeypatch.setenv("AFF_PROBE_LOG", str(log))
    run_dir = run(_cfg(tmp_path, data, spaces, run="leak"))
    folds = _folds(run_dir, load_dataset(data))
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    fits = [c for c in calls if c["phase"] == "fit"]
    assert any(c["search"] for c in fits)
    for c in calls:
        seen = set(c["patients"])
        if c["phase"] == "fit" or c["labelled"]:
            # every training call (search or bag) and every labelled call stays inside one outer-train part
            assert any(seen <= train for train, _ in folds), "a training or labelled call saw outer-test patients"
    # every outer-test patient is predicted, and only without labels
    test_calls = [set(c["patients"]) for c in calls if c["phase"] == "predict" and not c["labelled"]]
    for _, test in folds:
        assert any(test <= s for s in test_calls)


def test_patients_never_straddle_outer_folds(tmp_path):
    data = write_register_dataset(tmp_path / "data")
    run_dir = run(_cfg(tmp_path, data, write_spaces(tmp_path / "spaces"), run="folds"))
    folds = pd.read_csv(run_dir / "folds.csv")
    tests = folds[folds.part == "test"]
    assert tests.patient.is_unique and len(tests) == 150
    for _, g in folds.groupby("outer_fold"):
        assert not set(g[g.part == "train"].patient) & set(g[g.part == "test"].patient)


@pytest.mark.parametrize("candidates", [["logreg", "xgboost", "lightgbm", "mlp"]])
def test_shuffled_labels_give_chance_auc_for_every_candidate(tmp_path, candidates):
    data = write_register_dataset(tmp_path / "data", n=400, n_pos=80, shuffle_labels=True)
    spaces = write_spaces(tmp_path / "spaces", n_trials=2)
    run_dir = run(_cfg(tmp_path, data, spaces, candidates=candidates, run="shuffled"))
    board = pd.read_csv(run_dir / "leaderboard.csv").set_index("candidate")
    for c in candidates:
        assert board.loc[c, "status"] != "failed", board.loc[c, "info"]
        assert abs(board.loc[c, "auc"] - 0.5) <= 0.1, (c, board.loc[c, "auc"])


def test_signal_is_found_with_true_labels(tmp_path):
    data = write_register_dataset(tmp_path / "data", n=400, n_pos=80)
    run_dir = run(_cfg(tmp_path, data, write_spaces(tmp_path / "spaces"), run="signal"))
    board = pd.read_csv(run_dir / "leaderboard.csv").set_index("candidate")
    assert board.loc["probe", "auc"] > 0.8


def test_same_seed_gives_identical_folds_and_predictions(tmp_path):
    data = write_register_dataset(tmp_path / "data")
    spaces = write_spaces(tmp_path / "spaces")
    a = run(_cfg(tmp_path, data, spaces, candidates=["probe", "logreg", "xgboost"], run="a"))
    b = run(_cfg(tmp_path, data, spaces, candidates=["probe", "logreg", "xgboost"], run="b"))
    pd.testing.assert_frame_equal(pd.read_csv(a / "folds.csv"), pd.read_csv(b / "folds.csv"))
    pa, pb = pd.read_parquet(a / "predictions.parquet"), pd.read_parquet(b / "predictions.parquet")
    pd.testing.assert_frame_equal(pa, pb)


def test_failing_trials_are_recorded_and_the_candidate_still_gets_a_row(tmp_path):
    flaky = PROBE_YAML.replace("name: probe", "name: flaky").format(fixed="fail_rate: 0.5")
    broken = PROBE_YAML.replace("name: probe", "name: broken").format(fixed="always_fail: true")
    spaces = write_spaces(tmp_path / "spaces", n_trials=4, extra={"flaky": flaky, "broken": broken})
    data = write_register_dataset(tmp_path / "data")
    run_dir = run(_cfg(tmp_path, data, spaces, candidates=["flaky", "broken"], run="fail"))
    board = pd.read_csv(run_dir / "leaderboard.csv").set_index("candidate")
    assert board.loc["flaky", "status"] in ("ok", "partial") and np.isfinite(board.loc["flaky", "auc"])
    assert board.loc["broken", "status"] == "failed"
    assert "this candidate always fails" in board.loc["broken", "info"]
    trials = pd.read_csv(run_dir / "trials.csv")
    failed = trials[trials.state == "FAIL"]
    assert len(failed[failed.candidate == "broken"]) == 4 * 3
    assert failed["info"].str.contains("planted failure|always fails").all()


def _cli(args: list[str], env: dict, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "benchmark", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)


def test_resume_after_kill_gives_the_same_leaderboard(tmp_path):
    slow = PROBE_YAML.replace("name: probe", "name: slow").replace("fake_families:ProbeFamily",
                                                                   "fake_families:SlowProbeFamily").format(fixed="")
    spaces = write_spaces(tmp_path / "spaces", n_trials=4, extra={"slow": slow})
    data = write_register_dataset(tmp_path / "data")
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'tests'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "AFF_PROBE_SLEEP": "0.05", "AFF_BENCHMARK_RESULTS": str(tmp_path / "results")}
    common = ["run", "--candidates", "slow", "--data", str(data), "--profile", "tiny", "--device", "cpu",
              "--spaces", str(spaces), "--seed", "3"]
    ref = _cli(common + ["--run", "ref"], env)
    assert ref.wait(timeout=300) == 0, ref.stdout.read()
    proc = _cli(common + ["--run", "cut"], env, start_new_session=True)
    db = tmp_path / "results" / "cut" / "optuna.db"
    deadline = time.time() + 120
    while time.time() < deadline:  # kill once the second outer fold's study has started
        if db.exists() and (tmp_path / "results" / "cut" / "parts" / "slow__r0_f0.parquet").exists():
            time.sleep(0.3)
            break
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "results" / "cut" / "leaderboard.csv").exists()
    resumed = _cli(["run", "--resume", "--run", "cut"], env)
    out = resumed.communicate(timeout=300)[0]
    assert resumed.returncode == 0, out
    assert "reused from an earlier run" in out
    cols = ["candidate", "auc", "brier", "ece", "n_patients"]
    a = pd.read_csv(tmp_path / "results" / "ref" / "leaderboard.csv")[cols]
    b = pd.read_csv(tmp_path / "results" / "cut" / "leaderboard.csv")[cols]
    pd.testing.assert_frame_equal(a, b)
    pa = pd.read_parquet(tmp_path / "results" / "ref" / "predictions.parquet")
    pb = pd.read_parquet(tmp_path / "results" / "cut" / "predictions.parquet")
    pd.testing.assert_frame_equal(pa, pb)


def test_unknown_suite_is_a_one_line_error(tmp_path, capsys):
    assert main(["run", "--suite", "nope", "--results", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: suite 'nope' is unknown") and "\n" not in err


@pytest.mark.parametrize("stop", [RuntimeError("disk full\nsecond line"), KeyboardInterrupt()])
def test_a_run_that_stops_leaves_a_failed_manifest_with_the_reason(tmp_path, monkeypatch, stop):
    from benchmark.run.fold_runner import FoldRunner

    calls = {"n": 0}
    real = FoldRunner.run_unit

    def run_unit(self, unit):
        calls["n"] += 1
        if calls["n"] == 2:
            raise stop
        return real(self, unit)

    monkeypatch.setattr(FoldRunner, "run_unit", run_unit)
    data = write_register_dataset(tmp_path / "data")
    with pytest.raises(type(stop)):
        run(_cfg(tmp_path, data, write_spaces(tmp_path / "spaces", n_trials=1), run="stopped"))
    man = json.loads((tmp_path / "results" / "stopped" / "manifest.json").read_text())
    assert man["status"] == "failed"
    assert man["reason"] == ("RuntimeError: disk full" if isinstance(stop, RuntimeError)
                             else "interrupted (KeyboardInterrupt)")
    monkeypatch.setattr(FoldRunner, "run_unit", real)     # --resume finishes it: complete, no reason
    run(_cfg(tmp_path, data, write_spaces(tmp_path / "spaces", n_trials=1), run="stopped", resume=True))
    man2 = json.loads((tmp_path / "results" / "stopped" / "manifest.json").read_text())
    assert man2["status"] == "complete" and "reason" not in man2 and man2["run_id"] == man["run_id"]


def test_resume_refuses_a_run_whose_profile_changed_since_it_started(tmp_path):
    """A resumed run would mix budgets; a manifest from before warm_start_source means best_image."""
    data = write_register_dataset(tmp_path / "data")
    spaces = write_spaces(tmp_path / "spaces", n_trials=1)
    run_dir = run(_cfg(tmp_path, data, spaces, run="r"))
    run(_cfg(tmp_path, data, spaces, run="r", resume=True))                   # unchanged: fine
    profiles = spaces / "profiles.yaml"
    profiles.write_text(profiles.read_text().replace("bootstrap: 50", "bootstrap: 60"))
    with pytest.raises(UserError, match=r"profile 'tiny' changed since run r started \(bootstrap: 50 then, 60 now\)"):
        run(_cfg(tmp_path, data, spaces, run="r", resume=True))
    profiles.write_text(profiles.read_text().replace("bootstrap: 60", "bootstrap: 50"))
    man = json.loads((run_dir / "manifest.json").read_text())
    del man["profile"]["warm_start_source"]                                    # a run from before the key
    (run_dir / "manifest.json").write_text(json.dumps(man))
    run(_cfg(tmp_path, data, spaces, run="r", resume=True))                   # it meant best_image: fine
    man = json.loads((run_dir / "manifest.json").read_text())
    del man["profile"]["warm_start_source"]
    (run_dir / "manifest.json").write_text(json.dumps(man))
    profiles.write_text(profiles.read_text() + "  warm_start_source: resnet18\n")
    with pytest.raises(UserError, match="warm_start_source: 'best_image' then, 'resnet18' now"):
        run(_cfg(tmp_path, data, spaces, run="r", resume=True))


def test_manifest_records_the_run_id_and_each_modality_budget(tmp_path):
    data = write_register_dataset(tmp_path / "data")
    run_dir = run(_cfg(tmp_path, data, write_spaces(tmp_path / "spaces", n_trials=2), run="budget"))
    man = json.loads((run_dir / "manifest.json").read_text())
    assert man["run_id"].startswith("budget-") and len(man["run_id"]) > len("budget-")
    assert man["budget"]["register"] == {"n_trials": 2, "max_epochs": 2, "refit_full": False}
    assert man["budget"]["fusion"]["max_epochs_image_networks"] == 2 and man["budget"]["study_timeout_s"] == 600
