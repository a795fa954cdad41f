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

Bounded decoding. Before any pixel is decoded, the size the file declares is checked
against a limit (``images.max_megapixels`` in the dataset file, default
``DEFAULT_MAX_MEGAPIXELS``): rows x columns x frames x samples per pixel, counted double for
32-bit data (x bits/16 above 16 bits). DICOM headers are read without the pixel data; a
deflated DICOM is inflated only as far as its header (and its inflated size is capped), so a
small file that declares a huge image costs kilobytes, not gigabytes. Pillow images are
opened lazily and their size checked before ``load()``; Pillow's own
``DecompressionBombWarning``/``Error`` become the same one-line ``ImageError``. Pillow
formats only ever decode their first frame, so their frames are not counted.
``set_max_megapixels`` sets the limit of this process (``image_index`` sets it from the
dataset file; decoding workers get it passed along).
"""

from __future__ import annotations

import io
import os
import warnings
import zlib
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


DEFAULT_MAX_MEGAPIXELS = 100.0
_HEADER_CAP = 64 << 20     # a deflated DICOM header (all but the pixel data) may inflate to this much
_INFLATE_SLACK = 16 << 20  # inflated bytes allowed beyond the declared pixel data (other elements)
_max_megapixels = DEFAULT_MAX_MEGAPIXELS


class ImageError(UserError):
    """An image that cannot be used; the message names the problem, not the file."""


def set_max_megapixels(value: float | None) -> None:
    """The largest image (declared size, see module doc) this process decodes; None: the default."""
    global _max_megapixels
    _max_megapixels = DEFAULT_MAX_MEGAPIXELS if value is None else float(value)


def max_megapixels() -> float:
    """The limit ``set_max_megapixels`` set (``DEFAULT_MAX_MEGAPIXELS`` unless changed)."""
    return _max_megapixels


def check_declared_size(width: int, height: int, frames: int = 1, samples: int = 1, bits: int = 8,
                        limit: float | None = None) -> None:
    """Raise ``ImageError`` when the declared size is above ``limit`` megapixels (module doc)."""
    limit = _max_megapixels if limit is None else float(limit)
    mp = width * height * max(frames, 1) * max(samples, 1) * max(1.0, bits / 16) / 1e6
    if mp <= limit:
        return
    parts = [f"{width} x {height} pixels"]
    if frames > 1:
        parts.append(f"{frames} frames")
    if samples > 1:
        parts.append(f"{samples} samples per pixel")
    parts.append(f"{bits} bits")
    raise ImageError(
        f"the image declares {' x '.join(parts)} ({mp:,.0f} megapixels), above the limit of {limit:g} megapixels; "
        "it was not decoded. Export it smaller, or raise images.max_megapixels in the dataset file if it is genuine"
    )


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
        try:
            with _open_pillow(path) as im:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    im.verify()
        except ImageError:
            raise
        except Exception as exc:  # noqa: BLE001 - Pillow raises many types
            raise ImageError(f"not a readable image ({type(exc).__name__})") from None
        return
    if _deflated_header(path) is not None:
        return  # header and size checked; the rest only decoding can tell
    ds = _dcmread(path, defer_size=1024)
    _check_pixel_module(ds)
    _check_dicom_size(ds)
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


def _check_dicom_size(ds) -> None:
    """The declared size of ``ds`` against the limit, before any pixel is decoded."""
    def num(key, default):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # pydicom warns about invalid IS values
                value = ds.get(key, default)
                return int(value) if value not in (None, "") else default
        except (TypeError, ValueError):
            return default

    check_declared_size(num("Columns", 0), num("Rows", 0), num("NumberOfFrames", 1),
                        num("SamplesPerPixel", 1), num("BitsAllocated", 16))


def _deflated_header(path):
    """For a Deflated Explicit VR Little Endian file: its header (without pixel data), checked
    against the size limit while inflating as little as possible; None for any other file.

    pydicom inflates the whole file into memory before reading it (a 0.5 MB file can declare
    and inflate to 0.5 GB), so the header is inflated here in steps, and the rest of the data
    is only counted (capped at the declared pixel data plus ``_INFLATE_SLACK``).
    """
    from pydicom.filereader import _read_file_meta_info, read_dataset, read_preamble
    from pydicom.uid import DeflatedExplicitVRLittleEndian

    try:
        with open(path, "rb") as fp:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                if read_preamble(fp, True) is None:
                    return None
                meta = _read_file_meta_info(fp)
            if meta.get("TransferSyntaxUID") != DeflatedExplicitVRLittleEndian:
                return None
            inflater = zlib.decompressobj(-zlib.MAX_WBITS)
            buf = bytearray()
            pending = b""
            done = False

            def more(n: int) -> None:  # inflate up to n more bytes into buf
                nonlocal pending, done
                want = len(buf) + n
                while len(buf) < want and not done:
                    if not pending:
                        pending = fp.read(1 << 16)
                        if not pending:
                            buf.extend(inflater.flush())
                            done = True
                            break
                    buf.extend(inflater.decompress(pending, want - len(buf)))
                    pending = inflater.unconsumed_tail
                    if inflater.eof:
                        done = True

            step = 1 << 16
            while True:
                more(step - len(buf))
                pixel = []

                def stop(tag, vr, length):
                    if int(tag) in (0x7FE00010, 0x7FE00009, 0x7FE00008):
                        pixel.append(length)
                        return True
                    return False

                try:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        ds = read_dataset(io.BytesIO(bytes(buf)), False, True, stop_when=stop)
                except Exception:  # noqa: BLE001 - a header cut short; inflate more (or give up below)
                    ds = None
                if ds is not None and (pixel or done):
                    break
                if done:
                    raise ImageError("unreadable deflated DICOM; the file may be truncated or not DICOM")
                if len(buf) >= _HEADER_CAP:
                    raise ImageError(f"deflated DICOM whose header inflates to more than {_HEADER_CAP >> 20} MB; "
                                     "export the image again without deflate compression")
                step = min(len(buf) * 4, _HEADER_CAP)
            ds.file_meta = meta
            _check_pixel_module(ds, pixels_seen=bool(pixel))
            _check_dicom_size(ds)
            try:
                from pydicom.pixels.utils import get_expected_length

                expected = int(get_expected_length(ds))
            except Exception:  # noqa: BLE001 - inconsistent header; decoding will tell
                expected = 0
            cap = len(buf) + expected + _INFLATE_SLACK
            total = len(buf)
            del buf[:]
            while not done:
                n = len(buf)
                more(1 << 20)
                total += len(buf) - n
                del buf[:]
                if total > cap:
                    raise ImageError(f"deflated DICOM that inflates to more than {cap >> 20} MB although its header "
                                     "declares a smaller image; export the image again")
            return ds
    except ImageError:
        raise
    except (OSError, zlib.error, ValueError, EOFError, KeyError, TypeError) as exc:
        raise ImageError(f"unreadable DICOM ({type(exc).__name__}); the file may be truncated or not DICOM") from None


def _check_pixel_module(ds, pixels_seen: bool = False) -> None:
    if not pixels_seen and not any(k in ds for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
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

    _deflated_header(path)  # raises before pydicom inflates a too-large deflated file
    ds = _dcmread(path)
    _check_pixel_module(ds)
    _check_dicom_size(ds)
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

_PIL_BITS = {"1": 1, "I;16": 16, "I;16B": 16, "I;16L": 16, "I;16N": 16, "I": 32, "F": 32}


def _open_pillow(path):
    """``Image.open`` (lazy) with the declared size checked first; Pillow's bomb checks as ``ImageError``."""
    from PIL import Image

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            im = Image.open(path)
        except Image.DecompressionBombError:
            # Pillow refuses above 2 x its MAX_IMAGE_PIXELS before the size can be read; open
            # again (still lazy: header only) without its limit, so that ours decides
            saved, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
            try:
                im = Image.open(path)
            finally:
                Image.MAX_IMAGE_PIXELS = saved
    try:
        w, h = im.size
        check_declared_size(w, h, 1, len(im.getbands()), _PIL_BITS.get(im.mode, 8))
    except BaseException:
        im.close()
        raise
    return im


def _read_pillow(path) -> np.ndarray:
    from PIL import Image, ImageOps

    try:
        with _open_pillow(path) as im, warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
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
