"""Where a network's starting weights may come from, and how a weights file is read: the one place.

- ``resolve_weights(arch, pretrained)`` decides which file, from a candidate's ``pretrained``
  (a file, a folder, ``true``) or the ``AFF_BENCHMARK_WEIGHTS`` folder; nothing else names
  weights, and nothing is downloaded (``HF_HUB_OFFLINE=1``);
- ``read_weights(path)`` reads it: ``.safetensors`` with safetensors, anything else with
  ``torch.load(weights_only=True)`` (tensors and plain containers only; no code is unpickled);
  timm receives the state dict (``backbones.build_timm_model``), never the path;
- ``bundle_weights_only()``: while a bundle is loaded or runs, both refuse, so a bundle's
  networks take their weights only from the bundle's own safetensors files
  (``export.codec.Reader.network``).

A candidate's ``pretrained``:

- ``/path/resnet18.safetensors`` (or ``.pth``): that file;
- ``/path/folder``: ``<arch>.safetensors``/``.pth`` in it, or timm's caches
  (``models--timm--<arch>.<tag>/snapshots/*/model.safetensors``, ``checkpoints/<file>``);
- ``true``: the folder named by ``AFF_BENCHMARK_WEIGHTS``, which must hold them;
- unset: that folder's weights when it has them, else random initialisation;
- ``false``: random initialisation.

A new source (a model hub, a named release such as ``pretrained: imagenet``) belongs in
``resolve_weights`` and must yield a file ``read_weights`` reads::

    path = resolve_weights("resnet18", "/weights/resnet18.safetensors")
    state = read_weights(path)            # {name: tensor}
"""

from __future__ import annotations

import contextlib
import contextvars
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchmark.errors import UserError

if TYPE_CHECKING:
    import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
_BUNDLE_ONLY: contextvars.ContextVar[bool] = contextvars.ContextVar("bundle_weights_only", default=False)

WEIGHTS_ENV = "AFF_BENCHMARK_WEIGHTS"
_WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pth.tar", ".pt", ".bin")
_HUB_FILES = ("model.safetensors", "pytorch_model.bin", "open_clip_pytorch_model.bin")


def _name_variants(arch: str) -> list[str]:
    """``resnet18`` -> [resnet18, resnet18.a1_in1k (timm's default tag)]; tagged names kept first."""
    import timm

    names = [arch]
    base, _, tag = arch.partition(".")
    if tag:
        names.append(base)
    else:
        cfg = timm.models.get_pretrained_cfg(arch)
        if cfg is not None and cfg.tag:
            names.append(f"{base}.{cfg.tag}")
    return names


def find_weights(arch: str, folder: Path) -> Path | None:
    """The weight file for ``arch`` in ``folder`` (flat files or timm's cache layouts), or None."""
    import timm

    folder = Path(folder)
    names = _name_variants(arch)
    for name in names:
        for suffix in _WEIGHT_SUFFIXES:
            if (folder / f"{name}{suffix}").is_file():
                return folder / f"{name}{suffix}"
        for hub_file in _HUB_FILES:
            if (folder / name / hub_file).is_file():
                return folder / name / hub_file
    hub_roots = [folder, folder / "hub", folder / "huggingface" / "hub"]
    base = arch.partition(".")[0]
    for root in hub_roots:
        patterns = [f"models--timm--{n}" for n in names] + [f"models--timm--{base}.*"]
        for pattern in patterns:
            for repo in sorted(root.glob(pattern)):
                for hub_file in _HUB_FILES:
                    hits = sorted((repo / "snapshots").glob(f"*/{hub_file}"))
                    if hits:
                        return hits[-1]
    cfg = timm.models.get_pretrained_cfg(arch)
    url = getattr(cfg, "url", None) if cfg is not None else None
    if url:
        fname = url.rsplit("/", 1)[-1]
        for root in (folder, folder / "checkpoints", folder / "hub" / "checkpoints", folder / "torch" / "hub" / "checkpoints"):
            if (root / fname).is_file():
                return root / fname
    return None


@contextlib.contextmanager
def bundle_weights_only():
    """While active, ``resolve_weights`` and ``read_weights`` refuse: no weight file outside a bundle is read
    (``export.bundle.load_model`` and ``ExportedModel.outputs`` run inside it)."""
    token = _BUNDLE_ONLY.set(True)
    try:
        yield
    finally:
        _BUNDLE_ONLY.reset(token)


def _no_files_from_bundles(what: Any) -> None:
    if _BUNDLE_ONLY.get():
        raise UserError(f"a bundle's model asked for the weight file {str(what)[:80]!r}; a bundle's networks load "
                        "only the bundle's own weights, so the bundle is refused")


def read_weights(path: Path) -> dict[str, "torch.Tensor"]:
    """The state dict in a weights file: ``.safetensors`` with safetensors, anything else with
    ``torch.load(weights_only=True)``; a training checkpoint's ``state_dict`` / ``model`` (EMA first)
    and DDP / ``torch.compile`` prefixes are unwrapped as timm does."""
    import argparse

    import torch

    _no_files_from_bundles(path)
    path = Path(path)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            ckpt: Any = load_file(str(path), device="cpu")
        else:
            with torch.serialization.safe_globals([argparse.Namespace]):
                ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - safetensors, pickle and OS errors alike
        first = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise UserError(f"weights file {path} cannot be read as weights ({first}); give a .safetensors file, or a "
                        ".pth holding tensors only") from None
    if isinstance(ckpt, dict):
        for key in ("state_dict_ema", "model_ema", "state_dict", "model"):
            if isinstance(ckpt.get(key), dict):
                ckpt = ckpt[key]
                break
    if not isinstance(ckpt, dict) or not all(isinstance(v, torch.Tensor) for v in ckpt.values()):
        raise UserError(f"weights file {path} does not hold a state dict of tensors; give weights saved with "
                        "model.state_dict()")
    out = {}
    for k, v in ckpt.items():
        for prefix in ("_orig_mod.", "module.", "_orig_mod."):
            k = k.removeprefix(prefix)
        out[k] = v
    return out


def resolve_weights(arch: str, pretrained: Any) -> Path | None:
    """The weight file a candidate asks for (see the module docstring), None for random init.

    The only place that decides where weights may come from: a named file or folder, or
    ``AFF_BENCHMARK_WEIGHTS``; never the network, never while a bundle loads or runs.
    """
    if pretrained not in (None, False) or os.environ.get(WEIGHTS_ENV, "").strip():
        _no_files_from_bundles(pretrained)
    if isinstance(pretrained, str) and pretrained.strip().lower() in ("", "none", "false", "random", "no"):
        pretrained = False
    if isinstance(pretrained, str) and pretrained.strip().lower() in ("true", "yes", "auto"):
        pretrained = True if pretrained.strip().lower() != "auto" else None
    if pretrained is False:
        return None
    if isinstance(pretrained, (str, Path)):
        path = Path(pretrained).expanduser()
        if path.is_file():
            return path
        if path.is_dir():
            found = find_weights(arch, path)
            if found is None:
                raise UserError(
                    f"candidate key 'pretrained' names the folder {path}, which holds no weights for {arch!r} "
                    f"(looked for {arch}.safetensors/.pth and timm's cache layout); add the file or remove the key")
            return found
        raise UserError(
            f"candidate key 'pretrained' names {path}, which does not exist; give an existing .safetensors/.pth "
            f"file or folder with weights for {arch!r}, or remove the key for random initialisation")
    env = os.environ.get(WEIGHTS_ENV, "").strip()
    if env:
        folder = Path(env).expanduser()
        if not folder.is_dir():
            raise UserError(f"{WEIGHTS_ENV}={folder} is not a folder; point it at a folder of <arch>.safetensors files or unset it")
        found = find_weights(arch, folder)
        if found is None and pretrained is True:
            raise UserError(
                f"pretrained weights for {arch!r} were asked for (pretrained: true) but {folder} ({WEIGHTS_ENV}) "
                f"holds none; put {arch}.safetensors there or set pretrained: false")
        return found
    if pretrained is True:
        raise UserError(
            f"pretrained weights for {arch!r} were asked for (pretrained: true) but no file was named; set "
            f"{WEIGHTS_ENV} to a folder holding {arch}.safetensors, or give the file path as 'pretrained'")
    return None
