"""Typed, bounded fields: how each value of a bundle's model tree is read.

A bundle's ``model.json`` is a JSON tree (``codec``). Nothing in it is trusted: every value is
read through a *field*, which knows the node shapes it accepts, checks types and bounds, and
decodes only then (arrays, objects and tree files through the reader)::

    Int(0, 100).read(reader, 7, "c0.m1.seed_")            # 7
    Float(0, 1).read(reader, 1.5, "c0.calibrator.a")      # BundleFormatError: ... above 1
    NoneOr(Str(64)).read(reader, None, "x")                 # None

``field_specs`` lists, per class, the fields an object of that class may have.
"""

from __future__ import annotations

import math
import re
from typing import Any

import numpy as np

from benchmark.export.limits import (MAX_ARRAY_DIMS, MAX_LIST_ARRAY, MAX_STRING, BundleFormatError,
                                     check_count)

_INT_LIMIT = 1 << 62


def node_kind(node: Any) -> str:
    """'null', 'bool', 'int', 'float', 'str', 'list' or the tag of a tagged object (``__array__``...)."""
    if node is None:
        return "null"
    if isinstance(node, bool):
        return "bool"
    if isinstance(node, int):
        return "int"
    if isinstance(node, float):
        return "float"
    if isinstance(node, str):
        return "str"
    if isinstance(node, list):
        return "list"
    if isinstance(node, dict) and node:
        tags = [k for k in node if isinstance(k, str) and k.startswith("__") and k.endswith("__")]
        if len(tags) == 1:
            return tags[0]
    return "?"


# the keys each tagged node has (exactly)
NODE_KEYS = {
    "__float__": {"__float__"}, "__array__": {"__array__"}, "__list_array__": {"__list_array__", "shape", "dtype"},
    "__tuple__": {"__tuple__"}, "__map__": {"__map__"}, "__pairs__": {"__pairs__"}, "__device__": {"__device__"},
    "__tensor__": {"__tensor__"}, "__xgboost__": {"__xgboost__"},
    "__lightgbm__": {"__lightgbm__", "best_iteration"}, "__object__": {"__object__", "state", "extra"},
}


def check_node(node: Any, kind: str, where: str) -> None:
    """BundleFormatError when a tagged node has keys its tag does not allow."""
    if kind in NODE_KEYS:
        extra = set(node) - NODE_KEYS[kind]
        required = NODE_KEYS[kind] - {"extra", "best_iteration"}
        if extra or not required <= set(node):
            raise BundleFormatError(f"{where}: a {kind} node with the keys {sorted(map(str, node))[:5]}")


class Field:
    """A value of one type; ``read`` checks the node and returns the decoded value."""

    kinds: tuple[str, ...] = ()
    label = "a value"

    def accepts(self, node: Any) -> bool:
        return node_kind(node) in self.kinds

    def read(self, reader, node: Any, where: str) -> Any:
        if not self.accepts(node):
            raise BundleFormatError(f"{where}: expected {self.label}, found {describe(node)}")
        return self.decode(reader, node, where)

    def decode(self, reader, node: Any, where: str) -> Any:  # pragma: no cover - interface
        raise NotImplementedError


def describe(node: Any) -> str:
    kind = node_kind(node)
    if kind in ("int", "float", "bool"):
        return f"{kind} {node!r}"[:60]
    if kind == "str":
        return f"the text {node[:40]!r}"
    return {"null": "null", "list": "a list", "?": "an unknown node"}.get(kind, f"a {kind} node")


class Any_(Field):
    """Plain JSON-like values (numbers, text, booleans, null, lists and maps of them): kept as data."""

    label = "a plain value"

    def accepts(self, node: Any) -> bool:
        return node_kind(node) in ("null", "bool", "int", "float", "str", "list", "__float__", "__map__", "__tuple__")

    def decode(self, reader, node: Any, where: str) -> Any:
        kind = node_kind(node)
        if kind == "str":
            return Str().decode(reader, node, where)
        if kind in ("int", "float", "__float__"):
            return Float(nan=True).decode(reader, node, where) if kind != "int" else Int().decode(reader, node, where)
        if kind == "list":
            return [self.read(reader, v, f"{where}[{i}]") for i, v in enumerate(node)]
        if kind == "__tuple__":
            return tuple(self.read(reader, v, f"{where}[{i}]") for i, v in enumerate(_items(node, "__tuple__", where)))
        if kind == "__map__":
            return Map(self).decode(reader, node, where)
        return node


class Bool(Field):
    kinds, label = ("bool",), "true or false"

    def decode(self, reader, node, where):
        return bool(node)


class Int(Field):
    kinds, label = ("int",), "a whole number"

    def __init__(self, lo: int = -_INT_LIMIT, hi: int = _INT_LIMIT) -> None:
        self.lo, self.hi = lo, hi

    def decode(self, reader, node, where):
        if not self.lo <= node <= self.hi:
            raise BundleFormatError(f"{where}: {node} is outside [{self.lo}, {self.hi}]")
        return int(node)


class Float(Field):
    """A number (an int is taken too); ``nan``: NaN and infinities allowed (else refused)."""

    kinds, label = ("int", "float", "__float__"), "a number"

    def __init__(self, lo: float = -math.inf, hi: float = math.inf, *, nan: bool = False) -> None:
        self.lo, self.hi, self.nan = lo, hi, nan

    def decode(self, reader, node, where):
        if isinstance(node, dict):
            check_node(node, "__float__", where)
            text = node["__float__"]
            if not isinstance(text, str) or text.lower().lstrip("+-") not in ("nan", "inf", "infinity"):
                raise BundleFormatError(f"{where}: {str(text)[:20]!r} is not nan or inf")
            v = float(text)
        else:
            v = float(node)
        if not math.isfinite(v):
            if not self.nan:
                raise BundleFormatError(f"{where}: {v} where a finite number is needed")
            return v
        if not self.lo <= v <= self.hi:
            raise BundleFormatError(f"{where}: {v:g} is outside [{self.lo:g}, {self.hi:g}]")
        return v


class Str(Field):
    kinds, label = ("str",), "text"

    def __init__(self, max_len: int = MAX_STRING, *, choices: tuple | None = None, pattern: str | None = None) -> None:
        self.max_len, self.choices = max_len, choices
        self.pattern = re.compile(pattern) if pattern else None

    def decode(self, reader, node, where):
        if len(node) > self.max_len:
            raise BundleFormatError(f"{where}: text of {len(node):,} characters, above the limit of {self.max_len:,}")
        if self.choices is not None and node not in self.choices:
            raise BundleFormatError(f"{where}: {node[:40]!r} is not one of {list(self.choices)}")
        if self.pattern is not None and not self.pattern.fullmatch(node):
            raise BundleFormatError(f"{where}: {node[:40]!r} is not a valid value here")
        return node


class NoneOr(Field):
    label = "null or a value"

    def __init__(self, inner: Field) -> None:
        self.inner = inner
        self.label = f"null or {inner.label}"

    def accepts(self, node):
        return node is None or self.inner.accepts(node)

    def decode(self, reader, node, where):
        return None if node is None else self.inner.read(reader, node, where)


class OneOf(Field):
    """The first of ``options`` that accepts the node's shape."""

    def __init__(self, *options: Field) -> None:
        self.options = options
        self.label = " or ".join(o.label for o in options)

    def accepts(self, node):
        return any(o.accepts(node) for o in self.options)

    def decode(self, reader, node, where):
        return next(o for o in self.options if o.accepts(node)).read(reader, node, where)


def _items(node: dict, tag: str, where: str) -> list:
    check_node(node, tag, where)
    items = node[tag]
    if not isinstance(items, list):
        raise BundleFormatError(f"{where}: {tag} holds {describe(items)}, not a list")
    return items


class List(Field):
    kinds, label = ("list",), "a list"

    def __init__(self, item: Field, max_len: int = MAX_LIST_ARRAY, *, length: int | None = None) -> None:
        self.item, self.max_len, self.length = item, max_len, length

    def decode(self, reader, node, where):
        check_count(len(node), self.max_len, f"{where} (a list)")
        if self.length is not None and len(node) != self.length:
            raise BundleFormatError(f"{where}: a list of {len(node)} values where {self.length} are needed")
        return [self.item.read(reader, v, f"{where}[{i}]") for i, v in enumerate(node)]


class Tuple(Field):
    """A ``__tuple__`` node: a fixed sequence of fields, or (``of``) any number of one field."""

    kinds, label = ("__tuple__",), "a tuple"

    def __init__(self, *items: Field, of: Field | None = None, max_len: int = 1024) -> None:
        self.items, self.of, self.max_len = items, of, max_len

    def decode(self, reader, node, where):
        items = _items(node, "__tuple__", where)
        if self.of is not None:
            check_count(len(items), self.max_len, f"{where} (a tuple)")
            return tuple(self.of.read(reader, v, f"{where}[{i}]") for i, v in enumerate(items))
        if len(items) != len(self.items):
            raise BundleFormatError(f"{where}: a tuple of {len(items)} values where {len(self.items)} are needed")
        return tuple(f.read(reader, v, f"{where}[{i}]") for i, (f, v) in enumerate(zip(self.items, items)))


class Map(Field):
    """A ``__map__`` node (text keys) whose values are all read with ``value``."""

    kinds, label = ("__map__",), "a map"

    def __init__(self, value: Field, *, max_len: int = MAX_LIST_ARRAY, key: Field | None = None) -> None:
        self.value, self.max_len, self.key = value, max_len, key or Str()

    def decode(self, reader, node, where):
        check_node(node, "__map__", where)
        items = node["__map__"]
        if not isinstance(items, dict):
            raise BundleFormatError(f"{where}: __map__ holds {describe(items)}, not an object")
        check_count(len(items), self.max_len, f"{where} (a map)")
        return {self.key.read(reader, k, f"{where} key"): self.value.read(reader, v, f"{where}.{k[:40]}")
                for k, v in items.items()}


class Pairs(Field):
    """A ``__pairs__`` node: a dict with keys that are not plain text (e.g. tuples of ints)."""

    kinds, label = ("__pairs__",), "a list of key-value pairs"

    def __init__(self, key: Field, value: Field, max_len: int = 4096) -> None:
        self.key, self.value, self.max_len = key, value, max_len

    def decode(self, reader, node, where):
        items = _items(node, "__pairs__", where)
        check_count(len(items), self.max_len, f"{where} (pairs)")
        out = {}
        for i, pair in enumerate(items):
            if not isinstance(pair, list) or len(pair) != 2:
                raise BundleFormatError(f"{where}[{i}]: a pair must be a list of two")
            key = self.key.read(reader, pair[0], f"{where}[{i}] key")
            out[tuple(key) if isinstance(key, list) else key] = self.value.read(reader, pair[1], f"{where}[{i}]")
        return out


_TEXT_DTYPE = re.compile(r"O|<U(\d{1,12})|\|S(\d{1,12})")


class Array(Field):
    """A numeric array (``__array__``, from arrays.safetensors) or a text array (``__list_array__``).

    ``kinds``: NumPy dtype kinds allowed ('f' float, 'i'/'u' integer, 'b' bool; 'U'/'O' text);
    ``ndim``: the allowed numbers of dimensions.
    """

    label = "an array"

    def __init__(self, dtypes: str = "fiub", ndim: tuple[int, ...] = (0, 1, 2), *, text: bool = False,
                 max_size: int = 1 << 31, finite: bool = True) -> None:
        self.dtypes, self.ndim, self.text, self.max_size, self.finite = dtypes, ndim, text, max_size, finite
        self.kinds = ("__array__", "__list_array__") if text else ("__array__",)

    def decode(self, reader, node, where):
        if "__list_array__" in node:
            a = text_array(node, where)
        else:
            check_node(node, "__array__", where)
            a = reader.array(node["__array__"], where)
        if a.ndim not in self.ndim:
            raise BundleFormatError(f"{where}: an array of {a.ndim} dimensions where {self.ndim} are allowed")
        if a.dtype.kind not in self.dtypes + ("UO" if self.text else ""):
            raise BundleFormatError(f"{where}: an array of dtype {a.dtype} is not allowed here")
        if a.size > self.max_size:
            raise BundleFormatError(f"{where}: an array of {a.size:,} values, above the limit of {self.max_size:,}")
        if self.finite and a.dtype.kind == "f" and not np.isfinite(a).all():
            raise BundleFormatError(f"{where}: an array holding NaN or infinite values")
        return a


def text_array(node: dict, where: str) -> np.ndarray:
    """A ``__list_array__`` node as a NumPy array; its dtype, shape and strings checked before allocation."""
    check_node(node, "__list_array__", where)
    values, shape, dtype = node["__list_array__"], node["shape"], node["dtype"]
    if not isinstance(values, list):
        raise BundleFormatError(f"{where}: __list_array__ holds {describe(values)}, not a list")
    check_count(len(values), MAX_LIST_ARRAY, f"{where} (a text array)")
    m = _TEXT_DTYPE.fullmatch(dtype) if isinstance(dtype, str) else None
    if m is None:
        raise BundleFormatError(f"{where}: text array dtype {str(dtype)[:20]!r} is not allowed (O, <Un or |Sn)")
    width = int(m.group(1) or m.group(2) or 0)
    if width > MAX_STRING:
        raise BundleFormatError(f"{where}: text array dtype {dtype} holds strings of up to {width:,} characters, "
                                f"above the limit of {MAX_STRING:,}")
    if (not isinstance(shape, list) or len(shape) > MAX_ARRAY_DIMS
            or not all(isinstance(d, int) and not isinstance(d, bool) and 0 <= d <= MAX_LIST_ARRAY for d in shape)):
        raise BundleFormatError(f"{where}: text array shape {str(shape)[:40]} is not a short list of sizes")
    if int(np.prod(shape, dtype=np.int64)) != len(values):
        raise BundleFormatError(f"{where}: text array shape {shape} does not hold its {len(values)} values")
    for i, v in enumerate(values):
        kind = node_kind(v)
        if kind not in ("null", "bool", "int", "float", "str"):
            raise BundleFormatError(f"{where}[{i}]: {describe(v)} in a text array")
        if kind == "str" and len(v) > (width or MAX_STRING):
            raise BundleFormatError(f"{where}[{i}]: a string longer than the array's dtype {dtype}")
    return np.array(values, dtype=object if dtype == "O" else np.dtype(dtype)).reshape(shape)


class Device(Field):
    kinds, label = ("__device__",), "a device"

    def decode(self, reader, node, where):
        check_node(node, "__device__", where)
        Str(16, pattern=r"cpu|cuda(:\d{1,2})?|mps").read(reader, node["__device__"], where)
        return reader.device   # a restored model runs where it is loaded (its bundle_restore makes it a torch.device)


class Ignored(Field):
    """A field written by earlier versions or set again on restore: its value is not read."""

    label = "any value"

    def accepts(self, node):
        return True

    def decode(self, reader, node, where):
        return None
