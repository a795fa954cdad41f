"""A bounded UBJSON reader (XGBoost's model format), for checking a model before XGBoost loads it.

XGBoost's own loader sets aside what a file declares (a tree's ``num_nodes``, a container's
count) before it reads the values. ``parse`` reads the file itself, iteratively, checking
every count against the bytes that are left, so a 1 KB file cannot claim a billion values::

    model = parse(data, "trees/c0.m0.ubj")   # dicts, lists, str, int, float; typed arrays as NumPy
"""

from __future__ import annotations

import struct

import numpy as np

from benchmark.export.limits import BundleFormatError

MAX_DEPTH = 32
MAX_UNTYPED = 4_000_000      # values in untyped containers (each a Python object)

_FIXED = {b"i": (">i1", 1), b"U": (">u1", 1), b"I": (">i2", 2), b"l": (">i4", 4), b"L": (">i8", 8),
          b"d": (">f4", 4), b"D": (">f8", 8), b"C": ("S1", 1)}
_STRUCT = {b"i": ">b", b"U": ">B", b"I": ">h", b"l": ">i", b"L": ">q", b"d": ">f", b"D": ">d"}
_SCALARS = {b"Z": None, b"T": True, b"F": False}


class _Reader:
    def __init__(self, data: bytes, what: str) -> None:
        self.data, self.pos, self.what, self.untyped = memoryview(data), 0, what, 0

    def fail(self, why: str) -> BundleFormatError:
        return BundleFormatError(f"{self.what}: not a valid XGBoost model ({why} at byte {self.pos})")

    def take(self, n: int) -> memoryview:
        if n < 0 or self.pos + n > len(self.data):
            raise self.fail(f"{n:,} bytes declared, {len(self.data) - self.pos:,} left")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def marker(self) -> bytes:
        m = bytes(self.take(1))
        while m == b"N":   # no-op
            m = bytes(self.take(1))
        return m

    def number(self, m: bytes):
        dtype, size = _FIXED[m]
        raw = bytes(self.take(size))
        if m == b"C":
            return raw.decode("latin-1")
        return struct.unpack(_STRUCT[m], raw)[0]

    def length(self) -> int:
        m = self.marker()
        if m not in (b"i", b"U", b"I", b"l", b"L"):
            raise self.fail(f"a length with marker {m!r}")
        n = self.number(m)
        if n < 0 or n > len(self.data) - self.pos:
            raise self.fail(f"a length of {n:,} with {len(self.data) - self.pos:,} bytes left")
        return n

    def string(self) -> str:
        return bytes(self.take(self.length())).decode("utf-8", errors="replace")

    def value(self, m: bytes, depth: int):
        if m in _SCALARS:
            return _SCALARS[m]
        if m in _FIXED:
            return self.number(m)
        if m == b"S":
            return self.string()
        if m == b"H":   # high-precision number, as text
            text = self.string()
            if len(text) > 64:
                raise self.fail("a high-precision number longer than 64 characters")
            return text
        if m in (b"[", b"{"):
            if depth >= MAX_DEPTH:
                raise self.fail(f"containers nested deeper than {MAX_DEPTH}")
            return self.container(m, depth + 1)
        raise self.fail(f"the marker {m!r}")

    def container(self, opening: bytes, depth: int):
        typ, count = None, None
        m = self.marker()
        if m == b"$":
            typ = self.marker()
            m = self.marker()
            if m != b"#":
                raise self.fail("a typed container without a count")
        if m == b"#":
            count = self.length() if typ is None else self._typed_count(typ)
            m = None
        is_obj = opening == b"{"
        if typ is not None and not is_obj and typ in _FIXED and typ != b"C":
            dtype, size = _FIXED[typ]
            return np.frombuffer(bytes(self.take(count * size)), dtype=dtype).astype(dtype.replace(">", "="))
        out: dict | list = {} if is_obj else []
        i = 0
        while True:
            if count is not None:
                if i == count:
                    break
            else:
                m = m if m is not None else self.marker()
                if m == (b"}" if is_obj else b"]"):
                    break
            self.untyped += 1
            if self.untyped > MAX_UNTYPED:
                raise self.fail(f"more than {MAX_UNTYPED:,} values in untyped containers")
            if is_obj:
                if count is None and m not in (b"i", b"U", b"I", b"l", b"L"):
                    raise self.fail(f"an object key with marker {m!r}")
                if count is None:
                    self.pos -= 1
                key = self.string()
                vm = typ if typ is not None else self.marker()
                out[key] = self.value(vm, depth)
            else:
                vm = typ if typ is not None else (m if count is None else self.marker())
                out.append(self.value(vm, depth))
            m = None
            i += 1
        return out

    def _typed_count(self, typ: bytes) -> int:
        n = self.length()
        size = _FIXED.get(typ, (None, 1))[1]
        if n * size > len(self.data) - self.pos:
            raise self.fail(f"{n:,} values declared, {len(self.data) - self.pos:,} bytes left")
        return n


def parse(data: bytes, what: str):
    """The UBJSON value of ``data`` (BundleFormatError when malformed or when a count exceeds the bytes left)."""
    r = _Reader(bytes(data), what)
    try:
        value = r.value(r.marker(), 0)
    except (struct.error, UnicodeDecodeError, ValueError) as exc:
        if isinstance(exc, BundleFormatError):
            raise
        raise r.fail("malformed data") from None
    if r.pos != len(r.data):
        raise r.fail("bytes after the end of the model")
    return value
