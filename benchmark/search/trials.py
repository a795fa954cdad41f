"""A run's studies in the storage: their names, the trials table, interrupted trials, heartbeats.

Study names carry the run's identity (``study_name``), so runs sharing one storage never
read each other's trials; ``trials_frame(storage, run_id)`` lists one run's trials (trials.csv)::

    study_name("20250101-120000-1a2b3c4d", "xgboost", 0, 1)   # '20250101-120000-1a2b3c4d:xgboost:r0:f1'
    parse_study_name(name)                                     # (run id, candidate, repeat, outer fold)

On PostgreSQL a daemon thread records the running trial's heartbeat every ``HEARTBEAT_S``
seconds (``_Heartbeat``); every trial records the process that ran it (user attribute
``worker``, ``worker_id``: ``host:pid``). A trial that failed without a reason was running
when its process stopped (``INTERRUPTED``).
"""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import threading
from urllib.parse import quote, unquote

import optuna

from benchmark.search.storage import open_storage

optuna.logging.set_verbosity(optuna.logging.WARNING)

INTERRUPTED = "interrupted (process stopped during the trial)"


def study_name(run_id: str, candidate: str, repeat: int, fold: int) -> str:
    """The study of one work unit of one run: ``<run id>:<candidate>:r<repeat>:f<fold>``.

    The run id and the candidate name are percent-encoded (``:`` becomes ``%3A``), so a name
    always splits into exactly four parts; ``parse_study_name`` reverses it.
    """
    if not run_id:
        raise ValueError("study_name needs the run's id (manifest 'run_id')")
    return f"{quote(str(run_id), safe='')}:{quote(str(candidate), safe='')}:r{int(repeat)}:f{int(fold)}"


_UNIT = re.compile(r"r(\d+)")
_FOLD = re.compile(r"f(\d+)")


def parse_study_name(name: str) -> tuple[str | None, str, int, int] | None:
    """(run id, candidate, repeat, outer fold) of a study name; None for a study of no run.

    Names made by ``study_name`` have four parts; names of the old format
    (``<candidate>:r<repeat>:f<fold>``, no run) give run id None.
    """
    parts = name.split(":")
    if len(parts) == 4:
        run, cand, r, f = parts
        mr, mf = _UNIT.fullmatch(r), _FOLD.fullmatch(f)
        if mr and mf and run and cand:
            return unquote(run), unquote(cand), int(mr.group(1)), int(mf.group(1))
    parts = name.rsplit(":", 2)
    if len(parts) == 3:
        cand, r, f = parts
        mr, mf = _UNIT.fullmatch(r), _FOLD.fullmatch(f)
        if mr and mf and cand:
            return None, cand, int(mr.group(1)), int(mf.group(1))
    return None


def trials_frame(storage: str, run_id: str | None = None) -> "list[dict]":
    """The trials of one run's studies in a storage (``run_id`` None: of every study), as rows of trials.csv.

    Studies whose names ``parse_study_name`` does not read (another tool's) are left out.
    """
    rows = []
    store = open_storage(storage)
    for name in optuna.study.get_all_study_names(store):   # creation order: the plan's
        parsed = parse_study_name(name)
        if parsed is None or (run_id is not None and parsed[0] != run_id):
            continue
        _, cand, r, f = parsed
        study = optuna.load_study(study_name=name, storage=store)
        for t in study.get_trials(deepcopy=False):
            rows.append({
                "candidate": cand, "repeat": r, "outer_fold": f, "trial": t.number,
                "state": t.state.name, "value": t.value,
                "duration_s": t.duration.total_seconds() if t.duration else None,
                "params": json.dumps(t.params, sort_keys=True, default=str),
                "info": INTERRUPTED if _interrupted(t) else t.user_attrs.get("fail_reason", t.user_attrs.get("notes", "")),
            })
    return rows


def _interrupted(t) -> bool:
    """A failed trial without a reason: the process stopped during it (closed on resume)."""
    reason = t.user_attrs.get("fail_reason")
    return t.state == optuna.trial.TrialState.FAIL and (reason is None or reason == INTERRUPTED)


def _short(exc: BaseException) -> str:
    msg = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {msg}"[:300]


def worker_id() -> str:
    """``host:pid`` of this process: each trial's user attribute ``worker``."""
    return f"{socket.gethostname()}:{os.getpid()}"


def _heartbeat_interval(store) -> int | None:
    """Seconds between heartbeats of a running trial; None when the storage keeps none (SQLite, journal)."""
    if isinstance(store, optuna.storages.RDBStorage):
        return store.get_heartbeat_interval()
    return None


class _Heartbeat:
    """Records ``trial_id``'s heartbeat now and then every interval from a daemon thread, until ``stop``.

    A process that dies stops beating; ``fail_stale_trials`` then fails its trial after the
    storage's grace period. A failed beat (the server away for a moment) is logged and retried.
    """

    def __init__(self, store, trial_id: int) -> None:
        self._stop = threading.Event()
        self._thread = None
        interval = _heartbeat_interval(store)
        if not interval:
            return
        self._store, self._trial_id = store, trial_id
        self._beat()   # at once, so the trial has a heartbeat from its start
        self._thread = threading.Thread(target=self._run, args=(interval,), daemon=True,
                                        name=f"optuna-heartbeat-{trial_id}")
        self._thread.start()

    def _beat(self) -> None:
        try:
            self._store.record_heartbeat(self._trial_id)
        except Exception as exc:  # the trial goes on; the next beat retries
            logging.getLogger(__name__).warning(f"heartbeat of trial {self._trial_id} failed: {_short(exc)}")

    def _run(self, interval: float) -> None:
        while not self._stop.wait(interval):
            self._beat()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
            self._thread = None
