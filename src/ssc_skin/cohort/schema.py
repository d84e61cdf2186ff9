"""The known keys of every parameter block (no Kedro here): a typo is an error, not a default.

`unknown_key_problems` names each unknown key by its dotted path with a did-you-mean; the
values themselves are checked in `cohort.config`.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Any

SOURCE_KEYS = (
    "layout",
    "root",
    "manifest",
    "patient_id_regex",
    "patient_from",
    "label_map",
    "tiff_page",
    "microns_per_pixel",
    "allow_outside_root",
)

ANY = "any"  # a free-form map: its keys are the user's (labels, names, options)
_LEAF = None


def _keys(*names: str, **blocks: Any) -> dict[str, Any]:
    return {**dict.fromkeys(names, _LEAF), **blocks}


_SYNTHETIC = _keys(
    "images_per_patient",
    "image_size",
    "stain",
    "difficulty",
    "seed",
    patients_per_class=ANY,
    artefact_rate=ANY,
)
_TRAINING = _keys(
    "epochs",
    "batch_size",
    "learning_rate",
    "patience",
    "early_stopping_start",
    "frozen_epochs",
    "fine_tune_layers",
    "fine_tune_lr_factor",
    "seed",
    "max_train_patches",
    "max_val_patches",
    "distribution",
    "steps_per_execution",
    "lr_schedule",
    "stain_augmentation",
    "test_time_augmentation",
    "label_smoothing",
    "mixup",
)
# The schema of every parameter block conf/base/parameters_*.yml declares; "*" stands for
# names the user chooses (tasks, architectures), ANY for a map whose keys are the user's.
SCHEMA: dict[str, Any] = {
    "cohort": _keys(
        "target_microns_per_pixel",
        "masks",
        source=_keys(*SOURCE_KEYS, label_map=ANY),
        checks=_keys("min_tissue_fraction", "allowed_labels"),
        synthetic=_SYNTHETIC,
        synthetic_slides=_keys(
            "slides_per_patient",
            "width",
            "height",
            "sections",
            "mpp",
            "style",
            "seed",
            "stain",
            "difficulty",
            patients_per_class=ANY,
            artefact_rate=ANY,
        ),
        split=_keys("val_fraction", "test_fraction", "seed", "reuse_saved", "folds", "fold"),
        privacy=_keys("show_file_names"),
        colour_baseline=_keys("bins", "folds", "seed"),
    ),
    "patches": _keys(
        "patch_size",
        "stride",
        "min_tissue_fraction",
        "unet_min_tissue_fraction",
        "min_saturation",
        "target_microns_per_pixel",
        stain=_keys("method", "max_fit_images"),
        slide=_keys("max_thumbnail_pixels", "cells_per_tile", "batch_size"),
    ),
    "classification": _keys(
        tasks={"*": _keys("name", "classes", label_map=ANY)},
        architectures={
            "*": _keys("name", "builder", "enabled", "input_size", options=ANY, training=_TRAINING)
        },
        training=_TRAINING,
    ),
    "cv": _keys("val_fraction", "seed", "folds"),
    "engine": _keys(
        "kind",
        "scheduler",
        "n_workers",
        "threads_per_worker",
        "max_in_flight",
        "progress_seconds",
    ),
    "evaluation": _keys(
        "bootstrap_resamples",
        "confidence",
        "bootstrap_metrics",
        "seed",
        "min_per_class",
        "calibration_bins",
        "alpha",
        hybrid=_keys("method", "C", "folds", "max_iter", "seed"),
        texture=_keys(
            "colour_bins",
            "gabor_wavelengths",
            "gabor_orientations",
            "lbp_radii",
            "orientation_bins",
            "C",
        ),
    ),
    "export": _keys(
        "representative_patches",
        "agreement_patches",
        "latency_patches",
        "latency_rounds",
        "agreement_threshold",
        "int8",
        "num_threads",
        "batch_size",
        "seed",
        "log_predictor",
    ),
    "predict": _keys(
        "input",
        "architecture",
        "runtime",
        "tasks",
        "patient_ids",
        "patient_id_regex",
        "low_confidence_threshold",
        "gradcam_images",
        "num_threads",
        "slide_manifest",
    ),
    "pretrain": _keys(
        "method",
        "images",
        "architecture",
        "targets",
        "patch_size",
        "min_tissue_fraction",
        "max_patches",
        "epochs",
        "batch_size",
        "learning_rate",
        "val_fraction",
        "seed",
        cohort=_SYNTHETIC,
        simclr=_keys(
            "epochs",
            "batch_size",
            "learning_rate",
            "temperature",
            "projection_dim",
            "min_crop",
            "stain_sigma",
            "stain_bias",
        ),
    ),
    "registry": _keys("alias", "rank_by", "promote", model_names=ANY),
    "segmentation": _keys(
        unet=_keys(
            "input_size",
            "base_filters",
            "depth",
            "epochs",
            "batch_size",
            "learning_rate",
            "patience",
            "seed",
            "max_train_patches",
            "steps_per_execution",
            "quantize",
            "representative_patches",
        ),
        selection=_keys("use_segmentation", "min_dermis_fraction"),
    ),
}


def unknown_key_problems(params: Mapping[str, Any]) -> list[str]:
    """One message per unknown key, by its dotted path, with a did-you-mean from `SCHEMA`.

    A top-level name is only reported when it is close to a known block (`cohrt`); other
    top-level names are not this project's blocks to judge. `cohort.source` is checked by
    `source_config_problems` (one message there).
    """
    problems = []
    for key in params:
        if key not in SCHEMA:
            close = difflib.get_close_matches(str(key), list(SCHEMA), n=1)
            if close:
                problems.append(_unknown(str(key), str(key), close))
    for name, schema in SCHEMA.items():
        problems += _walk(params.get(name), schema, name)
    return problems


def _walk(block: Any, schema: Any, path: str) -> list[str]:
    if schema is ANY or schema is _LEAF or not isinstance(block, Mapping):
        return []
    if path == "cohort.source":
        return []
    if "*" in schema:
        return [p for k, v in block.items() for p in _walk(v, schema["*"], f"{path}.{k}")]
    problems = []
    for key, value in block.items():
        if key in schema:
            problems += _walk(value, schema[key], f"{path}.{key}")
        else:
            close = difflib.get_close_matches(str(key), [str(k) for k in schema], n=1)
            problems.append(_unknown(f"{path}.{key}", str(key), close))
    return problems


def _unknown(path: str, key: str, close: list[str]) -> str:
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f"{path} is not a known key{hint}"
