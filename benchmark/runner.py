"""The runner: the only place that knows the loop (DESIGN.md sections 3 and 6).

    dataset -> Cohort -> outer folds -> for each candidate x outer fold:
        Optuna study on the inner folds -> best params
        refit as a bag over the inner folds -> inner out-of-fold + outer-test predictions
        calibration fitted on the inner out-of-fold predictions
    -> predictions.parquet -> leaderboard.csv, comparisons.csv -> leaderboard.html

Each finished candidate x outer fold is written to ``parts/`` at once, so ``--resume``
reuses it; unfinished studies continue from the Optuna storage.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from benchmark.candidates.base import TrialContext, get_family
from benchmark.candidates.calibration import METHODS as CAL_METHODS, Calibrator
from benchmark.data.cohort import Cohort
from benchmark.data.splits import Fold, inner_folds, outer_folds, stratified_subsample
from benchmark.errors import UserError
from benchmark.search.spaces import (Candidate, Profile, get_profile, load_candidates, load_suites,
                                     suite_members)
from benchmark.search.study import fit_seed, run_study, stable_seed, trials_frame

def results_dir() -> Path:
    """Where run folders go: $AFF_BENCHMARK_RESULTS, else ./results."""
    return Path(os.environ.get("AFF_BENCHMARK_RESULTS", "results"))
ROLES = {"best_image": "image", "best_register": "register"}
FUSION_INPUTS_SUITE = "fusion_inputs"


@dataclass
class RunConfig:
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


# ---- set-up ---------------------------------------------------------------------------------

def pick_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA GPU is visible to PyTorch; use --device cpu or auto")
    if device not in ("cpu", "cuda"):
        raise UserError(f"--device {device}: use auto, cpu or cuda")
    return device


def default_profile(device: str) -> str:
    return "standard" if device == "cuda" else "quick"


def default_dataset() -> Path:
    """The embedded synthetic cohort, generated once (under a lock) and cached."""
    import fcntl
    import tempfile

    from benchmark.data import synth

    root = Path(os.environ.get("AFF_BENCHMARK_CACHE", Path.home() / ".cache" / "aff-benchmark"))
    out = root / f"synthetic-default-v{getattr(synth, 'VERSION', 1)}"
    yaml_path = out / "dataset.yaml"
    if yaml_path.exists():
        return yaml_path
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".synthetic.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)   # another run may be generating it right now
        if not yaml_path.exists():
            print(f"generating the default synthetic cohort once into {out} (a few minutes) ...", flush=True)
            tmp = Path(tempfile.mkdtemp(dir=root, prefix=out.name + ".partial-"))
            try:
                synth.write_cohort(tmp, synth.SynthConfig())
                shutil.rmtree(out, ignore_errors=True)   # an incomplete earlier attempt
                tmp.rename(out)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
    return yaml_path


def resolve_candidates(cfg: RunConfig) -> tuple[list[Candidate], dict[str, Candidate]]:
    """The candidates to run, consumed ones first (fusion inputs are added when missing)."""
    allc = load_candidates(cfg.spaces)
    if cfg.candidates:
        names = []
        for n in cfg.candidates:
            if n not in allc:
                raise UserError(f"--candidates: {n!r} is not a known candidate; see `python -m benchmark list`")
            names.append(n)
    else:
        names = suite_members(cfg.suite or "all", allc, load_suites(cfg.spaces))
    chosen = [allc[n] for n in names]
    # Consumers need their inputs: named ones, or at least one candidate of a role's modality.
    suites = load_suites(cfg.spaces)
    extra: list[str] = []
    for c in chosen:
        for up in c.consumes:
            if up in ROLES:
                if not any(x.modality == ROLES[up] for x in chosen) and not any(allc[e].modality == ROLES[up] for e in extra):
                    pool = suite_members(FUSION_INPUTS_SUITE, allc, suites) if FUSION_INPUTS_SUITE in suites else []
                    pick = [n for n in pool if allc[n].modality == ROLES[up]]
                    if not pick:
                        raise UserError(f"{c.path}: consumes {up} but the run has no {ROLES[up]} candidate; "
                                        f"add one to the suite or to suite {FUSION_INPUTS_SUITE!r}")
                    extra.append(pick[0])
            elif up not in names and up not in extra:
                extra.append(up)
    ordered = [allc[n] for n in dict.fromkeys(extra)] + chosen
    # Topological order: non-consumers first, then consumers (one level of stacking).
    ordered = [c for c in ordered if not c.consumes] + [c for c in ordered if c.consumes]
    return ordered, allc


# ---- the run folder -------------------------------------------------------------------------

class RunDir:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.parts = path / "parts"

    def part(self, cand: str, r: int, f: int, ext: str = "parquet") -> Path:
        return self.parts / f"{cand}__r{r}_f{f}.{ext}"

    def write_atomic(self, path: Path, write) -> None:
        tmp = path.with_name(path.name + ".tmp")
        write(tmp)
        os.replace(tmp, path)

    def write_json(self, name: str, obj: dict) -> None:
        self.write_atomic(self.path / name, lambda p: p.write_text(json.dumps(obj, indent=2, default=str)))


def _versions() -> dict:
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for pkg in ("aff-benchmark", "numpy", "pandas", "scikit-learn", "optuna", "torch", "timm", "xgboost",
                "lightgbm", "pydicom", "plotly"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out


def _hardware(device: str) -> dict:
    hw = {"platform": platform.platform(), "cpu_count": os.cpu_count(), "device": device}
    if device == "cuda":
        import torch

        hw["gpu"] = torch.cuda.get_device_name(0)
    return hw


# ---- progress -------------------------------------------------------------------------------

class Progress:
    """One line per trial: candidate, fold, trial, elapsed and an estimate of the time left."""

    def __init__(self, total_units: int) -> None:
        self.total, self.done, self.start = max(total_units, 1), 0, time.monotonic()

    def unit_done(self, n: int = 1) -> None:
        self.done += n

    def eta(self) -> str:
        el = time.monotonic() - self.start
        if self.done == 0:
            return f"{_fmt(el)} elapsed"
        left = el / self.done * (self.total - self.done)
        return f"{_fmt(el)} elapsed, ~{_fmt(left)} left"

    def say(self, msg: str) -> None:
        print(f"{msg}  [{self.eta()}]", flush=True)


def _fmt(s: float) -> str:
    s = int(s)
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


# ---- one candidate x outer fold -------------------------------------------------------------

class FoldRunner:
    def __init__(self, cohort: Cohort, cfg: RunConfig, profile: Profile, device: str, rd: RunDir,
                 storage: str, progress: Progress) -> None:
        self.cohort, self.cfg, self.profile, self.device, self.rd = cohort, cfg, profile, device, rd
        self.storage, self.progress = storage, progress
        self.studies: list[dict] = []
        self.need_embeddings = False   # set by run(): a candidate reads image embeddings
        self.cands: dict[str, Candidate] = {}
        # (modality, repeat, fold) -> (inner-CV score, name) of the best image / register candidate so far
        self.best: dict = {}
        self.image_bags: dict = {}      # (repeat, fold) -> (name, bag) of that best image candidate
        self.ctx_base = TrialContext(device=device, seed=cfg.seed, max_epochs=profile.max_epochs,
                                     image_size=profile.image_size,
                                     extra={"n_jobs": os.cpu_count() or 1, "n_threads": os.cpu_count() or 1,
                                            "mc_passes": profile.mc_passes,
                                            "max_image_samples": profile.max_image_samples})

    def inner(self, fold: Fold) -> list[Fold]:
        """The inner folds of an outer fold: the same for the search, the bag, embeddings and folds.csv."""
        return inner_fold_list(self.cohort.y, fold, self.profile, self.cfg.seed)

    def study_seed(self, name: str, fold: Fold) -> int:
        return stable_seed(self.cfg.seed, name, fold.repeat, fold.index)

    def _view_maker(self, cand: Candidate, upstream: pd.DataFrame | None):
        fam = get_family(cand.family)
        size = self.profile.image_size if getattr(fam, "uses_images", False) else None

        def make(positions: np.ndarray, labels: bool):
            up = None
            if upstream is not None:
                up = upstream.loc[np.asarray(positions)]
            return self.cohort.view(positions, labels=labels, image_size=size, upstream=up)

        return make

    def best_name(self, role: str, fold: Fold) -> str | None:
        """The candidate playing ``role`` (best_image / best_register) in this fold, by inner-CV score."""
        hit = self.best.get((ROLES[role], fold.repeat, fold.index))
        return None if hit is None else hit[1]

    def _record_best(self, cand: Candidate, row: dict, models: list | None) -> None:
        """Update the best image / register candidate of the row's fold (ties: the earlier one).

        For the best image candidate the bag is held when a fusion candidate will read its
        embeddings; without a bag (reused after --resume) ``ensure_embeddings`` trains it again.
        """
        if cand.modality not in ("image", "register") or row["status"] == "failed":
            return
        key = (cand.modality, row["repeat"], row["outer_fold"])
        if key in self.best and not row["best_value"] > self.best[key][0]:
            return
        self.best[key] = (row["best_value"], cand.name)
        if cand.modality == "image" and self.need_embeddings:
            if models and hasattr(models[0], "embed"):
                self.image_bags[key[1:]] = (cand.name, models)
            else:
                self.image_bags.pop(key[1:], None)

    def upstream_for(self, cand: Candidate, fold: Fold) -> pd.DataFrame | None:
        """Predictions (and embeddings) of consumed candidates, indexed by cohort position.

        Outer-train patients get the consumed bag's inner out-of-fold values, outer-test
        patients its outer-test values: nothing comes from a model trained on the patient.
        """
        if not cand.consumes:
            return None
        cols = []
        for up in cand.consumes:
            name = self.best_name(up, fold) if up in ROLES else up
            if name is None:
                raise RuntimeError(f"no finished {up} candidate for repeat {fold.repeat} fold {fold.index}")
            df = pd.read_parquet(self.rd.part(name, fold.repeat, fold.index))
            df = df.set_index("position")
            frame = pd.DataFrame({f"{up}:prob": df["prob"], f"{up}:prob_raw": df["prob_raw"]})
            emb_path = self.rd.part(name, fold.repeat, fold.index, "emb.npz")
            if get_family(cand.family).consumes_embeddings and self.cands[name].modality == "image":
                self.ensure_embeddings(name, fold)
            if emb_path.exists():
                z = np.load(emb_path)
                emb = pd.DataFrame(z["emb"].astype(np.float32), index=z["position"],
                                   columns=[f"{up}:emb{i}" for i in range(z["emb"].shape[1])])
                frame = frame.join(emb)
            cols.append(frame)
        out = pd.concat(cols, axis=1)
        out.attrs["sources"] = {up: (self.best_name(up, fold) if up in ROLES else up) for up in cand.consumes}
        return out

    def run_fold(self, cand: Candidate, fold: Fold) -> dict:
        """Search, refit the bag, calibrate, write the part; returns the studies.csv row."""
        rd, p = self.rd, self.profile
        part = rd.part(cand.name, fold.repeat, fold.index)
        info_path = rd.part(cand.name, fold.repeat, fold.index, "json")
        if part.exists() and info_path.exists():
            self.progress.unit_done(p.n_trials + 1)
            row = json.loads(info_path.read_text())
            self._record_best(cand, row, None)
            self.progress.say(f"[{cand.name}] repeat {fold.repeat} fold {fold.index + 1}/{p.outer_folds}: reused from an earlier run")
            return row
        t0 = time.monotonic()
        y = self.cohort.y
        inner = self.inner(fold)
        upstream = self.upstream_for(cand, fold)
        make_view = self._view_maker(cand, upstream)
        seed = self.study_seed(cand.name, fold)
        label = f"[{cand.name}] repeat {fold.repeat} fold {fold.index + 1}/{p.outer_folds}"
        state = {"best": None}

        def on_trial(number: int, value: float | None, st: str) -> None:
            self.progress.unit_done()
            if value is not None and (state["best"] is None or value > state["best"]):
                state["best"] = value
            shown = f"{self.cfg.metric}={value:.3f}" if value is not None else st.lower()
            best_s = f" (best {state['best']:.3f})" if state["best"] is not None else ""
            self.progress.say(f"{label} trial {number + 1}/{p.n_trials} {shown}{best_s}")

        res = run_study(cand, make_view, y, inner, storage=self.storage,
                        study_name=f"{cand.name}:r{fold.repeat}:f{fold.index}", n_trials=p.n_trials,
                        timeout_s=p.study_timeout_s, seed=seed, ctx_base=self.ctx_base, metric=self.cfg.metric,
                        repeat=fold.repeat, outer_index=fold.index, on_trial=on_trial)
        row = {"candidate": cand.name, "repeat": fold.repeat, "outer_fold": fold.index,
               "best_value": res.best_value, "n_trials": res.n_trials, "n_failed": res.n_failed,
               "n_pruned": res.n_pruned, "status": "ok", "info": "", "wall_s": 0.0,
               "best_params": json.dumps(res.best_params, default=str)}
        if res.best_params is None:
            reasons = pd.Series(res.fail_reasons or ["no trial finished in the time budget"]).value_counts()
            row.update(status="failed", info=f"every trial failed: {reasons.index[0]} ({reasons.iloc[0]}x)")
            self.progress.unit_done()
            self.progress.say(f"{label} FAILED: {row['info']}")
        else:
            try:
                models = self._bag(cand, fold, inner, res.best_params, make_view, seed, res.best_models)
                self._predict_bag(cand, fold, inner, models, make_view, res.best_valid_preds)
                self._record_best(cand, row, models)
                res.best_models = res.best_valid_preds = None
                del models
                if res.n_failed:
                    row.update(status="partial", info=f"{res.n_failed} of {res.n_trials} trials failed: {res.fail_reasons[0]}")
            except (KeyboardInterrupt, UserError):
                raise
            except Exception as exc:
                row.update(status="failed", info=f"refit failed: {type(exc).__name__}: {str(exc)[:200]}")
            self.progress.unit_done()
            self.progress.say(f"{label} refit done, inner-CV {self.cfg.metric} {res.best_value:.3f}")
        row["wall_s"] = round(time.monotonic() - t0, 2)
        if row["status"] != "failed":
            rd.write_atomic(info_path, lambda q: q.write_text(json.dumps(row, default=str)))
        return row

    def _bag(self, cand: Candidate, fold: Fold, inner: list[Fold], params: dict, make_view, seed: int,
             trained: list | None = None) -> list:
        """The bag: the best params trained once per inner fold (or the search's own models).

        ``trained`` are the best trial's models from the search (same params, same seeds), used
        instead of training again when given.
        """
        if trained is not None:
            return list(trained)
        models = []
        for k, f in enumerate(inner):
            model = cand.build(params)
            ctx = TrialContext(device=self.device, seed=fit_seed(seed, fold.repeat, fold.index, k), trial=None,
                               max_epochs=self.profile.max_epochs, image_size=self.profile.image_size,
                               extra=dict(self.ctx_base.extra))
            models.append(model.fit(make_view(f.train, True), make_view(f.test, True), ctx))
        return models

    def _predict_bag(self, cand: Candidate, fold: Fold, inner: list[Fold], models: list, make_view,
                     oof_preds: list | None = None) -> None:
        """OOF + outer-test predictions of the bag, calibrated on the OOF part; written as a part.

        ``oof_preds`` are the members' predictions on their inner-validation folds when the
        search already made them (not computed twice).
        """
        y = self.cohort.y
        test_view = make_view(fold.test, False)
        oof_prob = np.full(len(y), np.nan)
        oof_fold = np.full(len(y), -1)
        test_members = []
        for k, (f, model) in enumerate(zip(inner, models)):
            oof_prob[f.test] = oof_preds[k] if oof_preds is not None else model.predict_proba(make_view(f.test, False))
            oof_fold[f.test] = k
            if self.profile.mc_passes and hasattr(model, "predict_members"):
                test_members.append(np.asarray(model.predict_members(test_view)))
            else:
                test_members.append(np.asarray(model.predict_proba(test_view))[None, :])
        members = np.concatenate(test_members, axis=0)             # (n_members, n_test)
        tr = fold.train
        cal = Calibrator(self.cfg.calibration).fit(oof_prob[tr], y[tr])
        test_raw = members.mean(axis=0)
        keys, fam = self.cohort.keys, cand.family
        rows = pd.DataFrame({
            "candidate": cand.name, "family": fam, "modality": cand.modality, "repeat": fold.repeat,
            "outer_fold": fold.index,
            "set": ["oof"] * len(tr) + ["test"] * len(fold.test),
            "inner_fold": np.concatenate([oof_fold[tr], np.full(len(fold.test), -1)]),
            "position": np.concatenate([tr, fold.test]),
            "patient": np.concatenate([keys[tr], keys[fold.test]]),
            "y": np.concatenate([y[tr], y[fold.test]]).astype(np.int64),
            "prob": np.concatenate([cal.transform(oof_prob[tr]), cal.transform(test_raw)]),
            "prob_raw": np.concatenate([oof_prob[tr], test_raw]),
        })
        cal_members = cal.transform(members)
        rows["members"] = [[float(v)] for v in rows["prob"].iloc[: len(tr)]] + [list(map(float, col)) for col in cal_members.T]
        self.rd.write_atomic(self.rd.part(cand.name, fold.repeat, fold.index), lambda q: rows.to_parquet(q, index=False))

    def ensure_embeddings(self, name: str, fold: Fold) -> None:
        """Embeddings of image candidate ``name`` for one outer fold, computed once, when consumed.

        Outer-train patients get the embedding from the bag member that did not train on them,
        outer-test patients the members' mean. The bag is the one held from this process, or is
        trained again from the stored best params (after --resume).
        """
        path = self.rd.part(name, fold.repeat, fold.index, "emb.npz")
        if path.exists():
            return
        cand = self.cands[name]
        inner = self.inner(fold)
        make_view = self._view_maker(cand, None)
        held = self.image_bags.get((fold.repeat, fold.index))
        if held is not None and held[0] == name:
            models = held[1]
        else:
            info = json.loads(self.rd.part(name, fold.repeat, fold.index, "json").read_text())
            models = self._bag(cand, fold, inner, json.loads(info["best_params"]), make_view,
                               self.study_seed(name, fold))
        if not hasattr(models[0], "embed"):
            return
        test_view = make_view(fold.test, False)
        oof = {}
        test_emb = []
        for f, model in zip(inner, models):
            e = np.asarray(model.embed(make_view(f.test, False)), dtype=np.float32)
            oof.update(zip(f.test.tolist(), e))
            test_emb.append(np.asarray(model.embed(test_view), dtype=np.float32))
        pos = np.concatenate([fold.train, fold.test])
        emb = np.stack([oof[i] for i in fold.train.tolist()] + list(np.mean(test_emb, axis=0)))
        self.rd.write_atomic(path, lambda q: np.savez(open(q, "wb"), position=pos, emb=emb.astype(np.float16)))


# ---- the whole run --------------------------------------------------------------------------

def oracle_rows(cohort: Cohort, folds: list[Fold]) -> pd.DataFrame:
    if cohort.oracle is None:
        return pd.DataFrame()
    out = []
    for f in folds:
        for col in ("oracle_register", "oracle_image", "oracle_both"):
            if col not in cohort.oracle:
                continue
            p = cohort.oracle[col].to_numpy(dtype=float)[f.test]
            out.append(pd.DataFrame({
                "candidate": col, "family": "oracle", "modality": "oracle", "repeat": f.repeat,
                "outer_fold": f.index, "set": "test", "inner_fold": -1, "position": f.test,
                "patient": cohort.keys[f.test], "y": cohort.y[f.test].astype(np.int64),
                "prob": p, "prob_raw": p, "members": [[float(v)] for v in p]}))
    return pd.concat(out, ignore_index=True) if out else pd.DataFrame()


def _load_cohort(cfg: RunConfig) -> Cohort:
    from benchmark.data.dataset import load_dataset

    path = Path(cfg.data) if cfg.data else default_dataset()
    return load_dataset(path)


def _new_run_name(base: Path) -> str:
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    name, i = stamp, 1
    while (base / name).exists():
        i += 1
        name = f"{stamp}-{i}"
    return name


def _restore_config(cfg: RunConfig, base: Path) -> tuple[RunConfig, Path]:
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
    merged = RunConfig(**{**old, "resume": True, "command": cfg.command,
                          "device": cfg.device if cfg.device != "auto" else old.get("device", "auto")})
    return merged, path


def run(cfg: RunConfig) -> Path:
    """Run a benchmark; returns the run folder."""
    base = Path(cfg.results_dir) if cfg.results_dir else results_dir()
    if cfg.resume:
        cfg, run_path = _restore_config(cfg, base)
    else:
        if cfg.run and (base / cfg.run).exists():
            raise UserError(f"run folder {base / cfg.run} exists; pass --resume to continue it or choose another --run")
        run_path = base / (cfg.run or _new_run_name(base))
    if cfg.calibration not in CAL_METHODS:
        raise UserError(f"--calibration {cfg.calibration}: use one of {', '.join(CAL_METHODS)}")
    device = pick_device(cfg.device)
    if cfg.profile is None:
        cfg.profile = default_profile(device)
        print(f"profile: {cfg.profile} (picked for this machine: {'a CUDA GPU' if device == 'cuda' else 'no GPU'}; "
              f"pass --profile to choose)", flush=True)
    profile = get_profile(cfg.profile, cfg.spaces)
    cands, _ = resolve_candidates(cfg)
    cohort = _load_cohort(cfg)
    if cfg.data is None:
        cfg.data = str(default_dataset())
    need_images = any(c.modality != "register" for c in cands)
    if need_images and not cohort.has_images:
        raise UserError(f"{cfg.data}: the cohort has no images but the run includes image/fusion candidates; "
                        f"use --suite register or add images to the dataset file")
    if any(c.modality != "image" for c in cands) and not cohort.has_register:
        raise UserError(f"{cfg.data}: the cohort has no register data but the run includes register/fusion candidates; "
                        f"use --suite image or add a register file")

    n_in_file = cohort.n_patients
    cohort = cohort.subset(stratified_subsample(cohort.y, profile.max_patients, seed=cfg.seed))
    folds = outer_folds(cohort.y, n_folds=profile.outer_folds, repeats=profile.repeats, seed=cfg.seed)

    rd = RunDir(run_path)
    rd.parts.mkdir(parents=True, exist_ok=True)
    storage = cfg.storage or f"sqlite:///{(run_path / 'optuna.db').resolve()}"
    started = dt.datetime.now().isoformat(timespec="seconds")
    manifest = {
        "run": run_path.name, "command": cfg.command, "config": cfg.__dict__, "profile_name": profile.name,
        "profile": profile.as_dict(), "seed": cfg.seed, "versions": _versions(), "hardware": _hardware(device),
        "dataset": {"name": cohort.name, "fingerprint": cohort.fingerprint, "n_patients": cohort.n_patients,
                    "n_pos": int(cohort.y.sum()), "synthetic": cohort.oracle is not None,
                    "n_patients_in_file": n_in_file},
        "candidates": [c.name for c in cands], "storage": "optuna.db" if cfg.storage is None else "external",
        "started": started, "status": "running",
    }
    man_path = run_path / "manifest.json"
    if cfg.resume and man_path.exists():
        old = json.loads(man_path.read_text())
        if old["dataset"]["fingerprint"] != cohort.fingerprint:
            raise UserError(f"--resume: the dataset changed since run {run_path.name} started (fingerprint differs); "
                            f"start a new run")
        manifest["started"] = old.get("started", started)
    rd.write_json("manifest.json", manifest)
    _write_folds(run_path, cohort, folds, cfg, profile)

    print(f"run {run_path.name}: {len(cands)} candidates x {len(folds)} outer folds, profile {profile.name}, "
          f"device {device}, {cohort.n_patients} patients ({int(cohort.y.sum())} AFF)", flush=True)
    t0 = time.monotonic()
    progress = Progress(len(cands) * len(folds) * (profile.n_trials + 1))
    fr = FoldRunner(cohort, cfg, profile, device, rd, storage, progress)
    fr.need_embeddings = any(get_family(c.family).consumes_embeddings for c in cands)
    fr.cands = {c.name: c for c in cands}
    studies = [fr.run_fold(cand, fold) for cand in cands for fold in folds]
    finish_run(rd, cohort, folds, studies, cands, profile, storage, manifest, time.monotonic() - t0)
    return run_path


def inner_fold_list(y: np.ndarray, fold: Fold, profile: Profile, seed: int) -> list[Fold]:
    """The inner folds of one outer fold (deterministic for the run's seed)."""
    return inner_folds(y, fold.train, n_folds=profile.inner_folds, seed=seed, repeat=fold.repeat,
                       outer_index=fold.index)


def _write_folds(run_path: Path, cohort: Cohort, folds: list[Fold], cfg: RunConfig, profile: Profile) -> None:
    rows = []
    for f in folds:
        inner = inner_fold_list(cohort.y, f, profile, cfg.seed)
        inner_of = {int(p): k for k, i in enumerate(inner) for p in i.test}
        for p in f.train:
            rows.append((f.repeat, f.index, cohort.keys[p], "train", inner_of[int(p)]))
        for p in f.test:
            rows.append((f.repeat, f.index, cohort.keys[p], "test", -1))
    pd.DataFrame(rows, columns=["repeat", "outer_fold", "patient", "part", "inner_fold"]).to_csv(
        run_path / "folds.csv", index=False)


def finish_run(rd: RunDir, cohort: Cohort, folds: list[Fold], studies: list[dict],
               cands: list[Candidate], profile: Profile, storage: str, manifest: dict, wall_s: float) -> None:
    """Gather the parts into the run's tables and build the report."""
    from benchmark.evaluate.compare import compare_candidates
    from benchmark.evaluate.leaderboard import build_leaderboard
    from benchmark.evaluate.uncertainty import add_uncertainty

    parts = [pd.read_parquet(p) for p in sorted(rd.parts.glob("*.parquet"))
             if p.name.split("__")[0] in {c.name for c in cands}]
    pred = pd.concat(parts + [oracle_rows(cohort, folds)], ignore_index=True)
    pred = add_uncertainty(pred.drop(columns=["position"]))
    rd.write_atomic(rd.path / "predictions.parquet", lambda q: pred.to_parquet(q, index=False))
    st = pd.DataFrame(studies)
    fam = {c.name: (c.family, c.modality) for c in cands}
    st.insert(1, "family", st["candidate"].map(lambda n: fam[n][0]))
    st.insert(2, "modality", st["candidate"].map(lambda n: fam[n][1]))
    st.to_csv(rd.path / "studies.csv", index=False)
    pd.DataFrame(trials_frame(storage)).to_csv(rd.path / "trials.csv", index=False)
    board, fold_metrics = build_leaderboard(pred, studies=st, n_boot=profile.bootstrap, seed=manifest["seed"])
    board.to_csv(rd.path / "leaderboard.csv", index=False)
    fold_metrics.to_csv(rd.path / "fold_metrics.csv", index=False)
    comparisons = compare_candidates(pred, board, n_boot=profile.bootstrap, seed=manifest["seed"])
    comparisons.to_csv(rd.path / "comparisons.csv", index=False)
    manifest.update(finished=dt.datetime.now().isoformat(timespec="seconds"), wall_s=round(wall_s, 1),
                    status="complete")
    rd.write_json("manifest.json", manifest)
    from benchmark.report.html import build_report

    html = build_report(rd.path)
    _print_summary(board, rd.path, html)


def _print_summary(board: pd.DataFrame, run_path: Path, html: Path) -> None:
    print("\nleaderboard (pooled outer-test AUC, 95% CI):")
    for _, r in board.iterrows():
        if r.get("status") == "failed":
            print(f"  {r['candidate']:<18} {r['modality']:<9} FAILED: {r.get('info', '')}")
        else:
            print(f"  {r['candidate']:<18} {r['modality']:<9} AUC {r['auc']:.3f} [{r['auc_lo']:.3f}, {r['auc_hi']:.3f}]")
    print(f"\nresults: {run_path}\nreport:  {html}")


# ---- CLI ------------------------------------------------------------------------------------

def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--suite", default="all", help="suite to run (register, image, fusion, all, or your own)")
    p.add_argument("--candidates", default=None, help="comma-separated candidate names (instead of --suite)")
    p.add_argument("--data", default=None, metavar="DATASET.yaml", help="dataset file (default: the synthetic cohort)")
    p.add_argument("--profile", default=None, help="budget profile (default: quick on CPU, standard on GPU)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--storage", default=None, help="Optuna storage URL (default: SQLite in the run folder)")
    p.add_argument("--run", default=None, help="run name (folder under results/)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run (default: the latest)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--spaces", action="append", default=[], metavar="DIR", help="extra folder of candidate files")
    p.add_argument("--calibration", default="platt", choices=list(CAL_METHODS))
    p.add_argument("--metric", default="auc", choices=["auc", "ap", "neg_log_loss"], help="objective metric")
    p.add_argument("--results", default=None, metavar="DIR", help="where run folders go (default: results/)")


def command(args: argparse.Namespace) -> int:
    cfg = RunConfig(suite=args.suite, candidates=args.candidates.split(",") if args.candidates else None,
                    data=args.data, profile=args.profile, device=args.device, storage=args.storage, run=args.run,
                    resume=args.resume, seed=args.seed, spaces=args.spaces, calibration=args.calibration,
                    metric=args.metric, results_dir=args.results,
                    command="python -m benchmark " + " ".join(sys.argv[1:]))
    run(cfg)
    return 0
