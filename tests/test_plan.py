"""The cost plan: counts that match a run, the H200 table, the cached calibration, an honest ETA."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from benchmark import plan as P
from benchmark.fold_runner import Progress
from benchmark.runner import RunConfig, run
from benchmark.search.spaces import get_profile, load_candidates
from runner_helpers import TINY_CNN, write_register_dataset, write_spaces


def test_plan_counts_the_fits_a_tiny_run_makes(tmp_path, monkeypatch, capsys):
    data = write_register_dataset(tmp_path / "data", n=120, n_pos=30)
    spaces = write_spaces(tmp_path / "spaces", n_trials=2, outer_folds=3)
    log = tmp_path / "probe.jsonl"
    monkeypatch.setenv("AFF_PROBE_LOG", str(log))
    cfg = RunConfig(candidates=["probe"], data=str(data), profile="tiny", device="cpu", spaces=[str(spaces)],
                    results_dir=str(tmp_path / "results"), seed=3)
    run_dir = run(cfg)
    out = capsys.readouterr().out
    assert "cost estimate:" in out and "estimated total:" in out

    profile = get_profile("tiny", [spaces])
    cand = load_candidates([spaces])["probe"]
    cp = P.build_cost_plan([cand], profile, n_patients=120, images_per_patient=0.0)
    (c,) = cp.candidates
    trials = pd.read_csv(run_dir / "trials.csv")
    fits = [json.loads(line) for line in log.read_text().splitlines() if '"fit"' in line]
    assert c.units == trials.groupby(["repeat", "outer_fold"]).ngroups == 3
    assert c.units * c.trials == len(trials) == 6
    assert c.units * c.fits == len(fits) == 12     # trials x inner folds; the bag reuses the best trial's models
    assert c.fit_rows == pytest.approx(np.mean([len(f["patients"]) for f in fits]), abs=1)


def test_images_seen_follow_the_epoch_cap_and_the_sample_budget():
    cands = load_candidates()
    smoke, quick, standard = (get_profile(n) for n in ("smoke", "quick", "standard"))
    # smoke: 300 patients, 2 x 2 folds -> 75 patients per fit, 2.5 images each; 1 epoch cap, 256 images per fit
    (c,) = P.build_cost_plan([cands["resnet18"]], smoke, n_patients=300, images_per_patient=2.5).candidates
    assert (c.units, c.trials, c.fits, c.train_images) == (2, 1, 2, [188])
    assert c.images_seen == 2 * 2 * 188
    # quick: 4,000 images per fit is less than two epochs of ~3,477 images: one epoch
    (c,) = P.build_cost_plan([cands["resnet18"]], quick, n_patients=4172, images_per_patient=2.5).candidates
    assert c.epochs == [1] and c.train_images == [3477]
    # standard: no sample budget; the start trial's 15 epochs, then the space's upper bound 40 capped at 30
    (c,) = P.build_cost_plan([cands["resnet18"]], standard, n_patients=1000, images_per_patient=2.0).candidates
    assert c.epochs == [15] + [30] * 9 and c.fits == 10 * 3
    # a fusion network's fixed epochs (30) under the quick cap and budget, on 85 % of the part (its holdout)
    (c,) = P.build_cost_plan([cands["joint_concat"]], quick, n_patients=4172, images_per_patient=2.5).candidates
    assert c.kind == "fusion_net" and c.epochs == [1, 1]


def test_h200_table_lookup_and_pixel_scaling():
    assert P.h200_images_per_s("resnet18", 224) == (pytest.approx(13253), None)
    assert P.h200_images_per_s("resnet50", 512)[0] == pytest.approx(924)
    r, _ = P.h200_images_per_s("resnet18", 112)          # a quarter of the pixels: four times as many images
    assert r == pytest.approx(4 * 13253)
    mid = (224 ** 2 + 512 ** 2) / 2                      # halfway in pixels: halfway in time per image
    r, _ = P.h200_images_per_s("resnet18", int(round(mid ** 0.5)))
    assert 1 / r == pytest.approx((1 / 13253 + 1 / 2621) / 2, rel=1e-3)
    r, _ = P.h200_images_per_s("densenet121", 256)       # one size in the table: scaled from it
    assert r == pytest.approx(571 * 4)
    r, note = P.h200_images_per_s("convnext_nano", 224)  # not in the table: the nearest by parameter count
    assert r == pytest.approx(13253) and "resnet18" in note


def test_eta_weighs_units_by_their_estimated_cost():
    now = [0.0]
    costs = {("logreg", 0, 0): (1.0, 1, 0.0), ("cnn", 0, 0): (100.0, 1, 0.0)}
    p = Progress(4, costs=costs, clock=lambda: now[0])
    assert p.left_s() == pytest.approx(101)                # nothing done: the plan's estimate
    p.begin(("logreg", 0, 0))
    now[0] = 1.0
    p.unit_done()
    p.unit_done()                                          # the refit (estimated at 0 s)
    counted = now[0] / 2 * (4 - 2)                         # equal steps would say 1 s left
    assert p.left_s() == pytest.approx(100) and p.left_s() > 50 * counted
    p.begin(("cnn", 0, 0))
    now[0] = 201.0                                         # the CNN trial took twice its estimate
    p.unit_done()
    assert p.left_s() == pytest.approx(0.0)
    assert "~0s left" in p.eta() and "3m21s elapsed" in p.eta()


def test_eta_blends_the_plan_with_the_observed_pace():
    now = [0.0]
    costs = {("a", 0, i): (10.0, 1, 0.0) for i in range(10)}   # 100 s planned; the run goes at half speed
    p = Progress(20, costs=costs, clock=lambda: now[0])
    for i in range(5):
        p.begin(("a", 0, i))
        now[0] += 20.0
        p.unit_done()
    true_left = 100.0
    assert abs(p.left_s() - true_left) / true_left < 0.25      # within 25 % at half-way
    assert p.left_s() < true_left                               # the prior pulls towards the plan


def test_a_reused_unit_is_not_work_done_now():
    now = [0.0]
    costs = {("a", 0, 0): (50.0, 1, 0.0), ("a", 0, 1): (50.0, 1, 0.0)}
    p = Progress(4, costs=costs, clock=lambda: now[0])
    p.begin(("a", 0, 0), reused=True)
    p.unit_done(2)
    assert p.left_s() == pytest.approx(50)                 # the reused unit left the total, not the pace
    p.begin(("a", 0, 1))
    now[0] = 50.0
    p.unit_done()
    assert p.left_s() == pytest.approx(0)


def _tiny_cnn_plan(tmp_path: Path):
    (tmp_path / "sp").mkdir()
    (tmp_path / "sp" / "tiny_cnn.yaml").write_text(TINY_CNN)
    cand = load_candidates([tmp_path / "sp"])["tiny_cnn"]
    prof = get_profile("smoke")
    prof = type(prof)(**{**prof.__dict__, "image_size": 16})
    return P.build_cost_plan([cand], prof, n_patients=40, images_per_patient=2.0)


def test_cpu_calibration_is_cached_and_reused(tmp_path, monkeypatch):
    monkeypatch.setenv("AFF_BENCHMARK_CACHE", str(tmp_path / "cache"))   # empty: other tests' runs calibrate too
    plan = _tiny_cnn_plan(tmp_path)
    first = P.cpu_costs(plan, log=lambda m: None)
    assert first.calibration_s > 0 and first.train_s["test_resnet"] > 0 and first.eval_s["test_resnet"] > 0

    def no_timing(*a, **k):
        raise AssertionError("measured again although the cache holds it")

    monkeypatch.setattr(P, "measure_image", no_timing)
    second = P.cpu_costs(plan, log=lambda m: None)
    assert second.calibration_s == 0 and second.train_s == first.train_s
    assert P.missing_calibration(plan) == []
    priced = P.price(plan, second)
    assert priced.total_s > 0 and set(priced.unit_s) == {("tiny_cnn", 0, 0), ("tiny_cnn", 0, 1)}
    assert "estimated total" in P.render(priced, "cpu")


def test_a_warm_started_fusion_net_is_priced_at_the_mean_of_the_runs_image_architectures():
    from dataclasses import replace

    cands = load_candidates()
    quick = get_profile("quick")
    picked = [cands["resnet18"], cands["resnet50"], cands["joint_concat"], replace(cands["film"], fixed={
        **cands["film"].fixed, "warm_start": False})]
    plan = P.build_cost_plan(picked, quick, n_patients=4172, images_per_patient=2.5)
    by = {c.name: c for c in plan.candidates}
    assert by["joint_concat"].warm_archs == ("resnet18", "resnet50") and by["film"].warm_archs == ()
    costs = P.Costs(source="test", train_s={"resnet18": 1.0, "resnet50": 3.0}, eval_s={"resnet18": 0.0, "resnet50": 0.0},
                    fusion_overhead=1.0)
    priced = P.price(plan, costs).per_candidate
    # the same images: joint_concat at the mean cost (2), film at its own arch, resnet18 (1)
    warm, cold = priced["joint_concat"]["total_s"], priced["film"]["total_s"]
    assert warm - P.UNIT_OVERHEAD_S * 3 == pytest.approx(2 * (cold - P.UNIT_OVERHEAD_S * 3), rel=0.01)
