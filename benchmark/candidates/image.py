"""The ``timm_cnn`` family: any timm architecture as a per-image AFF classifier.

A new architecture is a new candidate file, no code::

    name: resnet18
    family: timm_cnn
    modality: image
    fixed: {arch: resnet18}                 # any name timm.list_models() knows
    space:
      lr: {type: float, low: 1.0e-4, high: 3.0e-3, log: true}

The network sees one channel (``in_chans=1``) and has one logit (``num_classes=1``).
Each image is classified; a patient's logit is the mean (``aggregate: mean``, default)
or the max (``aggregate: max``) of its images' logits. A patient without images gets the
training prevalence (``predict_proba``) or a row of NaN (``embed``); ``no_image_mask``
marks them and the count is added to the trial's notes.

Pretrained weights, never from the network (``HF_HUB_OFFLINE=1``):

- ``pretrained: /path/resnet18.safetensors`` (or ``.pth``): that file;
- ``pretrained: /path/folder``: ``<arch>.safetensors``/``.pth`` in it, or timm's caches
  (``models--timm--<arch>.<tag>/snapshots/*/model.safetensors``, ``checkpoints/<file>``);
- ``pretrained: true``: the folder named by ``AFF_BENCHMARK_WEIGHTS``, which must hold them;
- unset: that folder's weights when it has them, else random initialisation;
- ``pretrained: false``: random initialisation.

A 3-channel first convolution is summed to one channel (timm's ``adapt_input_conv``);
the classifier is re-initialised. Named but missing weights are a ``UserError``.
"""

from __future__ import annotations

import copy
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from benchmark.candidates.augment import augment_batch
from benchmark.candidates.base import Family, TrialContext, register_family
from benchmark.candidates.torch_train import (
    BatchSource,
    TrainConfig,
    cpu_threads,
    free_memory,
    predict_outputs,
    resolve_device,
    seed_everything,
    torch_threads,
    train_model,
)
from benchmark.errors import UserError

# Weights are only ever read from a named file (timm's 'file' source); this guards the rest.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

WEIGHTS_ENV = "AFF_BENCHMARK_WEIGHTS"
_WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pth.tar", ".pt", ".bin")
_HUB_FILES = ("model.safetensors", "pytorch_model.bin", "open_clip_pytorch_model.bin")


# ----------------------------------------------------------------------------- weights

def _name_variants(arch: str) -> list[str]:
    """``resnet18`` -> [resnet18, resnet18.a1_in1k (timm's default tag)]; tagged names kept first."""
    import timm

    names = [arch]
    base, _, tag = arch.partition(".")
    if tag:
        names.append(base)
    else:
        cfg = timm.models.get_pretrained_cfg(arch)
        if cfg is not None and cfg.tag:
            names.append(f"{base}.{cfg.tag}")
    return names


def find_weights(arch: str, folder: Path) -> Path | None:
    """The weight file for ``arch`` in ``folder`` (flat files or timm's cache layouts), or None."""
    import timm

    folder = Path(folder)
    names = _name_variants(arch)
    for name in names:
        for suffix in _WEIGHT_SUFFIXES:
            if (folder / f"{name}{suffix}").is_file():
                return folder / f"{name}{suffix}"
        for hub_file in _HUB_FILES:
            if (folder / name / hub_file).is_file():
                return folder / name / hub_file
    hub_roots = [folder, folder / "hub", folder / "huggingface" / "hub"]
    base = arch.partition(".")[0]
    for root in hub_roots:
        patterns = [f"models--timm--{n}" for n in names] + [f"models--timm--{base}.*"]
        for pattern in patterns:
            for repo in sorted(root.glob(pattern)):
                for hub_file in _HUB_FILES:
                    hits = sorted((repo / "snapshots").glob(f"*/{hub_file}"))
                    if hits:
                        return hits[-1]
    cfg = timm.models.get_pretrained_cfg(arch)
    url = getattr(cfg, "url", None) if cfg is not None else None
    if url:
        fname = url.rsplit("/", 1)[-1]
        for root in (folder, folder / "checkpoints", folder / "hub" / "checkpoints", folder / "torch" / "hub" / "checkpoints"):
            if (root / fname).is_file():
                return root / fname
    return None


def resolve_weights(arch: str, pretrained: Any) -> Path | None:
    """The weight file a candidate asks for (see the module docstring), None for random init."""
    if isinstance(pretrained, str) and pretrained.strip().lower() in ("", "none", "false", "random", "no"):
        pretrained = False
    if isinstance(pretrained, str) and pretrained.strip().lower() in ("true", "yes", "auto"):
        pretrained = True if pretrained.strip().lower() != "auto" else None
    if pretrained is False:
        return None
    if isinstance(pretrained, (str, Path)):
        path = Path(pretrained).expanduser()
        if path.is_file():
            return path
        if path.is_dir():
            found = find_weights(arch, path)
            if found is None:
                raise UserError(
                    f"candidate key 'pretrained' names the folder {path}, which holds no weights for {arch!r} "
                    f"(looked for {arch}.safetensors/.pth and timm's cache layout); add the file or remove the key")
            return found
        raise UserError(
            f"candidate key 'pretrained' names {path}, which does not exist; give an existing .safetensors/.pth "
            f"file or folder with weights for {arch!r}, or remove the key for random initialisation")
    env = os.environ.get(WEIGHTS_ENV, "").strip()
    if env:
        folder = Path(env).expanduser()
        if not folder.is_dir():
            raise UserError(f"{WEIGHTS_ENV}={folder} is not a folder; point it at a folder of <arch>.safetensors files or unset it")
        found = find_weights(arch, folder)
        if found is None and pretrained is True:
            raise UserError(
                f"pretrained weights for {arch!r} were asked for (pretrained: true) but {folder} ({WEIGHTS_ENV}) "
                f"holds none; put {arch}.safetensors there or set pretrained: false")
        return found
    if pretrained is True:
        raise UserError(
            f"pretrained weights for {arch!r} were asked for (pretrained: true) but no file was named; set "
            f"{WEIGHTS_ENV} to a folder holding {arch}.safetensors, or give the file path as 'pretrained'")
    return None


def _create(arch: str, weights: Path | None, **kwargs: Any) -> nn.Module:
    """timm.create_model with optional kwargs dropped when the architecture rejects them."""
    import timm

    optional = {k: v for k, v in kwargs.items() if v}
    extra = {"pretrained": True, "pretrained_cfg_overlay": {"file": str(weights)}} if weights else {}
    while True:
        try:
            return timm.create_model(arch, in_chans=1, num_classes=1, **extra, **optional)
        except TypeError as exc:
            rejected = [k for k in optional if k in str(exc)]
            if not rejected:
                raise
            optional.pop(rejected[0])


def build_timm_model(arch: str, *, weights: Path | None = None, drop_rate: float = 0.0,
                     drop_path_rate: float = 0.0, seed: int = 0) -> nn.Module:
    """A one-channel, one-logit timm model; weights loaded and checked when given.

        net = build_timm_model("resnet18", weights=Path("w/resnet18.safetensors"))
    """
    import timm

    if not isinstance(arch, str) or not timm.is_model(arch):
        base = str(arch).partition(".")[0]
        raise UserError(
            f"candidate key 'arch': {arch!r} is not a timm architecture; "
            f"python -c \"import timm; print(timm.list_models('{base}*'))\" lists similar names")
    opts = {"drop_rate": drop_rate, "drop_path_rate": drop_path_rate}
    torch.manual_seed(seed)
    if weights is None:
        return _create(arch, None, **opts)
    try:
        model = _create(arch, weights, **opts)
    except (RuntimeError, ValueError, KeyError, OSError) as exc:
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise UserError(f"weights file {weights} cannot be loaded into {arch!r} ({first}); give weights saved from that architecture") from None
    _check_loaded(arch, model, weights, opts, seed)
    return model


_CHECKED: set[tuple[str, str]] = set()


def _check_loaded(arch: str, model: nn.Module, weights: Path, opts: dict, seed: int) -> None:
    """Fail when a file loaded (non-strictly) left most weight tensors at their random init."""
    key = (arch, str(weights))
    if key in _CHECKED:
        return
    torch.manual_seed(seed)
    fresh = dict(_create(arch, None, **opts).named_parameters())
    mats = [(k, p) for k, p in model.named_parameters() if p.ndim >= 2 and k in fresh and fresh[k].shape == p.shape]
    loaded = sum(not torch.equal(p, fresh[k]) for k, p in mats)
    if mats and loaded < 0.5 * len(mats):
        raise UserError(
            f"weights file {weights} matched only {loaded} of {len(mats)} weight tensors of {arch!r}; "
            f"give weights saved from that architecture")
    _CHECKED.add(key)


class _DictNet(nn.Module):
    """A timm model behind the batch-dict interface of ``torch_train``."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.net(batch["image"]).reshape(-1)

    def embed(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.net.forward_head(self.net.forward_features(batch["image"]), pre_logits=True)


# ----------------------------------------------------------------------------- aggregation

def aggregate_per_patient(values: np.ndarray, owner: np.ndarray, n_patients: int, how: str = "mean") -> np.ndarray:
    """Per-patient mean or max of per-image ``values`` (1-D or ``(m, d)``); NaN without images.

        aggregate_per_patient(np.array([1., 3., 5.]), np.array([0, 0, 2]), 3)   # [2., nan, 5.]
    """
    values = torch.as_tensor(np.asarray(values, dtype=np.float64))
    owner_t = torch.as_tensor(np.asarray(owner, dtype=np.int64))
    shape = (n_patients,) + tuple(values.shape[1:])
    counts = torch.bincount(owner_t, minlength=n_patients).to(torch.float64)
    if how == "mean":
        out = torch.zeros(shape, dtype=torch.float64).index_add_(0, owner_t, values)
        out /= counts.reshape((-1,) + (1,) * (values.ndim - 1)).clamp_min(1.0)
    elif how == "max":
        index = owner_t.reshape((-1,) + (1,) * (values.ndim - 1)).expand_as(values)
        out = torch.full(shape, -math.inf, dtype=torch.float64).scatter_reduce_(0, index, values, "amax")
    else:
        raise ValueError(f"unknown aggregate {how!r}")
    out[counts == 0] = math.nan
    return out.numpy()


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


# ----------------------------------------------------------------------------- the family

_DEFAULTS: dict[str, Any] = {
    "arch": None,
    "pretrained": None,          # see module docstring
    "lr": 1e-3,
    "weight_decay": 1e-4,
    "batch_size": 32,
    "eval_batch_size": None,     # None: 2 x batch_size
    "epochs": 20,                # capped by the profile's max_epochs
    "schedule": "cosine",        # cosine | onecycle | constant
    "warmup_frac": 0.05,
    "patience": 5,
    "aug_strength": 1.0,         # 0 = no augmentation; see benchmark.candidates.augment
    "hflip": True,
    "imbalance": "pos_weight",   # none | pos_weight | sqrt_pos_weight | sampler
    "drop_rate": 0.0,
    "drop_path_rate": 0.0,
    "aggregate": "mean",         # mean | max (per-patient logit)
    "grad_clip": None,
}
_CHOICES = {"schedule": ("cosine", "onecycle", "constant"),
            "imbalance": ("none", "pos_weight", "sqrt_pos_weight", "sampler"),
            "aggregate": ("mean", "max")}


@register_family("timm_cnn")
class TimmCNN(Family):
    """Per-image timm CNN, patient prediction by mean (or max) logit. Parameters: ``_DEFAULTS``."""

    modality = "image"
    uses_images = True
    uses_register = False

    # -- settings

    def _settings(self) -> dict[str, Any]:
        unknown = sorted(set(self.params) - set(_DEFAULTS))
        if unknown:
            raise UserError(f"timm_cnn: unknown parameter(s) {unknown} in the candidate's fixed/space; known: {sorted(_DEFAULTS)}")
        s = {**_DEFAULTS, **self.params}
        if not s["arch"]:
            raise UserError("timm_cnn needs 'arch' in the candidate's fixed section, e.g. fixed: {arch: resnet18}")
        for key, choices in _CHOICES.items():
            if s[key] not in choices:
                raise UserError(f"timm_cnn: parameter {key!r} is {s[key]!r}; use one of {list(choices)}")
        for key in ("batch_size", "epochs"):
            if int(s[key]) < 1:
                raise UserError(f"timm_cnn: parameter {key!r} must be a positive integer, got {s[key]!r}")
        return s

    def _prepare(self, batch: dict[str, torch.Tensor], generator: torch.Generator | None) -> dict[str, torch.Tensor]:
        x = batch["image"].unsqueeze(1).float().div_(255.0)
        if generator is not None and self._aug > 0:
            x = augment_batch(x, self._aug, generator, hflip=self._hflip)
        x = (x - self._mean) / self._std
        if x.is_cuda:
            x = x.contiguous(memory_format=torch.channels_last)
        batch["image"] = x
        return batch

    # -- fit

    def fit(self, train, valid, ctx: TrialContext) -> "TimmCNN":
        s = self._settings()
        device = resolve_device(ctx.device)
        free_memory()   # what earlier trials left behind
        if train.images is None or len(train.images) == 0:
            raise UserError("timm_cnn needs images but the training part has none; give the dataset an 'images' section or leave image candidates out")
        y_pat = np.asarray(train.labels(), dtype=np.float64)
        y_img = y_pat[train.image_owner].astype(np.float32)
        self.prevalence_ = float(y_pat.mean())
        self.aggregate_ = s["aggregate"]
        self.device_ = device
        self.seed_ = int(ctx.seed)
        self.mc_passes_ = int(ctx.extra.get("mc_passes") or 0)
        self.n_threads_ = cpu_threads(ctx.extra) if device.type == "cpu" else None
        self._notes = ctx.notes
        self._aug, self._hflip = float(s["aug_strength"]), bool(s["hflip"])

        weights = resolve_weights(s["arch"], s["pretrained"])
        ctx.notes.append(f"weights: {weights.name}" if weights else "weights: random init")
        probe = build_timm_model(s["arch"], weights=weights, drop_rate=s["drop_rate"],
                                 drop_path_rate=s["drop_path_rate"], seed=self.seed_)
        cfg = getattr(probe, "pretrained_cfg", {}) or {}
        self._mean = float(np.mean(cfg.get("mean", (0.5,))))
        self._std = float(np.mean(cfg.get("std", (0.25,))))

        def build() -> nn.Module:      # a fresh copy per attempt (out-of-memory retries start over)
            return _DictNet(copy.deepcopy(probe))

        n_pos = float(y_img.sum())
        n_neg = float(len(y_img) - n_pos)
        ratio = n_neg / n_pos if n_pos > 0 else 1.0
        pos_weight = {"pos_weight": ratio, "sqrt_pos_weight": math.sqrt(ratio)}.get(s["imbalance"])
        epochs = int(s["epochs"])
        if ctx.max_epochs:
            epochs = min(epochs, int(ctx.max_epochs))
        tc = TrainConfig(lr=float(s["lr"]), weight_decay=float(s["weight_decay"]), batch_size=int(s["batch_size"]),
                         eval_batch_size=s["eval_batch_size"], epochs=epochs, schedule=s["schedule"],
                         warmup_frac=float(s["warmup_frac"]),
                         patience=None if s["patience"] in (None, 0) else int(s["patience"]),
                         pos_weight=pos_weight, balanced_sampler=s["imbalance"] == "sampler",
                         grad_clip=s["grad_clip"], max_samples=ctx.extra.get("max_image_samples"))

        with torch_threads(self.n_threads_):
            src = BatchSource({"image": train.images, "y": y_img}, device)
            if not src.on_device:
                ctx.notes.append(f"images stay in host memory ({src.nbytes / 2**30:.1f} GiB); batches are prefetched")
            vsrc = None
            if valid is not None and valid.y is not None and valid.images is not None and len(valid.images):
                vsrc = BatchSource({"image": valid.images}, device)

            def evaluate(model: nn.Module, bs: int) -> float:
                logits = predict_outputs(model, vsrc, batch_size=bs, prepare=self._prepare,
                                         device=device, notes=ctx.notes).numpy()
                return _auc(valid.labels(), self._patient_probs(logits, valid))

            try:
                result = train_model(build, src, tc, ctx, prepare=self._prepare, device=device,
                                     evaluate=evaluate if vsrc is not None else None)
            finally:
                src.release()
                if vsrc is not None:
                    vsrc.release()
                del src, vsrc, probe
        self.model_ = result.model
        self.best_epoch_ = result.best_epoch
        self.batch_size_ = result.batch_size
        self.history_ = result.history
        self.eval_batch_size_ = max(1, (tc.eval_batch_size or 2 * tc.batch_size) * result.batch_size // tc.batch_size)
        free_memory()
        return self

    # -- predict

    def _image_outputs(self, data, *, forward=None, passes: int = 0) -> list[torch.Tensor]:
        """Per-image outputs: one deterministic pass (``passes=0``) or ``passes`` MC-dropout passes."""
        bs = getattr(self, "eval_batch_size_", 2 * self.batch_size_)
        with torch_threads(self.n_threads_):
            src = BatchSource({"image": data.images}, self.device_)
            try:
                return [predict_outputs(self.model_, src, batch_size=bs, prepare=self._prepare, device=self.device_,
                                        forward=forward, stochastic=passes > 0, notes=self._notes)
                        for _ in range(max(1, passes))]
            finally:
                src.release()

    def _has_images(self, data) -> bool:
        return data.images is not None and len(data.images) > 0

    def no_image_mask(self, data) -> np.ndarray:
        """True for patients of ``data`` without images (they get the fallback)."""
        mask = np.ones(len(data), dtype=bool)
        if self._has_images(data):
            mask[np.unique(data.image_owner)] = False
        return mask

    def _patient_probs(self, image_logits: np.ndarray, data) -> np.ndarray:
        n = len(data)
        if not self._has_images(data):
            return np.full(n, self.prevalence_)
        logits = aggregate_per_patient(image_logits, data.image_owner, n, self.aggregate_)
        probs = _sigmoid(logits)
        return np.where(np.isnan(logits), self.prevalence_, probs)

    def _note_fallback(self, data) -> None:
        k = int(self.no_image_mask(data).sum())
        if k:
            self._notes.append(f"{k} patient(s) without images were given the training prevalence")

    def predict_proba(self, data) -> np.ndarray:
        """P(AFF) per patient: sigmoid of the aggregated image logits (training prevalence without images)."""
        self._note_fallback(data)
        if not self._has_images(data):
            return np.full(len(data), self.prevalence_)
        logits = self._image_outputs(data)[0].numpy()
        return self._patient_probs(logits, data)

    def predict_members(self, data) -> np.ndarray:
        """(mc_passes, n_patients) MC-dropout probabilities when the profile asks (``mc_passes`` > 0)."""
        if self.mc_passes_ <= 0:
            return self.predict_proba(data)[None, :]
        self._note_fallback(data)
        if not self._has_images(data):
            return np.full((self.mc_passes_, len(data)), self.prevalence_)
        seed_everything(self.seed_ + 7919)
        passes = self._image_outputs(data, passes=self.mc_passes_)
        return np.stack([self._patient_probs(logits.numpy(), data) for logits in passes])

    def embed(self, data) -> np.ndarray:
        """(n_patients, d) pooled pre-logit features averaged over each patient's images (NaN rows without)."""
        if not self._has_images(data):
            net = self.model_.net
            d = int(getattr(net, "head_hidden_size", None) or getattr(net, "num_features", 0))
            return np.full((len(data), d), np.nan, dtype=np.float32)
        feats = self._image_outputs(data, forward=lambda m, b: m.embed(b))[0].numpy()
        return aggregate_per_patient(feats, data.image_owner, len(data), "mean").astype(np.float32)


def _auc(y: np.ndarray, p: np.ndarray) -> float:
    """ROC AUC, NaN when only one class is present."""
    from sklearn.metrics import roc_auc_score

    y = np.asarray(y)
    if len(np.unique(y)) < 2:
        return math.nan
    return float(roc_auc_score(y, p))
