"""Nodes of the `registry` pipeline: per task the champion model, registered with an alias."""

from __future__ import annotations

import logging
import math
from typing import Any

from ssc_skin import tracking

logger = logging.getLogger(__name__)

PREDICTOR_TAG = "{task}.{arch}.whole_image_predictor_uri"  # set by the export pipeline
FALLBACK_ARCHITECTURE = "mobilenetv2"  # the one architecture export logs a predictor for today


def rank_key(evaluation: dict[str, Any], rank_by: list[str]) -> tuple[float, ...]:
    """Sort key: the `rank_by` metrics in order; a missing or NaN metric ranks lowest."""

    def value(name: str) -> float:
        v = evaluation.get(name)
        return float(v) if isinstance(v, int | float) and not math.isnan(v) else -math.inf

    return tuple(value(name) for name in rank_by)


def pick_champions(
    evaluations: list[dict[str, Any]], rank_by: list[str]
) -> dict[str, dict[str, Any]]:
    """Per task, the evaluation that ranks highest (skipped models are not candidates; on a
    tie the first architecture in pipeline order wins, deterministically)."""
    champions: dict[str, dict[str, Any]] = {}
    for evaluation in evaluations:
        if "skipped" in evaluation:
            continue
        best = champions.get(evaluation["task"])
        if best is None or rank_key(evaluation, rank_by) > rank_key(best, rank_by):
            champions[evaluation["task"]] = evaluation
    return champions


def choose_model(champion: dict[str, Any], run_tags: dict[str, str]) -> tuple[str, str, str]:
    """(model URI, what it is, why) to register for a task's champion.

    A served model must take whole images, so the champion's whole-image predictor comes
    first (export logs one for every model); where it is missing (export.log_predictor off for
    it, an older run), that of the same task's MobileNetV2; last, the champion's Keras patch
    classifier (which takes patches, not images).
    """
    task, arch = champion["task"], champion["architecture"]
    own = run_tags.get(PREDICTOR_TAG.format(task=task, arch=arch))
    if own:
        return own, f"{task}.{arch} whole-image predictor", "the champion's whole-image predictor"
    fallback = run_tags.get(PREDICTOR_TAG.format(task=task, arch=FALLBACK_ARCHITECTURE))
    if fallback:
        return (
            fallback,
            f"{task}.{FALLBACK_ARCHITECTURE} whole-image predictor",
            f"the champion {task}.{arch} has no whole-image predictor in this run, so "
            f"{task}.{FALLBACK_ARCHITECTURE}'s is registered in its place",
        )
    if champion.get("model_uri"):
        return (
            champion["model_uri"],
            f"{task}.{arch} Keras patch classifier",
            "no whole-image predictor was logged (export not run or export.log_predictor "
            f"false): the Keras model is registered; it classifies "
            f"{champion.get('input_size', '?')} px patches, not whole images",
        )
    return "", "", f"{task}.{arch} has neither a whole-image predictor nor a logged model"


def run_note(
    champions: dict[str, dict[str, Any]],
    evaluations: list[dict[str, Any]],
    registered: dict[str, dict[str, Any]],
    rank_by: list[str],
) -> str:
    """The parent run's description (Markdown): every model's headline numbers, the champions."""
    lines = [
        f"| model | {rank_by[0]} | test patient accuracy [95% CI] | test patient AUC "
        "| train s | epochs |",
        "|---|---|---|---|---|---|",
    ]
    for e in evaluations:
        name = f"{e['task']}.{e['architecture']}"
        if "skipped" in e:
            lines.append(f"| {name} | skipped: {e['skipped']} | | | | |")
            continue
        star = " (champion)" if champions.get(e["task"]) is e else ""
        lines.append(
            f"| {name}{star} | {tracking.fmt(e.get(rank_by[0]))} | {tracking.fmt(e.get('test_patient_accuracy'))} "
            f"[{tracking.fmt(e.get('test_patient_accuracy_ci_low'))}, "
            f"{tracking.fmt(e.get('test_patient_accuracy_ci_high'))}] | "
            f"{tracking.fmt(e.get('test_patient_auc'))} | {tracking.fmt(e.get('train_seconds'), 1)} | "
            f"{e.get('epochs_run', '')} |"
        )
    for task, r in registered.items():
        lines.append("")
        lines.append(
            f"**{task}**: {r['model_name']} v{r['version']} = {r['registered']}"
            f" ({r['reason']}); alias `{r['alias']}` -> v{r['alias_version']}."
        )
    return "\n".join(lines)


def model_description(
    name: str, task: str, classes: list[str], alias: str, rank_by: list[str]
) -> str:
    """The registered model's description (Markdown): what it takes, what it answers, how the
    alias is chosen, how to serve it."""
    return (
        f"**{name}**: screening of stained skin-biopsy images for systemic sclerosis, "
        f"task `{task}` ({', '.join(classes)}).\n\n"
        "Input: a table with one column `image`, each row a whole image as base64 PNG/JPEG. "
        "Output per image: `label`, one `probability_<class>` per class (the mean over the "
        "image's tissue patches, the training run's preprocessing applied), `n_patches`, "
        "`selection` and `low_confidence`.\n\n"
        f"Alias `{alias}`: the version ranked highest on validation patients by "
        f"{', then '.join(rank_by)} (test patients never choose a model). Each version links "
        "to the nested run that trained it; its description has the test numbers.\n\n"
        f"Serve: `mlflow models serve -m models:/{name}@{alias} --env-manager local -p 5001`"
    )


def version_description(champion: dict[str, Any], what: str, reason: str) -> str:
    """A version's description: its headline numbers, what was registered and why."""
    return f"{tracking.model_note(champion)}\n\nRegistered: {what} ({reason})."


def register_champions(
    params: dict[str, Any], *inputs: dict[str, Any]
) -> dict[str, dict[str, Any]]:
    """Register each task's champion (best validation patients) in the MLflow Model Registry
    as `params.model_names[task]` (described, tagged, the version linked to the nested run that
    trained it), move `params.alias` to it (policy `params.promote`), and put the study's
    headline numbers on the parent run: its description and one chart section per model
    (`<task>.<arch>/test_patient_accuracy`, ...). No-op without an active run.

    `inputs`: every model's evaluation, then the whole-image predictor the export stage
    logged for it (same order): reading them makes the registry wait for the export.
    """
    evaluations, predictors = inputs[: len(inputs) // 2], inputs[len(inputs) // 2 :]
    if not tracking.is_tracking():
        return {}
    run_tags = tracking.active_run_tags()
    logged = {
        f"{e['task']}.{e['architecture']}": p.get("uri")
        for e, p in zip(evaluations, predictors, strict=True)
        if p
    }
    trained_in = {p["uri"]: p.get("run_id") for p in predictors if p and p.get("uri")}
    rank_by = list(params["rank_by"])
    champions = pick_champions(list(evaluations), rank_by)
    registered: dict[str, dict[str, Any]] = {}
    for task, champion in champions.items():
        entry = _register(task, champion, params, logged, trained_in, run_tags)
        if entry:
            registered[task] = entry
    tracking.log_headline(evaluations, run_note(champions, list(evaluations), registered, rank_by))
    return registered


def _register(
    task: str,
    champion: dict[str, Any],
    params: dict[str, Any],
    logged: dict[str, str | None],
    trained_in: dict[str, str | None],
    run_tags: dict[str, str],
) -> dict[str, Any] | None:
    """Register one task's champion: its version (tagged, described, linked to the nested run
    that trained it) and the alias per `params.promote`; None when nothing can be registered."""
    rank_by = list(params["rank_by"])
    name = params["model_names"][task]
    tags = dict(tracking.parent_run_tags(champion.get("mlflow_run_id")) or run_tags)
    for model, uri in logged.items():  # what the export stage returned wins over tags
        if uri:
            tags[PREDICTOR_TAG.format(task=model.split(".")[0], arch=model.split(".")[1])] = uri
    uri, what, reason = choose_model(champion, tags)
    if not uri:
        logger.warning("%s: nothing registered: %s", name, reason)
        return None
    rank = rank_key(champion, rank_by)
    version_tags = {
        "task": task,
        "champion": f"{task}.{champion['architecture']}",
        "registered": what,
        "reason": reason,
        # the run that trained what is registered (export logged the predictor there)
        "nested_run_id": trained_in.get(uri) or champion.get("mlflow_run_id") or "",
        **{m: f"{v:.6g}" for m, v in zip(rank_by, rank, strict=True)},
    }
    version, alias_version = tracking.register_model(
        uri,
        name,
        params["alias"],
        rank[0],
        rank_by[0],
        version_tags,
        version_description(champion, what, reason),
        promote=params.get("promote", "if_better"),
        model_description=model_description(
            name, task, list(champion.get("classes", [])), params["alias"], rank_by
        ),
        model_tags={
            "project": "ssc-skin",
            "task": task,
            "input": "image (base64 PNG/JPEG)",
            "alias_chosen_by": ", ".join(rank_by),
        },
    )
    entry = {
        "model_name": name,
        "version": version,
        "alias": params["alias"],
        "alias_version": alias_version,
        "registered": what,
        "reason": reason,
        "uri": uri,
        **version_tags,
    }
    logger.info(
        "%s v%s registered: %s, %s %.3f (%s); alias %s -> v%s",
        name,
        version,
        what,
        rank_by[0],
        rank[0],
        reason,
        params["alias"],
        alias_version,
    )
    return entry
