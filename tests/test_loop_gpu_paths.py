"""The training loop's GPU paths, checked on the CPU: no host syncs per batch, float32 logits under
autocast, auxiliary losses under a GradScaler, backbone widths probed, the determinism switch."""

from __future__ import annotations

import os
from contextlib import contextmanager

import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F
from test_fusion import split, toy_cohort

from benchmark.candidates import torch_train
from benchmark.candidates.backbones import TabularNet, build_timm_model
from benchmark.candidates.base import TrialContext, get_family
from benchmark.candidates.batches import BatchSource
from benchmark.candidates.fusion_modules import AttentionNet, ConcatNet, FiLMNet, GatedNet, _backbone, probe_backbone
from benchmark.candidates.image import ImageNet
from benchmark.candidates.mlp import RegisterNet
from benchmark.candidates.torch_device import configure_determinism
from benchmark.candidates.torch_train import TrainConfig, train_model

NETS = {"joint_concat": ConcatNet, "gated": GatedNet, "film": FiLMNet, "attention": AttentionNet}
N_NUMERIC, CARDS = 3, [4]
_nonzero = torch.nonzero


def tabular(hidden: int = 16) -> TabularNet:
    return TabularNet(N_NUMERIC, CARDS, hidden=hidden, n_layers=2, dropout=0.0, norm="layer", embed_dim=4,
                      activation="relu")


def fusion_net(name: str, *, arch: str = "test_resnet", size: int = 16, aux_weight: float = 0.5,
               dropout: float = 0.0, seed: int = 0) -> torch.nn.Module:
    """A tiny fusion net built as ``NeuralFusion.network`` builds it (widths probed once)."""
    torch.manual_seed(seed)
    backbone = _backbone(arch, None, 0.0, seed)
    shape = probe_backbone(backbone, size)
    extra = {"film": {"film_stage": 2},
             "attention": {"n_tokens": shape["n_tokens"], "map_dim": shape["map_dim"], "n_tab_tokens": 2,
                           "n_heads": 4, "n_layers": 1}}.get(name, {})
    return NETS[name](backbone, tabular(), img_dim=shape["img_dim"], tab_dim=16, fusion_dim=16, dropout=dropout,
                      aux_weight=aux_weight, pos_weight=2.0, **extra)


def batch(has: list[bool], *, size: int = 16, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    n = len(has)
    has_t = torch.tensor(has)
    image = torch.randn(n, 1, size, size, generator=g) * has_t[:, None, None, None]   # blank where no image
    codes = torch.randint(0, CARDS[0], (n, 1), generator=g).float()
    return {"image": image, "has_image": has_t,
            "tabular": torch.cat([torch.randn(n, N_NUMERIC, generator=g), codes], dim=1),
            "y": (torch.arange(n) % 2).float()}


MIXED = [True, False, True, True, False, True]
ALL = [True] * 6
NONE = [False] * 4


@contextmanager
def no_host_sync(monkeypatch):
    """Every way a forward pass could read a device tensor back on the host raises."""
    def refuse(what):
        def fail(*args, **kwargs):
            raise AssertionError(f"host sync in the hot path: {what}")
        return fail

    get = torch.Tensor.__getitem__

    def getitem(self, index):
        parts = index if isinstance(index, tuple) else (index,)
        if any(isinstance(p, torch.Tensor) and p.dtype == torch.bool for p in parts):
            raise AssertionError("host sync in the hot path: boolean-mask indexing")
        return get(self, index)

    with monkeypatch.context() as m:
        for name in ("__bool__", "item", "nonzero", "tolist", "__float__", "__int__", "cpu", "numpy"):
            m.setattr(torch.Tensor, name, refuse(f"Tensor.{name}"))
        m.setattr(torch, "nonzero", refuse("torch.nonzero"))
        m.setattr(torch.Tensor, "__getitem__", getitem)
        yield


def train_step_loss(net, b) -> torch.Tensor:
    logits = net(b)
    loss = F.binary_cross_entropy_with_logits(logits.float(), b["y"])
    aux = net.pop_aux_loss() if hasattr(net, "pop_aux_loss") else None
    return loss if aux is None else loss + aux


# ----------------------------------------------------------------------------- 1. no host syncs

@pytest.mark.parametrize("autocast", [False, True], ids=["fp32", "bf16"])
@pytest.mark.parametrize("rows", [MIXED, ALL, NONE], ids=["mixed", "all_images", "no_images"])
@pytest.mark.parametrize("name", list(NETS))
def test_fusion_forward_and_backward_read_nothing_back_from_the_device(monkeypatch, name, rows, autocast):
    net = fusion_net(name).train()
    b = batch(rows)
    with no_host_sync(monkeypatch):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            loss = train_step_loss(net, b)
        loss.backward()
        net.eval()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            net(b), net.embed(b)
    assert torch.isfinite(loss)
    assert net.aux_tab.weight.grad is not None and net.missing.grad is not None


def test_mlp_forward_and_backward_read_nothing_back_from_the_device(monkeypatch):
    torch.manual_seed(0)
    net = RegisterNet(tabular()).train()
    b = batch(MIXED)
    with no_host_sync(monkeypatch):
        loss = train_step_loss(net, b)
        loss.backward()
        net.eval()
        net(b), net.embed(b)
    assert all(p.grad is not None for p in net.parameters())


def _count_host_reads(monkeypatch, run) -> int:
    count = 0

    def counting(orig):
        def wrapped(*args, **kwargs):
            nonlocal count
            count += 1
            return orig(*args, **kwargs)
        return wrapped

    with monkeypatch.context() as m:
        for name in ("__bool__", "item", "nonzero", "tolist", "__float__", "__int__", "cpu"):
            m.setattr(torch.Tensor, name, counting(getattr(torch.Tensor, name)))
        m.setattr(torch, "nonzero", counting(torch.nonzero))
        run()
    return count


@pytest.mark.parametrize("name", ["joint_concat", "attention"])
def test_host_reads_of_the_training_loop_do_not_grow_with_the_number_of_batches(monkeypatch, name):
    b = batch([True, False] * 16, seed=1)
    src = BatchSource({k: v.numpy() for k, v in b.items()}, torch.device("cpu"))

    def run(batch_size: int):
        cfg = TrainConfig(lr=1e-3, batch_size=batch_size, epochs=2, patience=None, schedule="cosine")
        return lambda: train_model(lambda: fusion_net(name), src, cfg, TrialContext(seed=0),
                                   prepare=lambda bb, g: bb, device=torch.device("cpu"))

    few, many = _count_host_reads(monkeypatch, run(16)), _count_host_reads(monkeypatch, run(4))
    assert few == many, (few, many)      # 2 vs 8 batches an epoch: the reads are per epoch


# ----------------------------------------------------------------------------- 1. same outputs as before

def old_logits(net, b) -> torch.Tensor:
    """The forward pass before this change: the backbone only on the rows with an image."""
    has = b["has_image"]
    n = has.shape[0]
    idx = _nonzero(has).reshape(-1)
    tab = net.tabular.features(b["tabular"])
    x = b["image"].index_select(0, idx)
    if isinstance(net, AttentionNet):
        d, T = net.img_proj.out_features, net.n_tokens
        tok = net.missing_token.expand(n, T, d).clone()
        if len(idx):
            t = net.tokens(net.backbone.forward_features(x))
            tok = tok.index_copy(0, idx, net.img_proj(t) + net.pos)
        tab_tok = net.tab_proj(tab).reshape(n, net.n_tab_tokens, d)
        seq = torch.cat([net.cls.expand(n, -1, -1), tok + net.kind[0], tab_tok + net.kind[1]], dim=1)
        mask = torch.zeros(n, seq.shape[1], dtype=torch.bool)
        mask[:, 2:1 + T] = ~has[:, None]
        fused = net.norm(net.encoder(seq, src_key_padding_mask=mask)[:, 0])
    else:
        img = net.missing.expand(n, -1).clone()
        if len(idx):
            if isinstance(net, FiLMNet):
                net._cond = net.film(tab).index_select(0, idx)
            try:
                vec = net.pooled(net.backbone.forward_features(x))
            finally:
                net._cond = None
            img = img.index_copy(0, idx, vec)
        if isinstance(net, GatedNet):
            z = torch.sigmoid(net.gate(torch.cat([img, tab], dim=1)))
            fused = z * torch.tanh(net.proj_img(img)) + (1 - z) * torch.tanh(net.proj_tab(tab))
        else:
            fused = net.mix(torch.cat([img, tab], dim=1))
    return net.head(fused).reshape(-1)


@pytest.mark.parametrize("rows", [MIXED, ALL, NONE], ids=["mixed", "all_images", "no_images"])
@pytest.mark.parametrize("name", list(NETS))
def test_fusion_outputs_equal_the_former_subset_forward(name, rows):
    net = fusion_net(name, dropout=0.2)
    for m in net.modules():     # trained-looking batch-norm statistics
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 2.0)
    b = batch(rows, seed=2)
    net.eval()
    with torch.no_grad():
        torch.testing.assert_close(net(b), old_logits(net, b), rtol=1e-5, atol=1e-6)
    if all(rows):               # training mode (batch statistics, dropout) too when every row has an image
        net.train()
        torch.manual_seed(5)
        new = net(b)
        torch.manual_seed(5)
        torch.testing.assert_close(new, old_logits(net, b), rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------- 2. float32 logits

def _distinct(x: torch.Tensor) -> int:
    return len(torch.unique(x.detach().float()))


def test_timm_classifier_runs_in_float32_under_bf16_autocast():
    torch.manual_seed(0)
    plain = build_timm_model("test_resnet", seed=0).eval()
    net = ImageNet(build_timm_model("test_resnet", seed=0)).eval()
    b = {"image": torch.randn(256, 1, 32, 32, generator=torch.Generator().manual_seed(0))}
    with torch.no_grad():
        fp32 = net(b)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            mixed, before = net(b), plain(b["image"]).reshape(-1)
    assert fp32.dtype == mixed.dtype == torch.float32
    assert _distinct(fp32) == _distinct(mixed) == 256
    assert before.dtype == torch.bfloat16 and _distinct(before) < 256      # what float32 logits avoid
    assert [k.removeprefix("net.") for k in net.state_dict()] == list(plain.state_dict())


@pytest.mark.parametrize("name", list(NETS))
def test_fusion_logits_and_auxiliary_losses_are_float32_under_bf16_autocast(name):
    net = fusion_net(name)
    b = batch([True, False] * 64, seed=3)
    net.eval()
    with torch.no_grad():
        fp32 = net(b)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            mixed = net(b)
    assert mixed.dtype == torch.float32
    assert _distinct(mixed) == _distinct(fp32)
    net.train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        net(b)
    assert net.pop_aux_loss().dtype == torch.float32


def test_mlp_logits_are_float32_under_bf16_autocast():
    torch.manual_seed(0)
    net = RegisterNet(tabular(64)).eval()
    b = batch([False] * 256, seed=4)
    with torch.no_grad():
        fp32 = net(b)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            mixed = net(b)
    assert mixed.dtype == torch.float32 and _distinct(mixed) == _distinct(fp32) == 256


# ----------------------------------------------------------------------------- 3. auxiliary losses, GradScaler

def _grads(net) -> dict[str, torch.Tensor]:
    return {k: p.grad.clone() for k, p in net.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("name", list(NETS))
def test_auxiliary_gradients_are_scaled_and_unscaled_like_the_main_loss(name):
    net = fusion_net(name, aux_weight=0.7).train()
    b = batch(MIXED, seed=6)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    train_step_loss(net, b).backward()
    plain = _grads(net)
    opt.zero_grad(set_to_none=True)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 12)
    scaler.scale(train_step_loss(net, b)).backward()
    scaler.unscale_(opt)
    scaled = _grads(net)
    assert set(scaled) == set(plain) and {"aux_img.weight", "aux_tab.weight"} <= set(plain)
    for k in plain:
        torch.testing.assert_close(scaled[k], plain[k], rtol=1e-4, atol=1e-7, msg=k)


def test_a_non_finite_auxiliary_loss_makes_the_scaler_skip_the_step():
    net = fusion_net("joint_concat").train()
    with torch.no_grad():
        net.aux_tab.bias.fill_(float("nan"))
    b = batch(MIXED, seed=7)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 12)
    before = {k: v.detach().clone() for k, v in net.named_parameters()}
    scaler.scale(train_step_loss(net, b)).backward()
    scaler.step(opt)
    scaler.update()
    assert scaler.get_scale() == 2.0 ** 11
    for k, v in net.named_parameters():
        torch.testing.assert_close(v, before[k], equal_nan=True, msg=k)


def test_training_loop_with_fp16_and_a_grad_scaler_trains_the_auxiliary_heads(monkeypatch):
    monkeypatch.setattr(torch_train, "amp_dtype", lambda device: torch.float16)
    made = []
    real = torch.amp.GradScaler

    def scaler(*args, **kwargs):
        made.append(real(*args, **kwargs))
        return made[-1]

    monkeypatch.setattr(torch.amp, "GradScaler", scaler)
    b = batch([True, False] * 16, seed=8)
    src = BatchSource({k: v.numpy() for k, v in b.items()}, torch.device("cpu"))
    start = fusion_net("gated", aux_weight=0.5).state_dict()
    cfg = TrainConfig(lr=1e-2, batch_size=8, epochs=2, patience=None, grad_clip=1.0)
    result = train_model(lambda: fusion_net("gated", aux_weight=0.5), src, cfg, TrialContext(seed=0),
                         prepare=lambda bb, g: bb, device=torch.device("cpu"))
    assert made and made[0].is_enabled()
    assert all(np.isfinite(h["loss"]) for h in result.history)
    for k in ("aux_img.weight", "aux_tab.weight", "head.1.weight"):
        assert not torch.equal(result.model.state_dict()[k], start[k]), k


# ----------------------------------------------------------------------------- 4. pre-logit width

WIDE = "mobilenetv3_small_050"     # pooled features 288 wide, pre-logits 1024 (a 1x1 conv after pooling)


def test_the_wide_architecture_has_a_pre_logit_width_other_than_num_features():
    net = timm.create_model(WIDE, in_chans=1, num_classes=1)
    assert probe_backbone(net, 32)["img_dim"] == 1024 != net.num_features


@pytest.mark.parametrize("name", list(NETS))
def test_fusion_nets_build_and_run_where_pre_logits_are_wider_than_num_features(name):
    net = fusion_net(name, arch=WIDE, size=32).train()
    assert net.img_dim == 1024
    b = batch(MIXED, size=32, seed=9)
    train_step_loss(net, b).backward()
    net.eval()
    with torch.no_grad():
        assert net(b).shape == (6,)


@pytest.fixture(scope="module")
def wide_cohort():
    data, _ = toy_cohort(n=24, size=32, seed=5)
    return split(data, seed=0, frac=0.5)


@pytest.mark.parametrize("name", ["attention", "film"])
def test_fusion_family_fits_a_wide_backbone(wide_cohort, name):
    train, test = wide_cohort
    extra = {"film": {"film_stage": 2}, "attention": {"n_tab_tokens": 2}}[name]
    fam = get_family(name)(arch=WIDE, batch_size=8, tab_hidden=16, fusion_dim=16, patience=None, **extra)
    fam.fit(train, test, TrialContext(seed=0, max_epochs=1, image_size=32, extra={"n_threads": 1}))
    assert np.all(np.isfinite(fam.predict_proba(test)))


def test_timm_cnn_embedding_width_is_the_probed_pre_logit_width(wide_cohort):
    train, test = wide_cohort
    fam = get_family("timm_cnn")(arch=WIDE, batch_size=8, epochs=1, pretrained=False)
    fam.fit(train, None, TrialContext(seed=0, max_epochs=1, image_size=32, extra={"n_threads": 1}))
    assert fam.embed_dim() == 1024
    assert fam.embed(test).shape == (len(test), 1024)
    without = test.subset(np.arange(len(test)))
    without.images = without.image_owner = None
    assert fam.embed(without).shape == (len(test), 1024)


def test_frozen_embeddings_have_the_pre_logit_width_with_and_without_images(wide_cohort):
    """A part without images gets NaN rows as wide as the encoder's pre-logits, so the scaler and
    PCA fitted on a part with images can read them (mobilenetv3: 1024, num_features 288)."""
    from benchmark.candidates.fusion_embed import frozen_embeddings

    train, test = wide_cohort
    assert frozen_embeddings(test, WIDE, None).shape == (len(test), 1024)
    without = test.subset(np.arange(len(test)))
    without.images = without.image_owner = None
    E = frozen_embeddings(without, WIDE, None)
    assert E.shape == (len(test), 1024) and np.isnan(E).all()


# ----------------------------------------------------------------------------- 5. determinism switch

@pytest.fixture
def torch_flags(monkeypatch):
    """Leave the process-wide flags (and CUBLAS_WORKSPACE_CONFIG) as the test found them."""
    saved = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
             torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic)
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    yield
    torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
    torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = saved[2], saved[3]


def test_determinism_switch_sets_and_clears_the_torch_flags(torch_flags):
    torch.backends.cudnn.benchmark = True
    configure_determinism(True, torch.device("cpu"))
    assert torch.are_deterministic_algorithms_enabled() and torch.is_deterministic_algorithms_warn_only_enabled()
    assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
    if not torch.cuda.is_initialized():
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    configure_determinism(False, torch.device("cpu"))
    assert not torch.are_deterministic_algorithms_enabled()
    assert not torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark   # CPU: left as it was
    configure_determinism(False, torch.device("cuda"))        # no GPU needed: only flags are set
    assert torch.backends.cudnn.benchmark and not torch.are_deterministic_algorithms_enabled()


def test_training_reads_the_switch_from_the_context_and_repeats_itself(torch_flags):
    b = batch([True, False] * 8, seed=10)
    src = BatchSource({k: v.numpy() for k, v in b.items()}, torch.device("cpu"))
    cfg = TrainConfig(lr=1e-2, batch_size=8, epochs=2, patience=None)

    def fit(deterministic: bool):
        ctx = TrialContext(seed=0, extra={"deterministic": deterministic})
        return train_model(lambda: fusion_net("film"), src, cfg, ctx, prepare=lambda bb, g: bb,
                           device=torch.device("cpu")).model.state_dict()

    first = fit(True)
    assert torch.are_deterministic_algorithms_enabled()
    second = fit(True)
    for k in first:
        assert torch.equal(first[k], second[k]), k
    fit(False)
    assert not torch.are_deterministic_algorithms_enabled()
