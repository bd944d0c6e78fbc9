"""Batch sampling: images of similar shape together, so padding wastes little compute."""
import math

import numpy as np
import torch


class AspectRatioBatchSampler(torch.utils.data.Sampler):
    """Yield batches of dataset indices whose images have similar aspect ratios.

    Each epoch the images are ordered by aspect ratio (ties broken by a fresh shuffle, so
    equal-shaped images meet different partners every epoch), cut into consecutive batches
    of ``batch_size``, and the batch order is shuffled. The last batch may be smaller unless
    ``drop_last``.

    For distributed training every rank builds the same batch list from ``(seed, epoch)``
    and takes every ``num_replicas``-th batch starting at ``rank``: shares are disjoint and
    equally long. When the number of batches does not divide evenly, ``drop_last`` drops
    the remainder; otherwise the first batches are repeated to fill the last round (as
    ``DistributedSampler`` does), since every rank must run the same number of steps.

    Args:
        dataset: anything with ``__len__`` and ``aspect_ratio(index) -> width / height``.
        batch_size: images per batch.
        shuffle: shuffle ties and batch order per epoch; False gives a fixed order
            (ascending aspect ratio) for evaluation.
        drop_last: drop the incomplete batch (and the uneven remainder across ranks).
        seed: base of the per-epoch shuffle; must be equal on every rank.
        num_replicas, rank: distributed world size and this process's rank.
    """

    def __init__(
        self,
        dataset,
        batch_size: int,
        shuffle: bool = True,
        drop_last: bool = False,
        seed: int = 0,
        num_replicas: int = 1,
        rank: int = 0,
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if num_replicas < 1 or not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} is not in a world of {num_replicas} replicas")
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.seed = seed
        self.num_replicas = num_replicas
        self.rank = rank
        self.epoch = 0
        # (D,) width / height per image, read once (header reads, no decoding)
        self.aspect_ratios = np.array([dataset.aspect_ratio(i) for i in range(len(dataset))], np.float64)
        if drop_last:
            self._batches_per_rank = len(self.aspect_ratios) // batch_size // num_replicas
        else:
            self._batches_per_rank = math.ceil(math.ceil(len(self.aspect_ratios) / batch_size) / num_replicas)

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch whose shuffle ``__iter__`` yields (same on every rank)."""
        self.epoch = epoch

    def _all_batches(self) -> "list[np.ndarray]":
        """Every rank's batches for this epoch, in the order they are dealt out."""
        count = len(self.aspect_ratios)
        if self.shuffle:
            rng = np.random.default_rng([self.seed, self.epoch])
            tie_breaker = rng.permutation(count)
            order = tie_breaker[np.argsort(self.aspect_ratios[tie_breaker], kind="stable")]
        else:
            order = np.argsort(self.aspect_ratios, kind="stable")
        batches = [order[start:start + self.batch_size] for start in range(0, count, self.batch_size)]
        if self.drop_last and batches and len(batches[-1]) < self.batch_size:
            batches.pop()
        if self.shuffle:
            batches = [batches[i] for i in rng.permutation(len(batches))]
        return batches

    def __iter__(self):
        batches = self._all_batches()
        total = self._batches_per_rank * self.num_replicas
        if total > len(batches):
            batches = [batches[i % len(batches)] for i in range(total)]
        for batch in batches[self.rank:total:self.num_replicas]:
            yield batch.tolist()

    def __len__(self) -> int:
        return self._batches_per_rank
