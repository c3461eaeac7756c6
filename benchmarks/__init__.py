"""Speed benchmarks of rmseg; run one with `python -m benchmarks.<name>`, all with `make bench`."""
