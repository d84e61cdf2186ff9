"""Cohort nodes for whole-slide layouts (`slide_folder`, `slide_manifest`) and synthetic slides.

The work is in `slides.ingest` (Kedro-free): a slide is never copied, its thumbnail stands in
for the image and its path stays in the local linkage.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pandas as pd

from ssc_skin.slides.ingest import ingest_slide_cohort

logger = logging.getLogger(__name__)

SLIDE_LAYOUTS = ("slide_folder", "slide_manifest")
SYNTHETIC_SLIDE_KEYS = (
    "patients_per_class",
    "slides_per_patient",
    "width",
    "height",
    "sections",
    "mpp",
    "style",
    "seed",
    "stain",
    "difficulty",
    "artefact_rate",
)


def is_slide_layout(source: dict[str, Any] | None) -> bool:
    return (source or {}).get("layout") in SLIDE_LAYOUTS


def synthetic_slide_spec(cohort: dict[str, Any]) -> dict[str, Any]:
    """What `SyntheticSlideCohortDataset` writes: `cohort.synthetic_slides`, or {} (nothing)
    unless the layout is a slide layout and the block is set."""
    spec = cohort.get("synthetic_slides")
    if not spec or not is_slide_layout(cohort.get("source")):
        return {}
    unknown = sorted(set(spec) - set(SYNTHETIC_SLIDE_KEYS))
    if unknown:
        raise ValueError(
            f"cohort.synthetic_slides has unknown key(s) {', '.join(unknown)}; "
            f"allowed: {', '.join(SYNTHETIC_SLIDE_KEYS)}"
        )
    logger.info(
        "Synthetic slides: %d patient(s) x %d slide(s) of %dx%d px",
        sum(spec["patients_per_class"].values()),
        spec.get("slides_per_patient", 1),
        spec.get("width", 4000),
        spec.get("height", 3000),
    )
    return dict(spec)


def ingest_slides(
    source: dict[str, Any],
    cohort: dict[str, Any],
    patches: dict[str, Any],
    linkage_of: Callable[..., pd.DataFrame],
) -> tuple[Any, ...]:
    """`ingest_cohort` for slides (`slides.ingest.ingest_slide_cohort`): thumbnail images and
    masks, manifest, linkage (with the local `slide_path`), quarantine report, metrics."""
    return ingest_slide_cohort(source, cohort, patches, linkage_of).astuple()
