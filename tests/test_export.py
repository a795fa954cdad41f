"""Export a run's candidate, load the bundle, predict new patients, validate externally."""

from __future__ import annotations

import dataclasses
import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from benchmark import load_model
from benchmark.cli import main
from benchmark.errors import UserError
from benchmark.export.bundle import write_bundle
from benchmark.export.export import build_export, default_candidate
from benchmark.export.schema import SchemaWarning, load_for_prediction
from benchmark.run.runner import RunConfig, run
from runner_helpers import LATE, TINY_CNN, write_register_dataset, write_spaces

STACK = """
name: stack
family: late_stacking
modality: fusion
consumes: [logreg, xgb]
space:
  C: {type: float, low: 0.1, high: 10, log: true}
"""
XGB = """
name: xgb
family: xgboost
modality: register
fixed: {n_estimators: 200, early_stopping_rounds: 20}
space:
  max_depth: {type: int, low: 2, high: 4}
"""


def with_site(yaml_path: Path, levels: tuple[str, ...], seed: int) -> Path:
    """Add a categorical 'site' column (levels drawn at random) to a register dataset."""
    reg = pd.read_csv(yaml_path.parent / "register.csv")
    reg["site"] = np.random.default_rng(seed).choice(levels, len(reg))
    reg.to_csv(yaml_path.parent / "register.csv", index=False)
    yaml_path.write_text(yaml_path.read_text() + "categorical: [site]\n")
    return yaml_path


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    data = with_site(write_register_dataset(root / "train", n=320, n_pos=64, seed=0), ("A", "B", "C"), 0)
    spaces = write_spaces(root / "spaces", n_trials=2, outer_folds=3, extra={"stack": STACK, "xgb": XGB})
    out = run(RunConfig(candidates=["logreg", "xgb", "stack"], data=str(data), profile="tiny", device="cpu",
                        spaces=[str(spaces)], results_dir=str(root / "results"), run="r1"))
    ex = build_export(Path(out), "stack", device="cpu")
    bundle = write_bundle(ex.model, root / "bundle", cohort=ex.cohort, run_dir=Path(out), oof=ex.oof)
    ext = with_site(write_register_dataset(root / "ext", n=400, n_pos=80, seed=5), ("A", "B", "C"), 5)
    return {"root": root, "run": Path(out), "ex": ex, "bundle": bundle, "ext": ext}


def test_the_loaded_bundle_predicts_exactly_as_the_model_in_memory(exported):
    ex, bundle = exported["ex"], exported["bundle"]
    cohort = load_for_prediction(exported["ext"], ex.model.schema)
    loaded = load_model(bundle)
    a, b = ex.model.table(cohort), loaded.table(cohort)
    pd.testing.assert_frame_equal(a, b, check_exact=True)
    # a patient's prediction does not depend on who else is in the batch (r and mu fixed at export)
    alone = loaded.table(cohort.subset(np.arange(3)))
    # (equal up to float rounding: BLAS sums a batch of 3 rows in another order than one of 400)
    np.testing.assert_allclose(alone["prob"].to_numpy(), b["prob"].to_numpy()[:3], rtol=1e-6, atol=0)
    assert [c.name for c in loaded.components] == ["logreg", "xgb", "stack"]
    assert len(loaded.final.members) == 2          # one member per inner fold (tiny profile: 2)
    # the whole cohort trained it: every patient has an out-of-fold prediction
    assert np.isfinite(ex.oof[1]).all() and len(ex.oof[1]) == 320


def test_the_external_auc_lies_inside_the_nested_cv_interval(exported, tmp_path, capsys):
    rc = main(["predict", str(exported["bundle"]), "--data", str(exported["ext"]), "--out", str(tmp_path / "p")])
    assert rc == 0
    v = pd.read_csv(tmp_path / "p" / "validation.csv").set_index("metric")
    board = pd.read_csv(exported["run"] / "leaderboard.csv").set_index("candidate").loc["stack"]
    ext_auc = v.loc["auc", "external"]
    assert board["auc_lo"] <= ext_auc <= board["auc_hi"], (ext_auc, board["auc_lo"], board["auc_hi"])
    assert v.loc["auc", "nested_cv"] == pytest.approx(board["auc"], abs=1e-9)   # repeat 0 pooled = the run's
    html = (tmp_path / "p" / "validation.html").read_text()
    assert "stack" in html
    pred = pd.read_csv(tmp_path / "p" / "predictions.csv")
    assert list(pred.columns) == ["patient", "prob", "entropy", "mutual_info", "set_90", "set_95",
                                  "above_threshold", "missing"]
    assert pred["patient"].iloc[0] == "P00001" and len(pred) == 400
    assert pred["prob"].between(0, 1).all() and (pred["entropy"] >= 0).all()
    assert set(pred["set_90"]) <= {"{NFF}", "{AFF}", "{NFF, AFF}", "{}"}
    assert "external validation (AUC" in capsys.readouterr().out


def test_conformal_sets_cover_at_their_level_on_new_patients(exported, tmp_path):
    main(["predict", str(exported["bundle"]), "--data", str(exported["ext"]), "--out", str(tmp_path / "p")])
    v = pd.read_csv(tmp_path / "p" / "validation.csv").set_index("metric")
    # class-conditional guarantee, with slack for 80 AFF / 320 NFF new patients
    assert v.loc["conformal90_coverage_aff", "external"] >= 0.78
    assert v.loc["conformal90_coverage_nff", "external"] >= 0.84


def test_a_changed_file_is_refused_by_name(exported, tmp_path):
    import shutil

    copy = tmp_path / "b"
    shutil.copytree(exported["bundle"], copy)
    tree = sorted((copy / "trees").iterdir())[0]
    data = bytearray(tree.read_bytes())
    data[len(data) // 2] ^= 1
    tree.write_bytes(bytes(data))
    with pytest.raises(UserError, match=f"file trees/{tree.name} was changed after export"):
        load_model(copy)
    shutil.rmtree(copy)
    shutil.copytree(exported["bundle"], copy)
    (copy / "model.json").write_text((copy / "model.json").read_text().replace('"C"', '"C" ', 1))
    with pytest.raises(UserError, match="file model.json was changed"):
        load_model(copy)
    shutil.rmtree(copy)
    shutil.copytree(exported["bundle"], copy)
    (copy / "weights").mkdir()
    (copy / "weights" / "extra.safetensors").write_bytes(b"x")
    with pytest.raises(UserError, match="weights/extra.safetensors is not part of the exported bundle"):
        load_model(copy)


def test_a_register_missing_a_column_gets_one_line(exported, tmp_path, capsys):
    reg = pd.read_csv(exported["ext"].parent / "register.csv").drop(columns=["v3"])
    (tmp_path / "new").mkdir()
    reg.to_csv(tmp_path / "new" / "register.csv", index=False)
    (tmp_path / "new" / "dataset.yaml").write_text(exported["ext"].read_text())
    rc = main(["predict", str(exported["bundle"]), "--data", str(tmp_path / "new" / "dataset.yaml"),
               "--out", str(tmp_path / "p")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1
    assert "register column 'v3'" in err[0] and "missing" in err[0]
    assert not (tmp_path / "p").exists()           # nothing written


def test_new_categories_and_extra_columns_warn_and_fall_back(exported, tmp_path):
    reg = pd.read_csv(exported["ext"].parent / "register.csv")
    reg.loc[:9, "site"] = "Z"                      # a site the model never saw
    reg["note_col"] = 1.0                          # a column the model does not read
    (tmp_path / "new").mkdir()
    reg.to_csv(tmp_path / "new" / "register.csv", index=False)
    # the new hospital's file does not list 'site' as categorical: the bundle's schema does
    (tmp_path / "new" / "dataset.yaml").write_text(exported["ext"].read_text().replace("categorical: [site]\n", ""))
    model = load_model(exported["bundle"])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        table = model.predict(tmp_path / "new" / "dataset.yaml")
    texts = [str(w.message) for w in caught if issubclass(w.category, SchemaWarning)]
    assert any("'site' has 1 level(s) never seen in training ('Z')" in t for t in texts), texts
    assert any("1 register column(s) the model does not read" in t for t in texts), texts
    assert np.isfinite(table["prob"]).all() and len(table) == 400


def test_unlabelled_patients_get_predictions_only_and_keep_ids_warns(exported, tmp_path, capsys):
    text = exported["ext"].read_text()
    lines = [ln for ln in text.splitlines() if not ln.startswith("label:")]
    (tmp_path / "new").mkdir()
    reg = pd.read_csv(exported["ext"].parent / "register.csv").drop(columns=["group"])
    reg.to_csv(tmp_path / "new" / "register.csv", index=False)
    (tmp_path / "new" / "dataset.yaml").write_text("\n".join(lines) + "\n")
    rc = main(["predict", str(exported["bundle"]), "--data", str(tmp_path / "new" / "dataset.yaml"),
               "--out", str(tmp_path / "p"), "--keep-ids"])
    assert rc == 0
    assert sorted(p.name for p in (tmp_path / "p").iterdir()) == ["predictions.csv"]
    pred = pd.read_csv(tmp_path / "p" / "predictions.csv")
    assert pred["id"].tolist() == reg["pid"].tolist() and "patient" not in pred
    assert "is patient data" in capsys.readouterr().err


def test_the_bundle_holds_safe_formats_and_a_card(exported):
    bundle = exported["bundle"]
    names = sorted(p.relative_to(bundle).as_posix() for p in bundle.rglob("*") if p.is_file())
    allowed = (".json", ".safetensors", ".ubj", ".txt", ".md")
    assert all(n.endswith(allowed) for n in names), names
    for n in names:
        assert b"pickle" not in (bundle / n).read_bytes()[:1_000_000] or n.endswith(".md")
    man = json.loads((bundle / "bundle.json").read_text())
    assert set(man["files"]) == set(names) - {"bundle.json"}
    card = (bundle / "model_card.md").read_text()
    for heading in ("## Intended use", "## Training cohort", "## Performance (nested cross-validation",
                    "## Calibration", "## Limitations"):
        assert heading in card
    assert "Patients: 320; AFF 64" in card
    assert not card.startswith("**SYNTHETIC")      # a user's (non-synthetic) cohort


def _with_q3(run: Path, dest: Path, verdict: str, p_holm: float, diff: float) -> Path:
    """A copy of the run's tables whose best fusion's AUC rows against the single modalities read ``verdict``."""
    dest.mkdir()
    for name in ("manifest.json", "leaderboard.csv", "comparisons.csv", "studies.csv"):
        shutil.copy(run / name, dest / name)
    comp = pd.read_csv(dest / "comparisons.csv")
    rows = comp["question"].eq("Q3") & comp["reference_role"].isin(["best_image", "best_register"]) \
        & comp["metric"].eq("auc")
    assert rows.any()
    comp.loc[rows, ["diff", "lo", "hi", "p_holm", "verdict"]] = [diff, diff - 0.02, diff + 0.02, p_holm, verdict]
    comp.to_csv(dest / "comparisons.csv", index=False)
    return dest


def test_export_takes_a_fusion_only_when_the_findings_say_it_beats_the_single_modalities(exported, tmp_path):
    """The default is the model the evidence supports: the best fusion when Q3 says "Yes", else the best
    single-modality model by inner-CV score, with the reason for the model card."""
    studies = pd.read_csv(exported["run"] / "studies.csv")
    inner = studies[studies["modality"] == "register"].groupby("candidate")["best_value"].mean()
    lost = _with_q3(exported["run"], tmp_path / "lost", "not_shown", 0.4, 0.01)
    assert default_candidate(lost) == inner.idxmax(), "a fusion exported although the findings do not say it helps"
    from benchmark.export.export import export_choice

    won = _with_q3(exported["run"], tmp_path / "won", "candidate_better", 0.001, 0.05)
    name, why = export_choice(won)
    assert name == "stack" and "answer Q3 'Yes'" in why and default_candidate(won) == "stack"
    name, why = export_choice(lost)
    assert name == inner.idxmax() and "Q3 'Not shown'" in why and "best single-modality model" in why
    worse = _with_q3(exported["run"], tmp_path / "worse", "reference_better", 0.001, -0.05)
    assert export_choice(worse)[0] == inner.idxmax()


def test_the_model_card_says_why_this_model(exported):
    card = (exported["bundle"] / "model_card.md").read_text()
    assert "Why this model: chosen with --candidate." in card


def test_export_refuses_unfinished_runs_and_unknown_candidates(exported, tmp_path):
    with pytest.raises(UserError, match="not a candidate of this run"):
        build_export(exported["run"], "resnet18", device="cpu")
    man = json.loads((exported["run"] / "manifest.json").read_text())
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "manifest.json").write_text(json.dumps({**man, "status": "failed"}))
    with pytest.raises(UserError, match="the run is failed; export needs a complete run"):
        build_export(bad, "stack", device="cpu")



def test_patients_without_images_are_kept_and_marked(tiny_dataset, tmp_path):
    from benchmark.export.export import export

    ds = tiny_dataset(n_pos=8, n_neg=12)
    spaces = write_spaces(tmp_path / "spaces", n_trials=1, outer_folds=2, extra={"tiny_cnn": TINY_CNN, "late": LATE})
    out = run(RunConfig(candidates=["logreg", "tiny_cnn", "late"], data=str(ds.yaml), profile="tiny", device="cpu",
                        spaces=[str(spaces)], results_dir=str(tmp_path / "results"), run="img"))
    bundle = export(Path(out), "late", tmp_path / "bundle", device="cpu")
    assert json.loads((bundle / "bundle.json").read_text())["candidate"] == "late"
    man = ds.read_manifest()
    ds.write_manifest(man[~man["patient_id"].isin(ds.ids[:3])])               # three patients lose their images
    model = load_model(bundle)
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        table = model.predict(ds.yaml)
    assert len(table) == 20
    assert table["missing"].tolist()[:3] == ["image"] * 3 and set(table["missing"][3:]) == {""}
    assert np.isfinite(table["prob"]).all()
    assert model.schema["images"]["kinds"] == ["dicom", "png"] and model.schema["images"]["size"] == 16


def test_another_image_kind_is_refused_unless_accepted(tiny_cohort):
    from benchmark.export.schema import conform

    schema = {"register": None, "images": {"size": 16, "kinds": ["dicom"]}}
    with pytest.raises(UserError, match="the images are png but the model was trained on dicom images"):
        conform(tiny_cohort, schema)
    assert conform(tiny_cohort, schema, accept_image_kind=True).n_patients == tiny_cohort.n_patients
    with pytest.raises(UserError, match="the model reads images only and the dataset has none"):
        conform(dataclasses.replace(tiny_cohort, images=None), schema)


def test_a_family_from_another_package_is_refused_at_export_in_one_line(tmp_path):
    from benchmark.export.export import export

    data = write_register_dataset(tmp_path / "d", n=80, n_pos=20)
    spaces = write_spaces(tmp_path / "spaces", n_trials=1, outer_folds=2)
    out = run(RunConfig(candidates=["probe"], data=str(data), profile="tiny", device="cpu", spaces=[str(spaces)],
                        results_dir=str(tmp_path / "results"), run="p"))
    with pytest.raises(UserError, match="probe cannot be exported: .*objects of class fake_families:ProbeFamily"):
        export(Path(out), "probe", tmp_path / "bundle", device="cpu")
    assert not (tmp_path / "bundle").exists() and not list(tmp_path.glob(".bundle.partial-*"))
