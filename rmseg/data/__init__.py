"""Datasets: Drishti-GS, LA 2018 and their synthetic stand-ins."""
