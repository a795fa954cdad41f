"""Parallel runs on Ray (``run --workers N``): the same answer as the sequential run, and faults.

Every test starts a real local Ray instance and real worker processes (a few seconds each).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

pytest.importorskip("ray")

from benchmark.errors import UserError  # noqa: E402
from benchmark.run.runner import RunConfig, run  # noqa: E402
from runner_helpers import LATE, PROBE_YAML, TINY_CNN, write_register_dataset, write_spaces  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TIMING = ["wall_s"]   # the only columns that may differ between two runs of one seed

MLP = """
name: net
family: mlp
modality: register
fixed: {max_epochs: 3, batch_size: 16}
space:
  lr: {type: float, low: 0.0005, high: 0.01, log: true}
"""
WARM_SOURCE = """
name: src
family: fake_families:WarmSourceFamily
modality: image
space:
  C: {type: float, low: 0.01, high: 10, log: true}
"""
WARM = """
name: warm
family: fake_families:WarmFusionFamily
modality: fusion
space:
  C: {type: float, low: 0.01, high: 10, log: true}
"""


def _same_run(a: Path, b: Path) -> None:
    pd.testing.assert_frame_equal(pd.read_parquet(a / "predictions.parquet"), pd.read_parquet(b / "predictions.parquet"))
    la, lb = (pd.read_csv(d / "leaderboard.csv").drop(columns=TIMING) for d in (a, b))
    pd.testing.assert_frame_equal(la, lb)


def test_two_workers_give_the_sequential_answer(tiny_dataset, tmp_path, monkeypatch):
    """Image, register, torch, fusion by role and a warm start by role (which waits for the image
    units without consuming them): predictions.parquet and leaderboard.csv are identical."""
    ds = tiny_dataset(n_pos=10, n_neg=14)
    monkeypatch.setenv("AFF_WARM_LOG", str(tmp_path / "warm.jsonl"))
    spaces = write_spaces(tmp_path / "spaces", n_trials=2, outer_folds=2,
                          extra={"tiny_cnn": TINY_CNN, "net": MLP, "late": LATE, "src": WARM_SOURCE, "warm": WARM})
    common = dict(candidates=["warm", "late", "tiny_cnn", "src", "probe", "net"], data=str(ds.yaml), profile="tiny",
                  device="cpu", spaces=[str(spaces)], results_dir=str(tmp_path / "r"), seed=5)
    seq = Path(run(RunConfig(run="seq", threads=1, **common)))
    par = Path(run(RunConfig(run="par", workers=2, **common)))
    man = json.loads((par / "manifest.json").read_text())
    assert man["config"]["threads"] == 1 and man["config"]["workers"] == 2 and man["storage"] == "optuna.journal"
    _same_run(seq, par)
    board = pd.read_csv(par / "leaderboard.csv").set_index("candidate")
    assert (board.loc[["warm", "late", "tiny_cnn", "src", "probe", "net"], "status"] != "failed").all()
    # the warm-started fusion waited for the image units and started from the fold's best one
    assert {json.loads(line)["source"] for line in (tmp_path / "warm.jsonl").read_text().splitlines()} <= {"tiny_cnn", "src"}
    trials = pd.read_csv(par / "trials.csv")
    assert len(trials) == 6 * 2 * 2 and set(trials.state) <= {"COMPLETE", "PRUNED"}


def test_parallel_settings_are_checked(tmp_path):
    data = write_register_dataset(tmp_path / "data")
    spaces = write_spaces(tmp_path / "spaces")
    base = dict(candidates=["probe"], data=str(data), profile="tiny", device="cpu", spaces=[str(spaces)],
                results_dir=str(tmp_path / "r"))
    with pytest.raises(UserError, match="SQLite cannot take several workers"):
        run(RunConfig(workers=2, storage=f"sqlite:///{tmp_path / 'x.db'}", **base))
    with pytest.raises(UserError, match="--workers 0"):
        run(RunConfig(workers=0, **base))
    with pytest.raises(UserError, match="--gpu-share"):
        run(RunConfig(workers=2, gpu_share=1.5, **base))


def test_a_unit_whose_worker_dies_twice_is_recorded_failed_and_the_run_goes_on(tmp_path):
    dying = PROBE_YAML.replace("name: probe", "name: dying").replace(
        "fake_families:ProbeFamily", "fake_families:DyingProbeFamily").format(fixed="")
    data = write_register_dataset(tmp_path / "data")
    spaces = write_spaces(tmp_path / "spaces", n_trials=2, outer_folds=2, extra={"dying": dying})
    out = Path(run(RunConfig(candidates=["probe", "dying"], data=str(data), profile="tiny", device="cpu",
                             spaces=[str(spaces)], results_dir=str(tmp_path / "r"), workers=2, run="d")))
    board = pd.read_csv(out / "leaderboard.csv").set_index("candidate")
    assert board.loc["probe", "status"] != "failed"
    assert board.loc["dying", "status"] == "failed"
    assert "failed on two workers (its worker died)" in board.loc["dying", "info"]
    studies = pd.read_csv(out / "studies.csv")
    assert (studies[studies.candidate == "dying"].status == "failed").all()


# ---- real processes killed with SIGKILL --------------------------------------------------------

def _cli(args: list[str], env: dict) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "benchmark", *args], cwd=ROOT, env=env, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _unit_workers() -> list[int]:
    """Pids of Ray worker processes running a unit now (Ray titles them ``ray::_run_unit``)."""
    pids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if (d / "cmdline").read_bytes().startswith(b"ray::_run_unit"):
                    pids.append(int(d.name))
            except OSError:
                continue
    return pids


def _slow_setup(tmp_path: Path):
    slow = PROBE_YAML.replace("name: probe", "name: slow").replace(
        "fake_families:ProbeFamily", "fake_families:SlowProbeFamily").format(fixed="")
    spaces = write_spaces(tmp_path / "spaces", n_trials=4, outer_folds=3, extra={"slow": slow})
    data = write_register_dataset(tmp_path / "data")
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'tests'}{os.pathsep}{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "AFF_PROBE_SLEEP": "0.15", "AFF_BENCHMARK_RESULTS": str(tmp_path / "results")}
    common = ["run", "--candidates", "slow,probe", "--data", str(data), "--profile", "tiny", "--device", "cpu",
              "--spaces", str(spaces), "--seed", "3", "--threads", "1"]
    ref = _cli(common + ["--run", "ref"], env)
    assert ref.wait(timeout=300) == 0, ref.stdout.read()
    return env, common


def _wait_for(cond, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if cond():
            return
        time.sleep(0.05)
    raise AssertionError("timed out")


def _pg_rows(url: str, sql: str) -> list:
    import psycopg

    with psycopg.connect("postgresql://" + url.split("://", 1)[1]) as conn:
        try:
            return conn.execute(sql).fetchall()
        except psycopg.errors.UndefinedTable:   # Optuna has not made its tables yet
            return []


@pytest.mark.slow
def test_a_worker_killed_mid_study_is_retried_and_the_leaderboard_is_unchanged(tmp_path, fresh_pg_database):
    """On PostgreSQL, as across machines: the trial of the dead worker is closed, not counted,
    and its study goes on in a new worker to the answer of an uninterrupted sequential run."""
    env, common = _slow_setup(tmp_path)
    out = tmp_path / "results" / "cut"
    proc = _cli(common + ["--run", "cut", "--workers", "2", "--storage", fresh_pg_database], env)
    # the worker of a running trial whose study has finished one already: it is mid-study and
    # mid-trial. Frozen first (SIGSTOP), then killed only if its trial is still running.
    running = ("SELECT t.trial_id, a.value_json FROM trials t JOIN trial_user_attributes a "
               "ON a.trial_id = t.trial_id AND a.key = 'worker' WHERE t.state = 'RUNNING' AND EXISTS "
               "(SELECT 1 FROM trials c WHERE c.study_id = t.study_id AND c.state = 'COMPLETE')")
    killed = None
    deadline = time.time() + 120
    while killed is None and time.time() < deadline:
        for trial_id, worker in _pg_rows(fresh_pg_database, running):
            pid = int(json.loads(worker).rsplit(":", 1)[1])
            os.kill(pid, signal.SIGSTOP)
            if _pg_rows(fresh_pg_database, f"SELECT 1 FROM trials WHERE trial_id = {trial_id} AND state = 'RUNNING'"):
                assert pid in _unit_workers()
                os.kill(pid, signal.SIGKILL)
                killed = trial_id
                break
            os.kill(pid, signal.SIGCONT)   # the trial ended meanwhile: try another
        time.sleep(0.05)
    assert killed is not None
    text = proc.communicate(timeout=300)[0]
    assert proc.returncode == 0, text
    _same_run(tmp_path / "results" / "ref", out)
    trials = pd.read_csv(out / "trials.csv")
    assert (trials["info"].fillna("").str.startswith("interrupted")).sum() >= 1   # the dead trial, not counted
    finished = trials[~trials["info"].fillna("").str.startswith("interrupted")]
    assert (finished.groupby(["candidate", "outer_fold"]).size() == 4).all()       # none lost, none twice
    assert json.loads((out / "manifest.json").read_text())["storage"] == "external"


@pytest.mark.slow
def test_a_parallel_run_killed_and_resumed_gives_the_same_leaderboard(tmp_path):
    env, common = _slow_setup(tmp_path)
    out = tmp_path / "results" / "cut"
    proc = _cli(common + ["--run", "cut", "--workers", "2"], env)
    # a unit is finished once its studies row (the part's .json) is written, after its predictions
    # (.parquet), explanations and learning curve: kill after two finished units
    _wait_for(lambda: len(list((out / "parts").glob("*__r*_f*.json"))) >= 2)
    os.killpg(proc.pid, signal.SIGKILL)
    for pid in _unit_workers():   # Ray's workers outlive a killed driver only briefly; do not wait for them
        os.kill(pid, signal.SIGKILL)
    proc.wait()
    assert not (out / "leaderboard.csv").exists()
    resumed = _cli(["run", "--resume", "--run", "cut", "--workers", "2"], env)
    text = resumed.communicate(timeout=300)[0]
    assert resumed.returncode == 0, text
    assert "reused from an earlier run" in text
    _same_run(tmp_path / "results" / "ref", out)


def test_no_more_units_run_at_once_than_workers(tmp_path):
    """A unit holds its CPUs for its whole run (nothing in a worker blocks on Ray, which would
    lend them to another unit): with one worker the studies never overlap in time."""
    import optuna

    from benchmark.search.storage import open_storage

    slow = PROBE_YAML.replace("name: probe", "name: slow").replace(
        "fake_families:ProbeFamily", "fake_families:SlowProbeFamily").format(fixed="")
    data = write_register_dataset(tmp_path / "data")
    spaces = write_spaces(tmp_path / "spaces", n_trials=2, outer_folds=3, extra={"slow": slow})
    os.environ["AFF_PROBE_SLEEP"] = "0.05"
    try:
        out = Path(run(RunConfig(candidates=["slow", "probe"], data=str(data), profile="tiny", device="cpu",
                                 spaces=[str(spaces)], results_dir=str(tmp_path / "r"), workers=1, run="one")))
    finally:
        del os.environ["AFF_PROBE_SLEEP"]
    storage = open_storage(str(out / "optuna.journal"))
    spans = []
    for name in optuna.study.get_all_study_names(storage):
        trials = optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False)
        spans.append((min(t.datetime_start for t in trials), max(t.datetime_complete for t in trials)))
    spans.sort()
    assert len(spans) == 6
    assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:])), spans


@pytest.mark.slow
def test_a_run_on_an_existing_ray_cluster(tmp_path):
    """``--cluster ADDRESS`` joins a cluster started apart with ``ray start --head`` (as on
    Slurm; with a token, as README says), and gives the sequential answer."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    data = write_register_dataset(tmp_path / "data")
    spaces = write_spaces(tmp_path / "spaces", n_trials=2, outer_folds=2)
    env = {**os.environ, "RAY_AUTH_MODE": "token", "AFF_BENCHMARK_RESULTS": str(tmp_path / "results"),
           "PYTHONPATH": f"{ROOT / 'tests'}{os.pathsep}{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    ray_cli = [sys.executable, "-m", "ray.scripts.scripts"]   # the `ray` command of this environment
    subprocess.run(ray_cli + ["get-auth-token", "--generate"], env=env, capture_output=True, timeout=60)
    started = subprocess.run(ray_cli + ["start", "--head", f"--port={port}", "--num-cpus=2", "--disable-usage-stats",
                                        "--include-dashboard=false"], env=env, capture_output=True, text=True,
                             timeout=120)
    if started.returncode != 0:
        pytest.skip(f"ray start --head failed here: {started.stderr.strip().splitlines()[-1:]}")
    try:
        from ray.util import get_node_ip_address

        address = f"{get_node_ip_address()}:{port}"   # where the head listens (not 127.0.0.1)
        common = ["run", "--candidates", "probe", "--data", str(data), "--profile", "tiny", "--device", "cpu",
                  "--spaces", str(spaces), "--seed", "2", "--threads", "1"]
        for extra in (["--run", "seq"], ["--run", "cl", "--cluster", address]):
            done = subprocess.run([sys.executable, "-m", "benchmark", *common, *extra], cwd=ROOT, env=env,
                                  capture_output=True, text=True, timeout=300)
            assert done.returncode == 0, done.stdout + done.stderr
        _same_run(tmp_path / "results" / "seq", tmp_path / "results" / "cl")
        assert json.loads((tmp_path / "results" / "cl" / "manifest.json").read_text())["config"]["cluster"] == address
    finally:
        subprocess.run(ray_cli + ["stop", "--force"], env=env, capture_output=True, timeout=120)
