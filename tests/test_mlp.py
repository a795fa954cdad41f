"""The register MLP: signal, determinism, per-epoch pruning, epoch cap, MC dropout, safety."""

from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest
import torch
import yaml
from sklearn.metrics import roc_auc_score

from benchmark.candidates.base import TrialContext, get_family
from benchmark.data.cohort import PatientData
from benchmark.errors import UserError
from tabular_helpers import make_part, unlabelled

SPACES = Path(__file__).resolve().parents[1] / "search_spaces"
SMALL = dict(hidden=32, n_layers=2, lr=3e-3, batch_size=64, max_epochs=30, patience=8)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


class FakeTrial:
    """Records reported steps; says prune once ``prune_at + 1`` reports have arrived."""

    def __init__(self, prune_at: int | None) -> None:
        self.prune_at, self.steps = prune_at, []

    def report(self, value: float, step: int) -> None:
        self.steps.append(step)

    def should_prune(self) -> bool:
        return self.prune_at is not None and len(self.steps) > self.prune_at


@pytest.fixture(scope="module")
def parts():
    return make_part(200, 0), make_part(150, 1), make_part(400, 2)


@pytest.fixture(scope="module")
def fitted(parts):
    train, valid, _ = parts
    return get_family("mlp")(**SMALL, dropout=0.3).fit(train, valid, TrialContext(seed=0, extra={"mc_passes": 6}))


def test_mlp_learns_planted_signal_without_test_labels(fitted, parts):
    test = parts[2]
    p = fitted.predict_proba(unlabelled(test))
    assert p.shape == (len(test),) and np.all((p >= 0) & (p <= 1))
    assert roc_auc_score(test.y, p) > 0.8


def test_mlp_predictions_are_deterministic_for_a_seed(parts):
    train, valid, test = parts
    a = get_family("mlp")(**SMALL).fit(train, valid, TrialContext(seed=3)).predict_proba(test)
    b = get_family("mlp")(**SMALL).fit(train, valid, TrialContext(seed=3)).predict_proba(test)
    np.testing.assert_array_equal(a, b)


def test_mlp_reports_validation_auc_every_epoch_and_keeps_best_epoch(parts):
    train, valid, _ = parts
    ctx = TrialContext(seed=0)
    model = get_family("mlp")(**SMALL).fit(train, valid, ctx)
    steps = [s for s, _ in ctx.history]
    assert steps == list(range(len(steps))) and len(steps) >= 2
    best = max(v for _, v in ctx.history)
    assert roc_auc_score(valid.y, model.predict_proba(valid)) == pytest.approx(best)


def test_pruning_signal_from_the_trial_stops_training(parts):
    train, valid, _ = parts
    trial = FakeTrial(prune_at=2)
    with pytest.raises(optuna.TrialPruned):
        get_family("mlp")(**SMALL).fit(train, valid, TrialContext(seed=0, trial=trial, step_offset=100))
    assert trial.steps == [100, 101, 102]


def test_epochs_capped_by_context_max_epochs(parts):
    train, valid, _ = parts
    ctx = TrialContext(seed=0, max_epochs=3)
    get_family("mlp")(**SMALL).fit(train, valid, ctx)
    assert len(ctx.history) == 3


def test_mc_dropout_passes_vary_and_repeat(fitted, parts):
    test = unlabelled(parts[2])
    passes = fitted.predict_members(test)
    assert passes.shape == (6, len(test))
    assert passes.std(axis=0).mean() > 1e-3
    np.testing.assert_array_equal(passes, fitted.predict_members(test))
    # dropout is off again for the point prediction
    np.testing.assert_array_equal(fitted.predict_proba(test), fitted.predict_proba(test))


def test_without_mc_passes_members_is_the_point_prediction(parts):
    train, valid, test = parts
    model = get_family("mlp")(**SMALL, dropout=0.3).fit(train, valid, TrialContext(seed=0, max_epochs=2))
    np.testing.assert_array_equal(model.predict_members(test), model.predict_proba(test)[None, :])


@pytest.mark.parametrize("variant", [
    dict(norm="batch", categorical="onehot", class_weight="balanced"),
    dict(norm="layer", categorical="embedding", class_weight="sqrt", batch_size=0),
])
def test_variants_handle_unseen_level_and_all_missing_column(variant, parts):
    train, valid, test = parts
    train = PatientData(train.patients, train.register.assign(x5=np.nan), None, None, train.y, ["site"])
    model = get_family("mlp")(**{**SMALL, **variant}).fit(train, valid, TrialContext(seed=0, max_epochs=4))
    odd = unlabelled(test)
    odd.register["site"] = pd.Categorical(["never-seen"] * len(odd))
    odd.register["x0"] = np.nan
    p = model.predict_proba(odd)
    assert p.shape == (len(odd),) and np.isfinite(p).all()


def test_embed_returns_last_hidden_layer(fitted, parts):
    assert fitted.embed(unlabelled(parts[2])).shape == (len(parts[2]), SMALL["hidden"])


def test_unknown_parameter_is_rejected(parts):
    train, valid, _ = parts
    with pytest.raises(UserError, match="hiden"):
        get_family("mlp")(hiden=3).fit(train, valid, TrialContext())


@pytest.mark.parametrize("end", ["low", "high"])
def test_search_space_corners_build_and_fit(end, parts):
    spec = yaml.safe_load((SPACES / "mlp.yaml").read_text())
    assert spec["name"] == "mlp" and spec["family"] == "mlp" and spec["modality"] == "register"
    params = {k: (v["choices"][0 if end == "low" else -1] if v["type"] == "categorical" else v[end])
              for k, v in spec["space"].items()}
    train, valid, test = parts
    model = get_family("mlp")(**spec["fixed"], **params).fit(train, valid, TrialContext(seed=0, max_epochs=2))
    assert np.isfinite(model.predict_proba(test)).all()
