"""The run plan: which candidates run, in which order, on which folds, consuming what.

A plan is an explicit list of work units, one per candidate x repeat x outer fold, in an
order where every unit comes after the units it waits for. The runner works through it in
one process, or ``benchmark.run.scale`` hands its units to Ray workers as their needs finish::

    cands, _ = resolve_candidates(cfg)                 # fusion inputs added when missing
    plan = build_plan(cands, folds)
    plan[0].candidate.name, plan[0].fold.repeat, plan[0].fold.index, plan[0].needs
    # ('xgboost', 0, 0, ())      a fusion unit's ``needs``: the units whose results it reads

Roles (``best_image``, ``best_register``) are resolved per outer fold by inner-CV score, so a
unit that consumes a role needs every unit of that modality in its repeat and fold.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from benchmark.data.splits import Fold, inner_folds
from benchmark.errors import UserError
from benchmark.paths import cache_dir
from benchmark.protocol import ROLES
from benchmark.run.folder import RunConfig
from benchmark.search.profiles import Profile
from benchmark.search.spaces import Candidate, load_candidates, load_suites, suite_members

FUSION_INPUTS_SUITE = "fusion_inputs"


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
    """What ``run`` and ``plan`` use without ``--profile``: ``hour`` on a GPU (planned at under an hour on
    one H200 for the whole suite), ``quick`` without one."""
    return "hour" if device == "cuda" else "quick"


def default_dataset() -> Path:
    """The embedded synthetic cohort, generated once (under a lock) and cached."""
    import fcntl
    import tempfile

    from benchmark.data import synth

    root = cache_dir()
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


def load_run_cohort(cfg: RunConfig, profile: Profile):
    """(the run's cohort, patients in the dataset file): ``cfg.data`` (default: the synthetic
    cohort), subsampled to the profile's ``max_patients`` (stratified, seeded). What ``run``,
    ``plan`` and ``export`` all train on."""
    from benchmark.data.dataset import load_dataset
    from benchmark.data.splits import stratified_subsample

    cohort = load_dataset(Path(cfg.data) if cfg.data else default_dataset())
    return cohort.subset(stratified_subsample(cohort.y, profile.max_patients, seed=cfg.seed)), cohort.n_patients


def resolve_candidates(cfg: RunConfig, profile: Profile | None = None) -> tuple[list[Candidate], dict[str, Candidate]]:
    """The candidates to run, consumed ones first (fusion inputs are added when missing).

    With a ``profile``, its ``warm_start_source`` becomes the warm start of every fusion network
    whose own file does not set ``warm_start`` (``with_warm_source``); a named source candidate
    is added to the run like a consumed one.
    """
    allc = load_candidates(cfg.spaces)
    source = profile.warm_start_source if profile is not None else ROLE_SOURCE
    allc = {n: with_warm_source(c, source, allc, f"profile {profile.name!r}: warm_start_source" if profile else "")
            for n, c in allc.items()}
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
        named = named_warm_source(c)
        if named is not None and named not in names and named not in extra:
            extra.append(named)   # a named warm-start source
    ordered = [allc[n] for n in dict.fromkeys(extra)] + chosen
    # Topological order: non-consumers first, then consumers (one level of stacking); a network
    # warm-started from a role's weights waits like a consumer of that role.
    ordered = [c for c in ordered if not waits_for(c)] + [c for c in ordered if waits_for(c)]
    return ordered, allc


ROLE_SOURCE = "best_image"   # the default warm-start source: the fold's best image candidate


def warm_start_role(cand: Candidate) -> str | None:
    """What ``cand``'s networks start from (``fusion_nets``): a role (``best_image``, chosen per
    fold), the name of an image candidate (``warm_start: <name>``), or None (no warm start)."""
    from benchmark.candidates.base import get_family

    role = getattr(get_family(cand.family), "warm_start_role", None)
    ws = cand.fixed.get("warm_start", True)
    if not role or ws is False:
        return None
    return ws if isinstance(ws, str) else role


def named_warm_source(cand: Candidate) -> str | None:
    """The image candidate ``cand``'s networks start from in every fold (``warm_start: <name>``),
    or None (no warm start, or a role chosen per fold)."""
    role = warm_start_role(cand)
    return role if role is not None and role not in ROLES else None


def with_warm_source(cand: Candidate, source: str, allc: dict[str, Candidate], where: str = "") -> Candidate:
    """``cand`` with warm-start ``source`` (a role or an image candidate's name) unless its own file
    sets ``warm_start`` or it is not warm-started; UserError for a source that is not an image
    candidate (``where`` names the setting, default the candidate's ``fixed.warm_start``)."""
    from benchmark.candidates.base import get_family

    if not getattr(get_family(cand.family), "warm_start_role", None):
        return cand
    own = cand.fixed.get("warm_start")
    if own is None:
        if source == ROLE_SOURCE:
            return cand
        cand = replace(cand, fixed={**cand.fixed, "warm_start": source})
    else:
        where = ""   # the candidate's own setting: name its file
    name = cand.fixed["warm_start"]
    if isinstance(name, bool) or name == ROLE_SOURCE:
        return cand
    if not isinstance(name, str) or name not in allc or allc[name].modality != "image":
        known = sorted(n for n, c in allc.items() if c.modality == "image")
        raise UserError(f"{where or cand.path + ': fixed.warm_start'}: {name!r} is not an image candidate; use "
                        f"{ROLE_SOURCE} (the fold's best), true, false or one of {', '.join(known)}")
    return cand


def waits_for(cand: Candidate) -> tuple[str, ...]:
    """What a unit of ``cand`` must wait for in its fold: the candidates or roles it consumes and
    the role it is warm-started from."""
    role = warm_start_role(cand)
    return tuple(dict.fromkeys(cand.consumes + ((role,) if role else ())))



def inner_fold_list(y: np.ndarray, fold: Fold, profile: Profile, seed: int) -> list[Fold]:
    """The inner folds of one outer fold (deterministic for the run's seed)."""
    return inner_folds(y, fold.train, n_folds=profile.inner_folds, seed=seed, repeat=fold.repeat,
                       outer_index=fold.index)



@dataclass(frozen=True)
class WorkUnit:
    """One candidate on one outer fold of one repeat, and the units whose results it reads."""

    candidate: Candidate
    fold: Fold
    needs: tuple[tuple[str, int, int], ...] = ()   # (candidate name, repeat, outer fold) of units it waits for

    @property
    def key(self) -> tuple[str, int, int]:
        return (self.candidate.name, self.fold.repeat, self.fold.index)

    def steps(self, profile: Profile) -> int:
        """Its progress steps: the study's trials and the refit."""
        return profile.trials_for(self.candidate.modality) + 1

    def label(self, profile: Profile) -> str:
        """How progress lines name it: ``[xgboost] repeat 0 fold 2/5``."""
        return f"[{self.candidate.name}] repeat {self.fold.repeat} fold {self.fold.index + 1}/{profile.outer_folds}"


def build_plan(cands: list[Candidate], folds: list[Fold]) -> list[WorkUnit]:
    """Every candidate x outer fold, consumers after what they consume (candidate-major order)."""
    units = []
    for cand in cands:
        for fold in folds:
            needs = []
            for up in waits_for(cand):
                names = [c.name for c in cands if c.modality == ROLES[up]] if up in ROLES else [up]
                needs += [(n, fold.repeat, fold.index) for n in names]
            units.append(WorkUnit(cand, fold, tuple(dict.fromkeys(needs))))
    done: set = set()
    for unit in units:
        missing = [n for n in unit.needs if n not in done]
        if missing:
            raise UserError(f"candidate {unit.candidate.name!r} consumes {missing[0][0]!r}, which itself consumes "
                            f"other candidates; only one level of fusion inputs is supported")
        done.add(unit.key)
    return units
