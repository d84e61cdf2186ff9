"""Nodes of the `segmentation` pipeline: a UNet finds the dermis; its share gates patches."""

from __future__ import annotations

import logging
from typing import Any

import cv2
import keras
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from ssc_skin.constants import MASK_CLASSES
from ssc_skin.evaluation import figures
from ssc_skin.evaluation.metrics import dice_iou
from ssc_skin.imaging import stain, tiling
from ssc_skin.imaging.tissue import tissue_mask
from ssc_skin.models import builders, training

logger = logging.getLogger(__name__)
DERMIS = MASK_CLASSES["dermis"]


def _unet_inputs(patches: dict[str, np.ndarray], rows: np.ndarray,
                 size: int) -> tuple[np.ndarray, np.ndarray]:
    images = tiling.resize_batch(patches["images"][rows], size)
    masks = tiling.resize_batch(patches["masks"][rows], size, cv2.INTER_NEAREST)
    return images, masks


def train_unet(patches: dict[str, np.ndarray], patch_index: pd.DataFrame,
               params: dict[str, Any]) -> tuple[keras.Model, dict[str, Any]]:
    """Fit the UNet on training-split patches that have masks; early-stop on validation."""
    size = params["input_size"]
    usable = patch_index["has_mask"].to_numpy()
    train_rows = np.flatnonzero(usable & (patch_index["split"] == "train").to_numpy())
    capped = training.subsample(patch_index.iloc[train_rows], params.get("max_train_patches"),
                                params["seed"])
    train_rows = patch_index.index.get_indexer(capped.index)
    val_rows = np.flatnonzero(usable & (patch_index["split"] == "val").to_numpy())
    if len(train_rows) == 0 or len(val_rows) == 0:
        raise ValueError("segmentation needs masked patches in the train and val splits")
    model = builders.build_unet(size, len(MASK_CLASSES), params["base_filters"], params["depth"])
    result = training.fit(
        model, _unet_inputs(patches, train_rows, size), _unet_inputs(patches, val_rows, size),
        name="unet", epochs=params["epochs"], batch_size=params["batch_size"],
        learning_rate=params["learning_rate"], seed=params["seed"],
        loss="sparse_categorical_crossentropy", metrics=["accuracy"], augment="segmentation",
        patience=params["patience"])
    summary = {"train_patches": len(train_rows), "val_patches": len(val_rows),
               "train_seconds": result.seconds, "epochs_run": result.epochs_run,
               "patches_per_second": result.patches_per_second, "history": result.history}
    return model, summary


def score_patches(unet: keras.Model, patches: dict[str, np.ndarray], patch_index: pd.DataFrame,
                  params: dict[str, Any]) -> tuple[pd.DataFrame, dict[str, Any], dict[str, Any]]:
    """Predict masks for every patch: dermis fraction per patch, Dice/IoU on val and test."""
    size, chunk = params["input_size"], 2048  # chunks keep memory flat on large cohorts
    predicted = np.concatenate([
        training.predict(unet, tiling.resize_batch(patches["images"][start:start + chunk], size),
                         params["batch_size"]).argmax(axis=-1).astype(np.uint8)
        for start in range(0, len(patch_index), chunk)])
    scored = patch_index.copy()
    scored["dermis_fraction"] = (predicted == DERMIS).mean(axis=(1, 2))
    summary: dict[str, float] = {}
    for split in ("val", "test"):
        rows = np.flatnonzero((patch_index["has_mask"] & (patch_index["split"] == split)).to_numpy())
        if len(rows) == 0:
            continue
        truth = tiling.resize_batch(patches["masks"][rows], size, cv2.INTER_NEAREST)
        dice, iou = dice_iou(truth, predicted[rows], DERMIS)
        summary[f"{split}_dermis_dice"], summary[f"{split}_dermis_iou"] = dice, iou
        logger.info("UNet %s: dermis Dice %.3f, IoU %.3f on %d patches", split, dice, iou, len(rows))
    metrics = {k: {"value": v, "step": 0} for k, v in summary.items()}
    summary["mask_sources"] = {str(k): int(v) for k, v in
                               patch_index["mask_source"].value_counts().items()}
    return scored, metrics, summary


def predict_image_mask(unet: keras.Model, image: np.ndarray, window: int,
                       input_size: int, min_tissue_fraction: float = 0.05) -> np.ndarray:
    """A whole-image mask from the patch UNet: non-overlapping windows, edges padded."""
    h, w = image.shape[:2]
    padded = np.pad(image, ((0, -h % window), (0, -w % window), (0, 0)), mode="edge")
    ys, xs = range(0, padded.shape[0], window), range(0, padded.shape[1], window)
    tiles = np.stack([padded[y:y + window, x:x + window] for y in ys for x in xs])
    labels = training.predict(unet, tiling.resize_batch(tiles, input_size)).argmax(-1)
    labels = tiling.resize_batch(labels.astype(np.uint8), window, cv2.INTER_NEAREST)
    tissue = tissue_mask(np.ascontiguousarray(padded))
    glass = [tissue[y:y + window, x:x + window].mean() < min_tissue_fraction
             for y in ys for x in xs]
    labels[np.array(glass)] = 0  # windows the tiling calls glass are background, as in training
    mask = np.zeros(padded.shape[:2], np.uint8)
    for tile, (y, x) in zip(labels, [(y, x) for y in ys for x in xs], strict=True):
        mask[y:y + window, x:x + window] = tile
    return mask[:h, :w]


def segmentation_overlays(unet: keras.Model, images: dict[str, Any], masks: dict[str, Any],
                          manifest: pd.DataFrame, patient_splits: pd.DataFrame,
                          normalizer: dict[str, Any], window: int,
                          params: dict[str, Any]) -> Figure:
    """The UNet's masks over one test image per class, next to the mask it was scored on."""
    normalise = stain.StainNormalizer.from_dict(normalizer).transform
    test = set(patient_splits.loc[patient_splits["split"] == "test", "patient"])
    chosen = manifest[manifest["patient"].isin(test)].drop_duplicates("label")
    samples = []
    for row in chosen.itertuples():
        image = np.asarray(images[row.image]().convert("RGB"))
        truth = np.asarray(masks[row.image]()) if row.has_mask else None
        source = {"cohort": "annotated", "pseudo": "pseudo-mask"}.get(row.mask_source, "no")
        predicted = predict_image_mask(unet, normalise(image), window, params["input_size"])
        samples.append((f"{row.label} (test; {source} vs UNet)", image, truth, predicted))
    return figures.mask_overlay_figure(samples)


def select_patches(scored_index: pd.DataFrame, params: dict[str, Any]) -> pd.DataFrame:
    """The patches the classifiers see: enough dermis (or all, when segmentation is off)."""
    if "classifiable" in scored_index:  # enough tissue; the rest was only for the UNet
        scored_index = scored_index[scored_index["classifiable"]]
    if not params["use_segmentation"]:
        return scored_index.copy()
    keep = scored_index["dermis_fraction"] >= params["min_dermis_fraction"]
    selected = scored_index[keep].copy()
    logger.info("Segmentation gating kept %d of %d patches (dermis fraction >= %.2f)",
                len(selected), len(scored_index), params["min_dermis_fraction"])
    empty = [f"{s}/{lab}" for (s, lab), n in
             scored_index.groupby(["split", "label"]).size().items()
             if (selected["split"].eq(s) & selected["label"].eq(lab)).sum() == 0 and n]
    if empty:
        raise ValueError(f"segmentation gating removed every patch of {empty}; lower "
                         "segmentation.selection.min_dermis_fraction or set use_segmentation: false")
    return selected
