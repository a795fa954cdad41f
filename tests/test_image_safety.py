"""Image safety: paths stay inside the dataset, and decoding is bounded by the declared size.

The bomb files are crafted small: a PNG header declaring a huge image, and a deflated DICOM
whose header declares 16000 x 16000 pixels. ``make_deflated_dicom`` / ``make_png_header``
can also write the full-size bombs, to measure the memory a decoder would take.
"""

from __future__ import annotations

import builtins
import io
import os
import struct
import subprocess
import sys
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest

from benchmark.data import dicom
from benchmark.data.dataset import inspect_dataset, load_dataset
from benchmark.errors import UserError

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _default_limit():
    dicom.set_decode_limits(None)
    yield
    dicom.set_decode_limits(None)


@pytest.fixture
def opened(monkeypatch):
    """Every path given to ``open``/``io.open`` (Pillow, pydicom, pathlib and our code open through them), resolved."""
    seen: list[str] = []
    real_open = builtins.open

    def spy(file, *args, **kwargs):
        if isinstance(file, (str, bytes, os.PathLike)):
            seen.append(os.path.realpath(os.fsdecode(file)))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", spy)
    monkeypatch.setattr(io, "open", spy)   # pathlib opens through io.open
    return seen


# ---------------------------------------------------------------------------- crafted files

def make_png_header(path: Path, width: int, height: int, *, full: bool = False) -> Path:
    """A grey 8-bit PNG declaring ``width`` x ``height``; its pixel data is cut short unless ``full``."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    comp = zlib.compressobj(9)
    if full:
        row = b"\0" * (width + 1)
        idat = b"".join(comp.compress(row) for _ in range(height)) + comp.flush()
    else:
        idat = comp.compress(b"\0" * (width + 1)) + comp.flush()
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))
    return path


def make_deflated_dicom(path: Path, rows: int, cols: int, *, full: bool = False) -> Path:
    """A Deflated Explicit VR Little Endian DX file declaring ``rows`` x ``cols`` 16-bit pixels.

    With ``full`` the (all-zero) pixel data is really there: 16000 x 16000 inflates to 512 MB
    from a file of about 0.5 MB. Without it the deflated stream stops after a few bytes of it.
    """
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_dataset, write_file_meta_info
    from pydicom.uid import DeflatedExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    ds = Dataset()
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.Modality = "DX"
    ds.Rows, ds.Columns = rows, cols
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    head = DicomBytesIO()
    head.write(b"\0" * 128 + b"DICM")
    write_file_meta_info(head, meta, enforce_standard=True)
    body = DicomBytesIO()
    body.is_little_endian, body.is_implicit_VR = True, False
    write_dataset(body, ds)
    n = rows * cols * 2
    comp = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    parts = [comp.compress(body.getvalue() + b"\xe0\x7f\x10\x00OW\0\0" + struct.pack("<I", n))]
    if full:
        block = b"\0" * (1 << 22)
        for _ in range(n // len(block)):
            parts.append(comp.compress(block))
        parts.append(comp.compress(b"\0" * (n % len(block))))
    else:
        parts.append(comp.compress(b"\0" * 64))
    parts.append(comp.flush())
    path.write_bytes(head.getvalue() + b"".join(parts))
    return path


def _with_image(ds, rel: str, make) -> None:
    """Replace the first manifest row's image by ``make(path)`` at ``rel`` under images/."""
    make(ds.images / rel)
    man = ds.read_manifest()
    man.loc[0, "path"] = rel
    ds.write_manifest(man)


def _problems(ds) -> list[str]:
    return inspect_dataset(ds.yaml).problems


# ---------------------------------------------------------------------------- 1. paths stay inside

def test_a_manifest_path_climbing_out_of_root_is_refused_and_never_opened(tiny_dataset, opened):
    ds = tiny_dataset()
    outside = ds.dir / "outside"
    outside.mkdir()
    secret = outside / "x.png"
    secret.write_bytes((ds.images / ds.read_manifest().loc[1, "path"]).read_bytes())
    man = ds.read_manifest()
    man.loc[0, "path"] = "../outside/x.png"
    ds.write_manifest(man)
    opened.clear()
    probs = _problems(ds)
    assert probs == [f"{ds.manifest}, row 2, column 'path': the image path leads outside images.root ('..' leads out "
                     "of the folder); it was not opened. Move the image under images.root, or add its folder to "
                     "images.allowed_roots in dataset.yaml"]
    assert str(ds.manifest.resolve()) in opened and str(secret.resolve()) not in opened
    with pytest.raises(UserError, match=r"row 2, column 'path': the image path leads outside images.root"):
        load_dataset(ds.yaml)


def test_etc_passwd_is_refused_before_it_is_opened(tiny_dataset, opened):
    ds = tiny_dataset()
    man = ds.read_manifest()
    man.loc[0, "path"] = "../" * 40 + "etc/passwd"
    man.loc[1, "path"] = "/etc/passwd"
    man.loc[2, "path"] = "~/.bashrc"
    ds.write_manifest(man)
    opened.clear()
    probs = _problems(ds)
    assert len(probs) == 3
    assert "row 2, column 'path'" in probs[0] and "('..' leads out of the folder)" in probs[0]
    assert "row 3, column 'path'" in probs[1] and "(an absolute path)" in probs[1]
    assert "row 4, column 'path'" in probs[2] and "(an absolute path)" in probs[2]
    assert opened and not any(p.startswith("/etc/") or p.endswith(".bashrc") for p in opened)
    assert not any("etc/passwd" in p or ".bashrc" in p for p in probs)  # no path quoted


def test_a_symlink_leading_outside_is_refused_for_manifest_and_pattern(tiny_dataset, opened):
    for mode in ("manifest", "pattern"):
        ds = tiny_dataset(images=mode)
        secret = ds.dir / "secret.png"
        first = sorted(p for p in os.listdir(ds.images) if p.endswith(".png"))[0]
        secret.write_bytes((ds.images / first).read_bytes())
        (ds.images / first).unlink()
        (ds.images / first).symlink_to(secret)
        opened.clear()
        probs = _problems(ds)
        assert len(probs) == 1 and "(a symbolic link points out of the folder); it was not opened" in probs[0]
        assert ("column 'path'" in probs[0]) if mode == "manifest" else ("(images.pattern), file" in probs[0])
        assert str(secret.resolve()) not in opened


def test_a_symlink_inside_root_is_fine(tiny_dataset):
    ds = tiny_dataset()
    man = ds.read_manifest()
    (ds.images / "link.png").symlink_to(ds.images / man.loc[1, "path"])
    man.loc[0, "path"] = "link.png"
    ds.write_manifest(man)
    assert _problems(ds) == []


def test_allowed_roots_admit_images_kept_elsewhere(tiny_dataset):
    ds = tiny_dataset()
    elsewhere = ds.dir / "elsewhere"
    elsewhere.mkdir()
    man = ds.read_manifest()
    (elsewhere / "x.png").write_bytes((ds.images / man.loc[1, "path"]).read_bytes())
    man.loc[0, "path"] = "../elsewhere/x.png"
    man.loc[2, "path"] = str(elsewhere / "x2.png")
    (elsewhere / "x2.png").write_bytes((ds.images / man.loc[3, "path"]).read_bytes())
    ds.write_manifest(man)
    assert len(_problems(ds)) == 2
    doc = ds.spec()
    doc["images"]["allowed_roots"] = ["elsewhere"]
    ds.update_yaml(images=doc["images"])
    assert _problems(ds) == []
    doc["images"]["allowed_roots"] = ["nowhere"]
    ds.update_yaml(images=doc["images"])
    assert _problems(ds) == [f"{ds.yaml}, key 'images.allowed_roots[0]': folder 'nowhere' not found "
                             "(relative paths are relative to the dataset file)"]


# ---------------------------------------------------------------------------- 2. bounded decoding

def test_max_megapixels_is_checked_for_every_format(tiny_dataset):
    ds = tiny_dataset()
    doc = ds.spec()
    doc["images"]["max_megapixels"] = 0.0004   # the tiny images are 20 x 24 = 480 pixels
    ds.update_yaml(images=doc["images"])
    probs = _problems(ds)
    assert len(probs) == 20
    assert f"{ds.manifest}, row 2, column 'path': the image declares 20 x 24 pixels x 16 bits (0 megapixels), above " \
           "the limit of 0.0004 megapixels; it was not decoded. Export it smaller, or raise images.max_megapixels " \
           "in the dataset file if it is genuine" in probs
    assert any("20 x 24 pixels x 8 bits" in p for p in probs)  # the PNGs
    for bad in ("-1", "'many'", "true"):
        ds.yaml.write_text(ds.yaml.read_text().replace("max_megapixels: 0.0004", f"max_megapixels: {bad}"))
        assert _problems(ds) == [f"{ds.yaml}, key 'images.max_megapixels': expected a positive number of megapixels, "
                                 "e.g. 100"]
        ds.yaml.write_text(ds.yaml.read_text().replace(f"max_megapixels: {bad}", "max_megapixels: 0.0004"))


@pytest.mark.parametrize("width,height", [(12000, 12000), (20000, 20000)])   # Pillow warns / Pillow refuses
def test_a_huge_png_is_refused_from_its_header_without_a_pillow_warning(tmp_path, width, height):
    p = make_png_header(tmp_path / "huge.png", width, height)
    mp = width * height / 1e6
    for fn in (dicom.check_image, dicom.read_image):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with pytest.raises(dicom.ImageError) as exc:
                fn(p)
        assert not caught
        assert str(exc.value).startswith(f"the image declares {width} x {height} pixels x 8 bits ({mp:,.0f} "
                                         "megapixels), above the limit of 100 megapixels; it was not decoded")
    dicom.set_max_megapixels(1000)
    from benchmark.data.pillow_image import open_pillow

    with open(p, "rb") as fh, open_pillow(fh, 512) as im:   # a raised limit lets it through (Pillow's own limit too)
        assert im.size == (width, height)


def test_a_deflated_dicom_bomb_is_refused_from_its_header(tmp_path, monkeypatch):
    p = make_deflated_dicom(tmp_path / "bomb.dcm", 16000, 16000)
    monkeypatch.setattr(zlib, "decompress", lambda *a, **k: pytest.fail("the whole file was inflated"))
    for fn in (dicom.check_image, dicom.read_image):
        with pytest.raises(dicom.ImageError, match=r"^the image declares 16000 x 16000 pixels x 16 bits "
                                                   r"\(256 megapixels\), above the limit of 100 megapixels"):
            fn(p)


def test_a_small_deflated_dicom_still_reads(tmp_path, dicom_writer):
    from pydicom.uid import DeflatedExplicitVRLittleEndian

    p = tmp_path / "small.dcm"
    dicom_writer(p, np.arange(30 * 40, dtype=np.uint16).reshape(30, 40))
    import pydicom

    ds = pydicom.dcmread(p)
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    ds.save_as(p, enforce_file_format=True)
    dicom.check_image(p)
    img = dicom.read_image(p)
    assert img.shape == (30, 40) and img.max() == 1.0


def test_decoding_workers_get_the_limit(tmp_path):
    from benchmark.data import image_cache as ic

    p = make_png_header(tmp_path / "a.png", 30, 30, full=True)
    rows, block, error = ic._decode_chunk(([str(p)], [0], 8, 1, dicom.DecodeLimits(max_megapixels=0.0001)))
    assert block is None and "above the limit of 0.0001 megapixels" in error
    dicom.set_max_megapixels(None)
    rows, block, error = ic._decode_chunk(([str(p)], [0], 8, 1, dicom.DecodeLimits()))
    assert error is None and block.shape == (1, 8, 8)


def test_validate_refuses_a_dicom_bomb_in_one_line(tiny_dataset, tmp_path):
    ds = tiny_dataset()
    _with_image(ds, "bomb.dcm", lambda p: make_deflated_dicom(p, 16000, 16000))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-m", "benchmark", "validate", str(ds.yaml)], capture_output=True,
                         text=True, env=env, cwd=tmp_path, timeout=120)
    assert out.returncode == 2, out.stdout + out.stderr
    assert "Traceback" not in out.stderr and "Warning" not in out.stderr
    assert (f"  - {ds.manifest}, row 2, column 'path': the image declares 16000 x 16000 pixels x 16 bits "
            "(256 megapixels), above the limit of 100 megapixels") in out.stdout
