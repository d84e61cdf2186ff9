"""MLflow helpers for runs that read well when people compare them.

One nested run per task x architecture opens before the model is built and closes when its
training ends, so MLflow shows the training time as the run's duration. The evaluation adds
its metrics later by reopening that run by id, and puts the end time back. No Kedro here:
nodes and hooks call these.
"""

from __future__ import annotations

import logging
import math
import re
import subprocess
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import mlflow
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

logger = logging.getLogger(__name__)

NOTE_TAG = "mlflow.note.content"  # MLflow shows this tag as the run's (or model's) description


@contextmanager
def model_run(
    name: str, tags: Mapping[str, Any], params: Mapping[str, Any]
) -> Iterator[str | None]:
    """A nested run of the active run, open for the duration of the block; yields its id.

    Yields None (and logs nothing) without an active run: unit tests, untracked pipelines.
    """
    if mlflow.active_run() is None:
        yield None
        return
    with mlflow.start_run(run_name=name, nested=True) as run:
        mlflow.set_tags(dict(tags))
        mlflow.log_params(dict(params))
        yield run.info.run_id


def logged_model_name(name: str) -> str:
    """`binary.cnn` -> `binary_cnn`: MLflow refuses '.', '/', ':', '%' and quotes in the names
    of logged models (the export's predictors are named `<task>_<arch>_whole_image_predictor`)."""
    return re.sub(r"[./:%\"']", "_", name)


SPLITS = ("train", "val", "test")  # metric sections: MLflow groups charts by the part before '/'
STATIC_FLOATS = frozenset({"C"})  # chosen settings, not measurements: params
UNPREFIXED = {"patches_per_second": "train/patches_per_second"}


def is_tracking() -> bool:
    """Whether a run is active (kedro-mlflow opened one): nodes log nothing otherwise."""
    return mlflow.active_run() is not None


def epoch_metric_name(key: str) -> str:
    """Keras' `loss`, `val_accuracy`, `learning_rate` -> `train/loss`, `val/accuracy`,
    `train/learning_rate`: MLflow puts each split's curves in its own chart section."""
    return f"val/{key[4:]}" if key.startswith("val_") else f"train/{key}"


def metric_name(key: str) -> str:
    """`test_patient_accuracy` -> `test/patient_accuracy` (the split is the chart section)."""
    if key in UNPREFIXED:
        return UNPREFIXED[key]
    split, _, rest = key.partition("_")
    return f"{split}/{rest}" if split in SPLITS and rest else f"model/{key}"


def is_chart(key: str, classes: Iterable[str]) -> bool:
    """Whether an evaluation number earns a chart in the nested run: not a per-class number
    (`test_patient_sensitivity_late`), and on the training split only the accuracies; the
    rest stays in the run's `evaluation.json`."""
    per_class = rf"_(sensitivity|specificity|precision|f1)_({'|'.join(map(re.escape, classes))})"
    if classes and re.search(per_class + r"(_all)?$", key):
        return False
    return (
        not key.startswith("train_") or key in UNPREFIXED or key.endswith(("_accuracy", "seconds"))
    )


def split_evaluation(evaluation: Mapping[str, Any]) -> tuple[dict[str, float], dict[str, str]]:
    """(metrics, params) of one model's evaluation for its nested run.

    Measurements (floats) become `/`-grouped metrics (`test/patient_accuracy`), one chart
    section per split, without per-class numbers and training-split detail (`is_chart`);
    static values (counts, sizes, chosen settings: `input_size`, `parameters`, `replicas`,
    `test_patients`, `C`, ...) become params, which MLflow lists instead of drawing each as a
    one-bar chart. Everything, those included, is in the run's `evaluation.json` artifact.
    """
    classes = [str(c) for c in evaluation.get("classes", [])]
    metrics: dict[str, float] = {}
    params: dict[str, str] = {}
    for key, value in evaluation.items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue
        if isinstance(value, int) or key in STATIC_FLOATS:
            params[key] = str(value)
        elif math.isfinite(value) and is_chart(key, classes):
            metrics[metric_name(key)] = float(value)
    return metrics, params


def epoch_logger(run_id: str | None) -> Callable[[dict[str, float], int], None] | None:
    """`log(metrics, step)` into run `run_id` (for `training.EpochMetrics`), names grouped by
    split (`train/loss`, `val/loss`); None without a run."""
    if run_id is None:
        return None

    def log(metrics: dict[str, float], step: int) -> None:
        named = {epoch_metric_name(k): v for k, v in metrics.items()}
        mlflow.log_metrics(named, step=step, run_id=run_id)

    return log


def log_keras_model(model: Any, name: str, weights_source: str) -> str:
    """The trained Keras model in the active (nested) run, named `<task>_<arch>` so the models
    are told apart in MLflow's model lists; returns its URI (`models:/m-...`)."""
    import keras  # noqa: PLC0415 (heavy; only runs that train need it)
    import mlflow.keras  # noqa: PLC0415
    import tensorflow as tf  # noqa: PLC0415

    mlflow.log_param("weights_source", weights_source)
    info = mlflow.keras.log_model(
        model,
        name=logged_model_name(name),
        pip_requirements=[f"keras=={keras.__version__}", f"tensorflow=={tf.__version__}"],
    )
    mlflow.set_tag("model_uri", info.model_uri)
    return info.model_uri


def log_evaluation(
    evaluation: Mapping[str, Any],
    params: Mapping[str, Any] | None = None,
    model: Any = None,
) -> None:
    """One model's evaluation into its nested run: `/`-grouped metrics, static values as
    params, the description. No-op without an active run or for a skipped model.

    The run opened while the model was trained (`mlflow_run_id`) is reopened, keeping its
    training-length duration; without it (trained elsewhere), a new nested run gets `params`
    and, for a Keras `model`, the model itself. Metrics are linked to the logged model.
    """
    if not is_tracking() or "skipped" in evaluation:
        return
    name = f"{evaluation['task']}.{evaluation['architecture']}"
    run_id = existing_run(evaluation.get("mlflow_run_id"))
    tags = {"task": evaluation["task"], "architecture": evaluation["architecture"]}
    context = reopened_run(run_id) if run_id else model_run(name, tags, params or tags)
    with context as active_id:
        model_uri = evaluation.get("model_uri") if run_id else None
        if not model_uri and model is not None:
            model_uri = log_keras_model(model, name, evaluation.get("weights_source", "random"))
        model_id = (
            model_uri.removeprefix("models:/")
            if model_uri and model_uri.startswith("models:/m-")
            else None
        )
        metrics, static = split_evaluation(evaluation)
        known = MlflowClient().get_run(active_id).data.params
        mlflow.log_params({k: v for k, v in static.items() if k not in known})
        mlflow.log_metrics(metrics, model_id=model_id)
        mlflow.log_dict(_plain(evaluation), "evaluation.json")  # every number, per class too
        mlflow.set_tags(
            {NOTE_TAG: model_note(evaluation), **({"model_uri": model_uri} if model_uri else {})}
        )


def tag_fold_runs(evaluations: Iterable[Mapping[str, Any]], fold: str) -> None:
    """Name each model's nested run of this fold `<fold>.<task>.<arch>` and tag it with the
    fold, so that MLflow tells the k runs of one model apart. No-op without a run."""
    if not is_tracking():
        return
    client = MlflowClient()
    for evaluation in evaluations:
        run_id = evaluation.get("mlflow_run_id")
        if not run_id:
            continue
        try:
            client.set_tag(run_id, "fold", fold)
            client.set_tag(run_id, "cv", "true")
            client.set_tag(
                run_id,
                "mlflow.runName",
                f"{fold}.{evaluation['task']}.{evaluation['architecture']}",
            )
        except MlflowException as error:
            logger.warning("Could not tag MLflow run %s with its fold: %s", run_id, error)


def existing_run(run_id: str | None) -> str | None:
    """`run_id` when the current tracking store knows it (a summary can come from another store)."""
    if not run_id:
        return None
    try:
        MlflowClient().get_run(run_id)
    except MlflowException:
        logger.warning(
            "MLflow run %s (from the training summary) is not in this tracking store; "
            "the evaluation gets a new nested run",
            run_id,
        )
        return None
    return run_id


@contextmanager
def reopened_run(run_id: str) -> Iterator[str]:
    """Re-enter a finished nested run to add to it; afterwards its status and end time are put
    back, so its duration stays what it was (the training time), not 'until the evaluation'."""
    client = MlflowClient()
    info = client.get_run(run_id).info
    with mlflow.start_run(run_id=run_id, nested=True):
        yield run_id
    client.set_terminated(run_id, status=info.status, end_time=info.end_time)


@contextmanager
def within(run_id: str | None) -> Iterator[str | None]:
    """Inside the nested run `run_id` (reopened, its duration kept) for the block, or in the
    active run where `run_id` is None."""
    if run_id is None:
        yield None
        return
    with reopened_run(run_id):
        yield run_id


def set_tags(tags: Mapping[str, Any]) -> None:
    """Tags on the active run; no-op without one."""
    if is_tracking():
        mlflow.set_tags({k: str(v) for k, v in tags.items()})


def runner_name(runner: Any) -> str:
    """`SequentialRunner` for a runner, its class or the repr Kedro puts in `run_params`."""
    if runner is None:
        return ""
    if not isinstance(runner, str):
        return runner.__name__ if isinstance(runner, type) else type(runner).__name__
    match = re.match(r"<(?:[\w.]*\.)?(\w+) object at 0x[0-9a-fA-F]+>$", runner.strip())
    return match.group(1) if match else runner.rsplit(".", 1)[-1]


def git_state(project_path: str | Path | None) -> dict[str, str]:
    """The commit checked out in `project_path` and whether files differ from it ({} outside git)."""

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=project_path, capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        return {}
    return {
        "git_commit": commit,
        "git_dirty": str(dirty).lower(),
        "mlflow.source.git.commit": commit,
    }  # MLflow's own column in the runs table


def run_tags(
    run_params: Mapping[str, Any],
    default_env: str = "local",
    git: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Tags a person can read in the runs table: runner class, configuration env, git commit.

    `git`: the commit read earlier (`git_state`), e.g. before `project_path` was redacted;
    without it, the commit is read from `run_params["project_path"]`.
    """
    tags = {
        "runner": runner_name(run_params.get("runner")) or "SequentialRunner",
        "config_env": str(run_params.get("env") or default_env),
    }
    tags.update(git if git is not None else git_state(run_params.get("project_path")))
    return tags


def run_name(run_params: Mapping[str, Any], now: datetime | None = None) -> str:
    """What the run is: `study · local · 2026-12-06 04:30 UTC` for `kedro run`, the pipeline's
    name otherwise (`cv · test · ...`), instead of kedro-mlflow's `__default__`."""
    names = run_params.get("pipeline_names") or run_params.get("pipeline_name") or []
    names = [names] if isinstance(names, str) else list(names)
    pipeline = "+".join("study" if n == "__default__" else n for n in names) or "study"
    env = run_params.get("env") or "local"
    stamp = (now or datetime.now(UTC)).strftime("%Y-%m-%d %H:%M UTC")
    return f"{pipeline} · {env} · {stamp}"


def tag_run(tags: Mapping[str, str]) -> None:
    """Tags on the active run (the run name among them), and the experiment described."""
    mlflow.set_tags(dict(tags))
    describe_experiment(mlflow.active_run().info.experiment_id)


EXPERIMENT_KIND_TAG = "mlflow.experimentKind"  # MLflow 3 UI: which view the experiment opens in
EXPERIMENT_KIND = "custom_model_development"  # model training (runs, charts), not GenAI traces
EXPERIMENT_NOTE = (
    "**ssc-skin**: screening of systemic sclerosis in stained skin-biopsy images "
    "(normal vs SSc; normal / early / late), reproducing Akay et al. 2021 with patient-level "
    "evaluation.\n\n"
    "- One parent run per `kedro run`, named `<pipeline> · <env> · <date>`: the study's "
    "headline numbers per model, the report and the node times "
    "(`timing/node_seconds.json`). Open the report as `report.html` (`cv/report.html` in the "
    "default, cross-validated run): its figures are embedded; `report.md` beside it is the "
    "same text, whose images MLflow's artifact view cannot load.\n"
    "- One nested run per task x architecture (e.g. `binary.mobilenetv2`), lasting its "
    "training: per-epoch curves in `train/` and `val/`, test metrics in `test/`, sizes and "
    "settings as parameters, the trained model.\n"
    "- Registered models `ssc-skin-binary` and `ssc-skin-three-class`: alias `champion` is "
    "the model chosen on validation patients; each version links to the nested run that "
    "trained it."
)


def describe_experiment(experiment_id: str, note: str = EXPERIMENT_NOTE) -> None:
    """Give the experiment a description and the model-training kind, unless someone already
    set them (a description edited in the UI stays)."""
    client = MlflowClient()
    tags = client.get_experiment(experiment_id).tags
    if NOTE_TAG not in tags:
        client.set_experiment_tag(experiment_id, NOTE_TAG, note)
    if EXPERIMENT_KIND_TAG not in tags:
        client.set_experiment_tag(experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)


def log_node_seconds(
    node_seconds: Mapping[str, float],
    pipeline_seconds: float,
    timeline: Mapping[str, Any] | None = None,
) -> None:
    """Every node's wall time so far as one artifact, and the run's time as one metric (not a
    chart per node); `timeline` (node: [start, end, worker]) as a second artifact. No-op
    without an active run."""
    if not is_tracking():
        return
    mlflow.log_dict(dict(node_seconds), "timing/node_seconds.json")
    if timeline is not None:
        mlflow.log_dict(dict(timeline), "timing/node_timeline.json")
    mlflow.log_metric("time/pipeline_seconds", pipeline_seconds)


def fmt(value: Any, digits: int = 3) -> str:
    """A metric for a description: fixed digits, `n/a` for missing or NaN."""
    if not isinstance(value, int | float) or math.isnan(value):
        return "n/a"
    return f"{value:.{digits}f}"


def model_note(evaluation: Mapping[str, Any]) -> str:
    """A nested run's description (Markdown): its headline numbers."""
    e = evaluation
    return (
        f"**{e['task']}.{e['architecture']}**: test patient accuracy "
        f"{fmt(e.get('test_patient_accuracy'))} "
        f"[{fmt(e.get('test_patient_accuracy_ci_low'))}, "
        f"{fmt(e.get('test_patient_accuracy_ci_high'))}] over "
        f"{e.get('test_patients', 'n/a')} test patients, balanced accuracy "
        f"{fmt(e.get('test_patient_balanced_accuracy'))}, AUC "
        f"{fmt(e.get('test_patient_auc'))}; validation patient balanced accuracy "
        f"{fmt(e.get('val_patient_balanced_accuracy'))}. Trained "
        f"{fmt(e.get('train_seconds'), 1)} s, {e.get('epochs_run', 'n/a')} epochs, "
        f"weights: {e.get('weights_source', 'random')}."
    )


def parent_run_tags(run_id: str | None) -> dict[str, str]:
    """The tags of `run_id`'s parent run, where export records its whole-image predictors
    (found through the nested run, so this works from another session too); {} if unknown."""
    if not run_id:
        return {}
    client = MlflowClient()
    try:
        parent = client.get_run(run_id).data.tags.get("mlflow.parentRunId")
        return dict(client.get_run(parent).data.tags) if parent else {}
    except MlflowException:
        return {}


HEADLINE = (  # the parent run's charts: per model, the numbers the report's headline shows
    "test_patient_accuracy",
    "test_patient_balanced_accuracy",
    "test_patient_auc",
    "val_patient_balanced_accuracy",
    "train_seconds",
)


def headline_metrics(evaluations: Iterable[Mapping[str, Any]]) -> dict[str, float]:
    """`<task>.<arch>/<metric>` for the study's headline numbers of every model that ran: one
    chart section per model in the parent run, instead of every number of every model."""
    out = {}
    for e in evaluations:
        if "skipped" in e:
            continue
        for key in HEADLINE:
            value = e.get(key)
            if (
                isinstance(value, int | float)
                and not isinstance(value, bool)
                and math.isfinite(value)
            ):
                out[f"{e['task']}.{e['architecture']}/{key}"] = float(value)
    return out


def log_headline(evaluations: Iterable[Mapping[str, Any]], note: str | None = None) -> None:
    """The study's headline numbers (and description) on the active (parent) run."""
    if not is_tracking():
        return
    mlflow.log_metrics(headline_metrics(evaluations))
    if note is not None:
        mlflow.set_tag(NOTE_TAG, note)


def active_run_tags() -> dict[str, str]:
    """The active run's tags ({} without one)."""
    run = mlflow.active_run()
    return dict(MlflowClient().get_run(run.info.run_id).data.tags) if run else {}


def register_model(
    uri: str,
    name: str,
    alias: str,
    score: float,
    metric: str,
    tags: Mapping[str, str],
    description: str,
    promote: str = "if_better",
    model_description: str | None = None,
    model_tags: Mapping[str, str] | None = None,
) -> tuple[str, str]:
    """Register `uri` as a new version of `name`; returns (its version, the alias's version).

    `promote`: `always` moves `alias` to the new version; `if_better` only when `score` (the
    value of `metric`, recorded on each version) is at least the current alias holder's, so
    a quick test run on a shared server does not replace a good model. The registered model
    gets `model_description` and `model_tags` (what it is, how to call it); the version
    `description` and `tags` (why this one). A `models:/m-...` URI links the version to the
    run that logged the model.
    """
    if promote not in {"always", "if_better"}:
        raise ValueError(f"registry.promote must be one of always, if_better; got {promote!r}")
    client = MlflowClient()
    version = mlflow.register_model(uri, name, tags={k: str(v) for k, v in tags.items()}).version
    client.update_model_version(name, version, description=description)
    if model_description:
        client.update_registered_model(name, description=model_description)
    for key, value in (model_tags or {}).items():
        client.set_registered_model_tag(name, key, str(value))
    current = _alias_holder(client, name, alias)
    if promote == "if_better" and current is not None:
        held = _float(current.tags.get(metric))
        if held is not None and score < held:
            logger.info(
                "%s: alias %s stays on v%s (%s %.3f > %.3f of v%s)",
                name,
                alias,
                current.version,
                metric,
                held,
                score,
                version,
            )
            return str(version), str(current.version)
    client.set_registered_model_alias(name, alias, version)
    return str(version), str(version)


def _plain(value: Any) -> Any:
    """`value` with NaN/inf as None and numpy scalars as Python numbers: valid JSON."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, str):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _alias_holder(client: MlflowClient, name: str, alias: str) -> Any:
    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None


def _float(text: str | None) -> float | None:
    try:
        return float(text) if text is not None else None
    except ValueError:
        return None
