"""Fusion inside the runner: inputs run first, embeddings only from the best image candidate."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from benchmark.runner import RunConfig, run
from runner_helpers import write_spaces

CNN = """
name: {name}
family: timm_cnn
modality: image
fixed: {{arch: test_resnet, epochs: 2, batch_size: 8, patience: 5, lr: {lr}}}
space:
  weight_decay: {{type: float, low: 0.00001, high: 0.001, log: true}}
"""
EMBED = """
name: emb
family: embed_lightgbm
modality: fusion
consumes: [best_image]
fixed: {n_estimators: 50, n_components: 2}
space:
  learning_rate: {type: float, low: 0.05, high: 0.3, log: true}
"""


def test_embeddings_come_only_from_the_best_image_candidate_and_reach_the_trees(tiny_dataset, tmp_path):
    ds = tiny_dataset(n_pos=8, n_neg=12)
    spaces = write_spaces(tmp_path / "spaces", n_trials=1, outer_folds=2, extra={"cnn_a": CNN.format(name="cnn_a", lr=0.001), "cnn_b": CNN.format(name="cnn_b", lr=0.01), "emb": EMBED})
    # the fusion candidate is listed first: the runner still runs its inputs before it
    out = Path(run(RunConfig(candidates=["emb", "cnn_a", "cnn_b"], data=str(ds.yaml), profile="tiny", device="cpu",
                             spaces=[str(spaces)], results_dir=str(tmp_path / "results"), run="emb")))
    studies = pd.read_csv(out / "studies.csv")
    assert studies.candidate.tolist()[:2] == ["cnn_a", "cnn_a"] and studies.candidate.iloc[-1] == "emb"
    for f in (0, 1):
        s = studies[(studies.outer_fold == f) & studies.candidate.isin(["cnn_a", "cnn_b"])]
        best = s.sort_values("best_value", ascending=False, kind="stable").candidate.iloc[0]
        other = ({"cnn_a", "cnn_b"} - {best}).pop()
        emb = out / "parts" / f"{best}__r0_f{f}.emb.npz"
        assert emb.exists() and not (out / "parts" / f"{other}__r0_f{f}.emb.npz").exists()
        z = np.load(emb)
        folds = pd.read_csv(out / "folds.csv")
        assert len(z["position"]) == len(folds[folds.outer_fold == f]) and np.isfinite(z["emb"]).all()
    board = pd.read_csv(out / "leaderboard.csv").set_index("candidate")
    assert board.loc["emb", "status"] != "failed" and np.isfinite(board.loc["emb", "auc"])
