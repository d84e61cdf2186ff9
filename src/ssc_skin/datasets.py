"""A Kedro dataset for trained classifiers that may be skipped for a cohort."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import mlflow
from kedro.io import AbstractDataset

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Skipped:
    """Stands in for a model that was not trained, e.g. the 3-class task on a binary cohort."""

    reason: str


class KerasModelDataset(AbstractDataset[Any, Any]):
    """A `.keras` file, logged to the active MLflow run; or a marker when training was skipped.

    Kedro cannot leave a node output unsaved, and its pipelines are fixed before the cohort is
    read: this lets a task the cohort cannot express flow through as `Skipped` instead.
    """

    def __init__(self, filepath: str, artifact_path: str | None = "models") -> None:
        self._filepath = Path(filepath)
        self._marker = self._filepath.with_suffix(".skipped.json")
        self._artifact_path = artifact_path

    def _load(self) -> keras.Model | Skipped:
        if self._marker.exists():
            return Skipped(json.loads(self._marker.read_text())["reason"])
        return keras.models.load_model(self._filepath)

    def _save(self, data: keras.Model | Skipped) -> None:
        self._filepath.parent.mkdir(parents=True, exist_ok=True)
        self._filepath.unlink(missing_ok=True)
        self._marker.unlink(missing_ok=True)
        if isinstance(data, Skipped):
            self._marker.write_text(json.dumps({"reason": data.reason}))
            return
        data.save(self._filepath)
        if mlflow.active_run() is not None:
            mlflow.log_artifact(str(self._filepath), self._artifact_path)

    def _exists(self) -> bool:
        return self._filepath.exists() or self._marker.exists()

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath), "artifact_path": self._artifact_path}
