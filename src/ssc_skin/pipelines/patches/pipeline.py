"""The `patches` pipeline: validated images -> tissue-filtered grid patches with provenance."""

from kedro.pipeline import Pipeline, node

from .nodes import extract_patches


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            node(extract_patches,
                 ["cohort_images", "cohort_masks", "manifest", "patient_splits", "params:patches"],
                 ["patches", "patch_index"], name="extract_patches"),
        ]
    )
