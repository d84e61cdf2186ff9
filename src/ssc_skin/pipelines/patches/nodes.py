"""Nodes of the `patches` pipeline: stain normalisation, tissue detection, grid tiling."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from ssc_skin import distributed
from ssc_skin.cohort.ingest import ImageProblem
from ssc_skin.imaging import stain
from ssc_skin.preprocessing import cutting
from ssc_skin.preprocessing.preprocess import PreprocessConfig, Preprocessor
from ssc_skin.preprocessing.slides import SlideSettings, cut_slide, slide_tiles
from ssc_skin.slides.linkage import slide_paths

logger = logging.getLogger(__name__)

PATCH_INDEX_COLUMNS = [
    "row",
    "image",
    "patient",
    "label",
    "split",
    "x",
    "y",
    "tissue_fraction",
    "classifiable",
    "has_mask",
    "mask_source",
]
# Slide patches: x, y are thumbnail pixels (the slide's cohort image); level-0 place and side:
SLIDE_INDEX_COLUMNS = ["x0", "y0", "size0"]


def _rgb(images: dict[str, Callable[[], Any]], image_id: str) -> np.ndarray:
    return np.asarray(images[image_id]().convert("RGB"))


def fit_stain_normalizer(
    images: dict[str, Callable[[], Any]],
    manifest: pd.DataFrame,
    patient_splits: pd.DataFrame,
    params: dict[str, Any],
) -> dict[str, Any]:
    """Fit the stain normaliser on training patients' images only (never val or test)."""
    method = stain.check_method(params["method"])
    train_patients = set(patient_splits.loc[patient_splits["split"] == "train", "patient"])
    train = manifest[manifest["patient"].isin(train_patients)]
    sample = train.sample(min(len(train), params["max_fit_images"]), random_state=0)
    normalizer = stain.fit_normalizer(method, (_rgb(images, i) for i in sample["image"]))
    logger.info("Stain normalisation: %s, fitted on %d training images", method, len(sample))
    return normalizer.to_dict()


def preprocess_config(
    normalizer: dict[str, Any], patches: dict[str, Any], segmentation: dict[str, Any]
) -> dict[str, Any]:
    """The one preprocessing configuration (patching, tissue, fitted stain normaliser, UNet
    gating) that training, `predict` and the served model all read."""
    return PreprocessConfig.from_params(patches, segmentation, normalizer)


def extract_patches(
    images: dict[str, Callable[[], Any]],
    masks: dict[str, Callable[[], Any]],
    manifest: pd.DataFrame,
    patient_splits: pd.DataFrame,
    preprocess_config: PreprocessConfig,
    linkage: pd.DataFrame | None = None,
    engine: dict[str, Any] | None = None,
) -> tuple[dict[str, np.ndarray], pd.DataFrame]:
    """Tile every image's tissue into stain-normalised patches with their masks.

    The cutting is `preprocessing.preprocess.Preprocessor.cut`, the very step `predict` and the
    served model run. Patches with little tissue (fat, section borders) are kept for the UNet,
    which has to learn them, and as the fallback of an image without classifiable patches;
    the classifiers normally see `classifiable` ones. Each patch keeps its provenance (image,
    patient, x, y, split) and its mask source: `cohort` masks (drawn, or the synthetic ground
    truth) or `pseudo` masks from colour deconvolution (weaker; see `stain.pseudo_mask`).
    """
    config = PreprocessConfig.from_dict(preprocess_config)
    preprocessor = Preprocessor(config)
    size = config.patch_size
    split_of = patient_splits.set_index("patient")["split"]
    patch_images, patch_masks, rows = [], [], []
    slide_files = slide_paths(manifest, linkage)  # slide rows: cut from the slide in place
    settings = SlideSettings.from_config(config)
    plain = [r for r in manifest.itertuples(index=False) if r.image not in slide_files]
    # images are read here (the catalog's loaders stay in this process) and cut where the
    # engine says: in this process, or on Dask workers (engine.kind: dask)
    cuts = distributed.map_ordered(
        cutting.cut_image_on_worker,
        (
            (_rgb(images, r.image), np.asarray(masks[r.image]()) if r.has_mask else None)
            for r in plain
        ),
        engine,
        shared=cutting.cut_work(preprocess_config),
        total=len(plain),
        label="images",
    )
    for record in manifest.itertuples(index=False):
        if record.image in slide_files:
            _add_slide_patches(
                record,
                slide_files[record.image],
                preprocessor,
                settings,
                split_of[record.patient],
                patch_images,
                patch_masks,
                rows,
            )
            continue
        cut = next(cuts)
        patch_images.extend(cut.patches)
        patch_masks.extend(cut.masks)
        for tile in cut.tiles:
            rows.append(
                {
                    "row": len(rows),
                    "image": record.image,
                    "patient": record.patient,
                    "label": record.label,
                    "split": split_of[record.patient],
                    "x": tile.x,
                    "y": tile.y,
                    "tissue_fraction": tile.tissue_fraction,
                    "classifiable": tile.tissue_fraction >= config.min_tissue_fraction,
                    "has_mask": record.has_mask,
                    "mask_source": record.mask_source,
                }
            )
    index = pd.DataFrame(
        rows, columns=PATCH_INDEX_COLUMNS + (SLIDE_INDEX_COLUMNS if slide_files else [])
    )
    logger.info(
        "Patches: %d from %d images (%s); masks: %s",
        len(index),
        len(manifest),
        ", ".join(f"{k}={v}" for k, v in index["split"].value_counts().items()),
        ", ".join(f"{k}={v}" for k, v in index["mask_source"].value_counts().items()),
    )
    empty = np.zeros((0, size, size), np.uint8)
    arrays = {
        "images": np.stack(patch_images) if patch_images else empty[..., None].repeat(3, -1),
        "masks": np.stack(patch_masks) if patch_masks else empty,
    }
    return arrays, index


def _add_slide_patches(
    record: Any,
    path: str,
    preprocessor: Preprocessor,
    settings: SlideSettings,
    split: str,
    patch_images: list[np.ndarray],
    patch_masks: list[np.ndarray],
    rows: list[dict[str, Any]],
) -> None:
    """A slide's share of `extract_patches`: `slide_preprocess.cut_slide` (every tile with
    the fallback tissue share, normalised with the thumbnail's stain map), pseudo-masks per
    raw patch. A slide that fails mid-read is dropped whole (logged by pseudonym)."""
    config = preprocessor.config
    images, masks, found_rows = [], [], []
    try:
        found = slide_tiles(path, config, settings, record.microns_per_pixel)
        scale = 1.0 / found.tissue.plan.thumbnail_downsample
        for normalised, raw, tiles in cut_slide(path, preprocessor, found, settings.batch_size):
            images.extend(normalised)
            for patch, tile in zip(raw, tiles.itertuples(index=False), strict=True):
                masks.append(
                    stain.pseudo_mask(patch)
                    if record.mask_source == "pseudo"
                    else np.zeros(patch.shape[:2], np.uint8)
                )
                found_rows.append(
                    {
                        "image": record.image,
                        "patient": record.patient,
                        "label": record.label,
                        "split": split,
                        "x": round(tile.x * scale),
                        "y": round(tile.y * scale),
                        "tissue_fraction": tile.tissue_fraction,
                        "classifiable": tile.tissue_fraction >= config.min_tissue_fraction,
                        "has_mask": record.has_mask,
                        "mask_source": record.mask_source,
                        "x0": int(tile.x),
                        "y0": int(tile.y),
                        "size0": int(tile.size),
                    }
                )
    except ImageProblem as problem:
        logger.warning(
            "Patches: slide %s dropped (%s: %s); its %d patch(es) so far discarded",
            record.image,
            problem.check,
            problem.reason,
            len(images),
        )
        return
    for row in found_rows:
        row["row"] = len(rows)
        rows.append(row)
    patch_images.extend(images)
    patch_masks.extend(masks)
