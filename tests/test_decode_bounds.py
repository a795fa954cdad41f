"""Decoders bounded by memory, not only pixels: compressed streams must declare the header's size, peak memory
is estimated and checked before decoding, large images are reduced right after decoding, files are checked at
open time."""

from __future__ import annotations

import os
import re
import shutil
import warnings

import numpy as np
import pandas as pd
import pytest

from benchmark.data import dicom
from benchmark.data.dataset import inspect_dataset, load_dataset
from benchmark.errors import UserError
from benchmark.tools import hostile_images as hi


@pytest.fixture(autouse=True)
def _default_limits():
    dicom.set_decode_limits(None)
    yield
    dicom.set_decode_limits(None)


@pytest.fixture(scope="module")
def cohort_yaml(tmp_path_factory):
    from benchmark.tools.hostile_corpus import base_dataset

    return base_dataset(tmp_path_factory.mktemp("decode"))


def _with_first_image(cohort_yaml, tmp_path, rel: str, content: bytes):
    yaml = hi._copy(cohort_yaml, tmp_path / "ds")
    hi._first_image(yaml, rel, content)
    return yaml


@pytest.mark.parametrize("name, stream, ts, header, says", [
    ("jpeg2000", lambda: hi._j2k(12000, 12000), "JPEG2000Lossless", {"BitsAllocated": 8, "BitsStored": 8, "HighBit": 7},
     "the JPEG 2000 stream declares 12000 x 12000 pixels with 1 component(s), but the DICOM header says 32 x 32"),
    ("jpeg2000-16bit", lambda: hi._j2k(16000, 16000, np.uint16), "JPEG2000Lossless", {},
     "the JPEG 2000 stream declares 16000 x 16000 pixels"),
    ("jpeg", lambda: hi._jpeg(12000, 12000), "JPEGBaseline8Bit", {"BitsAllocated": 8, "BitsStored": 8, "HighBit": 7},
     "the JPEG stream declares 12000 x 12000 pixels"),
    ("jpeg-ls", lambda: hi._jpegls(12000, 12000), "JPEGLSLossless", {"Rows": 64, "Columns": 64},
     "the JPEG-LS stream declares 12000 x 12000 pixels"),
])
def test_a_compressed_stream_declaring_another_size_than_its_header_is_refused_before_decoding(
        cohort_yaml, tmp_path, monkeypatch, name, stream, ts, header, says):
    import pydicom.uid

    data = hi._dicom(cohort_yaml, ts=getattr(pydicom.uid, ts), frames=[stream()], **header)
    yaml = _with_first_image(cohort_yaml, tmp_path, "c.dcm", data)
    import pydicom.pixels

    monkeypatch.setattr(pydicom.pixels, "pixel_array", lambda *a, **k: pytest.fail("the stream was decoded"))
    path = yaml.parent / "images" / "c.dcm"
    for fn in (dicom.check_image, dicom.read_image):
        with pytest.raises(dicom.ImageError, match=re.escape(says)):
            fn(path)
    probs = inspect_dataset(yaml).problems
    assert len(probs) == 1 and "row 2, column 'path': " + says in probs[0]


def test_decoding_memory_is_estimated_from_the_header_and_refused_above_the_budget(tmp_path):
    from test_image_safety import make_png_header

    png = make_png_header(tmp_path / "big.png", 9999, 9999)   # a header only: decoding would fail, never starts
    with pytest.raises(dicom.ImageError, match=r"would take about 3,\d{3} MB, above the budget of 640 MB; it was not "
                                               r"decoded.*images.max_decode_mb"):
        dicom.read_image(png)                                 # full size: the float pipeline at 100 megapixels
    dicom.set_decode_limits(dicom.DecodeLimits(max_decode_mb=100))
    with pytest.raises(dicom.ImageError, match="above the budget of 100 MB"):
        dicom.check_image(png)
    with pytest.raises(dicom.ImageError, match="above the budget of 100 MB"):
        dicom.read_image(png, target=224)


def test_max_decode_mb_is_read_from_the_dataset_file_and_checked(tiny_dataset):
    ds = tiny_dataset()
    doc = ds.spec()
    doc["images"]["max_decode_mb"] = 0.01
    ds.update_yaml(images=doc["images"])
    probs = inspect_dataset(ds.yaml).problems
    assert probs and all("above the budget of 0.01 MB" in p for p in probs)
    doc["images"]["max_decode_mb"] = "lots"
    ds.update_yaml(images=doc["images"])
    assert inspect_dataset(ds.yaml).problems == [f"{ds.yaml}, key 'images.max_decode_mb': expected a positive number "
                                                 "of megabytes, e.g. 640"]


@pytest.mark.parametrize("bits", [8, 16])
def test_a_large_png_is_reduced_towards_its_target_without_a_full_size_float_array(tmp_path, bits):
    import tracemalloc

    path = tmp_path / "p.png"
    path.write_bytes(hi._png(3000, 2000, bits))
    tracemalloc.start()
    img = dicom.read_image(path, target=224)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert img.shape == (500, 750)                             # reduced 4x: the factor Pillow's resize would use
    assert peak < 3000 * 2000 * 4, peak                        # never a full-size float array (24 MB at 4 bytes)


def test_box_reduce_matches_pillows_reduce_also_in_strips():
    from PIL import Image

    from benchmark.data.grey import box_reduce

    a = np.random.default_rng(0).integers(0, 65535, (1001, 777)).astype(np.uint16)
    ref = np.asarray(Image.fromarray(a.astype(np.float32)).reduce(4), dtype=np.float64)
    np.testing.assert_allclose(box_reduce(a, 4), ref, rtol=1e-6)
    np.testing.assert_allclose(box_reduce(Image.fromarray(a), 4), ref, rtol=1e-6)


@pytest.mark.parametrize("name, elements, says", [
    ("bits", {"BitsAllocated": 12}, "BitsAllocated 12"),
    ("samples", {"SamplesPerPixel": 7}, "7 samples per pixel"),
    ("frames", {"NumberOfFrames": 0}, "declaring 0 frames"),
])
def test_odd_dicom_header_values_get_one_line(cohort_yaml, tmp_path, name, elements, says):
    yaml = _with_first_image(cohort_yaml, tmp_path, "d.dcm", hi._dicom(cohort_yaml, **elements))
    probs = inspect_dataset(yaml).problems
    assert len(probs) == 1 and says in probs[0] and "\n" not in probs[0]


def test_an_image_replaced_by_a_link_outside_after_loading_is_refused_when_opened(tiny_dataset, tmp_path):
    ds = tiny_dataset()
    cohort = load_dataset(ds.yaml)
    outside = tmp_path / "elsewhere.png"
    shutil.copy(cohort.images["path"].iloc[1], outside)
    victim = cohort.images["path"].iloc[0]
    os.remove(victim)
    os.symlink(outside, victim)                                # swapped after the index checked it
    with pytest.raises(UserError, match="image 1 of .*leads outside images.root now"):
        cohort.pixels(16)


def test_an_unreadable_image_is_described_in_words_not_a_python_class_name(tmp_path):
    p = tmp_path / "x.png"
    p.write_bytes(os.urandom(500))
    for fn in (dicom.check_image, dicom.read_image):
        with pytest.raises(dicom.ImageError) as info:
            fn(p)
        assert "Error" not in str(info.value) and "not an image format" in str(info.value)


def test_legal_images_still_decode_and_the_tiny_dataset_reads_as_before(tiny_cohort):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        px = tiny_cohort.pixels(16)
    assert px.shape[1:] == (16, 16) and px.max() > 0
    assert isinstance(tiny_cohort.register, pd.DataFrame)
