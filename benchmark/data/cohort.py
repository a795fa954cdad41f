"""The in-memory cohort and the per-part views that candidates receive.

A ``Cohort`` is what the loader (``benchmark.data.dataset.load_dataset``) returns:
patients in a fixed order (position = internal patient index), their labels, the typed
register table and the image index. Identifiers stay inside: outputs use ``keys``
(a salted hash per patient), never the id column, a file name or a DICOM tag value.

Candidates never see a ``Cohort``; the runner hands them ``PatientData`` views made by
``Cohort.view``. A view made for evaluation carries no labels (``y is None``), so a
candidate cannot look at outer-test labels even by mistake.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd


@dataclass
class Cohort:
    name: str
    y: np.ndarray                      # (n,) int8, 1 = AFF (positive), 0 = NFF; -1 when not labelled
    register: pd.DataFrame | None      # (n, p) features only; numeric float64, categoricals as 'category'
    images: pd.DataFrame | None        # columns: patient (int position), path (absolute str), regions
    #                                    (synthetic: the image's sign boxes, benchmark.data.truth); private
    keys: np.ndarray                   # (n,) str, output-safe stable patient keys
    categorical: list[str] = field(default_factory=list)
    oracle: pd.DataFrame | None = None  # synthetic cohorts: oracle_register, oracle_image, oracle_both
    truth: dict | None = None          # synthetic cohorts: the risk columns (benchmark.data.truth)
    fingerprint: str = ""              # hash of the inputs (files' contents and settings)
    source: Path | None = None         # the dataset file
    cache_dir: Path | None = None      # where decoded images are cached
    labelled: bool = True              # False: a dataset to predict on, without labels (y is all -1)
    image_roots: tuple = ()            # the folders its image files must lie in when opened (decode_limits)
    groups: pd.DataFrame | None = None  # the dataset file's subgroups: one text column per subgroup (data/subgroups.py)
    _pixels: dict = field(default_factory=dict, repr=False)

    @property
    def n_patients(self) -> int:
        return int(len(self.y))

    @property
    def has_register(self) -> bool:
        return self.register is not None and self.register.shape[1] > 0

    @property
    def has_images(self) -> bool:
        return self.images is not None and len(self.images) > 0

    def pixels(self, size: int) -> np.ndarray:
        """All images decoded, resized to ``size``x``size`` (aspect kept, padded), uint8.

        Row i is ``self.images.iloc[i]``. Decoded once per size and cached on disk.
        """
        if size not in self._pixels:
            from benchmark.data.image_cache import load_pixels

            self._pixels[size] = load_pixels(self.images["path"].tolist(), size, self.cache_dir,
                                             roots=self.image_roots)
        return self._pixels[size]

    def __getstate__(self) -> dict:
        """Pickled (sent to a worker) without the decoded pixels: the receiver maps the same cache
        file (``pixels``), so the workers of one machine share one copy in the page cache."""
        state = dict(self.__dict__)
        state["_pixels"] = {}
        return state

    def subset(self, patients: np.ndarray) -> "Cohort":
        """A cohort of ``patients`` only (positions renumbered, keys kept); images follow."""
        patients = np.asarray(patients, dtype=np.int64)
        if len(patients) == self.n_patients and np.array_equal(patients, np.arange(self.n_patients)):
            return self
        images = None
        if self.images is not None:
            remap = np.full(self.n_patients, -1, dtype=np.int64)
            remap[patients] = np.arange(len(patients))
            new = remap[self.images["patient"].to_numpy()]
            keep = new >= 0
            images = self.images.loc[keep].assign(patient=new[keep]).reset_index(drop=True)
        return Cohort(
            name=self.name, y=self.y[patients],
            register=None if self.register is None else self.register.iloc[patients].reset_index(drop=True),
            images=images, keys=self.keys[patients], categorical=list(self.categorical),
            oracle=None if self.oracle is None else self.oracle.iloc[patients].reset_index(drop=True),
            fingerprint=self.fingerprint, source=self.source, cache_dir=self.cache_dir, labelled=self.labelled,
            image_roots=self.image_roots, truth=self.truth,
            groups=None if self.groups is None else self.groups.iloc[patients].reset_index(drop=True))

    def image_rows(self, patients: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(rows of ``images``, their owner's position in ``patients``) of a view of ``patients``:
        the images ``view`` attaches, in its order (grouped by owner)."""
        patients = np.asarray(patients, dtype=np.int64)
        pos = pd.Series(np.arange(len(patients)), index=patients)
        rows = np.flatnonzero(self.images["patient"].isin(patients).to_numpy())
        owner = pos.loc[self.images["patient"].to_numpy()[rows]].to_numpy()
        order = np.argsort(owner, kind="stable")
        return rows[order], owner[order]

    def view(self, patients: np.ndarray, *, labels: bool, image_size: int | None = None,
             upstream: pd.DataFrame | None = None) -> "PatientData":
        """The data of ``patients`` (cohort positions) as a candidate may see it.

        ``labels=False`` for any part the candidate must not learn from (outer test).
        ``image_size`` None means no images are attached. ``upstream`` (rows aligned with
        ``patients``) carries other candidates' predictions or embeddings for fusion.
        """
        patients = np.asarray(patients, dtype=np.int64)
        reg = None
        if self.has_register:
            reg = self.register.iloc[patients].reset_index(drop=True)
        imgs = owner = None
        if image_size is not None and self.has_images:
            rows, owner = self.image_rows(patients)
            imgs = self.pixels(image_size)[rows]
        return PatientData(
            patients=patients,
            register=reg,
            images=imgs,
            image_owner=owner,
            y=self.y[patients].astype(np.int64) if labels else None,
            categorical=list(self.categorical),
            upstream=None if upstream is None else upstream.reset_index(drop=True),
        )


@dataclass
class PatientData:
    """What a candidate sees of one part of the data (a training, validation or test part).

    Rows of ``register`` and ``upstream`` and entries of ``y`` align with ``patients``.
    ``images[i]`` belongs to patient position ``image_owner[i]`` (0..len(patients)-1);
    images are grouped by owner (sorted). A patient may have zero, one or several images.
    """

    patients: np.ndarray
    register: pd.DataFrame | None
    images: np.ndarray | None          # (m, S, S) uint8
    image_owner: np.ndarray | None     # (m,) int positions into ``patients``
    y: np.ndarray | None               # None when labels are withheld
    categorical: list[str] = field(default_factory=list)
    upstream: pd.DataFrame | None = None

    def __len__(self) -> int:
        return int(len(self.patients))

    def labels(self) -> np.ndarray:
        """The labels, or an error if this part was handed over without them."""
        if self.y is None:
            raise RuntimeError("labels requested on a part handed over without labels (outer test)")
        return self.y

    def subset(self, positions: np.ndarray) -> "PatientData":
        """A sub-part by positions into this part (images follow their owners)."""
        positions = np.asarray(positions, dtype=np.int64)
        imgs = owner = None
        if self.images is not None:
            remap = np.full(len(self.patients), -1, dtype=np.int64)
            remap[positions] = np.arange(len(positions))
            new_owner = remap[self.image_owner]
            keep = np.flatnonzero(new_owner >= 0)
            keep = keep[np.argsort(new_owner[keep], kind="stable")]
            imgs, owner = self.images[keep], new_owner[keep]
        return PatientData(
            patients=self.patients[positions],
            register=None if self.register is None else self.register.iloc[positions].reset_index(drop=True),
            images=imgs,
            image_owner=owner,
            y=None if self.y is None else self.y[positions],
            categorical=list(self.categorical),
            upstream=None if self.upstream is None else self.upstream.iloc[positions].reset_index(drop=True),
        )
