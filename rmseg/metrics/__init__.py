"""Segmentation metrics (medpy convention by default)."""
