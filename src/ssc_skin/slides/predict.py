"""Prediction of whole-slide images: the preprocessing of `inference.predict` for slides.

Per slide: the cohort's slide checks, `slide_preprocess.preprocess_slide` (thumbnail stain
map, candidate tiles read lazily, UNet gating, `Preprocessor.from_candidates`), every task's
classifier, a row like an image's (`kind` slide), and a heatmap + QuPath GeoJSON of the
first task. Kept apart from `predict.predict_images` so its per-image loop stays one loop.
No Kedro here.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ssc_skin.cohort.ingest import ImageProblem
from ssc_skin.inference import serving
from ssc_skin.inference.predict import _NO_PATIENT, UNLABELLED, TaskModel, order_columns
from ssc_skin.preprocessing import slides as slide_preprocess
from ssc_skin.preprocessing.preprocess import Preprocessor
from ssc_skin.preprocessing.slides import SlideSettings
from ssc_skin.slides import outputs as slide_outputs
from ssc_skin.slides import wsi as slides

logger = logging.getLogger(__name__)


def mark_slides(records: pd.DataFrame) -> pd.Series:
    """Which discovered files are slides (`slides.is_slide_file`); their 'not an image
    extension' flag is lifted in place, since they are read as slides."""
    is_slide = (
        records["image_path"]
        .map(lambda p: isinstance(p, str) and slides.is_slide_file(p))
        .astype(bool)
    )
    lifted = is_slide & (records["problem_check"] == "not_image_extension")
    records.loc[lifted, ["problem_check", "problem"]] = None
    return is_slide


def validate_slide_inputs(
    records: pd.DataFrame,
    *,
    patch_size: int,
    stride: int,
    settings: SlideSettings,
    min_tissue_fraction: float,
    min_saturation: int = 12,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """`validate_inputs` for slides: the cohort's slide checks (`slides.validate_slides`)."""
    records = records.copy()
    records["patient_id"] = records["patient_id"].where(records["patient_id"].notna(), _NO_PATIENT)
    if "microns_per_pixel" not in records.columns:
        records["microns_per_pixel"] = None
    valid, quarantine = slides.validate_slides(
        records,
        label_map={},
        allowed_labels=(UNLABELLED,),
        patch_size=patch_size,
        target_mpp=settings.target_mpp,
        min_tissue_fraction=min_tissue_fraction,
        min_saturation=min_saturation,
        stride=stride,
        fallback_mpp=settings.fallback_mpp,
    )
    valid["patient_id"] = valid["patient_id"].where(valid["patient_id"] != _NO_PATIENT, None)
    return valid, quarantine


@dataclass
class SlideOutputs:
    """What predict draws for one slide: heatmap (RGB over the thumbnail) and QuPath GeoJSON."""

    heatmap: np.ndarray
    geojson: dict[str, Any]


def predict_slides(
    slide_table: pd.DataFrame,
    models: Sequence[TaskModel],
    preprocessor: Preprocessor,
    low_confidence_threshold: float,
    settings: SlideSettings,
) -> tuple[pd.DataFrame, dict[str, SlideOutputs]]:
    """One row per slide and task (`kind` slide, level image): the mean of its classified
    tiles' probabilities, like an image; and per slide a heatmap and QuPath GeoJSON of the
    first task (tiles as detections with class probabilities).

    A slide that fails mid-read is left out with a warning naming its pseudonym.
    """
    rows, outputs = [], {}
    for record in slide_table.itertuples(index=False):
        try:
            result = slide_preprocess.preprocess_slide(record.image_path, preprocessor, settings)
        except ImageProblem as problem:
            logger.warning(
                "Predict: slide %s left out (%s: %s)", record.image, problem.check, problem.reason
            )
            continue
        found = result.found
        for index, model in enumerate(models):
            probabilities = model.probabilities(found.used_patches)
            summary = serving.summarise(
                probabilities, model.class_names, low_confidence_threshold, found.selection
            )
            rows.append(
                {
                    "level": "image",
                    "kind": "slide",
                    "image": record.image,
                    "patient": record.patient,
                    "task": model.task,
                    "architecture": model.architecture,
                    "runtime": model.runtime,
                    **summary,
                    "n_tissue_patches": found.n_tissue_tiles,
                    "n_images": 1,
                }
            )
            if index == 0:
                outputs[record.image] = _slide_outputs(result, probabilities, model, record.image)
        logger.info(
            "Predict: slide %s, %d tile(s) classified of %d tissue tile(s) (%s)",
            record.image,
            int(found.used.sum()),
            found.n_tissue_tiles,
            found.selection,
        )
    return with_kind(order_columns(pd.DataFrame(rows), models), rows), outputs


def _slide_outputs(
    result: slide_preprocess.SlidePatches, probabilities: np.ndarray, model: TaskModel, name: str
) -> SlideOutputs:
    classes = list(model.class_names)
    tiles = slide_preprocess.tile_table(result, probabilities, classes)
    shown = "ssc" if "ssc" in classes else classes[-1]
    plan = result.tissue.plan
    heatmap = slide_outputs.probability_heatmap(
        result.tissue.thumbnail, plan.thumbnail_downsample, tiles, shown
    )
    geojson = slide_outputs.qupath_geojson(
        tiles, classes, result.tissue.mask, plan.thumbnail_downsample, slide_name=name
    )
    return SlideOutputs(heatmap, geojson)


def with_kind(
    table: pd.DataFrame, rows: list[dict[str, Any]] | None = None, kind: str = "image"
) -> pd.DataFrame:
    """`order_columns`' table with a `kind` column (image | slide) after `level`."""
    kinds = [row.get("kind", kind) for row in rows] if rows is not None else [kind] * len(table)
    table = table.drop(columns=["kind"], errors="ignore")
    table.insert(1, "kind", pd.Series(kinds, index=table.index, dtype=object))
    return table
