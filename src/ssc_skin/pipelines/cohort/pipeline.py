"""The `cohort` pipeline: synthetic (or user) cohort -> validated manifest -> patient splits."""

from kedro.pipeline import Pipeline, node

from .nodes import generate_synthetic_cohort, split_cohort, validate_manifest


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            node(generate_synthetic_cohort, "params:cohort.synthetic",
                 ["raw_images", "raw_masks", "raw_manifest"], name="generate_synthetic_cohort"),
            node(validate_manifest, ["raw_manifest", "raw_images", "raw_masks"], "manifest",
                 name="validate_manifest"),
            node(split_cohort, ["manifest", "params:cohort.split"], "patient_splits",
                 name="split_patients"),
        ]
    )
