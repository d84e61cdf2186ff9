"""Training throughput of what this CPU offers, each option against float32 in the same run.

    .venv/bin/python benchmarks/throughput.py [--rounds 3] [--epochs 4] [--patches 1024]
                                              [--options float32,mixed_bfloat16,...]

Same models (the configured MobileNetV2, alpha 0.35 at 64 px, and the CNN, random weights),
same synthetic patches, same batch size and learning rate. Every option trains in a fresh
process (environment variables, thread pools and Keras' global dtype policy are per process);
the options take turns within each round, in a rotated order, so load from other processes on
a shared machine hits them alike. Each round's ratio is option / float32 of that round; the
report gives the median and the range over rounds. Steady-state patches/s is the median epoch
after the first (which also traces the graph), as `training.fit` reports it.

Every option trains through `training.fit` itself. Compile options (`jit_compile`,
`steps_per_execution`) go through its `compile_options` (training only, as the study uses
them); `.cache()` is added to its `make_dataset` from outside (tf.data's `from_tensor_slices`
cached), so optimizer, loss, metrics, callbacks and data pipeline stay the project's own,
changed only in that one respect. The float32 baseline runs one step per call.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
BASELINE = "float32"
logger = logging.getLogger("benchmarks")


@dataclass(frozen=True)
class Option:
    """One way to train: process environment, Keras dtype policy, thread pools, or a compile /
    data-pipeline change that `training.fit` does not expose (added to its calls)."""

    name: str
    what: str
    env: dict[str, str] = field(default_factory=dict)
    policy: str | None = None
    threads: tuple[int, int] | None = None  # (intra-op, inter-op)
    compile_args: dict[str, Any] = field(default_factory=dict)
    cache: bool = False
    processes: int = 1  # fits at once (each its own process); patches/s is their sum
    fit_threads: int = 1  # fits at once in one process, each in its own Python thread


OPTIONS = {
    o.name: o
    for o in (
        Option(BASELINE, "training.fit as the project runs it (oneDNN on, TF's thread pools)"),
        Option("mixed_bfloat16", "Keras global policy mixed_bfloat16", policy="mixed_bfloat16"),
        Option("onednn_off", "TF_ENABLE_ONEDNN_OPTS=0", env={"TF_ENABLE_ONEDNN_OPTS": "0"}),
        Option("threads_2x1", "intra-op 2, inter-op 1 thread", threads=(2, 1)),
        Option("threads_1x2", "intra-op 1, inter-op 2 threads", threads=(1, 2)),
        Option("xla", "model.compile(jit_compile=True)", compile_args={"jit_compile": True}),
        Option(
            "steps_per_execution_8",
            "model.compile(steps_per_execution=8)",
            compile_args={"steps_per_execution": 8},
        ),
        Option("cache", "tf.data .cache() of the decoded arrays before shuffle", cache=True),
        Option(
            "two_fits_1x1",
            "two fits at once, one process and one thread each (e.g. two folds in parallel); "
            "patches/s summed",
            threads=(1, 1),
            processes=2,
        ),
        Option(
            "two_fits_threads",
            "two fits at once in one process, each in its own Python thread (what the "
            "default run's fold-parallel runner does); patches/s summed",
            fit_threads=2,
        ),
        Option(
            "two_fits_threads_1x2",
            "two_fits_threads with intra-op 1, inter-op 2 threads",
            threads=(1, 2),
            fit_threads=2,
        ),
    )
}


# --- the worker: one option, one fresh process --------------------------------------------------


def _cache_array_slices() -> None:
    """`.cache()` on every `Dataset.from_tensor_slices` (the first step of
    `training.make_dataset`, before shuffling and augmentation, which stay fresh per epoch)."""
    import tensorflow as tf  # noqa: PLC0415

    slices = tf.data.Dataset.from_tensor_slices
    tf.data.Dataset.from_tensor_slices = staticmethod(lambda *a, **k: slices(*a, **k).cache())


def worker(option: Option, data: Path, spec: dict[str, Any]) -> dict[str, Any]:
    """Train each architecture once under `option`; patches/s and validation accuracy."""
    import tensorflow as tf  # noqa: PLC0415 - the option's environment is already set

    if option.threads:
        tf.config.threading.set_intra_op_parallelism_threads(option.threads[0])
        tf.config.threading.set_inter_op_parallelism_threads(option.threads[1])
    import keras  # noqa: PLC0415

    from ssc_skin.models import builders, training  # noqa: PLC0415

    if option.policy:
        keras.mixed_precision.set_global_policy(option.policy)
    if option.cache:
        _cache_array_slices()
    x, y = np.load(data / "x.npy"), np.load(data / "y.npy")
    split = max(8, len(x) // 8)
    train, val = (x[split:], y[split:]), (x[:split], y[:split])
    settings = spec["training"]
    results = {}
    for architecture in spec["architectures"]:
        options = dict(spec["options"][architecture])
        if architecture == "mobilenetv2":
            options.update(weights=None, weights_fallback=None)
        models = [
            builders.build_classifier(architecture, x.shape[1], 2, options)
            for _ in range(option.fit_threads)
        ]

        def train_one(model: Any, index: int, architecture: str = architecture) -> float:
            return training.fit(
                model,
                train,
                val,
                name=f"bench.{architecture}.{index}",
                epochs=spec["epochs"],
                batch_size=settings["batch_size"],
                learning_rate=settings["learning_rate"],
                seed=index,
                loss="sparse_categorical_crossentropy",
                metrics=["accuracy"],
                augment="classifier",
                patience=spec["epochs"],
                progress_interval=1e9,
                compile_options=option.compile_args,  # training only, the baseline has none
            ).patches_per_second

        start = time.perf_counter()
        if option.fit_threads == 1:
            speeds = [train_one(models[0], 0)]
        else:
            with ThreadPoolExecutor(option.fit_threads) as pool:
                speeds = list(pool.map(train_one, models, range(len(models))))
        probabilities = training.predict(models[0], val[0])
        results[architecture] = {
            "patches_per_second": float(sum(speeds)),
            "seconds": time.perf_counter() - start,
            "val_accuracy": float(np.mean(np.argmax(probabilities, axis=1) == val[1])),
            "finite": bool(np.isfinite(probabilities).all()),
        }
    return results


# --- the driver: interleaved rounds ---------------------------------------------------------------


def _run_worker(option: Option, data: Path, spec_file: Path, timeout: float) -> dict[str, Any]:
    """The option's worker process(es), started together; with several, patches/s is the
    sum (the machine's throughput when that many fits run at once) and the rest the first's."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **option.env}
    command = [sys.executable, str(HERE / "throughput.py"), "--worker", option.name]
    outs = [data / f"{option.name}.{i}.json" for i in range(option.processes)]
    running = [
        subprocess.Popen(
            [*command, "--data", str(data), "--spec", str(spec_file), "--result", str(out)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for out in outs
    ]
    for process in running:
        try:
            output, _ = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            for other in running:
                other.kill()
            raise
        if process.returncode:
            raise RuntimeError(f"throughput option {option.name} failed:\n{output[-2000:]}")
    results = [json.loads(out.read_text()) for out in outs]
    combined = results[0]
    for architecture, row in combined.items():
        row["patches_per_second"] = sum(r[architecture]["patches_per_second"] for r in results)
    return combined


def bench_throughput(
    x: np.ndarray,
    y: np.ndarray,
    params: dict[str, Any],
    architectures: tuple[str, ...],
    epochs: int,
    rounds: int,
    options: tuple[str, ...] = tuple(OPTIONS),
    timeout: float = 900.0,
    partial: Path | None = None,
) -> dict[str, Any]:
    """Every option (float32 always included) in `rounds` interleaved rounds of fresh
    processes; per architecture and option: median patches/s, ratio to float32 (median and
    range of the per-round ratios) and validation accuracy. A worker that fails or times out
    leaves its round out of that option's ratios (logged); `partial` gets the raw runs after
    every worker."""
    chosen = [OPTIONS[BASELINE], *(OPTIONS[o] for o in options if o != BASELINE)]
    classification = params["classification"]
    spec = {
        "architectures": list(architectures),
        "epochs": epochs,
        "training": classification["training"],
        "options": {
            a: classification["architectures"][a].get("options", {}) for a in architectures
        },
    }
    runs: dict[str, list[dict[str, Any] | None]] = {o.name: [] for o in chosen}
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        np.save(data / "x.npy", x)
        np.save(data / "y.npy", y)
        (data / "spec.json").write_text(json.dumps(spec, default=str))
        for r in range(rounds):
            turn = chosen[r % len(chosen) :] + chosen[: r % len(chosen)]
            for option in turn:
                logger.info("throughput: round %d/%d, %s", r + 1, rounds, option.name)
                try:
                    run = _run_worker(option, data, data / "spec.json", timeout)
                except (RuntimeError, subprocess.TimeoutExpired) as error:
                    logger.warning(
                        "throughput: %s failed in round %d: %s", option.name, r + 1, error
                    )
                    run = None  # this round's ratio for the option is left out
                else:
                    logger.info(
                        "throughput: %s: %s",
                        option.name,
                        ", ".join(f"{a} {v['patches_per_second']:.1f}/s" for a, v in run.items()),
                    )
                runs[option.name].append(run)
                if partial:
                    partial.write_text(json.dumps(runs, indent=2))
    return summarise(runs, architectures, len(x) - max(8, len(x) // 8), epochs)


def summarise(
    runs: dict[str, list[dict[str, Any] | None]],
    architectures: tuple[str, ...],
    patches: int,
    epochs: int,
) -> dict[str, Any]:
    """Per architecture and option: median patches/s, per-round ratios to float32 (rounds
    where either failed are left out and counted)."""
    table: dict[str, dict[str, Any]] = {}
    for architecture in architectures:
        rows = {}
        for name, option_runs in runs.items():
            pairs = [
                (run[architecture], base[architecture])
                for run, base in zip(option_runs, runs[BASELINE], strict=True)
                if run is not None and base is not None
            ]
            if not pairs:
                continue
            speeds = [run["patches_per_second"] for run, _ in pairs]
            ratios = [run["patches_per_second"] / base["patches_per_second"] for run, base in pairs]
            rows[name] = {
                "what": OPTIONS[name].what,
                "rounds": len(pairs),
                "failed_rounds": len(option_runs) - len(pairs),
                "patches_per_second": float(np.median(speeds)),
                "patches_per_second_runs": speeds,
                "ratio_median": float(np.median(ratios)),
                "ratio_min": float(min(ratios)),
                "ratio_max": float(max(ratios)),
                "val_accuracy": float(np.median([run["val_accuracy"] for run, _ in pairs])),
                "finite": all(run["finite"] for run, _ in pairs),
            }
        table[architecture] = rows
    rounds = len(runs[BASELINE])
    return {"rounds": rounds, "train_patches": patches, "epochs": epochs, "results": table}


def headline_rows(throughput: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """(benchmark, baseline, project, ratio) rows: each option against float32."""
    rows = []
    for architecture, options in throughput["results"].items():
        base = options[BASELINE]["patches_per_second"]
        for name, row in options.items():
            if name == BASELINE:
                continue
            rows.append(
                (
                    f"training {architecture}, patches/s ({row['rounds']} rounds)",
                    f"float32 {base:.0f}",
                    f"{name} {row['patches_per_second']:.0f}",
                    f"{row['ratio_median']:.2f}x ({row['ratio_min']:.2f}-{row['ratio_max']:.2f})",
                )
            )
    return rows


def markdown_rows(throughput: dict[str, Any]) -> list[str]:
    """The training-options detail table."""
    lines = [
        f"{throughput['train_patches']} training patches, {throughput['epochs']} epochs, "
        f"{throughput['rounds']} interleaved rounds of fresh processes; ratio = option / "
        "float32 of the same round (median, range). Validation accuracy after those few "
        "epochs from random weights is a sanity check (finite, not collapsed), not the "
        "pooled cross-validation the options must not lower.",
        "",
        "| model | option | what | patches/s (median) | ratio to float32 | val accuracy |",
        "|---|---|---|---|---|---|",
    ]
    for architecture, options in throughput["results"].items():
        for name, row in options.items():
            flag = "" if row["finite"] else " (non-finite outputs)"
            lines.append(
                f"| {architecture} | {name} | {row['what']} | {row['patches_per_second']:.0f} | "
                f"{row['ratio_median']:.2f}x ({row['ratio_min']:.2f}-{row['ratio_max']:.2f}) | "
                f"{row['val_accuracy']:.3f}{flag} |"
            )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--spec", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--patches", type=int, default=1024)
    parser.add_argument("--architectures", default="mobilenetv2,cnn")
    parser.add_argument("--options", default=",".join(OPTIONS))
    parser.add_argument("--out", type=Path, help="also write the result as JSON here")
    args = parser.parse_args()
    if args.worker:
        spec = json.loads(args.spec.read_text())
        args.result.write_text(json.dumps(worker(OPTIONS[args.worker], args.data, spec)))
        return
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(name)s %(message)s", datefmt="%H:%M:%S"
    )
    from run import config, synthetic_patches  # noqa: PLC0415 - the harness's own helpers

    params = config()
    x, y = synthetic_patches(args.patches, 512, params["patches"]["patch_size"])
    result = bench_throughput(
        x,
        y,
        params,
        tuple(args.architectures.split(",")),
        args.epochs,
        args.rounds,
        tuple(args.options.split(",")),
        partial=args.out.with_suffix(".partial.json") if args.out else None,
    )
    result["load_average_at_end"] = list(os.getloadavg())
    if args.out:
        args.out.write_text(json.dumps(result, indent=2))
    sys.stdout.write("\n".join(f"| {' | '.join(row)} |" for row in headline_rows(result)) + "\n")
    sys.stdout.write("\n".join(markdown_rows(result)) + "\n")


if __name__ == "__main__":
    main()
