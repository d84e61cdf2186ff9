"""Which models a run trains (tasks x architectures) and how many cross-validation folds it
has: read from the run's Kedro configuration, never from a file in the working directory.

Kedro builds the pipelines once, from `register_pipelines()`; the namespaces (`binary.cnn`, ...)
and the `cv` folds must exist before any parameter reaches a node. So the grid comes from the
run's own config loader (the environment and `--params` included), which
`ModelGridHook.after_context_created` hands over before the session asks for its pipelines.
Without a session (`kedro viz`, `kedro registry list`), a loader over the project's `conf/`
with the base and local environments (or `KEDRO_ENV`) is used.

A configured model that the pipeline does not wire (for instance, pipelines built from another
environment's grid) stops the run before any node starts, naming the model.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kedro.framework.hooks import hook_impl

logger = logging.getLogger(__name__)

DEFAULT_FOLDS = 5
_ACTIVE: dict[str, Any] = {"grid": None}


class ModelGridError(ValueError):
    """The configured models or folds cannot be turned into pipelines."""


@dataclass(frozen=True)
class ModelGrid:
    """The configured tasks and architectures, in configuration order, and the CV folds."""

    tasks: tuple[str, ...]
    architectures: tuple[str, ...]
    folds: int = DEFAULT_FOLDS

    @property
    def namespaces(self) -> tuple[str, ...]:
        """Every task x architecture namespace, task by task."""
        return tuple(f"{t}.{a}" for t in self.tasks for a in self.architectures)

    @classmethod
    def from_parameters(cls, parameters: Mapping[str, Any]) -> ModelGrid:
        """The grid of `classification.tasks` x `classification.architectures`, `cv.folds`."""
        classification = parameters.get("classification")
        if not isinstance(classification, Mapping):
            raise ModelGridError("parameters: `classification` is missing or not a mapping")
        blocks = {}
        for key in ("tasks", "architectures"):
            block = classification.get(key)
            if not isinstance(block, Mapping) or not block:
                raise ModelGridError(
                    f"classification.{key}: expected a non-empty mapping of names to settings, "
                    f"got {type(block).__name__}"
                )
            for name, settings in block.items():
                if not isinstance(settings, Mapping):
                    raise ModelGridError(
                        f"classification.{key}.{name}: expected a mapping of settings"
                    )
                if "." in str(name):
                    raise ModelGridError(
                        f"classification.{key}.{name}: a name may not contain '.' (it becomes "
                        "a Kedro namespace)"
                    )
                if "name" in settings and str(settings["name"]) != str(name):
                    raise ModelGridError(
                        f"classification.{key}.{name}.name is {settings['name']!r}: it must be "
                        f"{name!r}, the entry's own key (runs, reports and registered models are "
                        "named by it; two entries with one name would overwrite each other)"
                        + (
                            f". To build another {settings['name']} variant, write `builder: "
                            f"{settings['name']}`"
                            if key == "architectures"
                            else ""
                        )
                    )
            blocks[key] = tuple(str(name) for name in block)
        return cls(blocks["tasks"], blocks["architectures"], _folds(parameters))


def _folds(parameters: Mapping[str, Any]) -> int:
    if "SSC_SKIN_CV_FOLDS" in os.environ:
        raise ModelGridError(
            "SSC_SKIN_CV_FOLDS is no longer read: set the parameter cv.folds instead "
            "(e.g. kedro run --pipeline cv --params cv.folds=10)"
        )
    cv = parameters.get("cv") or {}
    value = cv.get("folds", DEFAULT_FOLDS) if isinstance(cv, Mapping) else None
    if isinstance(value, bool) or not isinstance(value, int) or value < 2:
        raise ModelGridError(f"cv.folds must be an integer >= 2; got {value!r}")
    return value


def use(parameters: Mapping[str, Any]) -> ModelGrid:
    """Make the grid of these (the run's) parameters the one pipelines are built from."""
    grid = ModelGrid.from_parameters(parameters)
    _ACTIVE["grid"] = grid
    return grid


def active() -> ModelGrid:
    """The run's grid, or (no session yet) the one the project's configuration declares."""
    if _ACTIVE["grid"] is None:
        use(_project_parameters())
    return _ACTIVE["grid"]


def _project_parameters() -> Mapping[str, Any]:
    """Parameters of the base + run environment, as a session would load them."""
    from kedro.framework.project import settings  # noqa: PLC0415 - only without a session

    conf_source = Path.cwd() / settings.CONF_SOURCE
    if not (conf_source / "base").is_dir():
        conf_source = Path(__file__).resolve().parents[2] / settings.CONF_SOURCE
    args = dict(settings.CONFIG_LOADER_ARGS)
    loader = settings.CONFIG_LOADER_CLASS(
        conf_source=str(conf_source), env=os.environ.get("KEDRO_ENV"), **args
    )
    return loader["parameters"]


def unwired(grid: ModelGrid, node_names: set[str]) -> list[str]:
    """Configured models with no training node, in each scope (the study, or a CV fold
    `fold_k.`) of a pipeline that trains models at all."""
    trained = {
        n.removesuffix(".train_classifier") for n in node_names if n.endswith(".train_classifier")
    }
    scopes = {name.split(".", 1)[0] + "." if name.startswith("fold_") else "" for name in trained}
    expected = {scope + ns for scope in scopes for ns in grid.namespaces}
    return sorted(expected - trained)


# `kedro run` options that run part of a pipeline on purpose (`--to-outputs`, `--nodes`, ...)
RUN_FILTERS = (
    "tags",
    "from_nodes",
    "to_nodes",
    "node_names",
    "from_inputs",
    "to_outputs",
    "namespaces",
)


def unfiltered(run_params: dict[str, Any], pipeline: Any) -> Any:
    """The pipeline as registered: a run filtered on purpose (`--to-outputs
    cv.binary.cnn.evaluation`) leaves models out by design, so the registered pipelines it
    was cut from are the ones checked."""
    if not any(run_params.get(key) for key in RUN_FILTERS):
        return pipeline
    from kedro.framework.project import pipelines  # noqa: PLC0415

    names = run_params.get("pipeline_names") or ["__default__"]
    return sum((pipelines[name] for name in names), type(pipeline)([]))


class ModelGridHook:
    """Builds the pipelines from the run's configuration and refuses a run that would leave a
    configured model out."""

    @hook_impl
    def after_context_created(self, context: Any) -> None:
        previous = _ACTIVE["grid"]
        grid = use(context.config_loader["parameters"])
        if previous is not None and previous != grid:
            # Pipelines built from another configuration's grid (several sessions in one
            # process): have Kedro build them again from this one.
            from kedro.framework.project import pipelines  # noqa: PLC0415

            pipelines.configure(pipelines._pipelines_module)

    @hook_impl
    def before_pipeline_run(self, run_params: dict[str, Any], pipeline: Any) -> None:
        missing = unwired(active(), {n.name for n in unfiltered(run_params, pipeline).nodes})
        if missing:
            raise ModelGridError(
                "configured but not wired into the pipeline: "
                + ", ".join(missing)
                + " (the pipelines were built from another configuration)"
            )
