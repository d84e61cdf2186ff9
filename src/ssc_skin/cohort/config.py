"""One validation pass over the project's parameters before any work (no Kedro here).

A wrong value used to surface only when the node that reads it ran, sometimes after the whole
cohort had been read (split fractions), and some messages did not name the key
(`min_tissue_fraction: 1.5`). `parameter_problems` checks every key the input side reads and
returns one message per bad key, naming it and what is allowed; `validate_parameters`
raises them all at once. The project's hook calls it before the pipeline runs.

Only keys that are present are checked, so a configuration environment that leaves a block
out is not an error here; unknown keys under `cohort.source` are (a typo there would
otherwise silently change which files are read).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ssc_skin.cohort import ingest
from ssc_skin.cohort.ingest import CohortConfigError
from ssc_skin.cohort.synthetic import ARTEFACTS, STAIN_VECTORS
from ssc_skin.constants import COHORT_LABELS, LABELS

MASK_CHOICES = ("auto", "cohort", "pseudo")
STAINS = tuple(sorted(STAIN_VECTORS))

Check = Callable[[Any], str | None]  # None when fine, else what is wrong (after the key)


def validate_parameters(params: Mapping[str, Any], *, check_paths: bool = False) -> None:
    """Raise one CohortConfigError that lists every bad key (see `parameter_problems`)."""
    problems = parameter_problems(params, check_paths=check_paths)
    if problems:
        raise CohortConfigError(
            f"{len(problems)} configuration problem(s), nothing was run:"
            + "".join(f"\n  - {p}" for p in problems)
        )


def parameter_problems(params: Mapping[str, Any], *, check_paths: bool = False) -> list[str]:
    """One message per bad key of `cohort`, `patches` (what ingestion uses) and `predict`.

    `check_paths`: also check that the cohort's folder or manifest exists (only for runs
    that read the cohort).
    """
    problems: list[str] = unknown_key_problems(params)
    cohort = params.get("cohort")
    if cohort is not None:
        if not isinstance(cohort, Mapping):
            return [f"cohort must be a mapping; got {type(cohort).__name__}"]
        problems += _cohort_problems(cohort, check_paths)
    problems += _checked(
        params.get("patches"),
        "patches",
        {
            "patch_size": _integer(8),
            "stride": _integer(1),
            "min_saturation": _integer(0, 255),
        },
    )
    predict = params.get("predict")
    problems += _checked(
        predict,
        "predict",
        {
            "input": _path,
            "patient_ids": _boolean,
            "patient_id_regex": _optional(_regex),
        },
    )
    return problems


# --- known keys --------------------------------------------------------------------------------

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
    "distribution",
)
# The schema of every parameter block conf/base/parameters_*.yml declares; "*" stands for
# names the user chooses (tasks, architectures), ANY for a map whose keys are the user's.
SCHEMA: dict[str, Any] = {
    "cohort": _keys(
        "target_microns_per_pixel",
        "masks",
        source=_keys(*ingest.SOURCE_KEYS, label_map=ANY),
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
            "*": _keys("name", "enabled", "input_size", options=ANY, training=_TRAINING)
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
    ),
    "pretrain": _keys(
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
    `ingest.source_config_problems` (one message there).
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


def _cohort_problems(cohort: Mapping[str, Any], check_paths: bool) -> list[str]:
    source = cohort.get("source")
    problems = ingest.source_config_problems(source)
    checks = cohort.get("checks") or {}
    problems += _checked(
        checks,
        "cohort.checks",
        {
            "min_tissue_fraction": _fraction,
            "allowed_labels": _labels,
        },
    )
    allowed = checks.get("allowed_labels") if isinstance(checks, Mapping) else None
    if not problems and isinstance(allowed, list | tuple) and allowed:
        try:
            ingest.check_labels((source or {}).get("label_map") or {}, allowed)
        except CohortConfigError as error:
            problems.append(str(error))
    problems += _checked(
        cohort,
        "cohort",
        {
            "masks": _choice(MASK_CHOICES),
            "target_microns_per_pixel": _optional(_positive),
        },
    )
    problems += _split_problems(cohort.get("split"))
    problems += _checked(
        cohort.get("synthetic"),
        "cohort.synthetic",
        {
            "patients_per_class": _patients_per_class,
            "images_per_patient": _integer(1),
            "image_size": _integer(32),
            "stain": _choice(STAINS),
            "difficulty": _fraction,
            "artefact_rate": _artefact_rate,
            "seed": _integer(),
        },
    )
    problems += _checked(
        cohort.get("colour_baseline"),
        "cohort.colour_baseline",
        {
            "bins": _integer(2, 256),
            "folds": _integer(2),
            "seed": _integer(),
        },
    )
    if check_paths and not problems:
        problems += _path_problems(ingest.check_source_config(source))
    return problems


def _split_problems(split: Any) -> list[str]:
    problems = _checked(
        split,
        "cohort.split",
        {
            "val_fraction": _open_fraction,
            "test_fraction": _open_fraction,
            "seed": _integer(),
            "folds": lambda v: (
                None
                if _is_int(v) and (v == 0 or v >= 2)
                else f"must be 0 (a single split) or an integer >= 2 (k-fold); got {v!r}"
            ),
            "fold": _integer(0),
            "reuse_saved": _boolean,
        },
    )
    if problems or not isinstance(split, Mapping):
        return problems
    folds, fold = split.get("folds", 0), split.get("fold", 0)
    if folds and fold >= folds:
        problems.append(
            f"cohort.split.fold must be from 0 to {folds - 1} (cohort.split.folds "
            f"is {folds}); got {fold}"
        )
    val, test = split.get("val_fraction"), split.get("test_fraction")
    if folds:
        test = 1 / folds
    if val is not None and test is not None and val + test >= 1:
        problems.append(
            "cohort.split.val_fraction + cohort.split.test_fraction must be below 1"
            f" (some patients must train); got {val} + {test:g}"
        )
    return problems


def _path_problems(source: Mapping[str, Any]) -> list[str]:
    for layout, key, kind in (("folder", "root", "folder"), ("manifest", "manifest", "file")):
        if source["layout"] != layout:
            continue
        path = Path(source[key]).expanduser()
        try:
            if not ingest.path_exists(path, f"cohort.source.{key}", kind):
                return [f"cohort.source.{key} is not a {kind} ({path.name})"]
        except CohortConfigError as error:
            return [str(error)]
    return []


# --- checks of one value -----------------------------------------------------------------------


def _checked(block: Any, name: str, checks: Mapping[str, Check]) -> list[str]:
    if block is None:
        return []
    if not isinstance(block, Mapping):
        return [f"{name} must be a mapping; got {type(block).__name__}"]
    problems = []
    for key, check in checks.items():
        if key in block:
            problem = check(block[key])
            if problem:
                problems.append(f"{name}.{key} {problem}")
    return problems


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _integer(low: int | None = None, high: int | None = None) -> Check:
    def check(value: Any) -> str | None:
        if _is_int(value) and (low is None or value >= low) and (high is None or value <= high):
            return None
        if low is not None and high is not None:
            return f"must be an integer from {low} to {high}; got {value!r}"
        return f"must be an integer{f' >= {low}' if low is not None else ''}; got {value!r}"

    return check


def _fraction(value: Any) -> str | None:
    return (
        None
        if _is_number(value) and 0 <= value <= 1
        else f"must be a number from 0 to 1; got {value!r}"
    )


def _open_fraction(value: Any) -> str | None:
    return (
        None
        if _is_number(value) and 0 < value < 1
        else f"must be a number between 0 and 1 (exclusive); got {value!r}"
    )


def _positive(value: Any) -> str | None:
    return (
        None
        if _is_number(value) and value > 0
        else f"must be a positive number or null; got {value!r}"
    )


def _boolean(value: Any) -> str | None:
    return None if isinstance(value, bool) else f"must be true or false; got {value!r}"


def _path(value: Any) -> str | None:
    return None if isinstance(value, str) and value.strip() else f"must be a path; got {value!r}"


def _optional(check: Check) -> Check:
    return lambda value: None if value is None else check(value)


def _choice(choices: tuple[str, ...]) -> Check:
    return lambda value: (
        None if value in choices else f"must be one of {', '.join(choices)}; got {value!r}"
    )


def _regex(value: Any) -> str | None:
    try:
        pattern = re.compile(value)
    except (re.error, TypeError) as error:
        return f"does not compile ({error}); got {value!r}"
    if "patient" not in pattern.groupindex:
        return f"must have a named group 'patient'; got {value!r}"
    return None


def _labels(value: Any) -> str | None:
    if not isinstance(value, list | tuple) or not value:
        return f"must be a non-empty list of labels from {', '.join(COHORT_LABELS)}; got {value!r}"
    unknown = [v for v in value if v not in COHORT_LABELS]
    return (
        f"has unknown label(s) {', '.join(map(str, unknown))}; allowed: {', '.join(COHORT_LABELS)}"
        if unknown
        else None
    )


def _patients_per_class(value: Any) -> str | None:
    if not isinstance(value, Mapping) or not value:
        return f"must map labels to patient counts, e.g. {{normal: 12}}; got {value!r}"
    unknown = sorted(set(value) - set(LABELS))
    if unknown:
        return f"has unknown label(s) {', '.join(map(str, unknown))}; allowed: {', '.join(LABELS)}"
    bad = [k for k, v in value.items() if not _is_int(v) or v < 0]
    return (
        f"needs integer counts >= 0; got {', '.join(f'{k}={value[k]!r}' for k in bad)}"
        if bad
        else None
    )


def _artefact_rate(value: Any) -> str | None:
    if isinstance(value, Mapping):
        unknown = sorted(set(value) - set(ARTEFACTS))
        if unknown:
            return (
                f"has unknown artefact(s) {', '.join(map(str, unknown))}; allowed: "
                f"{', '.join(ARTEFACTS)}"
            )
        bad = [k for k, v in value.items() if _fraction(v)]
        return (
            f"needs rates from 0 to 1; got {', '.join(f'{k}={value[k]!r}' for k in bad)}"
            if bad
            else None
        )
    return _fraction(value)
