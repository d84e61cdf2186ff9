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

import errno
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ssc_skin.cohort.schema import SOURCE_KEYS, unknown_key_problems
from ssc_skin.cohort.synthetic import ARTEFACTS, STAIN_VECTORS
from ssc_skin.constants import COHORT_LABELS, LABELS

MASK_CHOICES = ("auto", "cohort", "pseudo")
LAYOUTS = (
    "folder",
    "manifest",
    "synthetic",
    "slide_folder",
    "slide_manifest",
)  # slide_*: slides/wsi.py
DEFAULT_PATIENT_ID_REGEX = r"^(?P<patient>[A-Za-z0-9]+)"
PATIENT_FROM = ("filename", "folder")
STAINS = tuple(sorted(STAIN_VECTORS))

Check = Callable[[Any], str | None]  # None when fine, else what is wrong (after the key)


class CohortConfigError(ValueError):
    """A cohort setting is wrong; the message names the key and what is allowed."""


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


def _cohort_problems(cohort: Mapping[str, Any], check_paths: bool) -> list[str]:
    source = cohort.get("source")
    problems = source_config_problems(source)
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
            check_labels((source or {}).get("label_map") or {}, allowed)
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
    problems += _checked(cohort.get("privacy"), "cohort.privacy", {"show_file_names": _boolean})
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
        problems += _path_problems(check_source_config(source))
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
            if not path_exists(path, f"cohort.source.{key}", kind):
                return [f"cohort.source.{key} is not a {kind} ({path.name})"]
        except CohortConfigError as error:
            return [str(error)]
    return []


# --- cohort.source -----------------------------------------------------------------------------


def check_source_config(source: Mapping[str, Any] | None) -> dict[str, Any]:
    """Validate `cohort.source` and fill defaults, so a typo fails before any file is read.

    Every problem is named in one message (one line per key), not only the first.
    """
    problems = source_config_problems(source)
    if problems:
        raise CohortConfigError("; ".join(problems))
    source = source or {}
    return {
        "layout": source.get("layout", "synthetic"),
        "root": source.get("root"),
        "manifest": source.get("manifest"),
        "patient_id_regex": source.get("patient_id_regex") or DEFAULT_PATIENT_ID_REGEX,
        "patient_from": source.get("patient_from") or "filename",
        "label_map": dict(source.get("label_map") or {}),
        "tiff_page": source.get("tiff_page", 0),
        "microns_per_pixel": _positive_or_none(
            source.get("microns_per_pixel"), "cohort.source.microns_per_pixel"
        ),
        "allow_outside_root": bool(source.get("allow_outside_root", False)),
    }


def source_config_problems(source: Mapping[str, Any] | None) -> list[str]:
    """Each problem of `cohort.source`, one message per key that names it."""
    source = {} if source is None else source
    if not isinstance(source, Mapping):
        return [f"cohort.source must be a mapping; got {type(source).__name__}"]
    problems = []
    unknown = sorted(set(source) - set(SOURCE_KEYS))
    if unknown:
        problems.append(
            f"cohort.source has unknown key(s) {', '.join(unknown)}; "
            f"allowed: {', '.join(SOURCE_KEYS)}"
        )
    layout = source.get("layout", "synthetic")
    if layout not in LAYOUTS:
        problems.append(f"cohort.source.layout must be one of {', '.join(LAYOUTS)}; got {layout!r}")
    required = {"folder": "root", "manifest": "manifest"}.get(layout)
    if required and not _is_path(source.get(required)):
        problems.append(
            f"cohort.source.{required} must be a path when layout is {layout}; "
            f"got {source.get(required)!r}"
        )
    if layout == "manifest" and source.get("root") is not None and not _is_path(source.get("root")):
        problems.append(
            "cohort.source.root must be a path or null (for a manifest: the folder "
            f"its paths must stay inside); got {source.get('root')!r}"
        )
    try:
        compile_patient_regex(source.get("patient_id_regex") or DEFAULT_PATIENT_ID_REGEX)
    except CohortConfigError as error:
        problems.append(str(error))
    patient_from = source.get("patient_from") or "filename"
    if patient_from not in PATIENT_FROM:
        problems.append(
            f"cohort.source.patient_from must be one of {', '.join(PATIENT_FROM)}; "
            f"got {patient_from!r}"
        )
    label_map = source.get("label_map") or {}
    if not isinstance(label_map, Mapping) or not all(
        isinstance(k, str) and k.strip() and isinstance(v, str) for k, v in label_map.items()
    ):
        problems.append(
            "cohort.source.label_map must map raw label names to canonical "
            f"label names (text to text); got {label_map!r}"
        )
    tiff_page = source.get("tiff_page", 0)
    if isinstance(tiff_page, bool) or not isinstance(tiff_page, int) or tiff_page < 0:
        problems.append(
            f"cohort.source.tiff_page must be an integer >= 0 (0 = first page); got {tiff_page!r}"
        )
    try:
        _positive_or_none(source.get("microns_per_pixel"), "cohort.source.microns_per_pixel")
    except CohortConfigError as error:
        problems.append(str(error))
    if not isinstance(source.get("allow_outside_root", False), bool):
        problems.append(
            "cohort.source.allow_outside_root must be true or false; got "
            f"{source.get('allow_outside_root')!r}"
        )
    return problems


def _is_path(value: Any) -> bool:
    return isinstance(value, str | os.PathLike) and bool(str(value).strip())


def _positive_or_none(value: Any, key: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise CohortConfigError(
            f"{key} must be a positive number (microns per pixel) or null; got {value!r}"
        )
    return float(value)


def compile_patient_regex(regex: str) -> re.Pattern[str]:
    """Compile the file-name regex; it must have a named group `patient`."""
    try:
        pattern = re.compile(regex)
    except (re.error, TypeError) as error:
        raise CohortConfigError(
            f"cohort.source.patient_id_regex does not compile ({error}); got {regex!r}"
        ) from error
    if "patient" not in pattern.groupindex:
        raise CohortConfigError(
            "cohort.source.patient_id_regex must have a named group "
            f"'patient', e.g. {DEFAULT_PATIENT_ID_REGEX}; got {regex!r}"
        )
    return pattern


def check_labels(label_map: Mapping[str, str], allowed_labels: list[str] | tuple[str, ...]) -> None:
    """Every label-map target must be a canonical label, else every image would be unknown."""
    if not allowed_labels:
        raise CohortConfigError("the allowed (canonical) labels must not be empty")
    allowed = ", ".join(sorted(allowed_labels))
    for raw, canonical in label_map.items():
        if canonical not in allowed_labels:
            raise CohortConfigError(
                f"cohort.source.label_map maps {raw!r} to {canonical!r}, "
                f"which is not one of the allowed labels: {allowed}"
            )


def path_exists(path: Path, key: str, kind: str) -> bool:
    """Whether `path` is a file (kind "file") or folder; a path the OS cannot even look up
    (too long, a NUL byte) is one CohortConfigError naming `key`, never the path itself."""
    try:
        return path.is_file() if kind == "file" else path.is_dir()
    except (OSError, ValueError) as error:
        reason = (
            f"is longer than this system allows ({len(str(path))} characters)"
            if getattr(error, "errno", None) == errno.ENAMETOOLONG
            else f"cannot be looked up ({type(error).__name__}"
            f"{f' errno {error.errno}' if getattr(error, 'errno', None) else ''})"
        )
        raise CohortConfigError(f"{key} {reason}; use a shorter path") from None


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
