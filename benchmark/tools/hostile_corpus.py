"""A corpus of hostile inputs: bundles, images and registers an attacker could hand to the harness.

    cases = build(Path("/tmp/hostile"))          # writes the files; one Case per attack
    cases[0].kind, cases[0].path, cases[0].what  # "bundle" | "predict" | "validate", where, the attack

The genuine starting points are made here, small: a synthetic cohort (60 patients, 32 px
DICOM images) and one bundle per kind of model (logistic regression, XGBoost, LightGBM,
MLP, a timm CNN, frozen-encoder embeddings into LightGBM, a neural fusion network), trained
directly on the cohort. Each hostile bundle is a copy with one change, its ``bundle.json``
rewritten with the new SHA-256 digests (anyone can do that: the digests are not a
signature). ``benchmark.tools.hostile_inputs`` runs every case in a subprocess and
measures it; the tests load the same cases in-process.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
from pathlib import Path
from typing import Callable

import numpy as np

from benchmark.tools.hostile_images import Case, image_cases, register_cases

ARCH = "test_resnet"   # timm's 0.4M-parameter test network
GENUINE = {            # bundle name -> (family, parameters, image size)
    "logreg": ("logreg", {}, None),
    "xgboost": ("xgboost", {"n_estimators": 20, "max_depth": 2, "early_stopping_rounds": 5}, None),
    "lightgbm": ("lightgbm", {"n_estimators": 20, "num_leaves": 4, "min_child_samples": 5,
                              "early_stopping_rounds": 5}, None),
    "mlp": ("mlp", {"hidden": 8, "n_layers": 1, "max_epochs": 2, "patience": None}, None),
    "cnn": ("timm_cnn", {"arch": ARCH, "batch_size": 8, "epochs": 1, "patience": None}, 32),
    "embed": ("embed_lightgbm", {"encoder": ARCH, "n_components": 2, "n_estimators": 20, "num_leaves": 4,
                                 "min_child_samples": 5, "early_stopping_rounds": 5}, 32),
    "fusion": ("joint_concat", {"arch": ARCH, "batch_size": 8, "epochs": 1, "patience": None, "warm_start": False,
                                "register_epochs": 0, "tab_hidden": 8, "fusion_dim": 8}, 32),
}


# ---------------------------------------------------------------------------- the genuine starting points

def base_dataset(root: Path) -> Path:
    """A small synthetic cohort (the on-disk format users give): its dataset.yaml."""
    from benchmark.data.synth import SynthConfig, write_cohort

    return Path(write_cohort(root / "cohort", SynthConfig(n_patients=60, n_aff=20, image_size=32,
                                                          images_per_patient=1.0, sparse_columns=0, workers=1)))


def genuine_bundles(root: Path, data_yaml: Path) -> dict[str, Path]:
    """One bundle per model kind (``GENUINE``), two members each, trained on halves of the cohort."""
    from benchmark.candidates.base import TrialContext, get_family
    from benchmark.candidates.calibration import Calibrator
    from benchmark.data.dataset import load_dataset
    from benchmark.export.bundle import write_bundle
    from benchmark.export.model import Component, ExportedModel
    from benchmark.export.schema import schema_of

    cohort = load_dataset(data_yaml)
    idx = np.arange(cohort.n_patients)
    halves = [(idx[::2], idx[1::2]), (idx[1::2], idx[::2])]
    out = {}
    for name, (family, params, size) in GENUINE.items():
        members, oof = [], np.zeros(cohort.n_patients)
        for k, (tr, te) in enumerate(halves):
            fam = get_family(family)(**params)
            ctx = TrialContext(seed=k, device="cpu", max_epochs=1, image_size=size, extra={"n_jobs": 1, "n_threads": 1})
            fam.fit(cohort.view(tr, labels=True, image_size=size), None, ctx)
            oof[te] = fam.predict_proba(cohort.view(te, labels=False, image_size=size))
            members.append(fam)
        modality = "image" if family == "timm_cnn" else "fusion" if size else "register"
        comp = Component(name, family, modality, members, Calibrator("platt").fit(oof, cohort.y), 1.0, 0.0, {}, size)
        schema = schema_of(cohort, reads_register=family != "timm_cnn", image_size=size)
        meta = {"candidate": name, "seed": 0, "created": "2026-01-01T00:00:00", "synthetic": True}
        out[name] = write_bundle(ExportedModel([comp], {"90": [0.3, 0.7], "95": [0.2, 0.8]}, 0.5, schema, meta),
                                 root / "genuine" / name, cohort=cohort)
    return out


# ---------------------------------------------------------------------------- editing a bundle as an attacker would

def rehash(bundle: Path) -> None:
    """Rewrite bundle.json with the SHA-256 of every file now in the bundle (all the integrity check asks)."""
    import hashlib

    man = json.loads((bundle / "bundle.json").read_text())
    man["files"] = {p.relative_to(bundle).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
                    for p in sorted(bundle.rglob("*")) if p.is_file() and not p.is_symlink()
                    and p.name not in ("bundle.json", "bundle.sig")}
    (bundle / "bundle.json").write_text(json.dumps(man, indent=1))


def variant(src: Path, dst: Path, change: Callable[[Path], None], *, hashes: bool = True) -> Path:
    shutil.rmtree(dst, ignore_errors=True)
    shutil.copytree(src, dst, symlinks=True)
    os.chmod(dst, 0o755)
    change(dst)
    if hashes:
        rehash(dst)
    return dst


def edit_tree(fn: Callable[[dict], None], name: str = "model.json") -> Callable[[Path], None]:
    def change(bundle: Path) -> None:
        tree = json.loads((bundle / name).read_text())
        fn(tree)
        (bundle / name).write_text(json.dumps(tree))
    return change


def member(tree: dict, k: int = 0) -> dict:
    """The state map of member ``k`` of the first component."""
    return tree["components"][0]["members"][k]["state"]["__map__"]


def params(tree: dict, k: int = 0) -> dict:
    return member(tree, k)["params"]["__map__"]


def replace_file(rel: str, make: Callable[[bytes], bytes]) -> Callable[[Path], None]:
    def change(bundle: Path) -> None:
        target = next(p for p in sorted(bundle.rglob("*")) if p.relative_to(bundle).as_posix().startswith(rel))
        target.write_bytes(make(target.read_bytes()))
    return change


def _deep(depth: int) -> str:
    return "[" * depth + "]" * depth


def _outside_weights(root: Path, bundles: dict[str, Path]) -> tuple[Path, Path, Path]:
    """Weights an attacker leaves outside a bundle: a safetensors file for the encoder, and a .pth whose
    pickle would create ``marker`` when unpickled without ``weights_only``."""
    import torch
    from safetensors.torch import load_file, save_file

    out = root / "outside"
    out.mkdir(parents=True, exist_ok=True)
    enc = next((bundles["embed"] / "weights").glob("*encoder*"))
    state = {k: v + 0.5 if v.is_floating_point() else v for k, v in load_file(str(enc)).items()}
    save_file(state, str(out / "swapped.safetensors"))
    marker = out / "code-ran.txt"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    torch.save({"state_dict": Payload()}, out / "evil.pth")
    return out / "swapped.safetensors", out / "evil.pth", marker


def bundle_cases(root: Path, bundles: dict[str, Path]) -> list[Case]:
    """One hostile copy of a genuine bundle per attack."""
    swapped, evil, marker = _outside_weights(root, bundles)
    at = root / "bundles"
    cases: list[Case] = []

    def add(name: str, src: str, what: str, change, *, kind: str = "bundle", hashes: bool = True, **kw) -> None:
        cases.append(Case(name, kind, variant(bundles[src], at / name, change, hashes=hashes), what, **kw))

    def hook_off(path: Path):
        def fn(tree):
            for k in (0, 1):
                member(tree, k)["bundle_restore"] = None
                member(tree, k)["pretrained_"] = str(path)
        return fn

    add("hook-skipped-outside-safetensors", "embed", "state 'bundle_restore': null and pretrained_ naming a "
        "safetensors file outside the bundle", edit_tree(hook_off(swapped)), kind="predict")
    add("hook-skipped-pickle", "embed", "state 'bundle_restore': null and pretrained_ naming a .pth whose pickle "
        "runs code", edit_tree(hook_off(evil)), kind="predict", marker=marker)
    add("list-array-huge-dtype", "logreg", "a __list_array__ of dtype <U500000000",
        edit_tree(lambda t: member(t)["model_"]["state"]["__map__"].update(
            feature_names_in_={"__list_array__": ["a"], "shape": [1], "dtype": "<U500000000"})))
    add("mlp-hidden-16000", "mlp", "an MLP whose settings say hidden: 16000",
        edit_tree(lambda t: (params(t).update(hidden=16000), member(t).update(hidden_=16000))))
    add("mlp-hidden-4000-weights-mismatch", "mlp", "an MLP whose settings (hidden 4000) differ from its weights",
        edit_tree(lambda t: params(t).update(hidden=4000)))
    add("image-size-30000", "cnn", "a component with image_size: 30000",
        edit_tree(lambda t: t["components"][0].update(image_size=30000)), kind="predict")
    add("fusion-size-30000", "fusion", "a fusion member with size_: 30000 (its probe runs at that size)",
        edit_tree(lambda t: member(t).update(size_=30000)))
    add("json-100000-deep", "logreg", "model.json nested 100,000 deep",
        lambda b: (b / "model.json").write_text('{"components": ' + _deep(100_000) + "}"))
    add("json-huge-string", "logreg", "a 20-million-character string in model.json",
        edit_tree(lambda t: t["components"][0].update(name="x" * 20_000_000)))
    add("json-nan", "logreg", "NaN where a bounded number is needed (r)",
        lambda b: (b / "model.json").write_text((b / "model.json").read_text().replace('"r": 1.0', '"r": NaN')))
    add("json-huge-int", "logreg", "an integer of 100,000 digits",
        lambda b: (b / "model.json").write_text((b / "model.json").read_text().replace('"r": 1.0', '"r": 1' + "0" * 100_000)))
    add("manifest-deep", "logreg", "bundle.json meta nested 200,000 deep",
        lambda b: (b / "bundle.json").write_text(json.dumps({**json.loads((b / "bundle.json").read_text()),
                                                              "meta": "@@"}).replace('"@@"', _deep(200_000))),
        hashes=False)
    add("lightgbm-2e8-leaves", "lightgbm", "a LightGBM tree declaring 200,000,000 leaves",
        replace_file("trees/", lambda d: d.replace(b"num_leaves=", b"num_leaves=200000000\nx_=", 1)))
    add("lightgbm-loop", "lightgbm", "a LightGBM tree whose child points back at the root",
        replace_file("trees/", _lgb_loop))
    add("lightgbm-garbage", "lightgbm", "a LightGBM model file of random bytes",
        replace_file("trees/", lambda d: os.urandom(len(d))))
    add("xgboost-nodes", "xgboost", "an XGBoost tree declaring 2,000,000,000 nodes",
        replace_file("trees/", _xgb_nodes))
    add("xgboost-truncated", "xgboost", "an XGBoost model cut in half", replace_file("trees/", lambda d: d[:len(d) // 2]))
    add("safetensors-header-lies", "mlp", "a weights file whose header declares 2^60 bytes",
        replace_file("weights/", lambda d: struct.pack("<Q", 1 << 60) + d[8:]))
    add("safetensors-huge-shape", "cnn", "a weights tensor declaring shape [100000, 100000]",
        replace_file("weights/", _huge_shape))
    add("arrays-truncated", "logreg", "arrays.safetensors cut short", replace_file("arrays.safetensors", lambda d: d[:40]))
    add("unknown-class", "logreg", "a member of class os:system",
        edit_tree(lambda t: t["components"][0]["members"][0].update({"__object__": "os:system"})))
    add("unknown-field", "logreg", "a member with a field its class does not have",
        edit_tree(lambda t: member(t).update(predict_proba="x")))
    add("wrong-type", "logreg", "text where a calibrator's number is expected",
        edit_tree(lambda t: t["components"][0]["calibrator"]["state"]["__map__"].update(a="1e308")))
    add("nan-in-array", "logreg", "an infinite coefficient in arrays.safetensors", _nan_array)
    add("missing-array", "logreg", "a reference to an array that is not there",
        edit_tree(lambda t: member(t)["pre_"]["state"]["__map__"].update(medians_={"__array__": "nope"})))
    add("wrong-family-member", "logreg", "a LightGBM member in a logistic-regression component",
        _swap_member(bundles["lightgbm"]))
    add("attention-layers", "fusion", "a fusion network with 1,000,000 layers",
        edit_tree(lambda t: params(t).update(tab_layers=1_000_000)))
    add("file-outside", "logreg", "a manifest entry ../../etc/passwd",
        lambda b: (b / "bundle.json").write_text((b / "bundle.json").read_text().replace(
            '"files": {', '"files": {"../../etc/passwd": "' + "0" * 64 + '", ', 1)), hashes=False)
    add("symlink-weights", "mlp", "a weights file replaced by a link to /etc/passwd", _symlink_weights, hashes=False)
    add("extra-file", "logreg", "a file the manifest does not list",
        lambda b: (b / "trees").mkdir(exist_ok=True) or (b / "trees" / "x.txt").write_text("x"), hashes=False)
    add("schema-image-size", "cnn", "schema.json declaring 100000 px images",
        edit_tree(lambda t: t["images"].update(size=100000), "schema.json"))
    add("cv-figures-deep", "logreg", "cv_figures.json nested 100,000 deep",
        lambda b: (b / "cv_figures.json").write_text(_deep(100_000)))
    add("shift-stats-one-patient", "logreg", "shift_stats.json summarising a variable over 1 patient",
        edit_tree(lambda t: t["register"][0].update(n=1), "shift_stats.json"))
    add("shift-stats-patient-values", "logreg", "shift_stats.json with a list of values for a variable",
        edit_tree(lambda t: t["register"][0].update(values=[71.3, 80.2]), "shift_stats.json"))
    add("shift-stats-200000-variables", "logreg", "shift_stats.json listing 200,000 variables",
        edit_tree(lambda t: t.update(register=[{"name": "a", "kind": "numeric", "missing": 0, "n": 0}] * 200_000),
                  "shift_stats.json"))
    add("update-slope-1e300", "logreg", "model.json recalibrating with a slope of 1e300",
        edit_tree(lambda t: t.update(update={"kind": "logistic", "intercept": 0.0, "slope": 1e300})))
    add("over-size-limit", "cnn", "a bundle over AFF_BENCHMARK_MAX_BUNDLE_MB", lambda b: None,
        env={"AFF_BENCHMARK_MAX_BUNDLE_MB": "0.1"})
    add("unsigned-with-trust", "logreg", "an unsigned bundle given to predict --trust", lambda b: None,
        kind="predict", trust=_key(root))
    return cases


def _key(root: Path) -> Path:
    from benchmark.export.signing import new_keys

    if not (root / "keys" / "site.pub").exists():
        new_keys(root / "keys", "site")
    return root / "keys" / "site.pub"


def _lgb_loop(data: bytes) -> bytes:
    text = data.decode()
    i = text.index("left_child=", text.index("num_leaves=4"))
    return (text[:i] + "left_child=1 0 -1" + text[text.index("\n", i):]).encode()


def _xgb_nodes(data: bytes) -> bytes:
    """The first tree's num_nodes (a UBJSON string) set to 2,000,000,000."""
    i = data.index(b"num_nodesS") + len(b"num_nodesS")
    size = {b"i": 1, b"U": 1, b"I": 2, b"l": 4, b"L": 8}[data[i:i + 1]]
    n = int.from_bytes(data[i + 1:i + 1 + size], "big")
    return data[:i] + b"U\x0a2000000000" + data[i + 1 + size + n:]


def _huge_shape(data: bytes) -> bytes:
    n = int.from_bytes(data[:8], "little")
    head = json.loads(data[8:8 + n])
    key = next(k for k in head if k != "__metadata__")
    head[key]["shape"] = [100000, 100000]
    raw = json.dumps(head).encode()
    return struct.pack("<Q", len(raw)) + raw + data[8 + n:]


def _nan_array(bundle: Path) -> None:
    from safetensors.numpy import load, save

    arrays = dict(load((bundle / "arrays.safetensors").read_bytes()))
    key = next(k for k in arrays if k.endswith("coef_"))
    arrays[key] = np.full_like(arrays[key], np.inf)
    (bundle / "arrays.safetensors").write_bytes(save(arrays))


def _symlink_weights(bundle: Path) -> None:
    target = next((bundle / "weights").glob("*.safetensors"))
    target.unlink()
    target.symlink_to("/etc/passwd")


def _swap_member(other: Path) -> Callable[[Path], None]:
    def change(bundle: Path) -> None:
        theirs = json.loads((other / "model.json").read_text())["components"][0]["members"][0]
        tree = json.loads((bundle / "model.json").read_text())
        tree["components"][0]["members"][0] = theirs
        (bundle / "model.json").write_text(json.dumps(tree))
        for f in (other / "trees").glob("*"):
            (bundle / "trees").mkdir(exist_ok=True)
            shutil.copy(f, bundle / "trees" / f.name)
    return change


def build(root: Path, *, kinds: tuple[str, ...] = ("bundle", "image", "register")) -> list[Case]:
    """Write the whole corpus under ``root``; the cases in a fixed order."""
    root = Path(root)
    data = base_dataset(root)
    cases: list[Case] = []
    if "bundle" in kinds:
        bundles = genuine_bundles(root, data)
        cases += [Case(f"genuine-{n}", "bundle", p, f"the genuine {n} bundle") for n, p in bundles.items()]
        cases += bundle_cases(root, bundles)
        for c in cases:
            if c.kind == "predict":
                c.env.setdefault("AFF_HOSTILE_DATA", str(data))
    if "image" in kinds:
        cases += image_cases(root, data)
    if "register" in kinds:
        cases += register_cases(root, data)
    return cases


def write_index(cases: list[Case], path: Path) -> None:
    """The cases as JSON (what ``hostile_inputs`` reads)."""
    path.write_text(json.dumps([{**c.__dict__, "path": str(c.path), "marker": str(c.marker) if c.marker else None,
                                 "trust": str(c.trust) if c.trust else None} for c in cases], indent=1))


if __name__ == "__main__":   # python -m benchmark.tools.hostile_corpus OUT [KINDS]: build, write OUT/cases.json
    import sys

    out = Path(sys.argv[1])
    write_index(build(out, kinds=tuple(sys.argv[2].split(",")) if len(sys.argv) > 2 else ("bundle", "image", "register")),
                out / "cases.json")
