"""Segmentation losses: residual moment loss and rival location-aware losses."""
