"""A new torch family is one subclass that declares its parameters and its network (this file)."""

import numpy as np
import pytest
import torch.nn as nn

from benchmark.candidates.base import TrialContext
from benchmark.candidates.image import ImageNet
from benchmark.candidates.scoring import safe_auc
from benchmark.candidates.torch_family import ImageFamily
from benchmark.errors import UserError
from benchmark.search.spaces import load_candidate
from test_image_family import toy


class TinyCNN(ImageFamily):
    """Two convolutions and a linear head; everything else comes from the base."""

    defaults = {**ImageFamily.defaults, "width": 8, "aug_strength": 0.0}

    def network(self, s, fit_part, ctx):
        w = int(s["width"])
        return lambda: ImageNet(nn.Sequential(nn.Conv2d(1, w, 3, padding=1), nn.ReLU(), nn.Conv2d(w, w, 3), nn.ReLU(),
                                              nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Dropout(0.2), nn.Linear(w, 1)))

    def samples(self, data):
        return {"image": data.images}, np.asarray(data.image_owner)


def test_a_family_declared_in_a_few_lines_trains_predicts_and_gives_mc_members():
    train, valid, test = toy(100, seed=0), toy(40, seed=1), toy(80, seed=2)
    ctx = TrialContext(seed=0, max_epochs=8, extra={"n_threads": 1, "mc_passes": 3})
    fam = TinyCNN(width=8, lr=3e-3, batch_size=16, epochs=30, patience=None).fit(train, valid, ctx)
    assert len(ctx.history) == 8 and safe_auc(test.y, fam.predict_proba(test)) > 0.8
    members = fam.predict_members(test)
    assert members.shape == (3, len(test)) and np.ptp(members, axis=0).max() > 0
    np.testing.assert_array_equal(members, fam.predict_members(test))      # seeded: repeatable
    again = TinyCNN(width=8, lr=3e-3, batch_size=16, epochs=30, patience=None).fit(train, valid, ctx)
    np.testing.assert_array_equal(fam.predict_proba(test), again.predict_proba(test))


def test_its_candidate_file_is_checked_against_the_declared_parameters(tmp_path):
    text = ("name: tiny\nfamily: test_torch_family:TinyCNN\nmodality: image\nfixed: {widht: 4}\n"
            "space:\n  lr: {type: float, low: 0.001, high: 0.01, log: true}\n")
    path = tmp_path / "tiny.yaml"
    path.write_text(text)
    with pytest.raises(UserError, match=r"fixed\.widht: not a parameter .* did you mean 'width'"):
        load_candidate(path)
    path.write_text(text.replace("widht", "width"))
    assert load_candidate(path).build({"lr": 0.002}).settings()["width"] == 4
