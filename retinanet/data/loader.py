"""The one DataLoader every script builds: its collate function, its prefetch, and OpenCV set up for its workers."""
from typing import Callable, Iterable, Optional

import torch

from retinanet.data.collate import collate_batch


def make_loader(
    dataset,
    *,
    batch_size: Optional[int] = None,
    batch_sampler: Optional[Iterable] = None,
    workers: int = 0,
    collate_fn: Callable = collate_batch,
    pin_memory: bool = False,
    prefetch_batches: Optional[int] = None,
) -> torch.utils.data.DataLoader:
    """A DataLoader over ``dataset`` in order, by ``batch_size`` or by ``batch_sampler``'s batches.

    workers: loader processes (0: load in this process); prefetch_batches: batches each worker loads
    ahead (DataLoader's default when None).

    With workers, OpenCV is set to one thread in this process before they are forked from it: a
    resize is as fast on one thread, several workers each running a pool per core would
    oversubscribe the CPU the model needs, and setting it inside a worker instead can deadlock
    there when this process has already run OpenCV's pool (its state is copied without its threads).
    """
    if (batch_size is None) == (batch_sampler is None):
        raise ValueError("make_loader needs exactly one of batch_size and batch_sampler")
    if workers:
        import cv2

        cv2.setNumThreads(1)
    batching = {"batch_sampler": batch_sampler} if batch_sampler is not None else {"batch_size": batch_size}
    return torch.utils.data.DataLoader(
        dataset, **batching, num_workers=workers, collate_fn=collate_fn, pin_memory=pin_memory,
        prefetch_factor=prefetch_batches if workers else None,
    )
