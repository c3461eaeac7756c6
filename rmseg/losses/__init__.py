"""Segmentation losses: residual moment loss and rival location-aware losses."""

from rmseg.losses.compound import SegmentationLoss
