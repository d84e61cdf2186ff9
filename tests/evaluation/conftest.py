"""Hand-made predictions and image-selection frames (the segmentation stage's contract)."""

import numpy as np
import pandas as pd
import pytest

BINARY = {
    "name": "binary",
    "classes": ["normal", "ssc"],
    "label_map": {"normal": "normal", "early": "ssc", "late": "ssc", "ssc": "ssc"},
}
THREE = {
    "name": "three_class",
    "classes": ["normal", "early", "late"],
    "label_map": {"normal": "normal", "early": "early", "late": "late"},
}
PARAMS = {
    "bootstrap_metrics": ["accuracy", "auc"],
    "bootstrap_resamples": 50,
    "confidence": 0.95,
    "seed": 0,
    "calibration_bins": 10,
}


def make_cohort(
    patients_per_split: int = 4,
    images: int = 2,
    patches: int = 3,
    seed: int = 0,
    skill: float = 0.35,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(predictions, image_selection) of a binary model: patient k of each split has label
    normal when k is even, early otherwise; every image is `ok` and predicted."""
    rng = np.random.default_rng(seed)
    rows, selection = [], []
    for split in ("train", "val", "test"):
        for k in range(patients_per_split):
            patient, label = f"pt-{split}{k}", ("normal", "early")[k % 2]
            y = k % 2
            for i in range(images):
                image = f"im-{split}{k}-{i}"
                selection.append(
                    {
                        "image": image,
                        "patient": patient,
                        "label": label,
                        "split": split,
                        "n_tiles": patches,
                        "n_classified": patches,
                        "selection": "ok",
                        "reason": "",
                    }
                )
                for _ in range(patches):
                    p = float(
                        np.clip(0.5 + (skill if y else -skill) + rng.normal(0, 0.1), 0.01, 0.99)
                    )
                    rows.append(
                        {
                            "row": len(rows),
                            "image": image,
                            "patient": patient,
                            "label": label,
                            "split": split,
                            "y_true": y,
                            "p_normal": 1 - p,
                            "p_ssc": p,
                        }
                    )
    return pd.DataFrame(rows), pd.DataFrame(selection)


@pytest.fixture
def cohort():
    return make_cohort()
