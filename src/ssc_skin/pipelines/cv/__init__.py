"""The `cv` pipeline: patient-grouped k-fold cross-validation of the whole study."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
