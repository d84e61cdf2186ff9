"""The cohort pipeline's nodes on a user-style folder cohort with bad files planted in it."""

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from ssc_skin.cohort import synthetic
from ssc_skin.datasets import OptionalCSVDataset
from ssc_skin.pipelines.cohort.nodes import generate_synthetic_cohort, ingest_cohort, split_cohort

CHECKS = {"min_tissue_fraction": 0.05, "allowed_labels": ["normal", "early", "late", "ssc"]}
SPLIT = {
    "val_fraction": 0.25,
    "test_fraction": 0.25,
    "seed": 0,
    "folds": 0,
    "fold": 0,
    "reuse_saved": True,
}


def _section(label: str, seed: int) -> np.ndarray:
    patient = synthetic.make_patient("x", label, np.random.default_rng(seed))
    return synthetic.render_section(patient, 0, (160, 160), artefact_rate=0.0).image


def _folder_cohort(root: Path) -> Path:
    """Three patients per class (ids like 'SMITH07' in file names) plus bad files."""
    for label, raw in (("normal", "Normal"), ("late", "SSc-late")):
        for p in range(3):
            for i in range(2):
                path = root / raw / f"{label.upper()}0{p}_slide{i}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(_section(label, 100 * p + 10 * i + len(label))).save(path)
    (root / "Normal" / "NORMAL00_broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    (root / "Normal" / "NORMAL01_empty.png").write_bytes(b"")
    Image.new("RGB", (96, 96), (250, 250, 250)).save(root / "Normal" / "NORMAL02_glass.png")
    Image.fromarray(_section("late", 7)).convert("L").save(root / "SSc-late" / "LATE00_grey.png")
    return root


def _checksums(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _cohort_params(root: Path) -> dict:
    return {
        "source": {
            "layout": "folder",
            "root": str(root),
            "label_map": {"Normal": "normal", "SSc-late": "late"},
        },
        "checks": CHECKS,
    }


@pytest.fixture
def folder_cohort(tmp_path: Path) -> Path:
    root = _folder_cohort(tmp_path / "cohort")
    for path in root.rglob("*"):
        path.chmod(0o555 if path.is_dir() else 0o444)  # the project must never need to write
    yield root
    for path in root.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)


def test_folder_cohort_quarantines_bad_files_and_never_touches_the_folder(folder_cohort):
    before = _checksums(folder_cohort)
    images, masks, manifest, linkage, report, metrics = ingest_cohort(
        pd.DataFrame(), _cohort_params(folder_cohort), patch_size=32, min_saturation=12
    )
    assert _checksums(folder_cohort) == before
    reasons = dict(zip(report["check"], report["file"], strict=True))
    assert set(reasons) == {"not_an_image", "empty_file", "no_tissue"}
    assert "grayscale -> RGB" in manifest["notes"].str.cat()
    assert len(manifest) == 13 and set(manifest["label"]) == {"normal", "late"}
    assert metrics["files_quarantined"]["value"] == 3
    # no mask files: every image gets a pseudo-mask from colour deconvolution
    assert set(manifest["mask_source"]) == {"pseudo"} and set(masks) == set(manifest["image"])
    assert (np.asarray(masks[manifest["image"].iloc[0]]()) == 2).any()
    image = images[manifest["image"].iloc[0]]()
    assert image.mode == "RGB" and image.size == (160, 160)
    # patient ids of the file names are replaced by pseudonyms in everything but the linkage
    assert set(linkage["patient_id"]) == {f"{c}0{p}" for c in ("NORMAL", "LATE") for p in range(3)}
    outputs = manifest.to_csv() + report.to_csv()
    assert not [pid for pid in linkage["patient_id"] if pid in outputs]
    assert report["file"].str.contains("pt-").all()


def test_wrong_layout_names_the_key_and_the_allowed_values(tmp_path):
    with pytest.raises(ValueError, match=r"cohort\.source\.layout.*folder, manifest, synthetic"):
        ingest_cohort(pd.DataFrame(), {"source": {"layout": "folders"}, "checks": CHECKS}, 32, 12)


def test_mask_choice_is_checked(folder_cohort):
    params = {**_cohort_params(folder_cohort), "masks": "drawn"}
    with pytest.raises(ValueError, match=r"cohort\.masks must be one of auto, cohort, pseudo"):
        ingest_cohort(pd.DataFrame(), params, 32, 12)
    with pytest.raises(ValueError, match="cohort.masks: auto"):
        ingest_cohort(pd.DataFrame(), {**params, "masks": "cohort"}, 32, 12)


def test_a_folder_cohort_skips_synthetic_generation(tmp_path):
    images, masks, manifest = generate_synthetic_cohort(
        {"source": {"layout": "folder", "root": str(tmp_path)}}
    )
    assert images == {} and masks == {} and manifest.empty


def _manifest(n_per_class: int = 4) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "image": f"im-{label}{p}{i}",
                "patient": f"pt-{label}{p}",
                "label": label,
                "fixed_split": None,
                "content_hash": f"{label}{p}{i}",
            }
            for label in ("normal", "early", "late")
            for p in range(n_per_class)
            for i in range(2)
        ]
    )


def test_split_table_is_reused_when_settings_match(tmp_path):
    """The saved table comes back through the catalog (`previous_patient_splits`)."""
    saved = OptionalCSVDataset(str(tmp_path / "splits.csv"))
    assert saved.load() is None  # a first run: nothing saved yet
    first = split_cohort(_manifest(), SPLIT, saved.load())
    moved = first.copy()
    moved["split"] = moved["split"].map({"train": "val", "val": "test", "test": "train"})
    moved.to_csv(tmp_path / "splits.csv", index=False)
    again = split_cohort(_manifest(), SPLIT, saved.load())
    assert again["split"].tolist() == moved["split"].tolist()
    other_seed = split_cohort(_manifest(), {**SPLIT, "seed": 1}, saved.load())
    assert (other_seed["settings"] != moved["settings"]).all()


def test_manifest_split_column_fixes_a_patients_split(tmp_path):
    manifest = _manifest()
    manifest.loc[manifest["patient"] == "pt-late0", "fixed_split"] = "test"
    table = split_cohort(manifest, SPLIT)
    assert table.set_index("patient").loc["pt-late0", "split"] == "test"


def test_duplicate_image_across_splits_fails_the_run(tmp_path):
    manifest = _manifest()
    manifest.loc[manifest["patient"] == "pt-late0", "content_hash"] = "same"
    manifest.loc[manifest["patient"] == "pt-normal0", "content_hash"] = "same"
    params = {**SPLIT, "reuse_saved": False}
    tables = [
        split_cohort(manifest, {**params, "seed": s})
        for s in range(20)
        if _same_split(manifest, s, params)
    ]
    assert tables  # some seeds put both patients in one split: no leak
    with pytest.raises(ValueError, match="identical image"):
        for seed in range(20):
            split_cohort(manifest, {**params, "seed": seed})


def _same_split(manifest, seed, params) -> bool:
    clean = manifest.assign(content_hash=manifest["image"])
    table = split_cohort(clean, {**params, "seed": seed}).set_index("patient")["split"]
    return table["pt-late0"] == table["pt-normal0"]


def test_kfold_tests_every_patient_once(tmp_path):
    params = {**SPLIT, "reuse_saved": False, "folds": 4}
    tested = [
        p
        for fold in range(4)
        for p in split_cohort(_manifest(), {**params, "fold": fold}).query("split == 'test'")[
            "patient"
        ]
    ]
    assert sorted(tested) == sorted(_manifest()["patient"].unique())


def test_resolution_is_harmonised_to_the_target_microns_per_pixel(folder_cohort):
    params = _cohort_params(folder_cohort)
    params["source"]["microns_per_pixel"] = 0.5
    images, masks, manifest, *_ = ingest_cohort(
        pd.DataFrame(), {**params, "target_microns_per_pixel": 1.0}, 32, 12
    )
    first = manifest["image"].iloc[0]
    assert images[first]().size == (80, 80)  # 160 px at 0.5 um/px -> 80 px at 1.0 um/px
    assert masks[first]().size == (80, 80)


def test_bad_resolution_value_names_the_key(folder_cohort):
    params = _cohort_params(folder_cohort)
    params["source"]["microns_per_pixel"] = -1
    with pytest.raises(ValueError, match=r"cohort\.source\.microns_per_pixel"):
        ingest_cohort(pd.DataFrame(), params, 32, 12)


def test_split_node_names_the_reuse_option_when_a_saved_patient_is_gone():
    """Issue 22 finding 10: no manifest here, so the message must not blame one."""
    manifest = pd.DataFrame(
        [
            {
                "patient": f"PAT_{label[0]}{p:03d}",
                "label": label,
                "fixed_split": None,
                "content_hash": f"{label}{p}{i}",
            }
            for label in ("normal", "late")
            for p in range(4)
            for i in range(2)
        ]
    )
    params = {"val_fraction": 0.25, "test_fraction": 0.25, "seed": 3, "reuse_saved": True}
    saved = split_cohort(manifest, params)
    gone = saved.query("label == 'normal' and split == 'val'")["patient"]
    with pytest.raises(ValueError) as caught:
        split_cohort(manifest[~manifest["patient"].isin(gone)], params, saved)
    assert "cohort.split.reuse_saved: false" in str(caught.value)
    assert "manifest" not in str(caught.value)


def test_the_node_shows_file_names_only_when_asked(folder_cohort):
    """Issue 22 finding 3: `cohort.privacy.show_file_names: true` is an explicit opt-in."""
    before = _checksums(folder_cohort)
    params = _cohort_params(folder_cohort)
    report = ingest_cohort(pd.DataFrame(), params, 32, 12)[4]
    assert not report["file"].str.contains("NORMAL0|LATE0").any()  # pseudonyms by default
    shown = ingest_cohort(pd.DataFrame(), {**params, "privacy": {"show_file_names": True}}, 32, 12)
    assert "Normal/NORMAL01_empty.png" in set(shown[4]["file"])
    assert _checksums(folder_cohort) == before
