"""Profiles: a run's budget (folds, repeats, trials, epoch caps, image size, ...), from ``profiles.yaml``.

    >>> p = get_profile("quick")
    >>> p.trials_for("register"), p.epoch_cap("image", True) is not None
    (6, True)

A user's ``profiles.yaml`` (in a ``--spaces`` folder) adds profiles or overrides keys of a
built-in one by name. Every problem is a ``UserError`` naming the file, the profile and the key.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from benchmark.errors import UserError
from benchmark.protocol import MODALITIES
from benchmark.search.files import _dirs, _read_yaml
from benchmark.search.pruning import parse_pruner

PROFILE_KEYS = {
    "description", "outer_folds", "inner_folds", "repeats", "n_trials", "study_timeout_s",
    "max_epochs", "image_size", "max_patients", "bootstrap", "mc_passes", "max_image_samples", "refit_full",
    "pruner", "warm_start_source", "pretrained", "importance",
}
OPTIONAL_PROFILE_KEYS = {"description": "", "max_image_samples": None, "refit_full": False, "pruner": "median",
                         "warm_start_source": "best_image", "pretrained": None,
                         "importance": "auto"}
# a run's register importance (run --importance; benchmark.run.explain_unit): auto leaves out film on a CPU;
# tables also the fusion networks (each shuffled table a pass over every test image's features)
IMPORTANCE_LEVELS = ("auto", "all", "tables", "none")
PROFILE_WEIGHTS = ("imagenet",)   # what a profile's ``pretrained`` may ask for (null: the candidates' own settings)


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
    # or one named image candidate in every fold (units.resolve_candidates applies it)
    warm_start_source: str = "best_image"
    # the starting weights of every network whose candidate file sets no ``pretrained`` (None: theirs);
    # where they cannot be had, those networks start from random init (``run.pretrained``)
    pretrained: str | None = None
    # the register importance a run computes without --importance (IMPORTANCE_LEVELS)
    importance: str = "auto"

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
        out["pretrained"] = self.pretrained
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
            if merged["pretrained"] is not None and merged["pretrained"] not in PROFILE_WEIGHTS:
                raise UserError(f"{path}: profile {name!r} key 'pretrained' must be imagenet or null (each candidate's "
                                f"own setting), got {merged['pretrained']!r}")
            if merged["importance"] not in IMPORTANCE_LEVELS:
                raise UserError(f"{path}: profile {name!r} key 'importance' must be one of {', '.join(IMPORTANCE_LEVELS)}, "
                                f"got {merged['importance']!r}")
            merged["trials"] = _per_modality(path, name, "n_trials", merged["n_trials"], MODALITIES, False)
            merged["epochs"] = _per_modality(path, name, "max_epochs", merged["max_epochs"], ("image", "register"), True)
            profiles[str(name)] = Profile(**{k: merged[k] for k in Profile.__dataclass_fields__})
    return profiles


def get_profile(name: str, extra_dirs: list[str | Path] | None = None) -> Profile:
    profiles = load_profiles(extra_dirs)
    if name not in profiles:
        raise UserError(f"profile {name!r} is unknown; known profiles: {', '.join(profiles)}")
    return profiles[name]
