"""The register-data neural network: a PyTorch MLP (the "ANN" of question 2).

Numeric columns are imputed, flagged and standardised (``TabularPreprocessor``, fitted on
the training part only); categoricals go through embeddings or one-hot. Trained with
AdamW on (large) mini-batches, early stopping on the validation AUC with patience, and
each epoch's validation AUC reported for pruning::

    fam = get_family("mlp")(hidden=128, n_layers=2, dropout=0.2, norm="layer")
    fam.fit(train, valid, TrialContext(seed=0, max_epochs=50, extra={"mc_passes": 10}))
    p = fam.predict_proba(test)           # (n,) P(AFF), dropout off
    passes = fam.predict_members(test)    # (10, n) MC-dropout passes

Deterministic on the CPU for a seed. ``ctx.extra["n_threads"]`` sets torch's CPU threads.
Without ``valid`` a seeded stratified 15 % of ``train`` is held out for early stopping.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import torch
from torch import nn

from benchmark.candidates.base import Family, TrialContext, register_family
from benchmark.candidates.preprocess import TabularPreprocessor, positive_weight
from benchmark.candidates.tabular import early_stopping_parts, register_table, safe_auc

DEFAULTS: dict[str, Any] = dict(
    hidden=128, n_layers=2, dropout=0.2, weight_decay=1e-4, lr=1e-3, batch_size=128,
    max_epochs=200, patience=20, norm="none", categorical="embedding", embed_dim=8,
    class_weight="none", activation="relu", clip=5.0, min_count=5,
)


class TabularNet(nn.Module):
    """Embeddings for categorical codes, concatenated with numeric inputs, then an MLP."""

    def __init__(self, n_numeric: int, cardinalities: list[int], *, hidden: int, n_layers: int,
                 dropout: float, norm: str, embed_dim: int, activation: str) -> None:
        super().__init__()
        self.embeddings = nn.ModuleList(nn.Embedding(c, min(embed_dim, c)) for c in cardinalities)
        width = n_numeric + sum(e.embedding_dim for e in self.embeddings)
        act = {"relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU}[activation]
        layers: list[nn.Module] = []
        for _ in range(n_layers):
            layers.append(nn.Linear(width, hidden))
            if norm == "batch":
                layers.append(nn.BatchNorm1d(hidden))
            elif norm == "layer":
                layers.append(nn.LayerNorm(hidden))
            layers += [act(), nn.Dropout(dropout)]
            width = hidden
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(width, 1)
        self.n_numeric = n_numeric

    def features(self, x: torch.Tensor) -> torch.Tensor:
        parts = [x[:, : self.n_numeric]]
        codes = x[:, self.n_numeric:].long()
        parts += [emb(codes[:, j]) for j, emb in enumerate(self.embeddings)]
        return self.body(torch.cat(parts, dim=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x)).squeeze(1)


def _rng_devices(device: torch.device) -> list[int]:
    """CUDA device indices whose RNG state ``fork_rng`` must save and restore."""
    if device.type != "cuda":
        return []
    return [device.index if device.index is not None else torch.cuda.current_device()]


@register_family("mlp")
class MLPFamily(Family):
    """PyTorch MLP on register data. Params: see ``DEFAULTS`` (any may be overridden).

    ``hidden`` width, ``n_layers`` depth, ``dropout``, ``weight_decay``, ``lr`` (AdamW),
    ``batch_size`` (0: full batch), ``max_epochs`` (capped by ``ctx.max_epochs``),
    ``patience`` (epochs without a better validation AUC), ``norm`` none|batch|layer,
    ``categorical`` embedding|onehot, ``embed_dim``, ``class_weight`` none|sqrt|balanced
    (BCE ``pos_weight``), ``activation`` relu|gelu|silu, ``clip`` of standardised inputs.
    """

    modality = "register"

    def _settings(self) -> dict[str, Any]:
        s = dict(DEFAULTS)
        unknown = set(self.params) - set(DEFAULTS)
        if unknown:
            raise TypeError(f"mlp: unknown parameter(s) {sorted(unknown)}; known: {sorted(DEFAULTS)}")
        s.update(self.params)
        return s

    def fit(self, train, valid, ctx: TrialContext) -> "MLPFamily":
        s = self._settings()
        n_threads = ctx.extra.get("n_threads")
        if n_threads:
            torch.set_num_threads(int(n_threads))
        self.device_ = torch.device(ctx.device or "cpu")
        self.seed_ = int(ctx.seed)
        self.mc_passes_ = int(ctx.extra.get("mc_passes", 0) or 0)
        fit_part, stop_part = early_stopping_parts(train, valid, ctx.seed)
        y = fit_part.labels()

        mode = "codes" if s["categorical"] == "embedding" else "onehot"
        self.pre_ = TabularPreprocessor(categorical=mode, clip=s["clip"], min_count=s["min_count"])
        X = self._tensor(self.pre_.fit_transform(register_table(fit_part, "mlp"), fit_part.categorical))
        Xv = self._tensor(self.pre_.transform(stop_part.register))
        yt = torch.as_tensor(y, dtype=torch.float32, device=self.device_)
        yv = stop_part.labels()

        max_epochs = int(s["max_epochs"])
        if ctx.max_epochs:
            max_epochs = min(max_epochs, int(ctx.max_epochs))
        n = len(y)
        batch = n if not s["batch_size"] or s["batch_size"] >= n else int(s["batch_size"])

        with torch.random.fork_rng(devices=_rng_devices(self.device_)):
            torch.manual_seed(self.seed_)
            self.model_ = TabularNet(
                self.pre_.n_numeric, self.pre_.cardinalities, hidden=int(s["hidden"]),
                n_layers=int(s["n_layers"]), dropout=float(s["dropout"]), norm=s["norm"],
                embed_dim=int(s["embed_dim"]), activation=s["activation"],
            ).to(self.device_)
            opt = torch.optim.AdamW(self.model_.parameters(), lr=float(s["lr"]),
                                    weight_decay=float(s["weight_decay"]), fused=True)
            pw = torch.tensor(positive_weight(y, s["class_weight"]), device=self.device_)
            loss_fn = nn.BCEWithLogitsLoss(pos_weight=pw)
            gen = torch.Generator().manual_seed(self.seed_)
            best_auc, best_state, since = -np.inf, None, 0
            self.history_: list[float] = []
            for epoch in range(max_epochs):
                self.model_.train()
                order = torch.randperm(n, generator=gen).to(self.device_)
                for start in range(0, n, batch):
                    idx = order[start:start + batch]
                    if len(idx) < 2 and s["norm"] == "batch":
                        continue  # batch norm cannot train on a single row
                    opt.zero_grad(set_to_none=True)
                    loss = loss_fn(self.model_(X[idx]), yt[idx])
                    if not torch.isfinite(loss):
                        raise FloatingPointError(f"mlp: non-finite training loss at epoch {epoch}")
                    loss.backward()
                    opt.step()
                auc = safe_auc(yv, self._predict(Xv))
                self.history_.append(auc)
                ctx.report(epoch, auc)  # may raise optuna.TrialPruned
                score = auc if np.isfinite(auc) else -np.inf
                if best_state is None or score > best_auc:
                    best_auc, best_state, since = score, copy.deepcopy(self.model_.state_dict()), 0
                else:
                    since += 1
                    if since >= int(s["patience"]):
                        break
            self.model_.load_state_dict(best_state)
        self.best_epoch_ = int(np.argmax([a if np.isfinite(a) else -np.inf for a in self.history_]))
        self.model_.eval()
        return self

    def _tensor(self, X: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(X, dtype=torch.float32, device=self.device_)

    @torch.no_grad()
    def _predict(self, X: torch.Tensor) -> np.ndarray:
        self.model_.eval()
        return torch.sigmoid(self.model_(X)).double().cpu().numpy()

    def predict_proba(self, data) -> np.ndarray:
        X = self._tensor(self.pre_.transform(register_table(data, "mlp")))
        return self._predict(X)

    @torch.no_grad()
    def predict_members(self, data) -> np.ndarray:
        """(mc_passes, n) MC-dropout passes when ``ctx.extra['mc_passes']`` was > 0 at fit time.

        Dropout stays active, batch norm uses its running statistics; seeded, so repeatable.
        """
        if self.mc_passes_ <= 0:
            return self.predict_proba(data)[None, :]
        X = self._tensor(self.pre_.transform(register_table(data, "mlp")))
        self.model_.eval()
        for m in self.model_.modules():
            if isinstance(m, nn.Dropout):
                m.train()
        try:
            with torch.random.fork_rng(devices=_rng_devices(self.device_)):
                torch.manual_seed(self.seed_ + 1)
                passes = [torch.sigmoid(self.model_(X)).double().cpu().numpy() for _ in range(self.mc_passes_)]
        finally:
            self.model_.eval()
        return np.stack(passes)

    @torch.no_grad()
    def embed(self, data) -> np.ndarray:
        """(n, hidden) last hidden layer (dropout off), for fusion families."""
        X = self._tensor(self.pre_.transform(register_table(data, "mlp")))
        self.model_.eval()
        return self.model_.features(X).double().cpu().numpy()
