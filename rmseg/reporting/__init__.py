"""From run folders to the paper's tables and figures; summaries are read through ``rmseg.evaluation.records``.

- :mod:`~rmseg.reporting.tables`: Table 1 / Table 2 (and registered extended tables) from ``summary.json`` files.
- :mod:`~rmseg.reporting.paper_values`: the paper's published numbers, shown beside each reproduced cell.
- :mod:`~rmseg.reporting.extended_tables`: every loss on both datasets.
- :mod:`~rmseg.reporting.figures`: contour overlays (paper Fig. 2 and 3).
- :mod:`~rmseg.reporting.alpha_sweep`: RM weight dose-response.
"""
