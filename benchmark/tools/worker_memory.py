"""Memory of parallel workers: is the image cache shared, or copied per worker?

    python -m benchmark.tools.worker_memory --workers 2 --image-size 224
    python -m benchmark.tools.worker_memory --data my-cohort.yaml --workers 4 --image-size 384

Sends the run's cohort to ``--workers`` Ray workers the way ``run --workers`` does
(``ray.put`` of a ``scale.UnitEnv``, the cohort without decoded pixels), and has each worker
open the image cache at ``--image-size`` (``Cohort.pixels``, memory-mapped) and read every
pixel, as a unit that trains on all images would. Each worker then reports its resident
memory (RSS), its proportional share (PSS: a page shared by k processes counts 1/k) and
the file-backed part of its RSS, from ``/proc/self/smaps_rollup`` (Linux). A shared cache
shows as PSS well below RSS, and the workers' PSS summing to about one copy of the pixels
plus each worker's own memory. The images are decoded first if the cache lacks them.
"""

from __future__ import annotations

import argparse
import os
import time


def _smaps() -> dict[str, int]:
    """kB figures of this process from /proc/self/smaps_rollup (Rss, Pss, Pss_File, ...)."""
    out = {}
    with open("/proc/self/smaps_rollup") as fh:
        for line in fh:
            parts = line.split()
            if len(parts) >= 3 and parts[-1] == "kB":
                out[parts[0].rstrip(":")] = int(parts[1])
    return out


def _touch(env, size: int, hold_s: float) -> dict:
    """In a worker: map the cohort's pixels, read them all, report memory, hold a while."""
    before = _smaps()
    px = env.cohort.pixels(size)
    total = int(px.sum(dtype="uint64"))   # every page read
    after = _smaps()
    time.sleep(hold_s)   # all workers hold their mappings at once, so PSS splits shared pages
    final = _smaps()
    return {"pid": os.getpid(), "pixels_mb": px.nbytes / 2**20, "checksum": total,
            "rss_before_mb": before["Rss"] / 1024, "rss_mb": final["Rss"] / 1024, "pss_mb": final["Pss"] / 1024,
            "file_rss_mb": (final.get("Rss", 0) - final.get("Anonymous", 0)) / 1024,
            "anon_growth_mb": (after.get("Anonymous", 0) - before.get("Anonymous", 0)) / 1024}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmark.tools.worker_memory", description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=None, metavar="DATASET.yaml", help="dataset file (default: the synthetic cohort)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--hold", type=float, default=15.0, help="seconds each worker holds its mapping before measuring")
    args = p.parse_args(argv)

    from benchmark.data.dataset import load_dataset
    from benchmark.run.units import default_dataset
    from benchmark.run.scale import Resources, UnitEnv, start_ray

    cohort = load_dataset(args.data or default_dataset())
    t0 = time.monotonic()
    cohort.pixels(args.image_size)   # decode once here (cached), as run --workers does before it starts units
    print(f"image cache at {args.image_size} px ready in {time.monotonic() - t0:.0f} s: "
          f"{cohort.pixels(args.image_size).nbytes / 2**20:.0f} MB for {len(cohort.images)} images", flush=True)
    ray = start_ray(Resources(workers=args.workers, threads=1))
    try:
        env = ray.put(UnitEnv(cohort=cohort, profile=None, run_path="", run_id="", storage="", seed=0, metric="auc",
                              calibration="platt", ctx_base=None, candidates={}))
        touch = ray.remote(num_cpus=1)(_touch)
        rows = ray.get([touch.remote(env, args.image_size, args.hold) for _ in range(args.workers)])
    finally:
        ray.shutdown()
    print(f"{'worker':>8} {'pixels MB':>9} {'RSS MB':>8} {'PSS MB':>8} {'file-backed RSS MB':>19} {'anon growth MB':>15}")
    for r in rows:
        print(f"{r['pid']:>8} {r['pixels_mb']:>9.0f} {r['rss_mb']:>8.0f} {r['pss_mb']:>8.0f} {r['file_rss_mb']:>19.0f} "
              f"{r['anon_growth_mb']:>15.0f}")
    print(f"sum of PSS {sum(r['pss_mb'] for r in rows):.0f} MB, sum of RSS {sum(r['rss_mb'] for r in rows):.0f} MB; "
          f"a private copy per worker would add {rows[0]['pixels_mb']:.0f} MB of anonymous memory to each")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
