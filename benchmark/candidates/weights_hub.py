"""Weights from a model hub (the Hugging Face hub, where timm publishes its weights), fetched only when asked for.

``resolve_weights`` (``weights.py``) calls ``fetch`` for ``pretrained: imagenet`` or
``pretrained: hf-hub:ORG/NAME`` when no weights folder holds them yet; nothing else here
touches the network. The user's own hub settings are read when a download starts:
``HF_ENDPOINT`` (a mirror) and ``HF_HUB_OFFLINE`` (no network at all), as well as
huggingface_hub's token and proxy settings::

    imagenet_hub_id("resnet18")                      # 'timm/resnet18.a1_in1k' (timm's pretrained_cfg)
    hub_id_of("hf-hub:timm/resnet50.a1_in1k")        # 'timm/resnet50.a1_in1k'
    path = fetch("timm/resnet18.a1_in1k", "resnet18", folder)   # folder/timm--resnet18.a1_in1k/model.safetensors

Only ``model.safetensors`` is ever downloaded (a hub model with pickled weights only is
refused: unpickling runs code), with the model's ``config.json`` beside it. The file's
SHA-256 is checked against the hub's (its ETag) and recorded in the folder's
``weights.json`` (``weights_store``), against which every later load is checked.
"""

from __future__ import annotations

import datetime as dt
import os
import re
from pathlib import Path

from benchmark.candidates import weights_store as store
from benchmark.errors import UserError

HUB_PREFIX = "hf-hub:"
WEIGHTS_FILE = "model.safetensors"     # the only weights file taken from a hub
CONFIG_FILE = "config.json"
DEFAULT_ENDPOINT = "https://huggingface.co"
HUB_TIMEOUT_S = 10.0
_SHA256 = re.compile(r"[0-9a-f]{64}")


class HubUnreachable(Exception):
    """The hub cannot be reached (``HF_HUB_OFFLINE``, no network, no route); the message says why."""


def imagenet_hub_id(arch: str, *, required: bool = True) -> str | None:
    """The hub id of ``arch``'s default pretrained weights in timm (``pretrained_cfg.hf_hub_id``)."""
    import timm

    cfg = timm.models.get_pretrained_cfg(arch) if timm.is_model(arch) else None
    hub_id = getattr(cfg, "hf_hub_id", None) if cfg is not None else None
    if not hub_id and required:
        raise UserError(f"pretrained: imagenet: timm has no published weights for {arch!r}; give a weights file "
                        f"or folder as 'pretrained', or pretrained: false")
    return hub_id or None


def hub_id_of(pretrained: str) -> str:
    """``hf-hub:ORG/NAME[@REVISION]`` -> ``ORG/NAME[@REVISION]`` (UserError for anything else)."""
    hub_id = pretrained[len(HUB_PREFIX):].strip()
    if not re.fullmatch(r"[\w.-]+/[\w.-]+(@[\w.-]+)?", hub_id):
        raise UserError(f"candidate key 'pretrained': {pretrained!r} is not a hub model; write hf-hub:ORG/NAME "
                        "(e.g. hf-hub:timm/resnet18.a1_in1k), imagenet, a file or a folder")
    return hub_id


def offline_reason() -> str | None:
    """Why the hub must not be used now (``HF_HUB_OFFLINE`` set), else None."""
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if os.environ.get(var, "").strip().upper() in ("1", "ON", "YES", "TRUE"):
            return f"{var} is set"
    return None


def endpoint() -> str:
    """The hub to fetch from: ``HF_ENDPOINT`` when set (a mirror), else huggingface.co."""
    return (os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


def _unreachable(exc: BaseException) -> bool:
    """A network failure (no route, refused, timed out, offline mode), as opposed to an answer from the hub."""
    from huggingface_hub.errors import OfflineModeIsEnabled

    if isinstance(exc, (OfflineModeIsEnabled, ConnectionError, TimeoutError)):
        return True
    return any(c.__name__ == "TransportError" for c in type(exc).__mro__)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:160]


def _metadata(repo: str, filename: str, revision: str | None):
    """The hub's answer about one file (size, ETag, commit); None when the model has no such file."""
    from huggingface_hub import get_hf_file_metadata, hf_hub_url
    from huggingface_hub.errors import GatedRepoError, RemoteEntryNotFoundError, RepositoryNotFoundError

    url = hf_hub_url(repo, filename, revision=revision, endpoint=endpoint())
    try:
        return get_hf_file_metadata(url, timeout=HUB_TIMEOUT_S, endpoint=endpoint())
    except RemoteEntryNotFoundError:
        return None
    except GatedRepoError:
        raise UserError(f"hub model {repo} is gated: accept its terms on the hub and set HF_TOKEN, or fetch its "
                        "weights elsewhere and give the file as 'pretrained'") from None
    except RepositoryNotFoundError:
        raise UserError(f"hub model {repo} does not exist at {endpoint()} (or needs HF_TOKEN); check the name "
                        f"in 'pretrained'") from None
    except Exception as exc:  # noqa: BLE001 - network errors are told apart from the hub's answers
        if _unreachable(exc):
            raise HubUnreachable(f"{endpoint()} cannot be reached ({_first_line(exc)})") from None
        raise UserError(f"hub model {repo}: {filename} cannot be fetched from {endpoint()} ({_first_line(exc)})") from None


def _download(repo: str, filename: str, revision: str | None, into: Path) -> Path:
    from huggingface_hub import hf_hub_download

    try:
        return Path(hf_hub_download(repo, filename, revision=revision, local_dir=into, endpoint=endpoint(),
                                    etag_timeout=HUB_TIMEOUT_S))
    except Exception as exc:  # noqa: BLE001 - as in _metadata
        if _unreachable(exc):
            raise HubUnreachable(f"{endpoint()} cannot be reached ({_first_line(exc)})") from None
        raise UserError(f"hub model {repo}: {filename} could not be downloaded ({_first_line(exc)})") from None


def hub_architecture(config: Path) -> str | None:
    """The timm architecture a hub model's ``config.json`` names (timm's own parser), or None."""
    from timm.models._hub import load_model_config_from_path

    try:
        _, name, _ = load_model_config_from_path(config.parent)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return str(name)


def fetch(hub_id: str, arch: str | None, folder: Path) -> Path:
    """Download ``hub_id``'s ``model.safetensors`` (and ``config.json``) into ``folder`` and record them.

    ``arch`` (None: whatever the model's config names) must be the architecture the config
    names. HubUnreachable when the hub cannot be reached; UserError for a model that has
    no safetensors weights, another architecture, or a file whose SHA-256 differs from the hub's.
    """
    import timm

    why = offline_reason()
    if why:
        raise HubUnreachable(why)
    repo, _, revision = hub_id.partition("@")
    into = Path(folder) / store.folder_name(hub_id)
    meta = _metadata(repo, WEIGHTS_FILE, revision or None)
    if meta is None:
        raise UserError(f"hub model {repo} has no {WEIGHTS_FILE}; only safetensors weights are taken from a hub "
                        "(pickled weights can run code when loaded): convert them to safetensors and give the file")
    named = None
    if _metadata(repo, CONFIG_FILE, revision or None) is not None:
        named = hub_architecture(_download(repo, CONFIG_FILE, revision or None, into))
    if arch is not None and named is not None and named.partition(".")[0] != arch.partition(".")[0]:
        raise UserError(f"hub model {repo} is a {named}, but the candidate's architecture is {arch}; set "
                        f"arch: {named.partition('.')[0]} or choose a {arch} model")
    path = _download(repo, WEIGHTS_FILE, revision or None, into)
    digest = store.sha256_file(path)
    etag = (meta.etag or "").strip('"').lower()
    if _SHA256.fullmatch(etag) and etag != digest:
        path.unlink(missing_ok=True)
        raise UserError(f"hub model {repo}: the downloaded {WEIGHTS_FILE} has SHA-256 {digest[:12]}..., the hub "
                        f"says {etag[:12]}...; the download was removed, fetch it again")
    store.record(folder, hub_id, path, architecture=(named or arch or "?").partition(".")[0],
                 source=f"{endpoint()}/{repo}", revision=meta.commit_hash, timm=timm.__version__,
                 fetched=dt.date.today().isoformat())
    return path
