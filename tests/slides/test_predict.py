"""Predict's inputs and slides (`slides.predict`): multi-file slides grouped, the slide
manifest's mpp, and slides streamed batch by batch with every candidate tile accounted for."""

from __future__ import annotations

import hashlib
import json
import weakref
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from ssc_skin.cohort import synthetic
from ssc_skin.constants import DERMIS
from ssc_skin.preprocessing import slides as slide_preprocess
from ssc_skin.preprocessing.preprocess import PreprocessConfig, Preprocessor
from ssc_skin.preprocessing.slides import SlideSettings
from ssc_skin.slides import outputs
from ssc_skin.slides import predict as sp
from ssc_skin.slides import synthetic as synthetic_slides
from ssc_skin.slides import tiles as wsi_tiles

REGEX = r"^(?P<patient>[A-Za-z0-9]+)"
CONFIG = PreprocessConfig(
    patch_size=64,
    stride=64,
    min_dermis_fraction=0.5,
    unet_input_size=16,
    slide={"target_microns_per_pixel": 2.0, "batch_size": 8},
)
PARAMS = {"patient_ids": True, "patient_id_regex": None}
SOURCE = {"patient_id_regex": REGEX, "tiff_page": 0}
CHECKS = {"min_tissue_fraction": 0.05}


def _checksums(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _image(path: Path, seed: int = 4) -> None:
    patient = synthetic.make_patient("x", "normal", np.random.default_rng(seed))
    image = synthetic.render_section(patient, 0, (160, 160), artefact_rate=0.0).image
    Image.fromarray(image).save(path)


class FakeModel:
    """A task model without TensorFlow: P(ssc) is the patch's mean brightness."""

    task, architecture, runtime, input_size = "binary", "fake", "keras", 64
    class_names = ("normal", "ssc")

    def probabilities(self, patches: np.ndarray) -> np.ndarray:
        p = np.asarray(patches, float).mean(axis=(1, 2, 3)) / 255
        return np.stack([1 - p, p], axis=1)


def parity_unet(patches: np.ndarray) -> np.ndarray:
    """Dermis where a patch's first pixel is even: about half the tiles are gated out, the
    same ones however the patches are batched."""
    n, size = len(patches), patches.shape[1]
    scores = np.zeros((n, size, size, 4), np.float32)
    scores[..., 0] = 0.5
    scores[(patches[:, 0, 0, 0] % 2) == 0, :, :, DERMIS] = 1.0
    return scores


# --- finding 11: multi-file slides are grouped as the cohort groups them -----------------------


def test_a_dicom_folder_is_one_slide_named_by_its_folder(tmp_path):
    series = tmp_path / "MRN-4471-Smith_DOB19700101"
    series.mkdir()
    for uid in ("1.2.826.0.1.3680043.8.498.11", "1.2.826.0.1.3680043.8.498.12"):
        (series / f"{uid}.dcm").write_bytes(b"not really DICOM")
    _image(tmp_path / "PAT_0042_a.png")
    before = _checksums(tmp_path)
    records = sp.discover_inputs(tmp_path, REGEX)
    dicom = records[records["image_path"].str.endswith(".dcm")]
    assert len(dicom) == 1  # not one slide per file
    assert dicom["relative_path"].iloc[0] == "MRN-4471-Smith_DOB19700101"
    assert dicom["patient_id"].iloc[0] == "MRN"  # from the folder, not the UID's "1"
    images, quarantine, _ = sp.find_inputs(
        {**PARAMS, "input": str(tmp_path)}, SOURCE, CHECKS, CONFIG
    )
    assert len(quarantine) == 1 and list(images["kind"]) == ["image"]
    assert "Smith" not in quarantine.to_csv() and "1.2.826" not in quarantine.to_csv()
    assert _checksums(tmp_path) == before


def test_mirax_data_files_belong_to_their_slide(tmp_path):
    (tmp_path / "PAT_0042.mrxs").write_bytes(b"[GENERAL]\n")
    data = tmp_path / "PAT_0042"
    data.mkdir()
    (data / "Slidedat.ini").write_text("[GENERAL]\n")
    (data / "Data0000.dat").write_bytes(b"\0" * 16)
    records = sp.discover_inputs(tmp_path, REGEX)
    assert list(records["relative_path"]) == ["PAT_0042.mrxs"]
    _, quarantine, _ = sp.find_inputs({**PARAMS, "input": str(tmp_path)}, SOURCE, CHECKS, CONFIG)
    assert "not_image_extension" not in set(quarantine["check"]) and len(quarantine) == 1


def test_ome_and_sub_ifd_pyramids_are_predicted_as_slides(tmp_path):
    """Finding 6 on predict's side: the slide readers' `is_slide` decides, so an OME-TIFF is
    a slide (it used to go to the image decoder and be quarantined `too_large`)."""
    for style in ("ome", "subifd"):
        synthetic_slides.write_synthetic_slide(
            tmp_path / f"MRN-4471-Smith_{style}.tif", 1600, 1200, 2, mpp=0.5, style=style, seed=1
        )
    images, quarantine, _ = sp.find_inputs(
        {**PARAMS, "input": str(tmp_path)}, SOURCE, CHECKS, CONFIG
    )
    assert list(images["kind"]) == ["slide", "slide"] and quarantine.empty


# --- finding 11: the slide manifest's per-slide mpp ---------------------------------------------


@pytest.fixture(scope="module")
def no_mpp_slides(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("slides")
    for name, seed in (("MRN-4471-Smith_1.tif", 1), ("PAT_0042_1.tif", 2)):
        synthetic_slides.write_synthetic_slide(
            root / name, 1600, 1200, 2, mpp=None, style="generic", seed=seed
        )
    return root


def test_the_manifest_gives_mpp_to_slides_without_metadata(no_mpp_slides, tmp_path):
    manifest = tmp_path / "mpp.csv"
    manifest.write_text(f"slide_path,microns_per_pixel\n{no_mpp_slides}/MRN-4471-Smith_1.tif,0.5\n")
    before = _checksums(no_mpp_slides)
    params = {**PARAMS, "input": str(no_mpp_slides), "slide_manifest": str(manifest)}
    images, quarantine, linkage = sp.find_inputs(params, SOURCE, CHECKS, CONFIG)
    assert list(images["mpp_source"]) == ["manifest"]
    assert images["microns_per_pixel"].iloc[0] == pytest.approx(0.5)
    assert list(quarantine["check"]) == ["no_mpp"]  # the slide the manifest does not list
    assert linkage["relative_path"].iloc[0] == "MRN-4471-Smith_1.tif"
    assert _checksums(no_mpp_slides) == before


def test_an_implausible_manifest_mpp_quarantines_that_slide_only(no_mpp_slides, tmp_path):
    manifest = tmp_path / "mpp.csv"
    manifest.write_text(
        "image_path,microns_per_pixel\n"
        f"{no_mpp_slides}/MRN-4471-Smith_1.tif,352.7\n"
        f"{no_mpp_slides}/PAT_0042_1.tif,0.5\n"
    )
    params = {**PARAMS, "input": str(no_mpp_slides), "slide_manifest": str(manifest)}
    images, quarantine, _ = sp.find_inputs(params, SOURCE, CHECKS, CONFIG)
    assert len(images) == 1 and list(quarantine["check"]) == ["invalid_mpp"]
    reason = quarantine["reason"].iloc[0]
    assert "predict.slide_manifest line 2" in reason and "352.7" in reason
    assert "Smith" not in quarantine.to_csv()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "slide_path,micron_per_pixel\nMRN-4471-Smith_1.tif,0.5\n",
            "did you mean 'microns_per_pixel'",
        ),
        ("slide_path,microns_per_pixel,stain\na.svs,0.5,HE\n", "unknown column(s) 'stain'"),
        ("slide_path\nMRN-4471-Smith_1.tif\n", "lacks column(s) microns_per_pixel"),
        ("", "is empty"),
    ],
)
def test_a_bad_manifest_is_one_message_naming_the_key(tmp_path, text, message):
    manifest = tmp_path / "MRN-4471-Smith_DOB19700101.csv"
    manifest.write_text(text)
    with pytest.raises(sp.SlideManifestError) as error:
        sp.read_slide_manifest(manifest)
    assert message in str(error.value) and "predict.slide_manifest" in str(error.value)
    assert "Smith" not in str(error.value) and str(tmp_path) not in str(error.value)


def test_a_missing_manifest_names_the_key_not_the_path(tmp_path):
    with pytest.raises(sp.SlideManifestError, match="predict.slide_manifest is not a file") as e:
        sp.read_slide_manifest(tmp_path / "MRN-4471-Smith.csv")
    assert "Smith" not in str(e.value)


# --- finding 8: slides stream batch by batch ------------------------------------------------------


@pytest.fixture(scope="module")
def large_slide(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("large") / "PAT_0042_big.svs"
    synthetic_slides.write_synthetic_slide(path, 4800, 3600, 3, "late", mpp=0.5, seed=3)
    return path


def test_patches_held_at_once_are_bounded_by_the_batch_size(large_slide, monkeypatch):
    """Instrument the batch generator: when it reads a new batch, at most the previous
    batch may still be alive (the old path kept every candidate, raw and normalised)."""
    original, alive, held = wsi_tiles.iter_patches, [], []

    def counting(*args, **kwargs):
        for batch in original(*args, **kwargs):
            alive.append(weakref.ref(batch.images))
            held.append(sum(len(r()) for r in alive if r() is not None))
            yield batch

    monkeypatch.setattr(wsi_tiles, "iter_patches", counting)
    settings = SlideSettings.from_config(CONFIG)
    preprocessor = Preprocessor(CONFIG, parity_unet)
    rows, result = sp.predict_slide(
        str(large_slide), "im-x", [FakeModel()], preprocessor, settings, 0.6
    )
    assert len(held) >= 6 and len(result.tiles) > 5 * settings.batch_size
    assert max(held) <= 2 * settings.batch_size
    assert rows[0]["n_patches"] == int(result.tiles["scored"].sum()) > 0


def test_streamed_slide_equals_the_whole_slide_preprocessing(large_slide):
    """Same patches, same gating, same mean as cutting every candidate at once."""
    settings = SlideSettings.from_config(CONFIG)
    preprocessor = Preprocessor(CONFIG, parity_unet)
    model = FakeModel()
    whole = slide_preprocess.preprocess_slide(str(large_slide), preprocessor, settings)
    expected = model.probabilities(whole.found.used_patches).mean(axis=0)
    rows, result = sp.predict_slide(str(large_slide), "im-x", [model], preprocessor, settings, 0.6)
    assert rows[0]["selection"] == whole.found.selection == "ok"
    assert rows[0]["n_patches"] == len(whole.found.used_patches)
    np.testing.assert_allclose([rows[0]["probability_ssc"]], [expected[1]], atol=1e-9)
    scored = result.tiles[result.tiles["scored"]]
    assert {(int(x), int(y)) for x, y in zip(scored["x"], scored["y"], strict=True)} == {
        (t.x, t.y) for t in whole.found.used_tiles
    }


def test_gated_out_tiles_are_kept_as_not_scored_with_their_dermis_fraction(large_slide):
    """Finding 12: tiles removed by gating used to be absent from the QuPath output."""
    settings = SlideSettings.from_config(CONFIG)
    _, result = sp.predict_slide(
        str(large_slide), "im-x", [FakeModel()], Preprocessor(CONFIG, parity_unet), settings, 0.6
    )
    gated = result.tiles[~result.tiles["scored"]]
    assert len(gated) > 0 and (gated["dermis_fraction"] < 0.5).all()
    assert gated[outputs.task_column("binary", "ssc")].isna().all()
    collection = json.loads(outputs.qupath_files(result)["qupath_binary.geojson"])
    not_scored = [
        f
        for f in collection["features"]
        if f["properties"]["classification"]["name"] == outputs.NOT_SCORED
    ]
    assert len(not_scored) == len(gated)
    assert all("dermis_fraction" in f["properties"]["measurements"] for f in not_scored)
    assert not any("probability_ssc" in f["properties"]["measurements"] for f in not_scored)


def test_gating_that_removes_every_tile_falls_back_to_all_of_them(large_slide):
    config = PreprocessConfig(**{**CONFIG.to_dict(), "min_dermis_fraction": 1.0})

    def no_dermis(patches: np.ndarray) -> np.ndarray:
        return np.zeros((*patches.shape[:3], 4), np.float32) + np.eye(4)[0]

    settings = SlideSettings.from_config(config)
    rows, result = sp.predict_slide(
        str(large_slide), "im-x", [FakeModel()], Preprocessor(config, no_dermis), settings, 0.6
    )
    assert rows[0]["selection"] == "gating_fallback"
    assert result.tiles["scored"].all() and rows[0]["n_patches"] == len(result.tiles)
    assert not pd.isna(rows[0]["probability_ssc"])
