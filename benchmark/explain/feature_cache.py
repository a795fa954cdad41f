"""Keep a fusion network's image features while only its register input changes.

Shuffling a register column changes nothing a fusion network computes from the images before
the register joins in. ``image_feature_cache(family)`` keeps those features per batch of
images (keyed by the batch's bytes) for as long as it is open, so predicting many shuffled
register tables costs one pass of the backbone:

- ``joint_concat``, ``gated``, ``attention``: the backbone's ``forward_features`` output (and
  its pooled features);
- ``film``: the output of the stage the register modulates (before its scale and shift), the
  modules before that stage are skipped on a hit and the later ones run on the modulated
  features. Which modules come before is read from the definition order (that of timm's
  CNNs); the first batch is checked against a full pass, and on any difference the cache
  turns itself off (every batch then runs the full network).

Any other family is predicted as it is::

    with image_feature_cache(fam):
        for frame in shuffled_frames:
            fam.predict_proba(replace(view, register=frame))
"""

from __future__ import annotations

import hashlib
from contextlib import contextmanager

import torch


def _key(x: torch.Tensor) -> tuple:
    data = x.detach().float().cpu().contiguous().numpy()
    return tuple(x.shape), hashlib.blake2b(data.tobytes(), digest_size=16).hexdigest()


@contextmanager
def image_feature_cache(family):
    """Cache the image features of ``family``'s fusion network (module docstring); a no-op otherwise."""
    from benchmark.candidates.fusion_modules import FiLMNet, FusionNet, _stage_module

    net = getattr(family, "model_", None)
    if not isinstance(net, FusionNet):
        yield
        return
    if isinstance(net, FiLMNet):
        stage, _ = _stage_module(net.backbone, int(family.settings()["film_stage"]))
        with _prefix_cache(net.backbone, stage):
            yield
        return
    backbone = net.backbone
    original, original_head = backbone.forward_features, backbone.forward_head
    cache: dict = {}
    pooled: dict = {}   # id of a kept feature map -> (that map, its pooled features): the same object, the same result

    def cached(x):
        key = _key(x)
        if key not in cache:
            cache[key] = original(x)
        return cache[key]

    def head(feats, pre_logits: bool = False):
        hit = pooled.get((id(feats), pre_logits))
        if hit is not None and hit[0] is feats:
            return hit[1]
        out = original_head(feats, pre_logits=pre_logits)
        if any(feats is v for v in cache.values()):
            pooled[(id(feats), pre_logits)] = (feats, out)
        return out

    backbone.forward_features, backbone.forward_head = cached, head
    try:
        yield
    finally:
        del backbone.forward_features, backbone.forward_head


def _before(root: torch.nn.Module, target: torch.nn.Module) -> tuple[list[torch.nn.Module], bool]:
    """The modules that run before ``target`` (siblings defined earlier on the path to it), and
    whether the path was found."""
    earlier: list[torch.nn.Module] = []
    for _, child in root.named_children():
        if child is target:
            return earlier, True
        inner, found = _before(child, target)
        if found:
            return earlier + inner, True
        earlier.append(child)
    return [], False


@contextmanager
def _prefix_cache(backbone: torch.nn.Module, stage: torch.nn.Module):
    path_siblings, found = _before(backbone, stage)
    if not found:
        yield
        return
    state = {"skip": False, "value": None, "broken": False, "checked": False}
    cache: dict = {}
    captured: dict = {}

    def capture(module, inputs, out):   # before the FiLM hook: the stage's own output
        captured["out"] = out

    def skipping(orig):
        def forward(*args, **kwargs):
            return args[0] if state["skip"] else orig(*args, **kwargs)
        return forward

    def stage_forward(*args, **kwargs):
        return state["value"] if state["skip"] else stage_orig(*args, **kwargs)

    stage_orig = stage.forward
    originals = [(m, m.forward) for m in path_siblings]
    handle = stage.register_forward_hook(capture, prepend=True)
    ff_orig = backbone.forward_features

    def cached(x):
        if state["broken"]:
            return ff_orig(x)
        key = _key(x)
        if key in cache:
            state["skip"], state["value"] = True, cache[key]
            try:
                return ff_orig(x)
            finally:
                state["skip"], state["value"] = False, None
        out = ff_orig(x)
        cache[key] = captured.pop("out").detach()
        if not state["checked"]:   # the first batch: a hit must give what the full pass gave
            state["checked"] = True
            again = cached(x)
            if not torch.allclose(again.float(), out.float(), rtol=1e-4, atol=1e-5):
                state["broken"] = True
                cache.clear()
        return out

    for m, orig in originals:
        m.forward = skipping(orig)
    stage.forward = stage_forward
    backbone.forward_features = cached
    try:
        yield
    finally:
        handle.remove()
        for m, _ in originals:
            del m.forward
        del stage.forward
        del backbone.forward_features
