"""Shared fixtures: a tiny on-disk dataset, a DICOM writer, and an isolated cache.

``tiny_dataset`` is a factory; each call writes a small valid dataset (register CSV, a few
PNG and DICOM images, manifest, dataset.yaml) into a fresh folder under ``tmp_path``::

    def test_something(tiny_dataset):
        ds = tiny_dataset()                       # 4 AFF + 6 NFF, 2 images each
        cohort = load_dataset(ds.yaml)
        ds.update_yaml(missing_images="fail")     # then break it on purpose
        df = ds.read_register(); df.loc[2, "age"] = "old"; ds.write_register(df)

``tiny_cohort`` is the default tiny dataset, loaded. Every test runs with
``AFF_BENCHMARK_CACHE`` pointing at a session-wide temporary folder, so no test writes to
``~/.cache``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml


@pytest.fixture(scope="session")
def _session_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("aff-cache")


@pytest.fixture(autouse=True)
def _isolated_cache(_session_cache, monkeypatch):
    monkeypatch.setenv("AFF_BENCHMARK_CACHE", str(_session_cache))


def write_dicom(path: Path, pixels: np.ndarray, *, photometric: str = "MONOCHROME2", bits_stored: int | None = None,
                window: tuple[float, float] | None = None, rescale: tuple[float, float] | None = None,
                patient_name: str = "Anonymous", patient_id: str = "0", **elements) -> Path:
    """Write ``pixels`` (uint8/uint16/int16, (rows, cols[, 3]) or (frames, rows, cols)) as a DX DICOM file.

    ``window`` = (center, width); ``rescale`` = (slope, intercept); other keyword arguments
    are set as DICOM elements by keyword (e.g. ``VOILUTFunction="SIGMOID"``).
    """
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"  # Digital X-Ray Image Storage - For Presentation
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.Modality = "DX"
    ds.PatientName = patient_name
    ds.PatientID = patient_id
    bits = bits_stored or pixels.dtype.itemsize * 8
    ds.set_pixel_data(np.ascontiguousarray(pixels), photometric, bits)
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = [float(v) for v in window]
    if rescale is not None:
        ds.RescaleSlope, ds.RescaleIntercept = [float(v) for v in rescale]
    for key, value in elements.items():
        setattr(ds, key, value)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


@pytest.fixture
def dicom_writer():
    """The ``write_dicom`` helper above, for tests that need their own DICOM files."""
    return write_dicom


@dataclass
class TinyDataset:
    """Paths of a tiny dataset and helpers to edit (break) it."""

    dir: Path
    yaml: Path
    register: Path | None
    manifest: Path | None
    images: Path | None
    ids: list[str]
    labels: list[int]

    def spec(self) -> dict:
        return yaml.safe_load(self.yaml.read_text())

    def update_yaml(self, **changes) -> None:
        """Set top-level keys; ``None`` removes a key."""
        doc = self.spec()
        for k, v in changes.items():
            if v is None:
                doc.pop(k, None)
            else:
                doc[k] = v
        self.yaml.write_text(yaml.safe_dump(doc, sort_keys=False))

    def read_register(self) -> pd.DataFrame:
        return pd.read_csv(self.register, dtype=str, keep_default_na=False)

    def write_register(self, df: pd.DataFrame) -> None:
        df.to_csv(self.register, index=False)

    def read_manifest(self) -> pd.DataFrame:
        return pd.read_csv(self.manifest, dtype=str, keep_default_na=False)

    def write_manifest(self, df: pd.DataFrame) -> None:
        df.to_csv(self.manifest, index=False)


def _image(label: int, k: int, rng: np.random.Generator, shape=(24, 20)) -> np.ndarray:
    """A smooth background with a bright bar whose angle depends (weakly) on the label."""
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w]
    img = 0.2 + 0.3 * yy / h + 0.05 * rng.standard_normal(shape)
    slope = 0.0 if label == 1 else 0.6
    bar = np.abs((yy - h / 2) - slope * (xx - w / 2)) < 2
    img[bar] += 0.5
    return np.clip(img, 0, 1)


def make_tiny_dataset(root: Path, *, n_pos: int = 4, n_neg: int = 6, images_per_patient: int = 2,
                      images: str | None = "manifest", register: bool = True, oracle: bool = False,
                      seed: int = 0, planted_name: str = "Anonymous", id_prefix: str = "ID-") -> TinyDataset:
    """Write the dataset; ``images`` is 'manifest', 'pattern' or None (register only)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    n = n_pos + n_neg
    labels = [1] * n_pos + [0] * n_neg
    labels = [labels[i] for i in rng.permutation(n)]
    ids = [f"{id_prefix}{1001 + i}" for i in range(n)]
    doc: dict = {"name": "tiny", "id_column": "patient_id",
                 "label": {"column": "group", "positive": "AFF", "negative": "NFF"}}
    reg_path = man_path = img_dir = None
    if register:
        age = np.where(np.array(labels) == 1, 74, 81) + rng.normal(0, 5, n)
        bisfo_d = np.round(rng.exponential(3, n), 1).astype(object)
        bisfo_d[rng.random(n) < 0.3] = ""
        df = pd.DataFrame({
            "patient_id": ids,
            "group": ["AFF" if y else "NFF" for y in labels],
            "name": [f"{planted_name} {i}" for i in range(n)],
            "age": np.round(age, 1),
            "sex": rng.choice(["F", "M"], n),
            "site": rng.choice(["north", "south", "west"], n),
            "bisfo": (rng.random(n) < np.where(np.array(labels) == 1, 0.8, 0.2)).astype(int),
            "bisfo_d": bisfo_d,
        })
        reg_path = root / "register.csv"
        df.to_csv(reg_path, index=False)
        doc.update(register="register.csv", drop_columns=["name"], categorical=["sex", "site"])
    if images is not None:
        img_dir = root / "images"
        rows = []
        for i, (pid, y) in enumerate(zip(ids, labels)):
            for k in range(images_per_patient):
                arr = _image(y, k, rng)
                folder = ("AFF/" if y else "NFF/") if (images == "pattern" and not register) else ""
                if (i + k) % 2 == 0:
                    rel = f"{folder}img_{pid}_{k}.dcm"
                    write_dicom(img_dir / rel, np.round(arr * 4095).astype(np.uint16), bits_stored=12,
                                window=(2048, 4096), patient_name=planted_name, patient_id=pid)
                else:
                    rel = f"{folder}img_{pid}_{k}.png"
                    (img_dir / rel).parent.mkdir(parents=True, exist_ok=True)
                    Image.fromarray(np.round(arr * 255).astype(np.uint8)).save(img_dir / rel)
                rows.append({"path": rel, "patient_id": pid, "group": "AFF" if y else "NFF"})
        if images == "manifest":
            man_path = root / "images.csv"
            man = pd.DataFrame(rows)
            if register:
                man = man[["path", "patient_id"]]
            man.to_csv(man_path, index=False)
            doc["images"] = {"root": "images/", "manifest": "images.csv"}
        elif images == "pattern":
            pattern = r"img_(?P<patient_id>" + id_prefix + r"\d+)_\d+\.(dcm|png)"
            if not register:  # image-only: the label comes from the folder name
                pattern = r"(?P<label>AFF|NFF)/" + pattern
            doc["images"] = {"root": "images/", "pattern": pattern}
        else:
            raise ValueError(f"images must be 'manifest', 'pattern' or None, got {images!r}")
    if oracle:
        p = np.clip(0.5 + 0.4 * (np.array(labels) - 0.5) + rng.normal(0, 0.1, n), 0.01, 0.99)
        pd.DataFrame({"patient_id": ids, "oracle_register": p, "oracle_image": p, "oracle_both": p}).to_csv(
            root / "oracle.csv", index=False)
        doc["oracle"] = "oracle.csv"
    yaml_path = root / "dataset.yaml"
    yaml_path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return TinyDataset(root, yaml_path, reg_path, man_path, img_dir, ids, labels)


@pytest.fixture
def tiny_dataset(tmp_path):
    """Factory: ``tiny_dataset(**options)`` -> ``TinyDataset`` (see ``make_tiny_dataset``)."""
    counter = iter(range(10_000))

    def make(**options) -> TinyDataset:
        return make_tiny_dataset(tmp_path / f"tiny{next(counter)}", **options)

    return make


@pytest.fixture
def tiny_cohort(tiny_dataset):
    """The default tiny dataset (10 patients, 20 images), loaded as a ``Cohort``."""
    from benchmark.data.dataset import load_dataset

    return load_dataset(tiny_dataset().yaml)


# --- PostgreSQL (the storage backends' tests) -------------------------------------------

@pytest.fixture(scope="session")
def postgres_url():
    """The URL of a PostgreSQL database the tests may create databases in.

    ``$AFF_TEST_POSTGRES_URL`` when set (CI starts one with ``tests/postgres_server.py``),
    else a throwaway server of this session (stopped at its end), else the test is skipped.
    """
    import os

    url = os.environ.get("AFF_TEST_POSTGRES_URL")
    if url:
        yield url
        return
    import shutil
    import tempfile
    import uuid

    import postgres_server

    # Under the system temp folder, not tmp_path: the server's user must reach it (pytest's are 0700 root).
    datadir = Path(tempfile.gettempdir()) / f"aff-pg-{uuid.uuid4().hex[:10]}"
    try:
        url = postgres_server.start(datadir)
    except (postgres_server.PostgresUnavailable, OSError) as exc:
        shutil.rmtree(datadir, ignore_errors=True)
        pytest.skip(f"PostgreSQL cannot be started here: {exc}")
    try:
        yield url
    finally:
        try:
            postgres_server.stop(datadir)
        finally:
            shutil.rmtree(datadir, ignore_errors=True)


@pytest.fixture
def fresh_pg_database(postgres_url):
    """The URL of a new, empty database of its own (dropped after the test), on ``postgres_url``'s server."""
    import uuid
    from urllib.parse import urlsplit, urlunsplit

    import psycopg

    from benchmark.search.storage import close_storage

    name = f"aff_{uuid.uuid4().hex[:12]}"
    server = "postgresql://" + postgres_url.split("://", 1)[1]   # libpq's form (no SQLAlchemy driver)
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = urlunsplit(urlsplit(postgres_url)._replace(path=f"/{name}"))
    yield url
    close_storage(url)
    try:
        with psycopg.connect(server, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    except psycopg.Error:
        pass
