"""The synthetic cohort's ground truth: which register columns carry the risk, where the image signs are."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from benchmark.data import synth_images
from benchmark.data.dataset import load_dataset
from benchmark.data.synth import SynthConfig, simulate, write_cohort
from benchmark.data.synth_risk import risk_model
from benchmark.data.truth import region_mask
from benchmark.errors import UserError

TINY = dict(n_patients=40, n_aff=8, image_size=48, sparse_columns=10, workers=1)
# sha256 of register.csv of the default cohort (seed 0), as synth wrote it before the risk knob existed
DEFAULT_REGISTER_SHA256 = "efaa8cef8a5dc7b8e1b350fbd09d6ec5b4e75357b834581492e6ddedfcf351f4"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return write_cohort(tmp_path_factory.mktemp("truth") / "c", SynthConfig(**TINY))


def test_default_register_is_byte_identical_without_a_risk_seed():
    register, _, _ = simulate(SynthConfig())
    text = register.to_csv(index=False, float_format="%.6g").encode()
    assert hashlib.sha256(text).hexdigest() == DEFAULT_REGISTER_SHA256


def test_truth_names_the_default_risk_columns_with_their_signs(tiny):
    truth = json.loads((tiny.parent / "truth.json").read_text())["register"]
    read = {e["column"]: e["sign"] for e in truth["signal"] + truth["weak"]}
    assert read == {"age": -1, "sex": 1, "bisfo": 1, "bisfo_d": 1, "kort": 1, "kort_d": 1, "proton": 1, "ra": 1,
                    "charlson_index": -1, "dementia": -1}
    assert next(e for e in truth["signal"] + truth["weak"] if e["column"] == "sex")["level"] == "F"
    assert "bisfo_n" in truth["proxies"]["bisfo"]
    assert {"bmi", "site", "hemoglobin"} <= set(truth["noise"]) and not set(truth["noise"]) & set(read)
    assert all(c.startswith(("dx_", "atc_")) or c in ("site", "diagnosis_year", "bmi", "smoking", "living", "vitamin_d",
               "creatinine", "hemoglobin", "albumin", "n_hospital_days_prev_year", "n_prescriptions_prev_year",
               "n_outpatient_visits") for c in truth["noise"])


def test_signal_is_the_risk_columns_that_move_the_exact_posterior():
    from benchmark.data.synth_truth import SIGNAL_MIN_EFFECT, register_truth
    from benchmark.data import synth_register

    register, _, oracle = simulate(SynthConfig(n_patients=2000, n_aff=200))
    pool = list(synth_register.draw_pool(np.random.default_rng(0), 2).columns)
    truth = register_truth(risk_model(None), register, oracle["oracle_register"].to_numpy(), pool, seed=0)
    assert all(e["effect"] >= SIGNAL_MIN_EFFECT for e in truth["signal"])
    assert all(e["effect"] < SIGNAL_MIN_EFFECT for e in truth["weak"])
    assert {"bisfo", "age"} <= {e["column"] for e in truth["signal"]}
    assert "ra" in {e["column"] for e in truth["weak"]}   # 4 % prevalence, a small coefficient


def test_risk_seed_draws_other_risk_columns_and_keeps_them_monotone():
    default = set(risk_model(None).signs)
    for seed in (1, 2, 3):
        model = risk_model(seed)
        assert set(model.signs) != default and len(model.signs) >= 6
        register, _, _ = simulate(SynthConfig(n_patients=400, n_aff=40, risk_seed=seed))
        g = model(register)
        for col, (sign, level) in model.signs.items():   # raising the column (or being the level) moves g its way
            bumped = register.copy()
            if level is None:
                bumped[col] = register[col] + (1.0 if register[col].max() > 1 else 0.0)
                bumped.loc[register[col] == 0, col] = 1 if register[col].max() <= 1 else register[col]
            else:
                bumped[col] = level
            assert np.all(sign * (model(bumped) - g) >= -1e-12), (seed, col)
    assert risk_model(5).signs == risk_model(5).signs                 # deterministic for a seed


def test_risk_seed_cohort_truth_lists_the_drawn_columns(tmp_path):
    path = write_cohort(tmp_path / "c", SynthConfig(**TINY, risk_seed=2))
    truth = json.loads((path.parent / "truth.json").read_text())["register"]
    assert {e["column"] for e in truth["signal"] + truth["weak"]} == set(risk_model(2).signs)
    assert "risk seed 2" in truth["risk"]


def _diff_inside(a: dict, b: dict, names: tuple[str, ...]) -> tuple[float, float]:
    """(share of the pixel difference between two renders inside their ``names`` boxes, the boxes' area share)."""
    size = 96
    va, vb = (synth_images.render(p, view=0, size=size, seed=0) for p in (a, b))
    diff = np.abs(va.display - vb.display)
    mask = np.zeros((size, size), bool)
    for v in (va, vb):
        mask |= region_mask({"size": (size, size), "boxes": v.regions}, size, names)
    return float(diff[mask].sum() / diff.sum()), float(mask.mean())


def test_sign_boxes_hold_what_the_signs_change_in_the_image():
    _, lat, _ = simulate(SynthConfig(n_patients=40, n_aff=10))
    for i in range(4):
        p = {**lat.iloc[i].to_dict(), "implant": "none", "fragments": 0}
        for a, b, names, least in [({**p, "beaking": 0.05}, {**p, "beaking": 1.5}, ("beak",), 0.85),
                                   ({**p, "spike": 0.1}, {**p, "spike": 1.5}, ("line", "spike"), 0.9),
                                   (p, {**p, "fragments": 3}, ("line", "spike", "fragments"), 0.9)]:
            share, area = _diff_inside(a, b, names)
            assert share > least and share > 2.5 * area, (i, names, share, area)
        # a steeper line also moves where the displaced distal fragment starts, further away
        assert _diff_inside({**p, "angle": 0.0}, {**p, "angle": 60.0}, ("line", "spike", "beak"))[0] > 0.75


def test_loader_aligns_each_image_with_its_regions(tiny):
    cohort = load_dataset(tiny)
    assert cohort.truth is not None and cohort.truth["signal"]
    regions = cohort.images["regions"]
    assert regions.notna().all() and all(set(e["boxes"]) >= {"line", "beak"} for e in regions)
    sub = cohort.subset(np.arange(5))
    assert len(sub.images) == int(cohort.images["patient"].lt(5).sum()) and sub.truth == cohort.truth
    share = np.mean([region_mask(e, 32).mean() for e in regions])
    assert 0.05 < share < 0.5


def test_a_malformed_truth_file_is_one_line_naming_it(tmp_path):
    path = write_cohort(tmp_path / "c", SynthConfig(**TINY))
    (path.parent / "truth.json").write_text(json.dumps({"format": "aff-benchmark-truth/1",
                                                          "register": {"signal": [{"column": "age", "sign": 3}]}}))
    with pytest.raises(UserError, match=r"truth.json, key 'register'.signal: each entry needs") as exc:
        load_dataset(path)
    assert "\n" not in str(exc.value)


def test_synth_command_takes_a_risk_seed(tmp_path, capsys):
    from benchmark.cli import main

    out = tmp_path / "c"
    assert main(["synth", str(out), "--patients", "40", "--aff", "8", "--image-size", "16", "--sparse-columns", "4",
                 "--workers", "1", "--risk-seed", "4"]) == 0
    truth = json.loads((out / "truth.json").read_text())["register"]
    assert "risk seed 4" in truth["risk"]
    assert json.loads((out / "synth.json").read_text())["settings"]["risk_seed"] == 4
    with pytest.raises(UserError, match="--risk-seed"):
        SynthConfig(n_patients=40, n_aff=8, risk_seed=-1).validate()
