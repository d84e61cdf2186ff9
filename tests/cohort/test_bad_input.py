"""Bad input of the kinds an attacker or a careless user brings (issue 12, findings 1-11, 13):
each is quarantined with the right check or stopped with one message naming the file or key;
nothing crashes and the user's folder stays as it was."""

import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from ssc_skin.cohort import ingest
from ssc_skin.cohort.ingest import CohortConfigError

ALLOWED = ("normal", "early", "late", "ssc")
SETTINGS = {
    "label_map": {},
    "allowed_labels": ALLOWED,
    "min_side": 64,
    "min_tissue_fraction": 0.05,
    "min_saturation": 12,
}


def _tissue(seed, h=160, w=160):
    rng = np.random.default_rng(seed)
    image = np.full((h, w, 3), 245, np.uint8)
    image[20:-20, 20:-20] = (190 + seed % 50, 70 + seed % 30, 150)
    image[20:-20, 20:-20] += rng.integers(0, 5, (h - 40, w - 40, 3), dtype=np.uint8)
    return image


def _save(path, array, **options):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, **options)
    return path


def _by_file(quarantine):
    return {row.file: (row.check, row.reason) for row in quarantine.itertuples()}


# --- 1: file names that are not UTF-8 -------------------------------------------------------


def test_a_file_name_that_is_not_utf8_is_read_and_shown_escaped(tmp_path):
    name = os.fsdecode(b"P1_caf\xe9.png")  # latin-1 e-acute: not valid UTF-8
    _save(tmp_path / "normal" / name, _tissue(1))
    records = ingest.discover_folder(tmp_path)
    valid, quarantine = ingest.validate_cohort(records, **SETTINGS)
    assert len(valid) == 1 and quarantine.empty
    assert valid.loc[0, "relative_path"] == "normal/P1_caf\\xe9.png"  # printable, CSV-safe
    valid[["relative_path", "patient_id"]].to_csv(tmp_path / "out.csv")  # no UnicodeEncodeError


# --- 5: manifest masks must be class indices 0-3 ---------------------------------------------


def test_a_mask_of_0_and_255_is_refused_and_the_image_kept(tmp_path):
    _save(tmp_path / "images/A.png", _tissue(5))
    _save(tmp_path / "masks/A.png", np.where(_tissue(5)[..., 0] > 200, 255, 0).astype(np.uint8))
    pd.DataFrame(
        {
            "image_path": ["images/A.png"],
            "patient_id": ["A1"],
            "label": ["normal"],
            "mask_path": ["masks/A.png"],
        }
    ).to_csv(tmp_path / "m.csv", index=False)
    valid, quarantine = ingest.validate_cohort(ingest.read_manifest(tmp_path / "m.csv"), **SETTINGS)
    assert len(valid) == 1 and valid.loc[0, "mask_path"] is None
    assert list(quarantine["check"]) == ["mask"]
    assert "class indices 0-3" in quarantine.loc[0, "reason"]
    assert "found values up to 255" in quarantine.loc[0, "reason"]


# --- 6: <label>/<patient>/<file> layouts ------------------------------------------------------


def _patient_folders(root):
    # Distinct fixed seeds: hash() of a str changes per process (PYTHONHASHSEED), and two equal
    # seeds made two identical images that the duplicate check rightly quarantined (a CI flake).
    seed = 0
    for label, patients in (("normal", ("N01", "N02")), ("ssc", ("S01", "S02"))):
        for patient in patients:
            for slide in ("slideA", "slideB"):
                seed += 1
                _save(root / label / patient / f"{slide}.png", _tissue(seed))
    _save(root / "normal" / "loose.png", _tissue(999))  # not inside a patient folder


def test_patient_from_folder_reads_the_patient_folder(tmp_path):
    _patient_folders(tmp_path)
    records = ingest.discover_cohort(
        {"layout": "folder", "root": str(tmp_path), "patient_from": "folder"}
    )
    valid, quarantine = ingest.validate_cohort(records, **SETTINGS)
    assert sorted(valid["patient_id"].unique()) == ["N01", "N02", "S01", "S02"]
    assert len(valid) == 8
    assert _by_file(quarantine) == {
        "normal/loose.png": (
            "no_patient_id",
            "not inside a patient folder (<root>/<label>/<patient>/...)",
        )
    }


def test_patient_folders_read_by_file_name_give_a_hint(tmp_path, caplog):
    """The default (patient from the file name) merges every patient's slideA: say so."""
    _patient_folders(tmp_path)
    with caplog.at_level(logging.WARNING, logger="ssc_skin.cohort.ingest"):
        ingest.discover_cohort({"layout": "folder", "root": str(tmp_path)})
    assert "2 patient id(s) read from file names occur in more than one subfolder" in caplog.text
    assert "cohort.source.patient_from: folder" in caplog.text
    assert "slideA" not in caplog.text and "N01" not in caplog.text


def test_patient_from_must_be_filename_or_folder():
    with pytest.raises(
        CohortConfigError,
        match="cohort.source.patient_from must be one of filename, folder; got 'dir'",
    ):
        ingest.check_source_config({"layout": "folder", "root": "x", "patient_from": "dir"})


# --- 7: duplicate reasons are never empty ----------------------------------------------------


def test_same_path_under_two_patients_says_why(tmp_path):
    _save(tmp_path / "a.png", _tissue(6))
    pd.DataFrame(
        {
            "image_path": ["a.png", "a.png"],
            "patient_id": ["X1", "X2"],
            "label": ["normal", "normal"],
        }
    ).to_csv(tmp_path / "m.csv", index=False)
    valid, quarantine = ingest.validate_cohort(ingest.read_manifest(tmp_path / "m.csv"), **SETTINGS)
    assert valid.empty and list(quarantine["check"]) == ["same_image_two_owners"] * 2
    for reason in quarantine["reason"]:
        assert reason == (
            "same image under two patients/labels: this path is listed more "
            "than once with different patients or labels"
        )


# --- 8: links and paths that leave the cohort folder ------------------------------------------


def test_a_folder_link_out_of_the_root_is_quarantined_not_walked(tmp_path):
    outside = tmp_path / "elsewhere"
    for i in range(5):
        _save(outside / f"X{i}_a.png", _tissue(10 + i))
    root = tmp_path / "cohort"
    _save(root / "normal" / "P1_a.png", _tissue(1))
    (root / "normal" / "linked").symlink_to(outside, target_is_directory=True)
    (root / "normal" / "P2_link.png").symlink_to(outside / "X0_a.png")
    (root / "ssc").symlink_to("/etc", target_is_directory=True)
    records = ingest.discover_folder(root)
    valid, quarantine = ingest.validate_cohort(records, **SETTINGS)
    assert list(valid["relative_path"]) == ["normal/P1_a.png"]
    found = _by_file(quarantine)
    assert set(found) == {"normal/linked", "normal/P2_link.png", "ssc"}
    assert {check for check, _ in found.values()} == {"outside_root"}
    assert all("cohort.source.allow_outside_root" in reason for _, reason in found.values())


def test_links_inside_the_root_are_followed_and_outside_only_by_opt_in(tmp_path):
    outside = tmp_path / "elsewhere"
    _save(outside / "X1_a.png", _tissue(11))
    root = tmp_path / "cohort"
    _save(root / "normal" / "P1_a.png", _tissue(1))
    (root / "normal" / "inner").symlink_to(root / "normal", target_is_directory=True)  # a loop
    (root / "ssc").symlink_to(outside, target_is_directory=True)
    records = ingest.discover_folder(root, allow_outside_root=True)
    valid, _ = ingest.validate_cohort(records, **SETTINGS)
    assert set(valid["relative_path"]) == {"normal/P1_a.png", "ssc/X1_a.png"}


def test_manifest_paths_outside_the_root_are_not_read(tmp_path):
    study = tmp_path / "study"
    _save(study / "in.png", _tissue(1))
    _save(tmp_path / "secret" / "S9.png", _tissue(2))
    pd.DataFrame(
        {
            "image_path": [
                "in.png",
                "../secret/S9.png",
                str(tmp_path / "secret/S9.png"),
                "../../../../../etc/passwd",
            ],
            "patient_id": ["A1", "B2", "C3", "D4"],
            "label": ["normal"] * 4,
        },
    ).to_csv(study / "m.csv", index=False)
    records = ingest.discover_cohort({"layout": "manifest", "manifest": str(study / "m.csv")})
    valid, quarantine = ingest.validate_cohort(records, **SETTINGS)
    assert list(valid["patient_id"]) == ["A1"]
    assert list(quarantine["check"]) == ["outside_root"] * 3
    allowed = ingest.discover_cohort(
        {"layout": "manifest", "manifest": str(study / "m.csv"), "root": str(tmp_path)}
    )
    assert allowed["problem_check"].isna().sum() == 3  # root widened: only /etc/passwd left


# --- 9: manifests in other encodings or with unquoted commas ----------------------------------


@pytest.mark.parametrize("encoding", ["utf-16", "latin-1"])
def test_a_manifest_not_in_utf8_gives_one_message_naming_the_file(tmp_path, encoding):
    (tmp_path / "cohort.csv").write_bytes(
        "image_path,patient_id,label\ncafé.png,P1,normal\n".encode(encoding)
    )
    with pytest.raises(CohortConfigError) as caught:
        ingest.read_manifest(tmp_path / "cohort.csv")
    message = str(caught.value)
    assert "cohort.source.manifest is not UTF-8" in message  # issue 22 finding 3: the key,
    assert "cohort.csv" not in message and str(tmp_path) not in message  # not the name


def test_an_unquoted_comma_gives_one_message_naming_the_file_and_line(tmp_path):
    (tmp_path / "cohort.csv").write_text(
        "image_path,patient_id,label\na.png,P1,normal\nb.png,P2,SSc, late\n"
    )
    with pytest.raises(CohortConfigError) as caught:
        ingest.read_manifest(tmp_path / "cohort.csv")
    message = str(caught.value)
    assert "cohort.source.manifest: line 3" in message and "cohort.csv" not in message
    assert "quote" in message


# --- 13: the summary counts patients ----------------------------------------------------------


def test_the_summary_line_counts_patients_per_label(tmp_path, caplog):
    for p, patient in enumerate(("N1", "N2")):
        for i in range(3):
            _save(tmp_path / "normal" / f"{patient}_{i}.png", _tissue(10 * p + i))
    _save(tmp_path / "ssc" / "S1_0.png", _tissue(998))
    with caplog.at_level(logging.INFO, logger="ssc_skin.cohort.ingest"):
        ingest.validate_cohort(ingest.discover_folder(tmp_path), **SETTINGS)
    assert "7 of 7 files valid, 3 patients (normal=2, ssc=1)" in caplog.text
