"""The dataset file: its keys, the parsed ``DatasetSpec`` and the problem list every check writes to.

    >>> from benchmark.data.dataset_spec import Problems, parse_spec
    >>> probs = Problems()
    >>> spec = parse_spec(Path("data/my-cohort.yaml"), probs)   # doctest: +SKIP
    >>> spec = parse_spec(Path("new-patients.yaml"), probs, labels="optional")  # doctest: +SKIP
    >>> spec.label is None                                 # doctest: +SKIP
    True

``parse_spec`` checks keys, types and that the named files and folders exist; it reads
none of them. ``label`` is required unless ``labels="optional"`` (a dataset to predict
on); without it ``DatasetSpec.label`` is None. The format itself is documented once, in ``benchmark.data.dataset``.
``norm_label`` is the one spelling of a label value, shared by the file's
``label.positive``/``label.negative`` and the label cells (``register_table``).
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass
from pathlib import Path

import yaml

from benchmark.data.subgroups import SubgroupSpec, parse_subgroups
from benchmark.errors import yaml_problem

TOP_KEYS = {"name", "register", "id_column", "label", "images", "drop_columns", "categorical",
            "missing_images", "orphan_images", "oracle", "truth", "cache_dir", "description", "synthetic",
            "register_format", "manifest_format", "subgroups"}
LABEL_KEYS = {"column", "positive", "negative"}
FORMAT_KEYS = {"separator", "decimal", "encoding"}
IMAGE_KEYS = {"root", "manifest", "pattern", "path_column", "patient_column", "allowed_roots", "max_megapixels",
              "max_decode_mb"}
DEFAULT_MAX_MEGAPIXELS = 100.0   # the same defaults as benchmark.data.decode_limits
DEFAULT_MAX_DECODE_MB = 640.0


@dataclass(frozen=True)
class TableFormat:
    """What the user says about a CSV file (``register_format`` / ``manifest_format``); None: detect it."""

    separator: str | None = None
    decimal: str | None = None
    encoding: str | None = None


@dataclass(frozen=True)
class LabelSpec:
    column: str
    positive: str
    negative: str | None = None


@dataclass(frozen=True)
class ImageSpec:
    root: Path
    manifest: Path | None = None
    pattern: str | None = None
    path_column: str = "path"
    patient_column: str = "patient_id"
    allowed_roots: tuple[Path, ...] = ()        # folders besides root that image paths may lead into
    max_megapixels: float = DEFAULT_MAX_MEGAPIXELS  # largest declared image size decoded (see decode_limits.py)
    max_decode_mb: float = DEFAULT_MAX_DECODE_MB    # peak memory decoding one image may take (estimated first)


@dataclass(frozen=True)
class DatasetSpec:
    """A parsed, checked dataset file; paths are absolute."""

    path: Path
    name: str
    label: LabelSpec | None             # None: no 'label' key (only with labels="optional")
    register: Path | None = None
    id_column: str = "patient_id"
    images: ImageSpec | None = None
    drop_columns: tuple[str, ...] = ()
    categorical: tuple[str, ...] = ()
    missing_images: str = "drop"
    orphan_images: str = "drop"
    oracle: Path | None = None
    truth: Path | None = None             # synthetic cohorts: truth.json (benchmark.data.truth)
    cache_dir: Path | None = None
    description: str = ""
    synthetic: bool = False
    register_format: TableFormat = TableFormat()
    manifest_format: TableFormat = TableFormat()
    subgroups: tuple[SubgroupSpec, ...] = ()    # reported apart: AUC and calibration per level (data/subgroups.py)


class Problems:
    """What the checks found: problems (the data are unusable) and warnings (something was dropped)."""

    def __init__(self) -> None:
        self.items: list[str] = []
        self.warnings: list[str] = []

    def add(self, msg: str) -> None:
        self.items.append(msg)

    def warn(self, msg: str) -> None:
        self.warnings.append(msg)


LABEL_MODES = ("required", "optional")


def parse_spec(path: Path, probs: Problems, *, labels: str = "required") -> DatasetSpec | None:
    """The dataset file at ``path`` as a ``DatasetSpec``; None (with problems added) when it is unusable.

    ``labels="optional"`` accepts a file without a ``label`` key (``spec.label`` is then None);
    a ``label`` key that is there is checked as always.
    """
    if labels not in LABEL_MODES:
        raise ValueError(f"labels must be 'required' or 'optional', got {labels!r}")
    if path.is_dir():
        probs.add(f"{path}: is a folder, not a file; give the path to the dataset YAML file inside it")
        return None
    if not path.is_file():
        probs.add(f"{path}: dataset file not found; give the path to a dataset YAML file (see README, 'Bring your own data')")
        return None
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8-sig"))
    except yaml.YAMLError as exc:
        probs.add(yaml_problem(path, exc))
        return None
    except UnicodeDecodeError:
        probs.add(f"{path}: not a UTF-8 text file; save the dataset file as UTF-8")
        return None
    if doc is None:
        probs.add(f"{path}: the dataset file is empty; write its keys (name, register, label, images, ...), "
                  "see README, 'Bring your own data'")
        return None
    if not isinstance(doc, dict):
        kind = {"list": "a list", "str": "a single text"}.get(type(doc).__name__, type(doc).__name__)
        probs.add(f"{path}: expected a mapping of keys (name, register, label, images, ...), found {kind}")
        return None
    base = path.parent.resolve()
    n_before = len(probs.items)

    unknown = sorted(set(map(str, doc)) - TOP_KEYS)
    for key in unknown:
        probs.add(f"{path}, key {key!r}: unknown key; the keys are {', '.join(sorted(TOP_KEYS))}")

    def text(key: str, value, default=None) -> str | None:
        if value is None:
            return default
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        hint = "; YAML reads yes/no/true/false as booleans: quote the value, e.g. 'yes'" if isinstance(value, bool) else ""
        probs.add(f"{path}, key {key!r}: expected a text value, found {type(value).__name__}{hint}")
        return default

    def str_list(key: str) -> tuple[str, ...]:
        value = doc.get(key) or []
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, (str, int)) for v in value):
            probs.add(f"{path}, key {key!r}: expected a list of column names, e.g. [a, b]")
            return ()
        return tuple(str(v) for v in value)

    def existing(key: str, value, *, directory: bool = False) -> Path | None:
        raw = text(key, value)
        if raw is None:
            return None
        p = (base / Path(raw).expanduser()).resolve()
        ok = p.is_dir() if directory else p.is_file()
        if not ok and directory and p.exists():
            probs.add(f"{path}, key {key!r}: {raw!r} is a file, not a folder; give the folder that holds the images")
        elif not ok and not directory and p.is_dir():
            probs.add(f"{path}, key {key!r}: {raw!r} is a folder, not a file; give the path to the file itself")
        elif not ok:
            kind = "folder" if directory else "file"
            probs.add(f"{path}, key {key!r}: {kind} {raw!r} not found (relative paths are relative to the dataset file)")
        return p

    def choice(key: str) -> str:
        value = doc.get(key, "drop")
        if value not in ("drop", "fail"):
            probs.add(f"{path}, key {key!r}: expected 'drop' or 'fail', found {value!r}")
            return "drop"
        return value

    name = text("name", doc.get("name"), default=path.stem)
    register = existing("register", doc.get("register"))
    id_column = text("id_column", doc.get("id_column"), default="patient_id")

    label = None
    raw_label = doc.get("label")
    if raw_label is None and labels == "optional":
        pass  # an unlabelled dataset: patients to predict
    elif not isinstance(raw_label, dict):
        probs.add(f"{path}, key 'label': required, e.g. label: {{column: group, positive: AFF}}")
    else:
        for key in sorted(set(map(str, raw_label)) - LABEL_KEYS):
            probs.add(f"{path}, key 'label.{key}': unknown key; the keys are column, positive, negative")
        column = text("label.column", raw_label.get("column"))
        positive = text("label.positive", raw_label.get("positive"))
        negative = text("label.negative", raw_label.get("negative"))
        if column is None or positive is None:
            probs.add(f"{path}, key 'label': needs 'column' and 'positive', e.g. label: {{column: group, positive: AFF}}")
        else:
            label = LabelSpec(column, norm_label(positive), None if negative is None else norm_label(negative))
            if label.negative == label.positive:
                probs.add(f"{path}, key 'label': positive and negative are the same value; give two different values")

    images = None
    raw_images = doc.get("images")
    if raw_images is not None:
        if not isinstance(raw_images, dict):
            probs.add(f"{path}, key 'images': expected a mapping with root and manifest (or pattern)")
        else:
            for key in sorted(set(map(str, raw_images)) - IMAGE_KEYS):
                probs.add(f"{path}, key 'images.{key}': unknown key; the keys are {', '.join(sorted(IMAGE_KEYS))}")
            root = existing("images.root", raw_images.get("root", "."), directory=True)
            manifest = existing("images.manifest", raw_images.get("manifest"))
            pattern = text("images.pattern", raw_images.get("pattern"))
            if (raw_images.get("manifest") is None) == (pattern is None):
                probs.add(f"{path}, key 'images': give exactly one of 'manifest' (a CSV of path, patient_id) and 'pattern' (a regex)")
            if pattern is not None:
                try:
                    rx = re.compile(pattern)
                    if "patient_id" not in rx.groupindex:
                        probs.add(f"{path}, key 'images.pattern': the regex needs a named group (?P<patient_id>...)")
                except re.error as exc:
                    probs.add(f"{path}, key 'images.pattern': not a valid regular expression ({exc})")
            allowed = []
            raw_allowed = raw_images.get("allowed_roots") or []
            if isinstance(raw_allowed, str):
                raw_allowed = [raw_allowed]
            if not isinstance(raw_allowed, list) or not all(isinstance(v, str) for v in raw_allowed):
                probs.add(f"{path}, key 'images.allowed_roots': expected a list of folders, e.g. [/data/xrays]")
            else:
                for k, raw_root in enumerate(raw_allowed):
                    allowed.append(existing(f"images.allowed_roots[{k}]", raw_root, directory=True))
            max_mp = raw_images.get("max_megapixels", DEFAULT_MAX_MEGAPIXELS)
            if isinstance(max_mp, bool) or not isinstance(max_mp, (int, float)) or not max_mp > 0:
                probs.add(f"{path}, key 'images.max_megapixels': expected a positive number of megapixels, "
                          f"e.g. {DEFAULT_MAX_MEGAPIXELS:g}")
                max_mp = DEFAULT_MAX_MEGAPIXELS
            max_mb = raw_images.get("max_decode_mb", DEFAULT_MAX_DECODE_MB)
            if isinstance(max_mb, bool) or not isinstance(max_mb, (int, float)) or not max_mb > 0:
                probs.add(f"{path}, key 'images.max_decode_mb': expected a positive number of megabytes, "
                          f"e.g. {DEFAULT_MAX_DECODE_MB:g}")
                max_mb = DEFAULT_MAX_DECODE_MB
            images = ImageSpec(
                root=root or base, manifest=manifest, pattern=pattern,
                path_column=text("images.path_column", raw_images.get("path_column"), default="path"),
                patient_column=text("images.patient_column", raw_images.get("patient_column"), default="patient_id"),
                allowed_roots=tuple(p for p in allowed if p is not None), max_megapixels=float(max_mp),
                max_decode_mb=float(max_mb),
            )

    if doc.get("register") is None and raw_images is None:
        probs.add(f"{path}: needs 'register' (a CSV/Parquet file), 'images', or both")

    oracle = existing("oracle", doc.get("oracle"))
    truth = existing("truth", doc.get("truth"))
    cache_raw = text("cache_dir", doc.get("cache_dir"))
    cache_dir = (base / Path(cache_raw).expanduser()).resolve() if cache_raw else None
    synthetic = doc.get("synthetic", False)
    if not isinstance(synthetic, bool):
        probs.add(f"{path}, key 'synthetic': expected true or false")
        synthetic = False
    spec_kwargs = dict(
        path=path.resolve(), name=name, label=label, register=register, id_column=id_column, images=images,
        drop_columns=str_list("drop_columns"), categorical=str_list("categorical"),
        missing_images=choice("missing_images"), orphan_images=choice("orphan_images"),
        oracle=oracle, truth=truth, cache_dir=cache_dir, description=text("description", doc.get("description"), default="") or "",
        synthetic=synthetic,
        register_format=_table_format(path, "register_format", doc.get("register_format"), probs),
        manifest_format=_table_format(path, "manifest_format", doc.get("manifest_format"), probs),
        subgroups=parse_subgroups(path, doc.get("subgroups"), probs),
    )
    if len(probs.items) > n_before:
        return None
    return DatasetSpec(**spec_kwargs)


_SEPARATOR_WORDS = {"tab": "\t", "\\t": "\t", "comma": ",", "semicolon": ";", "pipe": "|"}


def _table_format(path: Path, key: str, raw, probs: Problems) -> TableFormat:
    """``register_format`` / ``manifest_format``: {separator, decimal, encoding}, each optional."""
    if raw is None:
        return TableFormat()
    example = f'e.g. {key}: {{separator: ";", decimal: ",", encoding: utf-16}}'
    if not isinstance(raw, dict):
        probs.add(f"{path}, key {key!r}: expected a mapping of separator, decimal and encoding, {example}")
        return TableFormat()
    for k in sorted(set(map(str, raw)) - FORMAT_KEYS):
        probs.add(f"{path}, key '{key}.{k}': unknown key; the keys are {', '.join(sorted(FORMAT_KEYS))}")
    sep = raw.get("separator")
    if sep is not None:
        sep = _SEPARATOR_WORDS.get(str(sep).lower(), sep) if isinstance(sep, str) else sep
        if not isinstance(sep, str) or len(sep) != 1 or sep.isalnum() or sep in "\"'\n\r.":
            probs.add(f"{path}, key '{key}.separator': expected one character such as \",\" \";\" or tab, quoted, "
                      f"{example}")
            sep = None
    dec = raw.get("decimal")
    if dec is not None:
        if dec not in (".", ","):
            probs.add(f"{path}, key '{key}.decimal': expected \".\" or \",\" (quoted), {example}")
            dec = None
        elif dec == sep:
            probs.add(f"{path}, key {key!r}: the separator and the decimal mark are both {dec!r}; they must differ")
            dec = None
    enc = raw.get("encoding")
    if enc is not None:
        try:
            enc = codecs.lookup(str(enc)).name
        except LookupError:
            probs.add(f"{path}, key '{key}.encoding': unknown encoding; use e.g. utf-8, utf-16, cp1252 or latin-1")
            enc = None
    return TableFormat(separator=sep, decimal=dec, encoding=enc)


def norm_label(v) -> str:
    """A label value as text; integral numbers lose a trailing '.0' (1.0 -> '1')."""
    t = str(v).strip()
    if re.fullmatch(r"[+-]?\d+\.0*", t):
        t = str(int(float(t)))
    return t
