"""Fusion inside the runner: inputs run first; embedding trees run on their own frozen encoder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from benchmark.run.runner import RunConfig, run
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
consumes: []
fixed: {n_estimators: 50, n_components: 2, encoder: test_resnet}
space:
  learning_rate: {type: float, low: 0.05, high: 0.3, log: true}
"""


def test_fusion_runs_after_its_inputs_and_embedding_trees_need_no_image_candidate(tiny_dataset, tmp_path):
    ds = tiny_dataset(n_pos=8, n_neg=12)
    late = ("name: late\nfamily: late_average\nmodality: fusion\nconsumes: [best_image, best_register]\n"
            "fixed: {scale: logit}\nspace:\n  weight: {type: float, low: 0.0, high: 1.0}\n")
    spaces = write_spaces(tmp_path / "spaces", n_trials=1, outer_folds=2,
                          extra={"cnn_a": CNN.format(name="cnn_a", lr=0.001), "emb": EMBED, "late": late})
    # the fusion candidate is listed first: the runner still runs its inputs before it
    out = Path(run(RunConfig(candidates=["late", "emb", "cnn_a", "probe"], data=str(ds.yaml), profile="tiny",
                             device="cpu", spaces=[str(spaces)], results_dir=str(tmp_path / "results"), run="emb")))
    studies = pd.read_csv(out / "studies.csv")
    order = studies.drop_duplicates("candidate").candidate.tolist()
    assert order.index("late") > max(order.index("cnn_a"), order.index("probe"))
    assert not list((out / "parts").glob("*.emb.npz"))          # no embedding files: the encoder is frozen
    board = pd.read_csv(out / "leaderboard.csv").set_index("candidate")
    for name in ("emb", "late"):
        assert board.loc[name, "status"] != "failed", board.loc[name, "info"]
        assert np.isfinite(board.loc[name, "auc"])
