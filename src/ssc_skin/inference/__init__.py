"""Inference: TFLite export, prediction of new images, the served MLflow model."""
