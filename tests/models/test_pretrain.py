import keras
import numpy as np
import pytest

from ssc_skin.cohort import synthetic
from ssc_skin.models import builders, pretrain
from ssc_skin.pipelines.pretrain.nodes import pretrain_backbone, pretraining_patches

TINY = {
    "method": "supervised",
    "architecture": "mobilenetv2",
    "targets": ["compartment", "severity"],
    "cohort": {
        "patients_per_class": {"normal": 1, "late": 1},
        "images_per_patient": 1,
        "image_size": 128,
        "artefact_rate": 0.0,
        "seed": 3,
    },
    "patch_size": 32,
    "max_patches": 40,
    "epochs": 1,
    "batch_size": 16,
    "seed": 0,
}
ARCHITECTURES = {
    "mobilenetv2": {
        "name": "mobilenetv2",
        "input_size": 32,
        "options": {"alpha": 0.35, "weights": "imagenet"},
    }
}


def test_compartment_fractions_are_shares_of_each_mask_class():
    masks = np.array([[[0, 1], [2, 2]], [[3, 3], [3, 3]]])
    np.testing.assert_allclose(
        pretrain.compartment_fractions(masks), [[0.25, 0.25, 0.5, 0.0], [0, 0, 0, 1]]
    )


def test_synthetic_sections_become_tissue_patches_with_targets():
    sections = synthetic.generate_cohort(
        {"normal": 1, "late": 1}, 1, (128, 128), artefact_rate=0.0, seed=1
    )
    arrays = pretrain.tile_sections(sections, 32, max_patches=10)
    n = len(arrays["images"])
    assert 0 < n <= 10 and arrays["images"].shape[1:] == (32, 32, 3)
    np.testing.assert_allclose(arrays["compartment"].sum(1), 1, rtol=1e-6)
    assert arrays["severity"].shape == (n,) and (arrays["severity"] >= 0).all()
    assert arrays["compartment"][:, 2].max() > 0  # dermis is seen


def test_unknown_pretext_target_is_named():
    base, scale = pretrain.backbone("mobilenetv2", 32, {"alpha": 0.35})
    with pytest.raises(ValueError, match="pretrain.targets must be a non-empty subset"):
        pretrain.pretext_model(base, scale, 32, ("rotation",))


def test_cnn_has_no_backbone_to_pretrain():
    with pytest.raises(ValueError, match="no nested backbone"):
        pretrain.backbone("cnn", 32, {"filters": [4]})


def test_the_pretrain_stage_makes_a_file_that_weights_path_takes(tmp_path):
    arrays = pretraining_patches(TINY)
    base, summary, metrics = pretrain_backbone(arrays, TINY, ARCHITECTURES)
    assert summary["targets"] == ["compartment", "severity"] and summary["epochs_run"] == 1
    assert {"loss", "val_loss"} <= set(metrics)
    path = tmp_path / "pretrained_backbone.keras"
    base.save(path)  # what the catalog's KerasModelDataset does
    model = builders.build_classifier("mobilenetv2", 32, 2, {"alpha": 0.35, "weights": str(path)})
    inner = next(layer for layer in model.layers if isinstance(layer, keras.Model))
    assert all(
        np.allclose(a, b) for a, b in zip(inner.get_weights(), base.get_weights(), strict=True)
    )
    assert model.pretrained  # so training goes frozen first, then fine-tunes


def test_pretraining_an_architecture_that_is_not_configured_names_the_key():
    with pytest.raises(ValueError, match="pretrain.architecture must be one of"):
        pretrain_backbone({}, {**TINY, "architecture": "resnet"}, ARCHITECTURES)
