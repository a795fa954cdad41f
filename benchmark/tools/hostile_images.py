"""Hostile images and registers for ``hostile_corpus``: one copy of the cohort per attack.

Each case is the synthetic cohort with one thing changed: the first manifest row's image
replaced (a compressed DICOM whose stream declares another size than its header, a
decompression bomb, odd header values, a link out of the folder), or a register column
added that holds an identifier. ``validate`` must refuse each with one line per problem
(or, for a legal large image, decode it within its memory budget).
"""

from __future__ import annotations

import io
import os
import shutil
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd


@dataclass
class Case:
    name: str
    kind: str                 # bundle: load_model; predict: predict the cohort; validate: validate a dataset
    path: Path                # the bundle folder or the dataset file
    what: str                 # the attack, in one line
    env: dict = field(default_factory=dict)
    marker: Path | None = None  # created only if the attack ran code
    trust: Path | None = None   # predict/load with --trust this key


def _copy(data_yaml: Path, dst: Path) -> Path:
    shutil.rmtree(dst, ignore_errors=True)
    shutil.copytree(data_yaml.parent, dst, symlinks=True)
    return dst / data_yaml.name


def _first_image(yaml: Path, rel_name: str, content: bytes | None = None) -> Path:
    """Point the first manifest row at ``images/<rel_name>`` (written with ``content``); its path."""
    man = pd.read_csv(yaml.parent / "images.csv")
    man.loc[0, "path"] = rel_name
    man.to_csv(yaml.parent / "images.csv", index=False)
    path = yaml.parent / "images" / rel_name
    if content is not None:
        path.write_bytes(content)
    return path


def _template(data_yaml: Path):
    import pydicom

    man = pd.read_csv(data_yaml.parent / "images.csv")
    return pydicom.dcmread(data_yaml.parent / "images" / man.loc[0, "path"])


def _dicom(data_yaml: Path, *, rows: int | None = None, cols: int | None = None, ts: str | None = None,
           frames: list[bytes] | None = None, **elements) -> bytes:
    """The cohort's first DICOM with other header values and (``frames``) encapsulated pixel data."""
    from pydicom.encaps import encapsulate
    from pydicom.filebase import DicomBytesIO

    ds = _template(data_yaml)
    if rows:
        ds.Rows = rows
    if cols:
        ds.Columns = cols
    for key, value in elements.items():
        setattr(ds, key, value)
    if ts is not None:
        ds.file_meta.TransferSyntaxUID = ts
    if frames is not None:
        ds.PixelData = encapsulate(frames)
        ds["PixelData"].VR = "OB"
        ds["PixelData"].is_undefined_length = True
    buf = DicomBytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def _patch_siz(stream: bytes, width: int, height: int) -> bytes:
    b = bytearray(stream)
    at = b.find(b"\xff\x4f\xff\x51") + 4
    v = list(struct.unpack(">HHIIIIIIIIH", b[at:at + 38]))
    v[2], v[3], v[6], v[7] = width, height, width, height
    b[at:at + 38] = struct.pack(">HHIIIIIIIIH", *v)
    return bytes(b)


def _patch_sof(stream: bytes, width: int, height: int, marker: bytes) -> bytes:
    b = bytearray(stream)
    at = b.find(marker) + 5
    b[at:at + 4] = struct.pack(">HH", height, width)
    return bytes(b)


def _j2k(width: int, height: int, dtype=np.uint8) -> bytes:
    import openjpeg

    return _patch_siz(openjpeg.encode(np.zeros((32, 32), dtype), codec_format=0), width, height)


def _jpeg(width: int, height: int) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(buf, "JPEG")
    return _patch_sof(buf.getvalue(), width, height, b"\xff\xc0")


def _jpegls(width: int, height: int) -> bytes:
    from pydicom.data import get_testdata_file
    from pydicom.encaps import generate_frames
    import pydicom

    ds = pydicom.dcmread(get_testdata_file("MR_small_jpeg_ls_lossless.dcm"))
    frame = next(generate_frames(ds.PixelData, number_of_frames=1))
    return _patch_sof(frame, width, height, b"\xff\xf7")


def _png(width: int, height: int, bits: int = 8) -> bytes:
    """A real (all-black) PNG: rows of zeros compress to almost nothing."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    comp = zlib.compressobj(9)
    row = b"\0" * (width * bits // 8 + 1)
    idat = b"".join(comp.compress(row) for _ in range(height)) + comp.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, bits, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def _pillow(width: int, height: int, fmt: str, **kw) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("L", (width, height)).save(buf, fmt, **kw)
    return buf.getvalue()


def image_cases(root: Path, data_yaml: Path) -> list:
    from pydicom.uid import JPEG2000Lossless, JPEGBaseline8Bit, JPEGLSLossless

    at = root / "images"
    cases = []

    def add(name: str, what: str, rel: str, content) -> None:
        yaml = _copy(data_yaml, at / name)
        if callable(content):
            content(yaml)
        else:
            _first_image(yaml, rel, content)
        cases.append(Case(name, "validate", yaml, what))

    def lie(stream: bytes, ts: str, **kw) -> bytes:
        return _dicom(data_yaml, ts=ts, frames=[stream], **kw)

    add("j2k-stream-12000", "a 32 x 32 DICOM whose JPEG 2000 stream declares 12000 x 12000 (144 bytes)", "j.dcm",
        lie(_j2k(12000, 12000), JPEG2000Lossless, BitsAllocated=8, BitsStored=8, HighBit=7))
    add("j2k-stream-16000-16bit", "a 32 x 32 DICOM whose 16-bit JPEG 2000 stream declares 16000 x 16000", "j.dcm",
        lie(_j2k(16000, 16000, np.uint16), JPEG2000Lossless))
    add("jpeg-stream-12000", "a 32 x 32 DICOM whose baseline JPEG declares 12000 x 12000", "j.dcm",
        lie(_jpeg(12000, 12000), JPEGBaseline8Bit, BitsAllocated=8, BitsStored=8, HighBit=7))
    add("jpegls-stream-12000", "a DICOM whose JPEG-LS stream declares 12000 x 12000", "j.dcm",
        lie(_jpegls(12000, 12000), JPEGLSLossless, Rows=64, Columns=64))
    add("j2k-honest-9000", "a DICOM and its JPEG 2000 stream both declaring 9000 x 9000 (legal: decoded)", "j.dcm",
        lie(_j2k(9000, 9000), JPEG2000Lossless, BitsAllocated=8, BitsStored=8, HighBit=7, Rows=9000, Columns=9000))
    add("encapsulated-no-fragment", "encapsulated pixel data without a fragment", "j.dcm",
        _dicom(data_yaml, ts=JPEG2000Lossless, frames=[]))
    add("dicom-bits-allocated-12", "BitsAllocated 12", "d.dcm", _dicom(data_yaml, BitsAllocated=12))
    add("dicom-samples-7", "SamplesPerPixel 7", "d.dcm", _dicom(data_yaml, SamplesPerPixel=7))
    add("dicom-frames-0", "NumberOfFrames 0", "d.dcm", _dicom(data_yaml, NumberOfFrames=0))
    add("dicom-frames-100000", "NumberOfFrames 100000 over 32 x 32 pixels of data", "d.dcm",
        _dicom(data_yaml, NumberOfFrames=100000))
    add("dicom-truncated", "uncompressed pixel data cut short", "d.dcm", _dicom(data_yaml)[:-300])
    add("png-9999-8bit", "a legal 9999 x 9999 8-bit PNG (decoded within the budget)", "p.png", _png(9999, 9999))
    add("png-9999-16bit", "a legal 9999 x 9999 16-bit PNG (decoded within the budget)", "p.png", _png(9999, 9999, 16))
    add("png-20000", "a PNG declaring 20000 x 20000", "p.png", _png(20000, 20000)[:4000])
    add("tiff-9000", "a deflate-compressed 9000 x 9000 TIFF (decoded within the budget)", "t.tif",
        _pillow(9000, 9000, "TIFF", compression="tiff_deflate"))
    add("jpeg-9000", "a 9000 x 9000 JPEG (decoded at a reduced scale)", "j.jpg", _pillow(9000, 9000, "JPEG"))
    add("png-garbage", "a .png file of random bytes", "g.png", os.urandom(2000))

    def link(yaml: Path) -> None:
        path = _first_image(yaml, "link.dcm")
        path.symlink_to("/etc/passwd")

    add("image-link-outside", "an image that is a symbolic link to /etc/passwd", "", link)
    return cases


def register_cases(root: Path, data_yaml: Path) -> list:
    at = root / "registers"
    rng = np.random.default_rng(0)
    cases = []

    def add(name: str, what: str, column: str, values, categorical: bool = False) -> None:
        yaml = _copy(data_yaml, at / name)
        reg = pd.read_csv(yaml.parent / "register.csv")
        reg[column] = values(len(reg))
        reg.to_csv(yaml.parent / "register.csv", index=False)
        if categorical:
            yaml.write_text(yaml.read_text().replace("categorical:\n", f"categorical:\n- {column}\n", 1))
        cases.append(Case(name, "validate", yaml, what))

    add("dob-as-number", "a date of birth stored as a number (f_dat = 19340117)", "f_dat",
        lambda n: 19_000_000 + rng.integers(20, 60, n) * 10_000 + rng.integers(1, 13, n) * 100 + rng.integers(1, 29, n))
    add("dob-yymmdd", "a date of birth stored as yymmdd", "fdat6",
        lambda n: rng.integers(20, 60, n) * 10_000 + rng.integers(1, 13, n) * 100 + rng.integers(1, 29, n))
    add("phone-as-number", "phone numbers stored as numbers (leading 0 lost)", "contact",
        lambda n: 700_000_000 + rng.integers(0, 9_999_999, n))
    add("notes-naming-relatives", "a categorical column of four repeated notes naming relatives", "note",
        lambda n: rng.choice(["Daughter Anna visits weekly", "lives with son Erik", "Wife Karin Berg is contact",
                              "alone"], n), categorical=True)
    return cases
