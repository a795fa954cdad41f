"""Uncertainty decomposition from bag members (natural log)."""

import numpy as np
import pandas as pd
import pytest

from benchmark.errors import UserError
from benchmark.evaluate.uncertainty import add_uncertainty, binary_entropy


def test_two_disagreeing_members_hand_computed():
    out = add_uncertainty(pd.DataFrame({"prob": [0.5], "members": [[0.1, 0.9]]})).iloc[0]
    h01 = -(0.1 * np.log(0.1) + 0.9 * np.log(0.9))
    assert out["entropy"] == pytest.approx(np.log(2))
    assert out["expected_entropy"] == pytest.approx(h01)
    assert out["mutual_info"] == pytest.approx(np.log(2) - h01)
    assert out["member_std"] == pytest.approx(0.4)


def test_single_member_has_no_epistemic_part():
    out = add_uncertainty(pd.DataFrame({"prob": [0.2, 0.0], "members": [[0.2], [0.0]]}))
    assert out["entropy"].tolist() == pytest.approx([binary_entropy(0.2), 0.0])
    assert out["mutual_info"].tolist() == [0.0, 0.0]
    assert out["member_std"].tolist() == [0.0, 0.0]


def test_decomposition_adds_up_and_mutual_info_is_never_negative():
    rng = np.random.default_rng(0)
    members = [rng.random(rng.integers(1, 6)) for _ in range(500)]
    out = add_uncertainty(pd.DataFrame({"prob": [m.mean() for m in members], "members": members}))
    assert (out["mutual_info"] >= 0).all()
    assert np.allclose(out["entropy"], out["expected_entropy"] + out["mutual_info"])
    assert (out["entropy"] <= np.log(2) + 1e-12).all()


def test_members_survive_a_parquet_round_trip(tmp_path):
    df = pd.DataFrame({"prob": [0.3, 0.6], "members": [[0.2, 0.4], [0.6]]})
    df.to_parquet(tmp_path / "p.parquet")
    back = add_uncertainty(pd.read_parquet(tmp_path / "p.parquet"))
    assert back["member_std"].tolist() == pytest.approx([0.1, 0.0])


def test_missing_or_empty_members_fall_back_to_prob():
    out = add_uncertainty(pd.DataFrame({"prob": [0.3, 0.3], "members": [[], None]}))
    assert out["entropy"].tolist() == pytest.approx([binary_entropy(0.3)] * 2)
    out2 = add_uncertainty(pd.DataFrame({"prob": [0.3]}))
    assert out2["entropy"].iloc[0] == pytest.approx(binary_entropy(0.3))


def test_member_outside_unit_interval_is_a_user_error():
    with pytest.raises(UserError, match="members"):
        add_uncertainty(pd.DataFrame({"prob": [0.5], "members": [[0.5, 1.5]]}))
