"""Late fusion and embeddings-to-trees families on a toy cohort whose two modalities each carry half the signal."""
# Embedding families use a frozen encoder: timm's 0.4M-parameter test network here (random init).

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold, cross_val_predict

from benchmark.candidates.base import TrialContext, get_family
from benchmark.data.cohort import PatientData

PATCH = slice(4, 12)


def toy_cohort(n: int = 200, size: int = 16, seed: int = 0) -> tuple[PatientData, dict]:
    """Label from two independent latents: one drawn as a bright patch, one as a register column.

    Patients have 0 (about 10 %), 1, 2 or 3 images. Returns the labelled part and the latents.
    """
    rng = np.random.default_rng(seed)
    z_img, z_reg = rng.normal(size=n), rng.normal(size=n)
    y = (z_img + z_reg + 0.3 * rng.normal(size=n) > 0).astype(np.int64)
    counts = rng.choice([0, 1, 2, 3], size=n, p=[0.1, 0.4, 0.3, 0.2])
    owner = np.repeat(np.arange(n), counts)
    m = len(owner)
    images = rng.integers(0, 40, size=(m, size, size)).astype(np.float64)
    images[:, PATCH, PATCH] += 120 + 45 * np.clip(z_img[owner], -2.5, 2.5)[:, None, None] + 10 * rng.normal(size=(m, 1, 1))
    register = pd.DataFrame({
        "r0": z_reg + 0.3 * rng.normal(size=n),
        "r1": rng.normal(size=n),
        "site": pd.Categorical(rng.choice(["a", "b"], size=n)),
    })
    register.loc[rng.random(n) < 0.1, "r1"] = np.nan
    data = PatientData(patients=np.arange(n), register=register, images=np.clip(images, 0, 255).astype(np.uint8),
                       image_owner=owner, y=y, categorical=["site"])
    return data, {"z_img": z_img, "z_reg": z_reg, "counts": counts}


def fabricate_upstream(data: PatientData, seed: int = 0, emb_dim: int = 6) -> pd.DataFrame:
    """Out-of-fold single-modality predictions and embeddings, as the runner would hand them over.

    Image source: logistic regression on each patient's mean patch brightness (prevalence and NaN
    embedding for patients without images, as ``timm_cnn`` does); register source: on column r0.
    """
    n, y = len(data), data.y
    rng = np.random.default_rng(seed + 1)
    counts = np.bincount(data.image_owner, minlength=n)
    patch = np.bincount(data.image_owner, weights=data.images[:, PATCH, PATCH].mean(axis=(1, 2)), minlength=n)
    has = counts > 0
    patch = np.where(has, patch / np.maximum(counts, 1), np.nan)
    emb = np.column_stack([patch / 50.0] + [rng.normal(size=n) for _ in range(emb_dim - 1)])
    emb[~has] = np.nan
    cv = StratifiedKFold(3, shuffle=True, random_state=seed)
    p_img = np.full(n, y.mean())
    p_img[has] = cross_val_predict(LogisticRegression(), patch[has, None], y[has], cv=cv, method="predict_proba")[:, 1]
    p_reg = cross_val_predict(LogisticRegression(), data.register[["r0"]].to_numpy(), y, cv=cv, method="predict_proba")[:, 1]
    up = pd.DataFrame({"best_image:prob": p_img, "best_image:prob_raw": p_img,
                       "best_register:prob": p_reg, "best_register:prob_raw": p_reg})
    for j in range(emb_dim):
        up[f"best_image:emb{j}"] = emb[:, j].astype(np.float32)
    return up


def split(data: PatientData, seed: int = 0, frac: float = 0.6) -> tuple[PatientData, PatientData]:
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(data))
    k = int(frac * len(data))
    return data.subset(np.sort(order[:k])), data.subset(np.sort(order[k:]))


def with_upstream(data: PatientData, up: pd.DataFrame) -> PatientData:
    out = data.subset(np.arange(len(data)))
    out.upstream = up.reset_index(drop=True)
    return out


@pytest.fixture(scope="module")
def toy():
    data, latents = toy_cohort(n=1000)
    data = with_upstream(data, fabricate_upstream(data))
    train, test = split(data)
    return train, test, latents


def ctx(seed: int = 0) -> TrialContext:
    return TrialContext(seed=seed, extra={"n_jobs": 1, "n_threads": 1})


def unlabelled(part: PatientData) -> PatientData:
    out = part.subset(np.arange(len(part)))
    out.y = None
    return out


FAMILIES = {
    "late_average": {"scale": "logit"},
    "late_stacking": {"C": 1.0},
    "embed_xgboost": {"n_components": 3, "n_estimators": 200, "learning_rate": 0.1, "max_depth": 2,
                      "encoder": "test_resnet"},
    "embed_lightgbm": {"n_components": 3, "n_estimators": 200, "learning_rate": 0.1, "num_leaves": 4,
                       "min_child_samples": 5, "encoder": "test_resnet"},
}
LATE = ("late_average", "late_stacking")
EMBED = ("embed_xgboost", "embed_lightgbm")


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_fusion_beats_each_single_modality_input(toy, name):
    train, test, _ = toy
    valid, fit_part = split(train, seed=1, frac=0.3)
    fam = get_family(name)(**FAMILIES[name]).fit(fit_part, valid, ctx())
    p = fam.predict_proba(unlabelled(test))
    assert p.shape == (len(test),) and np.all((p >= 0) & (p <= 1))
    auc = roc_auc_score(test.y, p)
    single = [roc_auc_score(test.y, test.upstream[f"{s}:prob"]) for s in ("best_image", "best_register")]
    assert auc > max(single) + 0.03, (auc, single)


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_fusion_is_deterministic_for_a_seed(toy, name):
    train, test, _ = toy
    a = get_family(name)(**FAMILIES[name]).fit(train, None, ctx(3)).predict_proba(test)
    b = get_family(name)(**FAMILIES[name]).fit(train, None, ctx(3)).predict_proba(test)
    np.testing.assert_array_equal(a, b)


def test_stacker_is_fitted_on_the_training_upstream_only(toy):
    train, test, _ = toy
    garbage = test.upstream.copy()
    garbage[["best_image:prob", "best_register:prob"]] = np.random.default_rng(5).random((len(test), 2))
    a = get_family("late_stacking")(C=1.0).fit(train, test, ctx())
    b = get_family("late_stacking")(C=1.0).fit(train, with_upstream(test, garbage), ctx())
    np.testing.assert_array_equal(a.coef_, b.coef_)
    # ... and the coefficients are those of a logistic regression on the training logits
    from scipy.special import logit
    P = train.upstream[["best_image:prob", "best_register:prob"]].to_numpy()
    full = np.isfinite(P).all(axis=1) & (np.bincount(train.image_owner, minlength=len(train)) > 0)
    ref = LogisticRegression(C=1.0, max_iter=1000).fit(logit(np.clip(P[full], 1e-6, 1 - 1e-6)), train.y[full])
    np.testing.assert_allclose(a.coef_, ref.coef_[0], rtol=1e-4)


def test_pca_is_fitted_on_the_training_part_only(toy):
    from sklearn.decomposition import PCA
    from sklearn.preprocessing import StandardScaler

    from benchmark.candidates.fusion_embed import frozen_embeddings

    train, test, _ = toy
    kw = FAMILIES["embed_xgboost"]
    a = get_family("embed_xgboost")(**kw).fit(train, None, ctx())
    E = frozen_embeddings(train, "test_resnet", None)
    E = E[np.isfinite(E).all(axis=1)]
    scaler, pca = a.reducer_.reducer_
    np.testing.assert_allclose(scaler.mean_, E.mean(axis=0), rtol=1e-5, atol=1e-6)
    ref = PCA(n_components=3, svd_solver="full").fit(StandardScaler().fit_transform(E))
    np.testing.assert_allclose(np.abs(pca.components_), np.abs(ref.components_), atol=1e-4)


@pytest.mark.parametrize("name", EMBED)
def test_embed_trees_use_one_label_free_feature_map(toy, name):
    """Training and test patients share one feature map, and no label shapes an embedding."""
    from benchmark.candidates.fusion_embed import frozen_embeddings

    train, test, _ = toy
    # the same patient gets the same features in whatever part it is handed over
    both = frozen_embeddings(test, "test_resnet", None)
    alone = frozen_embeddings(test.subset(np.arange(5)), "test_resnet", None)
    np.testing.assert_array_equal(both[:5], alone)
    # labels do not reach the features: permuted labels give the same embeddings and PCA
    shuffled = train.subset(np.arange(len(train)))
    shuffled.y = np.random.default_rng(3).permutation(train.y)
    a = get_family(name)(**FAMILIES[name]).fit(train, None, ctx())
    b = get_family(name)(**FAMILIES[name]).fit(shuffled, None, ctx())
    np.testing.assert_array_equal(a._embed(test), b._embed(test))
    np.testing.assert_array_equal(a.reducer_.reducer_[1].components_, b.reducer_.reducer_[1].components_)
    # ... while the trees do learn from them (the predictions differ)
    assert not np.allclose(a.predict_proba(test), b.predict_proba(test))


def test_late_fusion_falls_back_to_the_other_modality_without_an_image(toy):
    train, test, latents = toy
    no_img = np.bincount(test.image_owner, minlength=len(test)) == 0
    assert no_img.any()
    p_reg = test.upstream["best_register:prob"].to_numpy()
    up = test.upstream.copy()
    up.loc[no_img, ["best_image:prob", "best_image:prob_raw"]] = np.nan   # the runner's mark
    for name in LATE:
        p = get_family(name)(**FAMILIES[name]).fit(train, None, ctx()).predict_proba(with_upstream(test, up))
        np.testing.assert_allclose(p[no_img], p_reg[no_img], rtol=1e-9)


def test_late_fusion_uses_nan_probabilities_as_missing_and_prevalence_when_nothing_is_left(toy):
    train, test, _ = toy
    up = test.upstream[["best_image:prob", "best_register:prob"]].copy()   # no embeddings: NaN marks missing
    up.iloc[0, 0] = np.nan          # image missing -> register probability
    up.iloc[1, 1] = np.nan          # register missing -> image probability
    up.iloc[2, :] = np.nan          # both missing -> training prevalence
    part = with_upstream(test, up)
    tr = with_upstream(train, train.upstream[["best_image:prob", "best_register:prob"]])
    for name in ("late_average", "late_stacking"):
        p = get_family(name)(**FAMILIES[name]).fit(tr, None, ctx()).predict_proba(part)
        assert p[0] == pytest.approx(up.iloc[0, 1]) and p[1] == pytest.approx(up.iloc[1, 0])
        assert p[2] == pytest.approx(train.y.mean())
        assert np.all(np.isfinite(p))


def test_late_average_weight_moves_towards_the_first_source(toy):
    train, test, _ = toy
    img = test.upstream["best_image:prob"].to_numpy()
    p1 = get_family("late_average")(scale="prob", weight=1.0).fit(train, None, ctx()).predict_proba(test)
    has = np.bincount(test.image_owner, minlength=len(test)) > 0
    np.testing.assert_allclose(p1[has], img[has])
    p_half = get_family("late_average")(scale="prob", weight=0.5).fit(train, None, ctx()).predict_proba(test)
    reg = test.upstream["best_register:prob"].to_numpy()
    np.testing.assert_allclose(p_half[has], 0.5 * (img[has] + reg[has]))


def test_embed_trees_give_nan_components_to_patients_without_images(toy):
    train, test, _ = toy
    fam = get_family("embed_lightgbm")(**FAMILIES["embed_lightgbm"]).fit(train, None, ctx())
    feats = fam.reducer_.features(fam._embed(test))
    no_img = np.bincount(test.image_owner, minlength=len(test)) == 0
    pcs = feats[[c for c in feats.columns if ":pc" in c]].to_numpy()
    assert pcs.shape[1] == 3 and np.isnan(pcs[no_img]).all() and np.isfinite(pcs[~no_img]).all()
    assert np.all(np.isfinite(fam.predict_proba(test)))


def test_fusion_without_its_inputs_is_a_user_error(toy):
    from benchmark.errors import UserError

    train, _, _ = toy
    bare = train.subset(np.arange(len(train)))
    bare.upstream = None
    for name in LATE:
        with pytest.raises(UserError, match="consumes"):
            get_family(name)(**FAMILIES[name]).fit(bare, None, ctx())
    bare.images, bare.image_owner = None, None
    for name in EMBED:
        with pytest.raises(UserError, match="needs images"):
            get_family(name)(**FAMILIES[name]).fit(bare, None, ctx())


def test_fusion_candidate_files_load_and_consume_the_best_inputs():
    from benchmark.search.spaces import load_candidates

    cands = load_candidates()
    for name in LATE:
        assert cands[name].modality == "fusion" and cands[name].consumes
    for name in EMBED + ("joint_concat", "film", "attention", "gated"):
        assert cands[name].modality == "fusion" and not cands[name].consumes
        assert get_family(cands[name].family).uses_images
