"""Training machinery: run folders, checkpoints, the training loop and what it runs on.

- :mod:`~rmseg.engine.loop`: ``Trainer`` (one step, the loop, logging, checkpoints, signals).
- :mod:`~rmseg.engine.checkpoint`: the only save/load of checkpoints (format tag, ``weights_only``), RNG
  states, the config comparison of resume and skip.
- :mod:`~rmseg.engine.run_dir`: ``<runs>/<name>/.seed<k>.tmp/`` renamed to ``seed<k>/`` when complete, fcntl lock.
- :mod:`~rmseg.engine.sampling`: resumable infinite sampling and the training batches.
- :mod:`~rmseg.engine.speed`: channels-last, cuDNN autotuning, ``torch.compile``, thread count.
- :mod:`~rmseg.engine.distributed`: torchrun / DDP ranks.
- :mod:`~rmseg.engine.curve`: ``curve.csv`` as training writes it.
- :mod:`~rmseg.engine.provenance`: ``provenance.json`` (code version, packages, machine).
"""
