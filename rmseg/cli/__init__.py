"""Command lines, each a thin layer over the library: ``train`` (rmseg-train), ``evaluate`` (rmseg-eval),
``tables`` (rmseg-tables), ``figures`` (rmseg-figures), ``alpha_sweep``, ``preflight`` and ``demo``;
run any as ``python -m rmseg.cli.<name>``."""
