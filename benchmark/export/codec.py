"""Fitted models as data: a JSON tree, arrays in safetensors, native tree files; never pickle.

A fitted family (and what it holds: preprocessors, calibrators, scikit-learn estimators,
XGBoost / LightGBM models, torch networks) is written as a JSON tree whose leaves are
plain values or references to arrays and files::

    w = Writer()
    node = w.encode(model, "c0.m1")        # JSON-able; arrays and files collected in w
    w.arrays   # {"c0.m1/pre_/medians_": np.ndarray, ...}   -> arrays.safetensors
    w.files    # {"trees/c0.m1.model_.ubj": bytes, "weights/c0.m1.safetensors": bytes, ...}
    model2 = Reader(w.arrays, w.files).decode(node)

Reading runs no code from the bundle. An object node names its class; only classes of this
package (``benchmark.*``) and the scikit-learn estimators in ``SKLEARN_CLASSES`` are
rebuilt, without calling their constructor: the class is looked up, an empty instance is
made with ``cls.__new__`` and its attributes are set from the decoded state. Torch weights
are safetensors (tensors only), XGBoost models UBJSON, LightGBM models LightGBM's text
format. Anything else (a lambda, an open file, an unknown class) is refused when writing,
with the attribute path, so a model that cannot be exported says so at export time.

Hooks: a class may define ``bundle_skip`` (attribute names not written, e.g. training
history), ``bundle_extra(writer, path) -> dict`` (what it writes itself, e.g. torch
weights) and ``bundle_restore(reader, extra)`` (called after its attributes are set).
"""

from __future__ import annotations

import importlib
import math
from typing import Any

import numpy as np

# scikit-learn estimators a bundle may hold (their fitted attributes are arrays and plain values).
SKLEARN_CLASSES = {
    "sklearn.linear_model._logistic:LogisticRegression",
    "sklearn.preprocessing._data:StandardScaler",
    "sklearn.decomposition._pca:PCA",
    "sklearn.isotonic:IsotonicRegression",
}
PACKAGE = "benchmark."
_ISO_SKIP = ("f_",)   # IsotonicRegression's interpolator: rebuilt from its thresholds


class BundleFormatError(ValueError):
    """The bundle's model tree names something a bundle may not hold."""


def _class_name(obj: Any) -> str:
    return _class_name_of(type(obj))


def _class_name_of(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def _allowed(name: str) -> bool:
    return name.startswith(PACKAGE) or name in SKLEARN_CLASSES


class Writer:
    """Collects arrays and files while encoding an object tree (``encode``)."""

    def __init__(self) -> None:
        self.arrays: dict[str, np.ndarray] = {}
        self.files: dict[str, bytes] = {}

    def array(self, path: str, a: np.ndarray) -> dict:
        a = np.ascontiguousarray(a)
        if a.dtype.kind in "OUS":   # text / object arrays: a JSON list (category levels, names)
            return {"__list_array__": [self.encode(v, f"{path}[{i}]") for i, v in enumerate(a.ravel().tolist())],
                    "shape": list(a.shape), "dtype": a.dtype.str if a.dtype.kind != "O" else "O"}
        self.arrays[path] = a
        return {"__array__": path}

    def file(self, name: str, data: bytes) -> str:
        self.files[name] = bytes(data)
        return name

    def tensors(self, name: str, state: dict) -> str:
        """A torch state dict as one safetensors file ``weights/<name>.safetensors``."""
        from safetensors.torch import save

        flat = {k: v.detach().cpu().contiguous() for k, v in state.items()}
        return self.file(f"weights/{_safe(name)}.safetensors", save(flat))

    def encode(self, obj: Any, path: str) -> Any:
        if obj is None or isinstance(obj, (bool, str)):
            return obj
        if isinstance(obj, (int, np.integer)) and not isinstance(obj, bool):
            return int(obj)
        if isinstance(obj, np.bool_):
            return bool(obj)
        if isinstance(obj, (float, np.floating)):
            v = float(obj)
            return v if math.isfinite(v) else {"__float__": repr(v)}
        if isinstance(obj, np.ndarray):
            return self.array(path, obj)
        if isinstance(obj, list):
            return [self.encode(v, f"{path}[{i}]") for i, v in enumerate(obj)]
        if isinstance(obj, tuple):
            return {"__tuple__": [self.encode(v, f"{path}[{i}]") for i, v in enumerate(obj)]}
        if isinstance(obj, dict):
            if all(isinstance(k, str) and not k.startswith("__") for k in obj):
                return {"__map__": {k: self.encode(v, f"{path}.{k}") for k, v in obj.items()}}
            return {"__pairs__": [[self.encode(k, f"{path}.key{i}"), self.encode(v, f"{path}.{i}")]
                                  for i, (k, v) in enumerate(obj.items())]}
        mod = type(obj).__module__
        if mod.startswith("torch"):
            import torch

            if isinstance(obj, torch.device):
                return {"__device__": str(obj)}
            if isinstance(obj, torch.Tensor):
                return {"__tensor__": self.array(path, obj.detach().cpu().numpy())}
            raise BundleFormatError(f"{path}: a {type(obj).__name__} cannot go into a bundle "
                                    "(torch networks are written by their family's bundle_extra)")
        if mod.startswith("xgboost"):
            raw = obj.get_booster().save_raw("ubj")
            return {"__xgboost__": self.file(f"trees/{_safe(path)}.ubj", raw)}
        if mod.startswith("lightgbm") or isinstance(obj, LightGBMModel):   # a restored one exports again
            booster = getattr(obj, "booster_", obj)
            text = booster.model_to_string(num_iteration=-1)
            best = getattr(obj, "best_iteration_", None)
            return {"__lightgbm__": self.file(f"trees/{_safe(path)}.txt", text.encode()),
                    "best_iteration": None if best is None else int(best)}
        name = _class_name(obj)
        if not _allowed(name) or not hasattr(obj, "__dict__"):
            raise BundleFormatError(f"{path}: objects of class {name} cannot go into a bundle "
                                    f"(only {PACKAGE}* classes and {', '.join(sorted(SKLEARN_CLASSES))})")
        skip = set(getattr(obj, "bundle_skip", ())) | (set(_ISO_SKIP) if name.endswith(":IsotonicRegression") else set())
        state = {k: v for k, v in vars(obj).items() if k not in skip}
        if callable(getattr(obj, "bundle_extra", None)):
            extra = obj.bundle_extra(self, path)
        else:
            extra = None
        node = {"__object__": name, "state": {"__map__": {k: self.encode(v, f"{path}.{k}") for k, v in state.items()}}}
        if extra is not None:
            node["extra"] = self.encode(extra, f"{path}.extra")
        return node


class Reader:
    """Rebuilds an encoded tree from the bundle's arrays and files (``decode``)."""

    def __init__(self, arrays: dict[str, np.ndarray], files: dict[str, bytes], device: str = "cpu") -> None:
        self.arrays, self.files, self.device = arrays, files, device

    def file(self, name: str) -> bytes:
        if name not in self.files:
            raise BundleFormatError(f"the model tree names {name}, which the bundle does not list")
        return self.files[name]

    def tensors(self, name: str) -> dict:
        from safetensors.torch import load

        return load(self.file(name))

    def decode(self, node: Any) -> Any:
        if node is None or isinstance(node, (bool, int, float, str)):
            return node
        if isinstance(node, list):
            return [self.decode(v) for v in node]
        if not isinstance(node, dict) or len(node) == 0:
            raise BundleFormatError(f"unexpected node in the model tree: {str(node)[:80]}")
        if "__float__" in node:
            return float(node["__float__"])
        if "__array__" in node:
            key = node["__array__"]
            if key not in self.arrays:
                raise BundleFormatError(f"the model tree names array {key}, which arrays.safetensors lacks")
            return self.arrays[key]
        if "__list_array__" in node:
            values = [self.decode(v) for v in node["__list_array__"]]
            dtype = object if node["dtype"] == "O" else np.dtype(node["dtype"])
            return np.array(values, dtype=dtype).reshape(node["shape"])
        if "__tuple__" in node:
            return tuple(self.decode(v) for v in node["__tuple__"])
        if "__map__" in node:
            return {k: self.decode(v) for k, v in node["__map__"].items()}
        if "__pairs__" in node:
            return {_hashable(self.decode(k)): self.decode(v) for k, v in node["__pairs__"]}
        if "__device__" in node:
            import torch

            return torch.device(node["__device__"])
        if "__tensor__" in node:
            import torch

            return torch.from_numpy(np.array(self.decode(node["__tensor__"])))
        if "__xgboost__" in node:
            import xgboost as xgb

            model = xgb.XGBClassifier()
            model.load_model(bytearray(self.file(node["__xgboost__"])))
            return model
        if "__lightgbm__" in node:
            return LightGBMModel(self.file(node["__lightgbm__"]).decode(), node.get("best_iteration"))
        if "__object__" in node:
            return self._object(node)
        raise BundleFormatError(f"unknown node in the model tree: {sorted(node)[:3]}")

    def _object(self, node: dict) -> Any:
        name = str(node["__object__"])
        if not _allowed(name):
            raise BundleFormatError(f"the model tree names class {name}; a bundle may hold only {PACKAGE}* classes "
                                    "and the listed scikit-learn estimators")
        mod_name, _, qual = name.partition(":")
        try:
            obj_cls = importlib.import_module(mod_name)
            for part in qual.split("."):
                obj_cls = getattr(obj_cls, part)
        except (ImportError, AttributeError):
            raise BundleFormatError(f"class {name} named by the bundle does not exist in this installation "
                                    "(a different package version?)") from None
        if not isinstance(obj_cls, type):
            raise BundleFormatError(f"{name} named by the bundle is not a class")
        if _class_name_of(obj_cls) != name:   # e.g. "benchmark.x:np.ndarray": a foreign class through a package module
            raise BundleFormatError(f"the model tree names class {name}, which is {_class_name_of(obj_cls)}; "
                                    f"a bundle may hold only {PACKAGE}* classes and the listed scikit-learn estimators")
        obj = obj_cls.__new__(obj_cls)
        obj.__dict__.update(self.decode(node["state"]))
        if name.endswith(":IsotonicRegression"):
            obj._build_f(obj.X_thresholds_, obj.y_thresholds_)
        if callable(getattr(obj, "bundle_restore", None)):
            obj.bundle_restore(self, self.decode(node.get("extra")))
        return obj


class LightGBMModel:
    """A LightGBM booster read from its text format, with ``LGBMClassifier``'s ``predict_proba``.

    ``best_iteration`` (1-based, as LightGBM's ``best_iteration_``) is used when no
    ``num_iteration`` is given, as the classifier does.
    """

    def __init__(self, text: str, best_iteration: int | None) -> None:
        import lightgbm as lgb

        self.booster_ = lgb.Booster(model_str=text)
        self.best_iteration_ = best_iteration

    def predict_proba(self, X, num_iteration: int | None = None) -> np.ndarray:
        if num_iteration is None and self.best_iteration_:
            num_iteration = self.best_iteration_
        p = np.asarray(self.booster_.predict(X, num_iteration=num_iteration), dtype=np.float64)
        return np.column_stack([1.0 - p, p])


def _hashable(v: Any) -> Any:
    return tuple(_hashable(x) for x in v) if isinstance(v, (list, tuple)) else v


def _safe(path: str) -> str:
    """A file-name-safe form of an attribute path."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in path)
