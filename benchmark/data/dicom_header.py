"""What a DICOM header must say before its pixels are decoded, and what decoding it will cost.

    check_pixel_module(ds)          # the elements decoding needs, with values that make sense
    check_dicom_size(ds)            # rows x columns x frames x samples x bits against max_megapixels
    check_frame(ds, fh, file_size, target)   # the compressed stream's own size = the header's; peak memory

``check_frame`` reads the first fragment of an encapsulated frame (``codestream``) and refuses
a JPEG / JPEG-LS / JPEG 2000 stream whose declared size or component count differs from
Rows, Columns and SamplesPerPixel, then estimates the peak memory of decoding frame 0
(the file held in memory, the decoder's buffers, the grey pipeline after box reduction)
and checks it against ``max_decode_mb``.
"""

from __future__ import annotations

import warnings

from benchmark.data.codestream import first_fragment, frame_header
from benchmark.data.decode_limits import ImageError, check_declared_size, check_decode_memory, decode_peak_bytes

# Transfer syntax keyword prefix -> what to install when pydicom has no decoder for it.
_DECODER_PACKAGES = {
    "JPEG2000": "pylibjpeg pylibjpeg-openjpeg",
    "HTJ2K": "pylibjpeg pylibjpeg-openjpeg",
    "JPEGLS": "pylibjpeg pylibjpeg-libjpeg",
    "JPEG": "pylibjpeg pylibjpeg-libjpeg",
    "RLE": "pylibjpeg pylibjpeg-rle",
}
_BITS_ALLOCATED = (1, 8, 16, 32, 64)


def number(ds, key: str, default: int) -> int:
    """An integer element of ``ds`` (its first value), or ``default`` when absent or not a number."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pydicom warns about invalid IS values
            value = ds.get(key, default)
            if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
                value = value[0] if len(value) else default
            return int(value) if value not in (None, "") else default
    except (TypeError, ValueError, IndexError):
        return default


def check_dicom_size(ds) -> None:
    """The declared size of ``ds`` against the limit, before any pixel is decoded."""
    check_declared_size(number(ds, "Columns", 0), number(ds, "Rows", 0), number(ds, "NumberOfFrames", 1),
                        number(ds, "SamplesPerPixel", 1), number(ds, "BitsAllocated", 16))


def check_pixel_module(ds, pixels_seen: bool = False) -> None:
    """The elements decoding needs are there, with values decoders accept; a decoder exists for the transfer syntax."""
    if not pixels_seen and not any(k in ds for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        raise ImageError("DICOM without pixel data: the file is truncated, or it is not an image (a report, plan or structure set)")
    for key in ("Rows", "Columns", "BitsAllocated", "PhotometricInterpretation"):
        if key not in ds:
            raise ImageError(f"DICOM without the {key} element; it cannot be decoded")
    rows, cols = number(ds, "Rows", 0), number(ds, "Columns", 0)
    bits, stored = number(ds, "BitsAllocated", 0), number(ds, "BitsStored", number(ds, "BitsAllocated", 0))
    spp, frames = number(ds, "SamplesPerPixel", 1), number(ds, "NumberOfFrames", 1)
    if rows < 1 or cols < 1:
        raise ImageError(f"DICOM declaring {rows} rows and {cols} columns; it cannot be decoded")
    if bits not in _BITS_ALLOCATED or not 1 <= stored <= bits:
        raise ImageError(f"DICOM with BitsAllocated {bits} and BitsStored {stored}; it cannot be decoded (export it "
                         "again as 8 or 16 bits)")
    if spp not in (1, 3, 4):
        raise ImageError(f"DICOM with {spp} samples per pixel; 1 (grey) or 3 (colour) can be read")
    if frames < 1:
        raise ImageError(f"DICOM declaring {frames} frames; it cannot be decoded")
    ts = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    if ts is None:
        return  # pydicom guesses the encoding of files without meta information
    from pydicom.pixels.decoders.base import get_decoder

    try:
        decoder = get_decoder(ts)
    except NotImplementedError:
        raise ImageError(f"DICOM transfer syntax {ts} is not supported; convert the image to an uncompressed DICOM or PNG") from None
    if not decoder.is_available:
        raise missing_decoder(ts)


def missing_decoder(ts) -> ImageError:
    keyword = getattr(ts, "keyword", "") or ""
    pkgs = next((p for prefix, p in _DECODER_PACKAGES.items() if keyword.startswith(prefix)),
                "pylibjpeg pylibjpeg-libjpeg pylibjpeg-openjpeg")
    return ImageError(
        f"compressed DICOM ({getattr(ts, 'name', ts)}) and no decoder is installed; "
        f"run `pip install {pkgs}` (or install the project with its `dicom` extra)"
    )


def codec_family(ts) -> str:
    """'JPEG2000', 'JPEGLS', 'JPEG', 'RLE', or 'native' for a transfer syntax UID."""
    if ts is None or not getattr(ts, "is_encapsulated", False):
        return "native"
    keyword = getattr(ts, "keyword", "") or ""
    for family, prefixes in (("JPEG2000", ("JPEG2000", "HTJ2K")), ("JPEGLS", ("JPEGLS",)), ("JPEG", ("JPEG",)),
                             ("RLE", ("RLE",))):
        if keyword.startswith(prefixes):
            return family
    return "other"


def check_frame(ds, fh, held_bytes: int, target: int | None) -> None:
    """For frame 0 of ``ds`` (read from ``fh``): the compressed stream's own header against Rows, Columns and
    SamplesPerPixel, then the estimated peak memory of decoding it against ``max_decode_mb``."""
    rows, cols = number(ds, "Rows", 0), number(ds, "Columns", 0)
    spp, bits = number(ds, "SamplesPerPixel", 1), number(ds, "BitsAllocated", 16)
    out = spp * max(1, bits // 8)                       # bytes per pixel of the decoded frame
    ts = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    family = codec_family(ts)
    if family in ("JPEG2000", "JPEGLS", "JPEG"):
        raw = ds.get_item(0x7FE00010, keep_deferred=True)
        if raw is None:
            raise ImageError("compressed DICOM without pixel data; the file is truncated")
        value = raw.value if getattr(raw, "value", None) is not None else None
        info = frame_header(first_fragment(value, fh, getattr(raw, "value_tell", 0) or 0), family)
        if (info.width, info.height) != (cols, rows) or info.components != spp:
            raise ImageError(f"the {info.kind} stream declares {info.width} x {info.height} pixels with "
                             f"{info.components} component(s), but the DICOM header says {cols} x {rows} with {spp}; "
                             "it was not decoded (the file is damaged or crafted)")
        if info.precision > 16:
            raise ImageError(f"the {info.kind} stream declares {info.precision}-bit samples; at most 16 are read")
    per_px = {"JPEG2000": 4 * spp + out + 1, "JPEGLS": 2 * out, "JPEG": 2 * out, "RLE": 2 * out}.get(family, 2 * out)
    photometric = str(ds.get("PhotometricInterpretation", "")).strip().upper()
    colour = spp > 1 or photometric == "PALETTE COLOR"
    if photometric.startswith("YBR") or photometric == "PALETTE COLOR":
        per_px += 3 * 8                                  # colour conversion works in wider types
    elif colour:
        per_px += 8
    peak = decode_peak_bytes(cols, rows, decoder_bytes_per_px=per_px, held_bytes=held_bytes, target=target,
                             colour=colour)
    check_decode_memory(peak, cols, rows, getattr(ts, "name", None) or "uncompressed DICOM")
