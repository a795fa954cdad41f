"""Candidate files, suites and profiles: validation errors name the file and the key."""

from pathlib import Path

import pytest
import yaml

from benchmark.errors import UserError
from benchmark.search.profiles import get_profile, load_profiles
from benchmark.search.spaces import load_candidate, load_candidates, load_suites, suite_members


def _write(tmp_path: Path, text: str, name: str = "cand.yaml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


GOOD = """
name: my_xgb
family: fake_families:ProbeFamily
modality: register
fixed: {}
space:
  C: {type: float, low: 0.01, high: 10, log: true}
"""


def test_valid_candidate_loads_and_builds(tmp_path):
    cand = load_candidate(_write(tmp_path, GOOD))
    assert cand.name == "my_xgb" and cand.modality == "register" and cand.space["C"]["log"]
    model = cand.build({"C": 1.0})
    assert model.params == {"C": 1.0}


@pytest.mark.parametrize("text, needle", [
    (GOOD.replace("fake_families:ProbeFamily", "no_such_family"), "family 'no_such_family' is not registered"),
    (GOOD.replace("low: 0.01, high: 10", "low: 10, high: 0.01"), "space.C: bad range"),
    (GOOD.replace("low: 0.01", "low: 0"), "space.C: log scale needs low > 0"),
    (GOOD + "colour: blue\n", "unknown key 'colour'"),
    (GOOD.replace("type: float", "type: float, lowest: 1"), "space.C: unknown key 'lowest'"),
    (GOOD.replace("modality: register", "modality: audio"), "modality 'audio' is unknown"),
    (GOOD.replace("name: my_xgb\n", ""), "missing or empty key 'name'"),
    ("name: [unclosed\n", "not valid YAML"),
    (GOOD.replace("type: float", "type: complex"), "space.C: needs 'type'"),
])
def test_bad_candidate_file_gives_one_line_error_naming_file_and_key(tmp_path, text, needle):
    path = _write(tmp_path, text)
    with pytest.raises(UserError) as err:
        load_candidate(path)
    msg = str(err.value)
    assert needle in msg and str(path) in msg and "\n" not in msg


def test_user_folder_adds_candidates_and_overrides_builtin_by_name(tmp_path):
    _write(tmp_path, GOOD)
    cands = load_candidates([tmp_path])
    assert "my_xgb" in cands and cands["my_xgb"].path.startswith(str(tmp_path))


def test_unknown_suite_names_known_ones():
    with pytest.raises(UserError, match="suite 'nope' is unknown; known suites: .*register"):
        suite_members("nope", load_candidates(), load_suites())


def test_suite_listing_an_unknown_candidate_is_an_error(tmp_path):
    _write(tmp_path, "mine: [my_xgb, ghost]\n", "suites.yaml")
    _write(tmp_path, GOOD)
    with pytest.raises(UserError, match="suite 'mine' lists 'ghost'"):
        suite_members("mine", load_candidates([tmp_path]), load_suites([tmp_path]))


def test_profiles_have_the_documented_budgets():
    smoke = get_profile("smoke")
    assert smoke.outer_folds >= 2 and smoke.n_trials >= 1
    with pytest.raises(UserError, match="profile 'huge' is unknown"):
        get_profile("huge")


def test_bad_profile_key_names_file_and_key(tmp_path):
    _write(tmp_path, "smoke: {n_trails: 3}\n", "profiles.yaml")
    with pytest.raises(UserError, match="profile 'smoke' has unknown key 'n_trails'"):
        get_profile("smoke", [tmp_path])


def test_profile_budgets_may_differ_by_modality(tmp_path):
    base = {k: v for k, v in get_profile("smoke").as_dict().items() if k != "name"}
    _write(tmp_path, yaml.safe_dump({
        "mine": {**base, "n_trials": {"register": 6, "image": 2, "fusion": 3}, "max_epochs": {"image": 8, "register": 50}},
        "fixed_caps": {**base, "n_trials": 4, "max_epochs": 5},
        "fusion_cap": {**base, "max_epochs": {"image": 8, "register": 50, "fusion": 12}}}), "profiles.yaml")
    prof = get_profile("mine", [tmp_path])
    assert [prof.trials_for(m) for m in ("register", "image", "fusion")] == [6, 2, 3]
    assert prof.epoch_cap("image", True) == 8
    assert prof.epoch_cap("register", False) == 50                 # the MLP: the register cap, not the image one
    assert prof.epoch_cap("fusion", True) == 8 and prof.epoch_cap("fusion", False) == 50
    assert prof.n_trials == 6 and prof.as_dict()["n_trials"] == {"register": 6, "image": 2, "fusion": 3}
    fixed = get_profile("fixed_caps", [tmp_path])
    assert {fixed.trials_for(m) for m in ("register", "image", "fusion")} == {4}
    assert fixed.epoch_cap("register", False) == fixed.epoch_cap("fusion", True) == 5
    assert fixed.as_dict()["n_trials"] == 4 and fixed.as_dict()["max_epochs"] == 5
    assert get_profile("fusion_cap", [tmp_path]).epoch_cap("fusion", True) == 12
    budget = prof.budget()
    assert budget["register"] == {"n_trials": 6, "max_epochs": 50, "refit_full": False}
    assert budget["fusion"]["max_epochs_image_networks"] == 8 and budget["fusion"]["max_epochs_other_networks"] == 50


@pytest.mark.parametrize("value, needle", [
    ("{register: 6, image: 2}", "key 'n_trials' lacks modality 'fusion'"),
    ("{register: 6, image: 2, fusion: 2, audio: 1}", "'audio' is not a modality"),
    ("{register: 6, image: 0, fusion: 2}", "key n_trials.image must be a positive whole number"),
    ("six", "key 'n_trials' must be a positive whole number or a mapping by modality"),
])
def test_bad_per_modality_budget_names_file_and_key(tmp_path, value, needle):
    path = _write(tmp_path, f"quick: {{n_trials: {value}}}\n", "profiles.yaml")
    with pytest.raises(UserError) as err:
        get_profile("quick", [tmp_path])
    assert needle in str(err.value) and str(path) in str(err.value) and "profile 'quick'" in str(err.value)


def test_builtin_budgets_are_trials_and_the_time_limit_only_a_safety_net():
    for prof in load_profiles().values():
        assert prof.study_timeout_s is None or prof.study_timeout_s >= 3600, prof.name
    quick = get_profile("quick")
    # CNN trials on a CPU are costly: fewer of them; the MLP is not held to the CNN's epoch cap
    assert quick.trials_for("image") < quick.trials_for("register")
    assert quick.epoch_cap("register", False) > quick.epoch_cap("image", True)
