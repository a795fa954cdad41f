"""Boosted-tree files of a bundle: checked before XGBoost or LightGBM reads them, and stripped at export.

Both libraries set aside memory for what a model file declares (a tree's node count, a
LightGBM tree's ``num_leaves``) before reading the values, and follow child indices
without checking for cycles. ``check_xgboost`` (UBJSON) and ``check_lightgbm`` (text) read
the file first and refuse, with one line, a model whose declared sizes disagree with its
data or exceed ``limits``, whose child links can loop, or whose indices point outside their
arrays::

    check_xgboost(data, "trees/c0.m0.ubj")      # BundleFormatError, or None
    text = strip_lightgbm(booster.model_to_string())   # export: no per-feature training ranges

``strip_lightgbm`` replaces LightGBM's ``feature_infos`` (each numeric feature's training
minimum and maximum) by ``none``; prediction does not read them.
"""

from __future__ import annotations

import re

import numpy as np

from benchmark.export.limits import MAX_CATEGORIES, MAX_COLUMNS, MAX_TREE_NODES, MAX_TREES, BundleFormatError
from benchmark.export.ubjson import parse

_XGB_TREE_ARRAYS = ("left_children", "right_children", "parents", "split_indices", "split_conditions",
                    "split_type", "default_left", "base_weights", "loss_changes", "sum_hessian")


def _int(value, what: str, lo: int, hi: int) -> int:
    try:
        n = int(str(value).strip())
    except ValueError:
        raise BundleFormatError(f"{what}: {str(value)[:30]!r} is not a whole number") from None
    if not lo <= n <= hi:
        raise BundleFormatError(f"{what}: {n:,} is outside [{lo:,}, {hi:,}]")
    return n


def _get(d, key: str, what: str, kind=dict):
    v = d.get(key) if isinstance(d, dict) else None
    if not isinstance(v, kind):
        raise BundleFormatError(f"{what}: {key} is missing or of the wrong type")
    return v


def check_tree_links(left: np.ndarray, right: np.ndarray, n_nodes: int, what: str, *, leaf_below: int = 0) -> None:
    """Children are leaves (< ``leaf_below``) or nodes in [1, n_nodes), each node reached from at most one
    parent and the root from none, so following children from the root always ends."""
    kids = np.concatenate([left, right]).astype(np.int64)
    nodes = kids[kids >= leaf_below]
    if len(nodes) and (nodes.min() < 1 or nodes.max() >= n_nodes):
        raise BundleFormatError(f"{what}: a child index outside the tree's {n_nodes:,} nodes")
    if len(nodes) and np.bincount(nodes, minlength=n_nodes).max() > 1:
        raise BundleFormatError(f"{what}: a node is the child of two parents (the tree could loop)")


def check_xgboost(data: bytes, what: str) -> None:
    """BundleFormatError unless ``data`` is an XGBoost binary model of sizes its data bear out."""
    model = parse(data, what)
    learner = _get(model, "learner", what)
    param = _get(learner, "learner_model_param", what)
    n_feat = _int(param.get("num_feature"), f"{what}: num_feature", 0, MAX_COLUMNS)
    _int(param.get("num_class", 0), f"{what}: num_class", 0, 1)
    _int(param.get("num_target", 1), f"{what}: num_target", 1, 1)
    for key in ("feature_names", "feature_types"):
        names = learner.get(key, [])
        if not isinstance(names, list) or len(names) not in (0, n_feat):
            raise BundleFormatError(f"{what}: {key} does not list the {n_feat} features")
    booster = _get(learner, "gradient_booster", what)
    if booster.get("name") != "gbtree":
        raise BundleFormatError(f"{what}: booster {str(booster.get('name'))[:20]!r}; a bundle holds gbtree models only")
    gb = _get(booster, "model", what)
    trees = _get(gb, "trees", what, list)
    n_trees = _int(_get(gb, "gbtree_model_param", what).get("num_trees"), f"{what}: num_trees", 0, MAX_TREES)
    _int(gb["gbtree_model_param"].get("num_parallel_tree", 1), f"{what}: num_parallel_tree", 1, 64)
    info = gb.get("tree_info", [])
    if len(trees) != n_trees or len(info) != n_trees:
        raise BundleFormatError(f"{what}: num_trees says {n_trees:,}; the file holds {len(trees):,} trees")
    indptr = np.asarray(gb.get("iteration_indptr", [0]), dtype=np.int64)
    if indptr.ndim != 1 or len(indptr) > n_trees + 1 or (len(indptr) and (indptr.min() < 0 or indptr.max() > n_trees
                                                                        or np.any(np.diff(indptr) < 0))):
        raise BundleFormatError(f"{what}: iteration_indptr does not index its {n_trees:,} trees")
    if np.any(np.asarray(info) != 0):
        raise BundleFormatError(f"{what}: tree_info names a class other than 0 (a bundle holds binary models)")
    for t, tree in enumerate(trees):
        _check_xgb_tree(tree, n_feat, f"{what}: tree {t}")
    cats = gb.get("cats")
    if cats is not None:
        _check_cats(cats, n_feat, f"{what}: cats")


def _check_xgb_tree(tree, n_feat: int, what: str) -> None:
    tp = _get(tree, "tree_param", what)
    n = _int(tp.get("num_nodes"), f"{what}: num_nodes", 1, MAX_TREE_NODES)
    _int(tp.get("num_feature", n_feat), f"{what}: num_feature", n_feat, n_feat)
    _int(tp.get("size_leaf_vector", 1), f"{what}: size_leaf_vector", 0, 1)
    arrays = {}
    for key in _XGB_TREE_ARRAYS:
        a = tree.get(key)
        if not isinstance(a, np.ndarray) or a.ndim != 1 or len(a) != n:
            raise BundleFormatError(f"{what}: {key} does not hold num_nodes ({n:,}) values")
        arrays[key] = a
    split = arrays["split_indices"].astype(np.int64)
    if n_feat and (split.min() < 0 or split.max() >= max(n_feat, 1)):
        raise BundleFormatError(f"{what}: a split on a feature outside the model's {n_feat}")
    check_tree_links(arrays["left_children"], arrays["right_children"], n, what, leaf_below=0)
    if not np.isfinite(arrays["base_weights"]).all():
        raise BundleFormatError(f"{what}: a leaf weight is not finite")
    cat = {k: np.asarray(tree.get(k, np.zeros(0)), dtype=np.int64)
           for k in ("categories", "categories_nodes", "categories_segments", "categories_sizes")}
    if any(len(v) > MAX_CATEGORIES for v in cat.values()):
        raise BundleFormatError(f"{what}: more than {MAX_CATEGORIES:,} category values")
    m = len(cat["categories_nodes"])
    if len(cat["categories_segments"]) != m or len(cat["categories_sizes"]) != m:
        raise BundleFormatError(f"{what}: the categorical split arrays differ in length")
    if m and (cat["categories_nodes"].min() < 0 or cat["categories_nodes"].max() >= n
              or (cat["categories_segments"] < 0).any() or (cat["categories_sizes"] < 0).any()
              or (cat["categories_segments"] + cat["categories_sizes"]).max() > len(cat["categories"])):
        raise BundleFormatError(f"{what}: a categorical split points outside its arrays")


def _check_cats(cats, n_feat: int, what: str) -> None:
    if not isinstance(cats, dict):
        raise BundleFormatError(f"{what}: not an object")
    seg = np.asarray(cats.get("feature_segments", []), dtype=np.int64)
    idx = np.asarray(cats.get("sorted_idx", []), dtype=np.int64)
    enc = cats.get("enc", [])
    if len(seg) > n_feat + 1 or len(idx) > MAX_CATEGORIES or not isinstance(enc, list) or len(enc) > n_feat:
        raise BundleFormatError(f"{what}: more category entries than features")
    if len(seg) and (seg.min() < 0 or seg.max() > len(idx) or np.any(np.diff(seg) < 0)):
        raise BundleFormatError(f"{what}: feature_segments point outside sorted_idx")
    if len(idx) and (idx.min() < 0 or idx.max() >= max(len(idx), 1)):
        raise BundleFormatError(f"{what}: sorted_idx points outside its categories")
    for i, e in enumerate(enc):
        if not isinstance(e, dict):
            raise BundleFormatError(f"{what}: enc[{i}] is not an object")
        off, val = np.asarray(e.get("offsets", []), dtype=np.int64), e.get("values", [])
        size = len(val) if hasattr(val, "__len__") else 0
        if len(off) > MAX_CATEGORIES or (len(off) and (off.min() < 0 or off.max() > size or np.any(np.diff(off) < 0))):
            raise BundleFormatError(f"{what}: enc[{i}] offsets point outside its values")


# -- LightGBM

_LGB_PER_SPLIT = ("split_feature", "split_gain", "threshold", "decision_type", "left_child", "right_child",
                  "internal_value", "internal_weight", "internal_count")
_LGB_PER_LEAF = ("leaf_value", "leaf_weight", "leaf_count")


def strip_lightgbm(text: str) -> str:
    """``text`` (LightGBM's model format) with every ``feature_infos`` entry set to ``none``."""
    def blank(m: re.Match) -> str:
        n = len(m.group(1).split())
        return "feature_infos=" + " ".join(["none"] * n)

    return re.sub(r"^feature_infos=(.*)$", blank, text, count=1, flags=re.M)


def check_lightgbm(text: str, what: str) -> str:
    """``text`` without its ``tree_sizes`` line (LightGBM then reads the trees in order, not by byte
    offsets it would trust), after checking every tree; BundleFormatError when a check fails."""
    head, sep, _ = text.partition("\nTree=")
    header = _keys(head.splitlines())
    if not text.startswith("tree\n"):
        raise BundleFormatError(f"{what}: not a LightGBM model (it does not start with 'tree')")
    _int(header.get("num_class", "1"), f"{what}: num_class", 1, 1)
    _int(header.get("num_tree_per_iteration", "1"), f"{what}: num_tree_per_iteration", 1, 1)
    max_feat = _int(header.get("max_feature_idx"), f"{what}: max_feature_idx", 0, MAX_COLUMNS)
    if len(header.get("feature_names", "").split()) != max_feat + 1:
        raise BundleFormatError(f"{what}: feature_names does not list max_feature_idx + 1 features")
    body, end, tail = text.partition("\nend of trees")
    if not end:
        raise BundleFormatError(f"{what}: no 'end of trees' line (the file is truncated)")
    blocks = body.split("\nTree=")[1:]
    if len(blocks) > MAX_TREES:
        raise BundleFormatError(f"{what}: {len(blocks):,} trees, above the limit of {MAX_TREES:,}")
    for i, block in enumerate(blocks):
        _check_lgb_tree(block, max_feat, f"{what}: tree {i}")
    if "\npandas_categorical:" in tail:
        from benchmark.export.safe_json import loads

        cats = loads(tail.split("\npandas_categorical:", 1)[1].strip(), f"{what}: pandas_categorical", max_depth=3)
        if cats is not None and (not isinstance(cats, list) or len(cats) > max_feat + 1
                                 or sum(len(c) if isinstance(c, list) else 1 for c in cats) > MAX_CATEGORIES):
            raise BundleFormatError(f"{what}: pandas_categorical is not a list of category lists")
    return re.sub(r"^tree_sizes=.*\n", "", text, count=1, flags=re.M)


def _keys(lines: list[str]) -> dict[str, str]:
    out = {}
    for line in lines:
        key, eq, value = line.partition("=")
        if eq:
            out[key.strip()] = value.strip()
    return out


def _check_lgb_tree(block: str, max_feat: int, what: str) -> None:
    kv = _keys(block.splitlines()[1:])
    n_leaves = _int(kv.get("num_leaves"), f"{what}: num_leaves", 1, MAX_TREE_NODES)
    n_cat = _int(kv.get("num_cat", "0"), f"{what}: num_cat", 0, max(n_leaves - 1, 0))
    if kv.get("is_linear", "0") != "0":
        raise BundleFormatError(f"{what}: a linear tree; a bundle holds plain trees only")

    def values(key: str, n: int, dtype=np.float64) -> np.ndarray:
        raw = kv.get(key, "")
        if raw.count(" ") + 1 != n if raw else n != 0:
            raise BundleFormatError(f"{what}: {key} does not hold {n:,} values")
        try:
            return np.array(raw.split(), dtype=dtype) if raw else np.zeros(0, dtype)
        except ValueError:
            raise BundleFormatError(f"{what}: {key} holds something that is not a number") from None

    leaf = values("leaf_value", n_leaves)
    if not np.isfinite(leaf).all():
        raise BundleFormatError(f"{what}: a leaf value is not finite")
    if n_leaves == 1:
        return
    n_split = n_leaves - 1
    for key in ("split_feature", "left_child", "right_child", "decision_type", "threshold"):
        if key not in kv:
            raise BundleFormatError(f"{what}: {key} is missing")
    feat = values("split_feature", n_split, np.int64)
    if feat.min() < 0 or feat.max() > max_feat:
        raise BundleFormatError(f"{what}: a split on a feature outside the model's {max_feat + 1}")
    left, right = values("left_child", n_split, np.int64), values("right_child", n_split, np.int64)
    if min(left.min(), right.min()) < -n_leaves:
        raise BundleFormatError(f"{what}: a child points outside the tree's {n_leaves:,} leaves")
    check_tree_links(left, right, n_split, what, leaf_below=0)
    decision = values("decision_type", n_split, np.int64)
    threshold = values("threshold", n_split)
    is_cat = (decision & 1) == 1
    if is_cat.any():
        bounds = values("cat_boundaries", n_cat + 1, np.int64)
        n_thr = int(bounds[-1]) if len(bounds) else 0
        if n_thr > MAX_CATEGORIES or bounds[0] != 0 or np.any(np.diff(bounds) < 0):
            raise BundleFormatError(f"{what}: cat_boundaries are not increasing from 0")
        values("cat_threshold", n_thr, np.int64)
        idx = threshold[is_cat]
        if (idx < 0).any() or (idx >= n_cat).any() or np.any(idx != np.floor(idx)):
            raise BundleFormatError(f"{what}: a categorical split names a category set the tree does not hold")
