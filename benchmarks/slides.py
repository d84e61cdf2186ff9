"""Whole-slide tiling: throughput and whether memory stays flat as slides grow.

    .venv/bin/python benchmarks/slides.py                  # 20000^2 and 40000^2 slides
    .venv/bin/python benchmarks/slides.py --quick          # 4000^2 and 8000^2: a smoke test
    .venv/bin/python benchmarks/slides.py --style ome      # OME-TIFF (sub-IFD pyramid)

For each slide size, in a fresh process each (so one run's memory cannot hide in another's),
the whole slide path of `ssc_skin.slides` (readers, metadata, tiles) runs: open, plan, thumbnail, tissue
detection, grid tiling, then every tissue patch read as batches at the default patch size and
target microns per pixel. Peak RSS comes from `getrusage(RUSAGE_CHILDREN)` of a small wrapper
process, as in benchmarks/run.py; a third process only imports and opens a slide, the floor
every run starts from.

Headlines: MP of slide area per second (whole path, and tissue detection + tiling alone) on
the largest slide, and the peak-RSS ratio of the larger slide (4x the area) to the smaller,
in total and above the floor; the target is <= 1.2x.

Synthetic slides are written once (tile by tile; minutes for 40000^2) and cached under
data/01_raw/slide_benchmark/ (git-ignored). Results go to data/08_reporting/
slide_benchmark.{json,md}.
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from ssc_skin.slides import tiles as slides
from ssc_skin.slides.metadata import slide_info
from ssc_skin.slides.readers import open_slide
from ssc_skin.slides.synthetic import STYLES, SUFFIX, write_synthetic_slide

PROJECT = Path(__file__).resolve().parents[1]
CACHE = PROJECT / "data" / "01_raw" / "slide_benchmark"
OUT = PROJECT / "data" / "08_reporting"
CELL = 10_000  # level-0 pixels per section cell: the same tissue density at every size
SLIDE_MPP = 0.5
logger = logging.getLogger("benchmarks.slides")

# Runs a command and writes its peak RSS (see benchmarks/run.py for why a wrapper).
_PEAK_RSS = """
import resource, subprocess, sys
code = subprocess.call(sys.argv[2:])
open(sys.argv[1], "w").write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss))
sys.exit(code)
"""


def slide_path(side: int, style: str = "aperio") -> Path:
    return (
        CACHE
        / f"synthetic_{side}x{side}_mpp{SLIDE_MPP:g}_v1{'' if style == 'aperio' else '_' + style}{SUFFIX[style]}"
    )


def ensure_slide(side: int, style: str = "aperio") -> tuple[Path, float]:
    """The cached synthetic slide of this size, written first if missing (seconds taken)."""
    path = slide_path(side, style)
    if path.exists():
        return path, 0.0
    count = max(1, round(side / CELL)) ** 2
    logger.info("writing %s (%d sections) ...", path.name, count)
    start = time.perf_counter()
    write_synthetic_slide(
        path,
        side,
        side,
        sections=count,
        label="late",
        mpp=SLIDE_MPP,
        style=style,
        seed=side,
        maxworkers=2,
    )
    seconds = time.perf_counter() - start
    logger.info("wrote %s in %.0f s (%.0f MB)", path.name, seconds, path.stat().st_size / 1e6)
    return path, seconds


# --- the measured process ----------------------------------------------------------------------


def worker(path: str, patch_size: int, target_mpp: float, result: str, floor: bool) -> None:
    """One slide through the whole path, timed by phase; writes a JSON result."""
    timings: dict[str, float] = {}
    start = time.perf_counter()
    with open_slide(path) as slide:
        info = slide_info(slide)
        plan = slides.plan_tiles(info, patch_size, target_mpp)
        timings["open_s"] = time.perf_counter() - start
        row: dict[str, Any] = {
            "width": info.width,
            "height": info.height,
            "level_count": len(info.level_downsamples),
        }
        if not floor:
            t = time.perf_counter()
            thumbnail = slides.read_thumbnail(
                slide, info, plan.thumbnail_downsample, plan.thumbnail_shape
            )
            timings["thumbnail_s"] = time.perf_counter() - t
            t = time.perf_counter()
            mask = slides.thumbnail_tissue(thumbnail)
            timings["tissue_mask_s"] = time.perf_counter() - t
            del thumbnail
            t = time.perf_counter()
            tiles = slides.count_tiles(mask, plan, 0.5, (info.width, info.height))
            timings["tiling_s"] = time.perf_counter() - t
            t = time.perf_counter()
            patches, checksum = 0, 0
            for batch in slides.iter_patches(
                slide, plan, slides.iter_tiles(mask, plan, 0.5, (info.width, info.height))
            ):
                patches += len(batch.images)
                checksum += int(batch.images[:, 0, 0, 0].astype(np.int64).sum())
            timings["patches_s"] = time.perf_counter() - t
            row.update(
                tiles=tiles,
                patches=patches,
                checksum=checksum,
                thumbnail_shape=list(plan.thumbnail_shape),
                cells_per_tile=plan.cells,
                read_level=plan.level,
                tile_size_level0=plan.tile_size0,
                tissue_fraction=float(mask.mean()),
            )
    timings["total_s"] = time.perf_counter() - start
    row.update(timings)
    Path(result).write_text(json.dumps(row))


def measure(path: Path, patch_size: int, target_mpp: float, floor: bool = False) -> dict[str, Any]:
    """Run `worker` in a fresh process under the peak-RSS wrapper."""
    result, peak = CACHE / "worker.json", CACHE / "worker.peak"
    command = [
        sys.executable,
        __file__,
        "--worker",
        str(path),
        "--patch",
        str(patch_size),
        "--target",
        str(target_mpp),
        "--result",
        str(result),
    ]
    if floor:
        command.append("--floor")
    env = {**os.environ, "PYTHONPATH": str(PROJECT / "src")}
    code = subprocess.call([sys.executable, "-c", _PEAK_RSS, str(peak), *command], env=env)
    if code:
        raise RuntimeError(f"worker failed ({code}) on {path.name}")
    row = json.loads(result.read_text())
    row["peak_rss_mb"] = int(peak.read_text()) / (2**20 if sys.platform == "darwin" else 2**10)
    row["slide"] = path.name
    row["megapixels"] = row["width"] * row["height"] / 1e6
    if not floor:
        row["mp_per_s"] = row["megapixels"] / row["total_s"]
        row["detection_tiling_mp_per_s"] = row["megapixels"] / (
            row["thumbnail_s"] + row["tissue_mask_s"] + row["tiling_s"]
        )
        row["patches_per_s"] = row["patches"] / row["patches_s"]
    return row


# --- report ------------------------------------------------------------------------------------


def summary(runs: list[dict[str, Any]], floor: dict[str, Any], target: float) -> dict[str, Any]:
    """Ratios of one target mpp: the larger slide against the smaller."""
    small, large = runs[0], runs[-1]
    base = floor["peak_rss_mb"]
    return {
        "target_microns_per_pixel": target,
        "floor": floor,
        "runs": runs,
        "area_ratio": large["megapixels"] / small["megapixels"],
        "peak_rss_ratio": large["peak_rss_mb"] / small["peak_rss_mb"],
        "above_floor_ratio": (large["peak_rss_mb"] - base) / max(small["peak_rss_mb"] - base, 1),
        "largest_mp_per_s": large["mp_per_s"],
        "largest_detection_tiling_mp_per_s": large["detection_tiling_mp_per_s"],
    }


def markdown(result: dict[str, Any]) -> str:
    lines = [
        "# Whole-slide tiling benchmark",
        "",
        f"{result['date']}, {result['machine']['cpus']} CPUs, Python "
        f"{result['machine']['python']}. Patch {result['patch_size']} px from synthetic "
        f"{result.get('style', 'aperio')} "
        f"slides at {result['slide_microns_per_pixel']:g} um/px (zlib tiles, ~17% tissue); "
        "each run in a fresh process; every tissue patch is read. Memory target: <= 1.2x "
        "peak RSS for 4x the slide area.",
        "",
    ]
    for part in result["targets"]:
        lines += [
            f"## Target {part['target_microns_per_pixel']:g} um/px",
            "",
            "| slide | MP | tissue patches | read level | thumbnail | peak RSS MB | total s | "
            "MP/s (whole path) | MP/s (thumbnail + tissue + tiling) | patches/s |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for run in part["runs"]:
            lines.append(
                f"| {run['width']}x{run['height']} | {run['megapixels']:.0f} | "
                f"{run['patches']} | {run['read_level']} | {run['thumbnail_shape'][1]}x"
                f"{run['thumbnail_shape'][0]} | {run['peak_rss_mb']:.0f} | {run['total_s']:.1f}"
                f" | {run['mp_per_s']:.0f} | {run['detection_tiling_mp_per_s']:.0f} | "
                f"{run['patches_per_s']:.0f} |"
            )
        ok = part["peak_rss_ratio"] <= 1.2 and part["above_floor_ratio"] <= 1.2
        large = part["runs"][-1]
        lines += [
            "",
            f"Memory for {part['area_ratio']:.0f}x the area: peak RSS "
            f"{part['peak_rss_ratio']:.2f}x in total, {part['above_floor_ratio']:.2f}x above "
            f"the floor of {part['floor']['peak_rss_mb']:.0f} MB (imports + open a slide): "
            f"{'met' if ok else 'NOT met'}.",
            "",
            "Phases of the largest slide (s): "
            + ", ".join(
                f"{key[:-2]} {large[key]:.2f}"
                for key in (
                    "open_s",
                    "thumbnail_s",
                    "tissue_mask_s",
                    "tiling_s",
                    "patches_s",
                    "total_s",
                )
            ),
            "",
        ]
    if result["slides_written_s"]:
        lines += [
            "Slides written this run (s): "
            + ", ".join(
                f"{name} {seconds:.0f}" for name, seconds in result["slides_written_s"].items()
            ),
            "",
        ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--sizes",
        type=int,
        nargs="+",
        default=[20_000, 40_000],
        help="slide sides in level-0 pixels (square slides)",
    )
    parser.add_argument("--quick", action="store_true", help="4000^2 and 8000^2 slides")
    parser.add_argument(
        "--style", choices=STYLES, default="aperio", help="slide format (synthetic.STYLES)"
    )
    parser.add_argument("--patch", type=int, default=None, help="default: patches.patch_size")
    parser.add_argument(
        "--targets",
        type=float,
        nargs="+",
        default=[2.0, 0.5],
        help="target microns per pixel; the first is the default (2.0, the "
        "synthetic sections'), 0.5 reads the slides at full resolution",
    )
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--target", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    parser.add_argument("--floor", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.patch is None:
        args.patch = _configured_patch_size()
    if args.worker:
        worker(args.worker, args.patch, args.target, args.result, args.floor)
        return
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    sizes = [4000, 8000] if args.quick else sorted(args.sizes)
    CACHE.mkdir(parents=True, exist_ok=True)
    written, paths = {}, []
    for side in sizes:
        path, seconds = ensure_slide(side, args.style)
        paths.append(path)
        if seconds:
            written[path.name] = seconds
    parts = []
    for target in args.targets:
        floor = measure(paths[0], args.patch, target, floor=True)
        runs = []
        for path in paths:
            runs.append(measure(path, args.patch, target))
            logger.info(
                "%s at %g um/px: %.0f MB peak, %.1f s, %.0f MP/s",
                path.name,
                target,
                runs[-1]["peak_rss_mb"],
                runs[-1]["total_s"],
                runs[-1]["mp_per_s"],
            )
        parts.append(summary(runs, floor, target))
    result = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
        },
        "patch_size": args.patch,
        "slide_microns_per_pixel": SLIDE_MPP,
        "style": args.style,
        "slides_written_s": written,
        "targets": parts,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "slide_benchmark.json").write_text(json.dumps(result, indent=2))
    (args.out / "slide_benchmark.md").write_text(markdown(result))
    print(markdown(result))  # noqa: T201 - the benchmark's report


def _configured_patch_size() -> int:
    """`patches.patch_size` of conf/base, so the benchmark follows the project's default."""
    params = yaml.safe_load((PROJECT / "conf/base/parameters_patches.yml").read_text()) or {}
    return int(params.get("patches", {}).get("patch_size", 64))


if __name__ == "__main__":
    main()
