"""Unit tests of models/trainers.py: one traced copy per network structure, reused by
`training.fit` without changing what a fit produces."""

import keras
import numpy as np
import pytest

from ssc_skin.models import seeding, trainers, training
from tests.models import test_training
from tests.models.test_training import _tiny_data as _data

# the plain fit settings of test_training, with augmentation and a schedule, as the study fits
FIT = {**test_training.FIT, "augment": "classifier", "lr_schedule": "cosine"}


def _model(units: int = 4, seed: int = 1) -> keras.Model:
    with seeding.seeded(seed):  # the same initial weights for every build, in any thread
        return keras.Sequential(
            [
                keras.Input((8, 8, 3)),
                keras.layers.Rescaling(1 / 255),
                keras.layers.Conv2D(units, 3, padding="same"),
                keras.layers.BatchNormalization(),
                keras.layers.GlobalAveragePooling2D(),
                keras.layers.Dropout(0.3),
                keras.layers.Dense(2, activation="softmax"),
            ]
        )


@pytest.fixture(autouse=True)
def _empty_cache():
    trainers.clear()
    yield
    trainers.clear()


def _fit(model: keras.Model, data_seed: int = 0) -> training.TrainingResult:
    return training.fit(
        model, _data(seed=data_seed), _data(seed=data_seed + 1), name="t", epochs=2, **FIT
    )


def _weights(model: keras.Model) -> list[np.ndarray]:
    return [np.asarray(w) for w in model.get_weights()]


def test_a_cached_fit_gives_the_same_model_as_a_fresh_one():
    fresh = _model()
    fresh_result = _fit(fresh)
    trainers.clear()
    _fit(_model(), data_seed=5)  # fills the cache with another fit's state and optimizer
    assert len(trainers._TRAINERS) == 1
    cached = _model()
    cached_result = _fit(cached)
    assert len(trainers._TRAINERS) == 1  # reused, not a second trainer
    for a, b in zip(_weights(fresh), _weights(cached), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        fresh_result.history["loss"], cached_result.history["loss"], rtol=1e-5
    )


def test_the_callers_model_is_never_the_trainer():
    first, second = _model(), _model()
    _fit(first)
    before = _weights(first)
    _fit(second, data_seed=7)  # trains the cached trainer on other data
    for a, b in zip(before, _weights(first), strict=True):
        np.testing.assert_array_equal(a, b)  # the first model kept its own weights
    cached = [m for idle in trainers._TRAINERS.values() for m in idle]
    assert cached and all(m is not first and m is not second for m in cached)
    assert first.optimizer is not None  # compiled, as a directly fitted model is


def test_other_structures_and_settings_get_their_own_key():
    base = trainers.structure_key(_model(), loss="a")
    assert base == trainers.structure_key(_model(seed=9), loss="a")  # weights do not matter
    assert base != trainers.structure_key(_model(units=5), loss="a")
    assert base != trainers.structure_key(_model(), loss="b")
    frozen = _model()
    frozen.layers[1].trainable = False
    assert base != trainers.structure_key(frozen, loss="a")


def test_a_checked_out_trainer_is_not_handed_to_a_second_fit():
    """Two fits at once (the fold-parallel runner's threads) each get their own trainer; both
    go back to the cache afterwards and the next two fits reuse them."""
    trainers.clear()
    model = _model()
    key = trainers.structure_key(model, loss="x")
    first, cached_first = trainers.checkout(model, key)
    second, cached_second = trainers.checkout(model, key)
    assert first is not None and second is not None and first is not second
    assert not cached_first and not cached_second  # nothing idle: each a new clone
    trainers.remember(key, first)
    trainers.remember(key, second)
    again = {id(trainers.checkout(model, key)[0]) for _ in range(2)}
    assert again == {id(first), id(second)}
    assert trainers.checkout(model, key)[1] is False  # both out again: a third is new


def test_concurrent_fits_in_threads_equal_the_same_fits_one_after_the_other():
    """What two folds at once do: fits in two threads give the models that sequential fits
    give (each fit's state is its own; the seed and the build are not interleaved)."""
    from concurrent.futures import ThreadPoolExecutor  # noqa: PLC0415

    def fitted(data_seed: int) -> list[np.ndarray]:
        model = _model()
        _fit(model, data_seed=data_seed)
        return _weights(model)

    trainers.clear()
    alone = [fitted(s) for s in (3, 4)]
    with ThreadPoolExecutor(2) as pool:
        together = list(pool.map(fitted, (3, 4)))
    for one, other in zip(alone, together, strict=True):
        for a, b in zip(one, other, strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_the_cache_is_bounded():
    for units in range(trainers.MAX_TRAINERS + 2):
        trainers.remember(str(units), _model(units + 1))
    assert len(trainers._TRAINERS) == trainers.MAX_TRAINERS
    assert "0" not in trainers._TRAINERS


def test_several_steps_per_call_give_the_same_model():
    one = _model()
    training.fit(one, _data(seed=0), _data(seed=1), name="t", epochs=2, **FIT)
    eight = _model()
    training.fit(
        eight,
        _data(seed=0),
        _data(seed=1),
        name="t",
        epochs=2,
        compile_options={"steps_per_execution": 3},  # 32 patches / 8 = 4 steps: a partial call
        **FIT,
    )
    for a, b in zip(_weights(one), _weights(eight), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert eight.steps_per_execution == 1  # the returned model predicts one batch per call
