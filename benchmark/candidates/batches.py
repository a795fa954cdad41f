"""Sample-aligned arrays served as device batches: on the GPU once when they fit, else prefetched.

    src = BatchSource({"image": uint8_images, "y": labels}, torch.device("cuda"))
    for batch in src.batches(torch.randperm(len(src)), 64, drop_last=True):
        batch["image"]            # (64, S, S) uint8 on the device

``in_background`` runs any iterator in a worker thread a few items ahead.
"""

from __future__ import annotations

import queue
import threading
import warnings
from typing import Any, Iterator, Mapping, TypeVar

import numpy as np
import torch

T = TypeVar("T")
Batch = dict[str, torch.Tensor]

# Share of the GPU's free memory that sample data may take when moved there once.
DEVICE_DATA_FRACTION = 0.35


class BatchSource:
    """Sample-aligned tensors served as device batches by index.

    ``arrays`` maps names to arrays with the same first dimension (uint8 images, float32
    labels, register rows repeated per image, ...). On a GPU they are moved there once when
    their size is at most ``max_fraction`` of the free memory; otherwise they stay on the
    host and a background thread gathers each batch into pinned memory and copies it
    asynchronously (``on_device`` shows which).

        src = BatchSource({"image": imgs, "y": y}, torch.device("cpu"))
        for batch in src.batches(torch.randperm(len(src)), 32):
            batch["image"].shape        # (32, S, S) uint8
    """

    def __init__(self, arrays: Mapping[str, Any], device: torch.device, *,
                 max_fraction: float = DEVICE_DATA_FRACTION, on_device: bool | None = None) -> None:
        self.device = torch.device(device)
        with warnings.catch_warnings():   # read-only arrays (memory-mapped caches) are only read here
            warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
            self.host = {k: torch.as_tensor(np.ascontiguousarray(v) if isinstance(v, np.ndarray) else v)
                         for k, v in arrays.items()}
        lengths = {int(t.shape[0]) for t in self.host.values()}
        if len(lengths) > 1:
            raise ValueError(f"BatchSource arrays differ in length: { {k: t.shape[0] for k, t in self.host.items()} }")
        self.n = lengths.pop() if lengths else 0
        self.nbytes = sum(t.numel() * t.element_size() for t in self.host.values())
        if self.device.type != "cuda":
            self.on_device = True            # CPU: the host tensors are the device tensors
        elif on_device is None:
            free, _ = torch.cuda.mem_get_info(self.device)
            self.on_device = self.nbytes <= max_fraction * free
        else:
            self.on_device = bool(on_device)
        self.tensors = ({k: t.to(self.device) for k, t in self.host.items()}
                        if self.on_device and self.device.type == "cuda" else self.host)

    def __len__(self) -> int:
        return self.n

    def release(self) -> None:
        """Drop the device copies (the caller still owns the host arrays)."""
        self.tensors = self.host = {}
        self.n = 0

    @staticmethod
    def _spans(n: int, batch_size: int, drop_last: bool) -> list[tuple[int, int]]:
        if n == 0:
            return []
        if drop_last and n >= batch_size:
            stop = (n // batch_size) * batch_size
        else:
            stop = n
        return [(s, min(s + batch_size, stop)) for s in range(0, stop, batch_size)]

    def batches(self, order: torch.Tensor, batch_size: int, *, drop_last: bool = False) -> Iterator[Batch]:
        """Batches of the samples in ``order`` (a CPU int64 index tensor), on the device."""
        spans = self._spans(len(order), batch_size, drop_last)
        if self.on_device:
            idx_all = order.to(self.device, non_blocking=True)
            for s, e in spans:
                idx = idx_all[s:e]
                yield {k: t.index_select(0, idx) for k, t in self.tensors.items()}
        else:
            yield from self._prefetched(order, spans)

    def _prefetched(self, order: torch.Tensor, spans: list[tuple[int, int]]) -> Iterator[Batch]:
        stream = torch.cuda.Stream(self.device)

        def produce() -> Iterator[tuple[Batch, torch.cuda.Event]]:
            with torch.cuda.stream(stream):
                for s, e in spans:
                    idx = order[s:e]
                    out = {}
                    for k, t in self.host.items():
                        buf = torch.empty((len(idx),) + tuple(t.shape[1:]), dtype=t.dtype, pin_memory=True)
                        torch.index_select(t, 0, idx, out=buf)
                        out[k] = buf.to(self.device, non_blocking=True)
                    event = torch.cuda.Event()
                    event.record(stream)
                    yield out, event

        for out, event in in_background(produce()):
            current = torch.cuda.current_stream(self.device)
            current.wait_event(event)
            for t in out.values():
                t.record_stream(current)
            yield out


def in_background(items: Iterator[T], depth: int = 3) -> Iterator[T]:
    """Iterate ``items`` in a worker thread, up to ``depth`` ahead; errors surface in the caller.

    Closing the returned generator early stops the worker.

        for batch in in_background(load_batches()): train(batch)
    """
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def work() -> None:
        try:
            for item in items:
                if stop.is_set():
                    return
                q.put((True, item))
            q.put((True, done))
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            q.put((False, exc))
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                close()          # in this thread, so a generator's context managers exit here

    worker = threading.Thread(target=work, daemon=True)
    worker.start()
    try:
        while True:
            ok, item = q.get()
            if not ok:
                raise item
            if item is done:
                return
            yield item
    finally:
        stop.set()
        while worker.is_alive():
            try:
                q.get_nowait()
            except queue.Empty:
                worker.join(0.01)
