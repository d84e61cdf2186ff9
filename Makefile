# Two commands: `make run` (set up + the whole study on the synthetic cohort), `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export KEDRO_DISABLE_TELEMETRY := 1

.PHONY: install run test lint viz mlflow mlflow-server airflow-dag screenshots

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $@

install: $(VENV)/.installed

run: install
	$(BIN)/kedro run

test: install
	$(BIN)/python -m pytest

lint: install
	$(BIN)/ruff check src tests

viz: install
	$(BIN)/kedro viz build

mlflow: install
	$(BIN)/mlflow ui --backend-store-uri sqlite:///mlflow.db --port 5000

# Team tracking server: PostgreSQL (a cluster in .mlflow-server/) + MLflow with proxied artifacts
# on http://127.0.0.1:5000; then `kedro run --env server`. Settings: see the script's header.
mlflow-server: install
	bash scripts/mlflow_server.sh

# An Apache Airflow DAG with one task per top-level namespace (airflow_dags/ssc_skin_dag.py)
airflow-dag: install
	$(BIN)/kedro airflow create --group-by namespace --target-dir airflow_dags/

# docs/*.png from `kedro viz run` and `mlflow ui` in headless Chromium (needs a finished run)
screenshots: install
	bash scripts/screenshots.sh
