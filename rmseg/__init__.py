"""rmseg: residual moment loss and location-aware losses for medical image segmentation."""

__version__ = "0.1.0"
