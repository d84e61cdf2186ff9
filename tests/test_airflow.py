"""Orchestrator: the default pipeline rendered as an Apache Airflow DAG by kedro-airflow.

`kedro airflow create --group-by namespace` makes one Airflow task per top-level namespace
(each cross-validation fold `fold_k` with everything fitted in it, the pooled `cv` results, and
`binary`, `three_class`: the final fit of each task's models, their export) and one per node
outside a namespace. Airflow itself is not needed to render the DAG; here the DAG file runs
against a stand-in `airflow.sdk` that records its tasks and their order.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import pytest
from slugify import slugify

from tests.helpers import copy_project, kedro

pytest.importorskip("kedro_airflow")


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    return copy_project(tmp_path_factory.mktemp("project"))


@pytest.fixture(scope="module")
def pipeline_groups(project) -> dict:
    """The default pipeline's namespace groups, and the datasets passed between groups with
    their catalog type, from a fresh interpreter in the project copy."""
    script = textwrap.dedent("""
        import json, logging, sys
        from pathlib import Path
        logging.disable(logging.CRITICAL)
        from kedro.framework.session import KedroSession
        from kedro.framework.startup import bootstrap_project
        bootstrap_project(Path.cwd())
        from kedro.framework.project import pipelines
        pipe = pipelines["__default__"]
        with KedroSession.create(project_path=Path.cwd()) as session:
            catalog = session.load_context().catalog
        groups = pipe.group_nodes_by("namespace")
        owner = {n: g.name for g in groups for n in g.nodes}
        made_by = {out: owner[n.name] for n in pipe.nodes for out in n.outputs}
        crossing = {}
        for n in pipe.nodes:
            for name in n.inputs:
                if name in made_by and made_by[name] != owner[n.name]:
                    dataset = catalog.get(name)
                    crossing[name] = type(dataset).__name__ if dataset is not None else None
        namespaces = sorted({n.namespace.split(".")[0] for n in pipe.nodes if n.namespace})
        print("RESULT " + json.dumps({
            "groups": {g.name: {"type": g.type, "dependencies": list(g.dependencies)}
                       for g in groups},
            "namespaces": namespaces, "crossing": crossing}))
    """)
    completed = subprocess.run(
        [sys.executable, "-c", script],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        env={**os.environ, "KEDRO_DISABLE_TELEMETRY": "1"},
    )
    lines = [line for line in completed.stdout.splitlines() if line.startswith("RESULT ")]
    assert completed.returncode == 0 and lines, completed.stderr[-4000:]
    return json.loads(lines[-1].removeprefix("RESULT "))


@pytest.fixture(scope="module")
def dag_file(project, tmp_path_factory) -> Path:
    target = tmp_path_factory.mktemp("dags")
    result = kedro(
        project,
        "airflow",
        "create",
        "--group-by",
        "namespace",
        "--target-dir",
        str(target),
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return target / "ssc_skin_dag.py"


class _Recorder:
    """A stand-in for `airflow.sdk`: `@dag` and `@task` record the tasks and `>>` edges."""

    def __init__(self) -> None:
        self.dags: list[dict] = []
        self.tasks: dict[str, types.FunctionType] = {}
        self.edges: set[tuple[str, str]] = set()

    def module(self) -> types.ModuleType:
        recorder, sdk = self, types.ModuleType("airflow.sdk")

        class Ref:
            def __init__(self, task_id: str) -> None:
                self.task_id = task_id

            def __rshift__(self, other: Ref) -> Ref:
                recorder.edges.add((self.task_id, other.task_id))
                return other

        def task(task_id: str):
            def wrap(fn):
                recorder.tasks[task_id] = fn
                return lambda: Ref(task_id)

            return wrap

        def dag(**kwargs):
            def wrap(fn):
                def build():
                    recorder.dags.append(kwargs)
                    fn()

                return build

            return wrap

        sdk.dag, sdk.task = dag, task
        return sdk


@pytest.fixture(scope="module")
def rendered(dag_file):
    recorder = _Recorder()
    airflow = types.ModuleType("airflow")
    airflow.sdk = recorder.module()
    saved = {k: sys.modules.get(k) for k in ("airflow", "airflow.sdk")}
    sys.modules.update({"airflow": airflow, "airflow.sdk": airflow.sdk})
    try:
        namespace: dict = {"__name__": "ssc_skin_dag"}
        exec(compile(dag_file.read_text(), str(dag_file), "exec"), namespace)  # noqa: S102
    finally:
        for key, module in saved.items():
            if module is None:
                sys.modules.pop(key, None)
            else:
                sys.modules[key] = module
    calls = {}
    for task_id, fn in recorder.tasks.items():  # what each task asks Kedro to run
        namespace["_run_kedro_node"] = lambda _id=task_id, **kwargs: calls.__setitem__(_id, kwargs)
        fn()
    return recorder, calls


def test_the_dag_has_one_task_per_namespace_and_per_node_outside_them(rendered, pipeline_groups):
    recorder, calls = rendered
    assert [d["dag_id"] for d in recorder.dags] == ["ssc-skin"]
    folds = [f"fold_{k}" for k in range(5)]
    assert pipeline_groups["namespaces"] == sorted(["binary", "three_class", "cv", *folds])
    expected = {slugify(name) for name in pipeline_groups["groups"]}
    assert set(recorder.tasks) == expected
    for namespace in pipeline_groups["namespaces"]:
        assert calls[slugify(namespace)] == {"namespaces": [namespace]}
    assert calls["register-champions"] == {"node_names": ["register_champions"]}


def test_the_dag_orders_tasks_as_the_pipeline_does(rendered, pipeline_groups):
    recorder, _ = rendered
    expected = {
        (slugify(dep), slugify(name))
        for name, group in pipeline_groups["groups"].items()
        for dep in group["dependencies"]
    }
    assert recorder.edges == expected
    for task in ("binary", "three-class"):  # models are registered after they are evaluated
        assert (task, "register-champions") in recorder.edges


def test_tasks_pass_data_only_through_catalog_datasets(pipeline_groups):
    """Each Airflow task is a separate `kedro run`: what one hands to the next must be
    persisted by the catalog, never an in-memory dataset."""
    in_memory = {
        name: kind
        for name, kind in pipeline_groups["crossing"].items()
        if kind is None or "Memory" in kind
    }
    assert not in_memory, f"passed between Airflow tasks in memory: {sorted(in_memory)}"
