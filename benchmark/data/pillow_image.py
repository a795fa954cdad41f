"""PNG, JPEG, TIFF and BMP files through Pillow, bounded by their declared size and memory.

``read_pillow(fh, target)`` gives a 2-D float64 image in [0, 1] (brighter = higher): EXIF
orientation applied, first frame only; 8-bit images divided by 255, 16-bit and float ones
through the percentile window (``grey.percentile_window``).

Bounded before decoding. The file is opened lazily and its header checked: the declared
size against ``max_megapixels`` and the estimated peak memory against ``max_decode_mb``
(``decode_limits``); Pillow's own ``DecompressionBombWarning``/``Error`` become the same
one-line ``ImageError``. For an image that will be resized to ``target`` px, a JPEG is
decoded at a reduced DCT scale (Pillow's ``draft``, 1/2 to 1/8) and any image is box-reduced
(``Image.reduce``, the factor Pillow's resize would use) before it becomes a float array,
so a 100-megapixel PNG costs its decoded buffer plus a small float image, never a
full-resolution float array. 16-bit data, which ``reduce`` does not take, is box-reduced
in NumPy strip by strip (``grey.box_reduce``).
"""

from __future__ import annotations

import struct
import warnings

import numpy as np

from benchmark.data.decode_limits import (CHECK_SIZE, ImageError, check_declared_size, check_decode_memory,
                                          decode_peak_bytes, reduction)
from benchmark.data.grey import box_reduce, percentile_window

_PIL_BITS = {"1": 1, "I;16": 16, "I;16B": 16, "I;16L": 16, "I;16N": 16, "I": 32, "F": 32}
_SIXTEEN = ("I;16", "I;16B", "I;16L", "I;16N")
_BYTES_PER_PX = {"1": 1.25, "L": 1.25, "P": 1.25, **{m: 3 for m in _SIXTEEN}}   # Pillow's buffer, measured; 4.5 for the rest


def _draft_scale(width: int, height: int, target: int | None) -> int:
    """The JPEG DCT scale (1, 2, 4 or 8) Pillow's ``draft`` decodes at, for ``target``."""
    f = reduction(width, height, target)
    return max(s for s in (1, 2, 4, 8) if s <= f)


def _lazy_open(fh):
    """``Image.open`` (header only), without Pillow's own size limit: ``open_pillow`` applies ours."""
    from PIL import Image

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            fh.seek(0)
            return Image.open(fh)
        except Image.DecompressionBombError:
            # Pillow refuses above 2 x its MAX_IMAGE_PIXELS before the size can be read; open
            # again (still lazy: header only) without its limit, so that ours decides
            saved, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
            try:
                fh.seek(0)
                return Image.open(fh)
            finally:
                Image.MAX_IMAGE_PIXELS = saved


def open_pillow(fh, target: int | None = None, *, exif: bool = True):
    """``Image.open`` (lazy) with the declared size and the decoding memory checked first (``exif``: reading
    the EXIF orientation for the estimate; Pillow's ``verify`` must come before that)."""
    im = _lazy_open(fh)
    try:
        w, h = im.size
        check_declared_size(w, h, 1, len(im.getbands()), _PIL_BITS.get(im.mode, 8))
        check_decode_memory(pillow_peak_bytes(im, target, exif=exif), w, h, f"{im.format or 'image'} {im.mode}")
    except BaseException:
        im.close()
        raise
    return im


def pillow_peak_bytes(im, target: int | None, *, exif: bool = True) -> int:
    """Estimated peak memory of ``read_pillow`` for the opened (not yet loaded) ``im``."""
    w, h = im.size
    scale = _draft_scale(w, h, target) if im.format == "JPEG" else 1
    per_px = _BYTES_PER_PX.get(im.mode, 4.5)
    if im.mode in _SIXTEEN and not reduction(w, h, target) > 1:
        per_px += 2                      # the full uint16 array (reduced images are read in strips)
    if im.mode in ("1", "P"):
        per_px += 4                      # converted before reducing
    try:
        rotated = exif and im.getexif().get(0x0112, 1) not in (1, None)
    except Exception:  # noqa: BLE001 - a broken EXIF block: assume the worst
        rotated = True
    if rotated:
        per_px *= 2                      # exif_transpose makes a transposed copy
    return decode_peak_bytes(w // scale, h // scale, decoder_bytes_per_px=per_px, target=target)


def read_pillow(fh, target: int | None = None) -> np.ndarray:
    """Decode the open file ``fh`` (see module doc) to a 2-D float64 image in [0, 1]."""
    from PIL import Image, ImageOps

    try:
        with open_pillow(fh, target) as im, warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            if im.format == "JPEG":
                scale = _draft_scale(*im.size, target)
                if scale > 1:
                    im.draft(im.mode, (im.size[0] // scale, im.size[1] // scale))
            ImageOps.exif_transpose(im, in_place=True)   # (not in place it copies even an upright image)
            im.load()
            if im.mode in ("1", "P"):
                im = im.convert("RGBA" if im.mode == "P" and "transparency" in im.info else "L")
            f = reduction(*im.size, target)
            if im.mode in _SIXTEEN:   # Image.reduce takes no 16-bit data: reduced here, strip by strip
                return percentile_window(box_reduce(im, f).astype(np.float64, copy=False))
            if f > 1:
                im = im.reduce(f)
            if im.mode in ("I", "F"):
                return percentile_window(np.asarray(im, dtype=np.float64))
            return np.asarray(im.convert("L"), dtype=np.float64) / 255.0
    except ImageError:
        raise
    except Exception as exc:  # noqa: BLE001 - Pillow raises many types on bad files
        raise ImageError(f"not a readable image ({_kind(exc)}); the file may be truncated") from None


def verify_pillow(fh) -> None:
    """Cheap structure check without decoding pixels (``check_image``): the header checks of ``open_pillow``,
    then Pillow's ``verify`` on a fresh open (it must come first after opening)."""
    try:
        with open_pillow(fh, CHECK_SIZE, exif=False) as im, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            im.verify()
    except ImageError:
        raise
    except Exception as exc:  # noqa: BLE001 - Pillow raises many types
        raise ImageError(f"not a readable image ({_kind(exc)})") from None


def _kind(exc: BaseException) -> str:
    """What went wrong in words, not a Python class name."""
    name = type(exc).__name__
    if name == "UnidentifiedImageError":
        return "not an image format Pillow knows"
    if isinstance(exc, (EOFError, OSError)) and "truncated" in str(exc).lower():
        return "the data ends early"
    if isinstance(exc, (SyntaxError, ValueError, OSError, EOFError, struct.error)):
        return "its data is malformed"
    return "its data cannot be decoded"
