"""The contract every candidate family obeys, and the registry that names families.

A family is a class with a small, sklearn-like contract::

    @register_family("xgboost")
    class XGBoostFamily(Family):
        defaults = {"learning_rate": 0.05, "max_depth": 4}       # its parameters, declared
        def fit(self, train, valid, ctx): ...; return self      # PatientData parts
        def predict_proba(self, data): ...                      # (n_patients,) P(AFF)

The constructor only stores the keyword arguments (``self.params``); ``self.settings()``
merges them over ``defaults`` and refuses unknown names (scikit-learn's rule: parameters
are named). ``check_params`` applies the same rule when a candidate file is loaded, so a
misspelt key fails before anything trains. ``choices`` lists allowed values of categorical
parameters. A family that declares no ``defaults`` (``None``, e.g. a user's quick
experiment) accepts any parameter.

``train`` and ``valid`` are ``PatientData`` with labels; ``valid`` (may be None) is for
early stopping and per-epoch pruning through ``ctx.report(step, value)``. Predictions are
per patient: image families aggregate their images (mean logit by default).
Families that can, implement ``embed(data) -> (n_patients, d)`` too.

A candidate YAML names a registered family or ``package.module:Class`` (imported only from the
project, a ``--spaces`` folder or an installed entry point: ``family_source``); see
``docs/design.md`` ("Extension points") for writing one.
"""

from __future__ import annotations

import difflib
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
    """Registered families and installed ones (entry points of ``aff_benchmark.families``)."""
    from benchmark.candidates.family_source import entry_points

    _load_builtins()
    return sorted({*_FAMILIES, *entry_points()})


def get_family(name: str) -> type["Family"]:
    """The family class for a registered name, a ``package.module:Class`` path or an installed entry point
    (imported only from where ``family_source`` allows: a candidate file is code)."""
    if ":" not in name:
        _load_builtins()
        if name in _FAMILIES:
            return _FAMILIES[name]
    from benchmark.candidates.family_source import import_family

    cls = import_family(name)   # KeyError for an unknown plain name
    if not (isinstance(cls, type) and issubclass(cls, Family)):
        raise UserError(f"family {name!r} is not a subclass of benchmark.candidates.base.Family")
    return cls


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
    # successive halving over epochs (benchmark.search.pruning.Monitor): the network predicts
    # ``monitor.data`` at ``monitor.epochs`` and reports ``monitor.score`` of it (report_epoch)
    monitor: Any = None
    reported: set = field(default_factory=set)   # steps this fit reported to the trial

    def report(self, step: int, value: float) -> None:
        """A holdout score per epoch (0-based). Under a monitor it is only recorded: the pruner's
        steps are the monitor's."""
        self.history.append((step, float(value)))
        if self.monitor is None:
            self._to_trial(int(step), value)

    def report_epoch(self, epochs_done: int, value: float) -> None:
        """The monitor's value after ``epochs_done`` epochs (1-based: the resource trained)."""
        self._to_trial(int(epochs_done), value)

    def _to_trial(self, step: int, value: float) -> None:
        if self.trial is None or not np.isfinite(value):
            return
        import optuna

        self.trial.report(float(value), self.step_offset + step)
        self.reported.add(self.step_offset + step)
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"pruned at step {step}")

    def rng(self) -> np.random.Generator:
        return np.random.default_rng(self.seed)


class Family:
    """Base class of candidate families: declare ``defaults``, implement ``fit`` and ``predict_proba``.

    The constructor only stores the keyword parameters (``self.params``); ``settings()``
    merges them over ``defaults`` and refuses unknown names. ``fit(train, valid, ctx)`` trains
    on a ``PatientData`` part and returns ``self``; ``predict_proba(part)`` returns P(AFF) per
    patient. ``valid`` is None inside the search (the fold that scores a trial is never handed
    to a fit): a family that wants early stopping splits its own training part.

    ```python
    class KNNFamily(Family):
        defaults = {"n_neighbors": 25}

        def fit(self, train, valid, ctx):
            self.pre = TabularPreprocessor().fit(train.register, train.categorical)
            k = min(self.settings()["n_neighbors"], len(train))
            self.model = KNeighborsClassifier(k).fit(self.pre.transform(train.register), train.labels())
            return self

        def predict_proba(self, data):
            return self.model.predict_proba(self.pre.transform(data.register))[:, 1]
    ```

    A candidate file names it as ``family: mypackage.knn:KNNFamily``, or the class is
    registered with ``@register_family("knn")``.
    """

    family_name: ClassVar[str] = ""
    # Declared parameters and their defaults (None: not declared, any parameter accepted).
    defaults: ClassVar[dict[str, Any] | None] = None
    # Allowed values of categorical parameters, checked at load time and in settings().
    choices: ClassVar[dict[str, tuple]] = {}
    # The runner hands image arrays (at the profile's size) to families that use them.
    uses_images: ClassVar[bool] = False
    # Its fits run on the run's GPU when there is one (a parallel run gives its units a GPU share).
    trains_on_gpu: ClassVar[bool] = False

    def __init__(self, **params: Any) -> None:
        self.params = params

    @classmethod
    def param_names(cls) -> set[str] | None:
        """Every parameter name the family accepts (None: undeclared, anything goes)."""
        return None if cls.defaults is None else set(cls.defaults)

    @classmethod
    def check_params(cls, params: dict[str, Any], where: str = "", *, values: bool = True) -> None:
        """UserError for an unknown name (or, with ``values``, a value outside ``choices``).

        ```python
        XGBoostFamily.check_params({"max_dept": 4}, "xgboost.yaml: fixed")
        # UserError: xgboost.yaml: fixed.max_dept: not a parameter of family 'xgboost'; ...
        ```
        """
        names = cls.param_names()
        prefix = f"{where}." if where else f"{cls.family_name or cls.__name__}: parameter "
        if names is not None:
            for key in params:
                if key not in names:
                    close = difflib.get_close_matches(str(key), sorted(names), n=1)
                    hint = f"did you mean {close[0]!r}? " if close else ""
                    raise UserError(f"{prefix}{key}: not a parameter of family {cls.family_name!r}; {hint}"
                                    f"known: {', '.join(sorted(names))}")
        if values:
            for key, value in params.items():
                allowed = cls.choices.get(key)
                if allowed is not None and value not in allowed:
                    raise UserError(f"{prefix}{key}: {value!r} is not allowed for family {cls.family_name!r}; "
                                    f"use one of {list(allowed)}")

    def settings(self) -> dict[str, Any]:
        """The declared defaults with this instance's parameters over them (checked)."""
        type(self).check_params(self.params)
        return {**(self.defaults or {}), **self.params}

    def fit(self, train, valid, ctx: TrialContext) -> "Family":  # pragma: no cover - interface
        """Train on ``train`` (a labelled ``PatientData``); ``valid`` is None in the search. Returns self."""
        raise NotImplementedError

    def predict_proba(self, data) -> np.ndarray:  # pragma: no cover - interface
        """P(AFF) per patient of ``data`` (a ``PatientData``, labels withheld): shape (n_patients,)."""
        raise NotImplementedError

    def predict_at(self, data, share: float) -> np.ndarray | None:
        """P(AFF) of the model as it stood after ``share`` of its training budget (epochs,
        boosting rounds), for the learning curve; None for families that do not iterate."""
        return None

    def still_improving(self) -> bool | None:
        """True when training ended by its budget while still improving (early stopping did
        not fire); None when the family has no early stopping to tell."""
        return None

    def half_budget_tells(self) -> bool:
        """Whether this fitted model needs a fit at half its budget to tell whether it was still
        improving: a network with a learning-rate schedule and no early stopping that could fire,
        whose snapshots part-way through are not models trained on less (``ctx.extra["budget_share"]``
        then gives a fit its own complete schedule at that share). False: its own snapshots or
        early stopping tell (boosted trees' rounds, ``still_improving``), or it does not iterate."""
        return False

    def predict_members(self, data) -> np.ndarray:
        """(n_passes, n_patients) stochastic predictions (MC dropout); default: one pass."""
        return self.predict_proba(data)[None, :]
