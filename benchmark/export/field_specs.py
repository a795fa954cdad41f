"""The classes a bundle may hold, and for each the fields an object of it may have.

``codec.Reader`` rebuilds an object only from this list: a class not here is refused, a key
of its state not listed for it is refused, every listed field is read with its type and
bounds (``fields``), and ``check`` tests what spans fields (array lengths that must agree).
No other attribute is ever set, so a bundle cannot shadow a method (``bundle_restore``,
``predict_proba``) or add state a class does not expect. ``codec.Writer`` refuses at export
an attribute that is not listed, naming it: a new fitted attribute of a family needs a line
here (and a test round-trips every built-in family, ``tests/test_bundle_codec.py``).

``OPTIONAL`` fields may be missing (written by another library version or added later);
everything else must be present.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable

from benchmark.export.fields import (Array, Bool, Device, Field, Float, Ignored, Int, List, Map, NoneOr, OneOf,
                                     Pairs, Str, Tuple)
from benchmark.export.limits import (MAX_BATCH, MAX_COLUMNS, MAX_IMAGE_SIZE, MAX_LAYERS, MAX_PASSES, MAX_THREADS,
                                     MAX_TOKENS, MAX_TREES, MAX_WIDTH, BundleFormatError)

NAME = 256                                   # characters of a column, level or candidate name
ARCH = r"[A-Za-z0-9_][A-Za-z0-9_.\-]{0,127}"  # a timm architecture name
BIG = 10 ** 7


@dataclass
class ObjectSpec:
    fields: dict[str, Field]
    optional: frozenset[str] = frozenset()
    check: Callable[[Any, str], None] | None = None
    extra: Field | None = None                 # what ``bundle_extra`` wrote (for classes with ``bundle_restore``)
    after: Callable[[Any], None] | None = None  # rebuilds what is derived from the fields (never from the bundle)


class Obj(Field):
    """An ``__object__`` node of one of ``names`` (``module:Class``), rebuilt by the reader."""

    kinds = ("__object__",)

    def __init__(self, *names: str) -> None:
        self.names = names
        self.label = " or ".join(n.rsplit(":", 1)[-1] for n in names) or "an object"

    def decode(self, reader, node, where):
        name = node.get("__object__")
        if name not in self.names:
            raise BundleFormatError(f"{where}: {str(name)[:80]!r} where {self.label} is expected")
        return reader.object(node, where)


class XGBoostModel(Field):
    kinds, label = ("__xgboost__",), "an XGBoost model file"

    def decode(self, reader, node, where):
        from benchmark.export.fields import check_node

        check_node(node, "__xgboost__", where)
        return reader.xgboost(node["__xgboost__"], where)


class LightGBMModelFile(Field):
    kinds, label = ("__lightgbm__",), "a LightGBM model file"

    def decode(self, reader, node, where):
        from benchmark.export.fields import check_node

        check_node(node, "__lightgbm__", where)
        best = NoneOr(Int(0, MAX_TREES)).read(reader, node.get("best_iteration"), f"{where}.best_iteration")
        return reader.lightgbm(node["__lightgbm__"], best, where)


class Record(Field):
    """A ``__map__`` node with exactly these keys."""

    kinds, label = ("__map__",), "a record"

    def __init__(self, **fields: Field) -> None:
        self.fields = fields

    def decode(self, reader, node, where):
        items = node.get("__map__")
        if not isinstance(items, dict) or set(items) != set(self.fields) or len(node) != 1:
            raise BundleFormatError(f"{where}: expected the keys {sorted(self.fields)}")
        return {k: f.read(reader, items[k], f"{where}.{k}") for k, f in self.fields.items()}


def _file(prefix: str, suffix: str) -> Str:
    return Str(200, pattern=rf"{prefix}[A-Za-z0-9_.\-]{{1,180}}{suffix}")


# -- shared field sets

NAMES = List(Str(NAME), MAX_COLUMNS)
LEVEL = OneOf(Str(NAME), Int(), Float(), Bool())
LEVELS = Map(List(LEVEL), max_len=MAX_COLUMNS)
FLAGS = Map(Bool(), max_len=MAX_COLUMNS)
VECTOR = Array("f", (1,))
PARAMS = Map(OneOf(NoneOr(Str(1024)), Bool(), Int(), Float(nan=True), List(OneOf(Str(NAME), Int(), Float()), 64)),
             max_len=256)
PROB = Float(0.0, 1.0)
WEIGHTS = Record(weights=_file("weights/", r"\.safetensors"))

TORCH = {
    "params": PARAMS, "device_": Device(), "seed_": Int(), "mc_passes_": Int(0, MAX_PASSES),
    "n_threads_": NoneOr(Int(1, MAX_THREADS)), "epoch_budget_": Int(0, BIG), "trained_share_": Float(0.0, 1.0),
    "stopped_early_": NoneOr(Bool()), "best_epoch_": Int(-1, BIG), "batch_size_": Int(1, MAX_BATCH),
    "eval_batch_size_": Int(1, MAX_BATCH),
}
IMAGE = {**TORCH, "_aug": Float(0.0, 100.0), "_hflip": Bool(), "stats_": Tuple(Float(-1e3, 1e3), Float(1e-6, 1e3))}
FUSION = {**IMAGE, "size_": Int(1, MAX_IMAGE_SIZE), "prevalence_": PROB, "pre_": Obj("benchmark.candidates.preprocess:TabularPreprocessor"),
          "pos_weight_": Float(0.0, 1e9), "fusion_dim_": Int(1, MAX_WIDTH), "arch_": Str(128, pattern=ARCH)}
TREES = {"params": PARAMS, "align_": Obj("benchmark.candidates.preprocess:CategoryAligner"),
         "keep_": NoneOr(NAMES), "best_iteration_": Int(-1, MAX_TREES), "rounds_cap_": Int(0, BIG)}
EMBED = {"params": PARAMS, "encoder_": Str(128, pattern=ARCH), "pretrained_": Ignored(),
         "device_": Str(16, pattern=r"cpu|cuda(:\d{1,2})?|mps"), "threads_": NoneOr(Int(1, MAX_THREADS)),
         "reducer_": Obj("benchmark.candidates.fusion_embed:EmbeddingReducer")}
SKLEARN_COMMON = {"n_features_in_": Int(0, MAX_COLUMNS), "feature_names_in_": Array("", (1,), text=True)}


# -- checks that span fields

def _same_len(obj, where: str, *names: str, n: int | None = None) -> None:
    sizes = {k: len(getattr(obj, k)) for k in names if getattr(obj, k, None) is not None}
    if n is not None:
        sizes["expected"] = n
    if len(set(sizes.values())) > 1:
        raise BundleFormatError(f"{where}: {', '.join(sizes)} differ in length ({', '.join(map(str, sizes.values()))})")


def _check_preprocessor(p, where: str) -> None:
    _same_len(p, where, "medians_", "means_", "scales_", "num_cols_")
    if not (p.scales_ > 0).all():
        raise BundleFormatError(f"{where}.scales_: a scale is not above 0")
    if not set(p.levels_) == set(p.has_other_) == set(p.has_missing_) == set(p.cat_cols_):
        raise BundleFormatError(f"{where}: levels_, has_other_, has_missing_ and cat_cols_ name different columns")
    if p._keep_cat.dtype != bool:
        raise BundleFormatError(f"{where}._keep_cat: not a boolean array")
    width = sum(len(v) + p.has_other_[c] + p.has_missing_[c] for c, v in p.levels_.items()) \
        if p.categorical == "onehot" else len(p.cat_cols_)
    if len(p._keep_cat) != width:
        raise BundleFormatError(f"{where}._keep_cat: {len(p._keep_cat)} entries for {width} categorical columns")
    n_cat = int(p._keep_cat.sum())
    codes = p.categorical == "codes"
    expected = len(p.num_cols_) + len(p.ind_cols_) + (0 if codes else n_cat)
    if p.n_numeric != expected or len(p.feature_names) != expected + (n_cat if codes else 0) \
            or len(p.cardinalities) != (n_cat if codes else 0):
        raise BundleFormatError(f"{where}: n_numeric, feature_names and cardinalities do not fit the columns")
    most = max((len(v) for v in p.levels_.values()), default=0) + 2
    if any(c > most for c in p.cardinalities):
        raise BundleFormatError(f"{where}.cardinalities: a cardinality above its columns' levels")


def _check_aligner(a, where: str) -> None:
    _same_len(a, where, "names_", "columns_")
    if set(a.levels_) != set(a.cat_cols_) or not set(a.cat_cols_) <= set(a.columns_):
        raise BundleFormatError(f"{where}: levels_ and cat_cols_ do not name the same columns")


def _check_logreg(m, where: str) -> None:
    if m.coef_.shape != (1, m.n_features_in_) or m.intercept_.shape != (1,) or m.classes_.shape != (2,):
        raise BundleFormatError(f"{where}: coef_ {m.coef_.shape}, intercept_ {m.intercept_.shape} and classes_ "
                                f"{m.classes_.shape} do not fit {m.n_features_in_} features and two classes")


def _check_scaler(s, where: str) -> None:
    for k in ("mean_", "var_", "scale_"):
        a = getattr(s, k)
        if a is not None and a.shape != (s.n_features_in_,):
            raise BundleFormatError(f"{where}.{k}: shape {a.shape} for {s.n_features_in_} features")


def _check_pca(p, where: str) -> None:
    k, d = p.n_components_, p.n_features_in_
    if p.components_.shape != (k, d) or p.mean_.shape != (d,) or p.explained_variance_.shape != (k,):
        raise BundleFormatError(f"{where}: components_ {p.components_.shape} and mean_ {p.mean_.shape} do not fit "
                                f"{k} components of {d} features")


def _check_isotonic(m, where: str) -> None:
    if len(m.X_thresholds_) != len(m.y_thresholds_) or len(m.X_thresholds_) < 1:
        raise BundleFormatError(f"{where}: X_thresholds_ and y_thresholds_ differ in length or are empty")


def _check_reducer(r, where: str) -> None:
    if r.reducer_ is not None and r.reducer_[0].n_features_in_ != r.reducer_[1].n_features_in_:
        raise BundleFormatError(f"{where}.reducer_: the scaler and the PCA see different widths")


def _build_isotonic(m) -> None:
    m._build_f(m.X_thresholds_, m.y_thresholds_)


P = "benchmark.candidates."
CLASSES: dict[str, ObjectSpec] = {
    # -- preprocessing and calibration
    P + "preprocess:TabularPreprocessor": ObjectSpec({
        "categorical": Str(choices=("onehot", "codes")), "indicators": Bool(), "scale": Bool(),
        "min_count": Int(0, BIG), "max_levels": Int(0, BIG), "drop_constant": Bool(),
        "clip": NoneOr(Float(0.0, 1e12)), "fitted_": Bool(), "columns_": NAMES, "cat_cols_": NAMES,
        "num_cols_": NAMES, "medians_": VECTOR, "means_": VECTOR, "scales_": VECTOR, "ind_cols_": NAMES,
        "levels_": LEVELS, "has_other_": FLAGS, "has_missing_": FLAGS, "_keep_cat": Array("b", (1,)),
        "cardinalities": List(Int(2, 1 << 24), MAX_COLUMNS), "n_numeric": Int(0, 1 << 24), "feature_names": NAMES,
    }, check=_check_preprocessor),
    P + "preprocess:CategoryAligner": ObjectSpec({
        "columns_": NAMES, "cat_cols_": NAMES, "levels_": LEVELS, "names_": NAMES}, check=_check_aligner),
    P + "calibration:Calibrator": ObjectSpec({
        "method": Str(choices=("platt", "temperature", "isotonic", "none")), "a": Float(-1e6, 1e6),
        "b": Float(-1e6, 1e6), "_iso": NoneOr(Obj("sklearn.isotonic:IsotonicRegression")),
        "fitted_method": Str(choices=("platt", "temperature", "isotonic", "none"))}),
    P + "fusion_embed:EmbeddingReducer": ObjectSpec({
        "n_components": Int(0, MAX_WIDTH), "seed": Int(),
        "reducer_": NoneOr(Tuple(Obj("sklearn.preprocessing._data:StandardScaler"), Obj("sklearn.decomposition._pca:PCA")))},
        check=_check_reducer),
    # -- register families
    P + "tabular:LogRegFamily": ObjectSpec({
        "params": PARAMS, "pre_": Obj(P + "preprocess:TabularPreprocessor"),
        "model_": Obj("sklearn.linear_model._logistic:LogisticRegression")}),
    P + "tabular:XGBoostFamily": ObjectSpec({**TREES, "model_": XGBoostModel()}, optional=frozenset({"keep_"})),
    P + "tabular:LightGBMFamily": ObjectSpec({**TREES, "model_": LightGBMModelFile()}, optional=frozenset({"keep_"})),
    P + "mlp:MLPFamily": ObjectSpec({**TORCH, "pre_": Obj(P + "preprocess:TabularPreprocessor"),
                                     "hidden_": Int(1, MAX_WIDTH)}, extra=WEIGHTS),
    # -- image and fusion families
    P + "image:TimmCNN": ObjectSpec({**IMAGE, "prevalence_": PROB, "aggregate_": Str(choices=("mean", "max")),
                                     "embed_dim_": Int(0, 1 << 20)}, optional=frozenset({"embed_dim_"}), extra=WEIGHTS),
    **{P + f"fusion_nets:{c}": ObjectSpec(dict(FUSION), extra=WEIGHTS)
       for c in ("JointConcatFamily", "GatedFamily", "FiLMFamily", "AttentionFamily")},
    P + "fusion_late:LateAverageFamily": ObjectSpec({
        "params": PARAMS, "scale": Str(choices=("prob", "logit")), "weight": NoneOr(Float(0.0, 1.0)),
        "sources_": List(Str(NAME), MAX_TOKENS), "prior_": PROB}),
    P + "fusion_late:LateStackingFamily": ObjectSpec({
        "params": PARAMS, "C": Float(1e-12, 1e12), "class_weight": Str(choices=("none", "balanced")),
        "sources_": List(Str(NAME), MAX_TOKENS), "prior_": PROB,
        "models_": Pairs(Tuple(of=Int(0, MAX_TOKENS), max_len=MAX_TOKENS),
                         Obj("sklearn.linear_model._logistic:LogisticRegression")),
        "coef_": NoneOr(VECTOR)}),
    P + "fusion_embed:EmbedXGBoostFamily": ObjectSpec(
        {**EMBED, "model_": Obj(P + "tabular:XGBoostFamily")}, optional=frozenset({"pretrained_"}),
        extra=Record(encoder=_file("weights/", r"\.safetensors"), stats=List(Float(-1e3, 1e3), length=2))),
    P + "fusion_embed:EmbedLightGBMFamily": ObjectSpec(
        {**EMBED, "model_": Obj(P + "tabular:LightGBMFamily")}, optional=frozenset({"pretrained_"}),
        extra=Record(encoder=_file("weights/", r"\.safetensors"), stats=List(Float(-1e3, 1e3), length=2))),
    # -- scikit-learn estimators (fields of this and nearby versions)
    "sklearn.linear_model._logistic:LogisticRegression": ObjectSpec({
        **SKLEARN_COMMON, "penalty": NoneOr(Str(32)), "C": Float(0.0, 1e12), "l1_ratio": NoneOr(Float(0.0, 1.0)),
        "dual": Bool(), "tol": Float(0.0, 1e6), "fit_intercept": Bool(), "intercept_scaling": Float(-1e6, 1e6),
        "class_weight": OneOf(NoneOr(Str(32)), Pairs(OneOf(Int(), Float()), Float(0.0, 1e12), max_len=8)),
        "random_state": NoneOr(Int()), "solver": Str(32), "max_iter": Int(0, BIG), "verbose": Int(0, 100),
        "warm_start": Bool(), "n_jobs": NoneOr(Int(-1, MAX_THREADS)), "multi_class": Str(32),
        "classes_": Array("iubf", (1,)), "n_iter_": Array("iu", (1,)), "coef_": Array("f", (2,)),
        "intercept_": Array("f", (1,))},
        optional=frozenset({"feature_names_in_", "multi_class", "l1_ratio", "penalty"}), check=_check_logreg),
    "sklearn.preprocessing._data:StandardScaler": ObjectSpec({
        **SKLEARN_COMMON, "with_mean": Bool(), "with_std": Bool(), "copy": Bool(),
        "n_samples_seen_": OneOf(Int(0, 1 << 62), Float(0.0, 1e18), Array("iuf", (1,))),
        "mean_": NoneOr(VECTOR), "var_": NoneOr(VECTOR), "scale_": NoneOr(VECTOR)},
        optional=frozenset({"feature_names_in_"}), check=_check_scaler),
    "sklearn.decomposition._pca:PCA": ObjectSpec({
        **SKLEARN_COMMON, "n_components": NoneOr(OneOf(Int(0, MAX_WIDTH), Float(0.0, 1.0), Str(16))),
        "copy": Bool(), "whiten": Bool(), "svd_solver": Str(32), "tol": Float(0.0, 1e6),
        "iterated_power": OneOf(Int(0, 10 ** 4), Str(16)), "n_oversamples": Int(0, 10 ** 6),
        "power_iteration_normalizer": Str(16), "random_state": NoneOr(Int()), "_fit_svd_solver": Str(32),
        "mean_": VECTOR, "noise_variance_": Float(-1e300, 1e300), "n_samples_": Int(0, 1 << 62),
        "n_components_": Int(0, MAX_WIDTH), "components_": Array("f", (2,)), "explained_variance_": VECTOR,
        "explained_variance_ratio_": VECTOR, "singular_values_": VECTOR},
        optional=frozenset({"feature_names_in_", "n_oversamples", "power_iteration_normalizer", "_fit_svd_solver"}),
        check=_check_pca),
    "sklearn.isotonic:IsotonicRegression": ObjectSpec({
        **SKLEARN_COMMON, "y_min": NoneOr(Float()), "y_max": NoneOr(Float()),
        "increasing": OneOf(Bool(), Str(8, choices=("auto",))), "out_of_bounds": Str(choices=("nan", "clip", "raise")),
        "increasing_": Bool(), "X_min_": Float(), "X_max_": Float(), "X_thresholds_": VECTOR, "y_thresholds_": VECTOR},
        optional=frozenset({"feature_names_in_", "n_features_in_"}), check=_check_isotonic, after=_build_isotonic),
}

# The family each exportable class is (``register_family``'s names), known without importing the class:
# a component's members are checked against it before any module (PyTorch's, for a network) is imported.
FAMILY_CLASSES: dict[str, str] = {
    "logreg": P + "tabular:LogRegFamily", "xgboost": P + "tabular:XGBoostFamily",
    "lightgbm": P + "tabular:LightGBMFamily", "mlp": P + "mlp:MLPFamily", "timm_cnn": P + "image:TimmCNN",
    "late_average": P + "fusion_late:LateAverageFamily", "late_stacking": P + "fusion_late:LateStackingFamily",
    "embed_xgboost": P + "fusion_embed:EmbedXGBoostFamily", "embed_lightgbm": P + "fusion_embed:EmbedLightGBMFamily",
    "joint_concat": P + "fusion_nets:JointConcatFamily", "gated": P + "fusion_nets:GatedFamily",
    "film": P + "fusion_nets:FiLMFamily", "attention": P + "fusion_nets:AttentionFamily",
}

# Parameters that size a network or a batch: (low, high) when present in a family's ``params``.
PARAM_BOUNDS: dict[str, tuple[int, int]] = {
    "hidden": (1, MAX_WIDTH), "tab_hidden": (1, MAX_WIDTH), "fusion_dim": (1, MAX_WIDTH),
    "embed_dim": (1, MAX_WIDTH), "tab_embed_dim": (1, MAX_WIDTH), "n_components": (0, MAX_WIDTH),
    "n_layers": (0, MAX_LAYERS), "tab_layers": (0, MAX_LAYERS), "n_tab_tokens": (1, MAX_TOKENS),
    "n_heads": (1, MAX_TOKENS), "film_stage": (1, 8), "batch_size": (0, MAX_BATCH),
    "eval_batch_size": (1, MAX_BATCH), "register_epochs": (0, 10 ** 6),
}


def check_params(cls: type, params: dict, where: str) -> None:
    """A family's ``params``: names and choices it declares (``check_param_sizes`` comes first, before the class's
    module is imported)."""
    from benchmark.errors import UserError

    try:
        cls.check_params(params, where)
    except UserError as exc:
        raise BundleFormatError(str(exc)) from None


def check_param_sizes(params: dict, where: str) -> None:
    """The sizes in ``PARAM_BOUNDS`` and the architecture names of a family's ``params``."""
    for key, (lo, hi) in PARAM_BOUNDS.items():
        v = params.get(key)
        if v is None:
            continue
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v != int(v) or not lo <= v <= hi:
            raise BundleFormatError(f"{where}.{key}: {v!r} is not a whole number in [{lo}, {hi}]")
    for key in ("arch", "encoder"):
        v = params.get(key)
        if v is not None and not (isinstance(v, str) and re.fullmatch(ARCH, v)):
            raise BundleFormatError(f"{where}.{key}: {str(v)[:40]!r} is not an architecture name")
