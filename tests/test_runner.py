"""The default run's runner: at most `max_workers` nodes at once, long chains first, the same
outputs as Kedro's SequentialRunner, and a failing node's error reaches the caller."""

from __future__ import annotations

import threading
import time

import pytest
from kedro.io import DataCatalog, MemoryDataset
from kedro.pipeline import Node, Pipeline, node
from kedro.runner import SequentialRunner

from ssc_skin import cli
from ssc_skin.runner import (
    NODE_SECONDS,
    TRAINING_WEIGHT,
    FoldParallelRunner,
    node_weight,
    pick,
    remaining_work,
    schedule_order,
    training_key,
)


class Tracker:
    """Counts how many nodes run at once, and in which order they start."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.now = 0
        self.most = 0
        self.started: list[str] = []

    def step(self, name: str, seconds: float = 0.05):
        def run(value: int) -> int:
            with self.lock:
                self.now += 1
                self.most = max(self.most, self.now)
                self.started.append(name)
            time.sleep(seconds)
            with self.lock:
                self.now -= 1
            return value + 1

        run.__name__ = name
        return run


def _chains(tracker: Tracker, lengths: dict[str, int]) -> Pipeline:
    """Independent chains `<c>0 -> <c>1 -> ...` from one input `x`."""
    nodes = []
    for chain, length in lengths.items():
        source = "x"
        for i in range(length):
            target = f"{chain}{i}"
            nodes.append(node(tracker.step(target), source, target, name=target))
            source = target
    return Pipeline(nodes)


def _catalog() -> DataCatalog:
    return DataCatalog({"x": MemoryDataset(0)})


def test_at_most_max_workers_at_once_and_the_same_outputs_as_sequential():
    tracker = Tracker()
    pipe = _chains(tracker, {"a": 3, "b": 3, "c": 3, "d": 3})
    parallel = FoldParallelRunner(max_workers=2).run(pipe, _catalog())
    assert tracker.most == 2  # two at once: the chains overlapped, never three
    sequential = SequentialRunner().run(pipe, _catalog())
    assert {k: v.load() for k, v in parallel.items()} == {
        k: v.load() for k, v in sequential.items()
    }
    assert set(parallel) == {"a2", "b2", "c2", "d2"}


def test_the_chain_with_most_work_left_starts_first():
    tracker = Tracker()
    pipe = _chains(tracker, {"short": 1, "long": 4})
    work = remaining_work(pipe)
    by_name = {n.name: n for n in pipe.nodes}
    assert work[by_name["long0"]] == 4 and work[by_name["short0"]] == 1
    FoldParallelRunner(max_workers=1).run(pipe, _catalog())
    assert tracker.started[0] == "long0"  # one worker: the long chain goes first


def test_a_node_costs_what_its_kind_typically_takes():
    def named(name: str) -> Node:
        return node(lambda x: x, "x", f"out_{name}", name=name)

    assert node_weight(named("binary.mobilenetv2.export_tflite")) == NODE_SECONDS["export_tflite"]
    assert (
        node_weight(named("fold_3.binary.cnn.train_classifier")) == NODE_SECONDS["train_classifier"]
    )
    assert node_weight(named("fold_3.binary.texture.train_texture_baseline")) == 1
    assert node_weight(named("fold_0.something_new_to_train")) == TRAINING_WEIGHT
    assert node_weight(named("cv.build_report")) == 1
    # a TFLite export (long, nothing after it) outranks a prediction and its scoring
    export = Pipeline([node(lambda x: x, "m", "t", name="binary.cnn.export_tflite")])
    scoring = Pipeline(
        [
            node(lambda x: x, "m", "p", name="fold_0.binary.cnn.predict_patches"),
            node(lambda x: x, "p", "e", name="fold_0.binary.cnn.evaluate_predictions"),
        ]
    )
    work = remaining_work(export + scoring)
    by_name = {n.name: n for n in (export + scoring).nodes}
    assert (
        work[by_name["binary.cnn.export_tflite"]]
        > work[by_name["fold_0.binary.cnn.predict_patches"]]
    )


def test_ties_follow_the_pipeline_order_every_time():
    pipe = _chains(Tracker(), {"a": 2, "b": 2, "c": 2})
    work = remaining_work(pipe)
    position = {n: i for i, n in enumerate(pipe.nodes)}
    ready = {n for n in pipe.nodes if n.name.endswith("0")}
    orders = {tuple(n.name for n in schedule_order(set(ready), work, position)) for _ in range(5)}
    assert orders == {("a0", "b0", "c0")}


def test_a_failing_node_stops_the_run_with_its_own_error():
    def broken(value: int) -> int:
        raise ValueError("node b1 could not read its input")

    tracker = Tracker()
    pipe = _chains(tracker, {"a": 3}) + Pipeline([node(broken, "x", "b1", name="b1")])
    with pytest.raises(ValueError, match="could not read its input"):
        FoldParallelRunner(max_workers=2).run(pipe, _catalog())


def test_kedro_run_defaults_to_the_fold_parallel_runner():
    command = cli.cli.commands["run"]
    runner = next(p for p in command.params if p.name == "runner")
    assert runner.default == "ssc_skin.runner.FoldParallelRunner"
    from kedro.framework.cli.project import run as kedro_run  # noqa: PLC0415

    original = next(p for p in kedro_run.params if p.name == "runner")
    assert original.default is None  # Kedro's own command is left as it was


def _named(name: str):
    return node(lambda x: x, "x", name.replace(".", "_") + "_out", name=name)


def test_two_fits_of_one_network_are_not_started_together_while_other_work_is_ready():
    running = [_named("fold_0.binary.cnn.train_classifier")]
    same = _named("fold_1.binary.cnn.train_classifier")
    final_same = _named("binary.cnn.train_classifier")
    other_fit = _named("fold_1.binary.mobilenetv2.train_classifier")
    small = _named("fold_1.binary.cnn.predict_patches")
    assert training_key(same) == training_key(final_same) == "binary.cnn.train_classifier"
    assert training_key(small) is None
    assert pick([same, final_same, other_fit], running, 1) == [other_fit]
    assert pick([same, small], running, 1) == [small]
    assert pick([same], running, 1) == [same]  # nothing else ready: no idle core
    assert pick([other_fit, _named("fold_2.binary.mobilenetv2.train_classifier")], [], 2) == [
        other_fit,
        _named("fold_2.binary.mobilenetv2.train_classifier"),
    ]


def test_a_node_reading_a_folder_waits_for_the_nodes_writing_into_it(tmp_path):
    """The report page embeds the figures other nodes write into its folder; no edge of the
    graph says so. Two at a time, the page would start beside the slow figure node and miss
    the figure; the runner makes it wait."""
    from kedro_datasets.partitions import PartitionedDataset  # noqa: PLC0415
    from kedro_datasets.text import TextDataset  # noqa: PLC0415

    def figure(value: int) -> str:
        time.sleep(0.3)
        return f"figure {value}"

    def page(figures: dict, value: int) -> str:
        return " + ".join(sorted(load() for load in figures.values())) + f" on page {value}"

    catalog = DataCatalog(
        {
            "x": MemoryDataset(7),
            "figure": TextDataset(filepath=str(tmp_path / "figures" / "a.txt")),
            "figures": PartitionedDataset(
                path=str(tmp_path / "figures"), dataset=TextDataset, filename_suffix=".txt"
            ),
        }
    )
    pipe = Pipeline(
        [
            node(figure, "x", "figure", name="figure"),
            node(page, ["figures", "x"], "page", name="page"),
        ]
    )
    (tmp_path / "figures").mkdir()
    result = FoldParallelRunner(max_workers=2).run(pipe, catalog)
    assert result["page"].load() == "figure 7 on page 7"
