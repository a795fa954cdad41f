"""A weights folder and its record, ``weights.json``: which file holds which weights, and their SHA-256.

``python -m benchmark weights fetch`` writes such a folder, and the harness keeps its own
downloads in one (``<cache>/weights``). Each entry names a hub model (``timm/resnet18.a1_in1k``)
and records its file (relative to the folder), SHA-256, size, architecture, where it came
from and the timm version that fetched it::

    {"format": "aff-benchmark-weights", "version": 1,
     "weights": {"timm/resnet18.a1_in1k": {"file": "timm--resnet18.a1_in1k/model.safetensors",
                 "sha256": "...", "size": 46807446, "architecture": "resnet18",
                 "source": "https://huggingface.co/timm/resnet18.a1_in1k", "revision": "...", "timm": "1.0.31"}}}

    folder = Path("weights")
    path = lookup(folder, "timm/resnet18.a1_in1k")      # the file, or None
    recorded_entry(path)                               # (key, the SHA-256 it must have, weights.json)
    rows = entries(folder)                             # every entry with its state (ok / changed / missing)

A file a record names is checked against its SHA-256 whenever it is read
(``weights.read_weights``); a mismatch is refused.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from benchmark.errors import UserError

RECORD = "weights.json"
FORMAT = "aff-benchmark-weights"
VERSION = 1


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    """SHA-256 of a file, read in 8 MB pieces."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(8 << 20), b""):
            h.update(block)
    return h.hexdigest()


def folder_name(hub_id: str) -> str:
    """The subfolder a hub model's files go to: ``timm/resnet18.a1_in1k`` -> ``timm--resnet18.a1_in1k``."""
    return hub_id.replace("/", "--").replace("@", "--")


def read_record(folder: Path) -> dict:
    """The entries of ``folder/weights.json`` ({} when the folder has none)."""
    path = Path(folder) / RECORD
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UserError(f"{path} cannot be read ({type(exc).__name__}); fetch the weights again with "
                        "`python -m benchmark weights fetch ... --out FOLDER`") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT or not isinstance(data.get("weights"), dict):
        raise UserError(f"{path} is not a weights record of aff-benchmark; remove it or fetch the weights again")
    return data["weights"]


def lookup(folder: Path, key: str) -> Path | None:
    """The file ``folder``'s record holds for ``key`` (a hub id), or None (no record, no entry, or its file is gone)."""
    entry = read_record(folder).get(key)
    if not isinstance(entry, dict) or not isinstance(entry.get("file"), str):
        return None
    path = _inside(Path(folder), entry["file"])
    return path if path is not None and path.is_file() else None


def lookup_architecture(folder: Path, arch: str) -> Path | None:
    """The file of the first entry recorded for architecture ``arch`` (``resnet18``, or tagged
    ``resnet18.tv_in1k``), timm's default weights for it first."""
    from benchmark.candidates.weights_hub import imagenet_hub_id

    record = read_record(folder)
    keys = sorted(record, key=lambda k: k != imagenet_hub_id(arch, required=False))
    for key in keys:
        if isinstance(record[key], dict) and record[key].get("architecture") == arch.partition(".")[0]:
            found = lookup(folder, key)
            if found is not None:
                return found
    return None


def _inside(folder: Path, rel: str) -> Path | None:
    """``folder/rel`` when it stays inside ``folder`` (a record never leads elsewhere), else None."""
    path = (folder / rel).resolve()
    return path if path.is_relative_to(folder.resolve()) else None


def recorded_entry(path: Path) -> tuple[str, str, Path] | None:
    """(its key, the SHA-256 it must have, the record) when a ``weights.json`` in the file's folder or the
    one above records ``path``; else None."""
    path = Path(path).resolve()
    for folder in (path.parent, path.parent.parent):
        for key, entry in read_record(folder).items():
            if isinstance(entry, dict) and isinstance(entry.get("file"), str) and \
                    _inside(folder, entry["file"]) == path and isinstance(entry.get("sha256"), str):
                return key, entry["sha256"], folder / RECORD
    return None


@contextlib.contextmanager
def _locked(folder: Path):
    """Only one process at a time updates a folder's record."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".weights.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def record(folder: Path, key: str, file: Path, **facts) -> dict:
    """Add (or replace) ``key``'s entry in ``folder/weights.json``: the file, its SHA-256 and size, and ``facts``."""
    folder = Path(folder)
    rel = Path(file).resolve().relative_to(folder.resolve()).as_posix()
    entry = {"file": rel, "sha256": sha256_file(file), "size": Path(file).stat().st_size, **facts}
    with _locked(folder):
        weights = read_record(folder)
        weights[key] = entry
        tmp = folder / (RECORD + ".tmp")
        tmp.write_text(json.dumps({"format": FORMAT, "version": VERSION, "weights": dict(sorted(weights.items()))},
                                  indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, folder / RECORD)
    return entry


@dataclass
class Entry:
    """One entry of a weights folder as ``weights list`` shows it."""

    key: str
    architecture: str
    file: str
    size: int
    sha256: str
    state: str          # ok | changed | missing


def entries(folder: Path) -> list[Entry]:
    """Every entry of ``folder``'s record, each file hashed again: ``ok``, ``changed`` or ``missing``."""
    out = []
    for key, e in read_record(folder).items():
        if not isinstance(e, dict):
            continue
        path = _inside(Path(folder), str(e.get("file", "")))
        if path is None or not path.is_file():
            state = "missing"
        else:
            state = "ok" if sha256_file(path) == e.get("sha256") else "changed"
        out.append(Entry(key, str(e.get("architecture", "?")), str(e.get("file", "")), int(e.get("size") or 0),
                         str(e.get("sha256", "")), state))
    return out
