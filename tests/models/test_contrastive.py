import keras
import numpy as np
import pytest
import tensorflow as tf

from ssc_skin.cohort import synthetic
from ssc_skin.models import builders, contrastive, pretrain
from ssc_skin.pipelines.pretrain.nodes import pretrain_backbone, pretraining_patches
from tests.preprocessing.test_unlabelled import unlabelled_folder

ARCHITECTURES = {
    "mobilenetv2": {"name": "mobilenetv2", "input_size": 32, "options": {"alpha": 0.35}}
}


def test_nt_xent_is_low_when_each_view_matches_its_pair_and_high_when_shuffled():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(16, 8)).astype(np.float32)
    matched = float(contrastive.nt_xent(z, z + 0.01 * rng.normal(size=z.shape), 0.2))
    shuffled = float(contrastive.nt_xent(z, z[rng.permutation(16)], 0.2))
    assert matched < 1.0 < np.log(31) < shuffled  # chance is log(2B - 1)


def test_a_view_is_a_jittered_crop_at_the_input_size_in_unit_range():
    image = tf.constant(np.random.default_rng(1).integers(0, 256, (64, 64, 3)), tf.uint8)
    view = contrastive.simclr_view(32, min_crop=0.5, stain_sigma=0.15, stain_bias=0.1)
    a = view(image, tf.constant([1, 2])).numpy()
    b = view(image, tf.constant([3, 4])).numpy()
    assert a.shape == (32, 32, 3) and a.min() >= 0 and a.max() <= 1
    assert np.abs(a - b).mean() > 0.01  # two seeds, two different views


def _patches(n: int = 64, size: int = 64) -> np.ndarray:
    sections = synthetic.generate_cohort(
        {"normal": 1, "late": 1}, 3, (256, 256), artefact_rate=0.0, seed=5
    )
    images = pretrain.tile_sections(sections, size, max_patches=n)["images"]
    assert len(images) == n
    return images


def test_simclr_lowers_its_loss_and_the_backbone_loads_as_classifier_weights(tmp_path):
    base, scale = pretrain.backbone("mobilenetv2", 32, {"alpha": 0.35})
    before = [w.copy() for w in base.get_weights()]
    base, summary = contrastive.pretrain_simclr(
        _patches(), base, scale, 32, epochs=3, batch_size=8, learning_rate=1e-3, seed=0
    )
    assert summary["epochs_run"] >= 1 and summary["train_patches"] + summary["val_patches"] == 64
    assert np.isfinite(summary["history"]["loss"]).all()
    assert any(not np.allclose(a, b) for a, b in zip(before, base.get_weights(), strict=True))
    path = tmp_path / "backbone.keras"
    base.save(path)
    model = builders.build_classifier("mobilenetv2", 32, 2, {"alpha": 0.35, "weights": str(path)})
    assert model.pretrained


def test_too_few_patches_for_the_batch_size_names_the_key():
    base, scale = pretrain.backbone("mobilenetv2", 32, {"alpha": 0.35})
    with pytest.raises(ValueError, match="pretrain.batch_size"):
        contrastive.pretrain_simclr(np.zeros((10, 64, 64, 3), np.uint8), base, scale, 32)


def test_simclr_on_a_folder_of_unlabelled_images_writes_a_backbone(tmp_path):
    folder = unlabelled_folder(tmp_path / "archive")
    params = {
        "method": "simclr",
        "images": str(folder),
        "architecture": "mobilenetv2",
        "patch_size": 64,
        "min_tissue_fraction": 0.3,
        "max_patches": 48,
        "seed": 0,
        "simclr": {"epochs": 1, "batch_size": 8},
    }
    arrays = pretraining_patches(params)
    base, summary, metrics = pretrain_backbone(arrays, params, ARCHITECTURES)
    assert summary["source"] == "folder" and summary["patch_counts"]["patches"] == 48
    assert summary["patch_counts"]["not_used_not_an_image"] == 1
    assert "loss" in metrics and isinstance(base, keras.Model)


def test_supervised_pretraining_cannot_use_unlabelled_images():
    with pytest.raises(ValueError, match="needs pretrain.method: simclr"):
        pretraining_patches({"method": "supervised", "images": "somewhere"})


def test_an_unknown_method_is_named():
    with pytest.raises(ValueError, match="pretrain.method must be one of"):
        pretraining_patches({"method": "byol"})
