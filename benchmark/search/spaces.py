"""Candidate files, suites and profiles: what runs, and under which budget.

Candidates are YAML files (one per candidate) in ``search_spaces/`` and in any folder
given with ``--spaces DIR``; suites and profiles are ``suites.yaml`` and ``profiles.yaml``
in the same folders (a user's file adds to, or overrides by name, the built-in ones)::

    >>> cands = load_candidates()                     # built-in search_spaces/
    >>> cands["xgboost"].family, cands["xgboost"].modality
    ('xgboost', 'register')
    >>> suite_members("register", cands)
    ['logreg', 'xgboost', 'lightgbm', 'mlp']

A candidate file may extend another candidate (AMLB's ``extends:``): it inherits every key
and gives only those that differ; ``fixed``, ``space`` and ``start`` are merged key by key
(a parameter the child fixes leaves the parent's ``space`` and ``start``, and the other way
round)::

    name: resnet50
    extends: resnet18
    description: "ResNet-50 (24 M parameters)"
    fixed: {arch: resnet50}

Parameter names (and categorical values) are checked against the family's declared
parameters when a file is loaded. Every problem is a ``UserError`` naming the file and the key.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from benchmark.candidates.family_source import allow_family_folder
from benchmark.errors import UserError, yaml_problem
from benchmark.protocol import MODALITIES, ROLES
from benchmark.search.pruning import parse_pruner

BUILTIN_DIR = Path(__file__).resolve().parents[2] / "search_spaces"
CANDIDATE_KEYS = {"name", "extends", "family", "modality", "description", "fixed", "space", "consumes", "start"}
MERGED_KEYS = ("fixed", "space", "start")
PARAM_KEYS = {
    "float": {"type", "low", "high", "log", "step"},
    "int": {"type", "low", "high", "log", "step"},
    "categorical": {"type", "choices"},
}
PROFILE_KEYS = {
    "description", "outer_folds", "inner_folds", "repeats", "n_trials", "study_timeout_s",
    "max_epochs", "image_size", "max_patients", "bootstrap", "mc_passes", "max_image_samples", "refit_full",
    "pruner", "warm_start_source",
}
OPTIONAL_PROFILE_KEYS = {"description": "", "max_image_samples": None, "refit_full": False, "pruner": "median",
                         "warm_start_source": "best_image"}
RESERVED_FILES = {"suites.yaml", "profiles.yaml"}


@dataclass(frozen=True)
class Candidate:
    name: str
    family: str
    modality: str
    fixed: dict = field(default_factory=dict)
    space: dict = field(default_factory=dict)
    consumes: tuple = ()
    start: dict = field(default_factory=dict)   # the first trial's params (a known-good default)
    description: str = ""
    path: str = ""

    def sample(self, trial) -> dict[str, Any]:
        """Draw this candidate's hyperparameters from an Optuna trial."""
        params = {}
        for key, spec in self.space.items():
            kind = spec["type"]
            if kind == "float":
                params[key] = trial.suggest_float(key, spec["low"], spec["high"], log=spec.get("log", False),
                                                  step=spec.get("step"))
            elif kind == "int":
                params[key] = trial.suggest_int(key, spec["low"], spec["high"], log=spec.get("log", False),
                                                step=spec.get("step", 1))
            else:
                params[key] = trial.suggest_categorical(key, spec["choices"])
        return params

    def build(self, params: dict[str, Any]):
        """The family instance for the sampled ``params`` (fixed values first, then sampled)."""
        from benchmark.candidates.base import get_family

        return get_family(self.family)(**{**self.fixed, **params})


@dataclass(frozen=True)
class Profile:
    """A run's budget. Trials and epoch caps may differ by modality (``trials_for``, ``epoch_cap``).

    In ``profiles.yaml`` ``n_trials`` is a number for every modality or a mapping
    ``{register: 6, image: 1, fusion: 2}`` (all three); ``max_epochs`` is a number (or null:
    no cap) or a mapping with ``image`` and ``register`` and optionally ``fusion``. Without a
    ``fusion`` cap a fusion network that trains on images gets the image cap and one that does
    not gets the register cap. ``n_trials`` and ``max_epochs`` are the largest values (the
    number itself when one number is given), for readers that want one number.
    """

    name: str
    outer_folds: int
    inner_folds: int
    repeats: int
    trials: dict                  # modality -> finished trials per study (every modality)
    study_timeout_s: float | None  # a safety net, not the budget: a study that hits it says so
    epochs: dict                  # "image", "register" (and "fusion" when given) -> epoch cap or None
    image_size: int
    max_patients: int | None
    bootstrap: int
    mc_passes: int
    max_image_samples: int | None = None
    description: str = ""
    # modality -> the outer-test part is predicted by a model refitted on all outer-train (refits())
    refit_full: dict = field(default_factory=lambda: {m: False for m in MODALITIES})
    pruner: dict = field(default_factory=lambda: {"type": "median"})   # benchmark.search.pruning
    # where warm-started fusion networks start from: the fold's best image candidate ("best_image")
    # or one named image candidate in every fold (run_plan.resolve_candidates applies it)
    warm_start_source: str = "best_image"

    @property
    def n_trials(self) -> int:
        return max(self.trials.values())

    @property
    def max_epochs(self) -> int | None:
        caps = list(self.epochs.values())
        return None if any(c is None for c in caps) else max(caps)

    def trials_for(self, modality: str) -> int:
        """Finished trials every study of a ``modality`` candidate runs (the budget)."""
        if modality not in self.trials:
            raise UserError(f"modality {modality!r} is unknown; use one of {', '.join(MODALITIES)}")
        return self.trials[modality]

    def epoch_cap(self, modality: str, uses_images: bool) -> int | None:
        """The epoch cap of one network: image networks the image cap, others the register cap.

        A fusion network gets the profile's ``fusion`` cap when one is given, else the image cap
        when it trains on images and the register cap when it does not. None: no cap.
        """
        if modality not in MODALITIES:
            raise UserError(f"modality {modality!r} is unknown; use one of {', '.join(MODALITIES)}")
        if modality == "fusion" and "fusion" in self.epochs:
            return self.epochs["fusion"]
        if modality == "image" or (modality == "fusion" and uses_images):
            return self.epochs["image"]
        return self.epochs["register"]

    def refits(self, modality: str) -> bool:
        """Whether a ``modality`` candidate's outer test is predicted by a refit on all of outer-train."""
        return bool(self.refit_full.get(modality, False))

    def budget(self) -> dict:
        """Per modality: trials per study and each network kind's epoch cap (for the manifest)."""
        out: dict = {}
        for m in MODALITIES:
            row: dict = {"n_trials": self.trials_for(m)}
            if m == "register":
                row["max_epochs"] = self.epoch_cap(m, False)
            elif m == "image":
                row.update(max_epochs=self.epoch_cap(m, True), max_image_samples=self.max_image_samples)
            else:
                row.update(max_epochs_image_networks=self.epoch_cap(m, True),
                           max_epochs_other_networks=self.epoch_cap(m, False),
                           max_image_samples=self.max_image_samples)
            row["refit_full"] = self.refits(m)
            out[m] = row
        out["study_timeout_s"] = self.study_timeout_s
        out["pruner"] = dict(self.pruner)
        out["warm_start_source"] = self.warm_start_source
        return out

    def as_dict(self) -> dict:
        """The profile as ``profiles.yaml`` writes it (one number where every modality agrees)."""
        out = {k: v for k, v in self.__dict__.items() if k not in ("trials", "epochs")}
        out["n_trials"] = _collapse(self.trials, MODALITIES)
        out["max_epochs"] = _collapse(self.epochs, ("image", "register"))
        out["refit_full"] = _collapse(self.refit_full, MODALITIES)
        return out


def _collapse(values: dict, keys: tuple):
    """One value when every entry (and the required ``keys``) agree, else the mapping."""
    distinct = {values[k] for k in values}
    return next(iter(distinct)) if len(distinct) == 1 and set(values) == set(keys) else dict(values)


def _refit_modalities(path: Path, name: str, value) -> dict:
    """``refit_full``: true/false for every modality, or a mapping by modality (absent: false)."""
    if isinstance(value, bool):
        return {m: value for m in MODALITIES}
    if isinstance(value, dict):
        _check_modalities(path, name, "refit_full", value, lambda v: isinstance(v, bool), "true or false")
        return {m: bool(value.get(m, False)) for m in MODALITIES}
    raise UserError(f"{path}: profile {name!r} key 'refit_full' must be true, false or a mapping by modality like "
                    f"{{register: false, image: true, fusion: true}}, got {value!r}")


def _check_modalities(path: Path, name: str, key: str, value: dict, ok, what: str) -> None:
    """A profile value given by modality: every key a modality, every value ``ok`` (``what`` says which)."""
    for m, v in value.items():
        if m not in MODALITIES:
            raise UserError(f"{path}: profile {name!r} key {key!r}: {m!r} is not a modality; "
                            f"use {', '.join(MODALITIES)}")
        if not ok(v):
            raise UserError(f"{path}: profile {name!r} key {key}.{m} must be {what}, got {v!r}")


def _positive(value, allow_none: bool = False) -> bool:
    if value is None:
        return allow_none
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _per_modality(path: Path, name: str, key: str, value, required: tuple, allow_none: bool) -> dict:
    """``n_trials`` / ``max_epochs``: one value for every modality, or a mapping by modality."""
    what = "a positive whole number" + (" or null" if allow_none else "")
    example = "{register: 6, image: 1, fusion: 2}" if key == "n_trials" else "{register: 50, image: 8}"
    if not isinstance(value, dict):
        if not _positive(value, allow_none):
            raise UserError(f"{path}: profile {name!r} key {key!r} must be {what} or a mapping by modality "
                            f"like {example}, got {value!r}")
        return {m: value for m in required}
    _check_modalities(path, name, key, value, lambda v: _positive(v, allow_none), what)
    missing = [m for m in required if m not in value]
    if missing:
        raise UserError(f"{path}: profile {name!r} key {key!r} lacks modality {missing[0]!r}; "
                        f"give {', '.join(required)} (e.g. {example}) or one number")
    return dict(value)


def _read_yaml(path: Path) -> Any:
    try:
        with open(path, encoding="utf-8") as fh:
            return yaml.safe_load(fh)
    except FileNotFoundError:
        raise UserError(f"{path}: file not found") from None
    except yaml.YAMLError as exc:
        raise UserError(yaml_problem(path, exc)) from None


def _check_param(path: Path, key: str, spec: Any) -> dict:
    where = f"{path}: space.{key}"
    if not isinstance(spec, dict) or spec.get("type") not in PARAM_KEYS:
        raise UserError(f"{where}: needs 'type' float, int or categorical, e.g. {{type: float, low: 0.001, high: 0.1}}")
    kind = spec["type"]
    unknown = set(spec) - PARAM_KEYS[kind]
    if unknown:
        raise UserError(f"{where}: unknown key {sorted(unknown)[0]!r} for type {kind}; allowed: {sorted(PARAM_KEYS[kind])}")
    if kind == "categorical":
        if not isinstance(spec.get("choices"), list) or not spec["choices"]:
            raise UserError(f"{where}: categorical needs a non-empty list 'choices'")
        return dict(spec)
    for bound in ("low", "high"):
        if not isinstance(spec.get(bound), (int, float)) or isinstance(spec.get(bound), bool):
            raise UserError(f"{where}: '{bound}' must be a number, got {spec.get(bound)!r}")
    if kind == "int" and not all(float(spec[b]).is_integer() for b in ("low", "high")):
        raise UserError(f"{where}: int range needs whole numbers, got low={spec['low']} high={spec['high']}")
    if not spec["low"] < spec["high"]:
        raise UserError(f"{where}: bad range, low ({spec['low']}) must be below high ({spec['high']})")
    if spec.get("log") and spec["low"] <= 0:
        raise UserError(f"{where}: log scale needs low > 0, got {spec['low']}")
    if kind == "float" and spec.get("log") and spec.get("step") is not None:
        raise UserError(f"{where}: 'step' and 'log: true' cannot be combined")
    out = dict(spec)
    if kind == "int":
        out["low"], out["high"] = int(spec["low"]), int(spec["high"])
    else:
        out["low"], out["high"] = float(spec["low"]), float(spec["high"])
    return out


def _read_candidate(path: Path) -> dict:
    data = _read_yaml(path)
    if not isinstance(data, dict):
        raise UserError(f"{path}: a candidate file must be a mapping with keys name, family, modality, space")
    unknown = set(data) - CANDIDATE_KEYS
    if unknown:
        raise UserError(f"{path}: unknown key {sorted(unknown)[0]!r}; allowed keys: {sorted(CANDIDATE_KEYS)}")
    for key in ("name",) + (("extends",) if "extends" in data else ()):
        if not isinstance(data.get(key), str) or not data[key]:
            raise UserError(f"{path}: missing or empty key {key!r}")
    for key in MERGED_KEYS:
        if data.get(key) is not None and not isinstance(data[key], dict):
            raise UserError(f"{path}: {key!r} must be a mapping of parameter names")
    return data


def _merge(parent: dict, child: dict) -> dict:
    """``child`` over ``parent``: top-level keys replaced, fixed/space/start merged key by key."""
    out = {k: v for k, v in parent.items() if k != "name"}
    out.update({k: v for k, v in child.items() if k not in MERGED_KEYS and k != "extends"})
    fixed = {**(parent.get("fixed") or {}), **(child.get("fixed") or {})}
    space = {**(parent.get("space") or {}), **(child.get("space") or {})}
    start = {**(parent.get("start") or {}), **(child.get("start") or {})}
    for key in child.get("fixed") or {}:
        space.pop(key, None)
        start.pop(key, None)
    for key in child.get("space") or {}:
        if key not in (child.get("fixed") or {}):
            fixed.pop(key, None)
    out.update(fixed=fixed, space=space, start=start)
    return out


def _resolve(name: str, raw: dict[str, tuple[Path, dict]], stack: tuple = ()) -> dict:
    """The candidate's keys with every ``extends`` applied (a chain is followed to its root)."""
    path, data = raw[name]
    parent = data.get("extends")
    if parent is None:
        return data
    if parent in stack + (name,):
        raise UserError(f"{path}: extends {parent!r}, which extends {name!r} again (a cycle); remove one 'extends'")
    if parent not in raw:
        raise UserError(f"{path}: extends {parent!r}, which is not a known candidate; "
                        f"see `python -m benchmark list` for the names")
    return _merge(_resolve(parent, raw, stack + (name,)), data)


def _check_params(path: Path, family_cls, fixed: dict, space: dict) -> None:
    """Every parameter name (and categorical value) must be one the family declares."""
    family_cls.check_params(fixed, f"{path}: fixed")
    family_cls.check_params(space, f"{path}: space", values=False)
    for key, spec in space.items():
        for choice in spec.get("choices", ()):
            family_cls.check_params({key: choice}, f"{path}: space")


def load_candidate(path: str | Path, raw: dict[str, tuple[Path, dict]] | None = None) -> Candidate:
    """Read and validate one candidate file (``raw``: the other candidates' files, for ``extends``)."""
    path = Path(path)
    allow_family_folder(path.parent)   # the folder of a candidate file named on its own counts as a --spaces folder
    data = _read_candidate(path)
    if "extends" in data:
        raw = dict(raw if raw is not None else _raw_candidates(_dirs([path.parent])))
        raw[data["name"]] = (path, data)
        data = _resolve(data["name"], raw)
    return _validate(path, data)


def _validate(path: Path, data: dict) -> Candidate:
    from benchmark.candidates.base import family_names, get_family

    for key in ("name", "family", "modality"):
        if not isinstance(data.get(key), str) or not data[key]:
            raise UserError(f"{path}: missing or empty key {key!r}")
    name, family, modality = data["name"], data["family"], data["modality"]
    if modality not in MODALITIES:
        raise UserError(f"{path}: modality {modality!r} is unknown; use one of {', '.join(MODALITIES)}")
    try:
        family_cls = get_family(family)
    except KeyError:
        raise UserError(f"{path}: family {family!r} is not registered; known families: "
                        f"{', '.join(family_names())} (or give 'package.module:Class')") from None
    except UserError as exc:
        raise UserError(f"{path}: {exc}") from None
    fixed = dict(data.get("fixed") or {})
    space = {k: _check_param(path, k, v) for k, v in (data.get("space") or {}).items()}
    both = set(fixed) & set(space)
    if both:
        raise UserError(f"{path}: parameter {sorted(both)[0]!r} is both fixed and searched; keep it in one place")
    _check_params(path, family_cls, fixed, space)
    consumes = data.get("consumes") or []
    if not isinstance(consumes, list) or not all(isinstance(c, str) for c in consumes):
        raise UserError(f"{path}: 'consumes' must be a list of candidate names")
    start = data.get("start") or {}
    if not isinstance(start, dict):
        raise UserError(f"{path}: 'start' must map searched parameter names to the first trial's values")
    for key, value in start.items():
        if key not in space:
            raise UserError(f"{path}: start.{key}: not a parameter of 'space'; 'start' sets the first trial's values")
        spec = space[key]
        if spec["type"] == "categorical" and value not in spec["choices"]:
            raise UserError(f"{path}: start.{key}: {value!r} is not one of the choices {spec['choices']}")
        if spec["type"] != "categorical" and not (isinstance(value, (int, float)) and spec["low"] <= value <= spec["high"]):
            raise UserError(f"{path}: start.{key}: {value!r} is outside [{spec['low']}, {spec['high']}]")
    return Candidate(name=name, family=family, modality=modality, fixed=fixed, space=space,
                     consumes=tuple(consumes), start=dict(start), description=str(data.get("description") or ""),
                     path=str(path))


def _dirs(extra: list[str | Path] | None) -> list[Path]:
    dirs = [BUILTIN_DIR]
    extra = [d for d in extra or [] if Path(d).resolve() != BUILTIN_DIR]
    for d in extra or []:
        d = Path(d)
        if not d.is_dir():
            raise UserError(f"--spaces {d}: not a folder; give a folder of candidate YAML files")
        allow_family_folder(d)   # its modules may be named as families (benchmark.candidates.family_source)
        dirs.append(d)
    return dirs


def _raw_candidates(dirs: list[Path]) -> dict[str, tuple[Path, dict]]:
    """``{name: (path, keys as written)}``; a later folder's candidate replaces an earlier one's."""
    out: dict[str, tuple[Path, dict]] = {}
    for d in dirs:
        seen: dict[str, Path] = {}
        for path in sorted(d.glob("*.y*ml")):
            if path.name in RESERVED_FILES:
                continue
            data = _read_candidate(path)
            if data["name"] in seen:
                raise UserError(f"{path}: candidate name {data['name']!r} is also used by {seen[data['name']]}; "
                                f"names must be unique")
            seen[data["name"]] = path
            out[data["name"]] = (path, data)
    return out


def load_candidates(extra_dirs: list[str | Path] | None = None) -> dict[str, Candidate]:
    """All candidates, built-in first; a user's candidate with the same name replaces the built-in one."""
    raw = _raw_candidates(_dirs(extra_dirs))
    out = {name: _validate(path, _resolve(name, raw)) for name, (path, _) in raw.items()}
    for cand in out.values():
        for up in cand.consumes:
            if up not in out and up not in ROLES:
                raise UserError(f"{cand.path}: consumes {up!r}, which is not a known candidate")
    return out


def load_suites(extra_dirs: list[str | Path] | None = None) -> dict[str, list[str]]:
    suites: dict[str, list[str]] = {}
    for d in _dirs(extra_dirs):
        path = d / "suites.yaml"
        if not path.exists():
            continue
        data = _read_yaml(path) or {}
        if not isinstance(data, dict):
            raise UserError(f"{path}: must map suite names to lists of candidates or suites")
        for name, members in data.items():
            if not isinstance(members, list) or not all(isinstance(m, str) for m in members):
                raise UserError(f"{path}: suite {name!r} must be a list of candidate or suite names")
            suites[str(name)] = members
    return suites


def suite_members(name: str, candidates: dict[str, Candidate],
                  suites: dict[str, list[str]] | None = None, _stack: tuple = ()) -> list[str]:
    """Candidate names of a suite, suites expanded recursively, order kept, no duplicates."""
    suites = load_suites() if suites is None else suites
    if name not in suites:
        raise UserError(f"suite {name!r} is unknown; known suites: {', '.join(sorted(suites))} "
                        f"(define your own in suites.yaml in a --spaces folder)")
    if name in _stack:
        raise UserError(f"suites.yaml: suite {name!r} includes itself")
    out: list[str] = []
    for m in suites[name]:
        names = suite_members(m, candidates, suites, _stack + (name,)) if m in suites else [m]
        for n in names:
            if n not in candidates:
                raise UserError(f"suites.yaml: suite {name!r} lists {n!r}, which is neither a candidate nor a suite")
            if n not in out:
                out.append(n)
    return out


def load_profiles(extra_dirs: list[str | Path] | None = None) -> dict[str, Profile]:
    profiles: dict[str, Profile] = {}
    for d in _dirs(extra_dirs):
        path = d / "profiles.yaml"
        if not path.exists():
            continue
        data = _read_yaml(path) or {}
        for name, spec in data.items():
            if not isinstance(spec, dict):
                raise UserError(f"{path}: profile {name!r} must be a mapping")
            unknown = set(spec) - PROFILE_KEYS
            if unknown:
                raise UserError(f"{path}: profile {name!r} has unknown key {sorted(unknown)[0]!r}; allowed: {sorted(PROFILE_KEYS)}")
            base = profiles[name].as_dict() if name in profiles else {}
            merged = {**OPTIONAL_PROFILE_KEYS, **base, **spec, "name": str(name)}
            missing = PROFILE_KEYS - set(merged)
            if missing:
                raise UserError(f"{path}: profile {name!r} lacks key {sorted(missing)[0]!r}")
            for key in ("outer_folds", "inner_folds", "repeats", "image_size", "bootstrap"):
                if not isinstance(merged[key], int) or merged[key] < (2 if "folds" in key else 1):
                    raise UserError(f"{path}: profile {name!r} key {key!r} must be a positive whole number, got {merged[key]!r}")
            timeout = merged["study_timeout_s"]
            if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0):
                raise UserError(f"{path}: profile {name!r} key 'study_timeout_s' must be a positive number of "
                                f"seconds (a safety net; the budget is n_trials) or null, got {timeout!r}")
            merged["refit_full"] = _refit_modalities(path, name, merged["refit_full"])
            merged["pruner"] = parse_pruner(merged["pruner"], path, name)
            if not isinstance(merged["warm_start_source"], str) or not merged["warm_start_source"]:
                raise UserError(f"{path}: profile {name!r} key 'warm_start_source' must be best_image or the name of "
                                f"an image candidate, got {merged['warm_start_source']!r}")
            merged["trials"] = _per_modality(path, name, "n_trials", merged["n_trials"], MODALITIES, False)
            merged["epochs"] = _per_modality(path, name, "max_epochs", merged["max_epochs"], ("image", "register"), True)
            profiles[str(name)] = Profile(**{k: merged[k] for k in Profile.__dataclass_fields__})
    return profiles


def get_profile(name: str, extra_dirs: list[str | Path] | None = None) -> Profile:
    profiles = load_profiles(extra_dirs)
    if name not in profiles:
        raise UserError(f"profile {name!r} is unknown; known profiles: {', '.join(profiles)}")
    return profiles[name]


# ---- `python -m benchmark list` -------------------------------------------------------------

def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--spaces", action="append", default=[], metavar="DIR",
                   help="extra folder of candidate YAML files (and suites.yaml/profiles.yaml)")


def command(args: argparse.Namespace) -> int:
    cands = load_candidates(args.spaces)
    print("candidates:")
    for c in sorted(cands.values(), key=lambda c: (MODALITIES.index(c.modality), c.name)):
        extra = f" consumes={','.join(c.consumes)}" if c.consumes else ""
        print(f"  {c.name:<18} {c.modality:<9} family={c.family:<14} {len(c.space)} params{extra}  {c.description}")
    suites = load_suites(args.spaces)
    print("suites:")
    for name in suites:
        print(f"  {name:<18} {', '.join(suite_members(name, cands, suites))}")
    print("profiles:")
    for prof in load_profiles(args.spaces).values():
        trials = "/".join(str(prof.trials_for(m)) for m in MODALITIES)
        budget = (f"{prof.outer_folds}x{prof.inner_folds} folds, {trials} trials ({'/'.join(MODALITIES)}), "
                  f"{prof.image_size} px")
        print(f"  {prof.name:<18} {budget}  {prof.description}")
    return 0
