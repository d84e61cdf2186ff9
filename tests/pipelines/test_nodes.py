import numpy as np
import pandas as pd
import pytest
from PIL import Image

from ssc_skin.cohort import synthetic
from ssc_skin.pipelines.classification.nodes import encode_labels
from ssc_skin.pipelines.evaluation.nodes import evaluate_predictions
from ssc_skin.pipelines.patches.nodes import extract_patches, fit_stain_normalizer
from ssc_skin.pipelines.segmentation.nodes import select_patches

BINARY = {"name": "binary", "classes": ["normal", "ssc"],
          "label_map": {"normal": "normal", "early": "ssc", "late": "ssc"}}


def test_binary_task_maps_early_and_late_to_ssc():
    y = encode_labels(pd.Series(["normal", "early", "late"]), BINARY)
    np.testing.assert_array_equal(y, [0, 1, 1])


def test_label_outside_the_task_is_named():
    with pytest.raises(ValueError, match="mild"):
        encode_labels(pd.Series(["normal", "mild"]), BINARY)


def _scored():
    return pd.DataFrame({"split": ["train", "train", "train", "val", "test"],
                         "label": ["normal", "late", "late", "late", "normal"],
                         "dermis_fraction": [0.9, 0.6, 0.95, 0.7, 0.8]})


def test_gating_keeps_patches_with_enough_dermis():
    selected = select_patches(_scored(), {"use_segmentation": True, "min_dermis_fraction": 0.65})
    assert selected["dermis_fraction"].min() >= 0.65 and len(selected) == 4


def test_gating_off_keeps_everything():
    assert len(select_patches(_scored(), {"use_segmentation": False,
                                          "min_dermis_fraction": 0.99})) == 5


def test_gating_that_empties_a_class_explains_what_to_change():
    with pytest.raises(ValueError, match="min_dermis_fraction"):
        select_patches(_scored(), {"use_segmentation": True, "min_dermis_fraction": 0.85})


def test_evaluation_reports_patient_level_metrics_with_intervals():
    rng = np.random.default_rng(0)
    rows = []
    for split in ("train", "val", "test"):
        for p in range(6):
            y = p % 2
            for _ in range(4):
                p1 = float(np.clip(0.35 + 0.3 * y + rng.normal(0, 0.1), 0, 1))
                rows.append({"image": f"{split}{p}", "patient": f"{split}{p}",
                             "split": split, "y_true": y, "p_normal": 1 - p1, "p_ssc": p1})
    predictions = pd.DataFrame(rows)
    metrics, summary = evaluate_predictions(
        predictions, BINARY, {"task": "binary", "architecture": "cnn", "history": {}},
        {"bootstrap_metrics": ["accuracy"], "bootstrap_resamples": 100, "confidence": 0.95,
         "seed": 0})
    assert summary["test_patients"] == 6
    assert summary["test_patient_accuracy_ci_low"] <= summary["test_patient_accuracy"]
    assert summary["test_patient_accuracy"] <= summary["test_patient_accuracy_ci_high"]
    assert {"train_patch_accuracy", "val_image_auc", "test_patient_brier"} <= set(metrics)
    assert metrics["test_patient_accuracy"]["value"] == summary["test_patient_accuracy"]


def _tiny_cohort(masks: bool):
    images, mask_store, rows = {}, {}, []
    for p, label in enumerate(("normal", "late", "early")):
        patient = synthetic.make_patient(f"P{p}", label, np.random.default_rng(p))
        section = synthetic.render_section(patient, 0, (128, 128), artefact_rate=0.0)
        images[f"im{p}"] = (lambda a=section.image: Image.fromarray(a))
        mask_store[f"im{p}"] = (lambda m=section.mask: Image.fromarray(m))
        rows.append({"image": f"im{p}", "patient": f"pt{p}", "label": label, "has_mask": masks,
                     "mask_source": "cohort" if masks else "none"})
    splits = pd.DataFrame({"patient": ["pt0", "pt1", "pt2"], "split": ["train", "val", "test"]})
    return images, (mask_store if masks else {}), pd.DataFrame(rows), splits


PATCH_PARAMS = {"patch_size": 32, "stride": 32, "min_tissue_fraction": 0.5, "min_saturation": 12,
                "unet_min_tissue_fraction": 0.05}


def test_patches_carry_their_mask_and_its_source():
    arrays, index = extract_patches(*_tiny_cohort(masks=True), {"method": "none"}, PATCH_PARAMS)
    assert set(index["mask_source"]) == {"cohort"} and index["has_mask"].all()
    assert (arrays["masks"] == 2).any()
    _, without = extract_patches(*_tiny_cohort(masks=False), {"method": "none"}, PATCH_PARAMS)
    assert set(without["mask_source"]) == {"none"} and not without["has_mask"].any()


def test_low_tissue_patches_train_the_unet_but_never_reach_the_classifiers():
    _, index = extract_patches(*_tiny_cohort(masks=True), {"method": "none"}, PATCH_PARAMS)
    assert (~index["classifiable"]).any()
    assert (index.loc[~index["classifiable"], "tissue_fraction"] < 0.5).all()
    scored = index.assign(dermis_fraction=1.0)
    selected = select_patches(scored, {"use_segmentation": False, "min_dermis_fraction": 0.5})
    assert selected["classifiable"].all() and len(selected) == index["classifiable"].sum()


def test_stain_normaliser_is_fitted_on_training_patients_only():
    images, _, manifest, splits = _tiny_cohort(masks=False)
    params = {"method": "reinhard", "max_fit_images": 10}
    fitted = fit_stain_normalizer(images, manifest, splits, params)
    only_train = fit_stain_normalizer(images, manifest.head(1), splits, params)
    assert fitted == only_train
