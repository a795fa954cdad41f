"""The generic training loop: batch-dict models, early stopping, OOM retry, schedules, augmentation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn

from benchmark.candidates.augment import augment_batch
from benchmark.candidates.base import TrialContext
from benchmark.candidates.batches import BatchSource, in_background
from benchmark.candidates.torch_device import resolve_device, run_with_oom_retry
from benchmark.candidates.torch_train import (
    NonFiniteLoss,
    TrainConfig,
    _sample_order,
    enable_mc_dropout,
    make_optimizer,
    make_scheduler,
    predict_outputs,
    train_model,
)
from benchmark.errors import UserError

CPU = torch.device("cpu")


class Fusion(nn.Module):
    """A two-input model of the shape fusion families will use: {"image", "tabular"} -> logit."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                                  nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Sequential(nn.Linear(4 + 3, 8), nn.ReLU(), nn.Dropout(0.3), nn.Linear(8, 1))

    def forward(self, batch):
        return self.head(torch.cat([self.conv(batch["image"]), batch["tabular"]], 1)).reshape(-1)


def fusion_data(n: int = 200, seed: int = 0):
    """Label = bright image OR positive first register column."""
    rng = np.random.default_rng(seed)
    tab = rng.normal(size=(n, 3)).astype(np.float32)
    bright = rng.random(n) < 0.3
    imgs = rng.integers(0, 60, (n, 8, 8)).astype(np.uint8)
    imgs[bright] += 150
    y = (bright | (tab[:, 0] > 0.8)).astype(np.float32)
    return {"image": imgs, "tabular": tab, "y": y}


def prepare(batch, generator):
    batch["image"] = batch["image"].unsqueeze(1).float() / 255.0
    return batch


def auc(y, s):
    from sklearn.metrics import roc_auc_score

    return roc_auc_score(y, s)


def test_batch_dict_model_learns_from_images_and_register_columns():
    torch.set_num_threads(1)
    train, valid = fusion_data(200, 0), fusion_data(100, 1)
    vsrc = BatchSource({"image": valid["image"], "tabular": valid["tabular"]}, CPU)

    def evaluate(model, bs):
        return auc(valid["y"], predict_outputs(model, vsrc, batch_size=bs, prepare=prepare, device=CPU).numpy())

    ctx = TrialContext(seed=0)
    res = train_model(Fusion, BatchSource(train, CPU), TrainConfig(lr=1e-2, batch_size=32, epochs=8, patience=None),
                      ctx, prepare=prepare, device=CPU, evaluate=evaluate)
    assert res.best_score > 0.9
    assert [s for s, _ in ctx.history] == list(range(8))
    assert res.history[-1]["loss"] < res.history[0]["loss"]


def test_early_stopping_keeps_the_best_epochs_weights():
    scores = iter([0.5, 0.9, 0.6, 0.7, 0.8])
    snapshots = []

    def evaluate(model, bs):
        snapshots.append({k: v.clone() for k, v in model.state_dict().items()})
        return next(scores)

    res = train_model(Fusion, BatchSource(fusion_data(64), CPU), TrainConfig(batch_size=16, epochs=5, patience=2),
                      TrialContext(seed=0), prepare=prepare, device=CPU, evaluate=evaluate)
    assert len(snapshots) == 4                         # stopped 2 epochs after the best
    assert res.best_epoch == 1 and res.best_score == 0.9
    for k, v in res.model.state_dict().items():
        assert torch.equal(v, snapshots[1][k])


def test_same_seed_trains_the_same_model_twice_on_cpu():
    def fit():
        cfg = TrainConfig(batch_size=16, epochs=2, balanced_sampler=True, pos_weight=2.0)
        return train_model(Fusion, BatchSource(fusion_data(64), CPU), cfg, TrialContext(seed=4),
                           prepare=prepare, device=CPU).model.state_dict()

    a, b = fit(), fit()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_oom_retry_halves_the_batch_until_it_fits_and_notes_each_step(monkeypatch):
    import benchmark.candidates.torch_device as tt

    freed = []
    monkeypatch.setattr(tt, "free_memory", lambda: freed.append(1))
    notes = []
    seen = []

    def fn(bs):
        seen.append(bs)
        if bs > 8:
            raise torch.OutOfMemoryError("CUDA out of memory")
        return bs

    assert run_with_oom_retry(fn, 64, notes=notes) == 8
    assert seen == [64, 32, 16, 8] and notes == ["oom: batch 64->32", "oom: batch 32->16", "oom: batch 16->8"]
    assert len(freed) == 3                             # memory released before every retry
    with pytest.raises(torch.OutOfMemoryError, match="even with batch 1"):
        run_with_oom_retry(lambda bs: fn(0 * bs + 99), 2, notes=[])
    with pytest.raises(ValueError):                    # other errors are not retried
        run_with_oom_retry(lambda bs: (_ for _ in ()).throw(ValueError("bug")), 8)


def test_non_finite_loss_fails_the_fit():
    class Nan(Fusion):
        def forward(self, batch):
            return super().forward(batch) * float("nan")

    with pytest.raises(NonFiniteLoss, match="epoch 0"):
        train_model(Nan, BatchSource(fusion_data(32), CPU), TrainConfig(batch_size=16, epochs=2),
                    TrialContext(), prepare=prepare, device=CPU)


def test_batches_cover_every_sample_once_and_drop_last_only_when_asked():
    src = BatchSource({"x": np.arange(10), "y": np.arange(10) * 2.0}, CPU)
    order = torch.randperm(10, generator=torch.Generator().manual_seed(0))
    full = list(src.batches(order, 4))
    assert [len(b["x"]) for b in full] == [4, 4, 2]
    assert torch.equal(torch.cat([b["x"] for b in full]), order)
    assert all(torch.equal(b["y"], b["x"] * 2.0) for b in full)
    assert [len(b["x"]) for b in src.batches(order, 4, drop_last=True)] == [4, 4]
    assert [len(b["x"]) for b in src.batches(order, 16, drop_last=True)] == [10]
    with pytest.raises(ValueError, match="differ in length"):
        BatchSource({"a": np.zeros(3), "b": np.zeros(4)}, CPU)


def test_background_iteration_keeps_order_raises_errors_and_stops_when_closed():
    assert list(in_background(iter(range(50)), depth=2)) == list(range(50))

    def failing():
        yield 1
        raise KeyError("boom")

    with pytest.raises(KeyError, match="boom"):
        list(in_background(failing()))

    produced = []

    def endless():
        i = 0
        while True:
            produced.append(i)
            yield i
            i += 1

    it = in_background(endless(), depth=2)
    assert [next(it) for _ in range(3)] == [0, 1, 2]
    it.close()                                          # the worker stops instead of running forever
    n = len(produced)
    assert n <= 3 + 2 + 2
    import time

    time.sleep(0.05)
    assert len(produced) == n


def test_balanced_sampler_draws_both_classes_about_equally():
    labels = torch.tensor([1.0] * 10 + [0.0] * 990)
    order = _sample_order(1000, labels, True, torch.Generator().manual_seed(0))
    share = labels[order].mean().item()
    assert 0.4 < share < 0.6
    plain = _sample_order(1000, labels, False, torch.Generator().manual_seed(0))
    assert sorted(plain.tolist()) == list(range(1000))


@pytest.mark.parametrize("schedule", ["cosine", "onecycle", "constant"])
def test_schedules_warm_up_then_follow_their_shape(schedule):
    model = nn.Linear(2, 1)
    opt = make_optimizer(model, 1e-2, 1e-4, CPU)
    sched = make_scheduler(opt, schedule, 100, 0.1)
    lrs = []
    for _ in range(100):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] < lrs[9] and max(lrs) == pytest.approx(1e-2, rel=0.05)
    if schedule == "constant":
        assert lrs[-1] == pytest.approx(1e-2)
    else:
        assert lrs[-1] < 1e-3


def test_weight_decay_spares_biases_and_norm_weights():
    opt = make_optimizer(nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4)), 1e-3, 0.05, CPU)
    decayed, free = opt.param_groups
    assert decayed["weight_decay"] == 0.05 and all(p.ndim > 1 for p in decayed["params"])
    assert free["weight_decay"] == 0.0 and len(free["params"]) == 3


def test_mc_dropout_mode_samples_dropout_but_freezes_batch_norm():
    model = Fusion()
    enable_mc_dropout(model)
    assert model.head[2].training and not model.conv[1].training
    batch = {"image": torch.rand(4, 1, 8, 8), "tabular": torch.randn(4, 3)}
    with torch.no_grad():
        a, b = model(dict(batch)), model(dict(batch))
    assert not torch.equal(a, b)


def test_augmentation_is_seeded_off_at_zero_and_keeps_shape():
    x = torch.rand(6, 1, 16, 16)
    assert augment_batch(x, 0.0, torch.Generator().manual_seed(0)) is x
    a = augment_batch(x, 1.0, torch.Generator().manual_seed(1))
    b = augment_batch(x, 1.0, torch.Generator().manual_seed(1))
    c = augment_batch(x, 1.0, torch.Generator().manual_seed(2))
    assert a.shape == x.shape and torch.equal(a, b) and not torch.equal(a, c)
    assert not torch.allclose(a, x) and a.min() > -0.5 and a.max() < 1.5
    # a flip-only transform at tiny strength mirrors about half the images
    img = torch.zeros(200, 1, 8, 8)
    img[..., :4] = 1.0
    out = augment_batch(img, 1e-6, torch.Generator().manual_seed(0))
    flipped = (out[..., 4:].mean(dim=(1, 2, 3)) > 0.5).float().mean().item()
    assert 0.35 < flipped < 0.65


def _device_ops(fn) -> list[str]:
    """Names of the non-view ops ``fn`` runs that produce a tensor on the meta device (a stand-in
    for a GPU: each is a kernel launch there)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Record(TorchDispatchMode):
        ops: list = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            outs = out if isinstance(out, (tuple, list)) else (out,)
            on_device = any(isinstance(o, torch.Tensor) and o.device.type == "meta" for o in outs)
            is_view = any(r.alias_info for r in func._schema.returns if r.alias_info)
            if on_device and not is_view:
                self.ops.append(func.__name__)
            return out

    with Record() as rec:
        fn()
    return rec.ops


def test_on_a_gpu_augmentation_parameters_come_from_the_host_in_one_copy():
    """On an H200 augmenting cost a quarter of resnet18's throughput at batch 64: ~60 small kernels
    per batch in a launch-bound loop. With ``AugmentRandom`` the per-image parameters are drawn on
    the host and copied once; the device runs only the image operations."""
    from benchmark.candidates.augment import AugmentRandom

    x = torch.rand(4, 1, 16, 16, device="meta")
    on_host = AugmentRandom(CPU, 0)
    on_host.device = None          # the meta device has no generator: its noise draw is a stand-in
    ops = _device_ops(lambda: augment_batch(x, 1.0, on_host))
    assert ops.count("_to_copy.default") == 1 and not [o for o in ops if o.startswith("rand.")]
    assert len(ops) <= 20, ops
    import benchmark.candidates.augment as A

    meta = torch.device("meta")             # the same parameters drawn on the device: 40-odd launches
    assert len(_device_ops(lambda: A._parameters(4, 1.0, None, meta, True, torch.float32))) > 35

    # the parameters survive the packing
    img = torch.rand(5, 1, 16, 16)
    a, b = AugmentRandom(CPU, 3), AugmentRandom(CPU, 3)
    direct = augment_batch(img, 1.0, a)
    params = A._parameters(5, 1.0, b.host, CPU, True, img.dtype)
    packed = A._to_device(params, CPU)
    for p, q in zip(params, packed):
        torch.testing.assert_close(q.reshape(p.shape).to(p.dtype), p)
    assert direct.shape == img.shape and torch.isfinite(direct).all()


def test_cuda_without_gpu_is_a_user_error():
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(UserError, match="no CUDA GPU"):
        resolve_device("cuda")
    assert resolve_device("auto") == CPU and resolve_device(None) == CPU


def test_predictions_on_a_gpu_pad_the_last_batch_and_drop_the_padding(monkeypatch):
    """With cuDNN autotuning every new batch shape is benchmarked again, so on a GPU the last
    prediction batch is filled up to the batch size; the outputs are those of the real samples,
    in order, equal to unpadded predictions (eval-mode batch norm: no sample sees another)."""
    import benchmark.candidates.torch_train as tt

    torch.manual_seed(0)
    model = Fusion().eval()
    data = fusion_data(n=70)
    seen = []

    def forward(m, b):
        seen.append(len(b["image"]))
        return m(b)

    src = BatchSource(data, CPU)
    plain = predict_outputs(model, src, batch_size=32, prepare=prepare, device=CPU, forward=forward)
    assert seen == [32, 32, 6]
    seen.clear()
    monkeypatch.setattr(tt, "fixed_batch_shapes", lambda device: True)
    padded = predict_outputs(model, src, batch_size=32, prepare=prepare, device=CPU, forward=forward)
    assert seen == [32, 32, 32]
    assert padded.shape == plain.shape == (70,)
    torch.testing.assert_close(padded, plain)
    seen.clear()
    small = BatchSource(fusion_data(n=5), CPU)     # fewer samples than one batch: one full-size batch
    out = predict_outputs(model, small, batch_size=32, prepare=prepare, device=CPU, forward=forward)
    assert seen == [32] and out.shape == (5,)


def test_only_a_gpu_with_cudnn_autotuning_pads_prediction_batches(monkeypatch):
    from benchmark.candidates.torch_train import fixed_batch_shapes

    monkeypatch.setattr(torch.backends.cudnn, "benchmark", True)
    assert fixed_batch_shapes(torch.device("cuda")) and not fixed_batch_shapes(CPU)
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)   # --deterministic
    assert not fixed_batch_shapes(torch.device("cuda"))
