import logging
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image
from skimage import data

from ssc_skin.cohort import synthetic
from ssc_skin.preprocessing import unlabelled

NAME = "MRN-4471-Smith_DOB19700101"


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def unlabelled_folder(folder: Path) -> Path:
    """An archive as a lab has one: no label folders, identities in names, mixed formats."""
    sections = list(synthetic.generate_cohort({"normal": 1, "late": 1}, 1, (256, 256), seed=2))
    (folder / f"{NAME} (Jane Doe)").mkdir(parents=True)
    Image.fromarray(sections[0].image).save(folder / f"{NAME} (Jane Doe)" / f"{NAME}_1.png")
    # JPEG-compressed, as a slide export gives
    Image.fromarray(sections[1].image).save(folder / f"{NAME}_2.jpg", quality=50)
    # scikit-image's real stained section (IHC), a tile cut from inside it: all tissue
    Image.fromarray(data.immunohistochemistry()[100:356, 100:356]).save(folder / "ihc.tif")
    grey = cv2.cvtColor(sections[0].image, cv2.COLOR_RGB2GRAY)
    Image.fromarray(grey).save(folder / "grey.png")
    (folder / "notes_Smith.png").write_bytes(b"not an image")
    return folder


def test_patches_come_from_every_usable_image_and_the_rest_is_counted(tmp_path, caplog):
    folder = unlabelled_folder(tmp_path / "archive")
    before = _snapshot(folder)
    with caplog.at_level(logging.INFO):
        patches, counts = unlabelled.folder_patches(folder, 64, 0.3, 40, seed=0)
    assert patches.shape[1:] == (64, 64, 3) and patches.dtype == np.uint8
    assert 0 < len(patches) <= 40 and counts["patches"] == len(patches)
    assert counts["files"] == 5 and counts["not_used_not_an_image"] == 1
    assert counts["images_used"] + counts.get("images_without_tissue_patch", 0) + 1 == 5
    assert counts["images_used"] >= 3
    assert _snapshot(folder) == before  # the folder is only read
    for text in ("Smith", "4471", "Jane", "DOB", str(tmp_path)):
        assert text not in caplog.text


def test_the_same_seed_gives_the_same_patches(tmp_path):
    folder = unlabelled_folder(tmp_path / "archive")
    a, _ = unlabelled.folder_patches(folder, 64, 0.3, 20, seed=1)
    b, _ = unlabelled.folder_patches(folder, 64, 0.3, 20, seed=1)
    np.testing.assert_array_equal(a, b)


def test_a_folder_without_a_usable_image_says_so(tmp_path):
    (tmp_path / "a.png").write_bytes(b"nope")
    with pytest.raises(ValueError, match="none of the 1 files"):
        unlabelled.folder_patches(tmp_path, 64, 0.3, 20)
