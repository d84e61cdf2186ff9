"""Kedro datasets for trained models that may be skipped for a cohort."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import keras
import mlflow
from kedro.io import AbstractDataset

from ssc_skin.constants import Skipped

logger = logging.getLogger(__name__)


class _SkippableFileDataset(AbstractDataset[Any, Any]):
    """A model file, logged to the active MLflow run; or a `.skipped.json` marker with the
    reason when the model was not made (a task the cohort cannot express, a failed export).

    Kedro cannot leave a node output unsaved, and its pipelines are fixed before the cohort is
    read: this lets a skipped model flow through as `Skipped` instead.
    """

    def __init__(self, filepath: str, artifact_path: str | None = "models") -> None:
        self._filepath = Path(filepath)
        self._marker = self._filepath.with_suffix(".skipped.json")
        self._artifact_path = artifact_path

    def _read(self) -> Any:
        raise NotImplementedError

    def _write(self, data: Any) -> None:
        raise NotImplementedError

    def _load(self) -> Any:
        if self._marker.exists():
            return Skipped(json.loads(self._marker.read_text())["reason"])
        return self._read()

    def _save(self, data: Any) -> None:
        self._filepath.parent.mkdir(parents=True, exist_ok=True)
        self._filepath.unlink(missing_ok=True)
        self._marker.unlink(missing_ok=True)
        if isinstance(data, Skipped):
            self._marker.write_text(json.dumps({"reason": data.reason}))
            return
        self._write(data)
        if self._artifact_path and mlflow.active_run() is not None:
            mlflow.log_artifact(str(self._filepath), self._artifact_path)

    def _exists(self) -> bool:
        return self._filepath.exists() or self._marker.exists()

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath), "artifact_path": self._artifact_path}


class KerasModelDataset(_SkippableFileDataset):
    """A `.keras` classifier (or a `Skipped` marker)."""

    def _read(self) -> keras.Model:
        return keras.models.load_model(self._filepath)

    def _write(self, data: keras.Model) -> None:
        data.save(self._filepath)


class TFLiteModelDataset(_SkippableFileDataset):
    """A `.tflite` flatbuffer (or a `Skipped` marker, e.g. when int8 conversion failed)."""

    def _read(self) -> bytes:
        return self._filepath.read_bytes()

    def _write(self, data: bytes) -> None:
        self._filepath.write_bytes(data)
