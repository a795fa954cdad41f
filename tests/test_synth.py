"""The synthetic cohort: oracle ceilings, knobs, on-disk format, determinism, safety."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest
import yaml
from PIL import Image
from sklearn.metrics import roc_auc_score

from benchmark.data.synth import SynthConfig, simulate, write_cohort
from benchmark.errors import UserError

TINY = dict(n_patients=40, n_aff=8, image_size=32, sparse_columns=20)


def _aucs(register: pd.DataFrame, oracle: pd.DataFrame) -> dict:
    y = (register["group"] == "AFF").to_numpy()
    return {k.split("_")[1]: roc_auc_score(y, oracle[k]) for k in ("oracle_register", "oracle_image", "oracle_both")}


@pytest.fixture(scope="module")
def default_sim():
    return simulate(SynthConfig())


@pytest.fixture(scope="module")
def tiny_dirs(tmp_path_factory):
    a = tmp_path_factory.mktemp("a") / "cohort"
    b = tmp_path_factory.mktemp("b") / "cohort"
    write_cohort(a, SynthConfig(**TINY, workers=1))
    write_cohort(b, SynthConfig(**TINY, workers=2))
    return a, b


def _digests(root: Path) -> dict:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_default_oracle_aucs_hit_the_design_ceilings(default_sim):
    register, _, oracle = default_sim
    auc = _aucs(register, oracle)
    assert 0.95 <= auc["image"] <= 0.975, auc
    assert 0.83 <= auc["register"] <= 0.90, auc
    assert 0.975 <= auc["both"] <= 0.995, auc
    assert auc["both"] >= max(auc["image"], auc["register"]) + 0.01, auc


def test_oracle_posteriors_are_calibrated_in_the_sample(default_sim):
    register, _, oracle = default_sim
    y = (register["group"] == "AFF").to_numpy()
    for col in ("oracle_register", "oracle_image", "oracle_both"):
        p = oracle[col].to_numpy()
        assert abs(p.sum() - y.sum()) < 3.5 * np.sqrt((p * (1 - p)).sum()), col


def test_default_cohort_has_exact_counts_many_columns_and_missing_values(default_sim):
    register, latents, _ = default_sim
    assert (register["group"] == "AFF").sum() == 172 and (register["group"] == "NFF").sum() == 4000
    assert register.shape[1] - 2 >= 300
    assert register["patient_id"].is_unique and register["patient_id"].str.match(r"SYN\d{6}$").all()
    assert register.isna().to_numpy().any()
    assert set(register["sex"]) == {"F", "M"}
    assert 2.2 <= latents["n_images"].mean() <= 2.8 and latents["n_images"].min() >= 1


def test_register_facts_match_the_literature_after_selection(default_sim):
    register, _, _ = default_sim
    aff, nff = register[register["group"] == "AFF"], register[register["group"] == "NFF"]
    assert aff["age"].mean() + 4 < nff["age"].mean()
    assert (aff["sex"] == "F").mean() > 0.82 and 0.6 < (nff["sex"] == "F").mean() < 0.8
    assert aff["bisfo"].mean() > 0.65 and 0.10 <= nff["bisfo"].mean() <= 0.40


def test_redundant_images_leave_nothing_for_the_register_to_add():
    register, _, oracle = simulate(SynthConfig(relation="redundant"))
    auc = _aucs(register, oracle)
    assert auc["both"] - auc["image"] < 0.005


def test_register_strength_zero_makes_register_uninformative():
    register, _, oracle = simulate(SynthConfig(register_strength=0.0))
    assert abs(_aucs(register, oracle)["register"] - 0.5) <= 0.05


def test_label_noise_lowers_and_keeps_oracles_calibrated():
    register, _, oracle = simulate(SynthConfig(label_noise=0.02))
    y = (register["group"] == "AFF").to_numpy()
    auc = _aucs(register, oracle)
    assert auc["both"] < 0.95
    for col in ("oracle_register", "oracle_image", "oracle_both"):
        p = oracle[col].to_numpy()
        assert abs(p.sum() - y.sum()) < 3.5 * np.sqrt((p * (1 - p)).sum()), col


def test_bad_settings_raise_user_error():
    with pytest.raises(UserError, match="--aff"):
        simulate(SynthConfig(n_patients=10, n_aff=10))


def test_same_seed_writes_identical_bytes_whatever_the_worker_count(tiny_dirs):
    a, b = tiny_dirs
    da, db = _digests(a), _digests(b)
    assert len(da) > 40 and da == db


def test_written_cohort_follows_the_dataset_format(tiny_dirs):
    root = tiny_dirs[0]
    ds = yaml.safe_load((root / "dataset.yaml").read_text())
    assert ds["label"] == {"column": "group", "positive": "AFF", "negative": "NFF"}
    assert ds["images"] == {"root": "images/", "manifest": "images.csv"} and ds["oracle"] == "oracle.csv"
    reg = pd.read_csv(root / ds["register"])
    assert (reg["group"] == "AFF").sum() == 8 and len(reg) == 40
    assert set(ds["categorical"]) <= set(reg.columns)
    manifest = pd.read_csv(root / "images.csv")
    assert list(manifest.columns) == ["path", "patient_id"]
    assert set(manifest["patient_id"]) == set(reg["patient_id"])
    oracle = pd.read_csv(root / "oracle.csv")
    assert list(oracle["patient_id"]) == list(reg["patient_id"])
    photometric = set()
    for rel, pid in zip(manifest["path"], manifest["patient_id"]):
        d = pydicom.dcmread(root / "images" / rel)
        assert d.PatientID == pid and str(d.PatientName) == "SYNTHETIC^PATIENT"
        assert d.Modality in ("DX", "CR") and d.BitsStored in (12, 14, 16) and d.Rows == 32
        assert d.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
        assert d.pixel_array.max() < 2 ** d.BitsStored
        photometric.add(d.PhotometricInterpretation)
    assert photometric == {"MONOCHROME1", "MONOCHROME2"}
    with Image.open(root / "preview.png") as im:
        assert im.size[0] == im.size[1] >= 256


def test_refuses_a_non_empty_folder_it_did_not_write(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="not empty"):
        write_cohort(tmp_path, SynthConfig(**TINY))
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


def test_rewriting_an_earlier_output_keeps_user_files(tmp_path):
    out = tmp_path / "cohort"
    write_cohort(out, SynthConfig(**TINY))
    (out / "notes.txt").write_text("mine")
    (out / "images" / "extra.png").write_bytes(b"x")
    first = (out / "register.csv").read_bytes()
    write_cohort(out, SynthConfig(**{**TINY, "seed": 1, "n_patients": 30}))
    assert (out / "notes.txt").read_text() == "mine" and (out / "images" / "extra.png").exists()
    assert (out / "register.csv").read_bytes() != first
    manifest = pd.read_csv(out / "images.csv")
    on_disk = {str(p.relative_to(out / "images")) for p in (out / "images").rglob("*.dcm")}
    assert on_disk == set(manifest["path"])
