"""A slide cohort through the cohort stage: OME and sub-IFD pyramids are slides, names stay
private, the user's folder is never written to."""

from __future__ import annotations

import shutil
from pathlib import Path

from ssc_skin.cohort.handover import build_linkage
from ssc_skin.slides import synthetic as ss
from ssc_skin.slides.ingest import ingest_slide_cohort

PATCHES = {
    "patch_size": 64,
    "stride": 64,
    "min_tissue_fraction": 0.5,
    "unet_min_tissue_fraction": 0.05,
    "target_microns_per_pixel": 2.0,
}
COHORT = {"checks": {"allowed_labels": ["normal", "early", "late", "ssc"]}, "masks": "auto"}


def snapshot(root: Path) -> list[tuple[str, int, int]]:
    return sorted(
        (p.relative_to(root).as_posix(), p.stat().st_size, p.stat().st_mtime_ns)
        for p in root.rglob("*")
    )


def test_ome_and_subifd_pyramids_join_a_slide_cohort_as_pyramids(aperio, no_mpp, tmp_path):
    root = tmp_path / "cohort"
    ss.write_synthetic_slide(
        root / "late" / "MRN-4471-Smith_DOB19700101.ome.tif", 4000, 3000, 3, "late", style="ome"
    )
    ss.write_synthetic_slide(
        root / "normal" / "PAT_0042 (Jane Doe).tif", 4000, 3000, 2, "normal", style="subifd"
    )
    shutil.copy(aperio.path, root / "late" / "PAT0007_Muller.svs")
    shutil.copy(no_mpp.path, root / "normal" / "PAT0008_DOB-1970-01-01.tif")
    before = snapshot(root)
    source = {"layout": "slide_folder", "root": str(root), "label_map": {}}
    result = ingest_slide_cohort(source, COHORT, PATCHES, build_linkage)
    manifest = result.manifest.set_index("vendor")
    assert sorted(manifest.index) == ["aperio", "ome-tiff", "tiff-pyramid"]
    assert (manifest["read_level"] == 1).all()  # 1 um/px for 2 um/px patches, as the Aperio
    assert list(result.report["check"]) == ["no_mpp"]
    shown = result.manifest.to_csv() + result.report.to_csv() + repr(result.metrics)
    for part in ("Smith", "4471", "DOB", "Jane", "Doe", "0042", "Muller", "1970"):
        assert part not in shown
    thumbnail = next(iter(result.images.values()))()
    assert thumbnail.size[0] > 64 and thumbnail.mode == "RGB"
    assert set(result.linkage.dropna(subset=["slide_path"])["slide_path"].map(Path)) == {
        root / "late" / "MRN-4471-Smith_DOB19700101.ome.tif",
        root / "normal" / "PAT_0042 (Jane Doe).tif",
        root / "late" / "PAT0007_Muller.svs",
    }
    assert snapshot(root) == before  # nothing created or changed in the user's folder
