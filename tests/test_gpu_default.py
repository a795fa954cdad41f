"""The GPU default: the ``hour`` profile (standard's protocol, ImageNet weights, a short budget), picked
without ``--profile`` on a GPU, and one line when a picked profile's estimate is over a working day."""

from __future__ import annotations

import numpy as np

from benchmark.data.splits import outer_folds
from benchmark.run.folder import RunConfig
from benchmark.run.plan import calibrate, counts, pricing
from benchmark.run.plan.estimate import long_run_note
from benchmark.run.units import build_plan, default_profile, resolve_candidates
from benchmark.search.profiles import get_profile

NETWORK_FAMILIES = ("joint_concat", "film", "gated", "attention")


def test_a_gpu_picks_the_hour_profile_and_a_cpu_quick():
    assert default_profile("cuda") == "hour" and default_profile("cpu") == "quick"


def test_hour_keeps_standards_protocol_with_imagenet_weights_and_a_shorter_budget():
    hour, standard = get_profile("hour"), get_profile("standard")
    assert hour.pretrained == "imagenet" and standard.pretrained is None
    assert (hour.outer_folds, hour.inner_folds, hour.repeats) == (standard.outer_folds, standard.inner_folds, 1)
    assert hour.pruner["type"] == "successive_halving"
    assert hour.epoch_cap("image", True) < standard.epoch_cap("image", True)
    assert all(hour.trials_for(m) < standard.trials_for(m) for m in ("register", "image", "fusion"))
    assert hour.budget()["pretrained"] == "imagenet"
    # the fusion networks' register importance (a pass over the images per shuffled table) is left out
    assert hour.importance == "tables" and standard.importance == "auto" and get_profile("quick").importance == "auto"


def test_the_hour_profiles_networks_are_planned_at_under_45_minutes_on_one_h200():
    """Images and fusion networks of the `all` suite on the default cohort's size, from the H200 table
    (the register models, timed on the CPU, and the embeddings take the rest of the hour)."""
    profile = get_profile("hour")
    cands, _ = resolve_candidates(RunConfig(suite="all"), profile)
    gpu = [c for c in cands if c.modality == "image" or c.family in NETWORK_FAMILIES]
    y = np.zeros(4172, dtype=int)
    y[:172] = 1
    units = build_plan(gpu, outer_folds(y, n_folds=profile.outer_folds, repeats=profile.repeats, seed=0))
    plan = counts.build_cost_plan(gpu, profile, n_patients=4172, images_per_patient=2.49, units=units)
    priced = pricing.price(plan, calibrate.h200_costs(plan, measure_tables=False))
    assert {c.warm_source for c in plan.candidates if c.kind == "fusion_net"} == {"resnet18"}
    assert priced.total_s < 45 * 60, priced.total_s / 60


def test_a_picked_run_over_eight_hours_names_the_shorter_profile_in_one_line():
    note = long_run_note(22 * 3600 + 18 * 60, "standard")
    assert note is not None and "\n" not in note
    assert "22h18m" in note and "over 8 hours" in note and "`--profile hour`" in note
    assert "`--profile quick`" in long_run_note(9 * 3600, "hour")
    assert long_run_note(8 * 3600, "standard") is None and long_run_note(50 * 60, "hour") is None


def test_a_profiles_importance_level_is_checked_and_a_run_without_the_option_takes_it(tmp_path):
    import pytest
    import yaml

    from benchmark.errors import UserError

    (tmp_path / "profiles.yaml").write_text(yaml.safe_dump({"smoke": {"importance": "some"}}))
    with pytest.raises(UserError, match=r"profiles.yaml: profile 'smoke' key 'importance' must be one of auto, all, "
                                        r"tables, none, got 'some'"):
        get_profile("smoke", [tmp_path])
    (tmp_path / "profiles.yaml").write_text(yaml.safe_dump({"smoke": {"importance": "tables"}}))
    assert get_profile("smoke", [tmp_path]).importance == "tables"
    assert RunConfig().importance is None   # run --importance unset: the profile's level (runner.run)


def test_the_plan_names_the_fusion_networks_whose_importance_the_tables_level_leaves_out():
    from benchmark.run.plan import render
    from benchmark.run.plan.calibrate import h200_costs

    profile = get_profile("hour")
    cands, _ = resolve_candidates(RunConfig(suite="all"), profile)
    picked = [c for c in cands if c.name in ("logreg", "resnet18", "late_average", "joint_concat")]
    y = np.zeros(600, dtype=int)
    y[:60] = 1
    units = build_plan(picked, outer_folds(y, n_folds=profile.outer_folds, repeats=1, seed=0))
    lines = {}
    for level in ("tables", "auto"):
        plan = counts.build_cost_plan(picked, profile, n_patients=600, images_per_patient=2.0, units=units,
                                      n_columns=20, importance=level, device="cuda")
        costs = h200_costs(plan, measure_tables=False)
        lines[level] = [ln for ln in render.render(pricing.price(plan, costs), "h200").splitlines()
                        if "importance" in ln]
    assert any("left out for joint_concat (--importance tables" in ln for ln in lines["tables"])
    assert not any("left out" in ln for ln in lines["auto"])
