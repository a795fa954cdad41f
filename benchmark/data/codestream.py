"""The size a compressed frame declares, read from its own header before any decoder sees it.

A DICOM header's Rows and Columns say nothing binding about the compressed stream inside
the file: a 980-byte JPEG 2000 codestream may declare 12000 x 12000 pixels, and decoders
allocate what the stream declares. ``frame_header`` reads the stream's header itself:

- JPEG (baseline, extended, lossless) and JPEG-LS: the SOFn / SOF55 segment (P, Y, X, Nf);
- JPEG 2000 and HTJ2K (raw codestream or JP2 file): the SIZ segment (image and tile sizes,
  component count and precision);

    info = frame_header(first_fragment_bytes, "JPEG2000")
    info.width, info.height, info.components, info.precision, info.tiles

``first_fragment`` reads the start of a frame's first fragment from encapsulated pixel data
without reading the rest. Malformed headers raise ``ImageError``.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from benchmark.data.decode_limits import ImageError

HEAD_BYTES = 1 << 16          # bytes of the first fragment read for its header
MAX_COMPONENTS = 4
MAX_TILES = 1 << 16
_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF, 0xF7}   # 0xF7: JPEG-LS
_NO_LENGTH = set(range(0xD0, 0xD8)) | {0x01, 0xD8}
_ITEM, _SEQ_END = (0xFFFE, 0xE000), (0xFFFE, 0xE0DD)


@dataclass(frozen=True)
class FrameHeader:
    kind: str            # "JPEG", "JPEG-LS" or "JPEG 2000"
    width: int
    height: int
    components: int
    precision: int       # bits per sample
    tiles: int = 1


def frame_header(data: bytes, family: str) -> FrameHeader:
    """The header of a compressed frame: ``family`` is "JPEG", "JPEGLS" or "JPEG2000" (HTJ2K too)."""
    if family == "JPEG2000":
        return _siz(data)
    return _sof(data, family)


def _sof(data: bytes, family: str) -> FrameHeader:
    name = "JPEG-LS" if family == "JPEGLS" else "JPEG"
    if data[:2] != b"\xff\xd8":
        raise ImageError(f"the compressed pixel data is not a {name} stream (no start-of-image marker); it was not decoded")
    i = 2
    while i + 4 <= len(data):
        if data[i] != 0xFF:
            raise ImageError(f"the {name} stream's header is malformed; it was not decoded")
        marker = data[i + 1]
        if marker == 0xFF:       # fill byte
            i += 1
            continue
        if marker in _NO_LENGTH:
            i += 2
            continue
        (length,) = struct.unpack(">H", data[i + 2:i + 4])
        if marker in _SOF:
            seg = data[i + 4:i + 2 + length]
            if len(seg) < 6:
                break
            precision, height, width, comps = struct.unpack(">BHHB", seg[:6])
            if height == 0:
                raise ImageError(f"the {name} stream declares its height later (DNL marker), which is not supported; "
                                 "export the image again")
            return FrameHeader(name, width, height, comps, precision)
        if marker == 0xDA or length < 2:   # start of scan before any frame header
            break
        i += 2 + length
    raise ImageError(f"the {name} stream has no frame header in its first {len(data):,} bytes; it was not decoded")


def _siz(data: bytes) -> FrameHeader:
    at = data.find(b"\xff\x4f\xff\x51")   # SOC then SIZ (a JP2 file holds the codestream in a box)
    if at < 0 or len(data) < at + 4 + 38:
        raise ImageError("the JPEG 2000 stream has no SIZ header in its first bytes; it was not decoded")
    seg = data[at + 4:]
    (lsiz, _rsiz, xsiz, ysiz, xo, yo, xt, yt, xto, yto, csiz) = struct.unpack(">HHIIIIIIIIH", seg[:38])
    width, height = xsiz - xo, ysiz - yo
    if width <= 0 or height <= 0 or xt == 0 or yt == 0 or xto > xo or yto > yo:
        raise ImageError("the JPEG 2000 SIZ header declares an empty image or tile; it was not decoded")
    if not 1 <= csiz <= MAX_COMPONENTS or len(seg) < 38 + 3 * csiz:
        raise ImageError(f"the JPEG 2000 stream declares {csiz} components (at most {MAX_COMPONENTS} are read); "
                         "it was not decoded")
    tiles = -(-(xsiz - xto) // xt) * -(-(ysiz - yto) // yt)
    if tiles > MAX_TILES:
        raise ImageError(f"the JPEG 2000 stream declares {tiles:,} tiles (at most {MAX_TILES:,}); it was not decoded")
    precision = max((seg[38 + 3 * c] & 0x7F) + 1 for c in range(csiz))
    return FrameHeader("JPEG 2000", width, height, csiz, precision, tiles)


def first_fragment(value: bytes | None, fp=None, offset: int = 0) -> bytes:
    """The first ``HEAD_BYTES`` of frame 0's first fragment of encapsulated pixel data: from ``value`` (the
    element's bytes) or, when it was not read, from file ``fp`` at ``offset``."""
    def read(n: int) -> bytes:
        nonlocal pos
        out = value[pos:pos + n] if value is not None else fp.read(n)
        pos += len(out)
        return out

    pos = 0
    if value is None:
        fp.seek(offset)
    for k in range(2):   # the Basic Offset Table item, then the first fragment
        head = read(8)
        if len(head) < 8:
            break
        group, elem, length = struct.unpack("<HHI", head)
        if (group, elem) == _SEQ_END:
            break
        if (group, elem) != _ITEM:
            raise ImageError("the encapsulated pixel data is malformed (no item tag); it was not decoded")
        if k == 1:
            return read(min(length, HEAD_BYTES))
        if value is None:
            fp.seek(length, 1)
        pos += length if value is not None else 0
    raise ImageError("the encapsulated pixel data holds no fragment; the file is truncated")
