"""``load_pixels``: resize/pad, decode once, reuse rows, atomic writes, parallel decoding."""

from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

import benchmark.data.image_cache as ic
from benchmark.data.image_cache import load_pixels, resize_square
from benchmark.errors import UserError


@pytest.fixture
def images(tmp_path, dicom_writer):
    """Six small images (PNG and DICOM) of different brightness and shape."""
    paths = []
    for i in range(6):
        level = 40 * i + 20
        arr = np.full((12 + 2 * i, 20), level, dtype=np.uint8)
        arr[0, 0] = 0  # keep a full 0..255 scale for the DICOM percentile window
        arr[-1, -1] = 255
        if i % 2:
            p = dicom_writer(tmp_path / "img" / f"{i}.dcm", arr)
        else:
            p = tmp_path / "img" / f"{i}.png"
            p.parent.mkdir(exist_ok=True)
            Image.fromarray(arr).save(p)
        paths.append(str(p))
    return paths


@pytest.fixture
def count_decodes(monkeypatch):
    calls = []
    real = ic.read_image

    def counting(path, **kwargs):
        calls.append(path)
        return real(path, **kwargs)

    monkeypatch.setattr(ic, "read_image", counting)
    return calls


def test_pixels_are_uint8_squares_in_path_order(images, tmp_path):
    px = load_pixels(images, 16, tmp_path / "cache")
    assert px.shape == (6, 16, 16) and px.dtype == np.uint8
    centre = px[:, 8, 8].astype(int)
    assert (np.diff(centre) > 0).all()  # brightness grows with the index, as written


def test_resize_keeps_aspect_ratio_and_pads_with_black():
    wide = np.ones((10, 40), dtype=np.float32)
    out = resize_square(wide, 16)
    rows = np.flatnonzero(out.max(axis=1) > 0)
    assert out.shape == (16, 16) and len(rows) == 4 and rows[0] == 6   # 40x10 -> 16x4, centred
    assert (out[:6] == 0).all() and (out[10:] == 0).all() and (out[7:9] == 255).all()
    tall = resize_square(np.ones((40, 10), dtype=np.float32), 16)
    np.testing.assert_array_equal(tall, out.T)


def test_downscaling_is_antialiased():
    stripes = np.zeros((64, 64), dtype=np.float32)
    stripes[:, ::2] = 1.0  # one-pixel stripes would alias to black or white without a low-pass filter
    out = resize_square(stripes, 16)
    assert abs(float(out.mean()) - 127.5) < 10 and out.std() < 20


def test_second_load_reads_only_the_cache(images, tmp_path, count_decodes):
    first = np.array(load_pixels(images, 16, tmp_path / "cache"))
    assert len(count_decodes) == len(images)
    second = load_pixels(images, 16, tmp_path / "cache")
    assert len(count_decodes) == len(images)  # no decode the second time
    assert isinstance(second, np.memmap) and not second.flags.writeable
    np.testing.assert_array_equal(first, second)


def test_a_changed_file_is_decoded_again_and_the_others_reused(images, tmp_path, count_decodes):
    load_pixels(images, 16, tmp_path / "cache")
    count_decodes.clear()
    Image.fromarray(np.zeros((12, 20), dtype=np.uint8)).save(images[0])
    st = os.stat(images[0])
    os.utime(images[0], ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    px = load_pixels(images, 16, tmp_path / "cache")
    assert count_decodes == [images[0]]
    assert px[0].max() == 0


def test_a_subset_of_images_is_served_from_an_earlier_cache_without_decoding(images, tmp_path, count_decodes):
    full = np.array(load_pixels(images, 16, tmp_path / "cache"))
    count_decodes.clear()
    sub = load_pixels(images[3:] + images[:1], 16, tmp_path / "cache")
    assert count_decodes == []
    np.testing.assert_array_equal(sub, full[[3, 4, 5, 0]])


def test_a_new_size_is_a_new_cache_entry(images, tmp_path, count_decodes):
    load_pixels(images, 16, tmp_path / "cache")
    load_pixels(images, 8, tmp_path / "cache")
    assert len(count_decodes) == 2 * len(images)


def test_an_interrupted_run_leaves_no_cache_file_behind(images, tmp_path, monkeypatch):
    calls = []
    real = ic.read_image

    def interrupted(path, **kwargs):
        calls.append(path)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(path, **kwargs)

    monkeypatch.setattr(ic, "read_image", interrupted)
    with pytest.raises(KeyboardInterrupt):
        load_pixels(images, 16, tmp_path / "cache")
    assert list((tmp_path / "cache" / "pixels").iterdir()) == []
    monkeypatch.setattr(ic, "read_image", real)
    assert load_pixels(images, 16, tmp_path / "cache").shape == (6, 16, 16)


def test_a_damaged_cache_file_is_rebuilt(images, tmp_path, count_decodes):
    load_pixels(images, 16, tmp_path / "cache")
    target = ic.cache_path(images, 16, tmp_path / "cache")
    target.write_bytes(target.read_bytes()[:50])
    px = load_pixels(images, 16, tmp_path / "cache")
    assert px.shape == (6, 16, 16) and len(count_decodes) == 2 * len(images)


def test_parallel_decoding_gives_the_same_pixels(images, tmp_path, monkeypatch):
    monkeypatch.setattr(ic, "PARALLEL_MIN", 2)
    monkeypatch.setattr(ic, "CHUNK", 2)
    par = np.array(load_pixels(images, 16, tmp_path / "par", workers=2))
    seq = np.array(load_pixels(images, 16, tmp_path / "seq", workers=1))
    np.testing.assert_array_equal(par, seq)


def test_an_undecodable_image_names_its_position_not_its_path(images, tmp_path):
    bad = tmp_path / "img" / "Doe_John.png"
    bad.write_text("not an image")
    with pytest.raises(UserError, match=r"image 7 of 7") as info:
        load_pixels(images + [str(bad)], 16, tmp_path / "cache")
    assert "Doe" not in str(info.value)


def test_empty_list_and_default_cache_dir(images, monkeypatch, tmp_path):
    assert load_pixels([], 16, None).shape == (0, 16, 16)
    monkeypatch.setenv("AFF_BENCHMARK_CACHE", str(tmp_path / "envcache"))
    load_pixels(images, 16, None)
    assert list((tmp_path / "envcache" / "pixels").glob("s16-*.npy"))


def test_cohort_pixels_use_the_cache(tiny_cohort):
    px = tiny_cohort.pixels(16)
    assert px.shape == (len(tiny_cohort.images), 16, 16)
    assert str(tiny_cohort.cache_dir) == os.environ["AFF_BENCHMARK_CACHE"]
