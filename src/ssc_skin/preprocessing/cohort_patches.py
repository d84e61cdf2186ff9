"""A whole cohort cut into patches with their masks and provenance: the patches stage's work,
Kedro-free (images arrive as loader callables, the way a partitioned catalog dataset gives
them). Plain images are cut where the engine says (here, or on Dask workers); slides are cut
in place from their files, tile batch by tile batch."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pandas as pd

from ssc_skin import distributed
from ssc_skin.cohort.ingest import ImageProblem
from ssc_skin.imaging import pseudo_mask
from ssc_skin.preprocessing.cutting import cut_image_on_worker, cut_work
from ssc_skin.preprocessing.patch_store import PatchStore
from ssc_skin.preprocessing.preprocess import PreprocessConfig, Preprocessor
from ssc_skin.preprocessing.slides import SlideSettings, cut_slide, slide_tiles

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


def rgb(images: Mapping[str, Callable[[], Any]], image_id: str) -> np.ndarray:
    """One image of a loader mapping as an RGB array (grayscale, palette and RGBA included)."""
    return np.asarray(images[image_id]().convert("RGB"))


def cut_cohort(
    images: Mapping[str, Callable[[], Any]],
    masks: Mapping[str, Callable[[], Any]],
    manifest: pd.DataFrame,
    split_of: Mapping[str, str],
    config: PreprocessConfig,
    slide_files: Mapping[str, str],
    engine: Any = None,
    staging_dir: str | None = None,
) -> tuple[dict[str, np.ndarray], pd.DataFrame]:
    """Tile every image's tissue into stain-normalised patches with their masks.

    The cutting is `preprocessing.preprocess.Preprocessor.cut`, the very step `predict` and the
    served model run. Patches with little tissue (fat, section borders) are kept for the UNet,
    which has to learn them, and as the fallback of an image without classifiable patches;
    the classifiers normally see `classifiable` ones. Each patch keeps its provenance (image,
    patient, x, y, split) and its mask source: `cohort` masks (drawn, or the synthetic ground
    truth) or `pseudo` masks from colour deconvolution (weaker; see `pseudo_mask.pseudo_mask`).

    Patches go to disk as they are cut (`patch_store.PatchStore`, in `staging_dir` or the
    system's temporary folder): memory holds one image's patches, or one slide batch's, never
    the cohort's. The arrays come back as read-only memory maps of the staged files, which
    the catalog's `PatchArraysDataset` moves into place.
    """
    preprocessor = Preprocessor(config)
    store = PatchStore(config.patch_size, staging_dir)
    rows: list[dict[str, Any]] = []
    settings = SlideSettings.from_config(config)
    plain = [r for r in manifest.itertuples(index=False) if r.image not in slide_files]
    # images are read here (the catalog's loaders stay in this process) and cut where the
    # engine says: in this process, or on Dask workers (engine.kind: dask)
    cuts = distributed.map_ordered(
        cut_image_on_worker,
        (
            (rgb(images, r.image), np.asarray(masks[r.image]()) if r.has_mask else None)
            for r in plain
        ),
        engine,
        shared=cut_work(config),
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
                store,
                rows,
            )
            continue
        cut = next(cuts)
        store.add(cut.patches, cut.masks)
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
    return store.finish(), index


def _add_slide_patches(
    record: Any,
    path: str,
    preprocessor: Preprocessor,
    settings: SlideSettings,
    split: str,
    store: PatchStore,
    rows: list[dict[str, Any]],
) -> None:
    """A slide's share of `extract_patches`: `slide_preprocess.cut_slide` (every tile with
    the fallback tissue share, normalised with the thumbnail's stain map), pseudo-masks per
    raw patch, written batch by batch. A slide that fails mid-read is dropped whole (its
    patches so far truncated away; logged by pseudonym)."""
    config = preprocessor.config
    before, found_rows = len(store), []
    try:
        found = slide_tiles(path, config, settings, record.microns_per_pixel)
        scale = 1.0 / found.tissue.plan.thumbnail_downsample
        for normalised, raw, tiles in cut_slide(path, preprocessor, found, settings.batch_size):
            masks = []
            for patch, tile in zip(raw, tiles.itertuples(index=False), strict=True):
                masks.append(
                    pseudo_mask.pseudo_mask(patch)
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
            size = config.patch_size
            store.add(
                np.asarray(normalised).reshape(-1, size, size, 3),
                np.asarray(masks, np.uint8).reshape(-1, size, size),
            )
    except ImageProblem as problem:
        logger.warning(
            "Patches: slide %s dropped (%s: %s); its %d patch(es) so far discarded",
            record.image,
            problem.check,
            problem.reason,
            len(store) - before,
        )
        store.truncate(before)
        return
    for row in found_rows:
        row["row"] = len(rows)
        rows.append(row)
