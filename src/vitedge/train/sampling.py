"""Data order and augmentation as pure functions of (seed, epoch): the key to exact resume.

:class:`TrainBatchSampler` shuffles with a generator seeded from (seed, epoch) and hands every
sample its own augmentation seed; :class:`SeededDataset` applies the training transform with a
``random.Random`` built from that seed. Nothing depends on worker processes, worker seeds, or on
how many epochs ran in this process, so a resumed run sees exactly the batches an uninterrupted
run would, with any number of data-loader workers.

Under DDP each global batch is split into equal contiguous shares, one per rank: the union of
the ranks' step-``k`` batches is the single-process step-``k`` batch, so the global batch size
(and the learning rate that goes with it) means the same at any world size.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Iterator
from typing import Any

import torch

from vitedge.errors import VitedgeError


def derive_seed(*parts: Any) -> int:
    """A 63-bit seed from any mix of ints and strings: stable across processes and platforms."""
    digest = hashlib.sha256(repr(parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


class TrainBatchSampler(torch.utils.data.Sampler):
    """Batches of ``(index, sample_seed)`` for one rank; full batches only (``drop_last``).

    Example::

        sampler = TrainBatchSampler(len(data), batch_size=128, seed=0)
        loader = DataLoader(SeededDataset(data, transform), batch_sampler=sampler)
        for epoch in range(epochs):
            sampler.set_epoch(epoch)
            for images, labels in loader: ...
    """

    def __init__(self, num_samples: int, batch_size: int, *, seed: int, rank: int = 0,
                 world_size: int = 1, shuffle: bool = True) -> None:
        if batch_size % world_size:
            raise VitedgeError(f"batch size {batch_size} does not split evenly over {world_size} "
                               f"processes; use a multiple of {world_size}")
        if num_samples < batch_size:
            raise VitedgeError(f"the training set has {num_samples} images, fewer than one batch of "
                               f"{batch_size}; lower --batch-size")
        self.num_samples, self.batch_size, self.seed = num_samples, batch_size, seed
        self.rank, self.world_size, self.shuffle = rank, world_size, shuffle
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_samples // self.batch_size

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        g = torch.Generator().manual_seed(derive_seed(self.seed, "order", self.epoch))
        n = self.num_samples
        order = torch.randperm(n, generator=g) if self.shuffle else torch.arange(n)
        seeds = torch.randint(0, 2**62, (n,), generator=g)
        share = self.batch_size // self.world_size
        for b in range(len(self)):
            start = b * self.batch_size + self.rank * share
            yield list(zip(order[start:start + share].tolist(), seeds[start:start + share].tolist()))


class ShardSampler(torch.utils.data.Sampler):
    """Every ``world_size``-th index starting at ``rank``, in order: each sample seen exactly once."""

    def __init__(self, num_samples: int, rank: int = 0, world_size: int = 1) -> None:
        self.indices = range(rank, num_samples, world_size)

    def __len__(self) -> int:
        return len(self.indices)

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)


class SeededDataset(torch.utils.data.Dataset):
    """``dataset`` (untransformed) with ``transform(img, rng)`` applied using each key's own seed;
    ``joint``: the transform takes and returns the label too (``transform(img, mask, rng)``)."""

    def __init__(self, dataset: torch.utils.data.Dataset, transform: Callable[..., Any],
                 joint: bool = False) -> None:
        self.dataset, self.transform, self.joint = dataset, transform, joint

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> tuple[Any, int]:
        index, seed = key
        img, label = self.dataset[index]
        if self.joint:
            return self.transform(img, label, random.Random(seed))
        return self.transform(img, random.Random(seed)), label
