"""Nodes of the `segmentation` pipeline: a UNet finds the dermis; its share gates patches."""

from __future__ import annotations

import logging
from typing import Any

import cv2
import keras
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from ssc_skin.constants import DERMIS, MASK_CLASSES
from ssc_skin.evaluation import figures
from ssc_skin.evaluation.metrics import dice_iou
from ssc_skin.imaging import tiling
from ssc_skin.inference import export
from ssc_skin.models import builders, seeding, training
from ssc_skin.preprocessing import preprocess
from ssc_skin.preprocessing.preprocess import (
    OK,
    SELECTION_REASONS,
    PreprocessConfig,
    Preprocessor,
    choose_patches,
    segment_image,
)

logger = logging.getLogger(__name__)

IMAGE_SELECTION_COLUMNS = [
    "image",
    "patient",
    "label",
    "split",
    "n_tiles",
    "n_classified",
    "selection",
    "reason",
]


def _unet_inputs(
    patches: dict[str, np.ndarray], rows: np.ndarray, size: int
) -> tuple[np.ndarray, np.ndarray]:
    images = tiling.resize_batch(patches["images"][rows], size)
    masks = tiling.resize_batch(patches["masks"][rows], size, cv2.INTER_NEAREST)
    return images, masks


def train_unet(
    patches: dict[str, np.ndarray], patch_index: pd.DataFrame, params: dict[str, Any]
) -> tuple[keras.Model, dict[str, Any]]:
    """Fit the UNet on training-split patches that have masks; early-stop on validation."""
    size = params["input_size"]
    usable = patch_index["has_mask"].to_numpy()
    train_rows = np.flatnonzero(usable & (patch_index["split"] == "train").to_numpy())
    capped = training.subsample(
        patch_index.iloc[train_rows], params.get("max_train_patches"), params["seed"]
    )
    train_rows = patch_index.index.get_indexer(capped.index)
    val_rows = np.flatnonzero(usable & (patch_index["split"] == "val").to_numpy())
    if len(train_rows) == 0 or len(val_rows) == 0:
        raise ValueError("segmentation needs masked patches in the train and val splits")
    with seeding.seeded(params["seed"]):  # initial weights from the seed alone
        model = builders.build_unet(
            size, len(MASK_CLASSES), params["base_filters"], params["depth"]
        )
    result = training.fit(
        model,
        _unet_inputs(patches, train_rows, size),
        _unet_inputs(patches, val_rows, size),
        name="unet",
        epochs=params["epochs"],
        batch_size=params["batch_size"],
        learning_rate=params["learning_rate"],
        seed=params["seed"],
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
        augment="segmentation",
        patience=params["patience"],
        compile_options={"steps_per_execution": int(params.get("steps_per_execution", 1))},
    )
    summary = {
        "train_patches": len(train_rows),
        "val_patches": len(val_rows),
        "train_seconds": result.seconds,
        "epochs_run": result.epochs_run,
        "patches_per_second": result.patches_per_second,
        "history": result.history,
    }
    return model, summary


def export_unet(
    unet: keras.Model,
    patches: dict[str, np.ndarray],
    patch_index: pd.DataFrame,
    params: dict[str, Any],
) -> bytes:
    """The UNet as TFLite: the runtime every gating decision uses, in training too.

    `segmentation.unet.quantize: int8` (default) calibrates on training patches; on our CPUs
    it runs the gating about twice as fast as float32, and its dermis Dice is reported beside
    the Keras model's in `segmentation_summary`.
    """
    quantize = params.get("quantize", "int8")
    if quantize not in export.QUANTIZATIONS:
        raise ValueError(
            f"segmentation.unet.quantize must be one of "
            f"{', '.join(export.QUANTIZATIONS)}; got {quantize!r}"
        )
    if quantize == "float32":
        return export.to_tflite(unet)
    train = patch_index[patch_index["split"] == "train"]
    sample = training.subsample(train, params.get("representative_patches", 100), 0)
    representative = tiling.resize_batch(
        patches["images"][sample["row"].to_numpy()], params["input_size"]
    )
    return export.to_tflite(unet, representative, "int8")


def score_patches(
    unet: keras.Model,
    unet_tflite: bytes,
    patches: dict[str, np.ndarray],
    patch_index: pd.DataFrame,
    preprocess_config: PreprocessConfig,
    params: dict[str, Any],
) -> tuple[pd.DataFrame, dict[str, Any], dict[str, Any]]:
    """Dermis fraction of every patch from the deployed (TFLite) UNet; Dice/IoU on val and
    test for it and for the Keras model it was converted from."""
    deployed = Preprocessor(
        PreprocessConfig.from_dict(preprocess_config), export.tflite_segmenter(unet_tflite)
    )
    reference = Preprocessor(deployed.config, export.keras_predictor(unet, 64))
    predicted = _segment_in_chunks(deployed, patches["images"], len(patch_index))
    scored = patch_index.copy()
    scored["dermis_fraction"] = (predicted == DERMIS).mean(axis=(1, 2))
    summary: dict[str, Any] = {
        "input_size": deployed.config.unet_input_size,
        "runtime": f"tflite_{params.get('quantize', 'int8')}",
        **_dice_by_split(patches, patch_index, predicted, reference),
    }
    metrics = {
        k: {"value": v, "step": 0}
        for k, v in summary.items()
        if isinstance(v, float | int) and not isinstance(v, bool)
    }
    summary["mask_sources"] = {
        str(k): int(v) for k, v in patch_index["mask_source"].value_counts().items()
    }
    return scored, metrics, summary


def segmentation_overlays(
    unet_tflite: bytes,
    images: dict[str, Any],
    masks: dict[str, Any],
    manifest: pd.DataFrame,
    patient_splits: pd.DataFrame,
    preprocess_config: PreprocessConfig,
    params: dict[str, Any],
) -> Figure:
    """The UNet's masks over one test image per class, next to the mask it was scored on."""
    preprocessor = Preprocessor(
        PreprocessConfig.from_dict(preprocess_config), export.tflite_segmenter(unet_tflite)
    )
    test = set(patient_splits.loc[patient_splits["split"] == "test", "patient"])
    chosen = manifest[manifest["patient"].isin(test)].drop_duplicates("label")
    samples = []
    for row in chosen.itertuples():
        image = np.asarray(images[row.image]().convert("RGB"))
        truth = np.asarray(masks[row.image]()) if row.has_mask else None
        source = {"cohort": "annotated", "pseudo": "pseudo-mask"}.get(row.mask_source, "no")
        predicted = segment_image(preprocessor, image)
        samples.append((f"{row.label} (test; {source} vs UNet)", image, truth, predicted))
    return figures.mask_overlay_figure(samples)


def select_patches(
    scored_index: pd.DataFrame,
    manifest: pd.DataFrame,
    patient_splits: pd.DataFrame,
    preprocess_config: PreprocessConfig,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The patches the classifiers see, chosen per image by `preprocess.choose_patches` (the
    rule `predict` and the served model apply), and one row per image saying how.

    Every image is accounted for: classified normally (`ok`), from fallback patches (flagged;
    evaluated, not trained on) or `not_assessable` (no tissue tile at all).
    """
    config = PreprocessConfig.from_dict(preprocess_config)
    split_of = patient_splits.set_index("patient")["split"]
    by_image = dict(tuple(scored_index.groupby("image", sort=False))) if len(scored_index) else {}
    chosen, rows = [], []
    for record in manifest.itertuples(index=False):
        part = by_image.get(record.image, scored_index.iloc[0:0])
        used, row = _select_image(record, part, split_of[record.patient], config)
        chosen.append(used)
        rows.append(row)
    selected = pd.concat([scored_index.iloc[0:0].assign(selection=""), *chosen], ignore_index=True)
    images = pd.DataFrame(rows, columns=IMAGE_SELECTION_COLUMNS)
    counts = preprocess.selection_counts(images["selection"])
    logger.info(
        "Patch selection: %d patches of %d images; images %s",
        len(selected),
        len(images),
        ", ".join(f"{k}={v}" for k, v in counts.items()),
    )
    _check_every_class_is_left(images, selected)
    return selected, images


def _segment_in_chunks(
    preprocessor: Preprocessor, images: np.ndarray, n: int, chunk: int = 2048
) -> np.ndarray:
    """The UNet's mask of the first `n` patches, in chunks that keep memory flat."""
    size = preprocessor.config.unet_input_size
    parts = [preprocessor.segment(images[start : start + chunk]) for start in range(0, n, chunk)]
    return np.concatenate(parts or [np.zeros((0, size, size), np.uint8)])


def _dice_by_split(
    patches: dict[str, np.ndarray],
    patch_index: pd.DataFrame,
    predicted: np.ndarray,
    reference: Preprocessor,
) -> dict[str, float | int]:
    """Dermis Dice / IoU of the deployed masks on the masked val and test patches, and the
    Dice of the Keras model they were converted from."""
    size = reference.config.unet_input_size
    summary: dict[str, float | int] = {}
    for split in ("val", "test"):
        rows = np.flatnonzero(
            (patch_index["has_mask"] & (patch_index["split"] == split)).to_numpy()
        )
        if len(rows) == 0:
            continue
        truth = tiling.resize_batch(patches["masks"][rows], size, cv2.INTER_NEAREST)
        dice, iou = dice_iou(truth, predicted[rows], DERMIS)
        keras_dice, _ = dice_iou(truth, reference.segment(patches["images"][rows]), DERMIS)
        summary[f"{split}_dermis_dice"], summary[f"{split}_dermis_iou"] = dice, iou
        summary[f"{split}_dermis_dice_keras"] = keras_dice
        summary[f"{split}_masked_patches"] = len(rows)
        logger.info(
            "UNet %s: dermis Dice %.3f (Keras %.3f), IoU %.3f on %d patches at %d px",
            split,
            dice,
            keras_dice,
            iou,
            len(rows),
            size,
        )
    return summary


def _select_image(
    record: Any, part: pd.DataFrame, split: str, config: PreprocessConfig
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """One image's classified patches (`choose_patches`) and its row of the selection table;
    fallback patches of a training image are evaluated, never learnt."""
    dermis = part["dermis_fraction"].to_numpy() if "dermis_fraction" in part else None
    used, selection = choose_patches(part["tissue_fraction"].to_numpy(), dermis, config)
    reason = SELECTION_REASONS[selection]
    if split == "train" and selection != OK:
        used[:] = False
        reason += " (left out of training)"
    row = {
        "image": record.image,
        "patient": record.patient,
        "label": record.label,
        "split": split,
        "n_tiles": len(part),
        "n_classified": int(used.sum()),
        "selection": selection,
        "reason": reason,
    }
    return part[used].assign(selection=selection), row


def _check_every_class_is_left(images: pd.DataFrame, selected: pd.DataFrame) -> None:
    """Training and early stopping need every class; a test class without any assessable
    image is reported by the evaluation instead."""
    empty = [
        f"{s}/{lab}"
        for (s, lab), n in images.groupby(["split", "label"]).size().items()
        if n and s != "test" and not (selected["split"].eq(s) & selected["label"].eq(lab)).any()
    ]
    if empty:
        raise ValueError(
            f"no classifiable patch is left in {empty}; lower "
            "segmentation.selection.min_dermis_fraction or "
            "patches.min_tissue_fraction, or set use_segmentation: false"
        )
