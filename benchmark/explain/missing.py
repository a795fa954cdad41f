"""A fusion candidate's outer-test predictions with the images withheld (a missing modality).

Real cohorts have patients without radiographs, and a second hospital may have none in PACS
yet. ``withheld_view`` takes a view's images away from chosen patients the way a patient
without images reaches a fusion family: their images are dropped (a network then uses its
learned missing-image features, an ``embed_*`` family NaN components) and their image
inputs' predictions are NaN (the fusion inputs contract's mark; a late fusion then combines
the inputs it has)::

    table = missing_probs(pairs, ["best_image"], cal, seed=7)
    # prob (images as they are), prob_all (no test patient has images), prob_half (a seeded
    # random half has none; withheld_half marks them), calibrated like the part's prob
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd

from benchmark.candidates.calibration import Calibrator, bag_prediction, member_scale_ratio
from benchmark.candidates.fusion_inputs import UpstreamColumn
from benchmark.explain.permutation import to_logit


def withheld_view(view, withheld: np.ndarray, image_sources: list[str]):
    """``view`` with no images for the patients where ``withheld`` (bool per patient) is True."""
    withheld = np.asarray(withheld, dtype=bool)
    images, owner = view.images, view.image_owner
    if images is not None and len(images):
        keep = ~withheld[np.asarray(owner)]
        images, owner = images[keep], np.asarray(owner)[keep]
    up = view.upstream
    if up is not None and image_sources:
        cols = [c for c in up.columns if (u := UpstreamColumn.parse(c)) is not None and u.source in image_sources]
        if cols:
            up = up.copy()
            up.loc[withheld, cols] = np.nan
    return replace(view, images=images, image_owner=owner, upstream=up)


def _prob(pairs: list, withheld: np.ndarray, image_sources: list[str], cal: Calibrator, scale) -> np.ndarray:
    raw = np.stack([np.asarray(m.predict_proba(withheld_view(v, withheld, image_sources)), dtype=np.float64)
                    for m, v, _ in pairs])
    if pairs[0][2] is None:          # the refit: its prediction, calibrated
        return cal.transform(raw[0])
    r, mu = scale
    return bag_prediction(cal, raw, r=r, mu=mu)[0]


def missing_probs(pairs: list, image_sources: list[str], cal: Calibrator, seed: int) -> pd.DataFrame:
    """Calibrated outer-test P(AFF) of a predictor (``(model, view, member)`` pairs) with the images
    as they are, withheld from everyone, and withheld from a seeded random half."""
    n = len(pairs[0][1])
    half = np.zeros(n, dtype=bool)
    half[np.random.default_rng([int(seed) & 0x7FFFFFFF, 31]).permutation(n)[: n // 2]] = True
    none = np.zeros(n, dtype=bool)
    scale = (1.0, 0.0)
    if pairs[0][2] is not None:      # the bag's mapping of its mean logit, fixed at the plain prediction
        z = to_logit(np.stack([np.asarray(m.predict_proba(v), dtype=np.float64) for m, v, _ in pairs]))
        scale = (member_scale_ratio(z), float(np.mean(z)))
    out = {name: _prob(pairs, w, image_sources, cal, scale)
           for name, w in (("prob", none), ("prob_all", ~none), ("prob_half", half))}
    return pd.DataFrame({**out, "withheld_half": half})

