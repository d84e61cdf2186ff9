"""Run one Kedro pipeline with `SequentialRunner` over an in-memory `DataCatalog`, as the
Kedro spaceflights starter's pipeline tests do."""

from __future__ import annotations

from typing import Any

from kedro.io import DataCatalog, MemoryDataset
from kedro.pipeline import Pipeline
from kedro.runner import SequentialRunner


class KeptDataset(MemoryDataset):
    """An in-memory dataset the runner does not release, so a test can read it afterwards."""

    def _release(self) -> None:
        pass


def run_pipeline(pipeline: Pipeline, inputs: dict[str, Any]) -> DataCatalog:
    """Inputs as memory datasets (objects kept as they are, models included); every dataset
    the pipeline makes is kept for the test to read from the returned catalog."""
    datasets = {name: MemoryDataset(value, copy_mode="assign") for name, value in inputs.items()}
    made = (pipeline.all_outputs() | pipeline.datasets()) - set(inputs)
    datasets.update(
        {name: KeptDataset(copy_mode="assign") for name in made if not name.startswith("params:")}
    )
    catalog = DataCatalog(datasets)
    SequentialRunner().run(pipeline, catalog)
    return catalog
