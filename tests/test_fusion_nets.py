"""Neural fusion families (joint_concat, film, gated, attention) on tiny toy cohorts with a tiny timm CNN."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score
from test_fusion import fabricate_upstream, split, toy_cohort, unlabelled, with_upstream

from benchmark.candidates.base import TrialContext, get_family
from benchmark.errors import UserError

NETS = ("joint_concat", "film", "gated", "attention")
TINY = dict(arch="test_resnet", batch_size=16, tab_hidden=16, fusion_dim=16, patience=None)
EXTRA = {"joint_concat": {"aux_weight": 0.5}, "film": {"film_stage": 2}, "gated": {}, "attention": {"n_tab_tokens": 2}}


def ctx(seed: int = 0, epochs: int = 2, mc: int = 0) -> TrialContext:
    return TrialContext(seed=seed, max_epochs=epochs, image_size=16, extra={"n_threads": 1, "mc_passes": mc})


@pytest.fixture(scope="module")
def small():
    data, latents = toy_cohort(n=60, size=16, seed=3)
    train, test = split(data, seed=0, frac=0.5)
    return train, test


@pytest.fixture(scope="module")
def fitted(small):
    train, test = small
    out = {}
    for name in NETS:
        c = ctx(mc=2)
        fam = get_family(name)(**TINY, **EXTRA[name]).fit(train, test, c)
        out[name] = (fam, c)
    return out


@pytest.mark.parametrize("name", NETS)
def test_predicts_every_patient_with_zero_one_or_three_images_deterministically(small, fitted, name):
    train, test = small
    counts = np.bincount(test.image_owner, minlength=len(test))
    assert {0, 1, 3} <= set(counts.tolist())
    fam, _ = fitted[name]
    p = fam.predict_proba(unlabelled(test))
    assert p.shape == (len(test),) and np.all((p > 0) & (p < 1))
    again = get_family(name)(**TINY, **EXTRA[name]).fit(train, test, ctx(mc=2)).predict_proba(test)
    np.testing.assert_array_equal(p, again)
    members = fam.predict_members(test)
    assert members.shape == (2, len(test)) and np.all(np.isfinite(members))
    np.testing.assert_array_equal(members, fam.predict_members(test))


@pytest.mark.parametrize("name", NETS)
def test_reports_validation_auc_every_epoch(fitted, name):
    _, c = fitted[name]
    assert [step for step, _ in c.history] == [0, 1]
    assert all(0.0 <= v <= 1.0 for _, v in c.history)


@pytest.mark.parametrize("name", NETS)
def test_patients_without_images_are_scored_from_their_register_data(small, fitted, name):
    _, test = small
    fam, _ = fitted[name]
    no_img = np.flatnonzero(np.bincount(test.image_owner, minlength=len(test)) == 0)
    p_all = fam.predict_proba(test)
    alone = test.subset(no_img)
    assert alone.images is not None and len(alone.images) == 0
    np.testing.assert_allclose(fam.predict_proba(alone), p_all[no_img], rtol=1e-5)
    moved = alone.subset(np.arange(len(alone)))
    moved.register = moved.register.assign(r0=moved.register["r0"] + 3.0)
    assert not np.allclose(fam.predict_proba(moved), p_all[no_img])
    without = test.subset(np.arange(len(test)))
    without.images = without.image_owner = None
    assert np.all(np.isfinite(fam.predict_proba(without)))


@pytest.mark.parametrize("name", NETS)
def test_neural_fusion_beats_each_single_modality_input(name):
    data, _ = toy_cohort(n=200, size=16)
    data = with_upstream(data, fabricate_upstream(data))
    train, test = split(data)
    valid, fit_part = split(train, seed=1, frac=0.3)
    params = {**TINY, "batch_size": 32, "lr": 3e-3, "aug_strength": 0.0, "tab_hidden": 64, "fusion_dim": 64}
    fam = get_family(name)(**params, **EXTRA[name])
    fam.fit(fit_part, valid, ctx(epochs=8))
    auc = roc_auc_score(test.y, fam.predict_proba(unlabelled(test)))
    single = [roc_auc_score(test.y, test.upstream[f"{s}:prob"]) for s in ("best_image", "best_register")]
    assert auc > max(single) + 0.03, (auc, single)


def test_auxiliary_loss_is_left_once_for_the_loop_to_add():
    from benchmark.candidates.backbones import TabularNet
    from benchmark.candidates.fusion_modules import ConcatNet, _backbone

    torch.manual_seed(0)
    net = ConcatNet(_backbone("test_resnet", None, 0.0, 0), TabularNet(2, [], hidden=8, n_layers=1, dropout=0.0,
                    norm="none", embed_dim=4, activation="relu"), tab_dim=8, fusion_dim=8, dropout=0.0,
                    aux_weight=0.3, pos_weight=2.0).eval()
    has = torch.tensor([True, False, True, True])
    batch = {"image": torch.rand(4, 1, 16, 16), "has_image": has, "tabular": torch.randn(4, 2),
             "y": torch.tensor([1.0, 0.0, 0.0, 1.0])}
    net(batch)
    assert net.pop_aux_loss() is None            # evaluation: no auxiliary loss
    net.train()
    for m in net.modules():                      # batch norm as in evaluation, so the rows are independent
        if isinstance(m, torch.nn.BatchNorm2d):
            m.eval()
    _, img, tab = net.fuse(batch)
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    pw = torch.tensor(2.0)
    want = 0.3 * (bce(net.aux_tab(tab).reshape(-1), batch["y"], pos_weight=pw)
                  + bce(net.aux_img(img[has]).reshape(-1), batch["y"][has], pos_weight=pw))
    net(batch)
    torch.testing.assert_close(net.pop_aux_loss(), want)
    assert net.pop_aux_loss() is None


def test_film_starts_as_the_identity_and_names_a_missing_stage():
    from benchmark.candidates.fusion_modules import FiLMNet, _backbone
    from benchmark.candidates.backbones import TabularNet

    torch.manual_seed(0)
    bb = _backbone("test_resnet", None, 0.0, 0).eval()
    net = FiLMNet(bb, TabularNet(2, [], hidden=8, n_layers=1, dropout=0.0, norm="none", embed_dim=4,
                                 activation="relu"), film_stage=3, tab_dim=8, fusion_dim=8, dropout=0.0,
                  aux_weight=0.0, pos_weight=1.0).eval()
    x = torch.rand(3, 1, 16, 16)
    batch = {"image": x, "has_image": torch.ones(3, dtype=torch.bool), "tabular": torch.randn(3, 2)}
    with torch.no_grad():
        _, img, _ = net.fuse(batch)
        torch.testing.assert_close(img, bb(x))
    with pytest.raises(UserError, match="film_stage 9"):
        FiLMNet(bb, net.tabular, film_stage=9, tab_dim=8, fusion_dim=8, dropout=0.0, aux_weight=0.0, pos_weight=1.0)


def test_unknown_parameter_is_a_user_error(small):
    train, test = small
    with pytest.raises(UserError, match="n_layer: not a parameter of family"):
        get_family("gated")(arch="test_resnet", n_layer=2).fit(train, test, ctx())
