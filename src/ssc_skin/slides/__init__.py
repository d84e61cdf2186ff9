"""Whole-slide images: reading pyramids, discovery and checks, prediction over tiles, outputs (heatmaps, QuPath GeoJSON), the synthetic slide cohort."""
