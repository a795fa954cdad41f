"""Where and how a torch fit runs: device, autocast dtype, seeds, determinism, threads, out-of-memory retry.

    device = resolve_device("auto")                       # CUDA when available, else the CPU
    configure_determinism(ctx.extra.get("deterministic", False), device)
    with torch_threads(cpu_threads(ctx.extra)):
        result = run_with_oom_retry(lambda bs: fit(bs), 64, notes=ctx.notes)   # halves the batch on OOM

Determinism (``configure_determinism``; ``ctx.extra["deterministic"]``, the ``--deterministic``
flag): what is bit-identical between two runs with the same data, seed, profile and batch
size (a batch halved by an out-of-memory retry is another computation):

- CPU, either setting: weights and predictions are bit-identical for the same thread count,
  machine and torch build (CPU kernels sum in an order fixed by the thread count; another
  thread count may change the last bits). The switch also makes the few CPU ops with a
  parallel accumulation (``index_put`` with accumulate, tensor-list indexing backward)
  deterministic, so on and off may differ from each other in the last bits.
- GPU, switch on: ``torch.use_deterministic_algorithms(True, warn_only=True)``, cuDNN
  autotuning off, ``cudnn.deterministic``, ``CUBLAS_WORKSPACE_CONFIG=:4096:8``. Convolutions,
  matmuls (cuBLAS), ``index_add``/``index_copy``/``index_select`` backward, ``scatter_add``,
  ``gather`` and embedding backward then use deterministic kernels, and bf16 autocast rounds
  the same way each time, so runs on the same GPU model, driver, CUDA/cuDNN and torch
  versions are bit-identical. ``warn_only``: an op without a deterministic CUDA kernel warns
  instead of failing the trial. The harness's models meet one: ``AdaptiveAvgPool2d``
  backward (timm's global average pooling), where a 1x1 output gives each input exactly one
  gradient term, so there is no summation order to vary. Another GPU model or library
  version is not covered.
- GPU, switch off (the default, for speed): cuDNN autotuning (``cudnn.benchmark``) times
  candidate kernels per input shape and may pick others in another run; atomics in
  ``scatter``/``index_add``, embedding backward and some convolution backward kernels sum in
  a varying order. Results then differ in the last bits between runs, can drift apart over
  epochs (early stopping may pick another epoch) and agree in metrics only up to training
  noise.
"""

from __future__ import annotations

import gc
import os
import random
import warnings
from contextlib import contextmanager
from typing import Any, Callable, Mapping, TypeVar

import numpy as np
import torch

from benchmark.errors import UserError

T = TypeVar("T")


def resolve_device(name: str | None) -> torch.device:
    """``"auto"``/None -> CUDA when available, else CPU; ``"cuda"`` without a GPU is a UserError."""
    name = (name or "auto").strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserError("device 'cuda' was asked for (--device or profile) but PyTorch sees no CUDA GPU; use --device cpu or auto")
    return dev


def amp_dtype(device: torch.device) -> torch.dtype | None:
    """Autocast dtype: bf16 on CUDA where supported, else fp16 (with GradScaler); None on CPU."""
    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


CUBLAS_WORKSPACE_CONFIG = ":4096:8"
_warned_cublas = False


def configure_determinism(deterministic: bool, device: torch.device | str) -> None:
    """Deterministic GPU kernels (``deterministic``) or the fastest ones (see the module docstring).

    True: ``torch.use_deterministic_algorithms(True, warn_only=True)``, ``cudnn.benchmark``
    off, ``cudnn.deterministic`` on, and ``CUBLAS_WORKSPACE_CONFIG`` set when CUDA is not yet
    initialised (else a warning, once: set it before the process first uses CUDA). False:
    deterministic algorithms and ``cudnn.deterministic`` off, ``cudnn.benchmark`` on for a
    CUDA device (left as it is for the CPU). The setting is process-wide; the harness calls
    this at the start of every torch fit::

        configure_determinism(ctx.extra.get("deterministic", False), torch.device("cuda"))
    """
    global _warned_cublas
    device = torch.device(device)
    if deterministic:
        if not torch.cuda.is_initialized():
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE_CONFIG)
        elif os.environ.get("CUBLAS_WORKSPACE_CONFIG") not in (":4096:8", ":16:8") and not _warned_cublas:
            _warned_cublas = True
            warnings.warn("deterministic: CUDA was initialised before CUBLAS_WORKSPACE_CONFIG was set, so cuBLAS "
                          "matmuls may not be deterministic; set CUBLAS_WORKSPACE_CONFIG=:4096:8 in the environment "
                          "before starting the run", RuntimeWarning, stacklevel=2)
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
    else:
        torch.use_deterministic_algorithms(False)
        torch.backends.cudnn.deterministic = False
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = True


def free_memory() -> None:
    """Collect garbage and hand cached CUDA blocks back (call after ``del`` of big tensors)."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


@contextmanager
def torch_threads(n: int | None):
    """Run a block with ``torch.set_num_threads(n)``, restoring the old value afterwards."""
    old = torch.get_num_threads()
    if n:
        torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(old)


def cpu_threads(extra: Mapping[str, Any]) -> int:
    """Threads for CPU work: ``ctx.extra['n_threads']``, else all cores."""
    return int(extra.get("n_threads") or os.cpu_count() or 1)


def is_oom(exc: BaseException) -> bool:
    return isinstance(exc, torch.OutOfMemoryError) or (
        isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower())


def run_with_oom_retry(fn: Callable[[int], T], batch_size: int, *, notes: list | None = None,
                       what: str = "batch", min_batch: int = 1) -> T:
    """Call ``fn(batch_size)``; on out of memory free memory and retry with half the batch.

    Each retry is recorded in ``notes`` as ``"oom: <what> 256->128"``. Below ``min_batch``
    the last out-of-memory error is raised again (the trial fails with that reason).
    """
    while True:
        message = None
        try:
            return fn(batch_size)
        except Exception as exc:  # noqa: BLE001 - filtered just below
            if not is_oom(exc):
                raise
            message = str(exc).splitlines()[0] if str(exc) else "out of memory"
        # Outside the except block: the traceback (and the tensors its frames hold) is gone.
        free_memory()
        new = batch_size // 2
        if new < min_batch:
            raise torch.OutOfMemoryError(f"out of memory even with {what} {batch_size}: {message}")
        if notes is not None:
            notes.append(f"oom: {what} {batch_size}->{new}")
        batch_size = new
