# %% [markdown]
# # Compare the models of the latest run
#
# Reads the nested per-model runs that `kedro run` logs to MLflow and plots, per task, each
# model's test patient-level accuracy with its 95% interval, beside the paper's MobileNetV2
# result for that task (binary 95.2 %, 3-class 94.8 %: each line only on its own task).
# Open it as a notebook with Jupytext (percent format; `jupytext` is in the `dev` extra):
#
#     .venv/bin/jupytext --to notebook notebooks/compare_models.py   # -> compare_models.ipynb
#
# or run it as a script; it prints the table and where it wrote the figure:
#
#     .venv/bin/python notebooks/compare_models.py [--tracking-uri sqlite:///mlflow.db]
#         [--out data/08_reporting/model_comparison.png]

# %%
from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import mlflow  # noqa: E402
import pandas as pd  # noqa: E402

PAPER = {"binary": 0.952, "three_class": 0.948}  # Akay et al. 2021, MobileNetV2 test accuracy
METRIC = "test/patient_accuracy"  # nested runs group metrics by split: test/, val/, train/


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
    children = runs[runs[parent_column] == latest]
    if f"metrics.{METRIC}" not in children:
        raise SystemExit(f"the latest run's models have no {METRIC!r}: an older run layout?")
    return children.sort_values("tags.mlflow.runName")


# %%
def plot_comparison(children: pd.DataFrame, metric: str = METRIC) -> plt.Figure:
    """One panel per task: each model's estimate and interval, the paper's line for that task."""
    tasks = sorted(children["params.task"].dropna().unique(), key=lambda t: (t != "binary", t))
    fig, axes = plt.subplots(1, len(tasks), figsize=(4.5 * len(tasks), 3.6), squeeze=False)
    for ax, task in zip(axes[0], tasks, strict=True):
        part = children[children["params.task"] == task].dropna(subset=[f"metrics.{metric}"])
        names = part["params.architecture"].tolist()
        value = part[f"metrics.{metric}"].to_numpy()
        low = part.get(f"metrics.{metric}_ci_low", pd.Series(value)).fillna(pd.Series(value))
        high = part.get(f"metrics.{metric}_ci_high", pd.Series(value)).fillna(pd.Series(value))
        errors = [value - low.to_numpy(), high.to_numpy() - value]
        ax.errorbar(range(len(names)), value, yerr=errors, fmt="o", capsize=4, label="this run")
        if task in PAPER:
            label = f"paper, MobileNetV2 ({PAPER[task]:.1%})"
            ax.axhline(PAPER[task], ls="--", c="grey", lw=0.8, label=label)
        ax.set_xticks(range(len(names)), names)
        ax.set_xlim(-0.5, len(names) - 0.5)
        ax.set_ylim(0, 1.05)
        ax.set_title(task.replace("_", "-"))
        ax.set_ylabel(metric.replace("/", ": ").replace("_", " "))
        # below the panel: inside it, the legend would cover a model's interval
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=2)
    fig.tight_layout()
    return fig


# %%
if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Plot the latest run's model comparison.")
    parser.add_argument("--tracking-uri", default="sqlite:///mlflow.db")
    parser.add_argument("--out", type=Path, default=Path("data/08_reporting/model_comparison.png"))
    args = parser.parse_args()
    children = latest_model_runs(args.tracking_uri)
    columns = {
        "tags.mlflow.runName": "model",
        f"metrics.{METRIC}": "test patient accuracy",
        "metrics.test/patient_auc": "test patient AUC",
        "metrics.train/seconds": "train s",
    }
    table = children[[c for c in columns if c in children]].rename(columns=columns)
    print(table.to_string(index=False))  # noqa: T201
    args.out.parent.mkdir(parents=True, exist_ok=True)
    plot_comparison(children).savefig(args.out, dpi=120)
    print(f"figure written to {args.out.resolve()}")  # noqa: T201
