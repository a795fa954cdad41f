"""Pretrained weights from a hub, without internet: a loopback hub (``hub_server``) reached through
``HF_ENDPOINT`` serves timm's tiny ``test_resnet`` in the hub's layout. Downloads land in the
harness cache with a SHA-256 record; a second ask is a cache hit (the hub sees nothing); offline
with nothing cached is one line naming the fetch command; a changed file is refused on load."""

from __future__ import annotations

import io
import json
import contextlib
from pathlib import Path

import pytest
import torch

from benchmark.candidates import weights_store as store
from benchmark.candidates.backbones import build_timm_model
from benchmark.candidates.weights import WEIGHTS_ENV, WeightsUnavailable, choose_weights, read_weights
from benchmark.cli import main
from benchmark.errors import UserError
from hub_server import HubServer

ARCH = "test_resnet"                 # timm's 0.5M-parameter test network
HUB_ID = "timm/test_resnet.r160_in1k"  # its default pretrained weights in timm


@pytest.fixture(scope="module")
def hub_files(tmp_path_factory) -> dict[str, bytes]:
    """``config.json`` and ``model.safetensors`` of a 3-channel, 1000-class test_resnet, as timm writes them."""
    import timm
    from timm.models._hub import save_for_hf

    torch.manual_seed(7)
    folder = tmp_path_factory.mktemp("hub_model")
    save_for_hf(timm.create_model(ARCH), str(folder), safe_serialization=True)
    return {name: (folder / name).read_bytes() for name in ("config.json", "model.safetensors")}


@pytest.fixture
def hub(hub_files, tmp_path, monkeypatch):
    """The loopback hub with test_resnet's ImageNet repository; the cache in tmp_path; online."""
    import huggingface_hub.constants

    monkeypatch.setenv("AFF_BENCHMARK_CACHE", str(tmp_path / "cache"))
    for var in (WEIGHTS_ENV, "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    with HubServer() as server:
        server.add(HUB_ID, hub_files)
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        yield server


def test_imagenet_weights_are_downloaded_into_the_harness_cache_and_recorded(hub, hub_files, tmp_path):
    choice = choose_weights(ARCH, "imagenet")
    assert choice.source == "imagenet" and choice.hub_id == HUB_ID
    assert choice.path == tmp_path / "cache" / "weights" / "timm--test_resnet.r160_in1k" / "model.safetensors"
    assert choice.path.read_bytes() == hub_files["model.safetensors"]
    entry = store.read_record(tmp_path / "cache" / "weights")[HUB_ID]
    assert entry["sha256"] == store.sha256_bytes(hub_files["model.safetensors"])
    assert entry["architecture"] == ARCH and entry["file"] == "timm--test_resnet.r160_in1k/model.safetensors"
    assert hub.gets("model.safetensors") == 1
    rec = choice.record()
    assert rec["label"] == f"ImageNet weights ({HUB_ID})" and rec["sha256"] == entry["sha256"]


def test_a_second_ask_is_a_cache_hit_without_a_request(hub):
    first = choose_weights(ARCH, "imagenet").path
    asked = len(hub.requests)
    assert choose_weights(ARCH, "imagenet").path == first
    assert choose_weights(ARCH, f"hf-hub:{HUB_ID}").path == first
    assert len(hub.requests) == asked and hub.gets("model.safetensors") == 1


def test_hub_weights_are_adapted_to_one_channel_and_the_head_is_new(hub, hub_files):
    from safetensors.torch import load

    src = load(hub_files["model.safetensors"])
    net = build_timm_model(ARCH, weights=choose_weights(ARCH, "imagenet").path, seed=0)
    got = net.state_dict()
    torch.testing.assert_close(got["conv1.0.weight"], src["conv1.0.weight"].sum(1, keepdim=True))   # timm's adapt_input_conv
    assert torch.equal(got["layer2.0.conv1.weight"], src["layer2.0.conv1.weight"])
    assert got["fc.weight"].shape == (1, src["fc.weight"].shape[1])
    assert not torch.allclose(got["fc.weight"][0], src["fc.weight"][0])    # the 1000-class head is not reused
    torch.manual_seed(0)
    fresh = build_timm_model(ARCH, seed=0).state_dict()
    assert not torch.equal(fresh["conv1.0.weight"], got["conv1.0.weight"])


def test_offline_with_nothing_cached_is_one_line_naming_the_fetch_command(hub, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsUnavailable) as err:
        choose_weights(ARCH, "imagenet")
    text = str(err.value)
    assert "\n" not in text and "HF_HUB_OFFLINE" in text
    assert f"python -m benchmark weights fetch {ARCH} --out DIR" in text and f"{WEIGHTS_ENV}=DIR" in text
    assert hub.requests == []


def test_an_unreachable_hub_is_the_same_one_line(hub, monkeypatch):
    import socket

    with socket.socket() as s:   # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    with pytest.raises(WeightsUnavailable, match=f"weights fetch hf-hub:{HUB_ID} --out DIR"):
        choose_weights(ARCH, f"hf-hub:{HUB_ID}")


def test_a_cached_file_that_changed_is_refused_when_loaded(hub, tmp_path):
    path = choose_weights(ARCH, "imagenet").path
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF                      # one byte of a tensor: still a valid safetensors file
    path.write_bytes(bytes(data))
    with pytest.raises(UserError, match="does not match the SHA-256 recorded in .*weights.json"):
        read_weights(path)
    with pytest.raises(UserError, match="does not match the SHA-256"):
        build_timm_model(ARCH, weights=choose_weights(ARCH, "imagenet").path)
    assert [e.state for e in store.entries(tmp_path / "cache" / "weights")] == ["changed"]


def test_a_hub_model_with_pickled_weights_only_is_refused(hub, hub_files):
    hub.add("someone/pickled", {"pytorch_model.bin": b"not loaded", "config.json": hub_files["config.json"]})
    with pytest.raises(UserError, match="only safetensors weights are taken from a hub"):
        choose_weights(ARCH, "hf-hub:someone/pickled")
    assert hub.gets("pytorch_model.bin") == 0


def test_a_hub_model_of_another_architecture_is_refused_before_its_weights_are_downloaded(hub, hub_files):
    config = json.loads(hub_files["config.json"])
    config["architecture"] = "resnet18"
    hub.add("someone/resnet18", {"model.safetensors": hub_files["model.safetensors"],
                                 "config.json": json.dumps(config).encode()})
    with pytest.raises(UserError, match="is a resnet18, but the candidate's architecture is test_resnet"):
        choose_weights(ARCH, "hf-hub:someone/resnet18")
    assert hub.gets("model.safetensors") == 0


def _cli(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(list(argv))
    return code, out.getvalue()


def test_fetch_a_folder_online_then_use_it_offline(hub, tmp_path, monkeypatch):
    folder = tmp_path / "carried"
    code, text = _cli("weights", "fetch", ARCH, "--out", str(folder))
    assert code == 0 and HUB_ID in text and f"{WEIGHTS_ENV}=" in text
    code, text = _cli("weights", "fetch", ARCH, "--out", str(folder))          # again: nothing downloaded
    assert code == 0 and "already there" in text and hub.gets("model.safetensors") == 1

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")       # the machine without internet
    monkeypatch.setenv(WEIGHTS_ENV, str(folder))
    asked = len(hub.requests)
    choice = choose_weights(ARCH, "imagenet")
    assert choice.path == folder / "timm--test_resnet.r160_in1k" / "model.safetensors" and choice.source == "imagenet"
    assert choose_weights(ARCH, None).path == choice.path                      # unset: the folder's weights
    assert len(hub.requests) == asked
    code, text = _cli("weights", "list", str(folder))
    assert code == 0 and HUB_ID in text and " ok" in text

    (folder / "timm--test_resnet.r160_in1k" / "model.safetensors").write_bytes(b"changed")
    code, text = _cli("weights", "list", str(folder))
    assert code == 2 and "changed" in text


def test_random_init_and_local_files_never_reach_the_network(tmp_path, monkeypatch):
    import huggingface_hub
    import huggingface_hub.file_download
    import timm.models._hub

    def refuse(*args, **kwargs):
        raise AssertionError("the network was asked")

    for mod in (huggingface_hub, huggingface_hub.file_download, timm.models._hub):
        for fn in ("hf_hub_download", "get_hf_file_metadata"):
            if hasattr(mod, fn):
                monkeypatch.setattr(mod, fn, refuse)
    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)
    monkeypatch.delenv(WEIGHTS_ENV, raising=False)
    assert choose_weights(ARCH, None).source == "random"
    build_timm_model(ARCH)
    import timm
    from safetensors.torch import save_file

    path = tmp_path / f"{ARCH}.safetensors"
    save_file({k: v.contiguous() for k, v in timm.create_model(ARCH).state_dict().items()}, str(path))
    build_timm_model(ARCH, weights=choose_weights(ARCH, str(path)).path)
    assert choose_weights(ARCH, str(path)).record()["name"] == path.name


def test_a_record_never_leads_outside_its_folder(tmp_path):
    folder = tmp_path / "w"
    folder.mkdir()
    (tmp_path / "outside.safetensors").write_bytes(b"x")
    (folder / store.RECORD).write_text(json.dumps({"format": store.FORMAT, "version": 1, "weights": {
        "a/b": {"file": "../outside.safetensors", "sha256": "0" * 64}}}))
    assert store.lookup(folder, "a/b") is None
    assert Path(tmp_path / "outside.safetensors").exists()
