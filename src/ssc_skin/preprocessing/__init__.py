"""The one preprocessing step (tissue, tiles, stain, gating) shared by training, predict and serving."""
