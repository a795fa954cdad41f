"""The makespan of the run plan on N workers and G GPUs: list scheduling at the priced durations.

On several workers (``plan --workers N --gpus G --gpu-share S``, ``run --workers``) the run
takes its *makespan*: ``makespan`` simulates list scheduling of the run plan's units (a unit
waits for its ``needs``, holds one of N worker slots and, for a family that trains on the GPU,
S of one GPU) at the priced durations, and gives every unit's start and end, the critical
path and lower bounds::

    sched = priced.makespan(units, workers=8, gpus=8, gpu_share=0.25)
    sched.makespan, sched.speedup, sched.critical_s, sched.start[key], sched.end[key]
"""

from __future__ import annotations

from dataclasses import dataclass

# k network units sharing one GPU each run at 1 / max(1, k * GPU_SHARE_UTIL) of their priced speed.
# Measured on an H200 (throughput --concurrent, resnet18 at 224 px, batch 64, separate processes):
# two fits at once ran at 4309 img/s each against 5982 alone, 1.44x in all, so util = 5982 / (2 x 4309).
# Four at once did not finish inside its time limit: the model's 1.44x for k >= 2 is unmeasured beyond 2.
# Larger models fill the GPU better and would gain less.
GPU_SHARE_UTIL = 0.694
SCHEDULE_ORDERS = ("critical", "longest", "plan")


@dataclass
class Schedule:
    """A simulated run of the plan on ``workers`` slots and ``gpus`` GPUs: start and end of every unit."""

    start: dict                   # unit key -> seconds from the run's start
    end: dict                     # unit key -> seconds
    gpu: dict                     # unit key -> the GPU it shares (None: no GPU)
    makespan: float               # the last end
    total_s: float                # the sum of the durations (the sequential run)
    critical_s: float             # the longest chain through ``needs``: no schedule is shorter
    critical_chain: list          # the keys of that chain, first to last
    workers: int
    gpus: int
    gpu_share: float
    util: float
    order: str

    @property
    def speedup(self) -> float:
        return self.total_s / self.makespan if self.makespan > 0 else 1.0

    @property
    def per_gpu(self) -> int:
        """Network units one GPU holds at once."""
        return int(1.0 / self.gpu_share + 1e-9) if self.gpus else 0

    gpu_total_s: float = 0.0      # the sum of the GPU units' durations (0 without GPUs)

    @property
    def gpu_bound(self) -> float:
        """The GPU units' work over the GPUs at their best throughput (k units at once, each at
        1 / max(1, k x util) speed); 0 without GPUs."""
        if not self.gpus or not self.gpu_total_s:
            return 0.0
        best = max(k / max(1.0, k * self.util) for k in range(1, self.per_gpu + 1))
        return self.gpu_total_s / (self.gpus * best)

    @property
    def lower_bound(self) -> float:
        """No schedule is shorter: the critical path, the total work over the worker slots, the GPU work over the GPUs."""
        return max(self.critical_s, self.total_s / self.workers, self.gpu_bound)


def critical_path(units: list, durations: dict) -> tuple[float, list]:
    """(seconds, keys) of the longest chain of ``units`` through their ``needs`` at ``durations``."""
    order, needs, _ = _graph(units)
    top: dict = {}
    before: dict = {}
    for k in order:
        prev = max(needs[k], key=lambda n: top[n], default=None)
        top[k] = float(durations.get(k, 0.0)) + (top[prev] if prev is not None else 0.0)
        before[k] = prev
    if not top:
        return 0.0, []
    k = max(order, key=lambda x: top[x])
    best, chain = top[k], []
    while k is not None:
        chain.append(k)
        k = before[k]
    return best, chain[::-1]


def _graph(units: list) -> tuple[list, dict, dict]:
    """(keys in a dependency order, needs per key, dependants per key); needs outside ``units`` are
    taken as met (reused or not part of this run). A cycle is an error."""
    keys = [u.key for u in units]
    present = set(keys)
    if len(present) != len(keys):
        raise ValueError("makespan: two units with one key")
    needs = {u.key: tuple(n for n in dict.fromkeys(u.needs) if n in present) for u in units}
    after: dict = {k: [] for k in keys}
    for k, ns in needs.items():
        for n in ns:
            after[n].append(k)
    left = {k: len(ns) for k, ns in needs.items()}
    order = [k for k in keys if not left[k]]
    for k in order:                      # Kahn's algorithm, plan order among the ready
        for s in after[k]:
            left[s] -= 1
            if not left[s]:
                order.append(s)
    if len(order) != len(keys):
        raise ValueError("makespan: the units' needs form a cycle")
    return order, needs, after


def makespan(units: list, durations: dict, workers: int = 1, gpus: int = 0, gpu_share: float = 1.0,
             is_gpu_unit=None, *, util: float = GPU_SHARE_UTIL, order: str = "critical") -> Schedule:
    """Simulate list scheduling of the run plan ``units`` (``units.WorkUnit``s: ``key``, ``needs``).

    ``durations``: unit key -> seconds in one process, alone (``Priced.unit_durations``; a key
    missing: 0 s). A unit starts when every unit it ``needs`` has ended, a worker slot is free
    (``workers``: units at once, ``run --workers``) and, for a GPU unit (``is_gpu_unit(key)``)
    when ``gpus`` > 0, a GPU holds fewer than ``floor(1 / gpu_share)`` units: it takes the
    least-loaded such GPU. Without GPUs every unit runs on a worker slot at its priced speed
    (slots are assumed not to slow each other). ``k`` units sharing a GPU each run at
    ``1 / max(1, k * util)`` of their speed (``GPU_SHARE_UTIL``). A unit that must wait for a
    GPU lets the next ready unit take the free slot.

    ``order`` among the ready units: ``critical`` (default) the longest chain from the unit to the
    end of the plan first (its own duration plus its longest chain of dependants: inputs of a
    fusion unit go before an equally long unit nothing waits for), ``longest`` its own duration
    first, ``plan`` plan order; ties in plan order.
    """
    if workers < 1:
        raise ValueError(f"workers {workers}: at least 1")
    if gpus < 0:
        raise ValueError(f"gpus {gpus}: 0 or more")
    if gpus and not 0 < gpu_share <= 1:
        raise ValueError(f"gpu_share {gpu_share}: a share of one GPU, in (0, 1]")
    if util <= 0:
        raise ValueError(f"util {util}: positive")
    if order not in SCHEDULE_ORDERS:
        raise ValueError(f"order {order!r}: one of {', '.join(SCHEDULE_ORDERS)}")
    import heapq

    topo, needs, after = _graph(units)
    pos = {u.key: i for i, u in enumerate(units)}
    dur = {k: max(0.0, float(durations.get(k, 0.0))) for k in pos}
    test = is_gpu_unit if callable(is_gpu_unit) else (lambda k: is_gpu_unit is not None and k in is_gpu_unit)
    on_gpu_unit = {k: bool(gpus) and bool(test(k)) for k in pos}
    per_gpu = int(1.0 / gpu_share + 1e-9) if gpus else 0
    chain: dict = {}
    for k in reversed(topo):
        chain[k] = dur[k] + max((chain[s] for s in after[k]), default=0.0)
    rank = {"critical": lambda k: (-chain[k], pos[k]), "longest": lambda k: (-dur[k], pos[k]),
            "plan": lambda k: (pos[k],)}[order]

    start, end, gpu_of = {}, {}, {}
    left_needs = {k: len(ns) for k, ns in needs.items()}
    ready = [(rank(k), k) for k in pos if not left_needs[k]]
    heapq.heapify(ready)
    remaining = dict(dur)
    running: dict = {}                   # key -> GPU index or None
    load = [0] * gpus
    t = 0.0
    while ready or running:
        waiting = []
        while ready and len(running) < workers:
            item = heapq.heappop(ready)
            k = item[1]
            g = None
            if on_gpu_unit[k]:
                free = [i for i in range(gpus) if load[i] < per_gpu]
                if not free:
                    waiting.append(item)
                    continue
                g = min(free, key=lambda i: (load[i], i))
                load[g] += 1
            running[k], start[k], gpu_of[k] = g, t, g
        for item in waiting:
            heapq.heappush(ready, item)
        if not running:                  # cannot happen: a free GPU or slot always exists here
            raise RuntimeError("makespan: nothing can run")
        rate = {k: 1.0 if g is None else 1.0 / max(1.0, load[g] * util) for k, g in running.items()}
        first = min(running, key=lambda k: (remaining[k] / rate[k], pos[k]))
        dt = remaining[first] / rate[first]
        t += dt
        done = [first]
        for k in running:
            remaining[k] -= dt * rate[k]
            if k != first and remaining[k] <= 1e-9 * max(1.0, dur[k]):
                done.append(k)
        for k in done:
            remaining[k] = 0.0
            g = running.pop(k)
            if g is not None:
                load[g] -= 1
            end[k] = t
            for s in after[k]:
                left_needs[s] -= 1
                if not left_needs[s]:
                    heapq.heappush(ready, (rank(s), s))
    cp, cchain = critical_path(units, dur)
    return Schedule(start=start, end=end, gpu=gpu_of, makespan=max(end.values(), default=0.0),
                    total_s=sum(dur.values()), critical_s=cp, critical_chain=cchain, workers=workers,
                    gpus=gpus, gpu_share=gpu_share if gpus else 1.0, util=util, order=order,
                    gpu_total_s=sum(d for k, d in dur.items() if on_gpu_unit[k]))
