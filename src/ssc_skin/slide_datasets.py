"""Kedro dataset that writes the synthetic slide cohort (pyramidal TIFFs + manifest.csv).

The slide writer streams a pyramid tile by tile into its file, which no Kedro dataset of
arrays can do without holding the slide whole; so the node returns the cohort's settings and
this dataset writes the files, keeping file I/O out of nodes. Loading gives the manifest
(empty when nothing was written).
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

import pandas as pd
from kedro.io import AbstractDataset

from ssc_skin.cohort.synthetic_slides import write_slide_cohort

logger = logging.getLogger(__name__)

MANIFEST_COLUMNS = ["image_path", "patient_id", "label"]


class SyntheticSlideCohortDataset(AbstractDataset[dict[str, Any], pd.DataFrame]):
    """Saves `{...write_slide_cohort keyword arguments}` as `<path>/<label>/<slide>` and
    `<path>/manifest.csv`; an empty dict writes nothing (the layout is not synthetic slides)."""

    def __init__(self, path: str) -> None:
        self._path = Path(path)

    def _save(self, data: dict[str, Any]) -> None:
        if not data:
            return
        if self._path.exists():
            shutil.rmtree(self._path)  # a smaller cohort must not leave old slides behind
        self._path.mkdir(parents=True)
        write_slide_cohort(self._path, **data)
        logger.info("Synthetic slides written to %s", self._path)

    def _load(self) -> pd.DataFrame:
        manifest = self._path / "manifest.csv"
        if not manifest.is_file():
            return pd.DataFrame(columns=MANIFEST_COLUMNS)
        return pd.read_csv(manifest)

    def _describe(self) -> dict[str, Any]:
        return {"path": str(self._path)}
