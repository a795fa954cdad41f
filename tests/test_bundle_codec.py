"""Bundle codec (benchmark.export.codec): every built-in family survives encode -> safetensors -> decode
bit-identically, the tree is strict JSON without pickle, and the reader and writer refuse what a
bundle may not hold."""

from __future__ import annotations

import json
import pickle
import sys

import numpy as np
import pandas as pd
import pytest
from safetensors.numpy import load as load_arrays
from safetensors.numpy import save as save_arrays
from tabular_helpers import LEVELS, make_part
from test_fusion import fabricate_upstream, split, toy_cohort, unlabelled, with_upstream
from test_fusion_nets import EXTRA, NETS, TINY

from benchmark.candidates.base import TrialContext, get_family
from benchmark.data.cohort import PatientData
from benchmark.export.codec import BundleFormatError, Reader, Writer

REGISTER = {
    "logreg": {},
    "xgboost": {"n_estimators": 300, "early_stopping_rounds": 5, "learning_rate": 0.3, "max_depth": 2},
    "lightgbm": {"n_estimators": 300, "early_stopping_rounds": 5, "learning_rate": 0.3, "num_leaves": 4,
                 "min_child_samples": 5},
    "mlp:embedding": {"categorical": "embedding", "hidden": 8, "n_layers": 1, "max_epochs": 3, "patience": None},
    "mlp:onehot": {"categorical": "onehot", "hidden": 8, "n_layers": 1, "max_epochs": 3, "patience": None},
}
EMBED = {
    "embed_xgboost": {"n_components": 3, "n_estimators": 300, "early_stopping_rounds": 5, "learning_rate": 0.3,
                      "max_depth": 2, "encoder": "test_resnet"},
    "embed_lightgbm": {"n_components": 3, "n_estimators": 300, "early_stopping_rounds": 5, "learning_rate": 0.3,
                       "num_leaves": 4, "min_child_samples": 5, "encoder": "test_resnet"},
}


def ctx(seed: int = 0, **kw) -> TrialContext:
    return TrialContext(seed=seed, device="cpu", extra={"n_jobs": 1, "n_threads": 1}, **kw)


def round_trip(model, path: str = "c0.m0"):
    """encode -> strict JSON text + real safetensors bytes + file bytes -> decode (pickle made unusable)."""
    with pytest.MonkeyPatch.context() as mp:
        for name in ("dumps", "loads", "dump", "load"):
            mp.setattr(pickle, name, _no_pickle)
        w = Writer()
        node = w.encode(model, path)
        text = json.dumps(node, allow_nan=False)
        assert "pickle" not in text and "__reduce__" not in text
        arrays = load_arrays(save_arrays(w.arrays))
        files = {name: bytes(data) for name, data in w.files.items()}
        return Reader(arrays, files, device="cpu").decode(json.loads(text))


def _no_pickle(*args, **kwargs):
    raise AssertionError("the bundle codec used pickle")


def assert_same_predictions(original, restored, test) -> np.ndarray:
    p = original.predict_proba(test)
    assert np.all(np.isfinite(p))
    assert np.array_equal(p, restored.predict_proba(test))
    return p


# -- register families


@pytest.fixture(scope="module")
def register_parts():
    """Training part and an unlabelled test part with an unseen site level and missing values."""
    train, test = make_part(150, 0), make_part(40, 2, labels=False)
    reg = test.register.copy()
    site = reg["site"].astype(object).to_numpy(copy=True)
    site[:4], site[4:6] = "mars", np.nan
    reg["site"] = pd.Categorical(site, categories=LEVELS + ["unused", "mars"])
    reg.loc[6:9, "x0"] = np.nan
    return train, PatientData(test.patients, reg, None, None, None, list(test.categorical))


@pytest.mark.parametrize("key", sorted(REGISTER))
def test_register_family_round_trips_bit_identically_with_unseen_levels_and_missing_values(register_parts, key):
    train, test = register_parts
    assert "mars" not in set(train.register["site"].astype(object)) and test.register.isna().any().any()
    fam = get_family(key.split(":")[0])(**REGISTER[key]).fit(train, None, ctx())
    restored = round_trip(fam)
    assert type(restored) is type(fam)
    assert_same_predictions(fam, restored, test)


@pytest.mark.parametrize("name", ["xgboost", "lightgbm"])
def test_boosted_trees_keep_their_early_stopped_round_and_predict_at(register_parts, name):
    train, test = register_parts
    fam = get_family(name)(**REGISTER[name]).fit(train, None, ctx())
    assert fam.best_iteration_ + 1 < REGISTER[name]["n_estimators"]   # early stopping fired: the round matters
    restored = round_trip(fam)
    assert restored.best_iteration_ == fam.best_iteration_
    p = assert_same_predictions(fam, restored, test)
    assert np.array_equal(fam.predict_at(test, 0.5), restored.predict_at(test, 0.5))
    assert not np.array_equal(fam.predict_at(test, 0.5), p)


# -- images and fusion


@pytest.fixture(scope="module")
def fusion_parts():
    """Training part with upstream (3 sources) and an unlabelled test part with a patient without
    images, a patient missing the third source, an unseen site level and missing register values."""
    data, _ = toy_cohort(n=60, size=16, seed=3)
    up = fabricate_upstream(data)
    third = np.random.default_rng(9).uniform(0.05, 0.95, len(data))
    third[::7] = np.nan
    up["third:prob"], up["third:prob_raw"] = third, third
    train, test = split(with_upstream(data, up), seed=0, frac=0.5)
    test = unlabelled(test)
    reg = test.register.copy()
    site = reg["site"].astype(object).to_numpy(copy=True)
    site[:3] = "c"
    reg["site"] = pd.Categorical(site, categories=["a", "b", "c"])
    reg.loc[3:5, "r0"] = np.nan
    test.register = reg
    counts = np.bincount(test.image_owner, minlength=len(test))
    assert (counts == 0).any() and np.isnan(test.upstream["third:prob"]).any()
    return train, test


def test_timm_cnn_round_trips_bit_identically_and_runs_in_eval_mode_on_cpu(fusion_parts):
    train, test = fusion_parts
    fam = get_family("timm_cnn")(arch="test_resnet", batch_size=16, epochs=2, patience=None)
    fam.fit(train, None, ctx(max_epochs=2, image_size=16))
    restored = round_trip(fam)
    assert_same_predictions(fam, restored, test)
    assert_restored_torch_family_on_cpu_in_eval_mode(restored)
    assert_same_predictions(fam, round_trip(restored, "c1.m0"), test)   # a loaded model exports again


def assert_restored_torch_family_on_cpu_in_eval_mode(fam) -> None:
    assert fam.device_.type == "cpu"
    assert not fam.model_.training and not any(m.training for m in fam.model_.modules())
    assert all(p.device.type == "cpu" for p in fam.model_.parameters())


def test_late_average_round_trips_bit_identically(fusion_parts):
    train, test = fusion_parts
    fam = get_family("late_average")(scale="logit").fit(train, None, ctx())
    assert_same_predictions(fam, round_trip(fam), test)


def test_late_stacking_round_trips_its_subset_stackers(fusion_parts):
    train, test = fusion_parts
    fam = get_family("late_stacking")(C=1.0).fit(train, None, ctx())
    assert len(fam.sources_) == 3 and (0, 1, 2) in fam.models_ and (1, 2) in fam.models_
    restored = round_trip(fam)
    assert sorted(restored.models_) == sorted(fam.models_)
    assert all(isinstance(k, tuple) for k in restored.models_)
    assert_same_predictions(fam, restored, test)


@pytest.mark.parametrize("name", sorted(EMBED))
def test_embedding_family_round_trips_with_its_frozen_encoder(fusion_parts, name):
    train, test = fusion_parts
    fam = get_family(name)(**EMBED[name]).fit(train, None, ctx())
    assert fam.model_.best_iteration_ + 1 < EMBED[name]["n_estimators"]
    w = Writer()
    w.encode(fam, "c0.m0")
    assert any(f.startswith("weights/") and "encoder" in f for f in w.files)
    restored = round_trip(fam)
    assert restored.pretrained_ != fam.pretrained_   # the bundle's encoder, not the one built at fit time
    assert_same_predictions(fam, restored, test)
    assert_same_predictions(fam, round_trip(restored, "c1.m0"), test)   # a loaded model exports again
    assert np.array_equal(fam.predict_at(test, 0.5), restored.predict_at(test, 0.5))


@pytest.mark.parametrize("name", NETS)
def test_neural_fusion_net_round_trips_bit_identically_in_eval_mode_on_cpu(fusion_parts, name):
    train, test = fusion_parts
    fam = get_family(name)(**TINY, **EXTRA[name]).fit(train, None, ctx(max_epochs=1, image_size=16))
    restored = round_trip(fam)
    assert_same_predictions(fam, restored, test)
    assert_restored_torch_family_on_cpu_in_eval_mode(restored)


# -- what a bundle may not hold


def test_every_exportable_family_is_listed_with_its_class_and_fields():
    from benchmark.candidates import base
    from benchmark.candidates.base import get_family
    from benchmark.export.codec import _class_name_of
    from benchmark.export.field_specs import CLASSES, FAMILY_CLASSES

    base.family_names()   # the built-in families registered
    assert set(FAMILY_CLASSES) == {n for n, c in base._FAMILIES.items() if c.__module__.startswith("benchmark.")}
    for name, cls_name in FAMILY_CLASSES.items():
        assert _class_name_of(get_family(name)) == cls_name and cls_name in CLASSES


@pytest.mark.parametrize("name", ["os:system", "subprocess:Popen", "http.server:SimpleHTTPRequestHandler",
                                  "builtins:dict", "numpy:ndarray"])
def test_decoding_refuses_a_class_outside_the_allow_list_without_importing_it(name):
    module = name.partition(":")[0]
    was_loaded = module in sys.modules
    with pytest.raises(BundleFormatError, match="may hold only"):
        Reader({}, {}).decode({"__object__": name, "state": {"__map__": {}}})
    assert was_loaded or module not in sys.modules


@pytest.mark.parametrize("name", ["benchmark.candidates.torch_train:os.system",
                                  "benchmark.export.codec:importlib.machinery.FileFinder",
                                  "benchmark.export.codec:np.ndarray"])
def test_decoding_refuses_a_foreign_class_reached_through_a_package_module(name):
    with pytest.raises(BundleFormatError):
        Reader({}, {}).decode({"__object__": name, "state": {"__map__": {}}})


def test_encoding_refuses_a_lambda_in_a_family_attribute_naming_its_path():
    fam = get_family("late_average")(scale="logit")
    fam.sources_ = ["best_image", lambda p: p]
    with pytest.raises(BundleFormatError, match=r"c0\.m1\.sources_\[1\]"):
        Writer().encode(fam, "c0.m1")


def test_encoding_refuses_an_open_file_naming_its_path(tmp_path):
    fam = get_family("late_average")(scale="logit")
    with open(tmp_path / "log.txt", "w") as fh:
        fam.sources_ = [fh]
        with pytest.raises(BundleFormatError, match=r"c2\.m0\.sources_\[0\]"):
            Writer().encode(fam, "c2.m0")


def test_encoding_refuses_an_attribute_without_a_declared_field_naming_it():
    fam = get_family("late_average")(scale="logit")
    fam.sources_, fam.prior_, fam.extra_ = ["best_image"], 0.5, {"hook": 1}
    with pytest.raises(BundleFormatError, match=r"c0\.m1\.extra_: .*field_specs"):
        Writer().encode(fam, "c0.m1")


@pytest.mark.parametrize("method", ["platt", "temperature", "isotonic", "none"])
def test_calibrators_round_trip_bit_identically(method):
    from benchmark.candidates.calibration import Calibrator, bag_prediction

    rng = np.random.default_rng(0)
    p = rng.beta(2, 5, 400)
    y = (rng.random(400) < p ** 0.7).astype(int)
    cal = Calibrator(method).fit(p, y)
    restored = round_trip(cal, "c0.calibrator")
    q = np.concatenate([rng.random(50), [0.0, 1.0, np.nan]])
    assert np.array_equal(cal.transform(q), restored.transform(q), equal_nan=True)
    members = rng.random((3, 20))
    for a, b in zip(bag_prediction(cal, members, r=1.7, mu=-1.0), bag_prediction(restored, members, r=1.7, mu=-1.0)):
        assert np.array_equal(a, b)
