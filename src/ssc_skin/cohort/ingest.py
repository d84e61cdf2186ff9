"""Read and validate a real image cohort before any training (no Kedro here).

Users point the project at their own skin-biopsy images by configuration alone (a folder or a
manifest CSV, see `cohort.sources`). Ingestion is three steps, each in its own module:

- `cohort.sources`: discovery, one record per file, with the path checks (outside the
  cohort folder, no image extension, no label folder, no patient id);
- `cohort.readers`: decoding one file to 8-bit RGB (PNG, JPEG, TIFF pages, bit depth, colour);
- `cohort.checks`: the one check runner (metadata, the ordered checks below, patient
  conflicts, duplicates) that slides use too.

This module holds the image checks and `validate_cohort`, which wires them. Every file is
checked, each problem quarantines the file with a reason a person can act on, and the other
files go on. The user's folder is read-only to the project.

Choices made here:

- Duplicates are found by a SHA-256 of the decoded pixels (and size), so the same image saved
  as PNG and as TIFF is caught; a JPEG re-encode is not pixel-identical and is not.
- A bad mask (missing, unreadable, wrong size) is quarantined on its own and the image goes on
  without a mask, with a note: the image is still fine for classification.
- Image checks run on a few threads (`checks.default_workers`; they wait on file systems
  and on decoders that release the GIL). Each holds `DECODE_BUDGET` for its image's pixels
  (from the header) while it decodes and checks it, so at most 2^25 decoded pixels are held
  at once, or one larger image alone; only a hash of the pixels is kept. Memory is bounded
  by that budget, not by the number of images. Writing (`handover`) holds one image at a time.

Patient ids are private: log lines carry counts only. The quarantine table returned here
names files by their path (which may contain ids); the pipeline pseudonymises it before
writing (`privacy.hide_quarantine`).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

import numpy as np
import pandas as pd

from ssc_skin.cohort import handover
from ssc_skin.cohort.checks import NUMERIC as _NUMERIC
from ssc_skin.cohort.checks import (
    QUARANTINE_COLUMNS,
    RECORD_COLUMNS,
    VALID_COLUMNS,
    Budget,
    Check,
    ImageProblem,
    check_items,
    check_metadata,
    default_workers,
    flag_duplicates,
    flag_patient_conflicts,
    frame,
    log_summary,
    logger,
    text,
)
from ssc_skin.cohort.config import (
    DEFAULT_PATIENT_ID_REGEX,
    LAYOUTS,
    PATIENT_FROM,
    SOURCE_KEYS,
    CohortConfigError,
    check_labels,
    check_source_config,
    compile_patient_regex,
    path_exists,
    source_config_problems,
)
from ssc_skin.cohort.handover import Ingested
from ssc_skin.cohort.privacy import hide_quarantine, pseudonymise_records
from ssc_skin.cohort.readers import (
    IMAGE_FORMATS,
    MAX_DECODED_BYTES,
    MAX_IMAGE_PIXELS,
    check_encoded_image,
    check_file,
    header_pixels,
    read_mask,
    read_rgb,
)
from ssc_skin.cohort.sources import (
    IMAGE_EXTENSIONS,
    JUNK_NAMES,
    MANIFEST_OPTIONAL,
    MANIFEST_REQUIRED,
    OUTSIDE_ROOT,
    discover_cohort,
    discover_folder,
    display_text,
    is_junk,
    read_manifest,
    record,
    resolve,
    walk,
)
from ssc_skin.constants import MASK_CLASSES
from ssc_skin.imaging.tissue import MIN_SATURATION, tissue_mask

# Decoded pixels the image checks may hold at once over all worker threads (~33.5 MP, about
# 450 MB of working set with the tissue check); a larger image is checked alone.
DECODE_BUDGET = Budget(1 << 25)

__all__ = [  # what other packages import from here (the rest lives in the modules above)
    "DEFAULT_PATIENT_ID_REGEX",
    "IMAGE_EXTENSIONS",
    "IMAGE_FORMATS",
    "JUNK_NAMES",
    "LAYOUTS",
    "MANIFEST_OPTIONAL",
    "MANIFEST_REQUIRED",
    "MAX_DECODED_BYTES",
    "MAX_IMAGE_PIXELS",
    "PATIENT_FROM",
    "QUARANTINE_COLUMNS",
    "RECORD_COLUMNS",
    "SOURCE_KEYS",
    "VALID_COLUMNS",
    "CohortConfigError",
    "ImageProblem",
    "check_encoded_image",
    "check_labels",
    "check_source_config",
    "compile_patient_regex",
    "discover_cohort",
    "discover_folder",
    "display_text",
    "image_checks",
    "ingest_images",
    "path_exists",
    "read_manifest",
    "read_mask",
    "read_rgb",
    "source_config_problems",
    "validate_cohort",
]


def validate_cohort(
    records: pd.DataFrame,
    *,
    label_map: Mapping[str, str],
    allowed_labels: list[str] | tuple[str, ...],
    min_side: int,
    min_tissue_fraction: float,
    min_saturation: int = MIN_SATURATION,
    tiff_page: int = 0,
    progress: Callable[[int, int], None] | None = None,
    workers: int = 1,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Check every file before training: (valid images, quarantined files with reasons).

    Both tables are sorted by path, so a rerun gives the same tables; `workers` threads
    decode at once (the results do not depend on it).
    """
    if min_side < 1 or not 0 <= min_tissue_fraction <= 1 or tiff_page < 0:
        raise CohortConfigError(
            "need patches.patch_size >= 1, 0 <= cohort.checks.min_tissue_fraction <= 1 and "
            f"cohort.source.tiff_page >= 0; got {min_side}, {min_tissue_fraction}, {tiff_page}"
        )
    return check_items(
        records,
        image_checks(min_side, min_tissue_fraction, min_saturation, tiff_page),
        label_map=label_map,
        allowed_labels=allowed_labels,
        columns=VALID_COLUMNS,
        workers=workers,
        progress=progress,
    )


def ingest_images(
    cohort: Mapping[str, Any],
    *,
    min_side: int,
    min_saturation: int,
    key: str,
    workers: int | None = None,
) -> Ingested:
    """Discover, check and hand over an image cohort (`cohort`: the `cohort` parameters).

    The synthetic cohort is read back from disk exactly like a user's manifest cohort. A
    cohort with no usable image still returns (its report says why for every file).
    """
    source = check_source_config(cohort.get("source"))
    if source["layout"] == "synthetic":
        source = {**source, "layout": "manifest"}
    checks = cohort.get("checks", {})
    records = discover_cohort(source)
    valid, quarantine = validate_cohort(
        records,
        label_map=source["label_map"],
        allowed_labels=checks["allowed_labels"],
        min_side=min_side,
        min_tissue_fraction=checks["min_tissue_fraction"],
        min_saturation=min_saturation,
        tiff_page=source["tiff_page"],
        workers=default_workers() if workers is None else workers,
    )
    valid = pseudonymise_records(valid, key)
    valid["mask_source"] = handover.mask_sources(valid, cohort.get("masks", "auto"))
    report, shown = hide_quarantine(
        quarantine,
        records,
        key,
        label_folders=source["layout"] == "folder",
        labels={*checks["allowed_labels"], *source["label_map"]},
        show_names=bool((cohort.get("privacy") or {}).get("show_file_names", False)),
    )
    manifest = handover.manifest_table(valid)
    handover.log_handover(manifest, len(quarantine), len(records))
    scale = handover.resolution_scale(
        source["microns_per_pixel"], cohort.get("target_microns_per_pixel")
    )
    return Ingested(
        images=handover.image_loaders(valid, source["tiff_page"], scale),
        masks=handover.mask_loaders(valid, source["tiff_page"], scale),
        manifest=manifest,
        linkage=handover.build_linkage(valid, shown, records, key),
        report=report,
        metrics=handover.quarantine_metrics(valid, quarantine),
    )


def image_checks(
    min_side: int,
    min_tissue_fraction: float,
    min_saturation: int = MIN_SATURATION,
    tiff_page: int = 0,
) -> list[Check]:
    """The checks of one image file, in order: decode (with size and tissue), then its mask."""
    return [
        Check(
            "image",
            partial(
                _check_image,
                min_side=min_side,
                min_tissue_fraction=min_tissue_fraction,
                min_saturation=min_saturation,
                tiff_page=tiff_page,
            ),
        ),
        Check("mask", _check_mask),
    ]


def _check_image(
    entry: dict[str, Any],
    *,
    min_side: int,
    min_tissue_fraction: float,
    min_saturation: int,
    tiff_page: int,
) -> None:
    """Decode, then size and tissue checks; keeps only a hash of the pixels.

    Decoding holds `DECODE_BUDGET` for the image's pixels (from its header), so the worker
    threads never hold more than that many decoded pixels at once, or one larger image alone.
    """
    with DECODE_BUDGET.hold(header_pixels(entry["image_path"])):
        image, notes = read_rgb(entry["image_path"], tiff_page)
        height, width = image.shape[:2]
        digest = hashlib.sha256(f"{height}x{width}:".encode())
        digest.update(np.ascontiguousarray(image).data)
        entry.update(content_hash=digest.hexdigest(), height=height, width=width, notes=notes)
        if min(height, width) < min_side:
            raise ImageProblem(
                "too_small",
                f"too small for one patch: {width}x{height} px, patch size {min_side}",
            )
        fraction = float(tissue_mask(image, min_saturation).mean())
        del image
    entry["tissue_fraction"] = fraction
    if fraction < min_tissue_fraction:
        raise ImageProblem(
            "no_tissue",
            f"no tissue: {fraction:.1%} of the image is tissue, need {min_tissue_fraction:.1%}",
        )


def _check_mask(entry: dict[str, Any]) -> list[dict[str, str]]:
    """A bad mask is dropped, not the image: it can still be classified without one."""
    if not entry["mask_path"]:
        return []
    try:
        if entry.get("mask_problem"):
            raise ImageProblem("outside_root", entry["mask_problem"])
        mask = read_mask(entry["mask_path"])
        if mask.shape != (entry["height"], entry["width"]):
            raise ImageProblem(
                "mask_size",
                f"size {mask.shape[1]}x{mask.shape[0]} px differs from the image's "
                f"{entry['width']}x{entry['height']} px",
            )
        top = int(mask.max()) if mask.size else 0
        if top > max(MASK_CLASSES.values()):
            classes = ", ".join(f"{v} {k}" for k, v in MASK_CLASSES.items())
            raise ImageProblem(
                "mask_values",
                f"values must be class indices 0-{max(MASK_CLASSES.values())} ({classes}); "
                f"found values up to {top}",
            )
    except ImageProblem as problem:
        entry["notes"].append(f"mask dropped: {problem.reason}")
        entry["mask_path"] = None
        return [
            {
                "file": entry["mask_relative_path"],
                "check": "mask",
                "reason": f"mask {problem.reason}; image {entry['relative_path']} kept "
                "without a mask",
            }
        ]
    return []


# --- old private names that slides/wsi.py still imports (helper A2 moves it to checks) -------
_check_metadata = check_metadata
_flag_duplicates = flag_duplicates
_flag_patient_conflicts = flag_patient_conflicts
_frame = frame
_log_summary = log_summary
_text = text


def _report_progress(
    done: int, total: int, start: float, progress: Callable[[int, int], None] | None
) -> None:
    """The old per-item progress of slides/wsi.py (a line every 10%); see `checks.Progress`."""
    if progress is not None:
        progress(done, total)
    if done % max(1, total // 10) == 0 or done == total:
        rate = done / max(time.perf_counter() - start, 1e-9)
        logger.info("Validating cohort: %d/%d files (%.1f images/s)", done, total, rate)


# slides/wsi.py's old imports, until it has switched to the public names in sources/readers
_check_file, _OUTSIDE_ROOT, _is_junk, _record, _resolve, _walk = (
    check_file,
    OUTSIDE_ROOT,
    is_junk,
    record,
    resolve,
    walk,
)
__all__ += ["_NUMERIC", "_OUTSIDE_ROOT", "_check_file", "_is_junk", "_record", "_resolve", "_walk"]
