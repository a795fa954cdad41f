"""Candidate files, suites and profiles: validation errors name the file and the key."""

from pathlib import Path

import pytest

from benchmark.errors import UserError
from benchmark.search.spaces import get_profile, load_candidate, load_candidates, load_suites, suite_members


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
