"""predict without images (every family) and predict --explain (register contributions, saliency maps)."""

from __future__ import annotations

import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.special import logit

from benchmark.candidates.base import TrialContext, get_family
from benchmark.candidates.calibration import Calibrator
from benchmark.candidates.fusion_inputs import source_frame
from benchmark.data.dataset import load_dataset
from benchmark.data.synth import SynthConfig, write_cohort
from benchmark.errors import UserError
from benchmark.explain.patient import explain_predictions
from benchmark.export.model import Component, ExportedModel
from benchmark.export.schema import SchemaWarning, conform, schema_of

CTX = TrialContext(seed=0, max_epochs=1, extra={"n_threads": 2, "n_jobs": 2})
NETS = {"arch": "test_resnet", "epochs": 1, "batch_size": 16, "register_epochs": 1, "warm_start": False}
FAMILIES = {
    "timm_cnn": {"arch": "test_resnet", "epochs": 1, "batch_size": 16},
    "embed_xgboost": {"encoder": "test_resnet", "n_components": 2, "n_estimators": 30},
    "embed_lightgbm": {"encoder": "test_resnet", "n_components": 2, "n_estimators": 30, "num_leaves": 4},
    "joint_concat": NETS, "film": NETS, "gated": NETS, "attention": {**NETS, "n_heads": 2, "fusion_dim": 32},
}


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    path = write_cohort(tmp_path_factory.mktemp("p") / "c",
                        SynthConfig(n_patients=120, n_aff=30, image_size=32, sparse_columns=6, workers=1))
    return load_dataset(path)


def _component(name, family, modality, members, sources=None, image_size=32):
    return Component(name=name, family=family, modality=modality, members=members, calibrator=Calibrator("none"),
                     r=1.0, mu=0.0, sources=sources or {}, image_size=image_size)


def _model(cohort, components) -> ExportedModel:
    reads_images = any(c.image_size for c in components)
    reads_register = any(c.modality != "image" for c in components)
    schema = schema_of(cohort, reads_register=reads_register, image_size=32 if reads_images else None)
    return ExportedModel(components, {"90": [0.5, 0.5], "95": [0.5, 0.5]}, 0.5, schema, {})


def _fit(family, cohort, upstream=None, **params):
    view = cohort.view(np.arange(cohort.n_patients), labels=True, image_size=32, upstream=upstream)
    return get_family(family)(**params).fit(view, None, CTX)


@pytest.fixture(scope="module")
def models(cohort):
    out = {}
    img = _component("img", "timm_cnn", "image", [_fit("timm_cnn", cohort, **FAMILIES["timm_cnn"])])
    reg = _component("reg", "logreg", "register", [_fit("logreg", cohort)], image_size=None)
    out["timm_cnn"] = _model(cohort, [img])
    all_ = np.arange(cohort.n_patients)
    has = np.zeros(cohort.n_patients, bool)
    has[cohort.images["patient"].unique()] = True
    p_img = img.members[0].predict_proba(cohort.view(all_, labels=False, image_size=32))
    p_reg = reg.members[0].predict_proba(cohort.view(all_, labels=False))
    up = pd.concat([source_frame("best_image", p_img, p_img, index=all_, missing=~has),
                    source_frame("best_register", p_reg, p_reg, index=all_)], axis=1)
    for late in ("late_average", "late_stacking"):
        fused = _component("late", late, "fusion", [_fit(late, cohort, upstream=up)],
                           sources={"best_image": "img", "best_register": "reg"}, image_size=None)
        out[late] = _model(cohort, [img, reg, fused])
    for family, params in FAMILIES.items():
        if family != "timm_cnn":
            out[family] = _model(cohort, [_component(family, family, "fusion", [_fit(family, cohort, **params)])])
    out["xgboost"] = _model(cohort, [_component("xgb", "xgboost", "register",
                                                [_fit("xgboost", cohort, n_estimators=60)], image_size=None)])
    return out


def _without_images(cohort, patients) -> object:
    keep = ~cohort.images["patient"].isin(patients)
    return replace(cohort, images=cohort.images[keep].reset_index(drop=True), _pixels={})


@pytest.mark.parametrize("family", ["timm_cnn", "late_average", "late_stacking", "embed_xgboost", "embed_lightgbm",
                                    "joint_concat", "film", "gated", "attention"])
def test_every_family_predicts_a_patient_without_images_and_says_which_modality_is_missing(models, cohort, family):
    model = models[family]
    part = _without_images(cohort, range(10))
    table = model.table(part)
    assert np.isfinite(table["prob"]).all() and len(table) == cohort.n_patients
    assert (table["missing"].iloc[:10] == "image").all() and (table["missing"].iloc[10:] == "").all()
    if family == "timm_cnn":   # an image-only model's documented fallback: the training prevalence
        np.testing.assert_allclose(table["prob"].iloc[:10], model.final.members[0].prevalence_)
    elif family.startswith("late"):   # a late fusion without its image input: its register input alone
        reg = model.outputs(part)["reg"].prob[:10]
        if family == "late_average":
            np.testing.assert_allclose(table["prob"].iloc[:10], reg, rtol=1e-6)


def test_a_dataset_without_any_images_is_predicted_from_the_register_by_a_fusion_model(models, cohort):
    none = replace(cohort, images=None, _pixels={})
    with pytest.warns(SchemaWarning, match="no images"):
        conformed = conform(none, models["joint_concat"].schema)
    table = models["joint_concat"].table(conformed)
    assert np.isfinite(table["prob"]).all() and (table["missing"] == "image").all()
    with pytest.raises(UserError, match="reads images only"):
        conform(none, models["timm_cnn"].schema)


def test_explain_gives_tree_models_their_exact_shap_contributions(models, cohort, tmp_path):
    model = models["xgboost"]
    table = model.table(cohort)
    ex = explain_predictions(model, cohort, table, tmp_path)
    assert ex["method"] == "TreeSHAP" and ex["saliency"] == []
    long = pd.read_csv(tmp_path / "contributions.csv")
    assert set(long.columns) == {"patient", "rank", "column", "contribution"} and long["patient"].iloc[0] == "P00001"
    assert table["top_register"].str.len().gt(0).all()
    from benchmark.explain.patient import register_contributions

    contrib, _ = register_contributions(model, cohort)
    margin = logit(np.clip(table["prob"].to_numpy(), 1e-12, 1 - 1e-12))
    assert np.std(margin - contrib.sum(axis=1).to_numpy()) < 1e-4   # the contributions and a bias make the logit


def test_explain_approximates_other_models_by_shuffles_and_writes_their_maps_as_patient_data(models, cohort, tmp_path):
    model = models["late_average"]
    table = model.table(cohort)
    ex = explain_predictions(model, cohort, table, tmp_path)
    assert ex["method"] == "shuffle" and ex["saliency"] == ["img"]
    long = pd.read_csv(tmp_path / "contributions.csv")
    top = long[long["rank"] == 1]["column"].value_counts()
    assert top.index[0] in {"bisfo", "bisfo_d", "bisfo_n", "age", "sex", "kort", "osteoporosis"}, top.head()
    folder = tmp_path / "patient_data" / "saliency" / "img"
    assert (tmp_path / "patient_data" / "README.txt").exists()
    assert sorted(p.name for p in folder.iterdir())[:2] == ["P00001.npz", "P00001.png"]
    with np.load(folder / "P00001.npz") as f:
        assert f["maps"].shape == f["images"].shape and f["maps"].max() <= 1.0


def test_predict_command_explains(tmp_path, capsys):
    from benchmark.cli import main
    from benchmark.export.bundle import write_bundle
    from benchmark.export.export import build_export
    from benchmark.run.runner import RunConfig, run
    from runner_helpers import write_register_dataset, write_spaces

    data = write_register_dataset(tmp_path / "d", n=160, n_pos=40)
    spaces = write_spaces(tmp_path / "spaces", n_trials=1, outer_folds=2,
                          extra={"xgb": "name: xgb\nfamily: xgboost\nmodality: register\n"
                                        "fixed: {n_estimators: 60}\nspace:\n  max_depth: {type: int, low: 2, high: 3}\n"})
    out = run(RunConfig(candidates=["xgb"], data=str(data), profile="tiny", device="cpu", spaces=[str(spaces)],
                        results_dir=str(tmp_path / "results"), run="r"))
    ex = build_export(Path(out), "xgb", device="cpu")
    bundle = write_bundle(ex.model, tmp_path / "bundle", cohort=ex.cohort, run_dir=Path(out), oof=ex.oof)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(["predict", str(bundle), "--data", str(data), "--out", str(tmp_path / "p"), "--explain"]) == 0
    assert "register contributions (TreeSHAP)" in capsys.readouterr().out
    pred = pd.read_csv(tmp_path / "p" / "predictions.csv")
    assert pred["top_register"].str.contains("v0").mean() > 0.5    # the planted column
    assert (tmp_path / "p" / "contributions.csv").exists() and not (tmp_path / "p" / "patient_data").exists()
