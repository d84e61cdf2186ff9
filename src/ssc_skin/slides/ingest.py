"""A slide cohort (`slide_folder`, `slide_manifest`) through the cohort stage; no Kedro here.

Discover (`slides.discovery`), check with the cohort's one check runner (`slides.checks`),
pseudonymise, and hand over like an image cohort, with two differences:

- A slide is never copied: its thumbnail (bounded, ~1 MP) stands in for the image under the
  slide's pseudonym, so the colour baseline, gallery and stain fit see the whole section at
  a glance; masks, where pseudo, are drawn on that thumbnail.
- The slide's own path stays in the local linkage (`slide_path`), which the patches stage
  reads to cut patches from the slide itself. No raw path reaches the manifest, MLflow or a
  report.

A slide qualifies with one tile of at least the fallback tissue share
(`patches.unet_min_tissue_fraction`), like an image that is then assessed from its best
patches; `cohort.checks.min_tissue_fraction` (a share of a whole image) does not apply.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from ssc_skin.cohort.privacy import hide_quarantine, pseudonym_key, pseudonymise_records
from ssc_skin.imaging import pseudo_mask
from ssc_skin.preprocessing.slides import SlideSettings
from ssc_skin.slides.checks import validate_slides
from ssc_skin.slides.discovery import discover_slides
from ssc_skin.slides.tiles import read_tissue

logger = logging.getLogger(__name__)

Loader = Callable[[], Image.Image]
SLIDE_MANIFEST_COLUMNS = [
    "microns_per_pixel",
    "mpp_source",
    "vendor",
    "read_level",
    "tile_size",
    "tiles",
]


@dataclass
class SlideCohort:
    """What the cohort stage's `ingest_cohort` node returns for slides, in its order."""

    images: dict[str, Loader]
    masks: dict[str, Loader]
    manifest: pd.DataFrame
    linkage: pd.DataFrame
    report: pd.DataFrame
    metrics: dict[str, Any]

    def astuple(self) -> tuple[Any, ...]:
        return self.images, self.masks, self.manifest, self.linkage, self.report, self.metrics


def ingest_slide_cohort(
    source: Mapping[str, Any],
    cohort: Mapping[str, Any],
    patches: Mapping[str, Any],
    linkage_of: Callable[..., pd.DataFrame],
) -> SlideCohort:
    """Discover, check and hand over a slide cohort; `linkage_of(valid, shown, records, key)`
    builds the local linkage table as for images."""
    checks = cohort.get("checks", {})
    settings = SlideSettings.from_params(patches, source.get("microns_per_pixel"))
    records = discover_slides(source)
    valid, quarantine = validate_slides(
        records,
        label_map=source["label_map"],
        allowed_labels=checks["allowed_labels"],
        patch_size=int(patches["patch_size"]),
        target_mpp=settings.target_mpp,
        min_tissue_fraction=min(
            float(patches["min_tissue_fraction"]),
            float(patches.get("unet_min_tissue_fraction", 0.05)),
        ),
        min_saturation=int(patches.get("min_saturation", 12)),
        stride=int(patches["stride"]),
        fallback_mpp=settings.fallback_mpp,
    )
    key = pseudonym_key()
    valid = pseudonymise_records(valid, key)
    valid["mask_source"] = "pseudo" if cohort.get("masks", "auto") != "cohort" else "none"
    report, shown = hide_quarantine(
        quarantine,
        records,
        key,
        label_folders=source["layout"] == "slide_folder",
        labels={*checks["allowed_labels"], *source["label_map"]},
        show_names=bool((cohort.get("privacy") or {}).get("show_file_names", False)),
    )
    linkage = linkage_of(valid, shown, records, key)
    paths = dict(zip(valid["image"], valid["image_path"], strict=True))
    linkage["slide_path"] = linkage["image"].map(paths)  # local only
    manifest = slide_manifest(valid)
    _log(manifest, len(quarantine), len(records))
    images, masks = thumbnail_loaders(valid, patches, settings)
    return SlideCohort(images, masks, manifest, linkage, report, _metrics(valid, quarantine))


def slide_manifest(valid: pd.DataFrame) -> pd.DataFrame:
    """The pseudonymised manifest rows of valid slides (`kind` slide, no path)."""
    return pd.DataFrame(
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
    ).reset_index(drop=True)


def thumbnail_loaders(
    valid: pd.DataFrame, patches: Mapping[str, Any], settings: SlideSettings
) -> tuple[dict[str, Loader], dict[str, Loader]]:
    """Pseudonym -> its thumbnail image, and -> its pseudo-mask where masks are pseudo; each
    reads the slide when asked (nothing is held per slide meanwhile)."""
    thumbnails = {
        row.image: _thumbnail_loader(row.image_path, row.microns_per_pixel, patches, settings)
        for row in valid.itertuples()
    }
    images = {
        name: (lambda load=load: Image.fromarray(load())) for name, load in thumbnails.items()
    }
    masks = (
        {
            name: (lambda load=load: Image.fromarray(pseudo_mask.pseudo_mask(load())))
            for name, load in thumbnails.items()
        }
        if (valid["mask_source"] == "pseudo").all()
        else {}
    )
    return images, masks


def _thumbnail_loader(
    path: str, mpp: float, patches: Mapping[str, Any], settings: SlideSettings
) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        return read_tissue(
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


def _metrics(valid: pd.DataFrame, quarantine: pd.DataFrame) -> dict[str, Any]:
    counts = {
        "images_valid": len(valid),
        "slides_valid": len(valid),
        "files_quarantined": len(quarantine),
        **{
            f"quarantined.{check}": int(n)
            for check, n in quarantine["check"].value_counts().items()
        },
    }
    return {name: {"value": float(value), "step": 0} for name, value in counts.items()}


def _log(manifest: pd.DataFrame, quarantined: int, total: int) -> None:
    """Counts only: no id, path or reason."""
    if manifest.empty:
        logger.error(
            "Cohort: no usable slide among %d file(s); the reason for each is in "
            "data/08_reporting/quarantine.csv",
            total,
        )
    logger.info(
        "Cohort: %d slide(s) from %d patient(s), %d tissue tile(s); %d file(s) quarantined%s",
        len(manifest),
        manifest["patient"].nunique(),
        int(manifest["tiles"].sum()) if len(manifest) else 0,
        quarantined,
        " -> data/08_reporting/quarantine.csv" if quarantined else "",
    )
