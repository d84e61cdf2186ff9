"""The default run's runner: independent nodes (the folds, the final fit) two at a time.

Why: one Keras fit of these small networks keeps a 2-core laptop's second core mostly idle
(small ops, Python between steps); two fits at once, each in its own thread of one process,
train ~1.5-2x the patches per second (`benchmarks/throughput.py`, option `two_fits_threads`).
The k folds and the final fit share nothing but the per-image work done before them, so
running two of their nodes at a time uses that core without changing what any node computes.

Threads, not processes: the nodes pass Keras models and large arrays in memory, and MLflow's
nested runs and the traced-trainer cache live in this process (kedro-mlflow re-enters the
run in each worker thread). What threads share is made safe where it is shared: the trainer
cache checks a trainer out to one fit at a time, and seeding a fit or building a model holds
one lock (`models.seeding`).

Scheduling: at most `max_workers` nodes run at once, picked among the ready ones by the most
work left below them (the costliest chain of dependents, each node costed by its kind in
`NODE_SECONDS`, any other 1), so the long chains start first and the run does not end on one
chain with a core idle. Ties go in the pipeline's own (topological) order, so the order is
the same from run to run.
`kedro run --runner SequentialRunner` runs one node at a time, as before.
"""

from __future__ import annotations

import logging
from collections import Counter
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from functools import cache
from itertools import chain
from typing import Any

from kedro.pipeline import Pipeline
from kedro.pipeline.node import Node
from kedro.runner import ThreadRunner
from kedro.runner.task import Task

logger = logging.getLogger(__name__)

DEFAULT_WORKERS = 2  # the users' laptop: 2 cores (`--runner-params max_workers=N` for more)
TRAINING_WEIGHT = 20  # a fit takes tens of seconds; most other nodes take about one
# Typical seconds of the nodes that take more than about one, by the last part of their name
# (`fold_2.binary.cnn.train_classifier` -> `train_classifier`): the default run on 2 cores,
# two at a time (MLflow artifact `timing/node_timeline.json`). Only their ratios matter: with
# the TFLite exports costed as 1, the run started them last and ended on them with a core idle.
NODE_SECONDS = {
    "train_classifier": 25,
    "train_unet": 13,
    "export_tflite": 20,
    "texture_features": 12,
    "generate_synthetic_cohort": 10,
    "compare_models": 8,
    "predict_patches": 6,
    "export_unet": 5,
    "pool_model": 4,
    "score_patches": 3,
    "log_whole_image_predictor": 3,
    "cut_shared_patches": 3,
    "evaluate_predictions": 1.5,
    "train_texture_baseline": 1,  # a logistic regression: under a second
}


def node_weight(node: Node) -> float:
    """A rough cost in seconds: its kind's typical time (`NODE_SECONDS`); another training node
    `TRAINING_WEIGHT`, any other node 1."""
    kind = node.name.rpartition(".")[2]
    if kind in NODE_SECONDS:
        return NODE_SECONDS[kind]
    return TRAINING_WEIGHT if is_training(node) else 1


def is_training(node: Node) -> bool:
    """Whether a node fits a model (the same-network rule of `pick` applies to it)."""
    return "train" in node.name.rpartition(".")[2]


def remaining_work(pipeline: Pipeline) -> dict[Node, float]:
    """Per node, its weight plus the heaviest chain of nodes that depend on it."""
    dependents: dict[Node, set[Node]] = {n: set() for n in pipeline.nodes}
    for child, parents in pipeline.node_dependencies.items():
        for parent in parents:
            dependents[parent].add(child)

    @cache
    def work(node: Node) -> float:
        return node_weight(node) + max((work(c) for c in dependents[node]), default=0)

    return {n: work(n) for n in pipeline.nodes}


def _location(dataset: Any) -> str | None:
    """Where a file dataset writes (`_filepath`) or a folder dataset reads (`_path`)."""
    for attribute in ("_filepath", "_path"):
        value = getattr(dataset, attribute, None)
        if value:
            return str(value).rstrip("/")
    return None


def folder_dependencies(pipeline: Pipeline, catalog: Any) -> dict[Node, set[Node]]:
    """Per node that reads a whole folder (a `PartitionedDataset`, e.g. the report's figures
    under data/08_reporting), the nodes that write a file into that folder: it runs after them.

    Why: the graph does not show that the page embedding the figures needs the figure nodes
    (a figure file cannot be a node's input, its dataset only saves). One node at a time ran
    them first by the luck of the topological order; two at a time did not, and the page lost
    its figures. Writers that depend on the reader themselves are left out (no cycles).
    """
    from kedro_datasets.partitions import PartitionedDataset  # noqa: PLC0415

    def dataset(name: str) -> Any:
        try:
            return catalog.get(name)
        except Exception:  # noqa: BLE001 - a dataset that cannot be resolved writes no file
            return None

    writers = [
        (node, location)
        for node in pipeline.nodes
        for name in node.outputs
        if (location := _location(dataset(name)))
    ]
    extra: dict[Node, set[Node]] = {}
    for node in pipeline.nodes:
        folders = [
            _location(ds)
            for name in node.inputs
            if isinstance(ds := dataset(name), PartitionedDataset)
        ]
        folders = [f"{f}/" for f in folders if f]
        if not folders:
            continue
        below = set(pipeline.from_nodes(node.name).nodes)  # the reader and what follows it
        extra[node] = {
            writer
            for writer, location in writers
            if writer not in below and any(location.startswith(f) for f in folders)
        }
    return extra


def schedule_order(ready: set[Node], work: dict[Node, float], position: dict[Node, int]) -> list:
    """Ready nodes, the most work left below them first; ties in pipeline order."""
    return sorted(ready, key=lambda n: (-work[n], position[n]))


def training_key(node: Node) -> str | None:
    """What a training node fits, the same in every fold (`fold_2.binary.cnn.train_classifier`
    and the final fit's `binary.cnn.train_classifier` -> `binary.cnn.train_classifier`); None
    for other nodes."""
    if not is_training(node) or node_weight(node) < TRAINING_WEIGHT:
        return None
    first, _, rest = node.name.partition(".")
    return rest if first.startswith("fold_") and rest else node.name


def pick(candidates: list[Node], running: list[Node], free: int) -> list[Node]:
    """Up to `free` of `candidates` (in their order), a fit of what a running node already
    fits only where nothing else is ready: two fits of one network at once each need their own
    traced copy (`models.trainers`), and tracing costs more than the fit (MobileNetV2: ~20 s
    against ~20 s of training); one after the other, the second reuses the first's."""
    busy = {training_key(n) for n in running} - {None}
    chosen: list[Node] = []
    for node in candidates:
        if len(chosen) == free:
            break
        key = training_key(node)
        if key is None or key not in busy:
            chosen.append(node)
            busy.add(key)
    for node in candidates:  # nothing else to do: run it anyway rather than leave a core idle
        if len(chosen) == free:
            break
        if node not in chosen:
            chosen.append(node)
    return chosen


def set_tensorflow_threads(intra_op: int, inter_op: int) -> bool:
    """TensorFlow's thread pools, if its runtime has not started yet (it cannot change them
    afterwards: then the call says so in the log and changes nothing). 0 = TF's default."""
    import tensorflow as tf  # noqa: PLC0415 - only where the runner is used

    try:
        tf.config.threading.set_intra_op_parallelism_threads(intra_op)
        tf.config.threading.set_inter_op_parallelism_threads(inter_op)
    except RuntimeError as error:
        logger.warning("TensorFlow's thread pools stay as they are: %s", error)
        return False
    return True


class FoldParallelRunner(ThreadRunner):
    """A `ThreadRunner` that runs at most `max_workers` nodes at once, critical chains first.

    `intra_op_threads`: TensorFlow threads per operation (default 1: two fits side by side then
    each keep one core busy instead of splitting every operation across both; 0 keeps TF's
    default of one per core).
    """

    def __init__(
        self,
        max_workers: int | None = DEFAULT_WORKERS,
        is_async: bool = False,
        intra_op_threads: int = 1,
    ):
        super().__init__(max_workers=max_workers or DEFAULT_WORKERS, is_async=is_async)
        self.intra_op_threads = int(intra_op_threads)

    def _run(
        self,
        pipeline: Pipeline,
        catalog: Any,
        hook_manager: Any = None,
        run_id: str | None = None,
    ) -> None:
        nodes = pipeline.nodes
        load_counts = Counter(chain.from_iterable(n.inputs for n in nodes))
        dependencies = {n: set(parents) for n, parents in pipeline.node_dependencies.items()}
        for node, writers in folder_dependencies(pipeline, catalog).items():
            dependencies[node] |= writers
        work = remaining_work(pipeline)
        position = {n: i for i, n in enumerate(nodes)}
        todo, done_nodes = set(nodes), set()
        running: dict[Future[Node], Node] = {}
        workers = min(self._max_workers, max(len(nodes), 1))
        if workers > 1 and self.intra_op_threads:
            set_tensorflow_threads(self.intra_op_threads, workers)
        logger.info("Running %d nodes, at most %d at a time", len(nodes), workers)
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="node") as pool:
            while todo or running:
                ready = {n for n in todo if dependencies[n] <= done_nodes}
                ordered = schedule_order(ready, work, position)
                for node in pick(ordered, list(running.values()), workers - len(running)):
                    todo.discard(node)
                    task = Task(
                        node=node,
                        catalog=catalog,
                        hook_manager=hook_manager,
                        is_async=False,
                        run_id=run_id,
                    )
                    running[pool.submit(task)] = node
                if not running:
                    self._raise_runtime_error(todo, done_nodes, ready, None)
                finished, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in finished:
                    running.pop(future)
                    try:
                        node = future.result()
                    except Exception:
                        for other in running:
                            other.cancel()
                        wait(running)  # the other node ends before the error reaches the user
                        self._suggest_resume_scenario(pipeline, done_nodes, catalog)
                        raise
                    done_nodes.add(node)
                    self._logger.info("Completed node: %s", node.name)
                    self._logger.info("Completed %d out of %d tasks", len(done_nodes), len(nodes))
                    self._release_datasets(node, catalog, load_counts, pipeline)
