"""Unit tests of models/training.py: fit, per-epoch metrics for a tracker, distribution."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from ssc_skin.models import progress, training


def _tiny_data(n: int = 32, size: int = 8, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    x = rng.integers(0, 60, (n, size, size, 3)).astype(np.uint8)
    x[y == 1] += 120  # brighter class: learnable in an epoch or two
    return x, y


def _tiny_model(size: int = 8) -> keras.Model:
    return keras.Sequential(
        [
            keras.Input((size, size, 3)),
            keras.layers.Rescaling(1 / 255),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(2, activation="softmax"),
        ]
    )


FIT = {
    "batch_size": 8,
    "learning_rate": 0.05,
    "seed": 0,
    "loss": "sparse_categorical_crossentropy",
    "metrics": ["accuracy"],
    "augment": None,
}


def test_epoch_metrics_continue_their_steps_across_two_fits():
    model = _tiny_model()
    logged: list[tuple[int, dict]] = []

    def log(metrics, step):
        logged.append((step, metrics))

    first = training.fit(
        model,
        _tiny_data(),
        _tiny_data(seed=1),
        name="t",
        epochs=2,
        callbacks=[training.EpochMetrics(log)],
        **FIT,
    )
    training.fit(
        model,
        _tiny_data(),
        _tiny_data(seed=1),
        name="t",
        epochs=3,
        patience=10,
        callbacks=[training.EpochMetrics(log, first_step=first.epochs_run)],
        **FIT,
    )
    assert [step for step, _ in logged] == [0, 1, 2, 3, 4]
    assert {"loss", "accuracy", "val_loss", "val_accuracy"} <= set(logged[0][1])
    assert logged[0][1]["loss"] == pytest.approx(first.history["loss"][0])


def test_epoch_metrics_drop_values_a_tracker_cannot_take():
    logged = []
    callback = training.EpochMetrics(lambda m, s: logged.append(m))
    callback.on_epoch_end(0, {"loss": float("nan"), "accuracy": 0.5})
    callback.on_epoch_end(1, {"loss": float("inf")})
    assert logged == [{"accuracy": 0.5}]


def test_fit_reports_history_epochs_and_throughput():
    result = training.fit(
        _tiny_model(), _tiny_data(), _tiny_data(seed=1), name="t", epochs=2, **FIT
    )
    assert result.epochs_run == 2 and len(result.history["val_loss"]) == 2
    assert result.patches_per_second > 0 and result.seconds > 0


@pytest.mark.parametrize("bad", ["mirror", "multi_worker", "gpu"])
def test_unknown_distribution_names_the_key_and_the_choices(bad):
    with pytest.raises(
        ValueError,
        match=r"classification\.training\.distribution must be one of "
        r"none, mirrored; got '" + bad,
    ):
        training.distribution_strategy(bad, "classification.training.distribution")


def test_distribution_none_is_the_default_single_device_strategy():
    for name in (None, "none", "None"):
        strategy = training.distribution_strategy(name)
        assert strategy.num_replicas_in_sync == 1
        assert not isinstance(strategy, tf.distribute.MirroredStrategy)


def test_subsample_keeps_every_class_and_the_original_order():
    index = pd.DataFrame({"label": ["a"] * 30 + ["b"] * 10})
    kept = training.subsample(index, 8, seed=0)
    assert len(kept) == 8 and set(kept["label"]) == {"a", "b"}
    assert list(kept.index) == sorted(kept.index)
    assert training.subsample(index, None, 0) is index


def test_balanced_class_weights_favour_the_minority_and_cover_absent_classes():
    weights = training.balanced_class_weights(np.array([0, 0, 0, 1]), n_classes=3)
    assert weights[1] > weights[0] and weights[2] == 1.0


# TensorFlow fixes its devices when it first initialises them, so splitting the CPU into two
# logical devices has to happen in a fresh interpreter.
MIRRORED = textwrap.dedent("""
    import json, sys
    import keras
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    sys.path.insert(0, sys.argv[1])
    from test_training import FIT, _tiny_data, _tiny_model
    from ssc_skin.models import training

    def run(name):
        strategy = training.distribution_strategy(name)
        with strategy.scope():
            keras.utils.set_random_seed(0)  # the same initial weights
            model = _tiny_model()
            result = training.fit(model, _tiny_data(), _tiny_data(seed=1), name=name, epochs=2,
                                  shuffle=False, **FIT)
        return {"replicas": strategy.num_replicas_in_sync,
                "mirrored_variables": all(isinstance(w.value, tf.distribute.DistributedValues)
                                          for w in model.weights),
                "loss": result.history["loss"],
                "weights": [w.tolist() for w in model.get_weights()],
                "predicts": model.predict(_tiny_data()[0][:4], verbose=0).shape[0]}

    print("RESULT", json.dumps({"none": run("none"), "mirrored": run("mirrored")}))
""")


def test_mirrored_training_on_two_logical_cpus_matches_single_device_training(tmp_path):
    script = tmp_path / "mirrored.py"
    script.write_text(MIRRORED)
    here = str(Path(__file__).parent)
    result = subprocess.run(
        [sys.executable, str(script), here],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    lines = [line for line in result.stdout.splitlines() if line.startswith("RESULT ")]
    assert result.returncode == 0 and lines, result.stderr[-3000:]
    runs = json.loads(lines[-1].removeprefix("RESULT "))
    assert runs["none"]["replicas"] == 1 and not runs["none"]["mirrored_variables"]
    assert runs["mirrored"]["replicas"] == 2 and runs["mirrored"]["mirrored_variables"]
    assert runs["mirrored"]["predicts"] == 4
    # each replica takes half of every batch and the gradients are averaged: the same fit
    # (in a fixed order: a distributed iterator shuffles in another order than a plain one)
    np.testing.assert_allclose(runs["mirrored"]["loss"], runs["none"]["loss"], rtol=1e-4)
    for single, mirrored in zip(runs["none"]["weights"], runs["mirrored"]["weights"], strict=True):
        np.testing.assert_allclose(mirrored, single, atol=1e-5)


def test_progress_lines_are_rate_limited_and_carry_an_eta(caplog):
    ticks = iter(range(0, 10_000, 5))  # every clock read is 5 s later than the last
    x, y = _tiny_data(n=80)  # 10 batches of 8 per epoch
    model = _tiny_model()
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    logger = progress.ProgressLogger("t", 3, len(x), 8, interval=12.0, clock=lambda: next(ticks))
    with caplog.at_level("INFO", logger="ssc_skin.models.training"):
        model.fit(x, y, batch_size=8, epochs=3, verbose=0, callbacks=[logger])
    lines = [r.getMessage() for r in caplog.records]
    assert all("ETA " in line and "patches/s" in line for line in lines)
    ends = [line for line in lines if "10/10 batches" in line]
    within = [line for line in lines if "10/10 batches" not in line]
    assert len(ends) == 3 and ends[0].startswith("t epoch 1/3 · 10/10 batches")
    assert ends[-1].split("ETA ")[1].startswith("0s")  # nothing left after the last epoch
    # 10 batches x 5 s per epoch, a line at most every 12 s: 3 or 4 per epoch, not 10
    assert 3 * 3 <= len(within) <= 3 * 4
    assert "t epoch 1/3 · 3/10 batches · 2 patches/s · ETA 2m15s" in within  # 7 + 20 batches x 5 s


def test_fit_logs_progress_through_logging(caplog):
    with caplog.at_level("INFO", logger="ssc_skin.models.training"):
        training.fit(
            _tiny_model(),
            _tiny_data(),
            _tiny_data(seed=1),
            name="p",
            epochs=2,
            progress_interval=0.0,
            **FIT,
        )
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("p epoch")]
    assert any("p epoch 2/2 · 4/4 batches" in line and "val_loss=" in line for line in lines)
    assert all("ETA " in line for line in lines) and len(lines) >= 4


def test_format_duration():
    assert [progress.format_duration(s) for s in (4.4, 80, 3600 + 300)] == ["4s", "1m20s", "1h05m"]


def test_the_tracing_batch_gives_no_eta_and_the_first_epoch_does_not_weigh_on_later_ones(caplog):
    times = iter([0.0, 200.0, 200.0, 201.0, 201.0, 202.0, 202.0, 203.0, 203.0])
    logger = progress.ProgressLogger("t", 4, 16, 8, interval=0.0, clock=lambda: next(times))
    with caplog.at_level("INFO", logger="ssc_skin.models.training"):
        logger.on_epoch_begin(0)  # t=0
        logger.on_train_batch_end(0)  # t=200: the first batch traced the graph for 200 s
        logger.on_train_batch_end(1)  # t=200
        logger.on_epoch_end(0)  # t=201: epoch 1 took 201 s
        logger.on_epoch_begin(1)  # t=201
        logger.on_epoch_end(1)  # t=202: epoch 2 took 1 s
        logger.on_epoch_begin(2)  # t=202
        logger.on_train_batch_end(0)  # t=203
    lines = [r.getMessage() for r in caplog.records]
    assert not any("1/2 batches" in line and "epoch 1/4" in line for line in lines)
    # 1 s left of epoch 3, then one epoch at the steady 1 s (not the 101 s mean with tracing)
    assert "t epoch 3/4 · 1/2 batches · 8 patches/s · ETA 2s" in lines[-1]


def test_label_smoothing_moves_the_same_share_to_every_other_class():
    targets = training.SoftTargets(n_classes=3, label_smoothing=0.3)
    onehot = training.one_hot(tf.constant([0, 2]), targets, smooth=True).numpy()
    np.testing.assert_allclose(onehot.sum(1), 1, rtol=1e-6)
    np.testing.assert_allclose(onehot[0], [0.8, 0.1, 0.1], rtol=1e-6)
    np.testing.assert_array_equal(training.one_hot(tf.constant([1]), targets, False), [[0, 1, 0]])


def test_mixup_blends_each_patch_with_another_and_keeps_its_own_label_the_larger_part():
    images = tf.constant(np.stack([np.zeros((2, 2, 3)), np.full((2, 2, 3), 100.0)]), tf.uint8)
    onehot = tf.constant([[1.0, 0.0], [0.0, 1.0]])
    mixed, labels = training.mix_batch(images, onehot, tf.constant([3, 4]), alpha=0.4)
    labels = labels.numpy()
    np.testing.assert_allclose(labels.sum(1), 1, rtol=1e-6)
    assert labels[0, 0] >= 0.5 and labels[1, 1] >= 0.5
    # the pixels are blended by the weight of the other patch's label
    np.testing.assert_allclose(mixed.numpy()[0], 100 * labels[0, 1], rtol=1e-5)


def test_training_targets_are_softened_and_validation_targets_are_not():
    x, y = _tiny_data(16)
    targets = training.SoftTargets(2, label_smoothing=0.2, mixup=0.4)
    _, train_y = next(iter(training.make_dataset(x, y, 16, False, 0, targets=targets)))
    _, val_y = next(iter(training.make_dataset(x, y, 16, False, 0, targets=targets, soften=False)))
    assert train_y.shape == (16, 2) and train_y.numpy().max() < 1
    np.testing.assert_array_equal(val_y.numpy(), np.eye(2)[y])


def test_fit_with_mixup_and_label_smoothing_learns_the_tiny_task():
    targets = training.SoftTargets(2, label_smoothing=0.1, mixup=0.2)
    keras.utils.set_random_seed(0)  # the same initial weights whichever tests ran before
    model = _tiny_model()
    training.fit(
        model, _tiny_data(), _tiny_data(seed=1), name="t", epochs=12, targets=targets, **FIT
    )
    x, y = _tiny_data(seed=2)
    assert (model.predict(x, verbose=0).argmax(1) == y).mean() >= 0.9


@pytest.mark.parametrize("bad", [{"label_smoothing": 1.0}, {"mixup": -0.1}])
def test_bad_soft_target_settings_name_the_keys(bad):
    with pytest.raises(ValueError, match="label_smoothing must be in"):
        training.SoftTargets.from_settings(bad, 2)


def test_no_soft_target_setting_keeps_integer_labels():
    assert training.SoftTargets.from_settings({"label_smoothing": 0.0, "mixup": 0}, 3) is None
