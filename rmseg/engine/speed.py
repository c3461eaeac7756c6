"""Training speed switches, shared by ``rmseg.cli.train`` and ``benchmarks.training`` (one implementation, so
the benchmark times what the trainer runs): ``trainer.channels_last``, ``trainer.cudnn_benchmark`` and
``trainer.compile``. They change how the same computation runs, not what it computes, up to float rounding
and, for element-wise dropout, the masks drawn (docs/training.md, "Speed switches").
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TypeVar

import torch
from torch import nn

T = TypeVar("T", nn.Module, torch.Tensor)


def memory_format(spatial_dims: int, channels_last: bool, key: str = "trainer.channels_last") -> torch.memory_format:
    """``torch.channels_last`` (2D) / ``torch.channels_last_3d`` (3D) if ``channels_last``, else the default;
    ``key`` names the setting in the error for other dimensionalities."""
    if not channels_last:
        return torch.contiguous_format
    if spatial_dims not in (2, 3):
        raise ValueError(f"{key}=true needs 2D or 3D data, not spatial_dims={spatial_dims}: set {key}=false")
    return torch.channels_last if spatial_dims == 2 else torch.channels_last_3d


def in_format(x: T, fmt: torch.memory_format) -> T:
    """A module (in place, its 4D/5D parameters and buffers) or a batch tensor in memory format ``fmt``;
    ``x`` untouched for the default format."""
    if fmt == torch.contiguous_format:
        return x
    return x.to(memory_format=fmt) if isinstance(x, nn.Module) else x.contiguous(memory_format=fmt)


def set_cudnn_benchmark(enabled: bool) -> None:
    """cuDNN autotuning on (fastest algorithm per input shape, non-deterministic algorithms allowed) or off
    (deterministic algorithms, as ``monai.utils.set_determinism`` sets them). CUDA only; on the CPU inert."""
    torch.backends.cudnn.benchmark = enabled
    torch.backends.cudnn.deterministic = not enabled


def compile_for_training(net: nn.Module, enabled: bool) -> nn.Module:
    """``torch.compile(net)`` if ``enabled``, else ``net``. The compiled wrapper only runs the forward pass:
    save and load the state dict of the module it wraps (keys without ``_orig_mod.``)."""
    return torch.compile(net) if enabled else net


@contextmanager
def process_settings(num_threads: int | None, quiet: bool) -> Iterator[None]:
    """Inside: ``num_threads`` CPU threads (None: unchanged) and, with ``quiet`` (ranks other than 0), rmseg's
    log at WARNING; on leaving, the thread count, rmseg's log level and cuDNN's flags as they were."""
    import logging

    threads, level = torch.get_num_threads(), logging.getLogger("rmseg").level
    cudnn = torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic
    try:
        if num_threads is not None:
            torch.set_num_threads(num_threads)
        if quiet:
            logging.getLogger("rmseg").setLevel(logging.WARNING)
        yield
    finally:
        torch.set_num_threads(threads)
        logging.getLogger("rmseg").setLevel(level)
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = cudnn
