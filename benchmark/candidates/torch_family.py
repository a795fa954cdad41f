"""``TorchFamily``: the one base of every family that trains a torch network (CNN, MLP, fusion nets).

A subclass declares its parameters and its network; the base does the rest: the settings
check, device / thread / seed set-up, the early-stopping split, the per-sample arrays
(``BatchSource``), ``TrainConfig``, the shared ``torch_train`` loop with per-epoch pruning,
and prediction per patient (mean logit over a patient's samples), seeded MC-dropout
``predict_members`` and ``embed``::

    @register_family("tiny_cnn")
    class TinyCNN(ImageFamily):
        defaults = {**ImageFamily.defaults, "width": 8}

        def network(self, s, fit_part, ctx):
            def build():
                return ImageNet(nn.Sequential(nn.Conv2d(1, s["width"], 3), nn.AdaptiveAvgPool2d(1),
                                              nn.Flatten(), nn.Linear(s["width"], 1)))
            return build

A *sample* is what the network sees once: an image (``ImageFamily``), a register row, or an
image with its owner's register row (fusion). ``samples(data)`` gives the per-sample arrays
and each sample's owner (a patient position); a patient's logit is the mean of its
samples' logits (``patient_probs``). ``prepare(batch, generator)`` turns raw tensors into
model inputs on the device (``ImageFamily``: scale, augment when training, normalise).
"""

from __future__ import annotations

import copy
import math
from typing import Any, Callable, ClassVar

import numpy as np
import torch
import torch.nn as nn

from benchmark.candidates.augment import AugmentRandom, augment_batch
from benchmark.candidates.backbones import aggregate_per_patient
from benchmark.candidates.base import Family, TrialContext
from benchmark.candidates.preprocess import early_stopping_parts
from benchmark.candidates.scoring import safe_auc, sigmoid
from benchmark.candidates.batches import BatchSource
from benchmark.candidates.torch_device import (
    configure_determinism,
    cpu_threads,
    free_memory,
    resolve_device,
    seed_everything,
    torch_threads,
)
from benchmark.candidates.torch_train import TrainConfig, predict_outputs, train_model
from benchmark.errors import UserError

MC_SEED_OFFSET = 7919   # MC-dropout passes draw from seed + this, apart from training's streams

# The optimisation parameters every torch family has (subclasses add theirs).
TRAIN_DEFAULTS: dict[str, Any] = {
    "lr": 1e-3, "weight_decay": 1e-4, "batch_size": 32, "epochs": 20, "schedule": "cosine",
    "warmup_frac": 0.05, "patience": 5, "grad_clip": None,
}
SCHEDULES = ("cosine", "onecycle", "constant")


class TorchFamily(Family):
    """Base of the torch families. Subclasses set ``defaults`` and implement ``network``."""

    defaults: ClassVar[dict[str, Any]] = TRAIN_DEFAULTS
    trains_on_gpu: ClassVar[bool] = True
    choices: ClassVar[dict[str, tuple]] = {"schedule": SCHEDULES}
    positive: ClassVar[tuple[str, ...]] = ("batch_size", "epochs")   # whole numbers >= 1
    epochs_param: ClassVar[str] = "epochs"
    full_batch_ok: ClassVar[bool] = False   # batch_size 0 means the whole part in one batch
    drop_last: ClassVar[bool] = True        # drop each epoch's last partial batch

    # -- what a subclass provides

    def network(self, s: dict, fit_part, ctx: TrialContext) -> Callable[[], nn.Module]:  # pragma: no cover
        """A builder of a fresh network taking the batch dict (called again on out-of-memory retries)."""
        raise NotImplementedError

    def configure(self, s: dict) -> None:
        """Hook: keep what ``prepare`` needs from the settings (called first in ``fit``)."""

    def prepare_fit(self, s: dict, fit_part, ctx: TrialContext) -> None:
        """Fit what the samples need (preprocessors) on the fit part; called before ``network``."""

    def samples(self, data) -> tuple[dict[str, np.ndarray], np.ndarray]:  # pragma: no cover
        """Per-sample arrays (no labels) and each sample's owner, a position into ``data``."""
        raise NotImplementedError

    def prepare(self, batch: dict, generator: "torch.Generator | AugmentRandom | None") -> dict:
        """Raw batch -> model inputs on the device (augment only when ``generator`` is given)."""
        return batch

    def pos_weight(self, s: dict, samples_y: np.ndarray) -> float | None:
        """BCE weight of positives for the training samples' labels (None: unweighted)."""
        return None

    def balanced_sampler(self, s: dict) -> bool:
        return False

    def max_samples(self, ctx: TrialContext) -> int | None:
        """The profile's per-fit sample budget that applies to this family (None: none)."""
        return None

    def fit_parts(self, train, valid, ctx: TrialContext):
        """(part trained on, part that picks the epoch or None): ``valid``, else a seeded holdout."""
        return early_stopping_parts(train, valid, ctx.seed)

    def embed_dim(self) -> int:
        """Width of ``embed`` (used for patients without any sample)."""
        return 0

    def note_missing(self, data) -> None:
        """Hook: record patients the family has to fall back for (called before predicting)."""

    # -- settings and set-up

    def settings(self) -> dict[str, Any]:
        s = super().settings()
        for key in self.positive:
            if s.get(key) is not None and int(s[key]) < 1 and not (key == "batch_size" and s[key] == 0
                                                                    and self.full_batch_ok):
                raise UserError(f"{self.family_name}: parameter {key!r} must be a positive integer, got {s[key]!r}")
        return s

    def _setup(self, ctx: TrialContext) -> None:
        self.device_ = resolve_device(ctx.device)
        # before the samples reach the GPU, so CUBLAS_WORKSPACE_CONFIG can still take effect
        configure_determinism(bool(ctx.extra.get("deterministic", False)), self.device_)
        self.seed_ = int(ctx.seed)
        self.mc_passes_ = int(ctx.extra.get("mc_passes") or 0)
        self.n_threads_ = cpu_threads(ctx.extra) if self.device_.type == "cpu" else None
        self._notes = ctx.notes
        self._free()   # what earlier trials left behind

    def _free(self) -> None:
        if self.device_.type == "cuda":   # a full gc costs ~0.5 s per call; only the GPU needs it
            free_memory()

    def train_config(self, s: dict, ctx: TrialContext, *, n_fit: int, pos_weight: float | None) -> TrainConfig:
        epochs = int(s[self.epochs_param])
        if ctx.max_epochs:
            epochs = min(epochs, int(ctx.max_epochs))
        batch = int(s["batch_size"]) or n_fit
        return TrainConfig(lr=float(s["lr"]), weight_decay=float(s["weight_decay"]), batch_size=batch,
                           eval_batch_size=s.get("eval_batch_size"), epochs=epochs, schedule=s["schedule"],
                           warmup_frac=float(s["warmup_frac"]),
                           patience=None if not s["patience"] else int(s["patience"]),
                           pos_weight=pos_weight, balanced_sampler=self.balanced_sampler(s),
                           grad_clip=s["grad_clip"], max_samples=self.max_samples(ctx),
                           drop_last=self.drop_last, budget_share=float(ctx.extra.get("budget_share") or 1.0))

    # -- fit

    def _source(self, data, *, labels: bool) -> tuple[BatchSource | None, np.ndarray]:
        arrays, owner = self.samples(data)
        if len(owner) == 0:
            return None, owner
        if labels:
            arrays["y"] = np.asarray(data.labels(), dtype=np.float32)[owner]
        return BatchSource(arrays, self.device_), owner

    def fit(self, train, valid, ctx: TrialContext) -> "TorchFamily":
        s = self.settings()
        self.configure(s)
        self._setup(ctx)
        fit_part, stop_part = self.fit_parts(train, valid, ctx)
        self.prepare_fit(s, fit_part, ctx)
        build = self.network(s, fit_part, ctx)
        with torch_threads(self.n_threads_):
            src, _ = self._source(fit_part, labels=True)
            if src is None:
                raise UserError(f"{self.family_name}: the training part has no samples to train on")
            if not src.on_device:
                ctx.notes.append(f"samples stay in host memory ({src.nbytes / 2**30:.1f} GiB); batches are prefetched")
            tc = self.train_config(s, ctx, n_fit=len(src),
                                   pos_weight=self.pos_weight(s, src.host["y"].numpy()))
            vsrc, vowner = (None, None) if stop_part is None else self._source(stop_part, labels=False)

            def evaluate(model: nn.Module, bs: int) -> float:
                logits = predict_outputs(model, vsrc, batch_size=bs, prepare=self.prepare, device=self.device_,
                                         notes=ctx.notes).numpy()
                return safe_auc(stop_part.labels(), self.patient_probs(logits, vowner, stop_part))

            msrc, mowner = (None, None) if ctx.monitor is None else self._source(ctx.monitor.data, labels=False)

            def watch(model: nn.Module, bs: int) -> float:   # successive halving's rung scores
                logits = predict_outputs(model, msrc, batch_size=bs, prepare=self.prepare, device=self.device_,
                                         notes=ctx.notes).numpy()
                return ctx.monitor.score(self.patient_probs(logits, mowner, ctx.monitor.data))

            try:
                result = train_model(build, src, tc, ctx, prepare=self.prepare, device=self.device_,
                                     evaluate=evaluate if vsrc is not None else None,
                                     watch=watch if msrc is not None else None)
            finally:
                src.release()
                for extra_src in (vsrc, msrc):
                    if extra_src is not None:
                        extra_src.release()
        self.model_ = result.model
        self.snapshots_, self.epoch_budget_ = result.snapshots, result.epochs
        self.trained_share_ = result.steps / max(1, result.total_steps)
        self.total_steps_ = result.total_steps
        # early stopping can tell only where it could have fired: a budget of more epochs than its patience
        # (a one-epoch fusion fit under quick never stops early, so "it did not" says nothing)
        self.stopped_early_ = (None if vsrc is None or not tc.patience or result.epochs <= tc.patience
                               else len(result.history) < result.epochs)
        self.best_epoch_ = result.best_epoch
        self.batch_size_ = result.batch_size
        self.history_ = result.history
        self.eval_batch_size_ = max(1, (tc.eval_batch_size or 2 * tc.batch_size) * result.batch_size // tc.batch_size)
        self._free()
        return self

    # -- bundles (benchmark.export.codec): weights as safetensors, the network rebuilt from the settings

    bundle_skip: ClassVar[tuple[str, ...]] = ("model_", "snapshots_", "_notes", "history_", "total_steps_")

    def bundle_extra(self, writer, path: str) -> dict:
        return {"weights": writer.tensors(path, self.model_.state_dict())}

    def bundle_restore(self, reader, extra: dict) -> None:
        """Rebuild the network from the settings (random init, no weight file needed) and load
        the bundle's weights; the model runs on ``reader.device``."""
        self._notes, self.snapshots_, self.history_ = [], {}, []
        self.device_ = resolve_device(reader.device)
        if self.device_.type == "cpu":
            self.n_threads_ = self.n_threads_ or cpu_threads({})
        else:
            self.n_threads_ = None
        s = {**self.settings(), "pretrained": False}
        with torch_threads(self.n_threads_):
            build = self.network   # checked against the weights file on the meta device first (codec.Reader.network)
            net = reader.network(lambda: build(s, None, TrialContext(device=str(self.device_), seed=self.seed_))(),
                                 extra["weights"], self.family_name)
        # the memory format it trained in (torch_train): predictions equal the trained model's
        self.model_ = net.to(self.device_).to(memory_format=torch.channels_last).eval()

    # -- predict

    def patient_probs(self, logits: np.ndarray, owner: np.ndarray, data) -> np.ndarray:
        """P(AFF) per patient: sigmoid of the mean logit over the patient's samples."""
        return sigmoid(aggregate_per_patient(logits, owner, len(data), "mean"))

    def _outputs(self, data, *, forward=None, passes: int = 0) -> tuple[list[np.ndarray], np.ndarray]:
        """Per-sample outputs: one deterministic pass (``passes=0``) or ``passes`` MC-dropout passes."""
        with torch_threads(self.n_threads_):
            src, owner = self._source(data, labels=False)
            if src is None:
                return [np.zeros(0, np.float32)] * max(1, passes), owner
            try:
                return [predict_outputs(self.model_, src, batch_size=self.eval_batch_size_, prepare=self.prepare,
                                        device=self.device_, forward=forward, stochastic=passes > 0,
                                        notes=self._notes).numpy()
                        for _ in range(max(1, passes))], owner
            finally:
                src.release()

    def predict_proba(self, data) -> np.ndarray:
        self.note_missing(data)
        (logits,), owner = self._outputs(data)
        return self.patient_probs(logits, owner, data)

    def predict_members(self, data) -> np.ndarray:
        """(mc_passes, n_patients) MC-dropout probabilities when the profile asks (``mc_passes`` > 0).

        Seeded (``seed + MC_SEED_OFFSET``) inside a forked RNG, so repeatable and without side effects.
        """
        if self.mc_passes_ <= 0:
            return self.predict_proba(data)[None, :]
        self.note_missing(data)
        with torch.random.fork_rng(devices=[self.device_] if self.device_.type == "cuda" else []):
            seed_everything(self.seed_ + MC_SEED_OFFSET)
            passes, owner = self._outputs(data, passes=self.mc_passes_)
        return np.stack([self.patient_probs(logits, owner, data) for logits in passes])

    def predict_at(self, data, share: float) -> np.ndarray | None:
        """The network after ``share`` of its step budget (weights kept during training); the
        returned model when ``share`` >= 1 or training ended (early stopping) before that step;
        None when the budget was too short to keep that point."""
        snap = self.snapshots_.get(share) if share < 1 else None
        if snap is None:
            return self.predict_proba(data) if share >= 1 or self.trained_share_ < share else None
        current = self.model_
        model = copy.deepcopy(current)
        model.load_state_dict(snap)
        model.eval()
        self.model_ = model
        try:
            return self.predict_proba(data)
        finally:
            self.model_ = current

    def still_improving(self) -> bool | None:
        """Early stopping on the holdout did not fire and the best epoch was among the last 10 %; None
        without early stopping or with a budget too short for it to fire (epochs <= patience)."""
        if self.stopped_early_ is None:
            return None
        return (not self.stopped_early_) and self.best_epoch_ >= int(0.9 * self.epoch_budget_) - 1

    def half_budget_tells(self) -> bool:
        """Without early stopping that could fire (``still_improving`` None), the snapshots at 25 / 50 %
        are taken part-way through a cosine or one-cycle schedule, at a learning rate still high: a
        fit with its own schedule at half the budget tells what the other half added."""
        return self.stopped_early_ is None and getattr(self, "total_steps_", 0) > 1

    def embed(self, data) -> np.ndarray:
        """(n_patients, d) the network's ``embed`` features averaged over each patient's samples (NaN rows without)."""
        (feats,), owner = self._outputs(data, forward=lambda m, b: m.embed(b))
        if len(owner) == 0:
            return np.full((len(data), self.embed_dim()), np.nan, dtype=np.float32)
        return aggregate_per_patient(feats, owner, len(data), "mean").astype(np.float32)


class ImageFamily(TorchFamily):
    """A torch family whose samples carry a one-channel uint8 image under ``"image"``.

    ``prepare`` scales to [0, 1], augments when training (``aug_strength``, ``hflip``) and
    normalises with the backbone's statistics (``self.stats_``, set by ``network``).
    """

    uses_images = True
    defaults: ClassVar[dict[str, Any]] = {**TRAIN_DEFAULTS, "aug_strength": 1.0, "hflip": True}
    stats_: tuple[float, float] = (0.5, 0.25)

    def configure(self, s: dict) -> None:
        self._aug, self._hflip = float(s["aug_strength"]), bool(s["hflip"])

    def max_samples(self, ctx: TrialContext) -> int | None:
        return ctx.extra.get("max_image_samples")

    def prepare(self, batch: dict, generator: "torch.Generator | AugmentRandom | None") -> dict:
        x = batch["image"].unsqueeze(1).float().div_(255.0)
        if generator is not None and self._aug > 0:
            x = augment_batch(x, self._aug, generator, hflip=self._hflip)
        mean, std = self.stats_
        x = (x - mean) / std
        x = x.contiguous(memory_format=torch.channels_last)   # as the network (torch_train)
        batch["image"] = x
        return batch


def imbalance_weight(y: np.ndarray, how: str) -> float | None:
    """``pos_weight`` (n_neg / n_pos), ``sqrt_pos_weight`` or None, from sample labels."""
    n_pos = float(np.sum(y))
    ratio = (len(y) - n_pos) / n_pos if n_pos > 0 else 1.0
    return {"pos_weight": ratio, "sqrt_pos_weight": math.sqrt(ratio)}.get(how)
