"""Where the harness keeps things on disk: the cache and the results folder (defined once).

    >>> cache_dir()          # $AFF_BENCHMARK_CACHE, else ~/.cache/aff-benchmark
    >>> results_dir()        # $AFF_BENCHMARK_RESULTS, else ./results
"""

from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "AFF_BENCHMARK_CACHE"
RESULTS_ENV = "AFF_BENCHMARK_RESULTS"


def cache_dir() -> Path:
    """Decoded images and the generated default cohort: ``$AFF_BENCHMARK_CACHE`` or ``~/.cache/aff-benchmark``."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "aff-benchmark"


def results_dir() -> Path:
    """Where run folders go: ``$AFF_BENCHMARK_RESULTS``, else ``./results``."""
    return Path(os.environ.get(RESULTS_ENV, "results"))
