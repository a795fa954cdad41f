"""Read one image file (DICOM, PNG, JPEG, TIFF, BMP) as a grey float image in [0, 1].

    >>> from benchmark.data.dicom import read_image
    >>> img = read_image("images/0001.dcm")        # doctest: +SKIP
    >>> img.dtype, img.ndim, float(img.min()) >= 0.0, float(img.max()) <= 1.0
    (dtype('float32'), 2, True, True)

The output follows the MONOCHROME2 convention: higher values are brighter (bone is bright
on an X-ray). DICOM pixel data goes through the display pipeline of PS3.3 C.11:

1. decode the first frame (multi-frame files: **only frame 0 is used**; an X-ray series with
   several views should be stored as several files, one image each);
2. colour images (RGB, YBR_*, PALETTE COLOR) become grey with ITU-R 601 luma weights and are
   scaled by their bit depth; no windowing is applied to them;
3. grey images: Modality LUT (Rescale Slope/Intercept or a Modality LUT Sequence, via
   ``pydicom.pixels.apply_modality_lut``), then VOI: a VOI LUT Sequence (``apply_voi``,
   output scaled by the LUT's own range) or Window Center/Width (the first window; LINEAR,
   LINEAR_EXACT or SIGMOID as in C.11.2.1.2, mapped straight to [0, 1]). Without a VOI,
   unsigned data of 8 bits or fewer is scaled by its bit depth and anything else gets a
   robust percentile window (0.5 % to 99.5 %), which ignores a few hot pixels and burned-in
   markers;
4. MONOCHROME1 is inverted (``1 - x``). A Presentation LUT Shape is not applied: for DX/CR
   files 'INVERSE' merely restates MONOCHROME1.

PNG/JPEG/TIFF/BMP files go through Pillow (EXIF orientation applied, first frame only).
8-bit images are display-ready and are divided by 255; 16-bit and float images get the same
percentile window as DICOM files without a VOI.

Problems raise ``ImageError`` (a ``UserError``) whose message says what is wrong but never
names the file: file names and tag values may carry patient identifiers, so the caller adds
the location it knows (a manifest row). ``check_image`` is the cheap version of the same
checks (header only, no decoding) that the loader runs on every file.

Bounded decoding (``decode_limits``). The file is opened once and checked at open time to
lie inside the dataset's folders (``safe_open``). Before any pixel is decoded, the size the
header declares is checked against ``images.max_megapixels``; a compressed frame's own
header (JPEG SOF, JPEG-LS SOF55, JPEG 2000 SIZ) must declare the same size as the DICOM
header (``dicom_header.check_frame``); and the peak memory of decoding is estimated and
checked against ``images.max_decode_mb``. A deflated DICOM is inflated only as far as its
header (``dicom_deflate``). Pillow formats are bounded the same way (``pillow_image``).

``read_image(path, target=S)`` is for an image that will be resized to fit S px: right
after decoding, it is box-reduced by the integer factor Pillow's ``resize(reducing_gap=3)``
would use (``decode_limits.reduction``), so the grey pipeline never runs on a
full-resolution float copy of a large image. Without ``target`` the full image is returned.
``set_max_megapixels`` / ``set_decode_limits`` set the limits of this process
(``image_index`` sets them from the dataset file; decoding workers get them passed along).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np

from benchmark.data.decode_limits import (CHECK_SIZE, DEFAULT_MAX_MEGAPIXELS,  # noqa: F401 - re-exported
                                          DecodeLimits, ImageError, check_declared_size, decode_limits, max_megapixels,
                                          reduction, set_decode_limits, set_max_megapixels)
from benchmark.data.dicom_deflate import deflated_header
from benchmark.data.dicom_header import check_dicom_size, check_frame, check_pixel_module, missing_decoder, number
from benchmark.data.grey import apply_voi_window, box_reduce, percentile_window  # noqa: F401 - re-exported
from benchmark.data.pillow_image import open_pillow, read_pillow, verify_pillow
from benchmark.data.safe_open import open_image

READER_VERSION = "2"  # bump when the pixels produced for the same file change (invalidates caches)

PILLOW_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"}
_PILLOW_MAGIC = (b"\x89PNG", b"\xff\xd8\xff", b"II*\x00", b"MM\x00*", b"BM")


def image_kind(path: str | os.PathLike, fh=None) -> str:
    """'dicom' or 'pillow', from the file's first bytes (then its suffix).

    DICOM files are recognised by the 'DICM' marker at byte 128; files without it (old
    ACR-NEMA style, no suffix) are treated as DICOM unless their suffix names an image format.
    ``fh``: the file already open (read from its start, left at its start).
    """
    if fh is None:
        with open_image(path) as f:
            return image_kind(path, f)
    fh.seek(0)
    head = fh.read(132)
    fh.seek(0)
    if len(head) == 132 and head[128:132] == b"DICM":
        return "dicom"
    if head.startswith(_PILLOW_MAGIC) or Path(path).suffix.lower() in PILLOW_SUFFIXES:
        return "pillow"
    return "dicom"


def read_image(path: str | os.PathLike, *, target: int | None = None, roots=None) -> np.ndarray:
    """Decode ``path`` to a 2-D float32 array in [0, 1], brighter = higher (see module doc).

    ``target``: the size the image will be resized to fit; large images are box-reduced towards it.
    ``roots``: the folders the opened file must lie in (a dataset's ``Cohort.image_roots``; None: any).
    """
    with open_image(path, roots) as fh:
        kind = image_kind(path, fh)
        img = _read_dicom(fh, target) if kind == "dicom" else read_pillow(fh, target)
    img = np.nan_to_num(img.astype(np.float32, copy=False), nan=0.0, posinf=1.0, neginf=0.0)
    np.clip(img, 0.0, 1.0, out=img)
    if img.ndim != 2 or img.size == 0:
        raise ImageError(f"decoded to shape {img.shape}; expected a 2-D image")
    return img


def check_image(path: str | os.PathLike, roots=None) -> None:
    """Cheap checks without decoding pixels; raises ``ImageError`` like ``read_image`` would.

    DICOM: the header parses, there is pixel data, a decoder exists for its transfer syntax,
    a compressed frame declares the header's size, decoding fits the memory budget, and
    uncompressed pixel data is as long as rows x columns x samples x bits says (catches
    truncated files). Other formats: Pillow can identify the file and verify its structure.
    """
    with open_image(path, roots) as fh:
        if image_kind(path, fh) == "pillow":
            verify_pillow(fh)
            return
        size = os.fstat(fh.fileno()).st_size
        deflated = deflated_header(fh)
        if deflated is not None:
            check_frame(deflated, fh, _held(deflated, size, True), CHECK_SIZE)
            return  # header and size checked; the rest only decoding can tell
        fh.seek(0)
        ds = _dcmread(fh, defer_size=1024)
        check_pixel_module(ds)
        check_dicom_size(ds)
        check_frame(ds, fh, size, CHECK_SIZE)
        _check_length(ds, size)


def _check_length(ds, file_size: int) -> None:
    """Uncompressed pixel data at least as long as the header says (a truncated file fails here)."""
    raw = ds.get_item("PixelData", keep_deferred=True)
    if raw is None:
        return  # float pixel data: nothing cheap to check
    ts = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    if ts is not None and (ts.is_encapsulated or ts.is_deflated):
        return  # encapsulated or deflated: only decoding can tell
    length = getattr(raw, "length", None)
    tell = getattr(raw, "value_tell", None)
    if length is None or tell is None or length == 0xFFFFFFFF:
        return
    from pydicom.pixels.utils import get_expected_length

    try:
        expected = int(get_expected_length(ds))
    except Exception:  # noqa: BLE001 - inconsistent headers; decoding will tell
        return
    available = min(length, max(0, file_size - tell))
    if available < expected:
        raise ImageError(
            f"truncated DICOM: pixel data has {available} bytes, {expected} expected; "
            "export the image again"
        )


# ---------------------------------------------------------------------------- DICOM

def _dcmread(fh, **kwargs):
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pydicom warns about harmless header quirks
            try:
                fh.seek(0)
                return pydicom.dcmread(fh, **kwargs)
            except InvalidDicomError:
                fh.seek(0)
                return pydicom.dcmread(fh, force=True, **kwargs)
    except Exception as exc:  # noqa: BLE001 - pydicom raises many types on bad files
        raise ImageError(f"unreadable DICOM ({_short(exc)}); the file may be truncated or not DICOM") from None


def _held(ds, file_size: int, deflated: bool) -> int:
    """Bytes pydicom holds while decoding: the file, or for a deflated one its inflated pixel data too."""
    if not deflated:
        return file_size
    frames, spp = number(ds, "NumberOfFrames", 1), number(ds, "SamplesPerPixel", 1)
    bits = number(ds, "BitsAllocated", 16)
    return file_size + number(ds, "Rows", 0) * number(ds, "Columns", 0) * frames * spp * max(1, bits // 8)


def _read_dicom(fh, target: int | None) -> np.ndarray:
    from pydicom.pixels import pixel_array

    size = os.fstat(fh.fileno()).st_size
    deflated = deflated_header(fh)  # raises before pydicom inflates a too-large deflated file
    head = deflated if deflated is not None else _dcmread(fh, defer_size=1024)
    if deflated is None:
        check_pixel_module(head)
        check_dicom_size(head)
    check_frame(head, fh, _held(head, size, deflated is not None), target)
    ds = _dcmread(fh)
    check_pixel_module(ds)
    check_dicom_size(ds)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. "excess padding removed"
            arr = np.asarray(pixel_array(ds, index=0))
    except RuntimeError as exc:
        if "missing dependencies" in str(exc):
            raise missing_decoder(ds.file_meta.get("TransferSyntaxUID")) from None
        raise ImageError(f"DICOM pixel data cannot be decoded ({_short(exc)})") from None
    except Exception as exc:  # noqa: BLE001 - truncated or inconsistent files raise ValueError & co
        raise ImageError(f"DICOM pixel data cannot be decoded ({_short(exc)}); the file may be truncated") from None
    f = reduction(number(ds, "Columns", 0), number(ds, "Rows", 0), target)
    if f > 1 and arr.ndim in (2, 3):
        reduced = box_reduce(arr, f)
        arr = np.rint(reduced).astype(arr.dtype) if np.issubdtype(arr.dtype, np.integer) else reduced
    return _dicom_to_grey(arr, ds)


def _short(exc: Exception) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    text = " ".join(lines[:2]) if lines else "its data is malformed"  # pydicom: a summary, then each plugin's error
    return text[:160]


def _dicom_to_grey(arr: np.ndarray, ds) -> np.ndarray:
    from pydicom.pixels import apply_color_lut, apply_modality_lut

    pi = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip().upper()
    bits = int(ds.get("BitsStored", ds.get("BitsAllocated", 8)) or 8)
    if pi == "PALETTE COLOR":
        arr = apply_color_lut(arr, ds)
        bits = 16 if arr.dtype == np.uint16 else 8
    if arr.ndim == 3:  # colour (RGB after pydicom's YBR conversion), possibly with alpha
        if arr.shape[-1] < 3:
            raise ImageError(f"DICOM with {arr.shape[-1]} samples per pixel is not supported")
        rgb = arr[..., :3].astype(np.float64)
        grey = rgb @ np.array([0.299, 0.587, 0.114])
        return grey / float(2 ** min(bits, 16) - 1)
    if arr.ndim != 2:
        raise ImageError(f"DICOM pixel data has shape {arr.shape}; expected a 2-D image")

    x = apply_modality_lut(arr, ds)
    x = apply_voi_window(x, ds, bits)
    if pi == "MONOCHROME1":
        x = 1.0 - x
    return x
