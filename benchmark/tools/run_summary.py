"""A run's summary for the documentation: what ran, on what, when, and its leaderboard.

    summary = read_summary("results/my-run")            # a run folder (manifest.json) ...
    summary = read_summary("docs/runs/smoke")           # ... or a stored summary (summary.json)
    print("\\n".join(auc_table(summary.leaderboard)))

``store(run_dir, dest)`` keeps a small copy of a finished run for the documentation:
``summary.json`` (an excerpt of the manifest without paths, storage URLs or other settings
that could hold a secret, plus the machine's CPU model) and ``leaderboard.csv`` (the
headline columns only). ``readme_table`` and ``perf_page`` read either form.
"""

from __future__ import annotations

import json
import os
import platform
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pandas as pd

from benchmark.errors import UserError

# leaderboard.csv columns kept in a stored summary (each metric with its 95 % CI)
KEPT_COLUMNS = ["candidate", "modality", "status", "inner_score", "wall_s", "n_trials", "n_failed_trials"]
KEPT_METRICS = ["auc", "ap", "brier", "ece", "cal_slope", "sens_at_spec90_oof"]
# options whose values may name a path, a host or a password: stored as <option>
PRIVATE_OPTIONS = ("--data", "--storage", "--results", "--spaces", "--cluster")


@dataclass
class RunSummary:
    """What the documentation says about a run: ``info`` (the manifest excerpt) and its leaderboard."""

    info: dict
    leaderboard: pd.DataFrame

    @property
    def date(self) -> str:
        return str(self.info.get("started") or "")[:10]

    def machine(self) -> str:
        hw = self.info.get("hardware") or {}
        if self.info.get("machine"):
            return str(self.info["machine"])
        cores = hw.get("cpu_count")
        return f"{cores} CPU cores" if cores else "machine not recorded"

    def line(self) -> str:
        """One sentence: command, profile, machine, date, wall time and cohort."""
        i = self.info
        ds = i.get("dataset") or {}
        cohort = f"{ds['n_patients']} patients, {ds['n_pos']} AFF" if ds.get("n_patients") else "cohort not recorded"
        if ds.get("synthetic"):
            cohort = "synthetic cohort, " + cohort
        device = (i.get("hardware") or {}).get("device")
        return (f"`{i.get('command', 'python -m benchmark run')}`: profile `{i.get('profile_name', '?')}`, "
                + (f"device {device}, " if device else "")
                + f"{self.machine()}, {self.date}, wall time {wall_time(i.get('wall_s'))} ({cohort}).")


def wall_time(seconds) -> str:
    """``1 h 11 min 13 s``, ``17 min 34 s``, ``46 s``."""
    if seconds is None or pd.isna(seconds):
        return "not recorded"
    s = int(round(float(seconds)))
    h, rest = divmod(s, 3600)
    m, sec = divmod(rest, 60)
    if h:
        return f"{h} h {m:02d} min {sec:02d} s"
    return f"{m} min {sec:02d} s" if m else f"{sec} s"


def scrub_command(command: str) -> str:
    """The command with the values of options that may hold paths or secrets replaced by a name."""
    try:
        words = shlex.split(command)
    except ValueError:
        return "python -m benchmark run"
    out, skip = [], False
    for w in words:
        if skip:
            skip = False
            continue
        opt, eq, _ = w.partition("=")
        if opt in PRIVATE_OPTIONS:
            out.append(f"{opt} {opt.strip('-').upper()}" if not eq else f"{opt}={opt.strip('-').upper()}")
            skip = not eq
            continue
        out.append(w)
    return " ".join(out)


def cpu_model() -> str:
    """This machine's CPU model, vector extensions and core count, from /proc/cpuinfo where there is one."""
    model, flags = platform.processor() or "CPU", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                model = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
            if model != "CPU" and flags:
                break
    except OSError:
        pass
    ext = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else ""
    return f"{os.cpu_count()}-core {model}" + (f" ({ext})" if ext else "")


def budget_text(profile: dict) -> str:
    """``3 x 2 folds, 1 repeat, trials per study register 6 / image 1 / fusion 1, 32 px images``."""
    if not profile:
        return ""
    trials = profile.get("n_trials")
    trials = (" / ".join(f"{m} {n}" for m, n in trials.items()) if isinstance(trials, dict) else str(trials))
    repeats = profile.get("repeats", 1)
    text = (f"{profile.get('outer_folds')} x {profile.get('inner_folds')} folds, {repeats} repeat"
            f"{'s' if repeats != 1 else ''}, trials per study {trials}, {profile.get('image_size')} px images")
    if profile.get("max_patients"):
        text += f", at most {profile['max_patients']} patients"
    return text


def excerpt(manifest: dict) -> dict:
    """The manifest's fields the documentation shows; nothing that holds a path, a URL or a secret."""
    ds = manifest.get("dataset") or {}
    hw = manifest.get("hardware") or {}
    return {
        "run": manifest.get("run"),
        "command": scrub_command(str(manifest.get("command") or "python -m benchmark run")),
        "profile_name": manifest.get("profile_name"),
        "budget": budget_text(manifest.get("profile") or {}),
        "status": manifest.get("status"),
        "started": manifest.get("started"),
        "finished": manifest.get("finished"),
        "wall_s": manifest.get("wall_s"),
        "hardware": {"cpu_count": hw.get("cpu_count"), "device": hw.get("device")},
        "dataset": {k: ds.get(k) for k in ("name", "n_patients", "n_pos", "synthetic")},
        "versions": manifest.get("versions") or {},
        "threads": (manifest.get("config") or {}).get("threads"),
        "workers": (manifest.get("config") or {}).get("workers"),
    }


def read_summary(folder: str | Path) -> RunSummary:
    """A run folder (``manifest.json``) or a stored summary (``summary.json``), with its leaderboard."""
    folder = Path(folder)
    board = folder / "leaderboard.csv"
    if (folder / "summary.json").is_file():
        info = json.loads((folder / "summary.json").read_text())
    elif (folder / "manifest.json").is_file():
        info = excerpt(json.loads((folder / "manifest.json").read_text()))
    else:
        raise UserError(f"{folder} holds neither manifest.json nor summary.json: give a run folder or a stored summary")
    if not board.is_file():
        raise UserError(f"{board} not found: the run has no leaderboard (did it finish?)")
    return RunSummary(info, pd.read_csv(board))


def store(run_dir: str | Path, dest: str | Path, machine: str | None = None, note: str | None = None) -> Path:
    """Keep ``summary.json`` and the headline columns of ``leaderboard.csv`` of a finished run in ``dest``."""
    run_dir, dest = Path(run_dir), Path(dest)
    manifest_path = run_dir / "manifest.json"
    if not manifest_path.is_file():
        raise UserError(f"{manifest_path} not found: give a run folder (results/<run>)")
    manifest = json.loads(manifest_path.read_text())
    if manifest.get("status") != "complete":
        raise UserError(f"{run_dir} is not complete (status {manifest.get('status')!r}); store a finished run")
    info = excerpt(manifest)
    info["machine"] = machine or cpu_model()
    if note:
        info["note"] = note
    board = read_summary(run_dir).leaderboard
    cols = KEPT_COLUMNS + [f"{m}{s}" for m in KEPT_METRICS for s in ("", "_lo", "_hi")]
    dest.mkdir(parents=True, exist_ok=True)
    board[[c for c in cols if c in board.columns]].to_csv(dest / "leaderboard.csv", index=False)
    (dest / "summary.json").write_text(json.dumps(info, indent=1) + "\n")
    return dest


def fmt_ci(row: pd.Series, metric: str = "auc") -> str:
    """``0.930 [0.912, 0.946]``, or the row's status where it has no value."""
    value = row.get(metric)
    if value is None or pd.isna(value):
        return str(row.get("status") or "-")
    lo, hi = row.get(f"{metric}_lo"), row.get(f"{metric}_hi")
    if lo is None or pd.isna(lo) or hi is None or pd.isna(hi):
        return f"{value:.3f}"
    return f"{value:.3f} [{lo:.3f}, {hi:.3f}]"


def _name(row: pd.Series) -> str:
    return f"`{row['candidate']}`" + (" (ceiling)" if row.get("modality") == "oracle" else "")


def auc_table(board: pd.DataFrame, columns: int = 2) -> list[str]:
    """Markdown lines: candidate, modality and pooled outer-test AUC with its CI, best first, in
    ``columns`` side-by-side column groups (read down the first group, then the next)."""
    rows = board.sort_values("auc", ascending=False, na_position="last", kind="stable")
    cells = [(_name(r), str(r.get("modality", "")), fmt_ci(r)) for _, r in rows.iterrows()]
    per = -(-len(cells) // columns)
    groups = [cells[i * per:(i + 1) * per] for i in range(columns)]
    head = " | ".join(["candidate | modality | AUC"] * columns)
    lines = [f"| {head.replace(' | candidate', ' | | candidate')} |",
             "|" + "|".join(["---"] * (3 * columns + columns - 1)) + "|"]
    for i in range(per):
        parts = [" | ".join(g[i]) if i < len(g) else " |  | " for g in groups]
        lines.append("| " + " | | ".join(parts) + " |")
    return lines


def run_tool(work: Callable[[], None]) -> int:
    """A tool's exit status: 0 when ``work`` ran, 2 with the one-line error when it raised ``UserError``."""
    try:
        work()
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0
