"""Small instrumented families for the runner's tests (fast, deterministic, no torch)."""

from __future__ import annotations

import json
import os

import numpy as np
from sklearn.linear_model import LogisticRegression

from benchmark.candidates.base import Family
from benchmark.candidates.preprocess import TabularPreprocessor


class ProbeFamily(Family):
    """Logistic regression that logs every patient it is trained or scored on.

    With env AFF_PROBE_LOG set, appends one JSON line per call: phase (fit/predict), whether a
    trial was running (search) and the cohort positions it saw.
    """


    def fit(self, train, valid, ctx):
        self._log("fit", ctx, train.patients, valid.patients if valid is not None else [], valid_given=valid is not None)
        if self.params.get("fail_rate", 0) and np.random.default_rng(ctx.seed + int(1e6 * self.params["C"])).random() < self.params["fail_rate"]:
            raise RuntimeError("planted failure")
        if self.params.get("always_fail"):
            raise ValueError("this candidate always fails")
        self.pre = TabularPreprocessor().fit(train.register)
        self.model = LogisticRegression(C=self.params["C"], max_iter=500).fit(self.pre.transform(train.register), train.labels())
        self._ctx = ctx
        return self

    def predict_proba(self, data):
        self._log("predict", self._ctx, data.patients, [], labelled=data.y is not None)
        return self.model.predict_proba(self.pre.transform(data.register))[:, 1]

    def _log(self, phase, ctx, a, b, labelled=None, valid_given=None):
        path = os.environ.get("AFF_PROBE_LOG")
        if path:
            with open(path, "a") as fh:
                fh.write(json.dumps({"phase": phase, "search": ctx.trial is not None, "labelled": labelled,
                                     "valid_given": valid_given,
                                     "patients": sorted(int(x) for x in list(a) + list(b))}) + "\n")


class SlowProbeFamily(ProbeFamily):
    """ProbeFamily that sleeps in fit, so a test can kill a run in the middle of a study."""

    def fit(self, train, valid, ctx):
        import time

        time.sleep(float(os.environ.get("AFF_PROBE_SLEEP", "0")))
        return super().fit(train, valid, ctx)


class WarmSourceFamily(ProbeFamily):
    """ProbeFamily whose 'weights' are the positions it trained on (a warm-start source)."""

    def fit(self, train, valid, ctx):
        self._seen = sorted(int(p) for p in train.patients)
        return super().fit(train, valid, ctx)

    def warm_start_state(self):
        import torch

        return "fake_arch", {"patients": torch.tensor(self._seen, dtype=torch.int64)}


class WarmFusionFamily(ProbeFamily):
    """ProbeFamily that starts from the best image candidate's weights and logs what they saw."""

    warm_start_role = "best_image"

    def fit(self, train, valid, ctx):
        from safetensors.torch import load_file

        ws, k = ctx.extra.get("warm_start"), ctx.extra.get("inner_index")
        if ws is not None:
            path = ws["members"][k] if k < len(ws["members"]) else ws["full"]
            state = load_file(path)   # a real network's weights (another source) have no "patients"
            seen = state["patients"].tolist() if "patients" in state else None
            with open(os.environ["AFF_WARM_LOG"], "a") as fh:
                fh.write(json.dumps({"k": k, "source": ws["source"], "arch": ws["arch"], "source_seen": seen,
                                     "own": sorted(int(p) for p in train.patients),
                                     "search": ctx.trial is not None}) + "\n")
        return super().fit(train, valid, ctx)


class DyingProbeFamily(ProbeFamily):
    """ProbeFamily whose process dies (SIGKILL, no clean-up) in every fit: a worker lost mid-study."""

    def fit(self, train, valid, ctx):
        import signal

        os.kill(os.getpid(), signal.SIGKILL)
