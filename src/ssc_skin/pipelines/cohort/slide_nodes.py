"""Cohort nodes for whole-slide layouts (`slide_folder`, `slide_manifest`) and synthetic slides.

A slide is never copied: `cohort_images` holds its thumbnail (bounded, ~1 MP) under its
pseudonym, so the colour baseline, gallery and stain fit see the whole section at a glance,
and the slide's own path stays in the local linkage (`slide_path`), which the patches stage
reads to cut patches from the slide itself. No raw path reaches the manifest, MLflow or a
report.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from ssc_skin.cohort.privacy import hide_quarantine, pseudonym_key, pseudonymise_records
from ssc_skin.imaging import stain
from ssc_skin.preprocessing.slides import SlideSettings
from ssc_skin.slides import wsi as slides

logger = logging.getLogger(__name__)

SLIDE_LAYOUTS = ("slide_folder", "slide_manifest")
SLIDE_MANIFEST_COLUMNS = [
    "microns_per_pixel",
    "mpp_source",
    "vendor",
    "read_level",
    "tile_size",
    "tiles",
]
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
) -> tuple[
    dict[str, Callable[[], Image.Image]],
    dict[str, Callable[[], Image.Image]],
    pd.DataFrame,
    pd.DataFrame,
    pd.DataFrame,
    dict[str, Any],
]:
    """`ingest_cohort` for slides: discover, check (quarantine vocabulary of images),
    pseudonymise; thumbnails stand in for images, the slide path goes to the linkage only.

    A slide qualifies with one tile of at least the fallback tissue share
    (`patches.unet_min_tissue_fraction`), like an image that is then assessed from its best
    patches; `cohort.checks.min_tissue_fraction` (a share of a whole image) does not apply.
    """
    checks = cohort.get("checks", {})
    settings = SlideSettings.from_params(patches, source.get("microns_per_pixel"))
    lowest = min(
        float(patches["min_tissue_fraction"]), float(patches.get("unet_min_tissue_fraction", 0.05))
    )
    records = slides.discover_slides(source)
    valid, quarantine = slides.validate_slides(
        records,
        label_map=source["label_map"],
        allowed_labels=checks["allowed_labels"],
        patch_size=int(patches["patch_size"]),
        target_mpp=settings.target_mpp,
        min_tissue_fraction=lowest,
        min_saturation=int(patches.get("min_saturation", 12)),
        stride=int(patches["stride"]),
        fallback_mpp=settings.fallback_mpp,
    )
    key = pseudonym_key()
    valid = pseudonymise_records(valid, key)
    valid["mask_source"] = "pseudo" if cohort.get("masks", "auto") != "cohort" else "none"
    thumbnail = {
        row.image: _thumbnail_loader(row.image_path, row.microns_per_pixel, patches, settings)
        for row in valid.itertuples()
    }
    images = {name: (lambda load=load: Image.fromarray(load())) for name, load in thumbnail.items()}
    masks = (
        {
            name: (lambda load=load: Image.fromarray(stain.pseudo_mask(load())))
            for name, load in thumbnail.items()
        }
        if (valid["mask_source"] == "pseudo").all()
        else {}
    )
    manifest = pd.DataFrame(
        {
            "image": valid["image"],
            "patient": valid["patient"],
            "label": valid["label"],
            "has_mask": valid["mask_source"] != "none",
            "mask_source": valid["mask_source"],
            "fixed_split": valid["split"],
            "content_hash": valid["content_hash"],
            "height": valid["height"],
            "width": valid["width"],
            "tissue_fraction": valid["tissue_fraction"],
            "notes": valid["notes"].fillna(""),
            "kind": "slide",
            **{column: valid[column] for column in SLIDE_MANIFEST_COLUMNS},
        }
    )
    labels = {*checks["allowed_labels"], *source["label_map"]}
    report, shown = hide_quarantine(
        quarantine, records, key, label_folders=source["layout"] == "slide_folder", labels=labels
    )
    linkage = linkage_of(valid, shown, records, key)
    linkage["slide_path"] = linkage["image"].map(
        dict(zip(valid["image"], valid["image_path"], strict=True))
    )  # local only
    if valid.empty:
        logger.error(
            "Cohort: no usable slide among %d file(s); the reason for each is in "
            "data/08_reporting/quarantine.csv",
            len(records),
        )
    counts = {
        "images_valid": len(valid),
        "slides_valid": len(valid),
        "files_quarantined": len(quarantine),
        **{
            f"quarantined.{check}": int(n)
            for check, n in quarantine["check"].value_counts().items()
        },
    }
    logger.info(
        "Cohort: %d slide(s) from %d patient(s), %d tissue tile(s); %d file(s) quarantined%s",
        len(manifest),
        manifest["patient"].nunique(),
        int(manifest["tiles"].sum()) if len(manifest) else 0,
        len(quarantine),
        " -> data/08_reporting/quarantine.csv" if len(quarantine) else "",
    )
    metrics = {k: {"value": float(v), "step": 0} for k, v in counts.items()}
    return images, masks, manifest.reset_index(drop=True), linkage, report, metrics


def _thumbnail_loader(
    path: str, mpp: float, patches: dict[str, Any], settings: SlideSettings
) -> Callable[[], np.ndarray]:
    """Reads the slide's thumbnail when asked (nothing is held per slide meanwhile)."""

    def load() -> np.ndarray:
        return slides.read_tissue(
            path,
            int(patches["patch_size"]),
            settings.target_mpp,
            stride=int(patches["stride"]),
            min_saturation=int(patches.get("min_saturation", 12)),
            manifest_mpp=mpp,
            cells_per_tile=settings.cells_per_tile,
            max_thumbnail_pixels=settings.max_thumbnail_pixels,
        ).thumbnail

    return lambda: thumbnail_image(load(), int(patches["patch_size"]))


def thumbnail_image(thumbnail: np.ndarray, patch_size: int) -> np.ndarray:
    """The thumbnail with `patch_size` px of glass right and below: a slide's stand-in image.

    Its patches' `x`, `y` in the patch index are thumbnail pixels (level-0 ones are `x0`,
    `y0`, `size0`), and whole-image views (Grad-CAM, UNet overlays) paste a `patch_size`
    square there; the margin keeps the squares of tiles at the edge inside the picture.
    """
    return np.pad(thumbnail, ((0, patch_size), (0, patch_size), (0, 0)), constant_values=255)
