"""The networks of the neural fusion families (``fusion_nets``): shared parts and four ways of joining.

``FusionNet`` holds what every network shares (a one-channel timm backbone, the register MLP
``TabularNet``, the missing-image vector, the logit skip, the auxiliary heads, the head);
its subclasses join the two modalities: ``ConcatNet`` (``joint_concat``), ``FiLMNet``
(``film``), ``GatedNet`` (``gated``) and ``AttentionNet`` (``attention``)::

    backbone = _backbone("resnet18", None, 0.0, seed=0)
    shape = probe_backbone(backbone, 64)          # img_dim, map_dim, n_tokens
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from benchmark.candidates.backbones import Float32Linear, TabularNet, build_timm_model
from benchmark.errors import UserError


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
