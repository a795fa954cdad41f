"""Training throughput of the harness's image loop against a bare timm loop, in one process.

    python -m benchmark.tools.throughput                              # resnet18/50 at 224 and 512 px
    python -m benchmark.tools.throughput --device cpu --models resnet18 --sizes 64 --batch 16 --steps 3
    python -m benchmark.tools.throughput --deterministic       # both loops with deterministic kernels
    python -m benchmark.tools.throughput --models resnet18 --sizes 224 --concurrent 1,2,4   # fits sharing a device
    python -m benchmark.tools.throughput --compile default,reduce-overhead   # would torch.compile pay?

For each model and size it times one training epoch of the ``timm_cnn`` family (its own
code path: uint8 images cached in memory, moved to the device, normalised and augmented
there, bf16 autocast, channels_last, AdamW, schedule, loss) after a warm-up epoch, and
``--steps`` steps of a bare loop (random tensors already on the device, same model,
resolution, batch, autocast, channels_last and fused AdamW) after warm-up steps. It prints
images per second for both and their ratio (the target on a GPU: >= 0.9). Both loops run
with the same kernel settings: cuDNN autotuning by default, or deterministic algorithms with
``--deterministic`` (``torch_device.configure_determinism``).

``--compile MODE,...`` adds, per mode of ``torch.compile``, the bare loop with the model
compiled (its first step, which compiles, is timed apart) and its ratio to the eager bare
loop: the figure that decides whether compiling the networks would pay on this machine (the
harness runs them eager).

``--concurrent 1,2,4`` measures instead what ``run --workers N --gpu-share 1/k`` relies on: k
harness fits at once on one device, in k processes started together (as Ray's workers), each
with 1/k of the CPU threads. It prints each k's images/s summed over its fits and the gain
over one fit alone: above 1 a fit leaves the device partly idle and sharing it pays
(``plan`` prices fits sharing a GPU with ``plan.schedule.GPU_SHARE_UTIL``).
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch
import torch.nn.functional as F

from benchmark.candidates.base import TrialContext, get_family
from benchmark.candidates.torch_device import amp_dtype, configure_determinism, free_memory, resolve_device
from benchmark.candidates.torch_train import make_optimizer
from benchmark.data.cohort import PatientData


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def harness_images_per_s(arch: str, size: int, batch: int, steps: int, device: torch.device,
                         threads: int, aug: float, deterministic: bool = False) -> float:
    """Images/s of the family's second training epoch (the first warms up), ``steps`` batches long."""
    rng = np.random.default_rng(0)
    n = batch * steps
    y = (rng.random(n) < 0.1).astype(np.int64)
    y[:2] = [0, 1]
    data = PatientData(patients=np.arange(n), register=None,
                       images=rng.integers(0, 256, (n, size, size), dtype=np.uint8),
                       image_owner=np.arange(n), y=y)
    ctx = TrialContext(device=str(device), seed=0, max_epochs=2, image_size=size, extra={"n_threads": threads, "deterministic": deterministic})
    fam = get_family("timm_cnn")(arch=arch, pretrained=False, batch_size=batch, epochs=2, patience=None,
                                 aug_strength=aug, imbalance="pos_weight", schedule="cosine")
    fam.fit(data, None, ctx)
    epoch = fam.history_[-1]
    for note in ctx.notes:
        if not note.startswith("weights:"):
            print(f"  note: {note}")
    del fam
    return epoch["samples"] / epoch["train_s"]


def bare_images_per_s(arch: str, size: int, batch: int, steps: int, device: torch.device, warmup: int,
                      compile_mode: str | None = None) -> tuple[float, float]:
    """(images/s, seconds of the first step) of a hand-written loop on random tensors already on
    the device, the model compiled with ``torch.compile(mode=compile_mode)`` when given (its first
    step then compiles)."""
    import timm

    torch.manual_seed(0)
    model = timm.create_model(arch, in_chans=1, num_classes=1).to(device).to(memory_format=torch.channels_last)
    model.train()
    forward = torch.compile(model, mode=compile_mode) if compile_mode else model
    opt = make_optimizer(model, 1e-3, 1e-4, device)   # the harness's AdamW (fused): the same optimiser step
    x = torch.randn(batch, 1, size, size, device=device).contiguous(memory_format=torch.channels_last)
    y = (torch.rand(batch, device=device) < 0.1).float()
    dtype = amp_dtype(device)

    def step() -> None:
        with torch.autocast(device.type, dtype=dtype or torch.bfloat16, enabled=dtype is not None):
            logits = forward(x).reshape(-1)
        loss = F.binary_cross_entropy_with_logits(logits.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    t0 = time.perf_counter()
    step()
    _sync(device)
    first_s = time.perf_counter() - t0
    for _ in range(warmup):
        step()
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    elapsed = time.perf_counter() - t0
    return batch * steps / elapsed, first_s


def _concurrent_fit(args: tuple) -> float:
    """One of k fits started together (a spawned process): its harness images/s."""
    arch, size, batch, steps, device, threads, aug, barrier = args
    torch.set_num_threads(threads)
    barrier.wait()
    return harness_images_per_s(arch, size, batch, steps, resolve_device(device), threads, aug)


def concurrent_images_per_s(arch: str, size: int, batch: int, steps: int, device: str, threads: int, aug: float,
                            k: int) -> list[float]:
    """Images/s of each of ``k`` harness fits run at once in ``k`` processes on one device."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")   # CUDA cannot be used in a forked child
    with ctx.Manager() as manager:
        barrier = manager.Barrier(k)
        with ctx.Pool(k) as pool:
            work = [(arch, size, batch, steps, device, max(1, threads // k), aug, barrier) for _ in range(k)]
            return pool.map(_concurrent_fit, work)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmark.tools.throughput", description=__doc__.splitlines()[0])
    p.add_argument("--models", default="resnet18,resnet50", help="comma-separated timm architectures")
    p.add_argument("--sizes", default="224,512", help="comma-separated image sides in px")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--steps", type=int, default=50, help="timed steps (= batches of the harness epoch)")
    p.add_argument("--warmup", type=int, default=None, help="bare-loop warm-up steps (default: min(steps, 10))")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="CPU threads (CPU device)")
    p.add_argument("--aug", default="1.0",
                   help="the harness's aug_strength (0 = off); comma-separated: one harness row each")
    p.add_argument("--deterministic", action="store_true",
                   help="deterministic kernels in both loops (default: cuDNN autotuning)")
    p.add_argument("--compile", default="", metavar="MODE,...",
                   help="also the bare loop compiled with torch.compile, per mode (default, reduce-overhead, "
                        "max-autotune)")
    p.add_argument("--concurrent", default=None, metavar="K,...",
                   help="instead: K harness fits at once on the device, for each K (e.g. 1,2,4)")
    args = p.parse_args(argv)
    if args.concurrent:
        return _main_concurrent(args)

    device = resolve_device(args.device)
    configure_determinism(args.deterministic, device)     # before CUDA starts (cuBLAS workspace variable)
    torch.set_num_threads(args.threads)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {args.threads} threads"
    augs = _items(args.aug, float)
    print(f"device: {name}; autocast: {amp_dtype(device)}; batch {args.batch}, {args.steps} steps; "
          f"deterministic: {args.deterministic}")
    print(f"{'model':<18}{'px':>6}{'aug':>5}{'harness img/s':>16}{'bare img/s':>14}{'ratio':>8}")
    warmup = args.warmup if args.warmup is not None else min(args.steps, 10)
    for arch in _items(args.models):
        for size in _items(args.sizes, int):
            hs = []
            for aug in augs:
                hs.append(harness_images_per_s(arch, size, args.batch, args.steps, device, args.threads, aug,
                                               args.deterministic))
                free_memory()
            b = bare_images_per_s(arch, size, args.batch, args.steps, device, warmup)[0]
            free_memory()
            for aug, h in zip(augs, hs):
                print(f"{arch:<18}{size:>6}{aug:>5g}{h:>16.1f}{b:>14.1f}{h / b:>8.2f}", flush=True)
            for mode in _items(args.compile):
                c, first_s = bare_images_per_s(arch, size, args.batch, args.steps, device, warmup, compile_mode=mode)
                print(f"{arch:<18}{size:>6}  bare compiled ({mode}): {c:.1f} img/s, {c / b:.2f}x eager; "
                      f"first step (compiling) {first_s:.1f} s", flush=True)
                free_memory()
    return 0


def _items(text: str, cast=str) -> list:
    """A comma-separated option as a list (``--models``, ``--sizes``, ``--aug``, ``--concurrent``)."""
    return [cast(t.strip()) for t in str(text).split(",") if t.strip()]


def _main_concurrent(args) -> int:
    device = resolve_device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {args.threads} threads"
    ks = _items(args.concurrent, int)
    aug = _items(args.aug, float)[0]
    print(f"device: {name}; batch {args.batch}, {args.steps} steps per fit, aug {aug:g}; fits at once: {ks}")
    print(f"{'model':<18}{'px':>6}{'fits':>6}{'img/s per fit':>16}{'img/s in all':>14}{'gain':>7}")
    for arch in _items(args.models):
        for size in _items(args.sizes, int):
            alone = None
            for k in ks:
                rates = concurrent_images_per_s(arch, size, args.batch, args.steps, str(device), args.threads,
                                                aug, k)
                total = sum(rates)
                alone = alone or (total if k == 1 else None)
                gain = f"{total / alone:>7.2f}" if alone else f"{'-':>7}"
                print(f"{arch:<18}{size:>6}{k:>6}{total / k:>16.1f}{total:>14.1f}{gain}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
