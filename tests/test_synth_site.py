"""synth's second-site options: a shifted register variable, another exposure, a site name."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import yaml

from benchmark.data.dataset import load_dataset
from benchmark.data.synth import SynthConfig, simulate, write_cohort
from benchmark.errors import UserError


def test_a_shift_changes_the_recorded_column_only_and_keeps_labels_and_oracle():
    base = SynthConfig(n_patients=300, n_aff=30, seed=4, sparse_columns=5)
    reg0, _, oracle0 = simulate(base)
    reg1, _, oracle1 = simulate(SynthConfig(n_patients=300, n_aff=30, seed=4, sparse_columns=5,
                                            shifts=("age=+6", "bisfo_d=*1.5")))
    assert (reg1["age"] - reg0["age"] == 6).all()
    both = reg0["bisfo_d"].notna()
    assert np.allclose(reg1.loc[both, "bisfo_d"], 1.5 * reg0.loc[both, "bisfo_d"])
    assert reg1["bisfo_d"].isna().equals(reg0["bisfo_d"].isna())             # missing stays missing
    rest = [c for c in reg0.columns if c not in ("age", "bisfo_d")]
    pd.testing.assert_frame_equal(reg0[rest], reg1[rest])
    pd.testing.assert_frame_equal(oracle0, oracle1)                           # drawn before the shift


@pytest.mark.parametrize("shift, fragment", [
    ("sex=+1", "'sex' is categorical"),
    ("nothing=+1", "'nothing' is not a register column"),
    ("age+6", "is not COLUMN=+D"),
    ("age=*0", "the factor must be above 0"),
    ("group=+1", "'group' is not a register column"),
])
def test_a_bad_shift_is_one_line(shift, fragment):
    with pytest.raises(UserError) as info:
        simulate(SynthConfig(n_patients=100, n_aff=10, sparse_columns=0, shifts=(shift,)))
    assert fragment in str(info.value) and "\n" not in str(info.value)


def test_default_settings_are_those_of_a_first_site():
    """The cached default cohort stays valid: its settings have no second-site keys."""
    settings = SynthConfig().settings()
    assert not {"shifts", "exposure", "site_name"} & set(settings)
    other = SynthConfig(exposure=1.3, shifts=("age=+6",), site_name="north").settings()
    assert other["exposure"] == 1.3 and other["shifts"] == ["age=+6"] and other["site_name"] == "north"
    with pytest.raises(UserError, match="--exposure"):
        SynthConfig(exposure=0).validate()


def test_exposure_brightens_the_images_and_the_cohort_says_how_it_was_made(tmp_path):
    kw = dict(n_patients=24, n_aff=6, seed=1, image_size=32, images_per_patient=1.0, sparse_columns=0, workers=1)
    a = load_dataset(write_cohort(tmp_path / "a", SynthConfig(**kw)))
    path = write_cohort(tmp_path / "b", SynthConfig(**kw, exposure=1.4, site_name="north", shifts=("age=+6",)))
    b = load_dataset(path)
    assert (a.y == b.y).all()
    assert b.pixels(32).mean() > a.pixels(32).mean() + 2
    doc = yaml.safe_load(path.read_text())
    assert doc["name"] == "north" and "age=+6" in doc["description"] and "exposure x1.4" in doc["description"]
    marker = json.loads((tmp_path / "b" / "synth.json").read_text())
    assert marker["settings"]["exposure"] == 1.4 and marker["settings"]["shifts"] == ["age=+6"]
