"""The `cohort` pipeline: synthetic or user cohort -> checked, pseudonymised images -> splits."""

from kedro.pipeline import Pipeline, node

from .nodes import (
    cohort_gallery,
    colour_baseline,
    generate_synthetic_cohort,
    generate_synthetic_slides,
    ingest_cohort,
    split_cohort,
)


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            node(
                generate_synthetic_cohort,
                "params:cohort",
                ["raw_images", "raw_masks", "raw_manifest"],
                name="generate_synthetic_cohort",
            ),
            node(
                generate_synthetic_slides,
                "params:cohort",
                "raw_slide_manifest",
                name="generate_synthetic_slides",
            ),
            node(
                ingest_cohort,
                [
                    "raw_manifest",
                    "params:cohort",
                    "params:patches.patch_size",
                    "params:patches.min_saturation",
                    "params:patches",
                    "raw_slide_manifest",
                ],
                [
                    "cohort_images",
                    "cohort_masks",
                    "manifest",
                    "linkage",
                    "quarantine",
                    "quarantine_metrics",
                ],
                name="ingest_cohort",
            ),
            node(
                split_cohort,
                ["manifest", "params:cohort.split", "previous_patient_splits"],
                "patient_splits",
                name="split_patients",
            ),
            node(
                colour_baseline,
                [
                    "cohort_images",
                    "manifest",
                    "params:classification.tasks",
                    "params:cohort.colour_baseline",
                ],
                ["colour_baseline_metrics", "colour_baseline"],
                name="colour_baseline",
            ),
            node(
                cohort_gallery,
                ["cohort_images", "cohort_masks", "manifest"],
                "cohort_gallery",
                name="cohort_gallery",
            ),
        ]
    )
