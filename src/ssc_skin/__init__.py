"""ssc-skin: screening classifier for systemic sclerosis in skin-biopsy images."""

__version__ = "0.1.0"
