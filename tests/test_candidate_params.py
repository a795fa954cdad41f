"""Candidate files: parameters checked at load time for every family, and `extends:`."""

from pathlib import Path

import pytest
import yaml

from benchmark.candidates.base import family_names, get_family
from benchmark.errors import UserError
from benchmark.search.files import BUILTIN_DIR
from benchmark.search.spaces import load_candidate, load_candidates

# One built-in candidate per family: its file is the template the misspellings go into.
BUILTIN = {c.family: c for c in load_candidates().values()}


def test_every_registered_family_has_a_builtin_candidate_and_declares_its_parameters():
    assert set(BUILTIN) == set(family_names())
    for name in family_names():
        assert get_family(name).param_names(), name


def _misspelt(family: str, section: str, tmp_path: Path) -> tuple[Path, str]:
    """The family's built-in candidate file with one parameter name misspelt in ``section``."""
    data = yaml.safe_load(Path(BUILTIN[family].path).read_text())
    data.pop("extends", None)
    cand = BUILTIN[family]
    data.update(family=cand.family, modality=cand.modality, fixed=dict(cand.fixed), space=dict(cand.space),
                start=dict(cand.start))
    if section == "fixed":
        data["fixed"]["learning_ratte"] = 0.1
        bad = "learning_ratte"
    else:
        key = next(iter(data["space"]))
        bad = key + "x"
        data["space"][bad] = data["space"].pop(key)
        if section == "start":   # the space is right, the start names a parameter the space lacks
            data["space"][key] = data["space"].pop(bad)
            data["start"][bad] = data["start"].pop(key, 1)
    path = tmp_path / f"{family}_{section}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path, bad


@pytest.mark.parametrize("family", sorted(BUILTIN))
@pytest.mark.parametrize("section", ["fixed", "space", "start"])
def test_a_misspelt_parameter_fails_at_load_time_naming_file_and_key(family, section, tmp_path):
    path, bad = _misspelt(family, section, tmp_path)
    with pytest.raises(UserError) as err:
        load_candidate(path)
    msg = str(err.value)
    assert str(path) in msg and f"{section}.{bad}" in msg and "\n" not in msg


def test_a_categorical_value_the_family_does_not_know_fails_at_load_time(tmp_path):
    data = yaml.safe_load((BUILTIN_DIR / "mlp.yaml").read_text())
    data["space"]["norm"]["choices"] = ["none", "batchnorm"]
    path = tmp_path / "mlp.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(UserError, match=r"space\.norm: 'batchnorm' is not allowed for family 'mlp'"):
        load_candidate(path)


def test_library_parameters_of_tree_families_are_accepted(tmp_path):
    data = yaml.safe_load((BUILTIN_DIR / "xgboost.yaml").read_text())
    data["fixed"]["max_bin"] = 128          # an XGBClassifier parameter the family does not declare
    path = tmp_path / "xgb.yaml"
    path.write_text(yaml.safe_dump(data))
    assert load_candidate(path).fixed["max_bin"] == 128


def test_an_architecture_is_a_candidate_file_of_at_most_five_lines():
    text = (BUILTIN_DIR / "resnet50.yaml").read_text()
    assert len(text.strip().splitlines()) <= 5 and "extends: resnet18" in text
    cands = load_candidates()
    r18, r50 = cands["resnet18"], cands["resnet50"]
    assert r50.family == r18.family and r50.space == r18.space and list(r50.space) == list(r18.space)
    assert r50.start == r18.start and r50.fixed == {**r18.fixed, "arch": "resnet50"}


def test_extends_merges_key_by_key_and_a_fixed_parameter_leaves_the_search(tmp_path):
    (tmp_path / "small.yaml").write_text(
        "name: small_cnn\nextends: resnet18\nfixed: {arch: resnet10t, drop_path_rate: 0.0}\n"
        "space:\n  lr: {type: float, low: 0.001, high: 0.01, log: true}\nstart: {lr: 0.002}\n")
    cand = load_candidates([tmp_path])["small_cnn"]
    r18 = load_candidates()["resnet18"]
    assert cand.fixed["arch"] == "resnet10t" and cand.fixed["patience"] == r18.fixed["patience"]
    assert "drop_path_rate" not in cand.space and "drop_path_rate" not in cand.start
    assert cand.space["lr"]["low"] == 0.001 and cand.start["lr"] == 0.002
    assert cand.start["batch_size"] == r18.start["batch_size"]


@pytest.mark.parametrize("files, needle", [
    ({"a.yaml": "name: a\nextends: nowhere\n"}, "extends 'nowhere', which is not a known candidate"),
    ({"a.yaml": "name: a\nextends: b\n", "b.yaml": "name: b\nextends: a\n"}, "(a cycle)"),
])
def test_bad_extends_is_a_one_line_error(tmp_path, files, needle):
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    with pytest.raises(UserError) as err:
        load_candidates([tmp_path])
    assert needle in str(err.value) and str(tmp_path) in str(err.value) and "\n" not in str(err.value)
