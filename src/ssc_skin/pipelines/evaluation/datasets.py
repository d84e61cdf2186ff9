"""Kedro datasets of the evaluation pipeline."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kedro.io import AbstractDataset


class OptionalTextDataset(AbstractDataset[str, str | None]):
    """A text file that may not exist yet (e.g. a table a separate benchmark writes): loads
    None when it is missing, so the node that reads it decides what to say instead."""

    def __init__(self, filepath: str) -> None:
        self._filepath = Path(filepath)

    def _load(self) -> str | None:
        return self._filepath.read_text(encoding="utf-8") if self._filepath.is_file() else None

    def _save(self, data: str) -> None:
        self._filepath.parent.mkdir(parents=True, exist_ok=True)
        self._filepath.write_text(data, encoding="utf-8")

    def _exists(self) -> bool:
        return True  # "missing" is a valid state, loaded as None

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath)}
