"""Slide layouts through the cohort and patches nodes: quarantine, pseudonyms, linkage, patches."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ssc_skin.pipelines.cohort import nodes as cohort_nodes
from ssc_skin.pipelines.patches import nodes as patch_nodes
from ssc_skin.preprocessing.preprocess import PreprocessConfig
from ssc_skin.slides import synthetic as synthetic_slides

PATCHES = {
    "patch_size": 64,
    "stride": 64,
    "min_tissue_fraction": 0.5,
    "unet_min_tissue_fraction": 0.05,
    "min_saturation": 12,
    "target_microns_per_pixel": 2.0,
    "slide": {"batch_size": 16},
}


@pytest.fixture(scope="module")
def slide_cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("slides") / "cohort"
    synthetic_slides.write_slide_cohort(
        root, {"normal": 1, "late": 1}, width=1600, height=1200, sections=2, mpp=0.5, seed=3
    )
    (root / "manifest.csv").unlink()  # a folder layout: the label folders say it all
    synthetic_slides.write_synthetic_slide(
        root / "normal" / "S0099_1.tif", 1600, 1200, 2, mpp=None, style="generic", seed=5
    )
    synthetic_slides.truncated_copy(root / "late" / "S0002_1.svs", root / "late" / "S0098_1.svs")
    return root


def _cohort(root: Path) -> dict:
    return {
        "source": {"layout": "slide_folder", "root": str(root), "label_map": {}},
        "checks": {
            "allowed_labels": ["normal", "early", "late", "ssc"],
            "min_tissue_fraction": 0.05,
        },
        "masks": "auto",
    }


def test_slide_folder_is_ingested_with_quarantine_and_local_slide_paths(slide_cohort: Path):
    images, masks, manifest, linkage, report, metrics = cohort_nodes.ingest_cohort(
        None, _cohort(slide_cohort), 64, 12, PATCHES
    )
    assert len(manifest) == 2 and set(manifest["kind"]) == {"slide"}
    assert dict(zip(report["check"], report["check"], strict=True)) == {
        "no_mpp": "no_mpp",
        "truncated": "truncated",
    }
    shown = " ".join(report.astype(str).to_numpy().ravel()) + manifest.to_csv()
    assert "S0099" not in shown and "S0098" not in shown and str(slide_cohort) not in shown
    kept = linkage.dropna(subset=["slide_path"])
    assert set(kept["image"]) == set(manifest["image"])
    assert all(Path(p).is_file() for p in kept["slide_path"])
    thumbnail = np.asarray(images[manifest["image"][0]]())
    assert thumbnail.ndim == 3 and thumbnail.shape[0] < 1200 / 4  # a thumbnail, not the slide
    assert metrics["quarantined.no_mpp"]["value"] == 1.0


def test_slide_fallback_mpp_admits_the_slide_without_metadata(slide_cohort: Path):
    cohort = _cohort(slide_cohort)
    cohort["source"]["microns_per_pixel"] = 0.5
    _, _, manifest, _, report, _ = cohort_nodes.ingest_cohort(None, cohort, 64, 12, PATCHES)
    assert len(manifest) == 3 and list(report["check"]) == ["truncated"]
    assert sorted(manifest["mpp_source"]) == ["fallback", "metadata", "metadata"]


def test_slide_patches_are_cut_from_the_slide_at_the_target_resolution(slide_cohort: Path):
    images, masks, manifest, linkage, _, _ = cohort_nodes.ingest_cohort(
        None, _cohort(slide_cohort), 64, 12, PATCHES
    )
    splits = pd.DataFrame({"patient": manifest["patient"].unique(), "split": "train"})
    config = PreprocessConfig.from_params({**PATCHES, "patch_size": 64, "stride": 64}, None)
    arrays, index = patch_nodes.extract_patches(
        images, masks, manifest, splits, config.to_dict(), linkage
    )
    assert arrays["images"].shape[1:] == (64, 64, 3) and len(arrays["images"]) == len(index)
    assert list(index["row"]) == list(range(len(index)))
    # every tile with the fallback share of tissue, as many as validation counted
    assert index.groupby("image").size().to_dict() == dict(
        zip(manifest["image"], manifest["tiles"], strict=True)
    )
    assert set(index["size0"]) == {256}  # 64 px at 2 um/px from a 0.5 um/px slide
    assert (index["x0"] % 256 == 0).all() and index["classifiable"].any()
    assert arrays["images"].std() > 5  # real tissue pixels, not blank glass
