"""What a bundle may declare, checked before anything is allocated for it.

A bundle comes from another site and is read as data (``codec.Reader``): every size it
declares (array shapes, string lengths, network widths, image size, tree sizes, JSON depth)
is checked against these limits before memory is set aside for it, so a hostile bundle is
refused with one line in well under a second. The limits sit far above what the harness
exports (search_spaces/*.yaml: MLP widths up to 512, fusion widths up to 128, images up to
384 px); a genuine bundle beyond one is a model nobody should run from a file anyway.

``AFF_BENCHMARK_MAX_BUNDLE_MB`` raises the total size a bundle's files may have (default
``MAX_BUNDLE_MB``): large image backbones with many bag members can need more.
"""

from __future__ import annotations

import math
import os

MAX_BUNDLE_MB = 4096            # all files of a bundle together (AFF_BENCHMARK_MAX_BUNDLE_MB)
MAX_JSON_MB = 64                # model.json, schema.json, bundle.json, cv_figures.json, each
MAX_JSON_DEPTH = 64             # nested lists/objects in a JSON file of a bundle
MAX_STRING = 4096               # characters of one string in a bundle's JSON (names, levels, settings)
MAX_LIST_ARRAY = 1_000_000      # elements of one text/object array (category levels, names)
MAX_ARRAY_DIMS = 4
MAX_COMPONENTS = 32             # components of an exported model (a fusion and its inputs)
MAX_MEMBERS = 64                # bag members of one component
MAX_COLUMNS = 100_000           # register columns / tree features
MAX_FILES = 4096                # files in a bundle
MAX_IMAGE_SIZE = 2048           # side of the square images a component reads (px)
MAX_WIDTH = 8192                # a network layer's width (hidden, fusion_dim, embed_dim, ...)
MAX_LAYERS = 64                 # a network's depth parameters (n_layers, tab_layers, ...)
MAX_TOKENS = 1024               # attention tokens / heads
MAX_BATCH = 65_536              # a prediction batch
MAX_PASSES = 1000               # MC-dropout passes
MAX_THREADS = 1024
MAX_TREES = 100_000             # boosted trees of one model
MAX_TREE_NODES = 1 << 20        # nodes (XGBoost) or leaves (LightGBM) of one tree
MAX_CATEGORIES = 1 << 20        # category values stored in one tree model
MAX_TENSORS = 100_000           # tensors of one safetensors file


class BundleFormatError(ValueError):
    """The bundle holds something a bundle may not hold (an unknown class or field, a size over a limit)."""


def max_bundle_bytes() -> int:
    """The total size a bundle's files may have (``AFF_BENCHMARK_MAX_BUNDLE_MB`` or ``MAX_BUNDLE_MB``)."""
    raw = os.environ.get("AFF_BENCHMARK_MAX_BUNDLE_MB", "").strip()
    try:
        mb = float(raw) if raw else MAX_BUNDLE_MB
    except ValueError:
        mb = MAX_BUNDLE_MB
    return int(mb * (1 << 20)) if math.isfinite(mb) and mb > 0 else MAX_BUNDLE_MB << 20


def check_count(n: int, limit: int, what: str) -> int:
    """``n`` when 0 <= n <= limit, else BundleFormatError naming ``what``."""
    if not isinstance(n, int) or isinstance(n, bool) or n < 0 or n > limit:
        raise BundleFormatError(f"{what} declares {n!r}, above the limit of {limit:,}")
    return n
