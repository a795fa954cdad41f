"""Neural fusion: a timm CNN and a register MLP trained end to end, four ways of joining them.

Every network here has the same two encoders, a one-channel timm backbone (``arch``,
weights as in ``timm_cnn``: ``pretrained``) and the register MLP of the ``mlp`` family
(``TabularNet`` on ``TabularPreprocessor`` codes, fitted on the training part), and
differs in how they meet:

- ``joint_concat``: pooled image features and register features concatenated, then a head;
- ``film``: register features give a per-channel scale and shift (FiLM / DAFT, Polsterl et
  al. 2021) to the feature maps after stage ``film_stage`` (the stage at stride
  ``2**(film_stage+1)``: 2 = ResNet ``layer2``, 3 = ``layer3``), then pooling; the head sees
  the pooled image features and the register features;
- ``gated``: a gated multimodal unit (Arevalo et al. 2017): a learned sigmoid gate mixes
  tanh projections of the two modalities per unit;
- ``attention``: a small transformer over [CLS, image feature-map tokens, register tokens]
  (``n_tab_tokens`` made from the register features), the CLS output goes to the head.

``logit_skip`` (default on): the network's logit is its head's plus an image-only logit (from
the warm source's classifier) plus the register MLP's own logit, the head starting at zero and
the register MLP first trained alone for ``register_epochs``: a warm-started network starts as
the sum of its two single-modality logits and learns the joint part on top.

``aux_weight`` > 0 adds per-modality auxiliary losses (an image-only and a register-only
head, BCE each) to the main loss: a training forward leaves them for ``pop_aux_loss``, which
``torch_train`` adds to the loss before any GradScaler scales it. Usage, as for any family::

    fam = get_family("film")(arch="resnet18", film_stage=3, lr=1e-3)
    fam.fit(train, valid, TrialContext(device="cuda", seed=0, max_epochs=8))
    p = fam.predict_proba(test)                  # (n_patients,) P(AFF)

Images and patients: each image is one training sample carrying its owner's register row
and label; a patient's logit is the mean over its images' logits. A patient without images
is one sample whose image features are a learned "missing image" vector (for
``attention``: one learned missing-image token, the image tokens masked out), so it is
scored from its register data. The backbone runs on every row of a batch (an image-less
row carries a blank image whose features are then replaced with ``torch.where``): batches
keep one shape and the forward pass needs no host sync. In training, batch-norm batch
statistics therefore include the blank rows of a batch; in evaluation a row's output does
not depend on the other rows. Logit layers (head, auxiliary heads, the register MLP's
head) run in float32 under autocast. Training uses ``torch_train.train_model`` (device-resident
data, AMP on CUDA, out-of-memory retry, per-epoch validation AUC via ``ctx.report``, early
stopping); deterministic on the CPU for a seed.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from benchmark.candidates.backbones import Float32Linear, TabularNet, build_timm_model, image_stats, resolve_weights
from benchmark.candidates.base import TrialContext, register_family
from benchmark.candidates.preprocess import TabularPreprocessor, positive_weight, register_table
from benchmark.candidates.torch_family import ImageFamily, torch_threads
from benchmark.errors import UserError

# ----------------------------------------------------------------------------- pieces

def _blend(has: torch.Tensor, present: torch.Tensor, missing: torch.Tensor) -> torch.Tensor:
    """Rows of ``present`` where ``has`` (bool, (n,)), ``missing`` (broadcast) elsewhere; no host sync."""
    mask = has.reshape((-1,) + (1,) * (present.dim() - 1))
    return torch.where(mask, present, missing.to(present.dtype))


@torch.no_grad()
def probe_backbone(backbone: nn.Module, size: int) -> dict[str, int]:
    """Widths a fusion net needs, from one zero image: ``img_dim`` (``forward_head(...,
    pre_logits=True)``, not always ``num_features``), ``map_dim`` and ``n_tokens`` (feature-map
    channels and positions, the attention net's tokens)."""
    was_training = backbone.training
    backbone.eval()
    try:
        x = torch.zeros(1, 1, int(size), int(size), device=next(backbone.parameters()).device)
        maps = backbone.forward_features(x)
        tokens = AttentionNet.tokens(maps)
        return {"img_dim": int(backbone.forward_head(maps, pre_logits=True).shape[-1]),
                "map_dim": int(tokens.shape[2]), "n_tokens": int(tokens.shape[1])}
    finally:
        backbone.train(was_training)


def _classifier(warm: dict, unused: list[str]) -> dict | None:
    """The image model's one-logit classifier among the warm-start tensors a backbone left
    unused (``fc``, ``classifier``, ``head.fc``): ``{"weight": (1, d), "bias": (1,)}``, or None."""
    for name in unused:
        if name.endswith(".weight") and warm[name].dim() == 2 and warm[name].shape[0] == 1:
            bias = name[: -len("weight")] + "bias"
            if bias in warm:
                return {"weight": warm[name], "bias": warm[bias]}
    return None


def _backbone(arch: str, weights, drop_path_rate: float, seed: int) -> nn.Module:
    net = build_timm_model(arch, weights=weights, drop_path_rate=drop_path_rate, seed=seed)
    net.reset_classifier(0)
    return net


class FusionNet(nn.Module):
    """Shared parts: backbone, register encoder, missing-image vector, auxiliary heads, head.

    Subclasses implement ``fuse(batch) -> (fused (n, fusion_dim), image vector, register vector)``; ``forward`` returns one logit
    per sample; ``embed`` the fused features. ``img_dim`` is the backbone's pre-logit width
    (``probe_backbone``; probed here on a 32 px image when not given).
    """

    def __init__(self, backbone: nn.Module, tabular: TabularNet, *, tab_dim: int, fusion_dim: int,
                 dropout: float, aux_weight: float, pos_weight: float, img_dim: int | None = None,
                 logit_skip: bool = False) -> None:
        super().__init__()
        self.backbone, self.tabular = backbone, tabular
        self.img_dim = int(img_dim) if img_dim else probe_backbone(backbone, 32)["img_dim"]
        self.tab_dim = tab_dim
        self.missing = nn.Parameter(torch.zeros(self.img_dim))
        self.head = nn.Sequential(nn.Dropout(dropout), Float32Linear(fusion_dim, 1))
        self.aux_weight = float(aux_weight)
        self.register_buffer("pos_weight", torch.tensor(float(pos_weight)), persistent=False)
        if self.aux_weight > 0:
            self.aux_img, self.aux_tab = Float32Linear(self.img_dim, 1), Float32Linear(tab_dim, 1)
        # logit_skip: an image-only logit (a linear map of the pooled image features) and a
        # register-only logit (the register MLP's own head) added to the head's output, the head's
        # last layer and the register head starting at zero. Warm-started with the image model's
        # classifier (and the register MLP pre-trained: NeuralFusion, register_epochs), the
        # network starts as the sum of the two single-modality logits and learns the rest on top.
        self.skip = Float32Linear(self.img_dim, 1) if logit_skip else None
        if logit_skip:
            for layer in (self.head[1], self.tabular.head):
                nn.init.zeros_(layer.weight)
                nn.init.zeros_(layer.bias)
        self._aux_loss: torch.Tensor | None = None
        self.backbone_lr_scale = 1.0   # NeuralFusion.network sets it for a warm-started backbone

    def lr_scale(self, name: str) -> float:
        """The optimiser's share of the learning rate for parameter ``name`` (torch_train.make_optimizer)."""
        return self.backbone_lr_scale if name.startswith("backbone.") else 1.0

    # helpers for subclasses
    def pooled(self, feats: torch.Tensor) -> torch.Tensor:
        return self.backbone.forward_head(feats, pre_logits=True)

    def image_vectors(self, batch: dict) -> torch.Tensor:
        """(n, img_dim) pooled image features; the learned missing vector where there is no image."""
        vec = self.pooled(self.backbone.forward_features(batch["image"]))
        return _blend(batch["has_image"], vec, self.missing)

    def fuse(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:  # pragma: no cover
        """(fused, image vector, register vector) for a batch."""
        raise NotImplementedError

    def forward(self, batch: dict) -> torch.Tensor:
        fused, img, tab = self.fuse(batch)
        logits = self.head(fused).reshape(-1)
        if self.skip is not None:
            logits = logits + self.skip(img).reshape(-1) + self.tabular.head(tab).reshape(-1)
        if self.training and self.aux_weight > 0 and "y" in batch:
            self._aux_loss = self.aux_weight * self.aux_loss(img, tab, batch)
        return logits

    def aux_loss(self, img: torch.Tensor, tab: torch.Tensor, batch: dict) -> torch.Tensor:
        """BCE of the register-only head plus BCE of the image-only head over the rows with an image
        (0 when there are none); a masked mean, so no host sync."""
        y = batch["y"].float().reshape(-1)
        has = batch["has_image"].reshape(-1)
        aux = F.binary_cross_entropy_with_logits(self.aux_tab(tab).reshape(-1), y, pos_weight=self.pos_weight)
        per = F.binary_cross_entropy_with_logits(self.aux_img(img).reshape(-1), y, pos_weight=self.pos_weight,
                                                 reduction="none")
        n_img = has.sum().clamp_min(1).to(per.dtype)
        return aux + torch.where(has, per, torch.zeros_like(per)).sum() / n_img

    def pop_aux_loss(self) -> torch.Tensor | None:
        """The weighted auxiliary loss of the last training forward (once), for the training loop
        to add to the main loss before scaling; None when there is none."""
        aux, self._aux_loss = self._aux_loss, None
        return aux

    def embed(self, batch: dict) -> torch.Tensor:
        return self.fuse(batch)[0]


class ConcatNet(FusionNet):
    def __init__(self, backbone, tabular, **kw) -> None:
        super().__init__(backbone, tabular, **kw)
        d = self.head[1].in_features
        self.mix = nn.Sequential(nn.Dropout(self.head[0].p), nn.Linear(self.img_dim + self.tab_dim, d), nn.ReLU())

    def fuse(self, batch):
        tab = self.tabular.features(batch["tabular"])
        img = self.image_vectors(batch)
        return self.mix(torch.cat([img, tab.to(img.dtype)], dim=1)), img, tab


class GatedNet(FusionNet):
    """Gated multimodal unit: h = z * tanh(W_i img) + (1 - z) * tanh(W_t tab), z = sigmoid(W_z [img, tab])."""

    def __init__(self, backbone, tabular, **kw) -> None:
        super().__init__(backbone, tabular, **kw)
        d = self.head[1].in_features
        self.proj_img, self.proj_tab = nn.Linear(self.img_dim, d), nn.Linear(self.tab_dim, d)
        self.gate = nn.Linear(self.img_dim + self.tab_dim, d)

    def fuse(self, batch):
        tab = self.tabular.features(batch["tabular"])
        img = self.image_vectors(batch)
        tab_ = tab.to(img.dtype)
        z = torch.sigmoid(self.gate(torch.cat([img, tab_], dim=1)))
        return z * torch.tanh(self.proj_img(img)) + (1 - z) * torch.tanh(self.proj_tab(tab_)), img, tab


def _stage_module(backbone: nn.Module, stage: int) -> tuple[nn.Module, int]:
    """The module whose output is the feature map at stride 2**(stage+1), and its channels."""
    info = list(getattr(backbone, "feature_info", []) or [])
    want = 2 ** (int(stage) + 1)
    hits = [f for f in info if int(f.get("reduction", 0)) == want]
    if not hits:
        strides = sorted({int(f.get("reduction", 0)) for f in info})
        raise UserError(f"film: film_stage {stage} asks for the stage at stride {want}, which this architecture "
                        f"lacks (strides {strides}); choose film_stage from "
                        f"{[int(math.log2(s)) - 1 for s in strides if s >= 4]}")
    return backbone.get_submodule(hits[-1]["module"]), int(hits[-1]["num_chs"])


class FiLMNet(FusionNet):
    """Register features scale and shift the channels of one backbone stage (identity at init)."""

    def __init__(self, backbone, tabular, *, film_stage: int, **kw) -> None:
        super().__init__(backbone, tabular, **kw)
        d = self.head[1].in_features
        module, channels = _stage_module(backbone, film_stage)
        self.film = nn.Linear(self.tab_dim, 2 * channels)
        nn.init.zeros_(self.film.weight)
        nn.init.zeros_(self.film.bias)
        self._cond: torch.Tensor | None = None     # (n, 2C) during fuse: every row of the batch
        module.register_forward_hook(self._modulate)
        self.mix = nn.Sequential(nn.Dropout(self.head[0].p), nn.Linear(self.img_dim + self.tab_dim, d), nn.ReLU())

    def _modulate(self, module, inputs, out):
        if self._cond is None:
            return out
        gamma, beta = self._cond.to(out.dtype).chunk(2, dim=1)
        if out.dim() == 4:   # (n, C, H, W)
            return out * (1 + gamma[:, :, None, None]) + beta[:, :, None, None]
        return out * (1 + gamma[:, None, :]) + beta[:, None, :]   # (n, tokens, C)

    def fuse(self, batch):
        tab = self.tabular.features(batch["tabular"])
        self._cond = self.film(tab)
        try:
            vec = self.pooled(self.backbone.forward_features(batch["image"]))
        finally:
            self._cond = None
        img = _blend(batch["has_image"], vec, self.missing)
        return self.mix(torch.cat([img, tab.to(img.dtype)], dim=1)), img, tab


class AttentionNet(FusionNet):
    """Transformer over [CLS, image tokens, register tokens]; missing images: one learned token, rest masked."""

    def __init__(self, backbone, tabular, *, n_tokens: int, n_tab_tokens: int, n_heads: int, n_layers: int,
                 map_dim: int | None = None, **kw) -> None:
        super().__init__(backbone, tabular, **kw)
        d = self.head[1].in_features
        if d % n_heads:
            raise UserError(f"attention: fusion_dim {d} must be a multiple of n_heads {n_heads}; change one of them")
        self.n_tokens, self.n_tab_tokens = n_tokens, n_tab_tokens
        map_dim = int(map_dim) if map_dim else probe_backbone(backbone, 32)["map_dim"]   # token width
        self.img_proj = nn.Linear(map_dim, d)
        self.tab_proj = nn.Linear(self.tab_dim, n_tab_tokens * d)
        self.pos = nn.Parameter(torch.zeros(1, n_tokens, d))
        self.kind = nn.Parameter(torch.zeros(2, d))
        self.cls = nn.Parameter(torch.zeros(1, 1, d))
        self.missing_token = nn.Parameter(torch.zeros(d))
        for p in (self.pos, self.kind, self.cls, self.missing_token):
            nn.init.trunc_normal_(p, std=0.02)
        layer = nn.TransformerEncoderLayer(d, n_heads, dim_feedforward=2 * d, dropout=self.head[0].p,
                                           batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, n_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d)

    @staticmethod
    def tokens(feats: torch.Tensor) -> torch.Tensor:
        """(n, C, H, W) or (n, T, C) backbone features -> (n, T, C) tokens."""
        return feats.flatten(2).transpose(1, 2) if feats.dim() == 4 else feats

    def fuse(self, batch):
        tab = self.tabular.features(batch["tabular"])
        has = batch["has_image"]
        n, d, T = has.shape[0], self.img_proj.out_features, self.n_tokens
        maps = self.backbone.forward_features(batch["image"])
        t = self.tokens(maps)
        tok = _blend(has, self.img_proj(t) + self.pos.to(t.dtype), self.missing_token)
        img = _blend(has, self.pooled(maps), self.missing)
        tab_tok = self.tab_proj(tab).reshape(n, self.n_tab_tokens, d).to(tok.dtype)
        seq = torch.cat([self.cls.expand(n, -1, -1).to(tok.dtype), tok + self.kind[0].to(tok.dtype),
                         tab_tok + self.kind[1].to(tok.dtype)], dim=1)
        mask = torch.zeros(n, seq.shape[1], dtype=torch.bool, device=seq.device)
        mask[:, 2:1 + T] = ~has[:, None]          # keep only the first (missing) token for image-less rows
        out = self.encoder(seq, src_key_padding_mask=mask)
        return self.norm(out[:, 0]), img, tab



# ----------------------------------------------------------------------------- the families

def _samples(data, size: int) -> dict[str, np.ndarray]:
    """One sample per image, plus one image-less sample per patient without images."""
    n = len(data)
    if data.images is not None and len(data.images):
        images, owner = np.asarray(data.images), np.asarray(data.image_owner, dtype=np.int64)
    else:
        images, owner = np.zeros((0, size, size), np.uint8), np.zeros(0, np.int64)
    lonely = np.flatnonzero(np.bincount(owner, minlength=n) == 0)
    return {
        "image": np.concatenate([images, np.zeros((len(lonely),) + images.shape[1:], np.uint8)]),
        "has_image": np.concatenate([np.ones(len(owner), bool), np.zeros(len(lonely), bool)]),
        "owner": np.concatenate([owner, lonely]),
    }




class NeuralFusion(ImageFamily):
    """Base of the neural fusion families. Parameters: ``defaults`` (a subclass adds its own)."""

    defaults: ClassVar[dict[str, Any]] = {
        **ImageFamily.defaults,
        "arch": "resnet18", "pretrained": None, "drop_path_rate": 0.0,
        "tab_hidden": 64, "tab_layers": 2, "tab_embed_dim": 8, "min_count": 5,
        "fusion_dim": 64, "dropout": 0.2, "aux_weight": 0.0,
        "batch_size": 64, "aug_strength": 0.5, "class_weight": "sqrt", "balanced_sampler": False,
        "warm_start": True,
        "backbone_lr": 1.0,   # a warm-started backbone's learning rate, as a share of lr (1: the same)
        "logit_skip": True,   # image-only and register-only logits beside a zero-started head (FusionNet):
                              # a warm-started network starts as the image model's logit (its classifier
                              # included) plus that of its register MLP, pre-trained for register_epochs
        # with logit_skip: epochs of the register MLP alone before the joint training. Few: on half of the
        # default cohort it fits its patients perfectly within 10 epochs (held-out AUC 0.77 after 5, 0.66
        # after 20), and an overfitted register logit leaves the joint training nothing to learn
        "register_epochs": 5,
    }
    # warm_start: true (the run's source, by default the fold's best image candidate), false, or the name
    # of an image candidate (checked by run_plan.with_warm_source, which knows the candidates)
    choices: ClassVar[dict[str, tuple]] = {**ImageFamily.choices, "class_weight": ("none", "sqrt", "balanced")}
    net: ClassVar[type[FusionNet]]
    # The runner hands ``ctx.extra["warm_start"]``: the weights of this role's candidate in the fold
    # (fold_runner.warm_start_for). The backbone then starts from the image member trained on the
    # same patients (its architecture replaces ``arch``); ``warm_start: false`` starts from ``arch``.
    warm_start_role: ClassVar[str] = "best_image"

    def prepare_fit(self, s: dict, fit_part, ctx: TrialContext) -> None:
        if fit_part.images is not None and len(fit_part.images):
            self.size_ = int(fit_part.images.shape[-1])
        else:
            self.size_ = int(ctx.image_size or 64)
            ctx.notes.append(f"{self.family_name}: the training part has no images; register data only")
        y = fit_part.labels()
        self.prevalence_ = float(np.mean(y))
        self.pre_ = TabularPreprocessor(categorical="codes", clip=5.0, min_count=int(s["min_count"]))
        self.pre_.fit(register_table(fit_part, self.family_name), fit_part.categorical)
        self.pos_weight_ = positive_weight(y, s["class_weight"])
        self.fusion_dim_ = int(s["fusion_dim"])

    def _warm_start(self, s: dict, fit_part, ctx: TrialContext) -> tuple[str, dict | None]:
        """(architecture, backbone weights to start from or None); a restored bundle keeps its ``arch_``."""
        if fit_part is None:
            return getattr(self, "arch_", s["arch"]), None
        ws = ctx.extra.get("warm_start") if s["warm_start"] else None
        if ws is None:
            return s["arch"], None
        k = int(ctx.extra.get("inner_index", 0))
        path = ws["members"][k] if k < len(ws["members"]) else ws.get("full")
        if not path:
            ctx.notes.append(f"warm start: {ws['source']} has no model for fit {k}; {s['arch']} from its own init")
            return s["arch"], None
        from safetensors.torch import load_file

        ctx.notes.append(f"warm start: {ws['source']} {'member ' + str(k) if k < len(ws['members']) else 'refit'} "
                         f"({ws['arch']})")
        return ws["arch"], load_file(path)

    def network(self, s: dict, fit_part, ctx: TrialContext):
        if not float(s["backbone_lr"]) > 0:
            raise UserError(f"{self.family_name}: backbone_lr is a share of lr for a warm-started backbone and "
                            f"must be above 0, got {s['backbone_lr']!r}")
        arch, warm = self._warm_start(s, fit_part, ctx)
        self.arch_ = arch
        weights = None if warm is not None else resolve_weights(arch, s["pretrained"])
        if warm is None:
            ctx.notes.append(f"weights: {weights.name}" if weights else "weights: random init")
        with torch_threads(self.n_threads_):
            probe = _backbone(arch, weights, float(s["drop_path_rate"]), self.seed_).eval()
            skip_init = None
            if warm is not None:
                missing, extra = probe.load_state_dict(warm, strict=False)   # the image net's classifier is left out
                if missing:
                    raise RuntimeError(f"warm start: the {arch} weights lack {len(missing)} backbone tensors, e.g. "
                                       f"{missing[0]}")
                skip_init = _classifier(warm, extra)
            self.stats_ = image_stats(probe)
            shape = probe_backbone(probe, self.size_)
            if warm is not None and s["logit_skip"]:
                ctx.notes.append("logit skip: starts from the image model's classifier" if skip_init is not None
                                 else "logit skip: the image model's classifier was not found; random init")
            state = {k: v.clone() for k, v in probe.state_dict().items()}
            del probe

        def build() -> nn.Module:
            backbone = _backbone(arch, None, float(s["drop_path_rate"]), self.seed_)
            tab = TabularNet(self.pre_.n_numeric, self.pre_.cardinalities, hidden=int(s["tab_hidden"]),
                             n_layers=int(s["tab_layers"]), dropout=float(s["dropout"]), norm="layer",
                             embed_dim=int(s["tab_embed_dim"]), activation="relu")
            kw = dict(img_dim=shape["img_dim"], tab_dim=int(s["tab_hidden"]), fusion_dim=int(s["fusion_dim"]),
                      dropout=float(s["dropout"]), aux_weight=float(s["aux_weight"]), pos_weight=self.pos_weight_,
                      logit_skip=bool(s["logit_skip"]))
            net = self.net(backbone, tab, **kw, **self.net_kwargs(s, shape))
            net.backbone.load_state_dict(state)
            if net.skip is not None and skip_init is not None:
                net.skip.load_state_dict(skip_init)
            if net.skip is not None and fit_part is not None and int(s["register_epochs"]) > 0:
                self._pretrain_register(net.tabular, s, fit_part)
            if warm is not None:   # fine-tune the trained image features; the fusion parts learn at lr
                net.backbone_lr_scale = float(s["backbone_lr"])
            return net

        return build

    def _pretrain_register(self, tabular: TabularNet, s: dict, fit_part) -> None:
        """Train the register MLP with its own head on the fit part's patients (one row each) for
        ``register_epochs`` epochs (AdamW at the fusion's lr and weight decay, batches of 128,
        the fusion's class weight), before the joint training; on the CPU, where the network is
        built (a small MLP on a few thousand rows: about a second), seeded by the training loop."""
        X = torch.as_tensor(self.pre_.transform(register_table(fit_part, self.family_name)), dtype=torch.float32)
        y = torch.as_tensor(np.asarray(fit_part.labels(), dtype=np.float32))
        opt = torch.optim.AdamW(tabular.parameters(), lr=float(s["lr"]), weight_decay=float(s["weight_decay"]))
        pos_weight = torch.tensor(float(self.pos_weight_))
        order = torch.Generator().manual_seed(self.seed_ + 2)
        tabular.train()
        for _ in range(int(s["register_epochs"])):
            for idx in torch.randperm(len(y), generator=order).split(128):
                loss = F.binary_cross_entropy_with_logits(tabular(X[idx]).float(), y[idx], pos_weight=pos_weight)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()

    def bundle_restore(self, reader, extra: dict) -> None:
        """As the base class; a bundle written before ``logit_skip`` existed has no skip weights
        and is rebuilt without one."""
        if "logit_skip" not in self.params and not any(k.startswith("skip.") for k in reader.tensor_names(extra["weights"])):
            self.params = {**self.params, "logit_skip": False}
        super().bundle_restore(reader, extra)

    def net_kwargs(self, s: dict, shape: dict[str, int]) -> dict:
        """The subclass's own network arguments (``shape``: the backbone's widths, ``probe_backbone``)."""
        return {}

    def pos_weight(self, s: dict, samples_y: np.ndarray) -> float | None:
        return self.pos_weight_

    def balanced_sampler(self, s: dict) -> bool:
        return bool(s["balanced_sampler"])

    def samples(self, data) -> tuple[dict[str, np.ndarray], np.ndarray]:
        smp = _samples(data, self.size_)
        X = self.pre_.transform(register_table(data, self.family_name))[smp["owner"]]
        return {"image": smp["image"], "has_image": smp["has_image"], "tabular": X}, smp["owner"]

    def embed_dim(self) -> int:
        return self.fusion_dim_


@register_family("joint_concat")
class JointConcatFamily(NeuralFusion):
    """CNN + register MLP end to end, features concatenated, then a head. Parameters: ``defaults``."""

    net = ConcatNet


@register_family("gated")
class GatedFamily(NeuralFusion):
    """CNN + register MLP joined by a gated multimodal unit. Parameters: ``defaults``."""

    net = GatedNet


@register_family("film")
class FiLMFamily(NeuralFusion):
    """Register data scales and shifts CNN feature maps (FiLM/DAFT). Extra: ``film_stage`` (2, 3 or 4)."""

    net = FiLMNet
    defaults = {**NeuralFusion.defaults, "film_stage": 3}

    def net_kwargs(self, s: dict, shape: dict[str, int]) -> dict:
        return {"film_stage": int(s["film_stage"])}


@register_family("attention")
class AttentionFamily(NeuralFusion):
    """Transformer over image feature-map tokens and register tokens.

    Extra: ``n_tab_tokens`` (4), ``n_heads`` (4), ``n_layers`` (1); ``fusion_dim`` is the
    token width.
    """

    net = AttentionNet
    defaults = {**NeuralFusion.defaults, "n_tab_tokens": 4, "n_heads": 4, "n_layers": 1}

    def net_kwargs(self, s: dict, shape: dict[str, int]) -> dict:
        return {"n_tokens": shape["n_tokens"], "map_dim": shape["map_dim"], "n_tab_tokens": int(s["n_tab_tokens"]), "n_heads": int(s["n_heads"]),
                "n_layers": int(s["n_layers"])}
