"""Grad-CAM of an image network and its localisation score against known sign regions."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from benchmark.candidates.base import TrialContext, get_family
from benchmark.data.cohort import Cohort
from benchmark.data.splits import Fold
from benchmark.evaluate.localisation import image_scores, random_map
from benchmark.explain.gradcam import gradcam_maps, target_stage, unit_saliency

SIZE = 32


def _planted(n: int, seed: int):
    """Images of noise; each positive carries a bright 6 x 6 square at a random place (its region)."""
    rng = np.random.default_rng(seed)
    y = (np.arange(n) % 2).astype(np.int8)
    images = (rng.random((n, SIZE, SIZE)) * 90).astype(np.uint8)
    regions = []
    for i in range(n):
        r, c = rng.integers(2, SIZE - 8, 2)
        if y[i] == 1:
            images[i, r:r + 6, c:c + 6] = 255
        regions.append({"size": (SIZE, SIZE), "boxes": {"sign": ((c - 1) / SIZE, (r - 1) / SIZE,
                                                                 (c + 7) / SIZE, (r + 7) / SIZE)}})
    cohort = Cohort(name="planted", y=y, register=None,
                    images=pd.DataFrame({"patient": np.arange(n), "path": [f"/none/{i}.png" for i in range(n)],
                                         "regions": regions}),
                    keys=np.array([f"P{i + 1:05d}" for i in range(n)]))
    cohort._pixels[SIZE] = images
    return cohort


@pytest.fixture(scope="module")
def trained():
    cohort = _planted(240, seed=0)
    train = cohort.view(np.arange(160), labels=True, image_size=SIZE)
    fam = get_family("timm_cnn")(arch="test_resnet", epochs=6, batch_size=16, lr=3e-3, aug_strength=0.0,
                                 hflip=False, patience=None)
    fam.fit(train, None, TrialContext(seed=0, max_epochs=6, extra={"n_threads": 2}))
    return cohort, fam


def test_gradcam_stage_is_the_deepest_map_at_least_seven_wide(trained):
    _, fam = trained
    net = fam.model_.net
    assert target_stage(net, 32)[1:] == ("layer1", 8)
    assert target_stage(net, 64)[1:] == ("layer2", 8)
    assert target_stage(net, 224)[1:] == ("layer4", 7)


def test_gradcam_on_a_planted_signal_points_inside_it_far_more_than_a_random_map(trained):
    cohort, fam = trained
    test = np.arange(160, 240)
    view = cohort.view(test, labels=False, image_size=SIZE)
    from sklearn.metrics import roc_auc_score

    assert roc_auc_score(cohort.y[test], fam.predict_proba(view)) > 0.9   # the network learned the sign
    pos = test[cohort.y[test] == 1]
    maps, grid, layer = gradcam_maps(fam, cohort.view(pos, labels=False, image_size=SIZE), np.ones(len(pos)))
    assert maps.shape == (len(pos), SIZE, SIZE) and 0 <= maps.min() and maps.max() <= 1
    from benchmark.data.truth import region_mask

    rng = np.random.default_rng(0)
    ours, rand = [], []
    for m, p in zip(maps, pos):
        mask = region_mask(cohort.images["regions"][p], SIZE)
        ours.append(image_scores(m, mask))
        rand.append(image_scores(random_map(rng, grid, SIZE), mask))
    hit, share = np.mean(ours, axis=0)
    hit_r, share_r = np.mean(rand, axis=0)
    assert hit >= 0.7 and hit > hit_r + 0.4, (hit, hit_r)
    assert share > 2 * share_r, (share, share_r)


def test_unit_saliency_writes_patient_data_by_key_and_scores_each_class(trained, tmp_path):
    cohort, fam = trained
    fold = Fold(repeat=0, index=0, train=np.arange(160), test=np.arange(160, 240))
    view = cohort.view(fold.test, labels=False, image_size=SIZE)
    table = unit_saliency([(fam, view, None)], cohort, fold, tmp_path, "cnn", seed=1)
    assert set(table["cls"]) == {"AFF", "NFF"}
    aff = table.set_index("cls").loc["AFF"]
    assert aff["hit"] > aff["hit_random"] and aff["share"] > aff["share_random"]
    folder = tmp_path / "patient_data" / "saliency" / "cnn" / "r0"
    assert "PATIENT DATA" in (tmp_path / "patient_data" / "README.txt").read_text()
    names = sorted(p.name for p in folder.iterdir())
    assert names[:2] == ["P00161.npz", "P00161.png"] and len(names) == 2 * len(fold.test)
    assert (tmp_path / "patient_data").stat().st_mode & 0o077 == 0   # owner only


def test_an_empty_map_points_nowhere_and_shares_like_the_area():
    mask = np.zeros((8, 8), bool)
    mask[:2] = True
    assert image_scores(np.zeros((8, 8)), mask) == (0.0, 0.25)
    cam = np.zeros((8, 8))
    cam[0, 3] = 1.0
    assert image_scores(cam, mask) == (1.0, 1.0)
