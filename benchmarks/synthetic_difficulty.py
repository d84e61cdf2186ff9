"""How hard is the synthetic cohort? Colour-only baseline accuracy at several difficulties.

    python benchmarks/synthetic_difficulty.py [--size 512] [--difficulties 0 0.25 0.5 0.75 1]

Writes data/08_reporting/colour_baseline_by_difficulty.{json,md}: for each difficulty, the
patient-grouped cross-validated accuracy of logistic regression on colour histograms for the
binary and the 3-class task, next to the majority-class rate, and generation speed.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from ssc_skin.cohort import synthetic
from ssc_skin.constants import LABELS
from ssc_skin.evaluation import baseline

TASKS = {
    "binary": {"normal": 0, "early": 1, "late": 1},
    "three_class": {"normal": 0, "early": 1, "late": 2},
}


def sweep(
    difficulties: list[float], size: int, patients: int, images: int, seed: int
) -> list[dict]:
    rows = []
    for difficulty in difficulties:
        start = time.perf_counter()
        sections = list(
            synthetic.generate_cohort(
                dict.fromkeys(LABELS, patients),
                images,
                size=(size, size),
                difficulty=difficulty,
                seed=seed,
            )
        )
        seconds = time.perf_counter() - start
        features = np.stack([baseline.colour_histogram(s.image) for s in sections])
        groups = np.array([s.patient_id for s in sections])
        row = {
            "difficulty": difficulty,
            "images": len(sections),
            "images_per_second": len(sections) / seconds,
        }
        for task, mapping in TASKS.items():
            labels = np.array([mapping[s.label] for s in sections])
            row[task] = baseline.grouped_cv_accuracy(features, labels, groups, seed=seed)
        rows.append(row)
        print(  # noqa: T201
            f"difficulty {difficulty}: binary {row['binary']['accuracy']:.3f}, "
            f"3-class {row['three_class']['accuracy']:.3f}, "
            f"{row['images_per_second']:.2f} images/s"
        )
    return rows


def to_markdown(rows: list[dict], size: int, patients: int, images: int) -> str:
    lines = [
        f"# Colour-only baseline by synthetic difficulty ({patients} patients per class, "
        f"{images} images each, {size}x{size} px)",
        "",
        "Logistic regression on per-image RGB+HSV histograms, 5-fold patient-grouped CV.",
        "",
        "| difficulty | binary acc | binary majority rate | 3-class acc "
        "| 3-class majority rate | images/s |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['difficulty']} | {r['binary']['accuracy']:.3f} "
            f"| {r['binary']['majority_class_rate']:.3f} "
            f"| {r['three_class']['accuracy']:.3f} "
            f"| {r['three_class']['majority_class_rate']:.3f} "
            f"| {r['images_per_second']:.2f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--difficulties", type=float, nargs="+", default=[0.0, 0.25, 0.5, 0.75, 1.0]
    )
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--patients", type=int, default=12, help="patients per class")
    parser.add_argument("--images", type=int, default=3, help="images per patient")
    parser.add_argument("--seed", type=int, default=2021)
    parser.add_argument("--out", type=Path, default=Path("data/08_reporting"))
    args = parser.parse_args()
    rows = sweep(args.difficulties, args.size, args.patients, args.images, args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "colour_baseline_by_difficulty.json").write_text(json.dumps(rows, indent=2))
    (args.out / "colour_baseline_by_difficulty.md").write_text(
        to_markdown(rows, args.size, args.patients, args.images)
    )


if __name__ == "__main__":
    main()
