"""Two runs sharing one Optuna storage (``--storage``) never read each other's trials.

Needs the fold runner to name its studies with ``study.study_name(rd.run_id, ...)``.
"""

from __future__ import annotations

import json

import pandas as pd

from benchmark.run.runner import RunConfig, run
from runner_helpers import write_register_dataset, write_spaces


def test_two_runs_on_one_storage_each_run_and_list_only_their_own_trials(tmp_path, monkeypatch):
    data = write_register_dataset(tmp_path / "data")
    spaces = write_spaces(tmp_path / "spaces", n_trials=2, outer_folds=2)
    storage = f"sqlite:///{tmp_path / 'shared.db'}"
    runs = []
    for k in (1, 2):        # the same run name in two results folders: only the run id tells them apart
        log = tmp_path / f"probe{k}.jsonl"
        monkeypatch.setenv("AFF_PROBE_LOG", str(log))
        cfg = RunConfig(candidates=["probe"], data=str(data), profile="tiny", device="cpu", spaces=[str(spaces)],
                        results_dir=str(tmp_path / f"results{k}"), seed=7, run="same", storage=storage)
        run_dir = run(cfg)
        search_fits = sum(1 for line in log.read_text().splitlines()
                          if json.loads(line)["phase"] == "fit" and json.loads(line)["search"])
        runs.append((run_dir, search_fits))
    ids = [json.loads((d / "manifest.json").read_text())["run_id"] for d, _ in runs]
    assert ids[0] != ids[1]
    for run_dir, search_fits in runs:
        assert search_fits == 2 * 2 * 2          # outer folds x trials x inner folds: its whole budget
        trials = pd.read_csv(run_dir / "trials.csv")
        assert len(trials) == 2 * 2 and set(trials.state) <= {"COMPLETE", "PRUNED"}
        studies = pd.read_csv(run_dir / "studies.csv")
        assert (studies.n_trials == 2).all()
    a, b = (pd.read_csv(d / "trials.csv") for d, _ in runs)
    pd.testing.assert_series_equal(a.params, b.params)    # same seed, same profile: the same trials
