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
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np

from benchmark.errors import UserError

READER_VERSION = "1"  # bump when the pixels produced for the same file change (invalidates caches)

PILLOW_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"}
_PILLOW_MAGIC = (b"\x89PNG", b"\xff\xd8\xff", b"II*\x00", b"MM\x00*", b"BM")
_PERCENTILES = (0.5, 99.5)

# Transfer syntax keyword prefix -> what to install when pydicom has no decoder for it.
_DECODER_PACKAGES = {
    "JPEG2000": "pylibjpeg pylibjpeg-openjpeg",
    "HTJ2K": "pylibjpeg pylibjpeg-openjpeg",
    "JPEGLS": "pylibjpeg pylibjpeg-libjpeg",
    "JPEG": "pylibjpeg pylibjpeg-libjpeg",
    "RLE": "pylibjpeg pylibjpeg-rle",
}


class ImageError(UserError):
    """An image that cannot be used; the message names the problem, not the file."""


def image_kind(path: str | os.PathLike) -> str:
    """'dicom' or 'pillow', from the file's first bytes (then its suffix).

    DICOM files are recognised by the 'DICM' marker at byte 128; files without it (old
    ACR-NEMA style, no suffix) are treated as DICOM unless their suffix names an image format.
    """
    with open(path, "rb") as f:
        head = f.read(132)
    if len(head) == 132 and head[128:132] == b"DICM":
        return "dicom"
    if head.startswith(_PILLOW_MAGIC) or Path(path).suffix.lower() in PILLOW_SUFFIXES:
        return "pillow"
    return "dicom"


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Decode ``path`` to a 2-D float32 array in [0, 1], brighter = higher (see module doc)."""
    try:
        kind = image_kind(path)
    except OSError as exc:
        raise ImageError(f"cannot open the file ({exc.strerror or type(exc).__name__})") from None
    img = _read_dicom(path) if kind == "dicom" else _read_pillow(path)
    img = np.nan_to_num(img.astype(np.float32, copy=False), nan=0.0, posinf=1.0, neginf=0.0)
    np.clip(img, 0.0, 1.0, out=img)
    if img.ndim != 2 or img.size == 0:
        raise ImageError(f"decoded to shape {img.shape}; expected a 2-D image")
    return img


def check_image(path: str | os.PathLike) -> None:
    """Cheap checks without decoding pixels; raises ``ImageError`` like ``read_image`` would.

    DICOM: the header parses, there is pixel data, a decoder exists for its transfer syntax,
    and uncompressed pixel data is as long as rows x columns x samples x bits says (catches
    truncated files). Other formats: Pillow can identify the file and verify its structure.
    """
    try:
        kind = image_kind(path)
    except OSError as exc:
        raise ImageError(f"cannot open the file ({exc.strerror or type(exc).__name__})") from None
    if kind == "pillow":
        from PIL import Image

        try:
            with Image.open(path) as im:
                im.verify()
        except Exception as exc:  # noqa: BLE001 - Pillow raises many types
            raise ImageError(f"not a readable image ({type(exc).__name__})") from None
        return
    ds = _dcmread(path, defer_size=1024)
    _check_pixel_module(ds)
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
    available = min(length, max(0, os.path.getsize(path) - tell))
    if available < expected:
        raise ImageError(
            f"truncated DICOM: pixel data has {available} bytes, {expected} expected; "
            "export the image again"
        )


# ---------------------------------------------------------------------------- DICOM

def _dcmread(path, **kwargs):
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pydicom warns about harmless header quirks
            try:
                return pydicom.dcmread(path, **kwargs)
            except InvalidDicomError:
                return pydicom.dcmread(path, force=True, **kwargs)
    except Exception as exc:  # noqa: BLE001 - pydicom raises many types on bad files
        raise ImageError(f"unreadable DICOM ({type(exc).__name__}); the file may be truncated or not DICOM") from None


def _check_pixel_module(ds) -> None:
    if not any(k in ds for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        raise ImageError("DICOM without pixel data: the file is truncated, or it is not an image (a report, plan or structure set)")
    for key in ("Rows", "Columns", "BitsAllocated", "PhotometricInterpretation"):
        if key not in ds:
            raise ImageError(f"DICOM without the {key} element; it cannot be decoded")
    ts = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    if ts is None:
        return  # pydicom guesses the encoding of files without meta information
    from pydicom.pixels.decoders.base import get_decoder

    try:
        decoder = get_decoder(ts)
    except NotImplementedError:
        raise ImageError(f"DICOM transfer syntax {ts} is not supported; convert the image to an uncompressed DICOM or PNG") from None
    if not decoder.is_available:
        raise _missing_decoder(ts)


def _missing_decoder(ts) -> ImageError:
    keyword = getattr(ts, "keyword", "") or ""
    pkgs = next((p for prefix, p in _DECODER_PACKAGES.items() if keyword.startswith(prefix)),
                "pylibjpeg pylibjpeg-libjpeg pylibjpeg-openjpeg")
    return ImageError(
        f"compressed DICOM ({getattr(ts, 'name', ts)}) and no decoder is installed; "
        f"run `pip install {pkgs}` (or install the project with its `dicom` extra)"
    )


def _read_dicom(path) -> np.ndarray:
    from pydicom.pixels import pixel_array

    ds = _dcmread(path)
    _check_pixel_module(ds)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. "excess padding removed"
            arr = pixel_array(ds, index=0)
    except RuntimeError as exc:
        if "missing dependencies" in str(exc):
            raise _missing_decoder(ds.file_meta.get("TransferSyntaxUID")) from None
        raise ImageError(f"DICOM pixel data cannot be decoded ({_short(exc)})") from None
    except Exception as exc:  # noqa: BLE001 - truncated or inconsistent files raise ValueError & co
        raise ImageError(f"DICOM pixel data cannot be decoded ({_short(exc)}); the file may be truncated") from None
    return _dicom_to_grey(np.asarray(arr), ds)


def _short(exc: Exception) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    text = " ".join(lines[:2]) if lines else type(exc).__name__  # pydicom: a summary, then each plugin's error
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
    x = _apply_voi(x, ds, bits)
    if pi == "MONOCHROME1":
        x = 1.0 - x
    return x


def _apply_voi(x: np.ndarray, ds, bits: int) -> np.ndarray:
    from pydicom.pixels import apply_voi

    seq = ds.get("VOILUTSequence")
    if seq and seq[0].get("LUTDescriptor") is not None and seq[0].get("LUTData") is not None:
        xi = np.rint(x).astype(np.int64) if not np.issubdtype(x.dtype, np.integer) else x
        out = apply_voi(xi, ds, 0).astype(np.float64)
        n_entries, first_map = int(seq[0].LUTDescriptor[0]) or 2**16, int(seq[0].LUTDescriptor[1])
        lut = apply_voi(np.arange(first_map, first_map + n_entries, dtype=np.int64), ds, 0)
        lo, hi = float(np.min(lut)), float(np.max(lut))
        return (out - lo) / (hi - lo) if hi > lo else np.zeros_like(out)
    window = _first_window(ds)
    if window is not None:
        return _window(x.astype(np.float64), *window, str(ds.get("VOILUTFunction", "LINEAR")).strip().upper())
    rescaled = ds.get("ModalityLUTSequence") or (
        "RescaleSlope" in ds and (float(ds.RescaleSlope), float(ds.get("RescaleIntercept", 0))) != (1.0, 0.0)
    )
    if int(ds.get("PixelRepresentation", 0)) == 0 and bits <= 8 and not rescaled and np.issubdtype(x.dtype, np.integer):
        return x.astype(np.float64) / float(2**bits - 1)
    return percentile_window(x)


def _first_window(ds) -> tuple[float, float] | None:
    c, w = _first_value(ds.get("WindowCenter")), _first_value(ds.get("WindowWidth"))
    if c is None or w is None or not (np.isfinite(c) and np.isfinite(w)) or w <= 0:
        return None
    return c, w


def _first_value(value) -> float | None:
    """The first value of a DS element that may hold one value or several."""
    if value is None:
        return None
    try:
        if isinstance(value, (str, bytes, float, int)):
            return float(value)
        return float(value[0]) if len(value) else None
    except (TypeError, ValueError, IndexError):
        return None


def _window(x: np.ndarray, center: float, width: float, function: str) -> np.ndarray:
    """VOI windowing of PS3.3 C.11.2.1.2/3 with output range [0, 1]."""
    if function == "SIGMOID":
        return 1.0 / (1.0 + np.exp(-4.0 * (x - center) / width))
    if function == "LINEAR_EXACT":
        return np.clip((x - center) / width + 0.5, 0.0, 1.0)
    c, w = center - 0.5, width - 1.0  # LINEAR (the default)
    if w <= 0:
        return (x > c).astype(np.float64)
    return np.clip((x - c) / w + 0.5, 0.0, 1.0)


def percentile_window(x: np.ndarray) -> np.ndarray:
    """Map the 0.5th..99.5th percentile of ``x`` to [0, 1] (min-max for tiny images)."""
    x = np.asarray(x, dtype=np.float64)
    finite = x[np.isfinite(x)]
    if finite.size == 0:
        return np.zeros_like(x)
    lo, hi = np.percentile(finite, _PERCENTILES) if finite.size >= 400 else (finite.min(), finite.max())
    if hi <= lo:
        lo, hi = float(finite.min()), float(finite.max())
    if hi <= lo:
        return np.zeros_like(x)
    return np.clip((x - lo) / (hi - lo), 0.0, 1.0)


# ---------------------------------------------------------------------------- Pillow

def _read_pillow(path) -> np.ndarray:
    from PIL import Image, ImageOps

    try:
        with Image.open(path) as im:
            im = ImageOps.exif_transpose(im)
            im.load()
            mode = im.mode
            if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
                return percentile_window(np.asarray(im, dtype=np.float64))
            return np.asarray(im.convert("L"), dtype=np.float64) / 255.0
    except ImageError:
        raise
    except Exception as exc:  # noqa: BLE001 - Pillow raises many types on bad files
        raise ImageError(f"not a readable image ({type(exc).__name__}); the file may be truncated") from None
