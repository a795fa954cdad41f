"""The contract every candidate family obeys, and the registry that names families.

A family is a class with a small, sklearn-like contract::

    @register_family("xgboost")
    class XGBoostFamily(Family):
        modality = "register"
        def __init__(self, **params): self.params = params     # store only
        def fit(self, train, valid, ctx): ...; return self      # PatientData parts
        def predict_proba(self, data): ...                      # (n_patients,) P(AFF)

``train`` and ``valid`` are ``PatientData`` with labels; ``valid`` (may be None) is for
early stopping and per-epoch pruning through ``ctx.report(step, value)``. Predictions are
per patient: image families aggregate their images (mean logit by default).
Families that can, implement ``embed(data) -> (n_patients, d)`` too.

A candidate YAML names a registered family or ``package.module:Class``.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar

import numpy as np

from benchmark.errors import UserError

_FAMILIES: dict[str, type["Family"]] = {}

# Modules that register the built-in families when imported.
_BUILTIN_MODULES = (
    "benchmark.candidates.tabular",
    "benchmark.candidates.mlp",
    "benchmark.candidates.image",
    "benchmark.candidates.fusion",
)


def register_family(name: str) -> Callable[[type], type]:
    """Class decorator: make a family available to candidate files as ``family: name``."""

    def deco(cls: type) -> type:
        cls.family_name = name
        _FAMILIES[name] = cls
        return cls

    return deco


def _load_builtins() -> None:
    for mod in _BUILTIN_MODULES:
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as exc:  # a module not written yet, not a missing dependency
            if exc.name != mod:
                raise


def family_names() -> list[str]:
    _load_builtins()
    return sorted(_FAMILIES)


def get_family(name: str) -> type["Family"]:
    """The family class for a registered name or a ``package.module:Class`` path."""
    if ":" in name:
        mod_name, _, cls_name = name.partition(":")
        try:
            cls = getattr(importlib.import_module(mod_name), cls_name)
        except (ImportError, AttributeError) as exc:
            raise UserError(f"family {name!r} cannot be imported ({exc}); check the module path and class name") from None
        if not (isinstance(cls, type) and issubclass(cls, Family)):
            raise UserError(f"family {name!r} is not a subclass of benchmark.candidates.base.Family")
        return cls
    _load_builtins()
    if name not in _FAMILIES:
        raise KeyError(name)
    return _FAMILIES[name]


@dataclass
class TrialContext:
    """What a family may know about the trial it runs in: device, seed, pruning hook.

    ``report(step, value)`` forwards an intermediate validation score to Optuna and raises
    ``optuna.TrialPruned`` when the pruner says so. Outside a search (refit) it only records.
    """

    device: str = "cpu"
    seed: int = 0
    trial: Any = None                 # optuna.Trial or None
    step_offset: int = 0              # added to steps so folds of one trial do not collide
    max_epochs: int | None = None     # profile's cap for iterative models (None: the family's own)
    image_size: int | None = None
    extra: dict = field(default_factory=dict)   # profile values a family may read (e.g. mc_passes)
    history: list = field(default_factory=list)
    notes: list = field(default_factory=list)   # things worth recording (e.g. "oom: batch 256->128")

    def report(self, step: int, value: float) -> None:
        self.history.append((step, float(value)))
        if self.trial is None or not np.isfinite(value):
            return
        import optuna

        self.trial.report(float(value), self.step_offset + int(step))
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"pruned at step {step}")

    def rng(self) -> np.random.Generator:
        return np.random.default_rng(self.seed)


class Family:
    """Base class of candidate families. Subclasses set ``modality`` and implement fit/predict."""

    family_name: ClassVar[str] = ""
    modality: ClassVar[str] = "register"   # register | image | fusion
    uses_images: ClassVar[bool] = False
    uses_register: ClassVar[bool] = True
    # Fusion families that read the consumed image candidates' embeddings (not only their
    # predictions): the runner computes image embeddings only when a run has one of these.
    consumes_embeddings: ClassVar[bool] = False

    def __init__(self, **params: Any) -> None:
        self.params = params

    def fit(self, train, valid, ctx: TrialContext) -> "Family":  # pragma: no cover - interface
        raise NotImplementedError

    def predict_proba(self, data) -> np.ndarray:  # pragma: no cover - interface
        raise NotImplementedError

    def predict_members(self, data) -> np.ndarray:
        """(n_passes, n_patients) stochastic predictions (MC dropout); default: one pass."""
        return self.predict_proba(data)[None, :]
