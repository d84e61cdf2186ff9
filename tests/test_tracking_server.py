"""Team tracking: `kedro run --env test` against a real MLflow server on PostgreSQL.

The server is started the way the README says (`scripts/mlflow_server.sh`, which `make
mlflow-server` runs), on free ports, with its database cluster and artifact store in a
throwaway folder; the run is then read back through the MLflow client only.
"""

from __future__ import annotations

import glob
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import mlflow
import mlflow.pyfunc
import pytest
from mlflow import MlflowClient

from tests.helpers import PROJECT, copy_project, kedro, tracking_uri

pytestmark = pytest.mark.e2e
logger = logging.getLogger(__name__)

MODELS = ("binary.mobilenetv2", "binary.cnn", "three_class.mobilenetv2", "three_class.cnn")
# the champion is chosen among every evaluated model: the peer and the hybrid included
CANDIDATES = (
    *MODELS,
    *(f"{t}.{a}" for t in ("binary", "three_class") for a in ("texture", "hybrid")),
)
PG_BINS = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[-2]))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for(url: str, process: subprocess.Popen, log: Path, seconds: float = 180) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(
                f"the tracking server exited ({process.returncode}):\n" + log.read_text()[-4000:]
            )
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(1)
    pytest.fail(f"no answer from {url} in {seconds:.0f} s:\n" + log.read_text()[-4000:])


def _stop(process: subprocess.Popen, state: Path) -> None:
    """SIGTERM to the script (it stops MLflow, then PostgreSQL); force only what is left."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
    pgdata = state / "postgres"
    if (pgdata / "postmaster.pid").exists():  # the script could not stop it: do it here
        command = [f"{PG_BINS[-1]}/pg_ctl", "-D", str(pgdata), "-m", "immediate", "stop"]
        if os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        subprocess.run(command, check=False, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def server():
    if not PG_BINS:
        message = "PostgreSQL server binaries (initdb, pg_ctl) are not installed"
        if os.environ.get("CI"):
            pytest.fail(message + ": .ci/run installs them")
        pytest.skip(message)
    # not under pytest's tmp_path: as root the script runs PostgreSQL as `postgres`, which
    # must be able to enter every parent folder
    state = Path(tempfile.mkdtemp(prefix="ssc-mlflow-server-", dir="/tmp"))
    state.chmod(0o755)
    port, pg_port = _free_port(), _free_port()
    log = state / "server.log"
    env = {
        **os.environ,
        "SERVER_DIR": str(state),
        "MLFLOW_PORT": str(port),
        "PG_PORT": str(pg_port),
        "MLFLOW": str(Path(sys.executable).parent / "mlflow"),
        "PG_BIN": PG_BINS[-1],
    }
    with log.open("w") as out:
        process = subprocess.Popen(
            ["bash", str(PROJECT / "scripts/mlflow_server.sh")],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        url = f"http://127.0.0.1:{port}"
        _wait_for(f"{url}/health", process, log)
        yield url, state
    finally:
        _stop(process, state)
        shutil.rmtree(state, ignore_errors=True)


@pytest.fixture(scope="module")
def tracked_run(server, tmp_path_factory):
    url, state = server
    project = copy_project(tmp_path_factory.mktemp("project"))
    # `--env test` with the server environment's tracking settings, on this server's port
    config = (PROJECT / "conf/server/mlflow.yml").read_text()
    assert "http://127.0.0.1:5000" in config
    (project / "conf/test/mlflow.yml").write_text(config.replace("http://127.0.0.1:5000", url))
    # the single-split study: the server's bookkeeping, without the folds' extra minutes
    result = kedro(project, "run", "--env", "test", "--pipeline", "single_split", timeout=1800)
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-5000:]
    client = MlflowClient(tracking_uri=url, registry_uri=url)
    experiment = client.get_experiment_by_name("ssc_skin")
    runs = client.search_runs([experiment.experiment_id])
    return client, runs, project, state, url


def test_the_run_lands_in_the_server_not_in_a_local_store(tracked_run):
    client, runs, project, state, _ = tracked_run
    assert not (project / "mlflow.db").exists() and not (project / "mlruns").exists()
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    run = parents[0]
    assert "binary.cnn/test_patient_accuracy" in run.data.metrics
    assert run.data.tags["runner"] == "FoldParallelRunner" and run.data.tags["config_env"] == "test"
    # artifacts go through the server (proxied) into its own store
    assert run.info.artifact_uri.startswith("mlflow-artifacts:")
    report = Path(
        client.download_artifacts(run.info.run_id, "report.md", str(project / "downloaded"))
    )
    assert report.read_text().startswith("# ssc-skin study report")
    assert list((state / "artifacts").rglob("report.md"))


def test_each_nested_run_spans_its_training_and_holds_per_epoch_history(tracked_run):
    client, runs, *_ = tracked_run
    children = {r.info.run_name: r for r in runs if "mlflow.parentRunId" in r.data.tags}
    assert set(MODELS) <= set(children)  # (the colour + texture peers have runs of their own)
    for name in MODELS:
        run = children[name]
        seconds = run.data.metrics["train/seconds"]
        duration = (run.info.end_time - run.info.start_time) / 1000
        logger.info("%s: nested run %.1f s, training %.1f s", name, duration, seconds)
        assert duration >= seconds, name
        epochs = int(run.data.params["epochs_run"])
        history = client.get_metric_history(run.info.run_id, "val/accuracy")
        assert [m.step for m in history] == list(range(epochs)), name
        model = client.get_logged_model(run.data.tags["model_uri"].removeprefix("models:/"))
        assert model.name == name.replace(".", "_")
        assert "test patient accuracy" in run.data.tags["mlflow.note.content"]


def test_both_tasks_champions_are_registered_with_their_alias(tracked_run):
    client, runs, project, _, url = tracked_run
    parent = next(r for r in runs if "mlflow.parentRunId" not in r.data.tags)
    for name in ("ssc-skin-binary", "ssc-skin-three-class"):
        version = client.get_model_version_by_alias(name, "champion")
        assert version.tags["champion"] in CANDIDATES and version.tags["reason"]
        logger.info(
            "%s v%s: %s (%s)",
            name,
            version.version,
            version.tags["registered"],
            version.tags["reason"],
        )
    assert "(champion)" in parent.data.tags["mlflow.note.content"]
    binary = client.get_model_version_by_alias("ssc-skin-binary", "champion")
    assert binary.tags["registered"].startswith(binary.tags["champion"])  # its own predictor
    assert binary.run_id == binary.tags["nested_run_id"]  # the nested run that trained it
    assert client.get_registered_model("ssc-skin-binary").description
    with tracking_uri(url):  # what `mlflow models serve -m models:/...@champion` loads
        model = mlflow.pyfunc.load_model("models:/ssc-skin-binary@champion")
    assert model.metadata.flavors.keys() >= {"python_function"}
