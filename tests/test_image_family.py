"""The timm_cnn family: per-patient aggregation, learning, OOM retry, weights, determinism."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn

from benchmark.candidates.base import TrialContext, get_family
from benchmark.candidates.backbones import (
    WEIGHTS_ENV,
    CroppedConv2d,
    _live_taps,
    aggregate_per_patient,
    build_timm_model,
    crop_small_map_convs,
    find_weights,
    resolve_weights,
    temper_head,
)
from benchmark.candidates.image import ImageNet, TimmCNN
from benchmark.candidates.scoring import safe_auc as _auc
from benchmark.data.cohort import PatientData
from benchmark.errors import UserError

ARCH = "test_resnet"   # timm's 0.4M-parameter test network


def toy(n: int = 100, *, seed: int = 0, size: int = 16, prevalence: float = 0.4, patch: int = 5) -> PatientData:
    """1-2 images per patient; positives carry a uniform bright patch, negatives a checkerboard
    patch with the same mean, so brightness alone does not separate them (an untrained net scores ~0.5)."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < prevalence).astype(np.int64)
    owner = np.repeat(np.arange(n), rng.integers(1, 3, n))
    imgs = rng.integers(0, 90, (len(owner), size, size)).astype(np.uint8)
    checker = np.where(np.add.outer(np.arange(patch), np.arange(patch)) % 2 == 0, 145, 255).astype(np.uint8)
    for i, o in enumerate(owner):
        r, c = rng.integers(1, size - patch - 1, 2)
        imgs[i, r:r + patch, c:c + patch] = 200 if y[o] else checker
    return PatientData(patients=np.arange(n), register=None, images=imgs, image_owner=owner, y=y)


def ctx(**kw) -> TrialContext:
    kw.setdefault("extra", {"n_threads": 1})
    return TrialContext(device="cpu", seed=kw.pop("seed", 0), **kw)


@pytest.fixture(scope="module")
def fitted():
    torch.set_num_threads(1)
    train, valid, test = toy(100, seed=0), toy(40, seed=1), toy(80, seed=2)
    c = ctx(max_epochs=6, extra={"n_threads": 1, "mc_passes": 3})
    fam = get_family("timm_cnn")(arch=ARCH, lr=3e-3, batch_size=16, epochs=50, aug_strength=0.0,
                                 drop_rate=0.2, patience=None)
    fam.fit(train, valid, c)
    return fam, c, test


def test_family_is_registered_as_image_family():
    cls = get_family("timm_cnn")
    assert cls is TimmCNN and cls.uses_images and not hasattr(cls, "modality")


def test_mean_logit_and_max_logit_aggregation_with_hand_made_logits():
    logits = np.array([0.0, 2.0, -1.0, 4.0, -3.0])
    owner = np.array([0, 0, 2, 2, 2])
    mean = aggregate_per_patient(logits, owner, 3, "mean")
    mx = aggregate_per_patient(logits, owner, 3, "max")
    np.testing.assert_allclose(mean[[0, 2]], [1.0, 0.0])
    np.testing.assert_allclose(mx[[0, 2]], [2.0, 4.0])
    assert np.isnan(mean[1]) and np.isnan(mx[1])

    data = PatientData(patients=np.arange(3), register=None, images=np.zeros((5, 4, 4), np.uint8),
                       image_owner=owner, y=None)
    for how, expect in (("mean", [1.0, 0.0]), ("max", [2.0, 4.0])):
        fam = TimmCNN(arch=ARCH)
        fam.aggregate_, fam.prevalence_ = how, 0.25
        probs = fam.patient_probs(logits, owner, data)
        np.testing.assert_allclose(probs[[0, 2]], 1 / (1 + np.exp(-np.array(expect))))
        assert probs[1] == 0.25          # no images: the training prevalence


class _MeanPixel(nn.Module):
    """A stand-in network whose logit is the image's mean pixel value."""

    num_features = 1

    def forward(self, x):
        return x.mean(dim=(1, 2, 3)).unsqueeze(1)


def test_images_of_one_patient_all_go_to_that_patient():
    # patient k's images have pixel values 10k+j; patient 2 has none
    owner = np.array([0, 0, 1, 3, 3, 3])
    values = np.array([0, 1, 10, 30, 31, 32], dtype=np.uint8)
    imgs = np.repeat(values, 9).reshape(6, 3, 3)
    data = PatientData(patients=np.arange(4), register=None, images=imgs, image_owner=owner, y=None)
    fam = TimmCNN(arch=ARCH)
    fam.model_, fam.device_, fam.eval_batch_size_ = ImageNet(_MeanPixel()), torch.device("cpu"), 2
    fam.stats_, fam._aug, fam._hflip = (0.0, 1 / 255.0), 0.0, False
    fam.aggregate_, fam.prevalence_, fam._notes, fam.n_threads_ = "mean", 0.3, [], 1
    probs = fam.predict_proba(data)
    expect = 1 / (1 + np.exp(-np.array([0.5, 10.0, 31.0])))
    np.testing.assert_allclose(probs[[0, 1, 3]], expect, rtol=1e-6)
    assert probs[2] == 0.3
    assert fam.no_image_mask(data).tolist() == [False, False, True, False]
    assert any("1 patient(s) without images" in n for n in fam._notes)


def test_tiny_cnn_learns_planted_patch_to_patient_auc_above_0_9(fitted):
    fam, c, test = fitted
    assert _auc(test.y, fam.predict_proba(test)) > 0.9
    # the same model, each patient predicted alone: images follow their owner through the batch path
    probs = fam.predict_proba(test)
    for i in (0, 7, 41):
        np.testing.assert_allclose(fam.predict_proba(test.subset(np.array([i])))[0], probs[i], rtol=1e-5)


def test_pruning_hook_called_once_per_epoch_and_epochs_capped_by_profile(fitted):
    fam, c, _ = fitted
    assert [step for step, _ in c.history] == list(range(6))     # epochs=50 capped by max_epochs=6
    assert len(fam.history_) == 6


def test_embed_gives_pooled_features_per_patient_and_nan_without_images(fitted):
    fam, _, test = fitted
    emb = fam.embed(test)
    assert emb.shape == (len(test), fam.model_.net.num_features)
    assert np.isfinite(emb).all()
    no_img = PatientData(patients=np.arange(2), register=None, images=np.zeros((0, 16, 16), np.uint8),
                         image_owner=np.zeros(0, np.int64), y=None)
    assert np.isnan(fam.embed(no_img)).all() and fam.embed(no_img).shape == emb[:2].shape


def test_mc_dropout_members_differ_between_passes(fitted):
    fam, _, test = fitted
    members = fam.predict_members(test)
    assert members.shape == (3, len(test))
    assert np.ptp(members, axis=0).max() > 1e-4
    assert np.all((members > 0) & (members < 1))


def test_pruner_stops_training_by_raising_trial_pruned():
    import optuna

    class PruneAtStep1:
        def report(self, value, step):
            self.last = step

        def should_prune(self):
            return self.last >= 1

    c = ctx(trial=PruneAtStep1())
    fam = TimmCNN(arch=ARCH, batch_size=16, epochs=4, aug_strength=0.0)
    with pytest.raises(optuna.TrialPruned):
        fam.fit(toy(24, seed=3), toy(16, seed=4), c)
    assert [s for s, _ in c.history] == [0, 1]


def test_same_seed_gives_same_predictions_twice_on_cpu():
    train, valid = toy(32, seed=5), toy(16, seed=6)
    runs = [TimmCNN(arch=ARCH, batch_size=16, epochs=2, aug_strength=1.0, imbalance="sampler")
            .fit(train, valid, ctx(seed=3)).predict_proba(valid) for _ in range(2)]
    np.testing.assert_array_equal(runs[0], runs[1])


def test_out_of_memory_in_first_step_halves_batch_and_notes_it(monkeypatch):
    calls = {"n": 0}
    original = ImageNet.forward

    def flaky(self, batch):
        calls["n"] += 1
        if calls["n"] == 1:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return original(self, batch)

    monkeypatch.setattr(ImageNet, "forward", flaky)
    c = ctx()
    fam = TimmCNN(arch=ARCH, batch_size=16, epochs=1, aug_strength=0.0).fit(toy(40, seed=7), toy(16, seed=8), c)
    assert "oom: batch 16->8" in c.notes
    assert fam.batch_size_ == 8 and fam.history_[0]["batch_size"] == 8


def _save(model: nn.Module, path):
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))


def test_pretrained_weights_from_local_file_are_loaded_and_first_conv_summed(tmp_path):
    import timm

    torch.manual_seed(123)
    source = timm.create_model(ARCH)                      # 3 channels, 1000 classes, like ImageNet weights
    path = tmp_path / f"{ARCH}.safetensors"
    _save(source, path)
    src = source.state_dict()

    net = build_timm_model(ARCH, weights=resolve_weights(ARCH, str(path)), seed=0)
    got = net.state_dict()
    np.testing.assert_allclose(got["conv1.0.weight"], src["conv1.0.weight"].sum(1, keepdim=True), rtol=1e-6)
    assert torch.equal(got["layer2.0.conv1.weight"], src["layer2.0.conv1.weight"])
    assert got["fc.weight"].shape == (1, src["fc.weight"].shape[1])

    # through fit, with a learning rate too small to move the weights
    c = ctx()
    fam = TimmCNN(arch=ARCH, pretrained=str(tmp_path), lr=1e-12, batch_size=16, epochs=1, aug_strength=0.0)
    fam.fit(toy(20, seed=9), None, c)
    assert f"weights: {ARCH}.safetensors" in c.notes
    np.testing.assert_allclose(fam.model_.net.state_dict()["layer3.0.conv2.weight"],
                               src["layer3.0.conv2.weight"], atol=1e-6)


def test_weights_found_in_timm_hub_cache_layout_via_env_folder(tmp_path, monkeypatch):
    import timm

    tagged = timm.models.get_pretrained_cfg(ARCH).tag
    snap = tmp_path / "hub" / f"models--timm--{ARCH}.{tagged}" / "snapshots" / "abc123"
    snap.mkdir(parents=True)
    _save(timm.create_model(ARCH), snap / "model.safetensors")
    monkeypatch.setenv(WEIGHTS_ENV, str(tmp_path))
    assert find_weights(ARCH, tmp_path) == snap / "model.safetensors"
    assert resolve_weights(ARCH, None) == snap / "model.safetensors"       # unset: the folder's weights
    assert resolve_weights(ARCH, False) is None                             # pretrained: false


def test_missing_named_weights_raise_user_error_naming_path_and_arch(tmp_path, monkeypatch):
    monkeypatch.delenv(WEIGHTS_ENV, raising=False)
    missing = tmp_path / "nope.safetensors"
    with pytest.raises(UserError, match="nope.safetensors.*test_resnet|test_resnet.*nope.safetensors"):
        resolve_weights(ARCH, str(missing))
    with pytest.raises(UserError, match=f"{WEIGHTS_ENV}.*{ARCH}|{ARCH}.*{WEIGHTS_ENV}"):
        resolve_weights(ARCH, True)
    monkeypatch.setenv(WEIGHTS_ENV, str(tmp_path))        # a folder without this architecture
    with pytest.raises(UserError, match=str(tmp_path)):
        resolve_weights(ARCH, True)
    assert resolve_weights(ARCH, None) is None             # unset + empty folder: random init
    with pytest.raises(UserError, match="nope.safetensors"):
        TimmCNN(arch=ARCH, pretrained=str(missing), epochs=1).fit(toy(10), None, ctx())


def test_weights_of_another_architecture_are_a_user_error(tmp_path):
    import timm

    path = tmp_path / "other.safetensors"
    _save(timm.create_model("test_efficientnet"), path)
    with pytest.raises(UserError, match="other.safetensors"):
        build_timm_model(ARCH, weights=path)


def test_bad_candidate_parameters_are_user_errors():
    with pytest.raises(UserError, match="not a timm architecture"):
        TimmCNN(arch="resnet_does_not_exist", epochs=1).fit(toy(10), None, ctx())
    with pytest.raises(UserError, match="learning_rate"):
        TimmCNN(arch=ARCH, learning_rate=0.1).fit(toy(10), None, ctx())
    with pytest.raises(UserError, match="aggregate"):
        TimmCNN(arch=ARCH, aggregate="median").fit(toy(10), None, ctx())
    with pytest.raises(UserError, match="arch"):
        TimmCNN().fit(toy(10), None, ctx())


@pytest.mark.parametrize("n,k,stride,groups", [(1, 3, 1, 1), (1, 3, 2, 1), (2, 3, 2, 1), (2, 7, 1, 8), (3, 7, 1, 1),
                                              (4, 7, 1, 8), (2, 3, 1, 1), (5, 5, 2, 2), (1, 5, 1, 8)])
def test_cropped_convolution_gives_the_same_output_and_gradients_as_the_full_one(n, k, stride, groups):
    torch.manual_seed(0)
    full = nn.Conv2d(8, 8, k, stride, k // 2, groups=groups).double()
    cropped = crop_small_map_convs(nn.Sequential(nn.Conv2d(8, 8, k, stride, k // 2, groups=groups).double()))[0]
    cropped.load_state_dict(full.state_dict())
    assert type(cropped) is CroppedConv2d and cropped.state_dict().keys() == full.state_dict().keys()
    x = torch.randn(3, 8, n, n + 1, dtype=torch.double, requires_grad=True)
    outs = []
    for conv in (full, cropped):
        y = conv(x)
        outs.append([y, *torch.autograd.grad((y ** 2).sum() + y.sum(), [x, conv.weight, conv.bias])])
    for a, b in zip(*outs):
        assert a.shape == b.shape
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


def test_timm_models_get_cropped_convolutions_only_where_the_cut_is_exact():
    net = build_timm_model("resnet18")
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    cropped = [m for m in convs if type(m) is CroppedConv2d]
    assert cropped and all(m.kernel_size[0] % 2 == 1 and m.kernel_size != (1, 1) for m in cropped)
    assert all(m.kernel_size == (1, 1) for m in convs if type(m) is nn.Conv2d)   # the downsampling 1x1s stay
    assert _live_taps(1, 3, 1, 1) == (1, 1, 0) and _live_taps(2, 3, 1, 2) == (1, 2, 0)
    assert _live_taps(2, 3, 1, 1) == (0, 3, 1) and _live_taps(8, 3, 1, 1) == (0, 3, 1)   # every tap meets the input


@pytest.mark.parametrize("arch", ["efficientnet_b0", "mobilenetv3_small_050"])
def test_one_logit_heads_start_no_wider_than_linear_default(arch):
    """timm's goog init gives a one-output head U(-1, 1) weights: first logits with a spread of ~19."""
    import timm

    torch.manual_seed(0)
    raw = timm.create_model(arch, in_chans=1, num_classes=1).train()
    net = build_timm_model(arch, seed=0).train()
    x = torch.randn(32, 1, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert float(raw(x).std()) > 3.0                 # the problem this guards against
        assert float(net(x).std()) < 1.0
    head = net.get_classifier()
    assert float(head.weight.std()) == pytest.approx(1 / np.sqrt(3 * head.in_features), rel=1e-5)


def test_heads_already_at_or_below_the_default_spread_are_untouched():
    import timm

    for arch in ("resnet18", "densenet121", "convnext_nano"):
        torch.manual_seed(0)
        raw = timm.create_model(arch, in_chans=1, num_classes=1)
        assert torch.equal(temper_head(raw).get_classifier().weight,
                           build_timm_model(arch, seed=0).get_classifier().weight)
        torch.manual_seed(0)
        assert torch.equal(raw.get_classifier().weight,
                           timm.create_model(arch, in_chans=1, num_classes=1).get_classifier().weight)
