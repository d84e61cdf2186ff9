"""Image operations on numpy arrays: tissue detection, tiling, stain normalisation."""
