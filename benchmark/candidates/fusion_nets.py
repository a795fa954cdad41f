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
stopping for a network from its own init; a warm-started one trains its epoch budget on the
whole part: ``fit_parts``); deterministic on the CPU for a seed. The networks themselves are ``fusion_modules``'.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from benchmark.candidates.backbones import TabularNet, image_stats, resolve_weights
from benchmark.candidates.base import TrialContext, register_family
from benchmark.candidates.fusion_modules import (AttentionNet, ConcatNet, FiLMNet, FusionNet, GatedNet, _backbone,
                                                 _classifier, probe_backbone)
from benchmark.candidates.preprocess import TabularPreprocessor, positive_weight, register_table
from benchmark.candidates.torch_family import ImageFamily, torch_threads
from benchmark.errors import UserError


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
    # of an image candidate (checked by units.with_warm_source, which knows the candidates)
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

    @staticmethod
    def _warm_path(s: dict, ctx: TrialContext) -> tuple[dict | None, int, str | None]:
        """(the runner's warm start, this fit's inner index, the weights file it starts from or None)."""
        ws = ctx.extra.get("warm_start") if s["warm_start"] else None
        k = int(ctx.extra.get("inner_index", 0))
        if ws is None:
            return None, k, None
        return ws, k, (ws["members"][k] if k < len(ws["members"]) else ws.get("full")) or None

    def fit_parts(self, train, valid, ctx: TrialContext):
        """A warm-started network trains on all of ``train`` for its epoch budget, without early stopping.

        Its start, the image member trained on the same patients (``fold_runner.warm_start_for``),
        saw every patient a holdout could be drawn from, so a holdout would pick the epoch on
        patients the backbone has memorised; the last epoch's weights are kept. A network from its
        own init stops early on a seeded holdout of ``train`` (``preprocess.early_stopping_parts``).
        """
        if self._warm_path(self.settings(), ctx)[2] is not None and (valid is None or valid.y is None):
            return train, None
        return super().fit_parts(train, valid, ctx)

    def _warm_start(self, s: dict, fit_part, ctx: TrialContext) -> tuple[str, dict | None]:
        """(architecture, backbone weights to start from or None); a restored bundle keeps its ``arch_``."""
        if fit_part is None:
            return getattr(self, "arch_", s["arch"]), None
        ws, k, path = self._warm_path(s, ctx)
        if ws is None:
            return s["arch"], None
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
