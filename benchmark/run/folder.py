"""The run folder: where a run's files go, its manifest, and how an earlier run is found again.

    name = new_run_name(results_dir())
    rd = RunDir(results_dir() / name, run_id=new_run_id(name))
    rd.part("xgboost", 0, 1)               # parts/xgboost__r0_f1.parquet, written atomically
    rd.run_id                              # the run's identity in study names (manifest "run_id")
    rd.write_json("manifest.json", manifest(...))
    cfg, path = restore_config(cfg, results_dir())    # --resume: the earlier run's settings

Files a run writes are listed in README.md ("What a run writes") and docs/design.md.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import secrets
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from benchmark.data.cohort import Cohort
from benchmark.data.splits import Fold
from benchmark.errors import UserError
from benchmark.search.profiles import Profile


@dataclass
class RunConfig:
    """The settings of a run as given on the command line (stored in the manifest, restored by --resume)."""

    suite: str | None = "all"
    candidates: list[str] | None = None
    data: str | None = None
    profile: str | None = None
    device: str = "auto"
    storage: str | None = None
    run: str | None = None
    resume: bool = False
    seed: int = 0
    spaces: list[str] = field(default_factory=list)
    calibration: str = "platt"
    metric: str = "auc"
    results_dir: str | None = None
    command: str = ""
    deterministic: bool = False     # bit-identical reruns on a GPU, at some cost in speed
    threads: int | None = None      # CPU threads per fit (None: the cores / workers); part of the answer
    # register importance per unit: auto | all | tables | none (benchmark.run.explain_unit); None: the profile's
    importance: str | None = None
    explain: bool = False           # saliency maps of image candidates, patient data (run --explain)
    # How the run is executed (benchmark.run.scale), not what it computes: taken from the command line on --resume.
    workers: int | None = None      # units at once on a local Ray instance (None: this process, one at a time)
    cluster: str | None = None      # address of a Ray cluster to run the units on
    gpu_share: float = 1.0          # the share of a GPU one network unit takes


def threads_per_fit(cfg: RunConfig) -> int:
    """CPU threads each fit uses: ``--threads``, else the cores shared among ``--workers`` (a
    cluster: 2 per unit; sequential: every core). Stored with the run: it is part of the answer."""
    if cfg.threads:
        return cfg.threads
    if cfg.cluster:
        return 2
    return max(1, (os.cpu_count() or 1) // (cfg.workers or 1))


class RunDir:
    """A run's folder: ``parts/`` holds one finished candidate x repeat x outer fold each.

    ``run_id`` is the run's identity in the Optuna storage (``trials.study_name``): the folder
    name and a random suffix, kept in the manifest and reused by ``--resume``, so two runs
    sharing one ``--storage`` never read each other's trials, even with the same folder name.
    """

    def __init__(self, path: Path, run_id: str | None = None) -> None:
        self.path = path
        self.parts = path / "parts"
        self.run_id = run_id or path.name

    def part(self, cand: str, r: int, f: int, ext: str = "parquet") -> Path:
        return self.parts / f"{cand}__r{r}_f{f}.{ext}"

    def finished_row(self, cand: str, r: int, f: int) -> dict | None:
        """The studies.csv row of a unit an earlier run finished (its part and row written), else None."""
        info = self.part(cand, r, f, "json")
        return json.loads(info.read_text()) if self.part(cand, r, f).exists() and info.exists() else None

    def write_atomic(self, path: Path, write) -> None:
        tmp = path.with_name(path.name + ".tmp")
        write(tmp)
        os.replace(tmp, path)

    def write_json(self, name: str, obj: dict) -> None:
        self.write_atomic(self.path / name, lambda p: p.write_text(json.dumps(obj, indent=2, default=str)))


def versions() -> dict:
    import importlib.metadata as md

    from benchmark import __version__

    # the harness's own version from the code that runs (installed metadata can be stale in a checkout)
    out = {"python": platform.python_version(), "aff-benchmark": __version__}
    for pkg in ("numpy", "pandas", "scikit-learn", "optuna", "torch", "timm", "xgboost",
                "lightgbm", "pydicom", "plotly"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out


def hardware(device: str) -> dict:
    hw = {"platform": platform.platform(), "cpu_count": os.cpu_count(), "device": device}
    if device == "cuda":
        import torch

        hw["gpu"] = torch.cuda.get_device_name(0)
    return hw



def new_run_name(base: Path) -> str:
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    name, i = stamp, 1
    while (base / name).exists():
        i += 1
        name = f"{stamp}-{i}"
    return name


def new_run_id(name: str) -> str:
    """A run's identity in study names: its folder name and 8 random hex digits."""
    return f"{name}-{secrets.token_hex(4)}"


def restore_config(cfg: RunConfig, base: Path) -> tuple[RunConfig, Path]:
    """For --resume: the earlier run's settings (from its manifest), command-line extras kept."""
    if cfg.run:
        path = base / cfg.run if not Path(cfg.run).is_dir() else Path(cfg.run)
    else:
        runs = sorted((p for p in base.glob("*/manifest.json")), key=lambda p: p.stat().st_mtime)
        if not runs:
            raise UserError(f"--resume: no earlier run in {base}; start one without --resume")
        path = runs[-1].parent
    man = path / "manifest.json"
    if not man.exists():
        raise UserError(f"--resume: {path} has no manifest.json; give the run folder name with --run")
    old = json.loads(man.read_text())["config"]
    storage = cfg.storage or old.get("storage")
    from benchmark.search.storage import REDACTED

    if storage and REDACTED in storage and not cfg.storage:
        raise UserError(f"--resume: run {path.name} used an Optuna storage with a password, which is not stored; "
                        f"pass the same --storage again (or keep the password in PGPASSWORD / ~/.pgpass)")
    merged = RunConfig(**{**old, "resume": True, "command": cfg.command, "storage": storage,
                          "device": cfg.device if cfg.device != "auto" else old.get("device", "auto"),
                          "threads": cfg.threads or old.get("threads"),
                          "workers": cfg.workers, "cluster": cfg.cluster, "gpu_share": cfg.gpu_share})
    return merged, path



def write_folds(run_path: Path, cohort: Cohort, folds: list[Fold], inner_of_fold) -> None:
    """folds.csv: patient key, repeat, outer fold, train/test, inner fold (``inner_of_fold(fold)``)."""
    rows = []
    for f in folds:
        inner = inner_of_fold(f)
        inner_of = {int(p): k for k, i in enumerate(inner) for p in i.test}
        for p in f.train:
            rows.append((f.repeat, f.index, cohort.keys[p], "train", inner_of[int(p)]))
        for p in f.test:
            rows.append((f.repeat, f.index, cohort.keys[p], "test", -1))
    pd.DataFrame(rows, columns=["repeat", "outer_fold", "patient", "part", "inner_fold"]).to_csv(
        run_path / "folds.csv", index=False)


def manifest(run_path: Path, cfg: RunConfig, profile: Profile, cohort: Cohort, n_in_file: int, device: str,
             candidates: list[str], run_id: str | None = None, storage_file: str = "optuna.db") -> dict:
    """The run's manifest.json: command, settings, profile, versions, hardware, dataset fingerprint.

    ``budget`` is the profile per modality: trials per study and each network kind's epoch cap.
    ``status`` is running, complete or failed (with ``reason``, one line: ``mark_failed``).
    ``storage`` is the run folder's own Optuna storage file (``storage_file``), or "external" for
    ``--storage``, whose password (if the URL holds one) is never written.
    """
    from benchmark.search.storage import redact, scrub

    config = {**cfg.__dict__, "storage": None if cfg.storage is None else redact(cfg.storage),
              "command": scrub(cfg.command, cfg.storage)}
    return {
        "run": run_path.name, "run_id": run_id or run_path.name, "command": config["command"],
        "config": config,
        "profile_name": profile.name, "profile": profile.as_dict(), "budget": profile.budget(),
        "seed": cfg.seed, "versions": versions(), "hardware": hardware(device),
        "dataset": {"name": cohort.name, "fingerprint": cohort.fingerprint, "n_patients": cohort.n_patients,
                    "n_pos": int(cohort.y.sum()), "synthetic": cohort.oracle is not None,
                    "n_patients_in_file": n_in_file},
        "candidates": candidates,
        "storage": storage_file if cfg.storage is None else "external",
        "started": dt.datetime.now().isoformat(timespec="seconds"), "status": "running",
    }


def mark_failed(man: dict, exc: BaseException) -> dict:
    """``man`` with status failed, when the run stopped, and the reason in one line."""
    from benchmark.search.storage import scrub

    lines = [scrub(line.strip()) for line in str(exc).splitlines() if line.strip()]
    text = lines[0] if lines else ""
    reason = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    if isinstance(exc, KeyboardInterrupt):
        reason = "interrupted (KeyboardInterrupt)" + (f": {text}" if text else "")
    man.update(status="failed", reason=reason[:500], stopped=dt.datetime.now().isoformat(timespec="seconds"))
    return man
