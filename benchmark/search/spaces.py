"""Candidate files and suites: what runs (the budget it runs under is a profile: ``profiles``).

Candidates are YAML files (one per candidate) in ``search_spaces/`` and in any folder
given with ``--spaces DIR``; suites and profiles are ``suites.yaml`` and ``profiles.yaml``
in the same folders (a user's file adds to, or overrides by name, the built-in ones; where
they are read from: ``files``)::

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

from benchmark.candidates.family_source import allow_family_folder
from benchmark.errors import UserError
from benchmark.protocol import MODALITIES, ROLES
from benchmark.search.files import RESERVED_FILES, _dirs, _read_yaml
from benchmark.search.profiles import load_profiles

CANDIDATE_KEYS = {"name", "extends", "family", "modality", "description", "fixed", "space", "consumes", "start"}
MERGED_KEYS = ("fixed", "space", "start")
PARAM_KEYS = {
    "float": {"type", "low", "high", "log", "step"},
    "int": {"type", "low", "high", "log", "step"},
    "categorical": {"type", "choices"},
}


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
