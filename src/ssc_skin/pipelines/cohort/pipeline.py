"""The `cohort` pipeline: synthetic (or user) cohort -> validated manifest -> patient splits."""

from kedro.pipeline import Pipeline, node

from .nodes import (
    cohort_gallery,
    colour_baseline,
    generate_synthetic_cohort,
    split_cohort,
    validate_manifest,
)


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            node(generate_synthetic_cohort, "params:cohort.synthetic",
                 ["raw_images", "raw_masks", "raw_manifest"], name="generate_synthetic_cohort"),
            node(validate_manifest, ["raw_manifest", "raw_images", "raw_masks"], "manifest",
                 name="validate_manifest"),
            node(split_cohort, ["manifest", "params:cohort.split"], "patient_splits",
                 name="split_patients"),
            node(colour_baseline,
                 ["raw_images", "manifest", "params:classification.tasks",
                  "params:cohort.colour_baseline"],
                 ["colour_baseline_metrics", "colour_baseline"], name="colour_baseline"),
            node(cohort_gallery, ["raw_images", "raw_masks", "manifest"], "cohort_gallery",
                 name="cohort_gallery"),
        ]
    )
