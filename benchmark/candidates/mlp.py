"""The register-data neural network: a PyTorch MLP (the "ANN" of question 2).

Numeric columns are imputed, flagged and standardised (``TabularPreprocessor``, fitted on
the training part only); categoricals go through embeddings or one-hot. Trained by the
shared ``torch_train`` loop (AdamW on mini-batches, constant learning rate, early stopping
on the validation AUC with patience, each epoch's validation AUC reported for pruning)::

    fam = get_family("mlp")(hidden=128, n_layers=2, dropout=0.2, norm="layer")
    fam.fit(train, valid, TrialContext(seed=0, max_epochs=50, extra={"mc_passes": 10}))
    p = fam.predict_proba(test)           # (n,) P(AFF), dropout off
    passes = fam.predict_members(test)    # (10, n) MC-dropout passes

Deterministic on the CPU for a seed. ``ctx.extra["n_threads"]`` sets torch's CPU threads.
Without ``valid`` a seeded stratified 15 % of ``train`` is held out for early stopping.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from benchmark.candidates.backbones import TabularNet
from benchmark.candidates.base import TrialContext, register_family
from benchmark.candidates.preprocess import TabularPreprocessor, positive_weight, register_table
from benchmark.candidates.torch_family import TorchFamily


class RegisterNet(nn.Module):
    """``TabularNet`` behind the batch-dict interface of ``torch_train``."""

    def __init__(self, net: TabularNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.net(batch["tabular"])

    def embed(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.net.features(batch["tabular"])


@register_family("mlp")
class MLPFamily(TorchFamily):
    """PyTorch MLP on register data. Parameters: ``defaults`` (any may be overridden).

    ``hidden`` width, ``n_layers`` depth, ``dropout``, ``weight_decay``, ``lr`` (AdamW),
    ``batch_size`` (0: full batch), ``max_epochs`` (capped by ``ctx.max_epochs``),
    ``patience`` (epochs without a better validation AUC), ``norm`` none|batch|layer,
    ``categorical`` embedding|onehot, ``embed_dim``, ``class_weight`` none|sqrt|balanced
    (BCE ``pos_weight``), ``activation`` relu|gelu|silu, ``clip`` of standardised inputs.
    """

    defaults: ClassVar[dict[str, Any]] = dict(
        hidden=128, n_layers=2, dropout=0.2, weight_decay=1e-4, lr=1e-3, batch_size=128,
        max_epochs=200, patience=20, norm="none", categorical="embedding", embed_dim=8,
        class_weight="none", activation="relu", clip=5.0, min_count=5,
        schedule="constant", warmup_frac=0.0, grad_clip=None,
    )
    choices: ClassVar[dict[str, tuple]] = {
        **TorchFamily.choices, "norm": ("none", "batch", "layer"), "categorical": ("embedding", "onehot"),
        "class_weight": ("none", "sqrt", "balanced"), "activation": ("relu", "gelu", "silu"),
    }
    positive = ("max_epochs", "batch_size")
    epochs_param = "max_epochs"
    full_batch_ok = True
    drop_last = False      # small parts: every row counts in every epoch

    def prepare_fit(self, s: dict, fit_part, ctx: TrialContext) -> None:
        mode = "codes" if s["categorical"] == "embedding" else "onehot"
        self.pre_ = TabularPreprocessor(categorical=mode, clip=s["clip"], min_count=s["min_count"])
        self.pre_.fit(register_table(fit_part, "mlp"), fit_part.categorical)
        self.hidden_ = int(s["hidden"])

    def network(self, s: dict, fit_part, ctx: TrialContext):
        def build() -> RegisterNet:
            return RegisterNet(TabularNet(
                self.pre_.n_numeric, self.pre_.cardinalities, hidden=int(s["hidden"]),
                n_layers=int(s["n_layers"]), dropout=float(s["dropout"]), norm=s["norm"],
                embed_dim=int(s["embed_dim"]), activation=s["activation"]))
        return build

    def pos_weight(self, s: dict, samples_y: np.ndarray) -> float | None:
        return positive_weight(samples_y, s["class_weight"])

    def samples(self, data) -> tuple[dict[str, np.ndarray], np.ndarray]:
        X = self.pre_.transform(register_table(data, "mlp"))
        return {"tabular": X}, np.arange(len(data))

    def embed_dim(self) -> int:
        return self.hidden_
