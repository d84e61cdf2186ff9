"""Slides shared by the slide tests: an Aperio-like pyramid and a generic TIFF without mpp."""

from __future__ import annotations

from pathlib import Path

import pytest

from ssc_skin.slides import synthetic as ss


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("slides")


@pytest.fixture(scope="module")
def aperio(root) -> ss.SlideRecord:
    return ss.write_synthetic_slide(
        root / "aperio.svs", 4000, 3000, sections=3, label="late", mpp=0.5, seed=1
    )


@pytest.fixture(scope="module")
def no_mpp(root) -> ss.SlideRecord:
    return ss.write_synthetic_slide(
        root / "plain.tif", 4000, 3000, sections=2, mpp=None, style="generic", seed=2
    )
