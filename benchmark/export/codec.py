"""Fitted models as data: a JSON tree, arrays in safetensors, native tree files; never pickle.

A fitted family (and what it holds: preprocessors, calibrators, scikit-learn estimators,
XGBoost / LightGBM models, torch networks) is written as a JSON tree whose leaves are
plain values or references to arrays and files::

    w = Writer()
    node = w.encode(model, "c0.m1")        # JSON-able; arrays and files collected in w
    w.arrays   # {"c0.m1/pre_/medians_": np.ndarray, ...}   -> arrays.safetensors
    w.files    # {"trees/c0.m1.model_.ubj": bytes, "weights/c0.m1.safetensors": bytes, ...}
    model2 = Reader(w.arrays, w.files).decode(node)

Reading a bundle runs no code from it and trusts nothing in it. An object node names its
class; only the classes listed in ``field_specs.CLASSES`` are rebuilt, from that list's
fields only: an empty instance is made with ``cls.__new__`` and each listed field is read
with its type and bounds (``fields``); a key the list does not name is refused, so a bundle
can never set a method or hook (``bundle_restore``) or any other attribute. Torch weights
are safetensors files whose header is compared with the network the settings describe
(built first on PyTorch's ``meta`` device, which allocates nothing) before the network is
built and loaded; XGBoost models (UBJSON) and LightGBM models (text) are checked by
``trees`` before the library reads them. Anything else (a lambda, an open file, an
unlisted class or attribute) is refused when writing, with the attribute path, so a model
that cannot be exported says so at export time.

Hooks: a class may define ``bundle_skip`` (attribute names not written, e.g. training
history), ``bundle_extra(writer, path) -> dict`` (what it writes itself, e.g. torch
weights; read back through the class's ``extra`` field) and ``bundle_restore(reader,
extra)`` (looked up on the class, called after its fields are set).
"""

from __future__ import annotations

import importlib
import math
from typing import Any, Callable

import numpy as np

from benchmark.export.field_specs import CLASSES, check_param_sizes, check_params
from benchmark.export.fields import Any_, Ignored, check_node, describe, node_kind
from benchmark.export.limits import MAX_TENSORS, BundleFormatError, check_count

PACKAGE = "benchmark."
_ISO_SKIP = ("f_",)   # IsotonicRegression's interpolator: rebuilt from its thresholds
_SAFETENSORS_DTYPES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1,
                       "BOOL": 1}

__all__ = ["BundleFormatError", "LightGBMModel", "Reader", "Writer", "safetensors_header"]


def _class_name(obj: Any) -> str:
    return _class_name_of(type(obj))


def _class_name_of(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


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
            from benchmark.export.trees import strip_lightgbm

            booster = getattr(obj, "booster_", obj)
            text = strip_lightgbm(booster.model_to_string(num_iteration=-1))
            best = getattr(obj, "best_iteration_", None)
            return {"__lightgbm__": self.file(f"trees/{_safe(path)}.txt", text.encode()),
                    "best_iteration": None if best is None else int(best)}
        return self._object(obj, path)

    def _object(self, obj: Any, path: str) -> dict:
        name = _class_name(obj)
        spec = CLASSES.get(name)
        if spec is None or not hasattr(obj, "__dict__"):
            raise BundleFormatError(f"{path}: objects of class {name} cannot go into a bundle (only the classes "
                                    "listed in benchmark/export/field_specs.py)")
        skip = set(getattr(obj, "bundle_skip", ())) | (set(_ISO_SKIP) if name.endswith(":IsotonicRegression") else set())
        state = {k: v for k, v in vars(obj).items() if k not in skip}
        unknown = [k for k in state if k not in spec.fields]
        if unknown:
            raise BundleFormatError(f"{path}.{unknown[0]}: attribute {unknown[0]!r} of {name} has no field in "
                                    "benchmark/export/field_specs.py; add it there (with its type and bounds)")
        extra = obj.bundle_extra(self, path) if callable(getattr(type(obj), "bundle_extra", None)) else None
        node = {"__object__": name, "state": {"__map__": {k: self.encode(v, f"{path}.{k}") for k, v in state.items()}}}
        if extra is not None:
            node["extra"] = self.encode(extra, f"{path}.extra")
        return node


class Reader:
    """Rebuilds an encoded tree from the bundle's arrays and files (``decode``), checking every node.

    ``arrays``: arrays.safetensors as loaded; ``files``: every other file the model tree may name
    (``weights/``, ``trees/``), as bytes already checked against the bundle's manifest.
    """

    def __init__(self, arrays: dict[str, np.ndarray], files: dict[str, bytes], device: str = "cpu") -> None:
        self.arrays, self.files, self.device = arrays, files, device

    # -- files and arrays the tree names

    def file(self, name: str, where: str = "the model tree") -> bytes:
        if not isinstance(name, str) or name not in self.files:
            raise BundleFormatError(f"{where} names the file {str(name)[:80]!r}, which the bundle does not list")
        return self.files[name]

    def array(self, key: Any, where: str) -> np.ndarray:
        if not isinstance(key, str) or key not in self.arrays:
            raise BundleFormatError(f"{where} names the array {str(key)[:80]!r}, which arrays.safetensors lacks")
        return self.arrays[key]

    def tensor_names(self, name: str, where: str = "the model tree") -> list[str]:
        return list(safetensors_header(self.file(name, where), name))

    def tensors(self, name: str, where: str = "the model tree") -> dict:
        from safetensors.torch import load

        data = self.file(name, where)
        safetensors_header(data, name)
        try:
            return load(data)
        except Exception as exc:  # noqa: BLE001 - safetensors raises its own error type
            raise BundleFormatError(f"{name}: not a readable safetensors file ({_first_line(exc)})") from None

    def network(self, build: Callable[[], Any], name: str, where: str):
        """``build()``'s network with the weights of ``name``, after checking on the meta device (nothing
        allocated) that the file holds exactly the network's tensors, with their shapes."""
        import torch

        header = safetensors_header(self.file(name, where), name)
        with torch.device("meta"), _ShapesOnly():
            expected = {k: tuple(v.shape) for k, v in build().state_dict().items()}
        if set(expected) != set(header):
            odd = sorted(set(expected) ^ set(header))[0]
            raise BundleFormatError(f"{name}: its tensors are not those of the network the bundle's settings "
                                    f"describe (e.g. {odd[:80]!r}); the bundle is damaged or was edited")
        for k, shape in expected.items():
            if tuple(header[k]["shape"]) != shape:
                raise BundleFormatError(f"{name}: tensor {k[:80]!r} has shape {header[k]['shape']}, the network "
                                        f"needs {list(shape)}")
        net = build()
        net.load_state_dict(self.tensors(name, where))
        return net

    def xgboost(self, name: str, where: str):
        import xgboost as xgb

        from benchmark.export.trees import check_xgboost

        data = self.file(name, where)
        check_xgboost(data, name)
        model = xgb.XGBClassifier()
        try:
            model.load_model(bytearray(data))
        except Exception as exc:  # noqa: BLE001 - XGBoostError and others
            raise BundleFormatError(f"{name}: XGBoost cannot read it ({_first_line(exc)})") from None
        return model

    def lightgbm(self, name: str, best_iteration: int | None, where: str) -> "LightGBMModel":
        from benchmark.export.trees import check_lightgbm

        try:
            text = self.file(name, where).decode("utf-8")
        except UnicodeDecodeError:
            raise BundleFormatError(f"{name}: not UTF-8 text") from None
        try:
            return LightGBMModel(check_lightgbm(text, name), best_iteration)
        except BundleFormatError:
            raise
        except Exception as exc:  # noqa: BLE001 - LightGBMError and others
            raise BundleFormatError(f"{name}: LightGBM cannot read it ({_first_line(exc)})") from None

    # -- the tree

    def decode(self, node: Any, where: str = "model") -> Any:
        """A node of any shape: objects through ``object``, plain values kept (types checked)."""
        if node_kind(node) == "__object__":
            return self.object(node, where)
        return Any_().read(self, node, where)

    def object(self, node: dict, where: str) -> Any:
        """An object of a listed class, rebuilt from its listed fields (``field_specs``)."""
        check_node(node, "__object__", where)
        name = node["__object__"]
        spec = CLASSES.get(name) if isinstance(name, str) else None
        if spec is None:
            raise BundleFormatError(f"{where}: the model tree names class {str(name)[:80]!r}; a bundle may hold only "
                                    "the classes listed in benchmark/export/field_specs.py")
        state = node["state"]
        if node_kind(state) != "__map__" or len(state) != 1 or not isinstance(state["__map__"], dict):
            raise BundleFormatError(f"{where}: the state of {name} is {describe(state)}, not a map of fields")
        state = state["__map__"]
        unknown = [k for k in state if k not in spec.fields]
        if unknown:
            raise BundleFormatError(f"{where}: {str(unknown[0])[:40]!r} is not a field of {name}; the bundle is refused")
        missing = [k for k in spec.fields if k not in state and k not in spec.optional]
        if missing:
            raise BundleFormatError(f"{where}: {name} lacks its field {missing[0]!r}")
        # every field is read and checked before the class's module is imported (PyTorch for a network)
        values = {key: fld.read(self, state[key], f"{where}.{key}") for key, fld in spec.fields.items()
                  if key in state and not isinstance(fld, Ignored)}
        if "params" in values:
            check_param_sizes(values["params"], f"{where}.params")
        extra = None
        if spec.extra is not None:
            if "extra" not in node:
                raise BundleFormatError(f"{where}: {name} needs its 'extra' entry (weights)")
            extra = spec.extra.read(self, node["extra"], f"{where}.extra")
            for ref in extra.values():   # weights files: their headers against their sizes, still without PyTorch
                if isinstance(ref, str) and ref.endswith(".safetensors"):
                    safetensors_header(self.file(ref, where), ref)
        elif "extra" in node:
            raise BundleFormatError(f"{where}: {name} takes no 'extra' entry")
        cls = class_of(name)
        obj = cls.__new__(cls)
        obj.__dict__.update(values)   # the listed fields only, each checked above
        if "params" in spec.fields:
            check_params(cls, obj.params, f"{where}.params")
        if spec.check is not None:
            spec.check(obj, where)
        if spec.after is not None:
            spec.after(obj)
        restore = getattr(cls, "bundle_restore", None)
        if spec.extra is not None:
            if not callable(restore):
                raise BundleFormatError(f"{where}: {name} cannot restore its weights in this installation")
            try:
                restore(obj, self, extra)
            except BundleFormatError:
                raise
            except Exception as exc:  # noqa: BLE001 - a network the settings cannot build
                from benchmark.errors import UserError

                if isinstance(exc, UserError):
                    raise BundleFormatError(f"{where}: {exc}") from None
                raise BundleFormatError(f"{where}: the network cannot be rebuilt ({_first_line(exc)})") from None
        return obj


def _ShapesOnly():
    """A torch function mode for building a network on the meta device: random normal initialisation is
    skipped (its meta implementation imports ``torch._dynamo``, some 150 MB; the values are never read)."""
    from torch.overrides import TorchFunctionMode

    class ShapesOnly(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            if getattr(func, "__name__", "") in ("normal_", "kaiming_normal_"):
                return args[0] if args else (kwargs or {}).get("tensor", (kwargs or {}).get("self"))
            return func(*args, **(kwargs or {}))

    return ShapesOnly()


def class_of(name: str) -> type:
    """The class of a name listed in ``field_specs.CLASSES`` (never a name taken from elsewhere)."""
    mod_name, _, qual = name.partition(":")
    try:
        cls = getattr(importlib.import_module(mod_name), qual)
    except (ImportError, AttributeError):
        raise BundleFormatError(f"class {name} named by the bundle does not exist in this installation "
                                "(a different package version?)") from None
    if not isinstance(cls, type) or _class_name_of(cls) != name:
        raise BundleFormatError(f"{name} named by the bundle is not that class in this installation")
    return cls


def safetensors_header(data: bytes, name: str) -> dict:
    """The tensors a safetensors file declares ({name: {dtype, shape, data_offsets}}), checked against its
    size: every tensor's bytes inside the file, as many as its shape says, none overlapping."""
    from benchmark.export.safe_json import loads

    if len(data) < 8:
        raise BundleFormatError(f"{name}: not a safetensors file (shorter than its header)")
    n = int.from_bytes(data[:8], "little")
    if n > len(data) - 8 or n > 100 << 20:
        raise BundleFormatError(f"{name}: its header declares {n:,} bytes, more than the file holds")
    header = loads(bytes(data[8:8 + n]), f"{name} (header)", max_depth=4)
    if not isinstance(header, dict):
        raise BundleFormatError(f"{name}: its header is not an object")
    header.pop("__metadata__", None)
    check_count(len(header), MAX_TENSORS, f"{name} (tensors)")
    body, spans = len(data) - 8 - n, []
    for key, info in header.items():
        ok = (isinstance(info, dict) and info.get("dtype") in _SAFETENSORS_DTYPES and isinstance(info.get("shape"), list)
              and all(isinstance(d, int) and not isinstance(d, bool) and 0 <= d < 1 << 40 for d in info["shape"])
              and isinstance(info.get("data_offsets"), list) and len(info["data_offsets"]) == 2
              and all(isinstance(o, int) and not isinstance(o, bool) for o in info["data_offsets"]))
        if not ok:
            raise BundleFormatError(f"{name}: tensor {str(key)[:60]!r} has a malformed entry")
        start, end = info["data_offsets"]
        size = math.prod(info["shape"]) * _SAFETENSORS_DTYPES[info["dtype"]]
        if not 0 <= start <= end <= body or end - start != size:
            raise BundleFormatError(f"{name}: tensor {str(key)[:60]!r} declares {size:,} bytes at {start:,}-{end:,} of "
                                    f"a {body:,}-byte body")
        spans.append((start, end))
    spans.sort()
    if any(b[0] < a[1] for a, b in zip(spans, spans[1:])):
        raise BundleFormatError(f"{name}: two tensors share bytes")
    return header


def _first_line(exc: BaseException) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return (lines[0] if lines else type(exc).__name__)[:160]


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


def _safe(path: str) -> str:
    """A file-name-safe form of an attribute path."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in path)
