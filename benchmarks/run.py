"""One command, one run: how fast the screening tool is on this machine, and its memory.

    .venv/bin/python benchmarks/run.py            # full, ~25 min on 2 idle cores
    .venv/bin/python benchmarks/run.py --quick    # tiny sizes, CNN only: a smoke test (~2 min)

Every stage measures the project against a baseline in the same run and process, so load from
other processes on a shared machine hits both; the ratio is the headline:

- tiling: tissue detection + integral-image tiling vs a Python loop of mask means (MP/s)
- training: MobileNetV2 vs the baseline CNN, steady-state patches/s of `training.fit`
- training options: mixed_bfloat16, oneDNN off, thread pools, steps_per_execution, tf.data
  cache (XLA on request) vs float32, same models and patches, each in fresh processes taking
  turns over rounds (`benchmarks/throughput.py`)
- inference: Keras vs TFLite float32 vs int8, at the model input size (64 px) and at 224 px
- predict: whole images/s of `serving.predict_image` on Keras vs TFLite, and the predict
  pipeline's path (plus stain normalisation and UNet gating)
- ingest: rows/s of `ingest.ingest_images` on a manifest of mostly missing and some unreadable
  files (issue 22 finding 4, target >= 1,000 rows/s) vs reading the same manifest with pandas
  and stat-ing each row's file (`benchmarks/ingest.py`)
- memory: peak RSS of `kedro run --pipelines cohort`, then `--pipelines patches`, each in its
  own process, at two cohort sizes (4x the patches), in a temporary copy of the project
  (data/ here is left alone), against the imports alone (`benchmarks/stage_memory.py`)

Writes benchmarks.json and benchmarks.md to --out (default data/08_reporting).
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
import platform
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import ingest as ingest_bench
import numpy as np
import pandas as pd
import stage_memory
import throughput
import yaml
from tiling import best_of, naive_tiles

from ssc_skin.cohort import synthetic
from ssc_skin.imaging import stain, tiling
from ssc_skin.imaging.tissue import tissue_mask
from ssc_skin.inference import export, serving
from ssc_skin.models import builders, training
from ssc_skin.preprocessing import preprocess

PROJECT = Path(__file__).resolve().parents[1]
CLASSES = ("normal", "ssc")
logger = logging.getLogger("benchmarks")


@dataclass(frozen=True)
class Sizes:
    """How much each stage does; `--quick` shrinks everything and skips MobileNetV2, whose
    graph alone takes ~30 s to trace and convert on 2 cores."""

    tiling_images: int = 4
    tiling_size: int = 2048
    tiling_repeats: int = 3
    train_patches: int = 512
    epochs: int = 3
    architectures: tuple[str, ...] = ("mobilenetv2", "cnn")
    inference_architecture: str = "mobilenetv2"
    inference_patches: tuple[tuple[int, int], ...] = ((64, 64), (224, 32))  # (px, patches)
    inference_rounds: int = 5
    predict_images: int = 8
    predict_size: int = 512
    predict_rounds: int = 5
    ingest_rows: int = 200_000  # manifest rows, mostly missing files (issue 22 finding 4)
    memory_patients: tuple[int, ...] = (6, 24)  # per class
    memory_images_per_patient: int = 3
    memory_image_size: int = 512
    memory_floor: bool = True  # also measure the imports alone
    memory_concurrent: bool = False
    # training options against float32 (benchmarks/throughput.py): fresh processes, rounds
    throughput_options: tuple[str, ...] = (
        "mixed_bfloat16",
        "onednn_off",
        "threads_2x1",
        "steps_per_execution_8",
        "cache",
        "two_fits_threads",  # what the default run's fold-parallel runner does
    )
    throughput_rounds: int = 2
    throughput_epochs: int = 3


QUICK = Sizes(
    tiling_images=2,
    tiling_size=512,
    tiling_repeats=1,
    train_patches=64,
    epochs=2,
    architectures=("cnn",),
    inference_architecture="cnn",
    inference_patches=((64, 16),),
    inference_rounds=2,
    predict_images=2,
    predict_rounds=1,
    ingest_rows=2_000,
    memory_patients=(3, 4),
    memory_images_per_patient=2,
    memory_image_size=192,
    memory_floor=False,
    memory_concurrent=True,
    throughput_options=("mixed_bfloat16",),
    throughput_rounds=1,
    throughput_epochs=2,
)


def config() -> dict[str, Any]:
    """The base configuration: benchmarks use the project's own model and patch settings."""
    merged: dict[str, Any] = {}
    for path in sorted((PROJECT / "conf" / "base").glob("parameters*.yml")):
        text = path.read_text().replace("${globals:synthetic_root}", "data/01_raw/synthetic")
        merged.update(yaml.safe_load(text) or {})
    return merged


# --- stages ------------------------------------------------------------------------------------


def bench_tiling(sizes: Sizes, patches: dict[str, Any]) -> dict[str, Any]:
    """Tissue detection + `grid_tiles` vs the naive loop of `benchmarks/tiling.py`."""
    images = [
        s.image
        for s in synthetic.generate_cohort(
            {"normal": 1, "late": 1},
            max(1, sizes.tiling_images // 2),
            size=(sizes.tiling_size, sizes.tiling_size),
            seed=1,
        )
    ]
    megapixels = sum(i.shape[0] * i.shape[1] for i in images) / 1e6
    size, stride = patches["patch_size"], patches["stride"]
    fraction, saturation = patches["min_tissue_fraction"], patches["min_saturation"]
    detect = ours = naive = 0.0
    for image in images:
        seconds, mask = best_of(sizes.tiling_repeats, tissue_mask, image, saturation)
        detect += seconds
        seconds, tiles = best_of(
            sizes.tiling_repeats, tiling.grid_tiles, mask, size, stride, fraction
        )
        ours += seconds
        seconds, reference = best_of(
            sizes.tiling_repeats, naive_tiles, mask, size, stride, fraction
        )
        naive += seconds
        if [(t.x, t.y) for t in tiles] != [(x, y) for x, y, _ in reference]:
            raise AssertionError("grid_tiles and the naive loop disagree")
    return {
        "images": len(images),
        "size": sizes.tiling_size,
        "patch": size,
        "stride": stride,
        "megapixels": megapixels,
        "tiling_mp_per_s": megapixels / ours,
        "naive_tiling_mp_per_s": megapixels / naive,
        "tiling_speedup_vs_naive": naive / ours,
        "tissue_detection_mp_per_s": megapixels / detect,
        "detection_plus_tiling_mp_per_s": megapixels / (detect + ours),
        "naive_detection_plus_tiling_mp_per_s": megapixels / (detect + naive),
    }


def synthetic_patches(
    n: int, size: int, patch: int, seed: int = 3
) -> tuple[np.ndarray, np.ndarray]:
    """Tissue patches of normal and late-SSc synthetic sections, labels 0/1, `n` of them."""
    images, labels = [], []
    per_class = max(1, n // 40)
    for section in synthetic.generate_cohort(
        {"normal": per_class, "late": per_class}, 1, size=(size, size), seed=seed
    ):
        tiles = tiling.grid_tiles(tissue_mask(section.image), patch, patch, 0.5)
        images += [tiling.crop(section.image, t, patch) for t in tiles]
        labels += [int(section.label != "normal")] * len(tiles)
    order = np.random.default_rng(seed).permutation(len(images))
    order = np.resize(order, n)  # repeats patches when the sections gave fewer than n
    return np.stack(images)[order], np.asarray(labels)[order]


def build(architecture: str, input_size: int, params: dict[str, Any]) -> Any:
    """The configured architecture with random weights (no download, same for every run)."""
    options = dict(params["classification"]["architectures"][architecture].get("options", {}))
    if architecture == "mobilenetv2":
        options.update(weights=None, weights_fallback=None)
    return builders.build_classifier(architecture, input_size, len(CLASSES), options)


def bench_training(
    sizes: Sizes, params: dict[str, Any], x: np.ndarray, y: np.ndarray
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Steady-state patches/s (median epoch after the first) of each architecture."""
    settings = params["classification"]["training"]
    results, trained = {}, {}
    split = max(8, len(x) // 8)
    for architecture in sizes.architectures:
        logger.info("training: %s, %d epochs on %d patches", architecture, sizes.epochs, len(x))
        model = build(architecture, x.shape[1], params)
        result = training.fit(
            model,
            (x[split:], y[split:]),
            (x[:split], y[:split]),
            name=f"bench.{architecture}",
            epochs=sizes.epochs,
            batch_size=settings["batch_size"],
            learning_rate=settings["learning_rate"],
            seed=0,
            loss="sparse_categorical_crossentropy",
            metrics=["accuracy"],
            augment="classifier",
            patience=sizes.epochs,
        )
        results[architecture] = {
            "patches_per_second": result.patches_per_second,
            "seconds": result.seconds,
            "epochs": result.epochs_run,
            "train_patches": len(x) - split,
            "parameters": int(model.count_params()),
        }
        trained[architecture] = model
    return results, trained


def bench_inference(
    sizes: Sizes, params: dict[str, Any], model: Any, x: np.ndarray
) -> dict[str, list[dict[str, Any]]]:
    """`export.compare_runtimes` at the trained model's input size and at 224 px (a fresh
    model of the same architecture there: speed does not depend on the weights)."""
    results = {}
    for px, n in sizes.inference_patches:
        logger.info(
            "inference: %s at %d px, %d patches, Keras vs TFLite float32 vs int8",
            sizes.inference_architecture,
            px,
            n,
        )
        at_size = model if px == x.shape[1] else build(sizes.inference_architecture, px, params)
        patches = tiling.resize_batch(x[:n], px).astype(np.float32)
        representative = export.representative_sample(tiling.resize_batch(x, px), 32)
        rows = export.compare_runtimes(
            at_size, patches, representative, rounds=sizes.inference_rounds
        )
        results[str(px)] = rows
    return results


def _time_images(fn: Callable[[np.ndarray], Any], images: list[np.ndarray], rounds: int) -> float:
    """Images per second: one warm-up image, then the median of `rounds` passes."""
    fn(images[0])
    seconds = []
    for _ in range(rounds):
        start = time.perf_counter()
        for image in images:
            fn(image)
        seconds.append(time.perf_counter() - start)
    return len(images) / float(np.median(seconds))


def _interleaved_images(
    calls: dict[str, Callable[[np.ndarray], Any]], images: list[np.ndarray], rounds: int
) -> dict[str, float]:
    """Images per second of each call, the calls taking turns within every round (one pass
    over the images each): load from other processes on a shared machine hits them alike,
    so their ratios hold even when the absolute numbers do not."""
    for call in calls.values():
        call(images[0])  # warm-up
    seconds: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(max(1, rounds)):
        for name, call in calls.items():
            start = time.perf_counter()
            for image in images:
                call(image)
            seconds[name].append(time.perf_counter() - start)
    return {name: len(images) / float(np.median(values)) for name, values in seconds.items()}


def bench_predict(sizes: Sizes, params: dict[str, Any], model: Any) -> dict[str, Any]:
    """Whole images/s through `serving.predict_image`: the classifier-only path (tissue, tiles,
    TFLite classifier) on Keras and TFLite float32, and the real predict path, the same call
    with the training run's preprocessing (Macenko stain normalisation + UNet gating on the
    exported UNet), on the same images. All paths are `preprocessing.preprocess.Preprocessor`."""
    patch_params, segmentation = params["patches"], params["segmentation"]
    unet_params = segmentation["unet"]
    images = [
        s.image
        for s in synthetic.generate_cohort(
            {"normal": 1, "late": 1},
            max(1, sizes.predict_images // 2),
            size=(sizes.predict_size, sizes.predict_size),
            seed=5,
        )
    ]
    normalizer = stain.fit_normalizer("macenko", images).to_dict()
    plain = preprocess.PreprocessConfig.from_params(
        patch_params, {**segmentation, "selection": {"use_segmentation": False}}
    )
    full = preprocess.PreprocessConfig.from_params(patch_params, segmentation, normalizer)
    predictor = serving.PredictorConfig(
        class_names=CLASSES, input_size=model.input_shape[1], preprocess=full.to_dict()
    )
    logger.info(
        "predict: converting the classifier and a UNet (%d px) to TFLite float32",
        unet_params["input_size"],
    )
    tflite = export.TFLiteClassifier(export.to_tflite(model)).predict
    unet = builders.build_unet(
        unet_params["input_size"], 4, unet_params["base_filters"], unet_params["depth"]
    )
    gating_sample = tiling.resize_batch(
        synthetic_patches(64, 512, full.patch_size)[0], unet_params["input_size"]
    )
    unet_tflite = export.tflite_segmenter(
        export.to_tflite(unet, gating_sample, unet_params.get("quantize", "int8"))
        if unet_params.get("quantize", "int8") == "int8"
        else export.to_tflite(unet)
    )
    paths = {
        "keras": (export.keras_predictor(model), preprocess.Preprocessor(plain)),
        "tflite_float32": (tflite, preprocess.Preprocessor(plain)),
        "screening_path_tflite": (tflite, preprocess.Preprocessor(full, unet_tflite)),
        "screening_path_keras_unet": (
            tflite,
            preprocess.Preprocessor(full, export.keras_predictor(unet, 64)),
        ),
        "screening_path_float32_unet": (
            tflite,
            preprocess.Preprocessor(full, export.tflite_segmenter(export.to_tflite(unet), 2)),
        ),
    }
    result: dict[str, Any] = {
        "images": len(images),
        "size": sizes.predict_size,
        "unet_input_size": unet_params["input_size"],
        "unet_quantize": unet_params.get("quantize", "int8"),
        "patches_per_image": float(
            np.mean([len(paths["tflite_float32"][1](i).used_patches) for i in images])
        ),
    }
    calls = {
        name: (
            lambda image, c=classifier, p=preprocessor: serving.predict_image(
                image, c, p, predictor
            )
        )
        for name, (classifier, preprocessor) in paths.items()
    }
    logger.info(
        "predict: %s on %d images of %d px, interleaved",
        ", ".join(calls),
        len(images),
        sizes.predict_size,
    )
    for name, speed in _interleaved_images(calls, images, sizes.predict_rounds).items():
        result[f"{name}_images_per_second"] = speed
    gated = paths["screening_path_tflite"][1]
    result["stain_normalisation_ms_per_image"] = 1000 / _time_images(
        lambda image: gated.normalizer.pixel_transform(image)(
            np.stack([tiling.crop(image, t, full.patch_size) for t in gated.tiles(image)])
        ),
        images,
        sizes.predict_rounds,
    )
    candidates = [gated.cut(image)[0] for image in images]
    result["unet_gating_ms_per_image"] = 1000 / _time_images(
        gated.dermis_fraction, candidates, sizes.predict_rounds
    )
    result["tflite_speedup_vs_keras"] = (
        result["tflite_float32_images_per_second"] / result["keras_images_per_second"]
    )
    return result


def bench_fanout(sizes: Sizes, params: dict[str, Any], model: Any) -> dict[str, Any]:
    """`predict.predict_images` over 2 x `predict_images` PNG files (read from disk, as the
    node does), sequential (TFLite on 2 threads) vs `engine.kind: dask` on a 2-worker
    LocalCluster (1 thread each): with the cluster's start-up, as one `kedro run` pays it,
    and warm (a second pass on the same cluster). Rows must agree to 1e-6."""
    from PIL import Image  # noqa: PLC0415

    from ssc_skin import distributed  # noqa: PLC0415 - the optional `dask` extra
    from ssc_skin.inference import fanout, predict  # noqa: PLC0415

    patch_params, segmentation = params["patches"], params["segmentation"]
    unet_params = segmentation["unet"]
    n_images, size = 2 * sizes.predict_images, sizes.predict_size
    sections = [
        s.image
        for s in synthetic.generate_cohort(
            {"normal": 1, "late": 1}, max(1, n_images // 2), size=(size, size), seed=7
        )
    ][:n_images]
    config = preprocess.PreprocessConfig.from_params(
        patch_params, segmentation, stain.fit_normalizer("macenko", sections[:4]).to_dict()
    )
    classifier = export.to_tflite(model)
    unet = export.to_tflite(
        builders.build_unet(
            unet_params["input_size"], 4, unet_params["base_filters"], unet_params["depth"]
        )
    )
    input_size = int(model.input_shape[1])
    task = predict.TaskModel(
        "binary",
        "bench",
        CLASSES,
        input_size,
        export.FLOAT32,
        export.TFLiteClassifier(classifier, 2).predict,
        lambda: None,
    )
    trained = {
        "binary.bench": predict.TrainedModel("binary.bench", None, lambda: classifier, None, None)
    }
    preprocessor = preprocess.Preprocessor(config, export.tflite_segmenter(unet))
    engine = distributed.EngineConfig(kind="dask", n_workers=2, threads_per_worker=1)
    work = fanout.predict_work([task], trained, config.to_dict(), unet, 0.6, 0, 1)
    with tempfile.TemporaryDirectory() as folder:
        paths = []
        for n, image in enumerate(sections):
            paths.append(Path(folder) / f"image{n}.png")
            Image.fromarray(image).save(paths[-1])
        images = pd.DataFrame(
            {
                "image": [p.stem for p in paths],
                "patient": None,
                "image_path": [str(p) for p in paths],
            }
        )

        def run(fan_out: distributed.EngineConfig) -> tuple[pd.DataFrame, float]:
            start = time.perf_counter()
            table = predict.predict_images(images, [task], preprocessor, 0.6, 0, fan_out, work)
            return table, time.perf_counter() - start

        predict.predict_images(images.head(1), [task], preprocessor, 0.6)  # warm-up
        sequential, sequential_s = run(distributed.EngineConfig())
        logger.info("fan-out: %d images on a fresh 2-worker LocalCluster", n_images)
        fanned, cold_s = run(engine)
        with distributed.dask_client(engine) as client:
            address = distributed.EngineConfig(kind="dask", scheduler=client.scheduler.address)
            run(address)  # workers import and build their interpreters
            _, warm_s = run(address)
    columns = [c for c in sequential.columns if c.startswith("probability_")]
    difference = float(
        np.nanmax(np.abs(sequential[columns].to_numpy(float) - fanned[columns].to_numpy(float)))
    )
    return {
        "images": n_images,
        "size": size,
        "workers": 2,
        "threads_per_worker": 1,
        "sequential_images_per_second": n_images / sequential_s,
        "dask_images_per_second": n_images / cold_s,
        "dask_warm_images_per_second": n_images / warm_s,
        "dask_startup_seconds": cold_s - warm_s,
        "dask_speedup_vs_sequential": sequential_s / cold_s,
        "dask_warm_speedup_vs_sequential": sequential_s / warm_s,
        "same_rows": bool(sequential.drop(columns=columns).equals(fanned.drop(columns=columns))),
        "max_abs_probability_difference": difference,
    }


def bench_ingest(sizes: Sizes) -> dict[str, Any]:
    """Rows/s of cohort ingestion (`benchmarks/ingest.py scale`: discovery, checks, pseudonyms,
    quarantine report) on a manifest of missing and unreadable files, against the least any
    ingestion does: pandas reading the same manifest and `os.stat` on each row's file."""
    rows = sizes.ingest_rows
    with tempfile.TemporaryDirectory() as tmp:
        manifest = ingest_bench.write_manifest(Path(tmp), rows, valid=20, unreadable=0.1)
        start = time.perf_counter()
        table = pd.read_csv(manifest, dtype=str, keep_default_na=False)
        read_s = time.perf_counter() - start
        found = sum(os.path.isfile(manifest.parent / p) for p in table["image_path"])
        baseline_s = time.perf_counter() - start
        cohort = ingest_bench._cohort({"layout": "manifest", "manifest": str(manifest)}, 0.05)
        start = time.perf_counter()
        result = ingest_bench.ingest.ingest_images(
            cohort, min_side=64, min_saturation=12, key="bench"
        )
        project_s = time.perf_counter() - start
    return {
        "rows": rows,
        "files_present": int(found),
        "valid": len(result.manifest),
        "quarantined": len(result.report),
        "pandas_read_rows_per_second": rows / read_s,
        "baseline_rows_per_second": rows / baseline_s,
        "ingest_rows_per_second": rows / project_s,
        "ingest_seconds": project_s,
        "ingest_vs_baseline": baseline_s / project_s,
        "workers": ingest_bench.ingest.default_workers(),
    }


def bench_memory(sizes: Sizes) -> dict[str, Any]:
    """Peak RSS of the cohort stage and of the patches stage at two cohort sizes, and of the
    project's imports alone (not in --quick): `benchmarks/stage_memory.py`."""
    return stage_memory.bench_memory(
        sizes.memory_patients,
        sizes.memory_images_per_patient,
        sizes.memory_image_size,
        floor=sizes.memory_floor,
        concurrent=sizes.memory_concurrent,
    )


def bench_training_options(
    sizes: Sizes, params: dict[str, Any], x: np.ndarray, y: np.ndarray
) -> dict[str, Any]:
    """Each training option (mixed bfloat16, oneDNN off, thread pools, XLA, ...) against
    float32 on the same models and patches, in interleaved fresh processes:
    `benchmarks/throughput.py`."""
    logger.info(
        "training options: %s, %d round(s) of %s",
        ", ".join(sizes.architectures),
        sizes.throughput_rounds,
        ", ".join(sizes.throughput_options),
    )
    return throughput.bench_throughput(
        x,
        y,
        params,
        sizes.architectures,
        sizes.throughput_epochs,
        sizes.throughput_rounds,
        sizes.throughput_options,
    )


# --- report ------------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    cpu = platform.processor()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        cpu = next(
            (
                line.split(":", 1)[1].strip()
                for line in cpuinfo.read_text().splitlines()
                if line.startswith("model name")
            ),
            cpu,
        )
    import tensorflow as tf  # noqa: PLC0415 - already imported by the project's modules

    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "platform": platform.platform(),
        "load_average_at_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }


def _runtime(rows: list[dict[str, Any]], name: str) -> dict[str, Any]:
    return next(r for r in rows if r["runtime"] == name)


def headline(results: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """(benchmark, baseline, project, ratio) rows: the project against its baseline."""
    rows = []
    tiling = results["tiling"]
    rows.append(
        (
            "tiling, MP/s",
            f"naive loop {tiling['naive_tiling_mp_per_s']:.0f}",
            f"grid_tiles {tiling['tiling_mp_per_s']:.0f}",
            f"{tiling['tiling_speedup_vs_naive']:.1f}x",
        )
    )
    both, naive_both = (
        tiling["detection_plus_tiling_mp_per_s"],
        tiling["naive_detection_plus_tiling_mp_per_s"],
    )
    rows.append(
        (
            "tissue detection + tiling, MP/s",
            f"+ naive loop {naive_both:.0f}",
            f"+ grid_tiles {both:.0f}",
            f"{both / naive_both:.1f}x",
        )
    )
    train = results["training"]
    if {"cnn", "mobilenetv2"} <= set(train):
        cnn, mnv2 = train["cnn"]["patches_per_second"], train["mobilenetv2"]["patches_per_second"]
        rows.append(
            (
                "training, patches/s",
                f"CNN {cnn:.0f}",
                f"MobileNetV2 {mnv2:.0f}",
                f"{mnv2 / cnn:.2f}x",
            )
        )
    else:
        for name, row in train.items():
            rows.append(
                (
                    f"training, patches/s ({name} only, --quick)",
                    "n/a",
                    f"{name} {row['patches_per_second']:.0f}",
                    "n/a",
                )
            )
    for px, runtimes in results["inference"].items():
        keras_row = _runtime(runtimes, "keras")
        for name in ("tflite_float32", "tflite_int8"):
            row = _runtime(runtimes, name)
            rows.append(
                (
                    f"inference {px} px, patches/s ({results['meta']['inference_model']})",
                    f"Keras {keras_row['patches_per_second']:.0f}",
                    f"{name} {row['patches_per_second']:.0f} (agreement "
                    f"{row['label_agreement']:.3f}, {row['model_bytes'] / 1e6:.2f} MB)",
                    f"{row['speedup_vs_keras']:.2f}x",
                )
            )
    pred = results["predict"]
    rows.append(
        (
            f"predict_image {pred['size']} px, images/s",
            f"Keras {pred['keras_images_per_second']:.2f}",
            f"TFLite float32 {pred['tflite_float32_images_per_second']:.2f}",
            f"{pred['tflite_speedup_vs_keras']:.2f}x",
        )
    )
    plain, full = (
        pred["tflite_float32_images_per_second"],
        pred["screening_path_tflite_images_per_second"],
    )
    rows.append(
        (
            f"predict pipeline path {pred['size']} px, images/s",
            f"classifier-only path (TFLite) {plain:.2f}",
            f"+ stain ({pred['stain_normalisation_ms_per_image']:.1f} ms) + TFLite "
            f"{pred['unet_quantize']} UNet gating at {pred['unet_input_size']} px "
            f"({pred['unet_gating_ms_per_image']:.1f} ms) {full:.2f}",
            f"{full / plain:.2f}x",
        )
    )
    for other, label in (("keras", "Keras UNet"), ("float32", "TFLite float32 UNet")):
        speed = pred[f"screening_path_{other}_unet_images_per_second"]
        rows.append(
            (
                "the same with another UNet runtime, images/s",
                f"TFLite {pred['unet_quantize']} UNet {full:.2f}",
                f"{label} {speed:.2f}",
                f"{speed / full:.2f}x",
            )
        )
    if "fanout" in results:
        fan = results["fanout"]
        rows.append(
            (
                f"predict fan-out {fan['images']} images of {fan['size']} px, images/s",
                f"sequential {fan['sequential_images_per_second']:.2f}",
                f"Dask LocalCluster {fan['workers']}x{fan['threads_per_worker']} "
                f"{fan['dask_images_per_second']:.2f} incl. start-up "
                f"({fan['dask_startup_seconds']:.1f} s); warm "
                f"{fan['dask_warm_images_per_second']:.2f} "
                f"({fan['dask_warm_speedup_vs_sequential']:.2f}x)",
                f"{fan['dask_speedup_vs_sequential']:.2f}x",
            )
        )
    if "training_options" in results:
        rows += throughput.headline_rows(results["training_options"])
    if "ingest" in results:
        ing = results["ingest"]
        rows.append(
            (
                f"cohort ingestion, {ing['rows']:,}-row manifest of missing/unreadable files, "
                "rows/s (target >= 1,000)",
                f"pandas read + stat per row {ing['baseline_rows_per_second']:,.0f} "
                f"(read alone {ing['pandas_read_rows_per_second']:,.0f})",
                f"ingest_images {ing['ingest_rows_per_second']:,.0f} "
                f"({ing['workers']} workers, {ing['quarantined']:,} quarantined)",
                f"{ing['ingest_vs_baseline']:.2f}x",
            )
        )
    rows += stage_memory.headline_rows(results["memory"])
    return rows


def markdown(results: dict[str, Any]) -> str:
    meta = results["meta"]
    title = "# Benchmarks" + (
        " (--quick: smoke-test sizes, not for comparison)" if meta["quick"] else ""
    )
    lines = [
        title,
        "",
        f"{meta['date']} on {meta['cpu']} ({meta['cores']} cores), Python "
        f"{meta['python']}, TensorFlow {meta['tensorflow']}; load average at start "
        f"{', '.join(f'{v:.1f}' for v in meta['load_average_at_start'] or [])}. "
        f"Each ratio compares two measurements of this run. Total {meta['seconds']:.0f} s.",
        "",
        "| benchmark | baseline | project | ratio |",
        "|---|---|---|---|",
    ]
    lines += [f"| {' | '.join(row)} |" for row in headline(results)]
    lines += [
        "",
        "## Inference detail",
        "",
        "| size | runtime | patches/s | ms/patch | label agreement | max prob diff | model MB |",
        "|---|---|---|---|---|---|---|",
    ]
    for px, runtimes in results["inference"].items():
        for row in runtimes:
            size = f"{row['model_bytes'] / 1e6:.2f}" if row["model_bytes"] else "-"
            lines.append(
                f"| {px} | {row['runtime']} | {row['patches_per_second']:.0f} | "
                f"{row['ms_per_patch']:.2f} | {row['label_agreement']:.3f} | "
                f"{row['max_abs_probability_difference']:.2g} | {size} |"
            )
    if "training_options" in results:
        lines += ["", "## Training options detail", ""]
        lines += throughput.markdown_rows(results["training_options"])
    lines += ["", "## Memory detail", ""]
    lines += stage_memory.markdown_rows(results["memory"])
    lines += [
        "",
        "Training: steady-state throughput (median epoch after the first, which also "
        "traces the graph) of `training.fit` with augmentation, random initialisation. "
        "Inference at 224 px uses a fresh model of the same architecture. The predict "
        "pipeline path is `serving.predict_image` with the training run's preprocessing: "
        "Macenko stain normalisation of the candidate patches and an (untrained) UNet's "
        "dermis gating, exported to TFLite like the trained one; the classifier-only "
        "path is the same call without them.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, CNN only (< 60 s)")
    parser.add_argument("--out", type=Path, default=PROJECT / "data" / "08_reporting")
    args = parser.parse_args()
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(name)s %(message)s", datefmt="%H:%M:%S"
    )
    sizes = QUICK if args.quick else Sizes()
    params = config()
    start = time.perf_counter()
    results: dict[str, Any] = {
        "meta": {
            **machine(),
            "quick": args.quick,
            "inference_model": sizes.inference_architecture,
            "sizes": asdict(sizes),
        }
    }
    logger.info("tiling: %d images of %d px", sizes.tiling_images, sizes.tiling_size)
    results["tiling"] = bench_tiling(sizes, params["patches"])
    x, y = synthetic_patches(sizes.train_patches, 512, params["patches"]["patch_size"])
    results["training"], trained = bench_training(sizes, params, x, y)
    results["training_options"] = bench_training_options(sizes, params, x, y)
    model = trained[sizes.inference_architecture]
    results["inference"] = bench_inference(sizes, params, model, x)
    results["predict"] = bench_predict(sizes, params, model)
    results["fanout"] = bench_fanout(sizes, params, model)
    logger.info("ingest: a manifest of %d rows", sizes.ingest_rows)
    results["ingest"] = bench_ingest(sizes)
    results["memory"] = bench_memory(sizes)
    results["meta"]["seconds"] = time.perf_counter() - start
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "benchmarks.json").write_text(json.dumps(results, indent=2, default=float))
    (args.out / "benchmarks.md").write_text(markdown(results))
    logger.info(
        "wrote %s and %s in %.0f s",
        args.out / "benchmarks.json",
        args.out / "benchmarks.md",
        results["meta"]["seconds"],
    )


if __name__ == "__main__":
    main()
