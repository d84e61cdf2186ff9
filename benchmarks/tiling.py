"""Tissue detection + grid tiling throughput (megapixels/s) against a straightforward baseline.

    python benchmarks/tiling.py [--size 2048] [--images 6] [--patch 128] [--stride 64]

Both variants run in the same process on the same synthetic images; the headline is the ratio.
Baseline: a Python loop that takes the mean of the tissue mask under every grid position.
Project: `tiling.grid_tiles` (integral image, four look-ups per patch, vectorised).
Writes data/08_reporting/benchmark_tiling.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from ssc_skin.cohort import synthetic
from ssc_skin.imaging import tiling
from ssc_skin.imaging.tissue import tissue_mask


def naive_tiles(mask: np.ndarray, patch: int, stride: int, min_fraction: float) -> list:
    h, w = mask.shape
    kept = []
    for y in range(0, h - patch + 1, stride):
        for x in range(0, w - patch + 1, stride):
            fraction = mask[y : y + patch, x : x + patch].mean()
            if fraction >= min_fraction:
                kept.append((x, y, float(fraction)))
    return kept


def best_of(repeats: int, fn, *args) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn(*args)
        times.append(time.perf_counter() - start)
    return min(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--images", type=int, default=6)
    parser.add_argument("--patch", type=int, default=128)
    parser.add_argument("--stride", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("data/08_reporting"))
    args = parser.parse_args()
    images = [
        s.image
        for s in synthetic.generate_cohort(
            {"normal": 1, "late": 1}, args.images // 2, size=(args.size, args.size), seed=1
        )
    ]
    megapixels = sum(i.shape[0] * i.shape[1] for i in images) / 1e6
    detect = sum(best_of(args.repeats, tissue_mask, i)[0] for i in images)
    masks = [tissue_mask(i) for i in images]
    ours, naive = 0.0, 0.0
    for mask in masks:
        t_ours, tiles = best_of(args.repeats, tiling.grid_tiles, mask, args.patch, args.stride, 0.5)
        t_naive, reference = best_of(args.repeats, naive_tiles, mask, args.patch, args.stride, 0.5)
        assert [(t.x, t.y) for t in tiles] == [(x, y) for x, y, _ in reference]
        ours, naive = ours + t_ours, naive + t_naive
    result = {
        "images": len(images),
        "size": args.size,
        "patch": args.patch,
        "stride": args.stride,
        "megapixels": megapixels,
        "tissue_detection_mp_per_s": megapixels / detect,
        "tiling_mp_per_s": megapixels / ours,
        "naive_tiling_mp_per_s": megapixels / naive,
        "tiling_speedup_vs_naive": naive / ours,
        "detection_plus_tiling_mp_per_s": megapixels / (detect + ours),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "benchmark_tiling.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))  # noqa: T201


if __name__ == "__main__":
    main()
