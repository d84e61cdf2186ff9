"""Patches written to disk as they are cut (`PatchStore`), moved into place by the catalog's
`PatchArraysDataset`: the patches stage's memory does not grow with the cohort."""

from __future__ import annotations

import gc
import tracemalloc
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from ssc_skin.cohort import synthetic
from ssc_skin.datasets import PatchArraysDataset
from ssc_skin.preprocessing import cohort_patches
from ssc_skin.preprocessing.cohort_patches import cut_cohort
from ssc_skin.preprocessing.patch_store import NpyAppender, PatchStore, staged_file
from ssc_skin.preprocessing.preprocess import PreprocessConfig

SIZE = 16
CONFIG = PreprocessConfig(patch_size=32, stride=32, min_tissue_fraction=0.5)


def _rows(n: int, value: int) -> tuple[np.ndarray, np.ndarray]:
    return (
        np.full((n, SIZE, SIZE, 3), value, np.uint8),
        np.full((n, SIZE, SIZE), value, np.uint8),
    )


def test_store_appends_truncates_and_hands_back_read_only_memory_maps(tmp_path):
    store = PatchStore(SIZE, tmp_path)
    store.add(*_rows(3, 1))
    kept = len(store)
    store.add(*_rows(2, 7))
    store.truncate(kept)  # a slide that failed mid-read
    store.add(*_rows(1, 9))
    arrays = store.finish()
    assert isinstance(arrays["images"], np.memmap) and not arrays["images"].flags.writeable
    assert arrays["images"].shape == (4, SIZE, SIZE, 3) and arrays["masks"].shape == (4, SIZE, SIZE)
    assert arrays["images"][:, 0, 0, 0].tolist() == [1, 1, 1, 9]
    assert arrays["masks"][:, 5, 5].tolist() == [1, 1, 1, 9]


def test_header_room_holds_a_large_row_count(tmp_path):
    appender = NpyAppender(tmp_path / "big.npy", (1,), np.dtype(np.uint8))
    appender.rows = 10**12  # the count a huge cohort would write; the header must still fit
    assert len(appender._header(appender.rows)) == len(appender._header(0))


def test_an_empty_store_gives_empty_arrays_of_the_patch_shape(tmp_path):
    arrays = PatchStore(SIZE, tmp_path).finish()
    assert arrays["images"].shape == (0, SIZE, SIZE, 3) and arrays["masks"].shape == (0, SIZE, SIZE)


def test_mismatched_rows_are_refused(tmp_path):
    store = PatchStore(SIZE, tmp_path)
    with pytest.raises(ValueError, match="2 patches but 1 masks"):
        store.add(_rows(2, 1)[0], _rows(1, 1)[1])
    with pytest.raises(ValueError, match="shape"):
        store.add(np.zeros((1, 8, 8, 3), np.uint8), np.zeros((1, 8, 8), np.uint8))


def test_dataset_moves_staged_files_and_loads_memory_maps(tmp_path):
    store = PatchStore(SIZE, tmp_path / "staging")
    store.add(*_rows(5, 3))
    arrays = store.finish()
    staged = staged_file(arrays["images"])
    assert staged is not None and staged.is_file()
    dataset = PatchArraysDataset(str(tmp_path / "patches"))
    dataset.save(arrays)
    assert not staged.exists()  # moved, not copied through memory
    assert staged_file(arrays["images"]) is None  # and taken: a second save copies
    loaded = dataset.load()
    assert set(loaded) == {"images", "masks"} and isinstance(loaded["images"], np.memmap)
    np.testing.assert_array_equal(loaded["images"], arrays["images"])
    assert dataset.exists()


def test_dataset_never_moves_a_file_it_did_not_stage(tmp_path):
    """A memory map loaded from elsewhere (or a slice of a staged one) is copied: moving it
    would take the file away from its owner."""
    source = PatchArraysDataset(str(tmp_path / "a"))
    source.save({"images": np.arange(2 * 4, dtype=np.uint8).reshape(2, 4)})
    loaded = source.load()
    store = PatchStore(SIZE, tmp_path / "staging")
    store.add(*_rows(4, 2))
    staged = store.finish()
    target = PatchArraysDataset(str(tmp_path / "b"))
    target.save({"images": loaded["images"], "masks": staged["masks"][:2]})
    assert (tmp_path / "a" / "images.npy").is_file()
    assert staged_file(staged["masks"]) is not None
    reloaded = target.load()
    np.testing.assert_array_equal(reloaded["images"], loaded["images"])
    assert reloaded["masks"].shape == (2, SIZE, SIZE)


def test_dataset_save_removes_arrays_no_longer_saved(tmp_path):
    dataset = PatchArraysDataset(str(tmp_path / "patches"))
    dataset.save({"images": np.zeros((1, 2), np.uint8), "old": np.zeros(3)})
    dataset.save({"images": np.ones((1, 2), np.uint8)})
    assert set(dataset.load()) == {"images"}
    assert not list((tmp_path / "patches").glob("*.partial"))


def _cohort(n_images: int, size: int = 192):
    images, rows = {}, []
    for i in range(n_images):
        label = ("normal", "late")[i % 2]
        patient = synthetic.make_patient(f"PAT_{i:04d}", label, np.random.default_rng(i))
        section = synthetic.render_section(patient, 0, (size, size), artefact_rate=0.0)
        images[f"MRN-{i}-Smith"] = lambda a=section.image: Image.fromarray(a)
        rows.append(
            {
                "image": f"MRN-{i}-Smith",
                "patient": f"PAT_{i:04d}",
                "label": label,
                "has_mask": False,
                "mask_source": "none",
            }
        )
    manifest = pd.DataFrame(rows)
    return images, manifest, dict.fromkeys(manifest["patient"], "train")


def _peak_bytes(n_images: int, tmp_path) -> tuple[int, int]:
    images, manifest, split_of = _cohort(n_images)
    loaded = {k: v() for k, v in images.items()}  # decoded up front: not the stage's memory
    loaders = {k: (lambda image=image: image) for k, image in loaded.items()}
    gc.collect()
    tracemalloc.start()
    try:
        arrays, index = cut_cohort(loaders, {}, manifest, split_of, CONFIG, {}, None, tmp_path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(arrays["images"]) == len(index)
    return peak, int(arrays["images"].nbytes + arrays["masks"].nbytes)


def test_cut_cohort_memory_does_not_grow_with_the_number_of_patches(tmp_path):
    """Before, every patch was kept in lists and stacked at the end: the peak grew with the
    cohort (2.4x its patch bytes at 8 images, 3.4x the peak at 2). Now it is one image's
    work plus the index (0.7x and 1.16x here)."""
    small, _ = _peak_bytes(2, tmp_path / "small")
    large, patch_bytes = _peak_bytes(8, tmp_path / "large")
    assert large < patch_bytes
    assert large < 1.3 * small


def test_a_slide_that_fails_mid_read_leaves_no_patch_behind(monkeypatch, tmp_path):
    """Its first batch was already written: it is truncated away, and the next image's
    patches stay aligned with their index rows."""
    images, manifest, split_of = _cohort(2)
    slide = manifest.iloc[[0]].assign(image="SLIDE_Smith", microns_per_pixel=None)
    manifest = pd.concat([slide, manifest.iloc[[1]]], ignore_index=True)
    size = CONFIG.patch_size
    tiles = pd.DataFrame({"x": [0, size], "y": [0, 0], "tissue_fraction": 1.0, "size": size})

    def failing(path, preprocessor, found, batch_size):
        yield np.full((2, size, size, 3), 200, np.uint8), np.zeros((2, size, size, 3)), tiles
        raise cohort_patches.ImageProblem("unreadable", "tile 3 is corrupt")

    found = SimpleNamespace(tissue=SimpleNamespace(plan=SimpleNamespace(thumbnail_downsample=4)))
    monkeypatch.setattr(cohort_patches, "slide_tiles", lambda *args: found)
    monkeypatch.setattr(cohort_patches, "cut_slide", failing)
    arrays, index = cut_cohort(
        images, {}, manifest, split_of, CONFIG, {"SLIDE_Smith": "slide.tiff"}, None, tmp_path
    )
    assert set(index["image"]) == {manifest["image"].iloc[1]}
    assert index["row"].tolist() == list(range(len(index))) == list(range(len(arrays["images"])))
    alone, _ = cut_cohort(
        {k: images[k] for k in manifest["image"].iloc[1:]},
        {},
        manifest.iloc[1:],
        split_of,
        CONFIG,
        {},
        None,
        tmp_path,
    )
    np.testing.assert_array_equal(arrays["images"], alone["images"])
