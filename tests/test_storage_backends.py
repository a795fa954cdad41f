"""The Optuna storages beside SQLite: a journal file (workers on one machine) and PostgreSQL (many).

Real servers and real processes, no mocks: the PostgreSQL tests use the ``postgres_url``
fixture (``$AFF_TEST_POSTGRES_URL`` or a throwaway server; skipped when neither is possible)
and a fresh database each. Worker processes are this file run as a script::

    python tests/test_storage_backends.py STORAGE STUDY N_TRIALS [--block-at FIT] [--fit-sleep S] [--wait-for FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import optuna
import pytest

from benchmark.candidates.base import TrialContext
from benchmark.data.splits import Fold
from benchmark.errors import UserError
from benchmark.search import storage as storage_mod
from benchmark.search.storage import (dashboard_storage, normalise_url, open_storage, redact,
                                      uses_concurrent_writers_safely)
from benchmark.search.study import run_study
from benchmark.search.trials import INTERRUPTED, _interrupted, study_name, trials_frame

pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")   # heartbeats, fail_stale_trials

HERE = Path(__file__).resolve()
ROOT = HERE.parent.parent
RNG = np.random.default_rng(0)
Y = np.array([0, 1] * 20)
NOISE = RNG.normal(size=len(Y))
INNER = [Fold(0, 0, np.arange(20, 40), np.arange(0, 20)), Fold(0, 1, np.arange(0, 20), np.arange(20, 40))]
RUN = "20250101-000000-storage"
SEED = 11
N_TRIALS = 6


class Candidate:
    """Two parameters; the score depends on them. ``block_at``: that fit (1-based) never ends."""

    start = {"x": 1.0, "k": "a"}

    def __init__(self, block_at: int | None = None, fit_sleep: float = 0.0, marker: Path | None = None) -> None:
        self.block_at, self.fit_sleep, self.marker, self.fits = block_at, fit_sleep, marker, 0

    def sample(self, trial) -> dict:
        return {"x": trial.suggest_float("x", 0.0, 2.0), "k": trial.suggest_categorical("k", ["a", "b"])}

    def build(self, params: dict):
        cand = self

        class Model:
            def fit(self, train, valid, ctx):
                cand.fits += 1
                if cand.block_at is not None and cand.fits == cand.block_at:
                    if cand.marker is not None:
                        cand.marker.write_text("blocked")
                    time.sleep(3600)   # killed here
                time.sleep(cand.fit_sleep)
                return self

            def predict_proba(self, positions):
                slope = params["x"] * (1.0 if params["k"] == "a" else 0.7)
                return 1 / (1 + np.exp(-(slope * Y[positions] + NOISE[positions])))

        return Model()


def _run(storage: str, name: str, n_trials: int = N_TRIALS, cand: Candidate | None = None):
    return run_study(cand or Candidate(), lambda positions, labels: positions, Y, INNER, storage=storage,
                     study_name=name, n_trials=n_trials, timeout_s=None, seed=SEED, ctx_base=TrialContext())


def _trials(storage: str, name: str) -> list[tuple[str, str]]:
    """(params, info) of a study's trials in order (trials_frame's rows)."""
    cand = name.split(":")[1]
    return [(r["params"], r["info"]) for r in trials_frame(storage, RUN) if r["candidate"] == cand]


def _worker(storage: str, name: str, n_trials: int, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    return subprocess.Popen([sys.executable, str(HERE), storage, name, str(n_trials), *extra], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _wait_for(path: Path, proc: subprocess.Popen, timeout_s: float = 30) -> None:
    end = time.monotonic() + timeout_s
    while not path.exists():
        if proc.poll() is not None:
            raise AssertionError(f"the worker ended early:\n{proc.stdout.read()}")
        if time.monotonic() > end:
            proc.kill()
            raise AssertionError(f"no {path.name} after {timeout_s} s")
        time.sleep(0.05)


# --- the same search on every backend ------------------------------------------------------

def test_journal_and_postgresql_run_the_trials_sqlite_runs(tmp_path, fresh_pg_database):
    name = study_name(RUN, "cand", 0, 0)
    specs = {"sqlite": f"sqlite:///{tmp_path / 'optuna.db'}", "journal": str(tmp_path / "optuna.journal"),
             "postgresql": fresh_pg_database}
    results = {kind: _run(spec, name) for kind, spec in specs.items()}
    trials = {kind: _trials(spec, name) for kind, spec in specs.items()}
    assert len(trials["sqlite"]) == N_TRIALS
    for kind in ("journal", "postgresql"):
        assert results[kind].best_params == results["sqlite"].best_params, kind
        assert results[kind].best_value == results["sqlite"].best_value, kind
        assert trials[kind] == trials["sqlite"], kind
    assert isinstance(open_storage(specs["postgresql"]), optuna.storages.RDBStorage)
    assert open_storage(specs["postgresql"]) is open_storage(specs["postgresql"])   # one engine per process
    assert open_storage(specs["sqlite"]) == specs["sqlite"]
    me = f"{socket.gethostname()}:{os.getpid()}"
    for spec in specs.values():
        study = optuna.load_study(study_name=name, storage=open_storage(spec))
        assert {t.user_attrs["worker"] for t in study.trials} == {me}


# --- a worker killed during a trial (PostgreSQL heartbeats) -----------------------------------

def test_a_killed_workers_trial_goes_stale_and_the_resumed_study_matches_an_uninterrupted_one(
        tmp_path, fresh_pg_database):
    url = fresh_pg_database
    reference = _run(url, study_name(RUN, "reference", 0, 0))
    name = study_name(RUN, "killed", 0, 0)
    marker = tmp_path / "blocked"
    # Trials 0-2 finish (2 fits each); the first fit of trial 3 never ends.
    proc = _worker(url, name, N_TRIALS, "--block-at", "7", "--marker", str(marker))
    _wait_for(marker, proc)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)

    store = open_storage(url)
    study = optuna.load_study(study_name=name, storage=store)
    running = study.get_trials(states=(optuna.trial.TrialState.RUNNING,))
    assert [t.number for t in running] == [3]
    assert running[0].user_attrs["worker"] == f"{socket.gethostname()}:{proc.pid}"
    optuna.storages.fail_stale_trials(study)   # a fresh heartbeat (GRACE_S = 30 s) is not stale
    assert study.get_trials(states=(optuna.trial.TrialState.RUNNING,))[0].number == 3

    short = optuna.storages.RDBStorage(normalise_url(url), heartbeat_interval=1, grace_period=1)
    time.sleep(2.2)                            # the dead worker's last heartbeat is now older than 1 s
    optuna.storages.fail_stale_trials(optuna.load_study(study_name=name, storage=short))
    short.engine.dispose()
    stale = optuna.load_study(study_name=name, storage=store).trials[3]
    assert stale.state == optuna.trial.TrialState.FAIL and "fail_reason" not in stale.user_attrs
    assert _interrupted(stale)                 # not counted, not a failure of the candidate

    resumed = _run(url, name)
    assert resumed.n_trials == N_TRIALS and resumed.n_failed == 0
    rows = _trials(url, name)
    assert [info for _, info in rows].count(INTERRUPTED) == 1
    assert len(rows) == N_TRIALS + 1
    assert [p for p, info in rows if info != INTERRUPTED] == [p for p, _ in _trials(url, study_name(RUN, "reference", 0, 0))]
    assert resumed.best_params == reference.best_params and resumed.best_value == reference.best_value


# --- two processes on one journal file ---------------------------------------------------------

def test_two_processes_write_different_studies_to_one_journal_file_at_once(tmp_path):
    journal = str(tmp_path / "shared.journal")
    go = tmp_path / "go"
    names = [study_name(RUN, cand, 0, 0) for cand in ("first", "second")]
    procs = [_worker(journal, name, 5, "--fit-sleep", "0.15", "--marker", str(tmp_path / f"ready{k}"),
                     "--wait-for", str(go)) for k, name in enumerate(names)]
    for k, proc in enumerate(procs):
        _wait_for(tmp_path / f"ready{k}", proc)
    go.write_text("go")                        # both start their studies together
    for proc in procs:
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0, out
    rows = trials_frame(journal, RUN)
    assert {r["candidate"] for r in rows} == {"first", "second"}
    for cand in ("first", "second"):
        assert [r["state"] for r in rows if r["candidate"] == cand].count("COMPLETE") + \
            [r["state"] for r in rows if r["candidate"] == cand].count("PRUNED") == 5
    spans = []
    for name, proc in zip(names, procs):
        trials = optuna.load_study(study_name=name, storage=open_storage(journal)).trials
        assert {t.user_attrs["worker"] for t in trials} == {f"{socket.gethostname()}:{proc.pid}"}
        spans.append((min(t.datetime_start for t in trials), max(t.datetime_complete for t in trials)))
    assert spans[0][0] < spans[1][1] and spans[1][0] < spans[0][1]   # they did run at the same time


# --- optuna-dashboard reads both ------------------------------------------------------------------

def _dashboard_command() -> list[str]:
    pytest.importorskip("optuna_dashboard")
    script = Path(sys.executable).parent / "optuna-dashboard"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "import sys; from optuna_dashboard._cli import main; sys.exit(main())"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _dashboard_studies(spec: str, timeout_s: float = 30) -> set[str]:
    port = _free_port()
    proc = subprocess.Popen([*_dashboard_command(), dashboard_storage(spec), "--host", "127.0.0.1",
                             "--port", str(port), "--quiet"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        end = time.monotonic() + timeout_s
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=5) as resp:
                    return {s["study_name"] for s in json.load(resp)["study_summaries"]}
            except OSError:
                if proc.poll() is not None or time.monotonic() > end:
                    proc.kill()
                    raise AssertionError(f"optuna-dashboard did not answer:\n{proc.communicate()[0]}")
                time.sleep(0.1)
    finally:
        proc.kill()
        proc.wait(timeout=10)


@pytest.mark.parametrize("kind", ["journal", "postgresql"])
def test_optuna_dashboard_lists_the_studies(kind, tmp_path, request):
    _dashboard_command()
    spec = str(tmp_path / "optuna.journal") if kind == "journal" else request.getfixturevalue("fresh_pg_database")
    names = {study_name(RUN, cand, 0, f) for cand in ("xgb", "cnn") for f in (0, 1)}
    for name in sorted(names):
        _run(spec, name, n_trials=1)
    assert names <= _dashboard_studies(spec)


# --- specs and messages -------------------------------------------------------------------

def test_redact_hides_passwords_and_specs_say_what_they_are(tmp_path):
    assert redact("postgresql://me:s3cr:et@db.example:5432/aff") == "postgresql://me:***@db.example:5432/aff"
    assert redact("postgresql+psycopg://me@db/aff?password=hunter2&sslmode=require") == \
        "postgresql+psycopg://me@db/aff?password=***&sslmode=require"
    assert redact("sqlite:///run/optuna.db") == "sqlite:///run/optuna.db"
    assert redact("/shared/optuna.journal") == "/shared/optuna.journal"
    assert normalise_url("postgresql://me@db/aff") == "postgresql+psycopg://me@db/aff"
    assert normalise_url("postgres://me@db/aff") == "postgresql+psycopg://me@db/aff"
    assert normalise_url("postgresql+psycopg://me@db/aff") == "postgresql+psycopg://me@db/aff"
    assert not uses_concurrent_writers_safely("sqlite:///x.db")
    assert uses_concurrent_writers_safely("x.journal") and uses_concurrent_writers_safely("postgresql://h/db")
    with pytest.raises(UserError, match="does not exist"):
        open_storage(str(tmp_path / "missing" / "optuna.journal"))
    db = tmp_path / "optuna.db"
    optuna.create_study(storage=f"sqlite:///{db}")
    with pytest.raises(UserError, match="sqlite:///"):
        open_storage(str(db))


def test_an_unreachable_server_is_a_one_line_user_error_without_the_password():
    port = _free_port()                        # nothing listens there
    with pytest.raises(UserError) as err:
        open_storage(f"postgresql://me:hunter2@127.0.0.1:{port}/aff")
    msg = str(err.value)
    assert "\n" not in msg and "hunter2" not in msg and f"127.0.0.1:{port}" in msg


def test_without_psycopg_postgresql_asks_for_the_cluster_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "psycopg", None)   # what "not installed" looks like to an import
    with pytest.raises(UserError, match=r'pip install -e "\.\[cluster\]"') as err:
        open_storage("postgresql://me@127.0.0.1:9/not_opened")
    assert "\n" not in str(err.value)
    assert not any(key[1].endswith("/not_opened") for key in storage_mod._cache)


# --- the worker process -----------------------------------------------------------------------

def _main(argv: list[str]) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("storage")
    p.add_argument("study")
    p.add_argument("n_trials", type=int)
    p.add_argument("--block-at", type=int, default=None)
    p.add_argument("--fit-sleep", type=float, default=0.0)
    p.add_argument("--marker", type=Path, default=None, help="written when blocked (--block-at) or ready (--wait-for)")
    p.add_argument("--wait-for", type=Path, default=None, help="start the study once this file exists")
    args = p.parse_args(argv)
    if args.wait_for is not None:
        args.marker.write_text("ready")
        while not args.wait_for.exists():
            time.sleep(0.02)
    cand = Candidate(block_at=args.block_at, fit_sleep=args.fit_sleep,
                     marker=args.marker if args.block_at is not None else None)
    res = _run(args.storage, args.study, args.n_trials, cand)
    print(json.dumps({"best_params": res.best_params, "n_trials": res.n_trials}))
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
