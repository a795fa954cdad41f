"""A bundle is data: hostile bundles are refused with one line, before anything is allocated for them.

The corpus is ``benchmark.tools.hostile_corpus`` (the tool that measures it in subprocesses
is ``benchmark.tools.hostile_inputs``): genuine bundles of every model kind, and copies with
one change each, their manifests rewritten (the SHA-256 digests are not a signature).
"""

from __future__ import annotations

import json
import sys
import tracemalloc
from pathlib import Path

import pytest

from benchmark import load_model
from benchmark.errors import UserError
from benchmark.tools import hostile_corpus as hc

OPENED: list[str] = []


def _audit(event, args):   # every file this process opens, recorded while a test asks (audit hooks stay)
    if event == "open" and OPENED and OPENED[0] == "on" and isinstance(args[0], (str, bytes)):
        OPENED.append(str(args[0]))


sys.addaudithook(_audit)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile")
    data = hc.base_dataset(root)
    bundles = hc.genuine_bundles(root, data)
    cases = {c.name: c for c in hc.bundle_cases(root, bundles)}
    return {"root": root, "data": data, "bundles": bundles, "cases": cases}


def refused(path: Path, *fragments: str, trust=None) -> str:
    with pytest.raises(UserError) as info:
        load_model(path, trust=trust)
    msg = str(info.value)
    assert "\n" not in msg and "Traceback" not in msg, msg
    for f in fragments:
        assert f in msg, f"{f!r} not in {msg}"
    return msg


def test_genuine_bundles_of_every_model_kind_load_and_predict(corpus):
    from benchmark.export.schema import load_for_prediction

    for name, path in corpus["bundles"].items():
        model = load_model(path)
        table = model.table(load_for_prediction(corpus["data"], model.schema))
        assert table["prob"].between(0, 1).all(), name


def test_a_state_key_cannot_skip_the_restore_hook_or_point_the_encoder_outside_the_bundle(corpus):
    case = corpus["cases"]["hook-skipped-outside-safetensors"]
    OPENED[:] = ["on"]
    try:
        refused(case.path, "'bundle_restore' is not a field of", "EmbedLightGBMFamily")
    finally:
        opened, OPENED[:] = OPENED[1:], []
    assert opened and not any(p.endswith("swapped.safetensors") for p in opened), opened   # never opened


def test_weights_a_bundle_names_are_never_unpickled_even_where_timm_would(corpus, monkeypatch):
    """Simulates timm releases that unpickled a weights file without ``weights_only``."""
    import timm.models._builder as builder
    import torch

    def unsafe(path, *a, **k):
        return torch.load(path, map_location="cpu", weights_only=False)

    monkeypatch.setattr(builder, "load_state_dict", unsafe)
    case = corpus["cases"]["hook-skipped-pickle"]
    with pytest.raises(UserError):
        model = load_model(case.path)
        from benchmark.export.schema import load_for_prediction

        model.table(load_for_prediction(corpus["data"], model.schema))
    assert not case.marker.exists()


def test_weights_files_outside_bundles_are_read_without_unpickling_code(corpus):
    from benchmark.candidates.weights import read_weights

    _, evil, marker = hc._outside_weights(corpus["root"], corpus["bundles"])
    with pytest.raises(UserError, match="cannot be read as weights"):
        read_weights(evil)
    assert not marker.exists()


@pytest.mark.parametrize("name, fragments", [
    ("list-array-huge-dtype", ["feature_names_in_", "<U500000000", "above the limit"]),
    ("mlp-hidden-16000", ["hidden_: 16000 is outside"]),
    ("mlp-hidden-4000-weights-mismatch", ["the network needs"]),
    ("image-size-30000", ["image_size: 30000 is outside"]),
    ("fusion-size-30000", ["size_: 30000 is outside"]),
    ("json-100000-deep", ["model.json nests lists or objects deeper than 64"]),
    ("json-huge-string", ["a string of 20,000,000 characters"]),
    ("lightgbm-2e8-leaves", ["num_leaves: 200,000,000 is outside"]),
    ("xgboost-nodes", ["num_nodes: 2,000,000,000 is outside"]),
    ("safetensors-header-lies", ["more than the file holds"]),
    ("attention-layers", ["tab_layers: 1000000 is not a whole number in [0, 64]"]),
])
def test_declared_sizes_are_refused_before_anything_is_allocated(corpus, name, fragments):
    tracemalloc.start()
    try:
        refused(corpus["cases"][name].path, *fragments)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 << 20, f"{name}: {peak >> 20} MB allocated before the refusal"


def test_every_hostile_bundle_in_the_corpus_is_refused_in_one_line(corpus, monkeypatch):
    for name, case in corpus["cases"].items():
        with monkeypatch.context() as mp:
            for key, value in case.env.items():
                mp.setenv(key, value)
            refused(case.path, trust=[str(case.trust)] if case.trust else None)
        assert case.marker is None or not case.marker.exists(), name


def test_a_class_name_reaching_a_foreign_class_through_a_listed_module_is_refused(corpus, tmp_path):
    import shutil

    bundle = shutil.copytree(corpus["bundles"]["logreg"], tmp_path / "b")
    tree = json.loads((bundle / "model.json").read_text())
    tree["components"][0]["calibrator"]["__object__"] = "benchmark.candidates.calibration:np.ndarray"
    (bundle / "model.json").write_text(json.dumps(tree))
    hc.rehash(bundle)
    refused(bundle, "calibrator", "np.ndarray")


def test_trees_in_a_bundle_carry_no_per_feature_training_ranges(corpus):
    import re

    text = next((corpus["bundles"]["lightgbm"] / "trees").glob("*.txt")).read_text()
    infos = next(line for line in text.splitlines() if line.startswith("feature_infos="))
    assert not re.search(r"\[[^\]]*:[^\]]*\]", infos), infos
    assert set(infos.split("=", 1)[1].split()) == {"none"}
