"""Where a network's starting weights may come from, and how a weights file is read: the one place.

- ``choose_weights(arch, pretrained)`` decides (``resolve_weights`` returns its file): from a
  candidate's ``pretrained``, the ``AFF_BENCHMARK_WEIGHTS`` folder, the harness's own weights
  folder (``<cache>/weights``) or, only for ``imagenet`` and ``hf-hub:`` and only when no folder
  holds them yet, the hub (``weights_hub.fetch``, into ``<cache>/weights``); nothing else names weights;
- ``read_weights(path)`` reads it: ``.safetensors`` with safetensors, anything else with
  ``torch.load(weights_only=True)`` (tensors and plain containers only; no code is unpickled),
  after checking the bytes against the SHA-256 a ``weights.json`` records for the file
  (``weights_store``); timm receives the state dict (``backbones.build_timm_model``), never the path;
- ``bundle_weights_only()``: while a bundle is loaded or runs, both refuse, so a bundle's
  networks take their weights only from the bundle's own safetensors files
  (``export.codec.Reader.network``).

A candidate's ``pretrained``:

- ``imagenet``: the architecture's default weights in timm (``timm/resnet18.a1_in1k``);
- ``hf-hub:ORG/NAME[@REVISION]``: any timm model of the candidate's architecture on the hub
  (only its ``model.safetensors``);
- ``/path/resnet18.safetensors`` (or ``.pth``): that file;
- ``/path/folder``: its ``weights.json`` entry for the architecture, ``<arch>.safetensors``/``.pth``
  in it, or timm's caches (``models--timm--<arch>.<tag>/snapshots/*/model.safetensors``, ``checkpoints/<file>``);
- ``true``: the folder named by ``AFF_BENCHMARK_WEIGHTS``, which must hold them;
- unset: that folder's weights when it has them, else random initialisation;
- ``false``: random initialisation.

``imagenet`` and ``hf-hub:`` look in ``AFF_BENCHMARK_WEIGHTS``, then in ``<cache>/weights``, and
download only when neither holds them; where the hub cannot be reached, ``WeightsUnavailable``
names the command that fetches them on another machine::

    choice = choose_weights("resnet18", "imagenet")     # WeightsChoice: source, path, hub id, label()
    state = read_weights(choice.path)                    # {name: tensor}, SHA-256 checked
"""

from __future__ import annotations

import contextlib
import contextvars
import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchmark.candidates import weights_store as store
from benchmark.errors import UserError
from benchmark.paths import cache_dir

if TYPE_CHECKING:
    import torch

_BUNDLE_ONLY: contextvars.ContextVar[bool] = contextvars.ContextVar("bundle_weights_only", default=False)

WEIGHTS_ENV = "AFF_BENCHMARK_WEIGHTS"
IMAGENET = "imagenet"
RANDOM_LABEL = "random initialisation"
_WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pth.tar", ".pt", ".bin")
_HUB_FILES = ("model.safetensors", "pytorch_model.bin", "open_clip_pytorch_model.bin")


class WeightsUnavailable(UserError):
    """Hub weights that no folder holds and the hub cannot give now (offline, no network)."""


@dataclass(frozen=True)
class WeightsChoice:
    """Where one network's starting weights come from: ``source`` is random, imagenet, hf-hub, file or folder."""

    source: str
    path: Path | None = None
    hub_id: str | None = None

    @property
    def name(self) -> str:
        """The hub id, or the file's name (never its folder), or ``random``."""
        return self.hub_id or (self.path.name if self.path is not None else "random")

    def label(self) -> str:
        """In words: ``ImageNet weights (timm/resnet18.a1_in1k)``, ``random initialisation``, ..."""
        if self.source == "random":
            return RANDOM_LABEL
        if self.source == IMAGENET:
            return f"ImageNet weights ({self.hub_id})"
        if self.source == "hf-hub":
            return f"hub weights ({self.hub_id})"
        return f"weights file {self.name}"

    def record(self) -> dict:
        """What the manifest records: source, name, label, SHA-256, size (and the file, for the run folder)."""
        out: dict[str, Any] = {"source": self.source, "name": self.name, "label": self.label()}
        if self.path is not None:
            out.update(sha256=store.sha256_file(self.path), size=self.path.stat().st_size, file=str(self.path))
        return out


def weights_folder() -> Path:
    """The harness's own weights folder (downloads go here): ``<cache>/weights``."""
    return cache_dir() / "weights"


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
    """The weight file for ``arch`` in ``folder`` (its ``weights.json`` entries, flat files or timm's cache
    layouts), or None."""
    import timm

    folder = Path(folder)
    recorded = store.lookup_architecture(folder, arch)
    if recorded is not None:
        return recorded
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
    and DDP / ``torch.compile`` prefixes are unwrapped as timm does. The bytes read are the bytes
    decoded, and a file that a ``weights.json`` records must have its recorded SHA-256."""
    import argparse

    import torch

    _no_files_from_bundles(path)
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UserError(f"weights file {path} cannot be read ({exc.strerror or type(exc).__name__})") from None
    recorded = store.recorded_entry(path)
    if recorded is not None and store.sha256_bytes(data) != recorded[1]:
        raise UserError(f"weights file {path} does not match the SHA-256 recorded in {recorded[2]} (recorded "
                        f"{recorded[1][:12]}..., found {store.sha256_bytes(data)[:12]}...); it changed since it was "
                        "fetched: fetch it again with `python -m benchmark weights fetch`, or remove the folder")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load

            ckpt: Any = load(data)
        else:
            with torch.serialization.safe_globals([argparse.Namespace]):
                ckpt = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
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


def hub_overlay(path: Path | None) -> dict:
    """The normalisation (``mean``, ``std``) a hub model's ``config.json`` beside ``path`` gives, for timm's
    ``pretrained_cfg_overlay`` ({} without one)."""
    config = None if path is None else Path(path).parent / "config.json"
    if config is None or not config.is_file():
        return {}
    from timm.models._hub import load_model_config_from_path

    try:
        cfg, _, _ = load_model_config_from_path(config.parent)
    except (OSError, ValueError, KeyError, TypeError):
        return {}
    return {k: tuple(cfg[k]) for k in ("mean", "std") if isinstance(cfg.get(k), (list, tuple))}


def resolve_weights(arch: str, pretrained: Any) -> Path | None:
    """The weight file a candidate asks for (``choose_weights``), None for random init."""
    return choose_weights(arch, pretrained).path


def _normalise(pretrained: Any) -> Any:
    """None (unset), True, False, ``imagenet``, ``hf-hub:...`` or a path."""
    if isinstance(pretrained, str):
        word = pretrained.strip().lower()
        if word in ("", "none", "false", "random", "no"):
            return False
        if word in ("true", "yes"):
            return True
        if word == "auto":
            return None
        if word == IMAGENET:
            return IMAGENET
    return pretrained


def choose_weights(arch: str, pretrained: Any) -> WeightsChoice:
    """Where ``arch``'s starting weights come from, given a candidate's ``pretrained`` (module docstring).

    The only place that decides where weights may come from: a named file or folder,
    ``AFF_BENCHMARK_WEIGHTS``, the harness's weights folder, or the hub for ``imagenet`` /
    ``hf-hub:``; never while a bundle loads or runs.
    """
    if pretrained not in (None, False) or os.environ.get(WEIGHTS_ENV, "").strip():
        _no_files_from_bundles(pretrained)
    pretrained = _normalise(pretrained)
    if pretrained is False:
        return WeightsChoice("random")
    if pretrained == IMAGENET or (isinstance(pretrained, str) and pretrained.startswith("hf-hub:")):
        return _hub_weights(arch, pretrained)
    if isinstance(pretrained, (str, Path)):
        path = Path(pretrained).expanduser()
        if path.is_file():
            return _known(arch, path, "file")
        if path.is_dir():
            found = find_weights(arch, path)
            if found is None:
                raise UserError(
                    f"candidate key 'pretrained' names the folder {path}, which holds no weights for {arch!r} "
                    f"(looked for {arch}.safetensors/.pth and timm's cache layout); add the file or remove the key")
            return _known(arch, found, "folder")
        raise UserError(
            f"candidate key 'pretrained' names {path}, which does not exist; give an existing .safetensors/.pth "
            f"file or folder with weights for {arch!r}, imagenet, or remove the key for random initialisation")
    folder = _env_folder()
    if folder is not None:
        found = find_weights(arch, folder)
        if found is None and pretrained is True:
            raise UserError(
                f"pretrained weights for {arch!r} were asked for (pretrained: true) but {folder} ({WEIGHTS_ENV}) "
                f"holds none; put {arch}.safetensors there, fetch them with `python -m benchmark weights fetch "
                f"{arch} --out {folder}`, or set pretrained: false")
        return _known(arch, found, "folder") if found is not None else WeightsChoice("random")
    if pretrained is True:
        raise UserError(
            f"pretrained weights for {arch!r} were asked for (pretrained: true) but no file was named; set "
            f"{WEIGHTS_ENV} to a folder holding {arch}.safetensors, give the file path as 'pretrained', or write "
            f"pretrained: imagenet")
    return WeightsChoice("random")


def _known(arch: str, path: Path, source: str) -> WeightsChoice:
    """A file as a choice: a file some ``weights.json`` records is named by its hub id (ImageNet when it is
    the architecture's default), any other file by ``source`` and its name."""
    from benchmark.candidates.weights_hub import imagenet_hub_id

    hit = store.recorded_entry(path)
    if hit is None:
        return WeightsChoice(source, path)
    return WeightsChoice(IMAGENET if hit[0] == imagenet_hub_id(arch, required=False) else "hf-hub", path, hit[0])


def _env_folder() -> Path | None:
    env = os.environ.get(WEIGHTS_ENV, "").strip()
    if not env:
        return None
    folder = Path(env).expanduser()
    if not folder.is_dir():
        raise UserError(f"{WEIGHTS_ENV}={folder} is not a folder; point it at a folder of weights (one that "
                        "`python -m benchmark weights fetch --out` wrote, or of <arch>.safetensors files) or unset it")
    return folder


def _hub_weights(arch: str, pretrained: str) -> WeightsChoice:
    """``imagenet`` / ``hf-hub:``: from ``AFF_BENCHMARK_WEIGHTS`` or ``<cache>/weights`` when they hold them
    (no network), else fetched from the hub into ``<cache>/weights``."""
    from benchmark.candidates.weights_hub import HubUnreachable, fetch, hub_id_of, imagenet_hub_id

    source = IMAGENET if pretrained == IMAGENET else "hf-hub"
    hub_id = imagenet_hub_id(arch, required=False) if source == IMAGENET else hub_id_of(pretrained)
    if hub_id is None:
        raise WeightsUnavailable(f"pretrained: imagenet: timm has no published weights for {arch!r}; give a "
                                 "weights file or folder as 'pretrained', or pretrained: false")
    env = _env_folder()
    for folder in (env, weights_folder()):
        found = store.lookup(folder, hub_id) if folder is not None else None
        if found is not None:
            return WeightsChoice(source, found, hub_id)
    if source == IMAGENET and env is not None:   # a folder of <arch>.safetensors files, as before weights.json
        found = find_weights(arch, env)
        if found is not None:
            return _known(arch, found, "folder")
    try:
        return WeightsChoice(source, fetch(hub_id, arch, weights_folder()), hub_id)
    except HubUnreachable as exc:
        what = "ImageNet weights" if source == IMAGENET else f"hub weights {pretrained}"
        name = arch if source == IMAGENET else pretrained
        raise WeightsUnavailable(
            f"{arch}: {what} are not in the cache and the hub cannot be reached ({exc}); run `python -m benchmark "
            f"weights fetch {name} --out DIR` on a machine with internet, copy DIR here and set "
            f"{WEIGHTS_ENV}=DIR") from None
