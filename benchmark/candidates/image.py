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

Starting weights: ``pretrained`` (``imagenet``, ``hf-hub:ORG/NAME``, a file or folder; decided by
``benchmark.candidates.weights.choose_weights``).
"""

from __future__ import annotations

import copy
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn as nn

from benchmark.candidates.backbones import (
    aggregate_per_patient,
    build_timm_model,
    float32_classifier,
    image_stats,
    pre_logits_width,
    resolve_weights,
)
from benchmark.candidates.base import TrialContext, register_family
from benchmark.candidates.scoring import sigmoid
from benchmark.candidates.torch_family import ImageFamily, imbalance_weight
from benchmark.errors import UserError


class ImageNet(nn.Module):
    """A network on images behind the batch-dict interface of ``torch_train``: logits and features.

    ``embed`` uses timm's pre-logit features when the network is a timm model. A timm
    model's classifier runs in float32 under autocast (float32 logits, see ``float32_classifier``).
    """

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = float32_classifier(net)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.net(batch["image"]).reshape(-1)

    def embed(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.net.forward_head(self.net.forward_features(batch["image"]), pre_logits=True)


@register_family("timm_cnn")
class TimmCNN(ImageFamily):
    """Per-image timm CNN, patient prediction by mean (or max) logit. Parameters: ``defaults``."""

    defaults: ClassVar[dict[str, Any]] = {
        **ImageFamily.defaults,
        "arch": None,
        "pretrained": None,          # see benchmark.candidates.weights
        "eval_batch_size": None,     # None: 2 x batch_size
        "epochs": 20,                # capped by the profile's max_epochs
        "warmup_frac": 0.05,
        "aug_strength": 1.0,         # 0 = no augmentation; see benchmark.candidates.augment
        "imbalance": "pos_weight",   # none | pos_weight | sqrt_pos_weight | sampler
        "drop_rate": 0.0,
        "drop_path_rate": 0.0,
        "aggregate": "mean",         # mean | max (per-patient logit)
    }
    choices: ClassVar[dict[str, tuple]] = {
        **ImageFamily.choices,
        "imbalance": ("none", "pos_weight", "sqrt_pos_weight", "sampler"),
        "aggregate": ("mean", "max"),
    }

    def settings(self) -> dict[str, Any]:
        s = super().settings()
        if not s["arch"]:
            raise UserError("timm_cnn needs 'arch' in the candidate's fixed section, e.g. fixed: {arch: resnet18}")
        return s

    # -- fit

    def fit_parts(self, train, valid, ctx: TrialContext):
        """All of ``train`` is trained on, for the searched ``epochs`` (a budget the search chooses).

        The harness hands no ``valid`` part (the fold that scores a trial must not pick its
        epoch), so there is no early stopping; a labelled ``valid`` given by a user calling
        the family directly picks the epoch.
        """
        if train.images is None or len(train.images) == 0:
            raise UserError("timm_cnn needs images but the training part has none; give the dataset an 'images' "
                            "section or leave image candidates out")
        return train, valid if valid is not None and valid.y is not None else None

    def prepare_fit(self, s: dict, fit_part, ctx: TrialContext) -> None:
        self.prevalence_ = float(np.asarray(fit_part.labels(), dtype=np.float64).mean())
        self.aggregate_ = s["aggregate"]

    def network(self, s: dict, fit_part, ctx: TrialContext):
        weights = resolve_weights(s["arch"], s["pretrained"])
        ctx.notes.append(f"weights: {weights.name}" if weights else "weights: random init")
        probe = build_timm_model(s["arch"], weights=weights, drop_rate=s["drop_rate"],
                                 drop_path_rate=s["drop_path_rate"], seed=self.seed_)
        self.stats_ = image_stats(probe)
        if fit_part is not None:   # a bundle being restored keeps the width it was saved with
            self.embed_dim_ = pre_logits_width(probe, int(fit_part.images.shape[-1]))
        return lambda: ImageNet(copy.deepcopy(probe))   # a fresh copy per attempt (out-of-memory retries)

    def pos_weight(self, s: dict, samples_y: np.ndarray) -> float | None:
        return imbalance_weight(samples_y, s["imbalance"])

    def balanced_sampler(self, s: dict) -> bool:
        return s["imbalance"] == "sampler"

    # -- samples and patients

    def samples(self, data) -> tuple[dict[str, np.ndarray], np.ndarray]:
        if data.images is None or len(data.images) == 0:
            return {}, np.zeros(0, np.int64)
        return {"image": data.images}, np.asarray(data.image_owner)

    def no_image_mask(self, data) -> np.ndarray:
        """True for patients of ``data`` without images (they get the fallback)."""
        mask = np.ones(len(data), dtype=bool)
        if data.images is not None and len(data.images) > 0:
            mask[np.unique(data.image_owner)] = False
        return mask

    def note_missing(self, data) -> None:
        k = int(self.no_image_mask(data).sum())
        if k:
            self._notes.append(f"{k} patient(s) without images were given the training prevalence")

    def patient_probs(self, logits: np.ndarray, owner: np.ndarray, data) -> np.ndarray:
        """Sigmoid of the aggregated image logits; the training prevalence for patients without images."""
        z = aggregate_per_patient(logits, owner, len(data), self.aggregate_)
        return np.where(np.isnan(z), self.prevalence_, sigmoid(z))

    def warm_start_state(self) -> tuple[str, dict]:
        """(architecture, the timm network's weights): what a fusion network may start from."""
        return self.settings()["arch"], self.model_.net.state_dict()

    def embed_dim(self) -> int:
        """Width of ``embed``: the pre-logit features' width, probed when the network was built."""
        width = getattr(self, "embed_dim_", None)
        if width is None:   # a bundle written before the width was kept
            net = self.model_.net
            width = int(getattr(net, "head_hidden_size", None) or getattr(net, "num_features", 0))
        return int(width)
