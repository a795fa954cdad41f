"""What an image may cost before it is decoded: its declared size, its peak memory, where its file is.

Three limits, set per process from the dataset file (``image_index.read_images``) and passed
to decoding workers as one ``DecodeLimits``:

- ``max_megapixels`` (``images.max_megapixels``, default ``DEFAULT_MAX_MEGAPIXELS``): rows x
  columns x frames x samples per pixel, counted double for 32-bit data (x bits/16 above 16
  bits), as the header declares it;
- ``max_decode_mb`` (``images.max_decode_mb``, default ``DEFAULT_MAX_DECODE_MB``): the peak
  memory decoding one image takes, estimated from its header before any pixel is decoded
  (``decode_peak_bytes``): what the decoder holds at full resolution, plus the grey
  pipeline on the image after its box reduction. The default keeps ``validate`` under 1 GB;
- ``roots``: folders an image file must lie in when it is opened (``safe_open.open_image``);
  a dataset's own (``images.root`` and ``images.allowed_roots``) travel with its images
  (``Cohort.image_roots``) and are passed to ``read_image`` / ``check_image`` explicitly.

Every refusal is an ``ImageError`` (a ``UserError``) that names the sizes and the key to
raise, never the file (the caller adds the manifest row).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from benchmark.errors import UserError

DEFAULT_MAX_MEGAPIXELS = 100.0
DEFAULT_MAX_DECODE_MB = 640.0
REDUCING_GAP = 3.0        # as image_cache.resize_square asks Pillow: box-reduce while >= 3x the target
PIPELINE_BYTES = 32       # bytes per (reduced) grey pixel of the pipeline: float64 image, window, percentiles (measured
                          # 19-31 with benchmark.tools.hostile_inputs' images); colour images count double
OVERHEAD_BYTES = 16 << 20  # decoders' own buffers (a JPEG's MCU rows, PNG lines, codec state)
CHECK_SIZE = 512          # the target size ``validate`` decodes towards (no profile uses more)


class ImageError(UserError):
    """An image that cannot be used; the message names the problem, not the file."""


@dataclass(frozen=True)
class DecodeLimits:
    max_megapixels: float = DEFAULT_MAX_MEGAPIXELS
    max_decode_mb: float = DEFAULT_MAX_DECODE_MB
    roots: tuple[str, ...] = ()     # real paths image files must lie in (empty: anywhere)


_limits = DecodeLimits()


def set_decode_limits(limits: DecodeLimits | None) -> None:
    """The limits of this process (None: the defaults)."""
    global _limits
    _limits = DecodeLimits() if limits is None else limits


def decode_limits() -> DecodeLimits:
    return _limits


def set_dataset_limits(max_mp: float, max_mb: float) -> None:
    """The size and memory limits of a dataset file, for this process (its folders travel with its images:
    ``Cohort.image_roots``, passed to ``read_image`` / ``check_image`` as ``roots``)."""
    set_decode_limits(replace(_limits, max_megapixels=float(max_mp), max_decode_mb=float(max_mb)))


def set_max_megapixels(value: float | None) -> None:
    """The largest image (declared size, see module doc) this process decodes; None: the default."""
    set_decode_limits(replace(_limits, max_megapixels=DEFAULT_MAX_MEGAPIXELS if value is None else float(value)))


def max_megapixels() -> float:
    """The limit ``set_max_megapixels`` set (``DEFAULT_MAX_MEGAPIXELS`` unless changed)."""
    return _limits.max_megapixels


def check_declared_size(width: int, height: int, frames: int = 1, samples: int = 1, bits: int = 8,
                        limit: float | None = None) -> None:
    """Raise ``ImageError`` when the declared size is above ``limit`` megapixels (module doc)."""
    limit = _limits.max_megapixels if limit is None else float(limit)
    mp = width * height * max(frames, 1) * max(samples, 1) * max(1.0, bits / 16) / 1e6
    if width >= 0 and height >= 0 and mp <= limit:
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


def reduction(width: int, height: int, target: int | None) -> int:
    """The integer box-reduction factor applied right after decoding, for an image that will be resized to fit
    ``target`` px: the factor Pillow's own ``resize(reducing_gap=3)`` would use (1: none; None: full size)."""
    if not target:
        return 1
    return max(1, int(max(width, height) / target / REDUCING_GAP))


def decode_peak_bytes(width: int, height: int, *, decoder_bytes_per_px: float, held_bytes: int = 0,
                      target: int | None = None, colour: bool = False) -> int:
    """Estimated peak memory of decoding one image: ``held_bytes`` (e.g. the file's pixel data in memory), the
    decoder's full-resolution buffers (``decoder_bytes_per_px``), and the grey pipeline on the reduced image."""
    px = max(width, 0) * max(height, 0)
    f = reduction(width, height, target)
    return int(OVERHEAD_BYTES + held_bytes + px * decoder_bytes_per_px + PIPELINE_BYTES * (1 + colour) * px / (f * f))


def check_decode_memory(peak: int, width: int, height: int, what: str) -> None:
    """Raise ``ImageError`` when ``peak`` bytes exceed ``max_decode_mb``."""
    budget = _limits.max_decode_mb
    if peak <= budget * (1 << 20):
        return
    raise ImageError(
        f"decoding the image ({width} x {height} pixels, {what}) would take about {peak / (1 << 20):,.0f} MB, above "
        f"the budget of {budget:g} MB; it was not decoded. Export it smaller, or raise images.max_decode_mb in the "
        "dataset file if the machine has the memory"
    )
