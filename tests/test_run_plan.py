"""The run plan (explicit work units) and the fusion inputs contract."""

import numpy as np
import pandas as pd
import pytest

from benchmark.candidates.fusion_inputs import (UpstreamColumn, embedding_columns, source_frame, source_probs,
                                                upstream_sources)
from benchmark.data.cohort import PatientData
from benchmark.data.splits import outer_folds
from benchmark.run.folder import RunConfig
from benchmark.run.units import build_plan, resolve_candidates


def test_plan_is_one_unit_per_candidate_and_fold_and_consumers_come_after_what_they_need():
    cands, _ = resolve_candidates(RunConfig(candidates=["late_average", "late_stacking"]))
    names = [c.name for c in cands]
    assert names[-2:] == ["late_average", "late_stacking"] and set(names[:-2]) == {"resnet18", "xgboost"}
    folds = outer_folds(np.array([0, 1] * 20), n_folds=2, repeats=2, seed=0)
    plan = build_plan(cands, folds)
    assert len(plan) == len(cands) * 4 and len({u.key for u in plan}) == len(plan)
    seen = set()
    for unit in plan:
        assert all(need in seen for need in unit.needs)
        seen.add(unit.key)
    late = [u for u in plan if u.candidate.name == "late_average"]
    assert late[0].needs == (("resnet18", 0, 0), ("xgboost", 0, 0))
    assert all(u.needs == () for u in plan if not u.candidate.consumes)


def test_upstream_columns_round_trip_through_the_declared_schema():
    for col in (UpstreamColumn("best_image", "prob"), UpstreamColumn("my:cand", "emb", 12)):
        assert UpstreamColumn.parse(col.name) == col
    assert UpstreamColumn.parse("age") is None and UpstreamColumn.parse("a:embx") is None


def test_source_frame_is_what_fusion_families_read():
    emb = np.array([[1.0, 2.0], [np.nan, np.nan], [3.0, 4.0]], dtype=np.float32)
    up = pd.concat([source_frame("best_image", [0.2, 0.5, 0.9], [0.1, 0.5, 0.8], index=[7, 8, 9],
                                 embeddings=emb, embedding_index=[7, 8, 9]),
                    source_frame("best_register", [0.3, 0.4, 0.6], [0.3, 0.4, 0.6], index=[7, 8, 9])], axis=1)
    data = PatientData(patients=np.arange(3), register=None, images=None, image_owner=None, y=None,
                       upstream=up.reset_index(drop=True))
    assert upstream_sources(data, "late_average") == ["best_image", "best_register"]
    assert embedding_columns(up) == {"best_image": ["best_image:emb0", "best_image:emb1"]}
    P = source_probs(data, ["best_image", "best_register"])
    assert np.isnan(P[1, 0]) and P[1, 1] == pytest.approx(0.4)   # no embedding: the image source is silent
