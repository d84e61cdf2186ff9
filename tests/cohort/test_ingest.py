import hashlib
import io
import logging
import pickle
import struct
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile
from PIL import Image, ImageFile

from ssc_skin.cohort import ingest
from ssc_skin.cohort.ingest import CohortConfigError, ImageProblem

LABEL_MAP = {"SSc-mild": "early", "Normal": "normal"}
ALLOWED = ("normal", "early", "late")
SETTINGS = {
    "label_map": LABEL_MAP,
    "allowed_labels": ALLOWED,
    "min_side": 64,
    "min_tissue_fraction": 0.05,
    "min_saturation": 12,
}


def _tissue(seed, h=160, w=160):
    """A saturated pink blob on white glass; the seed makes each image's pixels unique."""
    rng = np.random.default_rng(seed)
    image = np.full((h, w, 3), 245, np.uint8)
    yy, xx = np.mgrid[:h, :w]
    cy, cx = h / 2 + rng.integers(-8, 8), w / 2 + rng.integers(-8, 8)
    blob = ((yy - cy) / (h * 0.35)) ** 2 + ((xx - cx) / (w * 0.35)) ** 2 < 1
    image[blob] = (190 + seed % 50, 70 + seed % 30, 150)
    return image


def _save(path, array, **options):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, **options)
    return path


def _png_bytes(array):
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def _corrupt_png(path, array):
    """A PNG whose pixel data (IDAT) has garbage in the middle."""
    data = bytearray(_png_bytes(array))
    start = data.index(b"IDAT") + 4
    length = struct.unpack(">I", data[start - 8 : start - 4])[0]
    middle = start + length // 2
    data[middle : middle + 16] = b"\x00garbage-bytes!!"
    path.write_bytes(bytes(data))


def _truncated(path, array, fmt):
    _save(path, array, format=fmt)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _checksums(root):
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(Path(root).rglob("*"))
        if p.is_file()
    }


def _build_folder_corpus(root):
    n = iter(range(1, 1000))
    good = root / "Normal"
    _save(good / "P01_a.png", _tissue(next(n)))
    _save(good / "P01_b.jpg", _tissue(next(n)), quality=95)
    first = _tissue(next(n))
    _save(good / "P01_c.png", first)
    _save(good / "P01_copy.tif", first)  # same pixels, other format: a duplicate
    _save(good / "P02_a.bmp", _tissue(next(n)))
    _save(good / "P02_b.tif", _tissue(next(n)))
    _save(good / "sub" / "P02_c.png", _tissue(next(n)))
    shared = _tissue(next(n))
    _save(good / "P08_s.png", shared)
    _save(root / "late" / "P09_s.png", shared)  # same image, other patient and label
    _save(good / "P10_a.png", _tissue(next(n)))
    _save(root / "late" / "P10_b.png", _tissue(next(n)))  # patient under two labels
    _save(good / "_scan.png", _tissue(next(n)))
    (good / "notes.txt").write_text("stain batch 3")
    (good / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    (good / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0")
    _save(root / ".hidden" / "P99_a.png", _tissue(next(n)))
    (root / "README.txt").write_text("our cohort")

    early = root / "SSc-mild"
    gray = _tissue(next(n)).mean(axis=2).astype(np.uint8)
    _save(early / "P03_gray.png", gray)
    rgba = np.dstack([_tissue(next(n)), np.full((160, 160), 255, np.uint8)])
    rgba[:10, :10, 3] = 0  # a transparent corner, composited on white
    _save(early / "P03_rgba.png", rgba)
    Image.fromarray(_tissue(next(n))).quantize(8).save(early / "P03_pal.png")
    gray16 = _tissue(next(n)).mean(axis=2).astype(np.uint16) * 257
    _save(early / "P04_g16.png", gray16)
    tifffile.imwrite(
        early / "P04_rgb16.tif", _tissue(next(n)).astype(np.uint16) * 257, photometric="rgb"
    )
    pages = [Image.fromarray(_tissue(next(n)))] + [Image.fromarray(_tissue(next(n))[:80])] * 2
    pages[0].save(early / "P04_multi.tif", save_all=True, append_images=pages[1:])
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    _save(early / "P05_exif.jpg", _tissue(next(n), h=100, w=160), exif=exif, quality=95)
    tifffile.imwrite(
        early / "P05_float.tif", _tissue(next(n)).astype(np.float32) / 255, photometric="rgb"
    )

    bad = root / "late"
    _save(bad / "P06_ok.png", _tissue(next(n)))
    _corrupt_png(bad / "P06_corrupt.png", _tissue(next(n)))
    _truncated(bad / "P06_trunc.png", _tissue(next(n)), "PNG")
    _truncated(bad / "P06_trunc.jpg", _tissue(next(n)), "JPEG")
    (bad / "P06_empty.png").write_bytes(b"")
    (bad / "P06_text.png").write_text("this is not an image\n")
    _save(bad / "P06_gif.png", _tissue(next(n)), format="GIF")
    _save(bad / "P06_tiny.png", _tissue(next(n), h=32, w=32))
    _save(bad / "P06_white.png", np.full((160, 160, 3), 245, np.uint8))
    _save(root / "weird" / "P11_a.png", _tissue(next(n)))


FOLDER_QUARANTINE = {
    "Normal/P01_copy.tif": ("duplicate", "duplicate of Normal/P01_c.png"),
    "Normal/P08_s.png": ("same_image_two_owners", "same image under two patients/labels"),
    "late/P09_s.png": ("same_image_two_owners", "same image under two patients/labels"),
    "Normal/P10_a.png": (
        "patient_label_conflict",
        "patient in this file appears under more than one label (late, normal)",
    ),
    "late/P10_b.png": (
        "patient_label_conflict",
        "patient in this file appears under more than one label (late, normal)",
    ),
    "Normal/_scan.png": ("no_patient_id", "no patient id in file name"),
    "Normal/notes.txt": ("not_image_extension", "not an image extension (.txt)"),
    "README.txt": ("not_image_extension", "not an image extension (.txt)"),
    "late/P06_corrupt.png": ("corrupt", "corrupt image data"),
    "late/P06_trunc.png": ("truncated", "truncated image data"),
    "late/P06_trunc.jpg": ("truncated", "truncated image data"),
    "late/P06_empty.png": ("empty_file", "empty file (0 bytes)"),
    "late/P06_text.png": ("not_an_image", "not an image"),
    "late/P06_gif.png": ("unsupported_format", "unsupported image format GIF"),
    "late/P06_tiny.png": ("too_small", "too small for one patch: 32x32 px, patch size 64"),
    "late/P06_white.png": ("no_tissue", "no tissue: 0.0% of the image is tissue"),
    "weird/P11_a.png": ("unknown_label", "unknown label 'weird'"),
}

FOLDER_VALID_NOTES = {
    "Normal/P01_a.png": "",
    "Normal/P01_b.jpg": "",
    "Normal/P01_c.png": "",
    "Normal/P02_a.bmp": "",
    "Normal/P02_b.tif": "",
    "Normal/sub/P02_c.png": "",
    "SSc-mild/P03_rgba.png": "RGBA -> RGB (transparency composited on white)",
    "SSc-mild/P03_pal.png": "palette -> RGB",
    "SSc-mild/P03_gray.png": "grayscale -> RGB",
    "SSc-mild/P04_g16.png": "16-bit -> 8-bit (16 significant bits, from its maximum value); grayscale -> RGB",
    "SSc-mild/P04_rgb16.tif": "decoded with tifffile; 16-bit -> 8-bit (16 significant bits, from its maximum value)",
    "SSc-mild/P04_multi.tif": "multi-page TIFF: page 0 of 3 used (pages count from 0)",
    "SSc-mild/P05_exif.jpg": "EXIF orientation 6 applied",
    "SSc-mild/P05_float.tif": "decoded with tifffile; float -> 8-bit (x255)",
    "late/P06_ok.png": "",
}


@pytest.fixture(scope="module")
def folder_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("cohort")
    _build_folder_corpus(root)
    before = _checksums(root)
    records = ingest.discover_cohort(
        {"layout": "folder", "root": str(root), "label_map": LABEL_MAP}
    )
    valid, quarantine = ingest.validate_cohort(records, **SETTINGS)
    return root, before, records, valid, quarantine


def test_folder_layout_quarantines_each_bad_file_with_its_reason(folder_run):
    _, _, _, _, quarantine = folder_run
    assert quarantine["file"].is_unique
    found = {row.file: (row.check, row.reason) for row in quarantine.itertuples()}
    assert set(found) == set(FOLDER_QUARANTINE)
    for file, (check, reason) in FOLDER_QUARANTINE.items():
        assert found[file][0] == check, file
        assert found[file][1].startswith(reason), (file, found[file][1])
    assert "other copies: late/P09_s.png" in found["Normal/P08_s.png"][1]
    assert list(quarantine["file"]) == sorted(quarantine["file"])


def test_folder_layout_keeps_good_and_converted_files_with_notes(folder_run):
    _, _, _, valid, _ = folder_run
    assert dict(zip(valid["relative_path"], valid["notes"], strict=True)) == FOLDER_VALID_NOTES
    by_path = valid.set_index("relative_path")
    assert by_path.loc["SSc-mild/P05_exif.jpg", ["height", "width"]].tolist() == [160, 100]
    assert by_path.loc["SSc-mild/P03_rgba.png", "label"] == "early"
    assert by_path.loc["Normal/P01_a.png", "label"] == "normal"
    assert by_path.loc["Normal/P01_a.png", "raw_label"] == "Normal"
    assert by_path.loc["Normal/sub/P02_c.png", "patient_id"] == "P02"
    assert valid["content_hash"].is_unique
    assert valid["mask_path"].isna().all() and valid["split"].isna().all()
    assert (valid["tissue_fraction"] >= 0.05).all()


def test_junk_and_hidden_files_are_ignored_silently(folder_run):
    _, _, records, valid, quarantine = folder_run
    seen = set(records["relative_path"])
    assert not any(".DS_Store" in p or "Thumbs.db" in p or ".hidden" in p for p in seen)
    assert not any("P99" in p for p in [*valid["relative_path"], *quarantine["file"]])


def test_validation_leaves_the_users_folder_untouched(folder_run):
    root, before, _, _, _ = folder_run
    assert _checksums(root) == before


def test_log_lines_hold_counts_and_no_patient_ids(tmp_path, caplog):
    _save(tmp_path / "normal" / "P77_a.png", _tissue(1))
    _save(tmp_path / "late" / "P77_b.png", _tissue(2))
    (tmp_path / "late" / "Q88_c.png").write_bytes(b"")
    calls = []
    with caplog.at_level(logging.INFO, logger="ssc_skin.cohort.ingest"):
        valid, quarantine = ingest.validate_cohort(
            ingest.discover_folder(tmp_path),
            **SETTINGS,
            progress=lambda done, total: calls.append((done, total)),
        )
    assert len(valid) == 0 and len(quarantine) == 3
    assert calls == [(1, 3), (2, 3), (3, 3)]
    assert "images/s" in caplog.text
    assert "empty_file=1" in caplog.text and "patient_label_conflict=2" in caplog.text
    for secret in ("P77", "Q88", str(tmp_path)):
        assert secret not in caplog.text


def _build_manifest_corpus(base):
    images, masks = base / "images", base / "masks"
    for i, name in enumerate(
        ["A1", "A2", "B1", "C1", "D1", "E1", "F1", "G1", "G2", "I1", "J1", "K1"], start=100
    ):
        _save(images / f"{name}.png", _tissue(i))
    _save(masks / "A1.png", (np.arange(160 * 160).reshape(160, 160) % 3).astype(np.uint8))
    _save(masks / "J1_small.png", np.zeros((40, 40), np.uint8))
    rows = [
        ("images/A1.png", "A-001", "SSc-mild", "masks/A1.png", "train"),
        ("images/A2.png", "A-001", "early", "masks/missing.png", "Train"),
        ("images/B1.png", "B-002", "normal", "", "test"),
        ("images/B1.png", "B-002", "normal", "", "test"),
        ("images/C1.png", "C-003", "", "", ""),
        ("images/D1.png", "D-004", "fibrosis", "", ""),
        ("images/E1.png", "", "normal", "", ""),
        ("images/F1.png", "F-006", "normal", "", "holdout"),
        ("images/G1.png", "G-007", "late", "", "train"),
        ("images/G2.png", "G-007", "late", "", "test"),
        ("images/nothere.png", "H-008", "late", "", ""),
        (str(images / "I1.png"), "I-009", "late", "", ""),
        ("", "Z-000", "late", "", ""),
        ("images/J1.png", "J-010", "normal", "masks/J1_small.png", ""),
        ("images\\K1.png", "K-011", "Normal", "", "val"),
    ]
    table = pd.DataFrame(rows, columns=["image_path", "patient_id", "label", "mask_path", "split"])
    table.to_csv(base / "manifest.csv", index=False)
    return base / "manifest.csv"


MANIFEST_QUARANTINE = [
    ("images/B1.png", "duplicate", "listed more than once"),
    ("images/C1.png", "missing_label", "missing label"),
    ("images/D1.png", "unknown_label", "unknown label 'fibrosis'"),
    ("images/E1.png", "missing_patient_id", "missing patient id"),
    ("images/F1.png", "invalid_split", "invalid split 'holdout'"),
    (
        "images/G1.png",
        "patient_split_conflict",
        "patient in this file appears in more than one split (test, train)",
    ),
    (
        "images/G2.png",
        "patient_split_conflict",
        "patient in this file appears in more than one split (test, train)",
    ),
    ("images/nothere.png", "file_missing", "file missing"),
    ("manifest.csv line 14", "missing_image_path", "missing image path"),
    ("masks/J1_small.png", "mask", "mask size 40x40 px differs from the image's 160x160 px"),
    ("masks/missing.png", "mask", "mask file missing; image images/A2.png kept without a mask"),
]


def test_manifest_layout(tmp_path):
    manifest = _build_manifest_corpus(tmp_path / "study")
    before = _checksums(tmp_path)
    records = ingest.discover_cohort({"layout": "manifest", "manifest": str(manifest)})
    valid, quarantine = ingest.validate_cohort(records, **SETTINGS)
    assert _checksums(tmp_path) == before
    found = [(r.file, r.check, r.reason) for r in quarantine.itertuples()]
    assert len(found) == len(MANIFEST_QUARANTINE)
    for (file, check, reason), expected in zip(found, MANIFEST_QUARANTINE, strict=True):
        assert (file, check) == expected[:2]
        assert reason.startswith(expected[2]), reason
    by_path = valid.set_index("relative_path")
    assert sorted(by_path.index) == [
        "images/A1.png",
        "images/A2.png",
        "images/B1.png",
        "images/I1.png",
        "images/J1.png",
        "images/K1.png",
    ]
    assert by_path.loc["images/A1.png", "mask_path"] == str(tmp_path / "study/masks/A1.png")
    assert by_path.loc["images/A1.png", "label"] == "early"
    assert by_path.loc["images/A2.png", "mask_path"] is None
    assert by_path.loc["images/A2.png", "notes"] == "mask dropped: file missing"
    assert by_path.loc["images/J1.png", "notes"].startswith("mask dropped: size 40x40")
    assert by_path.loc["images/A2.png", "split"] == "train"
    assert by_path.loc["images/I1.png", "split"] is None
    assert by_path.loc["images/K1.png", ["label", "split"]].tolist() == ["normal", "val"]
    assert ingest.read_mask(by_path.loc["images/A1.png", "mask_path"]).max() == 2


def test_manifest_missing_columns_are_named(tmp_path):
    (tmp_path / "m.csv").write_text("image_path,label\na.png,normal\n")
    with pytest.raises(ValueError, match="lacks required column.*patient_id"):
        ingest.read_manifest(tmp_path / "m.csv")


def test_manifest_with_semicolons_and_a_byte_order_mark(tmp_path):
    _save(tmp_path / "a.png", _tissue(5))
    (tmp_path / "m.csv").write_text("\ufeffImage_Path; Patient_ID ;label\na.png;007;normal\n")
    records = ingest.read_manifest(tmp_path / "m.csv")
    assert records.loc[0, "patient_id"] == "007"
    assert records.loc[0, "image_path"] == str(tmp_path / "a.png")


def test_read_rgb_conversion_notes(tmp_path):
    gray = _tissue(3).mean(axis=2).astype(np.uint8)
    _save(tmp_path / "g.png", gray)
    image, notes = ingest.read_rgb(tmp_path / "g.png")
    assert image.shape == (160, 160, 3) and image.dtype == np.uint8
    assert notes == ["grayscale -> RGB"]
    _save(tmp_path / "g16.png", gray.astype(np.uint16) * 257)
    image, notes = ingest.read_rgb(tmp_path / "g16.png")
    assert notes == [
        "16-bit -> 8-bit (16 significant bits, from its maximum value)",
        "grayscale -> RGB",
    ]
    np.testing.assert_array_equal(image[..., 0], gray)
    rgb16 = _tissue(4).astype(np.uint16) * 257
    tifffile.imwrite(tmp_path / "c16.tif", rgb16, photometric="rgb")
    image, notes = ingest.read_rgb(tmp_path / "c16.tif")
    np.testing.assert_array_equal(image, _tissue(4))
    assert notes == [
        "decoded with tifffile",
        "16-bit -> 8-bit (16 significant bits, from its maximum value)",
    ]


def test_read_rgb_other_modes(tmp_path):
    rgb = _tissue(6, h=70, w=70)
    Image.fromarray(rgb).convert("CMYK").save(tmp_path / "cmyk.jpg")
    Image.fromarray(rgb).convert("LA").save(tmp_path / "la.png")
    Image.fromarray(rgb).quantize(4).save(tmp_path / "pt.png", transparency=0)
    rgba16 = np.dstack([rgb, np.full((70, 70), 255, np.uint8)]).astype(np.uint16) * 257
    tifffile.imwrite(
        tmp_path / "rgba16.tif", rgba16, photometric="rgb", extrasamples=["unassalpha"]
    )
    expected = {
        "cmyk.jpg": ["CMYK -> RGB"],
        "la.png": ["LA -> RGB (transparency composited on white)"],
        "pt.png": ["palette -> RGB (transparency composited on white)"],
        "rgba16.tif": [
            "decoded with tifffile",
            "16-bit -> 8-bit (16 significant bits, from its maximum value)",
            "RGBA -> RGB (transparency composited on white)",
        ],
    }
    for name, notes in expected.items():
        image, found = ingest.read_rgb(tmp_path / name)
        assert image.shape == (70, 70, 3) and image.dtype == np.uint8, name
        assert found == notes, name
    problem = ImageProblem("empty_file", "empty file (0 bytes)")
    assert str(pickle.loads(pickle.dumps(problem))) == "empty file (0 bytes)"


def test_tiff_page_is_configurable(tmp_path):
    pages = [Image.fromarray(np.full((70, 70, 3), v, np.uint8)) for v in (10, 20, 30)]
    pages[0].save(tmp_path / "m.tif", save_all=True, append_images=pages[1:])
    image, notes = ingest.read_rgb(tmp_path / "m.tif", tiff_page=2)
    assert image[0, 0, 0] == 30 and notes == [
        "multi-page TIFF: page 2 of 3 used (pages count from 0)"
    ]
    with pytest.raises(ImageProblem, match="page 3 requested but the file has 3 page"):
        ingest.read_rgb(tmp_path / "m.tif", tiff_page=3)


def test_truncated_file_fails_even_if_pillow_was_told_to_pad(tmp_path, monkeypatch):
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    _truncated(tmp_path / "t.png", _tissue(1), "PNG")
    with pytest.raises(ImageProblem) as caught:
        ingest.read_rgb(tmp_path / "t.png")
    assert caught.value.check == "truncated"
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True  # put back as found


def test_mask_must_be_class_indices(tmp_path):
    palette = Image.fromarray(np.array([[0, 1], [2, 1]], np.uint8), mode="P")
    palette.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0] + [0] * 759)
    palette.save(tmp_path / "p.png")
    np.testing.assert_array_equal(ingest.read_mask(tmp_path / "p.png"), [[0, 1], [2, 1]])
    _save(tmp_path / "c.png", _tissue(1))
    with pytest.raises(ImageProblem, match="single-channel class indices"):
        ingest.read_mask(tmp_path / "c.png")


def test_custom_patient_regex(tmp_path):
    _save(tmp_path / "normal" / "slide-07_case-P123.png", _tissue(1))
    records = ingest.discover_folder(tmp_path, r"case-(?P<patient>P\d+)")
    assert records.loc[0, "patient_id"] == "P123" and records.loc[0, "raw_label"] == "normal"


@pytest.mark.parametrize(
    ("source", "message"),
    [
        (
            {"layout": "foo"},
            "cohort.source.layout must be one of folder, manifest, synthetic, "
            "slide_folder, slide_manifest; got 'foo'",
        ),
        ({"layout": "folder"}, "cohort.source.root must be a path"),
        ({"layout": "manifest", "root": "x"}, "cohort.source.manifest must be a path"),
        ({"layout": "folder", "root": "x", "patient_id_regex": "^(P"}, "does not compile"),
        ({"layout": "folder", "root": "x", "patient_id_regex": r"^(\w+)"}, "named group 'patient'"),
        ({"layout": "folder", "root": "x", "tiff_page": -1}, "tiff_page must be an integer >= 0"),
        ({"layout": "folder", "root": "x", "label_map": ["a"]}, "label_map must map"),
        ({"layout": "folder", "rot": "x"}, "unknown key"),
    ],
)
def test_config_errors_name_the_key(source, message):
    with pytest.raises(CohortConfigError, match=message.replace("(", r"\(")):
        ingest.check_source_config(source)


def test_config_defaults_and_label_targets():
    config = ingest.check_source_config({"layout": "folder", "root": "/data"})
    assert config["patient_id_regex"] == ingest.DEFAULT_PATIENT_ID_REGEX
    assert config["tiff_page"] == 0 and config["label_map"] == {}
    with pytest.raises(CohortConfigError, match="maps 'SSc' to 'sclero'"):
        ingest.check_labels({"SSc": "sclero"}, ALLOWED)
    with pytest.raises(CohortConfigError, match="root is not a folder"):
        ingest.discover_folder("/no/such/folder")


def test_empty_cohort_gives_empty_tables(tmp_path):
    valid, quarantine = ingest.validate_cohort(ingest.discover_folder(tmp_path), **SETTINGS)
    assert list(valid.columns) == ingest.VALID_COLUMNS and valid.empty
    assert list(quarantine.columns) == ingest.QUARANTINE_COLUMNS and quarantine.empty
