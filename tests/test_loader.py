"""retinanet.data.make_loader: the one DataLoader the scripts build."""
import cv2
import numpy as np
import pytest
import torch

from retinanet.data import make_loader


class OpenCVThreads(torch.utils.data.Dataset):
    """Item i: (i, the OpenCV thread count of the process that loads it)."""

    def __len__(self):
        return 5

    def __getitem__(self, index):
        return index, cv2.getNumThreads()


def as_lists(batch):
    return [list(column) for column in zip(*batch)]


def test_batches_in_order_by_size_or_by_sampler_and_workers_use_one_opencv_thread():
    cv2.setNumThreads(2)
    cv2.resize(np.zeros((2000, 2000, 3), np.uint8), (1000, 1000))  # this process has run OpenCV's thread pool
    by_size = [as_lists(batch) for batch in make_loader(OpenCVThreads(), batch_size=2, workers=1, collate_fn=list)]
    assert [indices for indices, _ in by_size] == [[0, 1], [2, 3], [4]]
    assert {threads for _, counts in by_size for threads in counts} == {1}  # set before the workers were forked
    by_sampler = make_loader(OpenCVThreads(), batch_sampler=[[4, 0], [2]], collate_fn=list)
    assert [as_lists(batch)[0] for batch in by_sampler] == [[4, 0], [2]]
    with pytest.raises(ValueError, match="exactly one of batch_size and batch_sampler"):
        make_loader(OpenCVThreads(), batch_size=2, batch_sampler=[[0]])
