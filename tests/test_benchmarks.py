"""`benchmarks/run.py --quick` writes its tables (the benchmark harness itself, not a speed test)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

PROJECT = Path(__file__).resolve().parents[1]


@pytest.mark.e2e  # two `kedro run` subprocesses: about a minute on 2 idle cores
def test_benchmark_quick_writes_json_and_markdown(tmp_path):
    env = {**os.environ, "KEDRO_DISABLE_TELEMETRY": "1"}
    result = subprocess.run(
        [sys.executable, str(PROJECT / "benchmarks/run.py"), "--quick", "--out", str(tmp_path)],
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=PROJECT,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    data = json.loads((tmp_path / "benchmarks.json").read_text())
    assert {"tiling", "training", "training_options", "inference", "predict", "memory"} <= set(data)
    assert len(data["memory"]["runs"]) == 2 and data["memory"]["runs"][0]["patches"] > 0
    assert data["memory"]["runs"][0]["patches_peak_rss_mb"] > 0
    assert "mixed_bfloat16" in data["training_options"]["results"]["cnn"]
    markdown = (tmp_path / "benchmarks.md").read_text()
    assert markdown.startswith("# ") and "| " in markdown


# ---------- benchmarks/robustness.py: stain and scanner shift ----------


def _robustness():
    sys.path.insert(0, str(PROJECT / "benchmarks"))
    import robustness  # noqa: PLC0415

    return robustness


def test_robustness_score_uses_the_study_patient_rule_and_counts():
    robustness = _robustness()
    # PAT_0042: image A has 3 patches leaning ssc (0.7), image B one patch normal (0.9).
    # Mean over all patches: ssc 0.55 -> ssc (right); the mean of image means would say
    # normal (0.4). PAT_0043 (normal) is called normal.
    probs = np.array([[0.3, 0.7]] * 3 + [[0.9, 0.1]] + [[0.8, 0.2]] * 2)
    truth = np.array([1, 1, 1, 1, 0, 0])
    patients = np.array(["PAT_0042"] * 4 + ["PAT_0043"] * 2)
    result = robustness.score(probs, truth, patients, n_patients=3)
    assert (result["patient_correct"], result["patient_n"], result["patients_total"]) == (2, 2, 3)
    assert (result["patch_correct"], result["patch_n"]) == (5, 6)
    empty = robustness.score(np.zeros((0, 2)), np.zeros(0, int), np.zeros(0, str), n_patients=3)
    assert (empty["patient_n"], empty["patch_n"], empty["patients_total"]) == (0, 0, 3)


def test_robustness_evaluate_shifts_same_image_for_every_model_and_none_dropped():
    robustness = _robustness()
    rng = np.random.default_rng(0)
    pink = np.full((16, 16, 3), (230, 150, 220), np.uint8)
    glass = np.full((16, 16, 3), 245, np.uint8)
    images = [
        (
            "MRN-4471-Smith_DOB19700101",
            "PAT_0042",
            1,
            pink + rng.integers(0, 3, pink.shape, np.uint8),
        ),
        ("im-glass", "PAT_0043", 0, glass),
    ]
    seen: dict[str, list[np.ndarray]] = {"a": [], "b": []}

    def preprocess(image):  # glass has no tissue patch: not assessed, but counted
        return image[None, :8, :8] if image.mean() < 240 else np.zeros((0, 8, 8, 3), np.uint8)

    def predictor(name):
        def predict(patches):
            seen[name].append(patches.copy())
            return np.tile([0.2, 0.8], (len(patches), 1))

        return predict

    rows = robustness.evaluate_shifts(
        images,
        preprocess,
        {"a": predictor("a"), "b": predictor("b")},
        {"mean": lambda probs: (probs["a"] + probs["b"]) / 2},
        {"hed": (0.0, 2.0), "jpeg": (50.0,)},
        n_patients=2,
    )
    assert len(rows) == 3 * 3  # conditions x models
    assert all(np.array_equal(x, y) for x, y in zip(seen["a"], seen["b"], strict=True))
    hed0 = [r for r in rows if r["shift"] == "hed" and r["strength"] == 0.0]
    assert all(r["mean_colour_distance"] == 0.0 for r in hed0)
    for r in rows:
        assert (r["images_total"], r["images_not_assessed"]) == (2, 1)
        assert (r["patient_correct"], r["patient_n"], r["patients_total"]) == (1, 1, 2)
    hed2 = next(r for r in rows if r["strength"] == 2.0)
    assert hed2["mean_colour_distance"] > 0


@pytest.mark.e2e  # a tiny `kedro run` (conf/test) and 1-epoch models: ~4 min on 2 busy cores
def test_robustness_quick_writes_table_json_and_figure(tmp_path):
    env = {**os.environ, "KEDRO_DISABLE_TELEMETRY": "1"}
    result = subprocess.run(
        [
            sys.executable,
            str(PROJECT / "benchmarks/robustness.py"),
            "--quick",
            "--out",
            str(tmp_path),
        ],
        check=False,
        capture_output=True,
        text=True,
        timeout=1800,
        env=env,
        cwd=PROJECT,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    data = json.loads((tmp_path / "robustness.json").read_text())
    rows = data["tasks"]["binary"]["rows"]
    models = {r["model"] for r in rows}
    assert {"mobilenetv2", "cnn", "texture"} <= models
    assert {(r["shift"], r["strength"]) for r in rows} == {
        ("hed", 0.0),
        ("hed", 2.0),
        ("masson", 1.0),
        ("jpeg", 50.0),
    }
    assert all(r["patch_n"] > 0 and r["patients_total"] > 0 for r in rows)
    assert "| HED 0 |" in (tmp_path / "robustness.md").read_text()
    assert (tmp_path / "robustness.png").stat().st_size > 10_000


# ---------- benchmarks/throughput.py and stage_memory.py: the report's arithmetic ----------


def _bench(name: str):
    sys.path.insert(0, str(PROJECT / "benchmarks"))
    return __import__(name)


def _run(speed: float, accuracy: float = 0.75, finite: bool = True) -> dict:
    return {"cnn": {"patches_per_second": speed, "val_accuracy": accuracy, "finite": finite}}


def test_throughput_ratios_are_per_round_against_that_rounds_float32():
    """A loaded round slows both: the ratio of each round, not of the medians, is reported."""
    throughput = _bench("throughput")
    runs = {
        "float32": [_run(100.0), _run(50.0), _run(80.0)],
        "mixed_bfloat16": [_run(120.0), _run(40.0), _run(96.0, finite=False)],
    }
    result = throughput.summarise(runs, ("cnn",), patches=896, epochs=3)
    row = result["results"]["cnn"]["mixed_bfloat16"]
    assert row["ratio_median"] == pytest.approx(1.2) and row["ratio_min"] == pytest.approx(0.8)
    assert row["ratio_max"] == pytest.approx(1.2) and row["patches_per_second"] == 96.0
    assert not row["finite"] and result["rounds"] == 3
    (headline,) = throughput.headline_rows(result)
    assert headline[1:] == ("float32 80", "mixed_bfloat16 96", "1.20x (0.80-1.20)")
    assert any("non-finite" in line for line in throughput.markdown_rows(result))


def test_throughput_compile_options_reach_training_fit_and_the_baseline_has_none(
    tmp_path, monkeypatch
):
    throughput = _bench("throughput")
    from ssc_skin.models import builders, training  # noqa: PLC0415 - the worker's own imports

    np.save(tmp_path / "x.npy", np.zeros((16, 8, 8, 3), np.uint8))
    np.save(tmp_path / "y.npy", np.arange(16) % 2)
    calls = []

    def fit(model, train, val, **kwargs):
        calls.append(kwargs["compile_options"])
        return training.TrainingResult(patches_per_second=1.0)

    monkeypatch.setattr(training, "fit", fit)
    monkeypatch.setattr(builders, "build_classifier", lambda *a, **k: None)
    monkeypatch.setattr(training, "predict", lambda model, x: np.full((len(x), 2), 0.5))
    spec = {
        "architectures": ["cnn"],
        "options": {"cnn": {}},
        "epochs": 1,
        "training": {"batch_size": 8, "learning_rate": 0.01},
    }
    throughput.worker(throughput.OPTIONS["steps_per_execution_8"], tmp_path, spec)
    throughput.worker(throughput.OPTIONS[throughput.BASELINE], tmp_path, spec)
    assert calls == [{"steps_per_execution": 8}, {}]


def test_two_fits_at_once_start_together_and_their_patches_per_second_add_up(tmp_path, monkeypatch):
    throughput = _bench("throughput")
    started = []

    class FakeProcess:
        """Writes its result when started; `communicate` only waits."""

        def __init__(self, command, **_):
            started.append(command)
            result = Path(command[command.index("--result") + 1])
            result.write_text(json.dumps(_run(100.0 + 10 * len(started))))
            self.returncode = 0

        def communicate(self, timeout):
            assert len(started) == 2  # both were running before the first was awaited
            return "", None

    monkeypatch.setattr(throughput.subprocess, "Popen", FakeProcess)
    option = throughput.OPTIONS["two_fits_1x1"]
    assert option.threads == (1, 1) and option.processes == 2
    run = throughput._run_worker(option, tmp_path, tmp_path / "spec.json", timeout=5)
    assert run["cnn"]["patches_per_second"] == 110.0 + 120.0


def test_stage_memory_rows_compare_the_sizes_above_the_imports_floor():
    stage_memory = _bench("stage_memory")
    run = {"patients_per_class": 6, "images": 54, "patches": 3000, "patch_mb": 47.0}
    small = {**run, "cohort_peak_rss_mb": 1100.0, "patches_peak_rss_mb": 1000.0}
    large = {
        **run,
        "patients_per_class": 24,
        "images": 216,
        "patches": 12000,
        "cohort_peak_rss_mb": 1300.0,
        "patches_peak_rss_mb": 1010.0,
    }
    for row in (small, large):
        row.update(cohort_seconds=1.0, patches_seconds=1.0, peak_rss_mb=row["cohort_peak_rss_mb"])
    memory = {
        "runs": [small, large],
        "concurrent": False,
        "images_ratio": 4.0,
        "patches_ratio": 4.0,
        "imports_only_peak_rss_mb": 900.0,
        "patches_peak_rss_ratio": 1010 / 1000,
        "cohort_peak_rss_ratio": 1300 / 1100,
        "patches_above_imports_ratio": 110 / 100,
        "cohort_above_imports_ratio": 400 / 200,
    }
    rows = stage_memory.headline_rows(memory)
    assert rows[0] == (
        "patches stage peak RSS, MB",
        "3000 patches 1000",
        "12000 patches 1010",
        "1.01x for 4.0x patches",
    )
    assert rows[1][1:] == ("100", "110", "1.10x")
    assert rows[3][1:] == ("200", "400", "2.00x")
    assert "| 24 | 216 | 12000 | 47 | 1300 | 1010 | 1 | 1 |" in stage_memory.markdown_rows(memory)
