"""Kedro datasets for trained models (which may be skipped for a cohort) and a read-only view
of a training run's models for `predict`."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

import keras
import mlflow
import numpy as np
import pandas as pd
from kedro.io import AbstractDataset

from ssc_skin.constants import Skipped
from ssc_skin.inference.predict import TrainedModel
from ssc_skin.models import tta  # noqa: F401 - registers the layers a saved classifier may hold
from ssc_skin.preprocessing.patch_store import take_staged
from ssc_skin.preprocessing.preprocess import PreprocessConfig
from ssc_skin.slides.synthetic import write_slide_cohort

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
    """A `.keras` classifier (or a `Skipped` marker).

    The model this process wrote is handed to the nodes that read it as it is, not loaded
    back from the file, until Kedro releases the dataset after its last reader: a load costs
    1-2 s of GIL-bound Python per reader (the default run reads each of its 28 classifiers two
    or three times), the same object a `MemoryDataset` would pass. A model written by an
    earlier run is loaded from its file.
    """

    def __init__(self, filepath: str, artifact_path: str | None = "models") -> None:
        super().__init__(filepath, artifact_path)
        self._written: keras.Model | None = None

    def _read(self) -> keras.Model:
        if self._written is not None:
            return self._written
        return keras.models.load_model(self._filepath)

    def _write(self, data: keras.Model) -> None:
        data.save(self._filepath)
        self._written = data

    def _save(self, data: Any) -> None:
        self._written = None
        super()._save(data)

    def _release(self) -> None:
        super()._release()
        self._written = None


class TFLiteModelDataset(_SkippableFileDataset):
    """A `.tflite` flatbuffer (or a `Skipped` marker, e.g. when int8 conversion failed)."""

    def _read(self) -> bytes:
        return self._filepath.read_bytes()

    def _write(self, data: bytes) -> None:
        self._filepath.write_bytes(data)


class TrainedModelsDataset(AbstractDataset[None, dict[str, TrainedModel]]):
    """Read-only view of a training run's classifiers for `predict`: `<task>.<arch>` ->
    lazily loaded Keras model, float32 TFLite flatbuffer, export summary and skip reason.

    Kedro's PartitionedDataset cannot express this: it fails on a folder with no partitions
    (a run that skipped nothing has no `.skipped.json`), and a model spans three files.
    """

    def __init__(self, models_path: str, reports_path: str) -> None:
        self._models = Path(models_path)
        self._reports = Path(reports_path)

    def _load(self) -> dict[str, TrainedModel]:
        found: dict[str, TrainedModel] = {}
        names = {p.name.removesuffix(".keras") for p in self._models.glob("*.*.keras")}
        names |= {
            p.name.removesuffix(".skipped.json") for p in self._models.glob("*.*.skipped.json")
        }
        for name in sorted(names):
            keras_file = self._models / f"{name}.keras"
            tflite_file = self._models / f"{name}.float32.tflite"
            marker = self._models / f"{name}.skipped.json"
            summary = self._reports / name / "export.json"
            found[name] = TrainedModel(
                name=name,
                keras=(lambda f=keras_file: keras.models.load_model(f, compile=False))
                if keras_file.is_file()
                else None,
                tflite=(tflite_file.read_bytes if tflite_file.is_file() else None),
                export_summary=json.loads(summary.read_text()) if summary.is_file() else None,
                skipped=json.loads(marker.read_text())["reason"] if marker.is_file() else None,
            )
        return found

    def _save(self, data: None) -> None:
        raise NotImplementedError("trained models are written by their own datasets")

    def _exists(self) -> bool:
        return self._models.is_dir()

    def _describe(self) -> dict[str, Any]:
        return {"models_path": str(self._models), "reports_path": str(self._reports)}


class OptionalCSVDataset(AbstractDataset[pd.DataFrame, pd.DataFrame | None]):
    """A CSV an earlier run may have left (the saved patient split): None when it is missing,
    so the node reading it decides what to do. Read-only: the run writes the file through
    its own dataset."""

    def __init__(self, filepath: str) -> None:
        self._filepath = Path(filepath)

    def _load(self) -> pd.DataFrame | None:
        return pd.read_csv(self._filepath) if self._filepath.is_file() else None

    def _save(self, data: pd.DataFrame) -> None:
        raise NotImplementedError("read-only: the file is written by another dataset")

    def _exists(self) -> bool:
        return True  # missing is a valid state, loaded as None

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath)}


# --- the synthetic slide cohort (pyramidal TIFFs + manifest.csv) ----------------------------
# The slide writer streams a pyramid tile by tile into its file, which no dataset of arrays
# can do without holding the slide whole; so the node returns the cohort's settings and this
# dataset writes the files, keeping file I/O out of nodes. Loading gives the manifest.


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


class PreprocessConfigDataset(AbstractDataset[PreprocessConfig, PreprocessConfig]):
    """`preprocess.json` as the typed `PreprocessConfig`: one place turns the saved JSON into
    the object (unknown keys named), so nodes never rebuild it from a dict and its defaults
    live only in the dataclass."""

    def __init__(self, filepath: str) -> None:
        self._filepath = Path(filepath)

    def _load(self) -> PreprocessConfig:
        return PreprocessConfig.from_dict(json.loads(self._filepath.read_text(encoding="utf-8")))

    def _save(self, data: PreprocessConfig) -> None:
        self._filepath.parent.mkdir(parents=True, exist_ok=True)
        payload = PreprocessConfig.from_dict(data).to_dict()
        self._filepath.write_text(json.dumps(payload, indent=2, default=str), encoding="utf-8")

    def _exists(self) -> bool:
        return self._filepath.is_file()

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath)}


class PatchArraysDataset(AbstractDataset[dict[str, np.ndarray], dict[str, np.ndarray]]):
    """The patch arrays (`images`, `masks`, ...) as `<path>/<name>.npy`, memory-mapped on load
    so nodes read only the rows they use.

    Saving moves the files a `preprocessing.patch_store.PatchStore` staged while the patches
    were cut (a rename, not a copy through memory): the patches stage never holds the cohort's
    patches at once. Any other array is written with `numpy.save`. Each file is written beside
    its target and renamed into place; `.npy` files of names no longer saved are removed.
    """

    def __init__(self, path: str) -> None:
        self._path = Path(path)

    def _save(self, data: dict[str, np.ndarray]) -> None:
        self._path.mkdir(parents=True, exist_ok=True)
        for name, array in data.items():
            target = self._path / f"{name}.npy"
            partial = target.with_name(f"{name}.npy.partial")
            if not take_staged(array, partial):
                with partial.open("wb") as handle:
                    np.save(handle, np.asarray(array), allow_pickle=False)
            partial.replace(target)
        for old in self._path.glob("*.npy"):
            if old.stem not in data:
                old.unlink()

    def _load(self) -> dict[str, np.ndarray]:
        return {
            path.stem: np.load(path, mmap_mode="r", allow_pickle=False)
            for path in sorted(self._path.glob("*.npy"))
        }

    def _exists(self) -> bool:
        return any(self._path.glob("*.npy"))

    def _describe(self) -> dict[str, Any]:
        return {"path": str(self._path)}
