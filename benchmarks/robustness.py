"""Robustness to stain and scanner shift: accuracy of deep, peer and hybrid vs shift strength.

Train on the default H&E cohort, test on shifted copies of the test patients' images: HED
stain jitter of increasing strength, a Masson-like recolouring and JPEG re-compression at
quality 50 (`ssc_skin.evaluation.shift`). Each shifted image goes through the study's own
preprocessing, the fitted stain normaliser and UNet gating included (`Preprocessor` with the
saved `preprocess.json` and `unet.tflite`): that is what a user's lab images meet.

1. `kedro run --pipelines cohort,patches,segmentation` in a temporary copy of the project
   (`data/` here is left alone): the cohort, ONE patient-grouped split, the patches, the
   fitted normaliser and the UNet.
2. Every enabled architecture is trained in this process with the classification pipeline's
   own node (`train_classifier`: the project's recipe, random initialisation), the colour +
   texture peer with the evaluation pipeline's node, and the hybrid (`evaluation.hybrid`:
   an equal-weight vote of the components, or stacked on the validation patients) where it
   exists.
3. Every test image is shifted (one fixed seed per image: every model and every strength of
   one shift see the same direction), preprocessed, and classified by every model; patch
   accuracy and patient accuracy (mean over a patient's patches, argmax: `aggregation`) are
   counted as "n of N".

    .venv/bin/python benchmarks/robustness.py              # binary task, ~10 min on 2 cores
    .venv/bin/python benchmarks/robustness.py --tasks binary three_class
    .venv/bin/python benchmarks/robustness.py --quick      # tiny (conf/test), for the test

Writes data/08_reporting/robustness.{json,md} (or --out) and the figure (--figure, default
docs/robustness.png; the quick run writes it beside the tables).
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
import zlib
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

PROJECT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from project_copy import copy_project  # noqa: E402

from ssc_skin import aggregation  # noqa: E402
from ssc_skin.evaluation import shift  # noqa: E402

OUT = PROJECT / "data" / "08_reporting"
FIGURE = PROJECT / "docs" / "robustness.png"
QUICK_LEVELS = {"hed": (0.0, 2.0), "masson": (1.0,), "jpeg": (50.0,)}

logger = logging.getLogger("robustness")

Predictor = Callable[[np.ndarray], np.ndarray]  # patches (N x s x s x 3 uint8) -> N x classes


# --------------------------------------------------------------------------- scoring


def image_seed(image_id: str) -> int:
    """A stable seed per image (not per model, not per strength)."""
    return zlib.crc32(image_id.encode())


def score(
    probabilities: np.ndarray, truth: np.ndarray, patients: np.ndarray, n_patients: int
) -> dict[str, Any]:
    """Patch and patient accuracy, each with its counts; patients by the study's rule."""
    probabilities, truth, patients = map(np.asarray, (probabilities, truth, patients))
    correct = probabilities.argmax(axis=1) == truth if len(truth) else np.zeros(0, bool)
    result: dict[str, Any] = {
        "patch_correct": int(correct.sum()),
        "patch_n": len(truth),
        "patient_correct": 0,
        "patient_n": 0,
        "patients_total": int(n_patients),
    }
    if len(truth):
        keys, means, _ = aggregation.group_means(probabilities, patients)
        first_truth = {p: t for p, t in zip(patients, truth, strict=True)}
        calls = aggregation.decide(means)
        result["patient_correct"] = int(
            sum(int(c == first_truth[k]) for k, c in zip(keys, calls, strict=True))
        )
        result["patient_n"] = len(keys)
    result["patch_accuracy"] = result["patch_correct"] / max(result["patch_n"], 1)
    result["patient_accuracy"] = result["patient_correct"] / max(result["patient_n"], 1)
    return result


def evaluate_shifts(
    images: Iterable[tuple[str, str, int, np.ndarray]],
    preprocess: Callable[[np.ndarray], np.ndarray],
    predictors: Mapping[str, Predictor],
    combine: Mapping[str, Callable[[dict[str, np.ndarray]], np.ndarray]],
    levels: Mapping[str, Iterable[float]],
    n_patients: int,
) -> list[dict[str, Any]]:
    """One row per shift x strength x model: accuracy on the shifted test images.

    `images` yields (image id, patient, class index, RGB image); `preprocess` gives an image's
    classified patches (the study's preprocessing); `predictors` map patches to class
    probabilities; `combine` builds models (the hybrid) from the others' probabilities.
    Images without a classified patch are counted (`images_not_assessed`), never dropped.
    """
    conditions = [(name, float(s)) for name, strengths in levels.items() for s in strengths]
    found: dict[tuple[str, float], dict[str, Any]] = {
        c: {"patches": [], "truth": [], "patients": [], "skipped": 0, "distance": []}
        for c in conditions
    }
    n_images = 0
    for image_id, patient, label, image in images:
        n_images += 1
        for name, strength in conditions:
            shifted = shift.apply(name, image, strength, image_seed(image_id))
            record = found[(name, strength)]
            record["distance"].append(shift.colour_distance(image, shifted))
            patches = preprocess(shifted)
            if len(patches) == 0:
                record["skipped"] += 1
                continue
            record["patches"].append(patches)
            record["truth"] += [label] * len(patches)
            record["patients"] += [patient] * len(patches)
    rows = []
    for (name, strength), record in found.items():
        # one batch per condition and model: per-image calls cost Keras' overhead each time
        probs: dict[str, np.ndarray] = {}
        if record["patches"]:
            patches = np.concatenate(record["patches"])
            probs = {m: np.asarray(p(patches), float) for m, p in predictors.items()}
            probs.update({m: fn(probs) for m, fn in combine.items()})
        truth, patients = np.array(record["truth"], int), np.array(record["patients"])
        for model in [*predictors, *combine]:
            rows.append(
                {
                    "shift": name,
                    "strength": strength,
                    "model": model,
                    "mean_colour_distance": float(np.mean(record["distance"] or [0.0])),
                    "images_total": n_images,
                    "images_not_assessed": record["skipped"],
                    **score(probs.get(model, np.zeros((0, 1))), truth, patients, n_patients),
                }
            )
    return rows


# --------------------------------------------------------------------------- the study's parts


def _kedro(project: Path, args: list[str]) -> float:
    command = [sys.executable, "-m", "kedro", "run", *args]
    environment = {**os.environ, "KEDRO_DISABLE_TELEMETRY": "1", "PYTHONPATH": str(project / "src")}
    start = time.perf_counter()
    result = subprocess.run(
        command, cwd=project, env=environment, capture_output=True, text=True, check=False
    )
    if result.returncode:
        raise RuntimeError(f"{' '.join(command)} failed:\n{result.stderr[-4000:]}")
    return time.perf_counter() - start


def _load(project: Path, env: str | None) -> tuple[Any, dict[str, Any]]:
    """The copy's catalog and parameters, through Kedro (the catalog does the I/O)."""
    from kedro.framework.session import KedroSession  # noqa: PLC0415
    from kedro.framework.startup import bootstrap_project  # noqa: PLC0415

    bootstrap_project(project)
    session = KedroSession.create(project_path=project, env=env)
    context = session.load_context()
    return context.catalog, context.params


def _deep_predictor(model: Any, input_size: int) -> Predictor:
    from ssc_skin.imaging import tiling  # noqa: PLC0415
    from ssc_skin.models import training  # noqa: PLC0415

    return lambda patches: training.predict(model, tiling.resize_batch(patches, input_size))


def train_models(
    catalog: Any,
    params: dict[str, Any],
    task: dict[str, Any],
    quick: bool,
    training_overrides: Mapping[str, Any],
) -> tuple[dict[str, Predictor], dict[str, Callable], dict[str, Any]]:
    """Every enabled architecture (random init), the texture peer and the hybrid for one task;
    their predictors on raw patches and what each training said. `training_overrides` go
    over `classification.training` (e.g. `stain_augmentation`)."""
    from ssc_skin.constants import Skipped  # noqa: PLC0415
    from ssc_skin.evaluation import texture  # noqa: PLC0415
    from ssc_skin.pipelines.classification.nodes import train_classifier  # noqa: PLC0415
    from ssc_skin.pipelines.evaluation.nodes import (  # noqa: PLC0415
        texture_features,
        train_texture_baseline,
    )

    patches = catalog.load("patches")
    index = catalog.load("classifier_patch_index")
    training_params = {**params["classification"]["training"], **training_overrides}
    predictors: dict[str, Predictor] = {}
    summaries: dict[str, Any] = {}
    for declared in params["classification"]["architectures"].values():
        if not declared.get("enabled", True):
            continue
        # random initialisation: no network here, and the brief compares recipes, not ImageNet
        arch = {**declared, "options": {**declared.get("options", {}), "weights": None}}
        if quick:
            arch["training"] = {**arch.get("training", {}), "epochs": 1, "early_stopping_start": 0}
        start = time.perf_counter()
        model, summary = train_classifier(patches, index, task, arch, training_params)
        if isinstance(model, Skipped):
            continue
        predictors[arch["name"]] = _deep_predictor(model, arch["input_size"])
        summaries[arch["name"]] = {
            **{k: summary.get(k) for k in ("train_patches", "val_patches", "epochs_run")},
            "seconds": time.perf_counter() - start,
        }
        logger.info("%s.%s trained: %s", task["name"], arch["name"], summaries[arch["name"]])
    evaluation = params["evaluation"]
    features = texture_features(patches, index, evaluation)
    peer, summary = train_texture_baseline(features, index, task, evaluation, training_params)
    options = evaluation.get("texture", {})
    n_classes = len(task["classes"])
    predictors["texture"] = lambda p: texture.predict_proba(
        peer, texture.features(p, options), n_classes
    )
    summaries["texture"] = {k: summary.get(k) for k in ("train_patches", "val_patches", "C")}
    # the hybrid's stacker learns from the validation patches' probabilities (peer: from the
    # features already computed, in patch-index order)
    val = (index["split"] == "val").to_numpy()
    val_images = patches["images"][index.loc[val, "row"].to_numpy()]
    val_probs = {n: p(val_images) for n, p in predictors.items() if n != "texture"}
    val_probs["texture"] = texture.predict_proba(peer, features[val], n_classes)
    combine = _hybrid(val_probs, index[val], task, evaluation, summaries)
    return predictors, combine, summaries


def _hybrid(
    val_probs: Mapping[str, np.ndarray],
    val: Any,
    task: dict[str, Any],
    evaluation: dict[str, Any],
    summaries: dict[str, Any],
) -> dict[str, Callable[[dict[str, np.ndarray]], np.ndarray]]:
    """The study's hybrid (`evaluation.hybrid`: an equal-weight vote, or the models stacked on
    the validation patients), where this checkout has it; none (said in the log) otherwise."""
    try:
        from ssc_skin.evaluation import hybrid  # noqa: PLC0415
    except ImportError:
        logger.info("no ssc_skin.evaluation.hybrid in this checkout: no hybrid measured")
        return {}
    from ssc_skin.models.tasks import encode_labels  # noqa: PLC0415

    names = list(val_probs)
    n_classes = len(task["classes"])
    options = evaluation.get("hybrid", {})
    method = hybrid.method_of(options) if hasattr(hybrid, "method_of") else "stacked"
    if method == "vote":  # the study's default: an equal-weight vote, nothing fitted
        model, fitted = hybrid.SoftVote(len(names)), {"C": None}
    else:
        model, fitted = hybrid.fit(
            [val_probs[n] for n in names],
            encode_labels(val["label"], task),
            val["patient"].to_numpy(),
            n_classes,
            options,
            seed=int(options.get("seed", 0)),
        )
    summaries["hybrid"] = {
        "method": method,
        "components": names,
        "component_weights": hybrid.component_weights(model, names, task["classes"]),
        "val_patches": len(val),
        "C": fitted["C"],
    }
    logger.info("%s.hybrid: %s", task["name"], summaries["hybrid"])
    return {
        "hybrid": lambda probs: hybrid.predict_proba(model, [probs[n] for n in names], n_classes)
    }


def load_test_images(catalog: Any, task: dict[str, Any]) -> tuple[list[tuple], int]:
    """(image, patient, class index, RGB) of the test patients' images, and their count."""
    from ssc_skin.models.tasks import encode_labels  # noqa: PLC0415

    manifest = catalog.load("manifest")
    splits = catalog.load("patient_splits").set_index("patient")["split"]
    loaders = catalog.load("cohort_images")
    test = manifest[manifest["patient"].map(splits) == "test"]
    labels = encode_labels(test["label"], task)
    found = [
        (r.image, r.patient, int(y), np.asarray(loaders[r.image]().convert("RGB")))
        for r, y in zip(test.itertuples(index=False), labels, strict=True)
    ]
    return found, test["patient"].nunique()


def prepare(workdir: Path, env: str | None) -> float:
    """The copy's cohort, patches and UNet (`kedro run`), unless `workdir` holds them already."""
    if (workdir / "data/06_models/unet.tflite").is_file():
        logger.info("reusing the prepared copy in %s", workdir)
        return 0.0
    project = copy_project(workdir)
    seconds = _kedro(
        project, ["--pipelines", "cohort,patches,segmentation", *(["--env", env] if env else [])]
    )
    logger.info("cohort, patches, segmentation: %.0f s", seconds)
    return seconds


def run(
    tasks: list[str], quick: bool, workdir: Path, training_overrides: Mapping[str, Any]
) -> dict[str, Any]:
    """Prepare the copy in `workdir`, then train and measure every model of each task."""
    from ssc_skin.inference import export  # noqa: PLC0415
    from ssc_skin.preprocessing.preprocess import Preprocessor  # noqa: PLC0415

    env = "test" if quick else None
    levels = QUICK_LEVELS if quick else shift.DEFAULT_LEVELS
    result: dict[str, Any] = {
        "levels": {k: list(v) for k, v in levels.items()},
        "training_overrides": dict(training_overrides),
        "tasks": {},
    }
    result["preprocessing_seconds"] = prepare(workdir, env)
    catalog, params = _load(workdir, env)
    preprocessor = Preprocessor(
        catalog.load("preprocess_config"), export.tflite_segmenter(catalog.load("unet_tflite"))
    )
    result["normalizer"] = preprocessor.config.normalizer.get("method")
    for name in tasks:
        task = params["classification"]["tasks"][name]
        start = time.perf_counter()
        predictors, combine, summaries = train_models(
            catalog, params, task, quick, training_overrides
        )
        trained = time.perf_counter()
        images, n_patients = load_test_images(catalog, task)
        rows = evaluate_shifts(
            images,
            lambda image: preprocessor(image).used_patches,
            predictors,
            combine,
            levels,
            n_patients,
        )
        index = catalog.load("classifier_patch_index")
        result["tasks"][name] = {
            "classes": list(task["classes"]),
            # the unshifted images must give the study's own test patches (HED 0's patch_n)
            "study_test_patches": int((index["split"] == "test").sum()),
            "models": summaries,
            "rows": rows,
            "train_seconds": trained - start,
            "shift_seconds": time.perf_counter() - trained,
        }
        logger.info("%s: %s", name, {k: v for k, v in result["tasks"][name].items() if "sec" in k})
    return result


# --------------------------------------------------------------------------- reporting

LABELS = {"hed": "HED {s:g}", "masson": "Masson-like", "jpeg": "JPEG q{s:g}"}
NAMES = {"mobilenetv2": "MobileNetV2", "cnn": "CNN", "densenet": "DenseNet",
         "texture": "colour+texture peer", "hybrid": "hybrid"}  # fmt: skip


def _name(model: str) -> str:
    return NAMES.get(model, model)


def _condition(row: Mapping[str, Any]) -> str:
    return LABELS[row["shift"]].format(s=row["strength"])


def markdown(result: Mapping[str, Any]) -> str:
    lines = []
    for name, task in result["tasks"].items():
        rows = task["rows"]
        models = list(dict.fromkeys(r["model"] for r in rows))
        conditions = list(dict.fromkeys(_condition(r) for r in rows))
        cell = {(_condition(r), r["model"]): r for r in rows}
        lines += [
            f"**{name}** ({' / '.join(task['classes'])}): patient accuracy (correct of "
            "assessed test patients) · patch accuracy (correct of classified patches)",
            "",
            "| shift | colour distance | " + " | ".join(map(_name, models)) + " |",
            "|---|---|" + "---|" * len(models),
        ]
        for condition in conditions:
            first = cell[(condition, models[0])]
            note = (
                f" ({first['images_not_assessed']} of {first['images_total']} images not assessed)"
                if first["images_not_assessed"]
                else ""
            )
            values = [
                f"{100 * c['patient_accuracy']:.0f} % ({c['patient_correct']} of "
                f"{c['patient_n']}) · {100 * c['patch_accuracy']:.1f} % ({c['patch_correct']} "
                f"of {c['patch_n']})"
                for c in (cell[(condition, m)] for m in models)
            ]
            lines.append(
                f"| {condition}{note} | {first['mean_colour_distance']:.1f} | "
                + " | ".join(values)
                + " |"
            )
        lines.append("")
    return "\n".join(lines)


def figure(result: Mapping[str, Any], path: Path) -> None:
    """Accuracy vs shift, one line per model: HED strengths joined, Masson and JPEG apart."""
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    tasks = result["tasks"]
    fig, axes = plt.subplots(2, len(tasks), figsize=(6.5 * len(tasks), 7), squeeze=False)
    for column, (name, task) in enumerate(tasks.items()):
        rows = task["rows"]
        hed = sorted({r["strength"] for r in rows if r["shift"] == "hed"})
        others = list(dict.fromkeys(_condition(r) for r in rows if r["shift"] != "hed"))
        place = {("hed", s): i for i, s in enumerate(hed)}
        ticks = [f"HED {s:g}" for s in hed] + others
        for i, label in enumerate(others):
            place[label] = len(hed) + 0.5 + i
        models = list(dict.fromkeys(r["model"] for r in rows))
        for row_i, metric in enumerate(("patient_accuracy", "patch_accuracy")):
            ax = axes[row_i][column]
            ax.axhline(100 / len(task["classes"]), color="0.5", linestyle=":", linewidth=1)
            for k, model in enumerate(models):
                nudge = 0.06 * (k - (len(models) - 1) / 2)  # equal values stay visible
                mine = [r for r in rows if r["model"] == model]
                line = [r for r in mine if r["shift"] == "hed"]
                handle = ax.plot(
                    [place[("hed", r["strength"])] + nudge for r in line],
                    [100 * r[metric] for r in line],
                    marker="o",
                    label=_name(model),
                )[0]
                rest = [r for r in mine if r["shift"] != "hed"]
                ax.plot(
                    [place[_condition(r)] + nudge for r in rest],
                    [100 * r[metric] for r in rest],
                    marker="s",
                    linestyle="none",
                    color=handle.get_color(),
                )
            ax.set_xticks([*range(len(hed)), *(len(hed) + 0.5 + i for i in range(len(others)))])
            ax.set_xticklabels(ticks, rotation=30, ha="right")
            ax.set_ylim(0, 102)
            ax.axvline(len(hed) - 0.25, color="0.8", linewidth=1)
            ax.set_ylabel(f"{metric.replace('_', ' ')} (%)")
            ax.set_title(f"{name}: {metric.split('_')[0]} level")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8, loc="best")
    recipe = result.get("training_overrides") or {}
    fig.suptitle(
        "Trained on the default H&E cohort"
        + (f" ({', '.join(f'{k} {v}' for k, v in recipe.items())})" if recipe else "")
        + "; test patients' images shifted"
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", default=["binary"])
    parser.add_argument("--quick", action="store_true", help="conf/test sizes, 1 epoch")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--figure", type=Path, default=None)
    parser.add_argument(
        "--stain-augmentation",
        nargs=2,
        type=float,
        metavar=("SIGMA", "BIAS"),
        help="train with HED stain jitter (classification.training.stain_augmentation)",
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="keep the project copy here (reused when it holds a prepared run); default: a "
        "temporary folder",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    overrides = (
        {"stain_augmentation": dict(zip(("sigma", "bias"), args.stain_augmentation, strict=True))}
        if args.stain_augmentation
        else {}
    )
    start = time.perf_counter()
    if args.workdir:
        result = run(args.tasks, args.quick, args.workdir, overrides)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            result = run(args.tasks, args.quick, Path(tmp), overrides)
    result["seconds"] = time.perf_counter() - start
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "robustness.json").write_text(json.dumps(result, indent=2, default=str))
    (args.out / "robustness.md").write_text(markdown(result))
    figure(result, args.figure or (args.out / "robustness.png" if args.quick else FIGURE))
    print(markdown(result))  # noqa: T201 - a command-line report
    print(f"total {result['seconds']:.0f} s")  # noqa: T201


if __name__ == "__main__":
    main()
