"""A fast, generic PyTorch training loop for binary classifiers, shared by image and fusion families.

The model's ``forward`` takes a batch dict and returns one logit per sample, so a network
that takes images, register data or both uses the same loop::

    class Net(nn.Module):
        def forward(self, batch):                      # {"image": ..., "tabular": ...}
            return self.cnn(batch["image"]).reshape(-1)

    source = BatchSource({"image": uint8_images, "y": labels.astype("float32")}, device)
    result = train_model(Net, source, TrainConfig(lr=1e-3, epochs=10), ctx,
                         prepare=to_float, evaluate=valid_auc, device=device)
    result.model                                       # best epoch's weights loaded

Speed: the sample-aligned arrays go to the GPU once when they fit in a share of its
free memory (``BatchSource``); otherwise batches are gathered into pinned memory by a
background thread and copied asynchronously. ``prepare(batch, generator)`` turns raw
tensors into model inputs on the device (normalise; augment when ``generator`` is given),
so the hot path has no per-sample Python. bf16 autocast on CUDA (fp16 + GradScaler where
bf16 is missing), channels_last, fused AdamW. One host sync per epoch: no step reads a
tensor back (the loss is summed on the device and read after the epoch; learning-curve
weight snapshots are cloned on the device and copied to the host after the epoch). The one
exception is the fp16 path, where ``GradScaler.step`` reads its inf/NaN flag every step.

Auxiliary losses: a model may define ``pop_aux_loss()`` (the fusion nets do), returning a
scalar tensor from its last training forward or None; the loop adds it to the BCE before
the backward, so a GradScaler scales it, unscales its gradients and skips the step on
inf/NaN exactly as for the main loss. The epoch's ``loss`` in ``history`` is that sum.

Determinism: ``torch_device.configure_determinism`` (what is bit-identical, and where).

Robustness: CUDA out of memory restarts the fit with half the batch (noted in
``ctx.notes``); a NaN/inf loss raises ``NonFiniteLoss``; ``ctx.report(epoch, score)`` after
each epoch lets Optuna prune; early stopping keeps the best epoch's weights. On the CPU a
seed gives the same model twice.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from benchmark.candidates.augment import AugmentRandom
from benchmark.candidates.batches import Batch, BatchSource
from benchmark.candidates.torch_device import amp_dtype, configure_determinism, run_with_oom_retry, seed_everything

# prepare(batch, generator) -> batch; augmentation only when generator is not None (training).
Prepare = Callable[[Batch, "torch.Generator | AugmentRandom | None"], Batch]


class NonFiniteLoss(RuntimeError):
    """The training loss became NaN or infinite (the trial fails with this reason)."""


# ----------------------------------------------------------------------------- training

@dataclass
class TrainConfig:
    """Optimisation settings of one fit (the family maps its hyperparameters onto these)."""

    lr: float = 1e-3
    weight_decay: float = 1e-4
    batch_size: int = 32
    eval_batch_size: int | None = None      # None: 2 x batch_size
    epochs: int = 10
    schedule: str = "cosine"                # cosine | onecycle | constant (all with warmup)
    warmup_frac: float = 0.05               # share of all steps spent warming up
    patience: int | None = 5                # epochs without a better valid score; None: no early stop
    pos_weight: float | None = None         # BCE weight of positives
    balanced_sampler: bool = False          # draw classes equally often (with replacement)
    grad_clip: float | None = None
    target: str = "y"                       # batch key of the float 0/1 labels
    max_samples: int | None = None          # budget: samples seen per fit (whole epochs, at least one)
    drop_last: bool = True                  # drop an epoch's last partial batch (False: keep it if >= 2 samples)
    snapshots: tuple[float, ...] = (0.25, 0.5)   # shares of the step budget whose weights are kept (learning curve)


@dataclass
class TrainResult:
    model: nn.Module
    best_epoch: int                          # -1 when no epoch was scored
    best_score: float
    batch_size: int                          # after any out-of-memory halving
    history: list[dict] = field(default_factory=list)   # per epoch: loss, score, train_s, samples
    epochs: int = 0                          # the epoch budget of this fit (after the sample cap)
    snapshots: dict = field(default_factory=dict)   # share of the step budget -> weights (CPU) at that step
    steps: int = 0                           # optimiser steps taken
    total_steps: int = 0                     # the step budget (epochs x steps per epoch)


def make_optimizer(model: nn.Module, lr: float, weight_decay: float, device: torch.device) -> torch.optim.Optimizer:
    """AdamW; no weight decay on biases and normalisation weights; the fused kernel (CPU and CUDA).

    A model with ``lr_scale(name) -> float`` gets that share of ``lr`` per parameter (the
    fusion networks: a backbone that starts from a trained image model fine-tunes slower).

    On the CPU the fused kernel is about 14x faster than the default per-tensor loop
    (resnet18: 0.08 s vs 1.1 s a step on 2 busy cores).
    """
    scale_of = getattr(model, "lr_scale", None)   # name -> share of ``lr`` (a warm-started backbone's is lower)
    found: dict[tuple[float, float], list] = {}
    for name, p in model.named_parameters():
        if p.requires_grad:
            scale = float(scale_of(name)) if scale_of is not None else 1.0
            found.setdefault((scale, weight_decay if p.ndim > 1 else 0.0), []).append(p)
    groups = [{"params": ps, "weight_decay": wd, "lr": lr * scale} for (scale, wd), ps in found.items()]
    try:
        return torch.optim.AdamW(groups, lr=lr, fused=True)
    except (RuntimeError, TypeError):  # a device or torch version without the fused kernel
        return torch.optim.AdamW(groups, lr=lr)


def make_scheduler(opt: torch.optim.Optimizer, schedule: str, total_steps: int,
                   warmup_frac: float) -> torch.optim.lr_scheduler.LRScheduler:
    """Per-step learning-rate schedule: linear warmup, then cosine / constant, or one-cycle."""
    total_steps = max(1, int(total_steps))
    if schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=[g["lr"] for g in opt.param_groups], total_steps=total_steps,
            pct_start=min(max(warmup_frac, 0.05), 0.5), anneal_strategy="cos")
    warm = int(round(warmup_frac * total_steps))

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / (warm + 1)
        if schedule == "constant":
            return 1.0
        progress = (step - warm) / max(1, total_steps - warm)
        return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))

    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


def _sample_order(n: int, labels: torch.Tensor | None, balanced: bool, gen: torch.Generator) -> torch.Tensor:
    if balanced and labels is not None:
        pos = labels > 0.5
        n_pos = int(pos.sum())
        if 0 < n_pos < n:
            w = torch.where(pos, 0.5 / n_pos, 0.5 / (n - n_pos)).double()
            return torch.multinomial(w, n, replacement=True, generator=gen)
    return torch.randperm(n, generator=gen)


def train_model(build_model: Callable[[], nn.Module], train: BatchSource, cfg: TrainConfig, ctx, *,
                prepare: Prepare, device: torch.device,
                evaluate: Callable[[nn.Module, int], float] | None = None,
                watch: Callable[[nn.Module, int], float] | None = None) -> TrainResult:
    """Train a fresh ``build_model()`` on ``train`` and return it with its best epoch's weights.

    After each epoch ``evaluate(model, eval_batch_size)`` (higher is better, NaN if it cannot
    be scored) goes to ``ctx.report(epoch, score)`` (epochs count from 0); training stops
    after ``cfg.patience`` epochs without improvement. Without ``evaluate`` all epochs run
    and the last weights are kept. Out of memory restarts from scratch with half the batch.

    ``watch(model, eval_batch_size)``: under successive halving (``ctx.monitor``), the value
    reported after the epochs in ``ctx.monitor.epochs`` (``ctx.report_epoch``, which raises
    ``optuna.TrialPruned`` when the pruner stops the trial). It predicts in eval mode and draws
    no random numbers, so it changes nothing in the training.
    """
    eval_bs0 = cfg.eval_batch_size or 2 * cfg.batch_size

    def attempt(batch_size: int) -> TrainResult:
        eval_bs = max(1, eval_bs0 * batch_size // cfg.batch_size)
        return _train_once(build_model, train, cfg, ctx, prepare, device, evaluate, batch_size, eval_bs, watch)

    return run_with_oom_retry(attempt, cfg.batch_size, notes=ctx.notes, what="batch", min_batch=2)


def _train_once(build_model, train: BatchSource, cfg: TrainConfig, ctx, prepare: Prepare, device: torch.device,
                evaluate, batch_size: int, eval_bs: int, watch=None) -> TrainResult:
    seed_everything(ctx.seed)
    configure_determinism(bool((getattr(ctx, "extra", None) or {}).get("deterministic", False)), device)
    # channels_last on the CPU too: oneDNN's convolutions are faster in it (2 cores, 32 px, one
    # training step: efficientnet_b0 2.5x, densenet121 1.3x, convnext_nano 1.1x, resnets equal)
    model = build_model().to(device).to(memory_format=torch.channels_last)
    pop_aux_loss = getattr(model, "pop_aux_loss", None)   # auxiliary losses, added before scaling
    opt = make_optimizer(model, cfg.lr, cfg.weight_decay, device)
    n = len(train)
    epochs = cfg.epochs
    if cfg.max_samples:   # the profile's sample budget, in whole epochs (at least one); deterministic
        epochs = max(1, min(epochs, cfg.max_samples // max(n, 1)))
    steps_per_epoch = max(1, n // batch_size if cfg.drop_last else -(-n // batch_size))
    sched = make_scheduler(opt, cfg.schedule, steps_per_epoch * epochs, cfg.warmup_frac)
    dtype = amp_dtype(device)
    scaler = torch.amp.GradScaler(device.type) if dtype == torch.float16 else None
    order_gen = torch.Generator().manual_seed(int(ctx.seed))
    # on a GPU the per-image augmentation parameters are drawn on the host (one copy per batch, not ~40 kernels)
    aug_gen = (AugmentRandom(device, int(ctx.seed) + 1) if device.type == "cuda"
               else torch.Generator(device=device).manual_seed(int(ctx.seed) + 1))
    labels = train.host.get(cfg.target)
    pos_weight = (torch.tensor(float(cfg.pos_weight), device=device)
                  if cfg.pos_weight not in (None, 1.0) else None)

    best_state, best_score, best_epoch, bad = None, -math.inf, -1, 0
    history: list[dict] = []
    total_steps = steps_per_epoch * epochs
    # optimiser step -> share of the budget whose weights are kept (before the last step only)
    snap_at: dict[int, list[float]] = {}
    for f in cfg.snapshots:
        at = max(1, round(f * total_steps))
        if at < total_steps:
            snap_at.setdefault(at, []).append(f)
    snapshots: dict = {}
    pending: dict = {}
    step = 0
    for epoch in range(epochs):
        model.train()
        t0 = time.perf_counter()
        order = _sample_order(n, labels, cfg.balanced_sampler, order_gen)
        loss_sum = torch.zeros((), device=device)
        n_batches = seen = 0
        for batch in train.batches(order, batch_size, drop_last=cfg.drop_last):
            if len(next(iter(batch.values()))) < 2:
                continue     # batch norm cannot train on one sample
            batch = prepare(batch, aug_gen)
            target = batch[cfg.target].float().reshape(-1)
            with torch.autocast(device.type, dtype=dtype or torch.bfloat16, enabled=dtype is not None):
                logits = model(batch)
            loss = F.binary_cross_entropy_with_logits(logits.float().reshape(-1), target, pos_weight=pos_weight)
            aux = pop_aux_loss() if pop_aux_loss is not None else None
            if aux is not None:
                loss = loss + aux.float()
            opt.zero_grad(set_to_none=True)
            if scaler is not None:
                scaler.scale(loss).backward()
                if cfg.grad_clip:
                    scaler.unscale_(opt)
                    nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                scaler.step(opt)
                scaler.update()
            else:
                loss.backward()
                if cfg.grad_clip:
                    nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                opt.step()
            sched.step()
            step += 1
            if step in snap_at:   # cloned on the device now, copied to the host after the epoch
                state = {k: v.detach().clone() for k, v in model.state_dict().items()}
                pending.update({f: state for f in snap_at[step]})
            loss_sum += loss.detach()
            n_batches += 1
            seen += int(target.shape[0])
        mean_loss = float((loss_sum / max(1, n_batches)).item())   # the epoch's one host sync
        if pending:
            on_host: dict[int, dict] = {}
            for f, state in pending.items():
                if id(state) not in on_host:
                    on_host[id(state)] = {k: v.to("cpu") for k, v in state.items()}
                snapshots[f] = on_host[id(state)]
            pending.clear()
        train_s = time.perf_counter() - t0
        if not math.isfinite(mean_loss):
            raise NonFiniteLoss(f"training loss became {mean_loss} in epoch {epoch}; try a lower learning rate")
        score = float(evaluate(model, eval_bs)) if evaluate is not None else math.nan
        history.append({"epoch": epoch, "loss": mean_loss, "score": score, "train_s": train_s,
                        "samples": seen, "batch_size": batch_size})
        if watch is not None and epoch + 1 in ctx.monitor.epochs:
            ctx.report_epoch(epoch + 1, float(watch(model, eval_bs)))
        if evaluate is None:
            continue
        ctx.report(epoch, score)
        if math.isfinite(score) and score > best_score:
            best_score, best_epoch, bad = score, epoch, 0
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        elif math.isfinite(score):      # an unscorable epoch (one class in valid) is not a bad one
            bad += 1
            if cfg.patience is not None and bad >= cfg.patience:
                break
    if best_state is not None:
        model.load_state_dict(best_state)
    del opt, sched, best_state
    model.eval()
    return TrainResult(model=model, best_epoch=best_epoch,
                       best_score=best_score if best_epoch >= 0 else math.nan,
                       batch_size=batch_size, history=history, epochs=epochs, snapshots=snapshots,
                       steps=step, total_steps=total_steps)


# ----------------------------------------------------------------------------- inference

def enable_mc_dropout(model: nn.Module) -> nn.Module:
    """Eval mode for normalisation layers, train mode for everything else (MC dropout).

    Dropout (module or functional, via each module's ``training`` flag) and drop-path then
    sample at inference time while batch norm uses its running statistics.
    """
    model.train()
    for m in model.modules():
        if isinstance(m, (nn.modules.batchnorm._BatchNorm, nn.modules.instancenorm._InstanceNorm)):
            m.training = False
    return model


def fixed_batch_shapes(device: torch.device) -> bool:
    """Whether predictions pad their last batch to the full batch size: on a GPU with cuDNN
    autotuning (``cudnn.benchmark``), where every new input shape is benchmarked again.

    On an H200 (``device_check.sh``, resnet18 at 224 px) a trial took about twice the time
    of the images it trained on; how much of that was autotuning was not measured apart. A
    fit's holdout, rung and fold predictions each end in a batch of another size, and cuDNN
    benchmarks every new shape; with every batch the same size a process autotunes once per
    architecture, image size and batch size.
    Batch norm runs on running statistics in eval mode, so a sample's output does not depend on
    the other samples of its batch.
    """
    return device.type == "cuda" and bool(torch.backends.cudnn.benchmark)


def predict_outputs(model: nn.Module, source: BatchSource, *, batch_size: int, prepare: Prepare,
                    device: torch.device, forward: Callable[[nn.Module, Batch], torch.Tensor] | None = None,
                    stochastic: bool = False, notes: list | None = None) -> torch.Tensor:
    """Model outputs for every sample of ``source`` in order, as a float32 CPU tensor.

    ``forward(model, batch)`` defaults to ``model(batch)`` (logits); pass e.g.
    ``lambda m, b: m.embed(b)`` for features. ``stochastic`` runs in MC-dropout mode.
    Out of memory halves the batch (noted in ``notes``).
    """
    if stochastic:
        enable_mc_dropout(model)
    else:
        model.eval()
    call = forward or (lambda m, b: m(b))
    dtype = amp_dtype(device)
    n = len(source)

    def run(bs: int) -> torch.Tensor:
        order = torch.arange(n)
        pad = (-n) % bs if fixed_batch_shapes(device) else 0
        if pad:   # the last batch filled up with copies of sample 0, whose outputs are dropped below
            order = torch.cat([order, torch.zeros(pad, dtype=order.dtype)])
        outs = []
        with torch.inference_mode():
            for batch in source.batches(order, bs):
                batch = prepare(batch, None)
                with torch.autocast(device.type, dtype=dtype or torch.bfloat16, enabled=dtype is not None):
                    outs.append(call(model, batch).float())
        if not outs:
            return torch.empty(0)
        return torch.cat(outs)[:n].cpu()

    try:
        return run_with_oom_retry(run, batch_size, notes=notes, what="eval batch")
    finally:
        model.eval()
