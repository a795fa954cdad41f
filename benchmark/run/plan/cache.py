"""The calibration cache, what its keys record, and how busy the machine was while a cost was measured.

Measured costs are cached in ``cache_dir()/cost_calibration.json`` keyed by what they depend
on (architecture, size, batch, threads, device, torch version, ``LOOP_VERSION``, how OpenMP
threads wait), so ``run`` reuses them. ``fit_threads`` sets the CPU threads a fit is priced
(and calibrated) at, as ``run --threads`` / ``--workers`` runs them::

    with fit_threads(1):
        image_key("resnet18", 32, 64)     # 'cnn|resnet18|32px|b64|1t|cpu|torch...|loop3|omp:...'
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable

from benchmark.paths import cache_dir

CACHE_FILE = "cost_calibration.json"
LOOP_VERSION = 3              # part of every cache key: bump when the training loop's speed changes
                              # (2: channels_last on the CPU too; 3: cropped convolutions on small maps)


def _cache_path() -> Path:
    return cache_dir() / CACHE_FILE


def _load_cache() -> dict:
    try:
        return json.loads(_cache_path().read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def _store(key: str, value: dict) -> None:
    """Add one measurement to the cache (read again first: another process may have added some)."""
    path = _cache_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    data = _load_cache()
    data[key] = value
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
    tmp.replace(path)


BUSY_SHARE = 0.2   # other processes using this share of the machine's CPU during a calibration: said so


def _cpu_counters() -> tuple[float, float] | None:
    """(CPU seconds all processes have used, CPU seconds the machine has had) from /proc/stat; None elsewhere."""
    try:
        with open("/proc/stat") as fh:
            v = [int(x) for x in fh.readline().split()[1:9]]
    except (OSError, ValueError):
        return None
    hz = os.sysconf("SC_CLK_TCK")
    return (sum(v) - v[3] - v[4]) / hz, sum(v) / hz


class others_share:
    """The share of the machine's CPU that other processes used during the block (``share``; None
    where /proc/stat is missing): what this process used itself is taken off the machine's busy time.

    On the 2-core machine: 0.007 while nothing else ran, 0.33 beside one busy-looping process.
    """

    share: float | None = None

    def __enter__(self):
        self._start, self._mine = _cpu_counters(), sum(os.times()[:2])
        return self

    def __exit__(self, *exc) -> None:
        end = _cpu_counters()
        if self._start is None or end is None or end[1] <= self._start[1]:
            return
        mine = sum(os.times()[:2]) - self._mine
        self.share = max(0.0, (end[0] - self._start[0] - mine) / (end[1] - self._start[1]))


def _measure(key: str, cache: dict, fn: Callable[[], dict]) -> dict:
    """``fn()``'s measurement, with the other processes' CPU share beside it, stored in the cache."""
    with others_share() as busy:
        value = fn()
    if busy.share is not None:
        value["others"] = round(busy.share, 3)
    _store(key, value)
    cache[key] = value
    return value


_THREADS: int | None = None   # the CPU threads a fit is priced at (None: every core; ``fit_threads``)


def _threads() -> int:
    return _THREADS or os.cpu_count() or 1


class fit_threads:
    """Price (and calibrate) CPU fits at ``n`` threads inside the block, as ``run --threads n``
    (``--workers``) runs them; calibrations are cached per thread count."""

    def __init__(self, n: int | None) -> None:
        self.n, self.old = n, None

    def __enter__(self):
        global _THREADS
        self.old, _THREADS = _THREADS, self.n
        return self

    def __exit__(self, *exc) -> None:
        global _THREADS
        _THREADS = self.old


def _torch_key(device: str) -> str:
    import torch

    return f"{_threads()}t|{device}|torch{torch.__version__}|loop{LOOP_VERSION}|{_omp_wait()}"


def _omp_wait() -> str:
    """How OpenMP threads wait (``benchmark/__init__.py``): a CPU cost measured with one setting
    does not hold for another (2 threads passive vs a short spin: up to 1.8x)."""
    return "omp:" + ",".join(os.environ.get(k, "-") for k in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME"))


def image_key(arch: str, size: int, batch: int, device: str = "cpu", kind: str = "cnn") -> str:
    return f"{kind}|{arch}|{size}px|b{batch}|{_torch_key(device)}"
