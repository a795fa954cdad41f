"""JSON from a bundle, bounded before it is parsed.

``json.loads`` recurses once per nesting level (a 100,000-deep file is a RecursionError) and
takes numbers and strings of any length. ``loads`` first scans the text once (a regular
expression over strings and brackets, no recursion) for its nesting depth and the length
of its strings, then parses it with non-finite numbers, over-long integers and repeated
keys refused::

    tree = loads(data, "model.json")               # BundleFormatError naming the file and the limit
    cv = loads(data, "cv_figures.json", allow_nan=True)
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from benchmark.export.limits import MAX_JSON_DEPTH, MAX_JSON_MB, MAX_STRING, BundleFormatError

# a JSON string (escapes included) or a bracket; anything else is skipped by finditer
_TOKENS = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]', re.S)
_MAX_RAW_STRING = 6 * MAX_STRING     # an escaped character takes up to six (\uXXXX)
_MAX_INT_DIGITS = 40


def loads(data: bytes | str, what: str, *, allow_nan: bool = False, max_depth: int = MAX_JSON_DEPTH,
          max_bytes: int = MAX_JSON_MB << 20) -> Any:
    """The JSON value of ``data`` (BundleFormatError: too large, too deep, a string too long, not JSON)."""
    if len(data) > max_bytes:
        raise BundleFormatError(f"{what} is {len(data):,} bytes, above the limit of {max_bytes:,}")
    if isinstance(data, bytes):
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise BundleFormatError(f"{what} is not UTF-8 text") from None
    else:
        text = data
    depth = 0
    for m in _TOKENS.finditer(text):
        c = text[m.start()]
        if c == '"':
            if m.end() - m.start() - 2 > _MAX_RAW_STRING:
                raise BundleFormatError(f"{what} holds a string of {m.end() - m.start() - 2:,} characters, above the "
                                        f"limit of {MAX_STRING:,}")
        elif c in "[{":
            depth += 1
            if depth > max_depth:
                raise BundleFormatError(f"{what} nests lists or objects deeper than {max_depth} levels")
        else:
            depth -= 1
    try:
        return json.loads(text, parse_constant=_constant(what, allow_nan), parse_float=_float(what, allow_nan),
                          parse_int=_int(what), object_pairs_hook=_pairs(what))
    except BundleFormatError:
        raise
    except (ValueError, RecursionError) as exc:
        raise BundleFormatError(f"{what} is not valid JSON ({str(exc).splitlines()[0][:120]})") from None


def _constant(what: str, allow_nan: bool):
    def parse(name: str) -> float:
        if not allow_nan:
            raise BundleFormatError(f"{what} holds {name}, which a bundle may not hold there")
        return float(name.replace("Infinity", "inf"))
    return parse


def _float(what: str, allow_nan: bool):
    def parse(text: str) -> float:
        if len(text) > _MAX_INT_DIGITS * 2:
            raise BundleFormatError(f"{what} holds a number of {len(text)} characters")
        v = float(text)
        if not math.isfinite(v) and not allow_nan:
            raise BundleFormatError(f"{what} holds the number {text[:20]}, which is not finite")
        return v
    return parse


def _int(what: str):
    def parse(text: str) -> int:
        if len(text) > _MAX_INT_DIGITS:
            raise BundleFormatError(f"{what} holds an integer of {len(text)} digits")
        return int(text)
    return parse


def _pairs(what: str):
    def build(pairs: list) -> dict:
        out = dict(pairs)
        if len(out) != len(pairs):
            seen: set = set()
            dup = next(k for k, _ in pairs if k in seen or seen.add(k))
            raise BundleFormatError(f"{what} repeats the key {dup[:40]!r} in one object")
        return out
    return build
