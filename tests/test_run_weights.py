"""A run's starting weights: chosen once at the start (``run.pretrained``), recorded in the manifest with
their SHA-256, said in the leaderboard, the findings and a bundle's model card (never as a path), kept
on resume and export; a profile's ImageNet weights that cannot be had give random init and one line."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest

from benchmark.candidates import weights_store as store
from benchmark.candidates.weights import WEIGHTS_ENV, WeightsUnavailable
from benchmark.errors import UserError
from benchmark.report.findings.weights import weights_section
from benchmark.run.pretrained import start_weights, weights_column
from benchmark.run.runner import RunConfig, run
from benchmark.search.profiles import get_profile
from benchmark.search.spaces import Candidate
from runner_helpers import write_spaces

ARCH = "test_resnet"
CNN = Candidate("cnn", "timm_cnn", "image", fixed={"arch": ARCH})
EMB = Candidate("emb", "embed_lightgbm", "fusion", fixed={"encoder": ARCH})
JOINT = Candidate("joint", "joint_concat", "fusion", fixed={"arch": ARCH, "warm_start": "cnn"})


@pytest.fixture
def offline(monkeypatch, tmp_path):
    monkeypatch.setenv("AFF_BENCHMARK_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv(WEIGHTS_ENV, raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def _weights_file(path: Path) -> Path:
    """A 3-channel, 1000-class test_resnet saved as if it were ImageNet weights."""
    import timm
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(3)
    save_file({k: v.contiguous() for k, v in timm.create_model(ARCH).state_dict().items()}, str(path))
    return path


def test_a_profiles_imagenet_weights_that_cannot_be_had_give_random_init_and_one_line(offline):
    profile = replace(get_profile("smoke"), pretrained="imagenet")
    said = []
    cands, records = start_weights([CNN, EMB, JOINT], profile, log=said.append)
    assert len(said) == 1 and f"weights fetch {ARCH} --out DIR" in said[0] and "random initialisation" in said[0]
    assert "\n" not in said[0]
    assert [c.fixed.get("pretrained") for c in cands] == [False, False, None]
    assert records["cnn"]["source"] == records["emb"]["source"] == "random"
    assert records["cnn"]["meaning"] == "trained from random initialisation"
    assert records["emb"]["meaning"] == "embeddings from an untrained encoder carry no learned features"
    assert records["joint"]["source"] == "warm start" and records["joint"]["name"] == "cnn"
    assert weights_column(records, ["cnn", "emb", "joint", "probe"]) == [
        "trained from random initialisation",
        "random initialisation: embeddings from an untrained encoder carry no learned features",
        "the trained weights of cnn (warm start)", ""]
    text = "\n".join(weights_section({"weights": records}))
    assert "embeddings from an untrained encoder carry no learned features" in text
    assert "**cnn** (test_resnet): trained from random initialisation" in text and "weights fetch" in text


def test_a_candidates_own_imagenet_weights_that_cannot_be_had_stop_the_run(offline):
    own = replace(CNN, fixed={**CNN.fixed, "pretrained": "imagenet"})
    with pytest.raises(WeightsUnavailable, match="hub cannot be reached"):
        start_weights([own], get_profile("smoke"), log=lambda m: None)


def test_resume_and_export_refuse_weights_that_changed_since_the_run_started(offline, tmp_path):
    path = _weights_file(tmp_path / f"{ARCH}.safetensors")
    own = replace(CNN, fixed={**CNN.fixed, "pretrained": str(path)})
    _, records = start_weights([own], get_profile("smoke"))
    assert records["cnn"]["sha256"] == store.sha256_file(path) and records["cnn"]["name"] == path.name
    assert start_weights([own], get_profile("smoke"), previous=records)[1] == records
    path.write_bytes(path.read_bytes()[:-4] + b"\0\0\0\0")     # the same file name, other weights
    with pytest.raises(UserError, match="cnn: its starting weights changed since the run started"):
        start_weights([own], get_profile("smoke"), previous=records)


def test_a_run_records_local_weights_and_says_so_in_leaderboard_findings_and_bundle(tiny_dataset, tmp_path, offline):
    from benchmark.export.export import export

    (tmp_path / "w").mkdir()
    path = _weights_file(tmp_path / "w" / f"{ARCH}.safetensors")
    cnn = (f"name: cnn\nfamily: timm_cnn\nmodality: image\nfixed: {{arch: {ARCH}, epochs: 1, batch_size: 8, "
           f"pretrained: {path}}}\nspace:\n  lr: {{type: float, low: 0.0005, high: 0.005, log: true}}\n")
    emb = ("name: emb\nfamily: embed_lightgbm\nmodality: fusion\nconsumes: []\nfixed: {n_estimators: 30, "
           f"n_components: 2, encoder: {ARCH}}}\nspace:\n  learning_rate: {{type: float, low: 0.05, high: 0.3}}\n")
    ds = tiny_dataset(n_pos=8, n_neg=12)
    spaces = write_spaces(tmp_path / "spaces", n_trials=1, outer_folds=2, extra={"cnn": cnn, "emb": emb})
    out = Path(run(RunConfig(candidates=["cnn", "emb"], data=str(ds.yaml), profile="tiny", device="cpu",
                             spaces=[str(spaces)], results_dir=str(tmp_path / "results"), run="w")))
    man = json.loads((out / "manifest.json").read_text())
    digest = store.sha256_file(path)
    assert man["weights"]["cnn"]["sha256"] == digest and man["weights"]["cnn"]["file"] == str(path)
    assert man["weights"]["emb"]["source"] == "random"
    board = pd.read_csv(out / "leaderboard.csv").set_index("candidate")
    assert board.loc["cnn", "weights"] == f"weights file {ARCH}.safetensors"
    assert board.loc["emb", "weights"] == ("random initialisation: embeddings from an untrained encoder carry no "
                                           "learned features")
    findings = (out / "findings.md").read_text()
    assert f"**cnn** (test_resnet) started from weights file {ARCH}.safetensors, SHA-256 {digest[:16]}" in findings
    assert "**emb** (test_resnet): embeddings from an untrained encoder carry no learned features" in findings
    html = (out / "leaderboard.html").read_text()        # emb's row is marked, and says why on hover
    assert ("title='random initialisation: embeddings from an untrained encoder carry no learned features'>"
            "random init</span>") in html

    bundle = export(out, "cnn", tmp_path / "bundle", device="cpu")
    meta = json.loads((bundle / "bundle.json").read_text())["meta"]
    assert meta["weights"]["cnn"]["sha256"] == digest and "file" not in meta["weights"]["cnn"]
    for name in ("bundle.json", "model.json", "model_card.md"):
        assert str(tmp_path) not in (bundle / name).read_text(), name
    assert f"SHA-256 `{digest}`" in (bundle / "model_card.md").read_text()


def test_a_candidate_asking_for_weights_another_fell_back_from_still_stops_with_the_reason(offline):
    profile = replace(get_profile("smoke"), pretrained="imagenet")
    own = replace(CNN, name="own", fixed={**CNN.fixed, "pretrained": "imagenet"})
    with pytest.raises(WeightsUnavailable, match=f"{ARCH}: ImageNet weights are not in the cache"):
        start_weights([CNN, own], profile, log=lambda m: None)
