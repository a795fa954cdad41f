"""The cost plan: counts that match a run, the H200 table, the cached calibration, an honest ETA,
the makespan on several workers and GPUs."""

from __future__ import annotations

import json
import os
from dataclasses import replace
import random
from collections import namedtuple
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from benchmark.run.plan import calibrate, counts, estimate, pricing, render, schedule
from benchmark.run.plan import cache as plan_cache, costs as plan_costs
from benchmark.run.progress import Progress
from benchmark.run.runner import RunConfig, run
from benchmark.search.profiles import get_profile
from benchmark.search.spaces import load_candidates
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
    cp = counts.build_cost_plan([cand], profile, n_patients=120, images_per_patient=0.0)
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
    (c,) = counts.build_cost_plan([cands["resnet18"]], smoke, n_patients=300, images_per_patient=2.5).candidates
    assert (c.units, c.trials, c.fits, c.train_images) == (2, 1, 2, [188])
    assert c.images_seen == 2 * 2 * 188
    # quick: 4,000 images per fit is less than two epochs of ~3,477 images: one epoch
    (c,) = counts.build_cost_plan([cands["resnet18"]], quick, n_patients=4172, images_per_patient=2.5).candidates
    assert c.epochs == [1] and c.train_images == [3477]
    # standard without its pruner: no sample budget; the start trial's 15 epochs, then the space's
    # upper bound 40 capped at 30
    median = replace(standard, pruner={"type": "median"})
    (c,) = counts.build_cost_plan([cands["resnet18"]], median, n_patients=1000, images_per_patient=2.0).candidates
    assert c.epochs == [15] + [30] * 9 and c.fits == 10 * 3 and not c.trial_shares
    # standard: successive halving over epochs; every trial at the cap, priced at its expected share
    (h,) = counts.build_cost_plan([cands["resnet18"]], standard, n_patients=1000, images_per_patient=2.0).candidates
    assert h.epochs == [30] * 10 and h.fits == 10 * 3 and h.trial_shares[0] == 1.0
    assert h.train_images[0] == c.train_images[1] and all(0 < f <= 1 for f in h.trial_shares)
    assert sum(h.train_images) < 0.5 * sum(c.train_images)
    # a fusion network's fixed epochs (30) under the quick cap and budget, on 85 % of the part (its holdout);
    # quick's one fusion trial and its refit on all of outer-train (refit_full)
    (c,) = counts.build_cost_plan([cands["joint_concat"]], quick, n_patients=4172, images_per_patient=2.5).candidates
    assert c.kind == "fusion_net" and c.epochs == [1] and c.fits == 2 + 1 and c.refit_images > c.train_images[0]


def test_h200_table_lookup_and_pixel_scaling():
    r18, r50 = plan_costs.H200_IMAGES_PER_S["resnet18"], plan_costs.H200_IMAGES_PER_S["resnet50"]
    assert plan_costs.h200_images_per_s("resnet18", 224) == (pytest.approx(r18[224]), None)
    assert plan_costs.h200_images_per_s("resnet50", 512)[0] == pytest.approx(r50[512])
    r, _ = plan_costs.h200_images_per_s("resnet18", 112)          # a quarter of the pixels: four times as many images
    assert r == pytest.approx(4 * r18[224])
    mid = (224 ** 2 + 512 ** 2) / 2                      # halfway in pixels: halfway in time per image
    r, _ = plan_costs.h200_images_per_s("resnet18", int(round(mid ** 0.5)))
    assert 1 / r == pytest.approx((1 / r18[224] + 1 / r18[512]) / 2, rel=1e-3)
    r, _ = plan_costs.h200_images_per_s("convnext_nano", 448)     # one size in the table: scaled from it
    assert r == pytest.approx(plan_costs.H200_IMAGES_PER_S["convnext_nano"][224] / 4)
    r, note = plan_costs.h200_images_per_s("test_resnet", 224)    # not in the table: the nearest by parameter count
    assert r == pytest.approx(plan_costs.H200_IMAGES_PER_S["efficientnet_b0"][224]) and "efficientnet_b0" in note


def test_later_trials_are_priced_over_the_batch_sizes_their_space_offers():
    cands = load_candidates()
    median = replace(get_profile("standard"), pruner={"type": "median"})
    (c,) = counts.build_cost_plan([cands["resnet18"]], median, n_patients=1000, images_per_patient=2.0).candidates
    assert c.trial_batches == [(64,)] + [(16, 32, 64)] * 9          # the start's batch, then the space's choices
    costs = plan_costs.Costs(source="test", train_s={"resnet18": 1e-3}, eval_s={"resnet18": 0.0},
                    batch_train_s={("resnet18", 16): 4e-3, ("resnet18", 32): 2e-3})
    priced = pricing.price(counts.CostPlan("standard", 1000, 2.0, 5, 3, 1, 224, [c], {}), costs)
    later = (4e-3 + 2e-3 + 1e-3) / 3
    want = [c.inner * c.train_images[0] * 1e-3] + [c.inner * n * later for n in c.train_images[1:]]
    got = priced.per_candidate["resnet18"]["trial_s"] * c.trials - c.trials * pricing.TRIAL_OVERHEAD_S
    assert got == pytest.approx(sum(want))
    # the fusion networks fix their batch: every trial at it; one trial (quick): only the start's batch
    (f,) = counts.build_cost_plan([cands["joint_concat"]], median, n_patients=1000, images_per_patient=2.0).candidates
    assert f.trial_batches == [(64,)] * 10
    (q,) = counts.build_cost_plan([cands["resnet18"]], get_profile("quick"), n_patients=1000, images_per_patient=2.0).candidates
    assert q.trial_batches == [(64,)]
    assert counts._other_batches(counts.CostPlan("quick", 1000, 2.0, 3, 2, 1, 32, [q, f], {})) == []


def test_h200_prices_a_batch_under_the_tables_by_its_step_time():
    cands = load_candidates()
    (c,) = counts.build_cost_plan([cands["resnet18"]], get_profile("standard"), n_patients=1000,
                             images_per_patient=2.0).candidates
    plan = counts.CostPlan("standard", 1000, 2.0, 5, 3, 1, 224, [c], {})
    costs = calibrate.h200_costs(plan, measure_tables=False)
    base = costs.train_s["resnet18"]
    assert base == pytest.approx(1 / plan_costs.H200_IMAGES_PER_S["resnet18"][224])
    assert costs.batch_train_s == {("resnet18", 16): pytest.approx(4 * base), ("resnet18", 32): pytest.approx(2 * base)}
    assert plan_costs.h200_batch_factor(128) == 1.0 and plan_costs.h200_batch_factor(64) == 1.0
    assert any("not in the H200 table" in n for n in costs.notes)
    text = render.render(pricing.price(plan, costs), "h200")
    assert "resnet18 (16/32/64 vs 64) 2.33x" in text


def test_cpu_calibration_measures_the_batch_sizes_a_search_draws(tmp_path, monkeypatch):
    monkeypatch.setenv("AFF_BENCHMARK_CACHE", str(tmp_path / "cache"))
    seen = []

    def fake(arch, size, batch, **kw):
        seen.append((arch, batch))
        return {"train_s": 0.064 / batch, "eval_s": 1e-4, "measured_s": 0.0}

    monkeypatch.setattr(calibrate, "measure_image", fake)
    cands = load_candidates()
    prof = replace(get_profile("standard"), image_size=32)
    plan = counts.build_cost_plan([cands["resnet18"]], prof, n_patients=1000, images_per_patient=2.0)
    assert calibrate.missing_calibration(plan) == ["resnet18"]
    costs = calibrate.cpu_costs(plan, log=lambda m: None)
    assert sorted(seen) == [("resnet18", 16), ("resnet18", 32), ("resnet18", 64)]
    assert costs.train_at("resnet18", (16, 32, 64)) == pytest.approx((4e-3 + 2e-3 + 1e-3) / 3)
    assert calibrate.missing_calibration(plan) == []


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
    return counts.build_cost_plan([cand], prof, n_patients=40, images_per_patient=2.0)


def test_cpu_calibration_is_cached_and_reused(tmp_path, monkeypatch):
    monkeypatch.setenv("AFF_BENCHMARK_CACHE", str(tmp_path / "cache"))   # empty: other tests' runs calibrate too
    plan = _tiny_cnn_plan(tmp_path)
    first = calibrate.cpu_costs(plan, log=lambda m: None)
    assert first.calibration_s > 0 and first.train_s["test_resnet"] > 0 and first.eval_s["test_resnet"] > 0

    def no_timing(*a, **k):
        raise AssertionError("measured again although the cache holds it")

    monkeypatch.setattr(calibrate, "measure_image", no_timing)
    second = calibrate.cpu_costs(plan, log=lambda m: None)
    assert second.calibration_s == 0 and second.train_s == first.train_s
    assert calibrate.missing_calibration(plan) == []
    priced = pricing.price(plan, second)
    assert priced.total_s > 0 and set(priced.unit_s) == {("tiny_cnn", 0, 0), ("tiny_cnn", 0, 1)}
    assert "estimated total" in render.render(priced, "cpu")


def test_a_warm_started_fusion_net_is_priced_at_the_costliest_of_the_runs_image_architectures():
    from dataclasses import replace

    cands = load_candidates()
    quick = get_profile("quick")
    picked = [cands["resnet18"], cands["resnet50"], cands["joint_concat"], replace(cands["film"], fixed={
        **cands["film"].fixed, "warm_start": False})]
    plan = counts.build_cost_plan(picked, quick, n_patients=4172, images_per_patient=2.5)
    by = {c.name: c for c in plan.candidates}
    assert by["joint_concat"].warm_archs == ("resnet18", "resnet50") and by["film"].warm_archs == ()
    costs = plan_costs.Costs(source="test", train_s={"resnet18": 1.0, "resnet50": 3.0}, eval_s={"resnet18": 0.0, "resnet50": 0.0},
                    fusion_overhead=1.0)
    priced = pricing.price(plan, costs).per_candidate
    # the same images: joint_concat at the costliest arch (resnet50, 3), film at its own, resnet18 (1)
    warm, cold = priced["joint_concat"]["total_s"], priced["film"]["total_s"]
    assert warm - pricing.UNIT_OVERHEAD_S * 3 == pytest.approx(3 * (cold - pricing.UNIT_OVERHEAD_S * 3), rel=0.01)
    # once a fold's source is chosen its units take that architecture's cost: resnet18 1 / resnet50 3
    full = pricing.price(plan, costs)
    assert full.warm_scale("joint_concat", "resnet50") == pytest.approx(1.0)
    assert full.warm_scale("joint_concat", "resnet18") == pytest.approx(1 / 3)
    assert full.warm_scale("film", "resnet50") is None and full.warm_scale("joint_concat", "vgg") is None
    # the plan also says what the total would be were the cheapest source chosen everywhere
    high, low, low_s = full.warm_range
    assert (high, low) == ("resnet50", "resnet18")
    cheap = pricing.price(plan, costs, warm_pick=min)
    assert low_s == pytest.approx(cheap.total_s) and low_s < full.total_s and cheap.warm_range is None
    assert ("priced here at the costliest, resnet50; were resnet18 (the cheapest) best in every fold, the total "
            f"would be {render.fmt_s(low_s)}") in render.render(full, "cpu")


def test_a_fusion_net_warm_started_from_a_named_candidate_is_priced_at_that_candidates_architecture():
    from dataclasses import replace

    cands = load_candidates()
    named = replace(cands["gated"], fixed={**cands["gated"].fixed, "warm_start": "resnet18"})
    plan = counts.build_cost_plan([cands["resnet18"], cands["resnet50"], named], get_profile("quick"), n_patients=4172,
                             images_per_patient=2.5)
    by = {c.name: c for c in plan.candidates}
    assert by["gated"].warm_archs == ("resnet18",) and by["gated"].warm_source == "resnet18"
    costs = plan_costs.Costs(source="test", train_s={"resnet18": 1.0, "resnet50": 3.0}, eval_s={"resnet18": 0.0, "resnet50": 0.0},
                    fusion_overhead=1.0)
    priced = pricing.price(plan, costs)
    assert priced.warm_range is None                    # no range: the source is known before the run
    assert priced.per_candidate["gated"]["total_s"] == pytest.approx(priced.per_candidate["resnet18"]["total_s"],
                                                                     rel=0.2)
    assert ("warm starts: gated starts from resnet18 in every fold (warm_start_source), not from each fold's best "
            "image model") in render.render(priced, "cpu")


def _warm_toy_plan() -> list:
    """One fold: resnet18 and resnet50 image units, then a warm-started gated unit (stand-ins for WorkUnit)."""
    from types import SimpleNamespace as NS

    fold = NS(repeat=0, index=0)
    img = lambda name: NS(key=(name, 0, 0), fold=fold, candidate=NS(name=name, modality="image", family="timm_cnn",
                                                                   fixed={"arch": name}, consumes=()))
    fus = NS(key=("gated", 0, 0), fold=fold, candidate=NS(name="gated", modality="fusion", family="gated",
                                                        fixed={}, consumes=()))
    return [img("resnet18"), img("resnet50"), fus]


def test_a_sequential_run_reprices_warm_started_units_once_their_source_is_final():
    from types import SimpleNamespace as NS

    from benchmark.run.runner import warm_repricer

    plan = _warm_toy_plan()
    fus = plan[2]
    progress = Progress(3, costs={u.key: (10.0, 1, 0.0) for u in plan})
    best = {"name": "resnet18"}
    fr = NS(best_name=lambda role, f: best["name"], cands={n: u.candidate for n, u in
                                                         (("resnet18", plan[0]), ("resnet50", plan[1]))})
    priced = NS(warm_scale=lambda name, arch: {"resnet18": 0.5, "resnet50": 1.5}[arch])
    reprice = warm_repricer(priced, progress, plan)
    progress.begin(plan[0].key)
    progress.end(plan[0].key)
    reprice(fr)   # resnet50 not run yet: the choice is open
    assert progress.total_cost == 30.0 and progress.costs[fus.key] == (10.0, 1, 0.0)
    best["name"] = "resnet50"
    progress.begin(plan[1].key)
    progress.end(plan[1].key)
    reprice(fr)
    assert progress.total_cost == pytest.approx(35.0) and progress.costs[fus.key] == (15.0, 1, 0.0)
    reprice(fr)   # once only
    assert progress.total_cost == pytest.approx(35.0)


def test_a_parallel_run_reprices_a_warm_started_unit_when_the_rows_settle_its_source():
    """The Ray driver's ``on_row``: rows arrive in any order; the fusion unit is re-priced once every
    image unit of its fold has ended, at the architecture of the best of them by inner-CV score."""
    from types import SimpleNamespace as NS

    from benchmark.run.fold_runner import FoldRunner
    from benchmark.run.runner import row_repricer

    plan = _warm_toy_plan()
    fus = plan[2]
    progress = Progress(3, costs={u.key: (10.0, 1, 0.0) for u in plan}, workers=2)
    choices = FoldRunner.__new__(FoldRunner)   # only its fold choices are used
    choices.cands, choices.best = {u.candidate.name: u.candidate for u in plan}, {}
    priced = NS(warm_scale=lambda name, arch: {"resnet18": 0.5, "resnet50": 1.5}[arch])
    on_row = row_repricer(priced, progress, choices, plan)
    row = lambda value: {"status": "ok", "best_value": value, "repeat": 0, "outer_fold": 0}
    for unit, value in ((plan[1], 0.8), (plan[0], 0.7)):   # resnet50 ends first, and is the better one
        progress.begin(unit.key)
        progress.end(unit.key)
        on_row(unit, row(value))
        if unit is plan[1]:
            assert progress.costs[fus.key] == (10.0, 1, 0.0)   # resnet18 still runs: the choice is open
    assert progress.costs[fus.key] == (15.0, 1, 0.0) and progress.total_cost == pytest.approx(35.0)


# ---- the makespan on N workers / G GPUs ----------------------------------------------------------

U = namedtuple("U", "key needs")


def _two_folds():
    """Per fold: an input a (10 s), an input b (20 s), a fusion f (5 s) that reads both."""
    units, dur = [], {}
    for fold in (0, 1):
        a, b, f = ("a", 0, fold), ("b", 0, fold), ("f", 0, fold)
        units += [U(a, ()), U(b, ()), U(f, (a, b))]
        dur.update({a: 10.0, b: 20.0, f: 5.0})
    return units, dur


def test_makespan_of_a_fusion_plan_on_one_and_two_workers():
    units, dur = _two_folds()
    one = schedule.makespan(units, dur, workers=1)
    assert one.makespan == pytest.approx(70) and one.speedup == pytest.approx(1)
    two = schedule.makespan(units, dur, workers=2)
    # longest chain first: both b at 0-20, both a at 20-30, both fusions at 30-35
    assert two.makespan == pytest.approx(35) and two.speedup == pytest.approx(2)
    assert two.start[("b", 0, 0)] == two.start[("b", 0, 1)] == 0 and two.start[("f", 0, 1)] == pytest.approx(30)
    assert two.critical_s == pytest.approx(25) and two.critical_chain == [("b", 0, 0), ("f", 0, 0)]
    # plan order: a0 b0 | a1 at 10 | f0 and b1 at 20 | f1 waits for b1 until 40
    plain = schedule.makespan(units, dur, workers=2, order="plan")
    assert plain.makespan == pytest.approx(45) and plain.start[("f", 0, 1)] == pytest.approx(40)
    for s in (one, two, plain):   # a unit starts only after everything it reads has ended
        assert all(s.start[u.key] >= s.end[n] - 1e-9 for u in units for n in u.needs)


def test_gpu_share_packs_network_units_on_one_gpu():
    g1, g2, c = ("cnn", 0, 0), ("cnn", 0, 1), ("logreg", 0, 0)
    units, dur = [U(g1, ()), U(g2, ())], {g1: 10.0, g2: 10.0}
    whole = schedule.makespan(units, dur, workers=2, gpus=1, gpu_share=1.0, is_gpu_unit={g1, g2})
    assert whole.start[g2] == pytest.approx(10) and whole.makespan == pytest.approx(20)
    half = schedule.makespan(units, dur, workers=2, gpus=1, gpu_share=0.5, is_gpu_unit={g1, g2}, util=1.0)
    assert half.start == {g1: 0.0, g2: 0.0} and half.gpu == {g1: 0, g2: 0}
    assert half.makespan == pytest.approx(20)             # util 1: sharing gains nothing, loses nothing
    measured = schedule.makespan(units, dur, workers=2, gpus=1, gpu_share=0.5, is_gpu_unit={g1, g2})
    assert measured.makespan == pytest.approx(20 * schedule.GPU_SHARE_UTIL)   # the H200's measured 1.44x for two
    fits = schedule.makespan(units, dur, workers=2, gpus=1, gpu_share=0.5, is_gpu_unit={g1, g2}, util=0.5)
    assert fits.makespan == pytest.approx(10)             # two half-busy fits: both at full speed
    two_gpus = schedule.makespan(units, dur, workers=2, gpus=2, gpu_share=0.5, is_gpu_unit={g1, g2})
    assert two_gpus.gpu == {g1: 0, g2: 1} and two_gpus.makespan == pytest.approx(10)   # least-loaded GPU
    # a unit waiting for the GPU leaves its worker slot to a CPU unit
    mixed = schedule.makespan(units + [U(c, ())], {**dur, c: 10.0}, workers=2, gpus=1, is_gpu_unit={g1, g2})
    assert mixed.start[c] == 0 and mixed.makespan == pytest.approx(20) and mixed.gpu[c] is None
    # no GPU: network units are ordinary units on the workers
    assert schedule.makespan(units, dur, workers=2, gpus=0, is_gpu_unit={g1, g2}).makespan == pytest.approx(10)


def test_makespan_respects_its_lower_bounds():
    rng = random.Random(0)
    for trial in range(30):
        units, dur, gpu = [], {}, set()
        for fold in range(rng.randint(1, 4)):
            inputs = [(f"in{i}", 0, fold) for i in range(rng.randint(1, 5))]
            for k in inputs:
                units.append(U(k, ()))
            for j in range(rng.randint(0, 3)):
                units.append(U((f"fu{j}", 0, fold), tuple(rng.sample(inputs, rng.randint(1, len(inputs))))))
        for u in units:
            dur[u.key] = rng.choice([0.0, rng.uniform(0.1, 100.0)])
            if rng.random() < 0.5:
                gpu.add(u.key)
        workers, gpus = rng.randint(1, 6), rng.randint(0, 3)
        s = schedule.makespan(units, dur, workers, gpus, rng.choice([1.0, 0.5, 0.25]), gpu, util=rng.choice([0.5, 1.0]),
                       order=rng.choice(schedule.SCHEDULE_ORDERS))
        assert s.makespan >= s.critical_s - 1e-6
        assert s.makespan >= sum(dur.values()) / workers - 1e-6
        assert s.makespan >= s.lower_bound - 1e-6
        assert set(s.end) == set(dur)
        assert all(s.start[u.key] >= s.end[n] - 1e-9 for u in units for n in u.needs)
        assert all(s.end[k] - s.start[k] >= dur[k] - 1e-6 for k in dur)    # never faster than alone


def test_makespan_refuses_a_cycle_and_bad_settings():
    a, b = ("a", 0, 0), ("b", 0, 0)
    with pytest.raises(ValueError, match="cycle"):
        schedule.makespan([U(a, (b,)), U(b, (a,))], {a: 1.0, b: 1.0})
    with pytest.raises(ValueError, match="gpu_share"):
        schedule.makespan([U(a, ())], {a: 1.0}, workers=1, gpus=1, gpu_share=0.0)
    assert schedule.makespan([U(a, (("gone", 0, 0),))], {a: 1.0}).makespan == 1.0   # a need outside the plan is met


def test_priced_offers_unit_durations_and_gpu_units():
    cands = load_candidates()
    quick = get_profile("quick")
    plan = counts.build_cost_plan([cands["logreg"], cands["mlp"], cands["resnet18"], cands["embed_xgboost"]], quick,
                             n_patients=1000, images_per_patient=2.0)
    costs = plan_costs.Costs(source="test", train_s={"resnet18": 1e-3}, eval_s={"resnet18": 1e-4},
                    fit_s={"logreg": 0.5, "mlp": 2.0, "embed_xgboost": 1.0})
    priced = pricing.price(plan, costs)
    dur = priced.unit_durations()
    assert sum(dur.values()) == pytest.approx(priced.total_s)
    assert {k[0] for k in priced.gpu_units()} == {"mlp", "resnet18", "embed_xgboost"}


def test_plan_cli_prints_the_makespan(tmp_path, capsys, monkeypatch):
    from benchmark.cli import main

    data = write_register_dataset(tmp_path / "data", n=120, n_pos=30)
    spaces = write_spaces(tmp_path / "spaces", n_trials=2, outer_folds=3)
    argv = ["plan", "--candidates", "probe", "--data", str(data), "--spaces", str(spaces), "--profile", "tiny",
            "--device-profile", "cpu"]
    monkeypatch.setattr(os, "cpu_count", lambda: 4)
    assert main(argv + ["--workers", "2"]) == 0
    out = capsys.readouterr().out
    assert "estimated total:" in out and "makespan on 2 workers, no GPU:" in out and "speed-up of" in out
    # priced as `run --workers 2` runs its fits: the cores shared among the workers
    assert "2 thread(s) per fit" in out and "by one process on 2 thread(s)" in out
    assert main(argv) == 0 and "4 thread(s) per fit" in capsys.readouterr().out
    assert "critical path" in out and "lower bound" in out and "schedule model:" in out
    assert main(argv + ["--workers", "2", "--gpus", "1", "--gpu-share", "0.5"]) == 0
    assert "up to 2 per GPU" in capsys.readouterr().out
    assert main(argv + ["--gpu-share", "0"]) == 2
    import torch

    if not torch.cuda.is_available():   # measuring a GPU that is not there: one clear line, exit 2
        gpu = argv[:-1] + ["gpu"]
        assert main(gpu) == 2
        assert "--device-profile gpu measures this machine's GPU, but PyTorch sees no CUDA GPU" in capsys.readouterr().err


def test_run_estimate_prints_the_makespan_with_several_workers(tmp_path):
    from benchmark.data.dataset import load_dataset
    from benchmark.data.splits import outer_folds
    from benchmark.run.units import build_plan

    data = write_register_dataset(tmp_path / "data", n=120, n_pos=30)
    spaces = write_spaces(tmp_path / "spaces", n_trials=2, outer_folds=3)
    cohort, profile = load_dataset(data), get_profile("tiny", [spaces])
    cands = [load_candidates([spaces])["probe"]]
    units = build_plan(cands, outer_folds(cohort.y, n_folds=3, repeats=1, seed=0))
    lines: list[str] = []
    priced = estimate.run_estimate(cands, profile, cohort, units, "cpu", log=lines.append)   # the old call
    assert priced.schedule is None and not any("makespan" in line for line in lines)
    priced = estimate.run_estimate(cands, profile, cohort, units, "cpu", log=lines.append, workers=3)
    assert priced.schedule.makespan == pytest.approx(max(priced.unit_durations().values()))   # 3 units at once
    assert any("makespan on 3 workers, no GPU" in line for line in lines)
    lines.clear()   # a GPU run without this GPU's own calibration prices with the stored H200 table
    estimate.run_estimate(cands, profile, cohort, units, "cuda", log=lines.append)
    assert any("H200 table" in line for line in lines)


def test_register_fits_are_timed_on_the_cohorts_own_rows(tmp_path, monkeypatch):
    """Boosted trees stop early at a round that follows the data, so a synthetic table misprices
    them (3-4x on the default cohort): the calibration fits a sample of the cohort's own rows,
    and the cache key names the data, so another dataset is measured anew."""
    from benchmark.data.dataset import load_dataset

    monkeypatch.setenv("AFF_BENCHMARK_CACHE", str(tmp_path / "cache"))
    cohort = load_dataset(write_register_dataset(tmp_path / "a", n=150, n_pos=30))
    cand = load_candidates()["logreg"]
    plan = estimate.plan_for_run([cand], get_profile("smoke"), cohort, None)
    seen = []
    real_measure = calibrate.measure_table_fit

    def spy(*args, data=None, **kw):
        seen.append(data)
        return real_measure(*args, data=data, **kw)

    monkeypatch.setattr(calibrate, "measure_table_fit", spy)
    costs = calibrate.cpu_costs(plan, log=lambda m: None)
    assert costs.fit_s["logreg"] > 0 and len(seen) == 1
    table = seen[0]
    fit_rows = next(c.fit_rows for c in plan.candidates if c.name == "logreg")
    assert len(table) == fit_rows and set(table.y) == {0, 1}
    own = cohort.register.iloc[table.patients].reset_index(drop=True)
    pd.testing.assert_frame_equal(table.register, own)                 # the cohort's rows, not made-up ones
    np.testing.assert_array_equal(table.y, cohort.y[table.patients])
    assert calibrate.missing_calibration(plan) == []

    other = load_dataset(write_register_dataset(tmp_path / "b", n=150, n_pos=30, seed=1))
    plan_b = estimate.plan_for_run([cand], get_profile("smoke"), other, None)
    assert calibrate.missing_calibration(plan_b) == ["logreg"]                # another dataset: measured again

    unlabelled = replace(other, labelled=False, y=np.full(other.n_patients, -1))
    plan_c = estimate.plan_for_run([cand], get_profile("smoke"), unlabelled, None)
    assert calibrate._TABLE_SHAPE["cohort"] is None and calibrate._TABLE_SHAPE["tag"] == "synthetic"
    assert calibrate.missing_calibration(plan_c) == ["logreg"]


def test_a_calibration_records_how_busy_the_machine_was_and_the_plan_says_so(tmp_path, monkeypatch):
    """A quick run printed 19m57s for 17 min 13 s: its CNN costs had been measured while another
    process generated the cohort. Each measurement now stores the other processes' CPU share
    (/proc/stat less this process's own CPU time), and a plan whose costs include a busy one says so."""
    monkeypatch.setenv("AFF_BENCHMARK_CACHE", str(tmp_path))
    counters = iter([(10.0, 100.0), (16.0, 110.0)])            # 6 CPU-s used of 10 CPU-s available
    own = iter([(1.0, 0.0, 0, 0, 0), (2.0, 0.0, 0, 0, 0)])     # of which 1 CPU-s is this process's
    monkeypatch.setattr(plan_cache, "_cpu_counters", lambda: next(counters))
    monkeypatch.setattr(plan_cache.os, "times", lambda: next(own))
    cache: dict = {}
    plan_cache._measure("fit|x", cache, lambda: {"fit_s": 0.5})
    assert cache["fit|x"] == {"fit_s": 0.5, "others": 0.5} == plan_cache._load_cache()["fit|x"]

    busy, idle = plan_costs.Costs(source="t", others=[0.0, 0.5]), plan_costs.Costs(source="t", others=[0.0, 0.1])
    calibrate._note_busy(busy)
    calibrate._note_busy(idle)
    assert len(busy.notes) == 1 and "other processes used 50% of this machine's CPU" in busy.notes[0]
    assert "--recalibrate" in busy.notes[0] and idle.notes == []


def test_the_others_share_is_unknown_without_proc_stat(monkeypatch):
    monkeypatch.setattr(plan_cache, "_cpu_counters", lambda: None)
    with plan_cache.others_share() as busy:
        pass
    assert busy.share is None
