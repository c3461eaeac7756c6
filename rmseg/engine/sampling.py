"""Resumable infinite sampling: the sample drawn at stream position ``p`` depends only on ``(seed, p)``.

Epoch ``e = p // n`` visits the ``n`` training cases in a permutation seeded by ``(seed, e)``; the random
augmentations of the item at position ``p`` run under RNGs seeded by ``(seed, p)`` (python, numpy, torch
and any MONAI ``Randomizable`` transform of the dataset), then the caller's RNG states are restored. So a
run resumed at iteration ``t`` draws the same batches as an uninterrupted one, for any ``num_workers``.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from monai.transforms import Randomizable
from torch.utils.data import Dataset, Sampler


def derived_seed(*keys: int) -> int:
    """A 32-bit seed from integer keys (numpy SeedSequence: well mixed, platform independent)."""
    return int(np.random.SeedSequence([int(k) for k in keys]).generate_state(1)[0])


class ResumableSampler(Sampler):
    """Infinite stream of ``(index, position)`` pairs starting at ``position = start``."""

    def __init__(self, num_items: int, seed: int, start: int = 0) -> None:
        if num_items < 1:
            raise ValueError(f"num_items={num_items} must be >= 1: the training set is empty")
        if start < 0:
            raise ValueError(f"start={start} must be >= 0")
        self.num_items, self.seed, self.start = num_items, seed, start

    def permutation(self, epoch: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(derived_seed(self.seed, epoch))
        return torch.randperm(self.num_items, generator=generator)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        position = self.start
        epoch, perm = -1, None
        while True:
            e, k = divmod(position, self.num_items)
            if e != epoch:
                epoch, perm = e, self.permutation(e)
            yield int(perm[k]), position
            position += 1


class SeededItems(Dataset):
    """Wraps a dataset so item ``(index, position)`` is drawn under RNGs seeded by ``(seed, position)``."""

    def __init__(self, dataset: Dataset, seed: int) -> None:
        self.dataset, self.seed = dataset, seed

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: tuple[int, int]) -> Any:
        index, position = key
        item_seed = derived_seed(self.seed, position, 1)
        py_state, np_state, torch_state = random.getstate(), np.random.get_state(), torch.get_rng_state()
        try:
            random.seed(item_seed)
            np.random.seed(item_seed)
            torch.manual_seed(item_seed)
            transform = getattr(self.dataset, "transform", None)
            if isinstance(transform, Randomizable):
                transform.set_random_state(seed=item_seed)
            return self.dataset[index]
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)
            torch.set_rng_state(torch_state)


class RankShare(Sampler):
    """Rank ``rank``'s contiguous share of each global batch of a :class:`ResumableSampler` stream.

    Global batch ``t`` is stream positions ``[t * batch_size, (t + 1) * batch_size)``, the same samples as in a
    one-process run; of each, rank ``r`` of ``world_size`` takes the ``batch_size // world_size`` positions
    starting at ``r * batch_size // world_size`` (ranks' shares are disjoint and cover the batch).
    """

    def __init__(self, stream: ResumableSampler, batch_size: int, rank: int, world_size: int) -> None:
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"rank={rank} must be in [0, world_size={world_size})")
        if batch_size < 1 or batch_size % world_size:
            raise ValueError(f"batch_size={batch_size} must be a positive multiple of world_size={world_size}")
        if stream.start % batch_size:
            raise ValueError(f"stream start={stream.start} must be at a batch boundary (a multiple of {batch_size})")
        self.stream, self.batch_size, self.rank = stream, batch_size, rank
        self.share = batch_size // world_size

    def __iter__(self) -> Iterator[tuple[int, int]]:
        for index, position in self.stream:
            if (position % self.batch_size) // self.share == self.rank:
                yield index, position


def train_batches(dataset: Any, batch_size: int, num_workers: int, seed: int, start_iteration: int, ranks: Any,
                  device: torch.device) -> Iterator[dict[str, Any]]:
    """Batches from iteration ``start_iteration`` on: this rank's share of each global batch of ``batch_size``
    (``ranks``: ``rmseg.engine.distributed.Ranks``), in pinned memory for a CUDA ``device`` so the copy to the
    GPU runs asynchronously."""
    from torch.utils.data import DataLoader

    sampler: Sampler = ResumableSampler(len(dataset), seed, start=start_iteration * batch_size)
    if ranks.enabled:
        sampler = RankShare(sampler, batch_size, ranks.rank, ranks.world_size)
    # its own generator: the loader's base seed must not draw from the global RNG (restored on resume)
    loader = DataLoader(SeededItems(dataset, seed), batch_size=ranks.share(batch_size), sampler=sampler,
                        num_workers=num_workers, persistent_workers=num_workers > 0,
                        pin_memory=device.type == "cuda", generator=torch.Generator().manual_seed(seed))
    return iter(loader)
