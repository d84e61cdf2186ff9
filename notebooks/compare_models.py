# %% [markdown]
# # Compare MobileNetV2 and the baseline CNN across runs
#
# Reads the nested per-model runs that `kedro run` logs to MLflow and plots test patient-level
# accuracy with its 95% bootstrap interval for every task x architecture of the latest run.
# Open as a notebook with Jupytext (percent format), or run as a script:
#
#     .venv/bin/python notebooks/compare_models.py [--tracking-uri sqlite:///mlflow.db]

# %%
from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import mlflow  # noqa: E402
import pandas as pd  # noqa: E402


# %%
def latest_model_runs(tracking_uri: str, experiment: str = "ssc_skin") -> pd.DataFrame:
    """The child runs (one per task x architecture) of the most recent `kedro run`."""
    mlflow.set_tracking_uri(tracking_uri)
    runs = mlflow.search_runs(experiment_names=[experiment], order_by=["start_time DESC"])
    if runs.empty:
        raise SystemExit(f"no runs in experiment {experiment!r} at {tracking_uri}")
    parent_column = "tags.mlflow.parentRunId"
    if parent_column not in runs:
        raise SystemExit("the latest run has no per-model child runs; rerun `kedro run`")
    parents = runs[runs[parent_column].isna()]
    latest = parents.iloc[0]["run_id"]
    return runs[runs[parent_column] == latest].sort_values("tags.mlflow.runName")


# %%
def plot_comparison(children: pd.DataFrame, metric: str = "test_patient_accuracy") -> plt.Figure:
    """Point estimate and bootstrap interval per model, the paper's targets as dashed lines."""
    names = children["tags.mlflow.runName"].tolist()
    value = children[f"metrics.{metric}"].to_numpy()
    low = children.get(f"metrics.{metric}_ci_low", pd.Series(value)).to_numpy()
    high = children.get(f"metrics.{metric}_ci_high", pd.Series(value)).to_numpy()
    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.errorbar(range(len(names)), value, yerr=[value - low, high - value], fmt="o", capsize=4)
    ax.axhline(0.952, ls="--", c="grey", lw=0.8, label="paper, binary MobileNetV2 (95.2%)")
    ax.axhline(0.948, ls=":", c="grey", lw=0.8, label="paper, 3-class MobileNetV2 (94.8%)")
    ax.set_xticks(range(len(names)), names, rotation=15)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel(metric.replace("_", " "))
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return fig


# %%
if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Plot the latest run's model comparison.")
    parser.add_argument("--tracking-uri", default="sqlite:///mlflow.db")
    parser.add_argument("--out", type=Path, default=Path("data/08_reporting/model_comparison.png"))
    args = parser.parse_args()
    children = latest_model_runs(args.tracking_uri)
    columns = [
        "tags.mlflow.runName",
        "metrics.test_patient_accuracy",
        "metrics.test_patient_auc",
        "metrics.train_seconds",
    ]
    print(children[[c for c in columns if c in children]].to_string(index=False))  # noqa: T201
    args.out.parent.mkdir(parents=True, exist_ok=True)
    plot_comparison(children).savefig(args.out, dpi=120)
