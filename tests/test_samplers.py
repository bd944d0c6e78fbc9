"""AspectRatioBatchSampler (grouping, epochs, distributed shares) and collate_batch (padding)."""
import itertools

import pytest
import torch

from retinanet.data import AspectRatioBatchSampler, collate_batch


class _Ratios:
    """The sampler's view of a dataset: a length and an aspect ratio per image."""

    def __init__(self, ratios):
        self.ratios = list(ratios)

    def __len__(self):
        return len(self.ratios)

    def aspect_ratio(self, index):
        return self.ratios[index]


def test_batches_hold_images_of_one_aspect_ratio_and_cover_the_dataset():
    dataset = _Ratios([0.5, 2.0] * 6)  # portrait and landscape interleaved
    batches = list(AspectRatioBatchSampler(dataset, batch_size=3, seed=1))
    assert len(batches) == 4
    assert all(len({dataset.ratios[i] for i in batch}) == 1 for batch in batches)
    assert sorted(itertools.chain(*batches)) == list(range(12))


def test_without_shuffle_batches_follow_ascending_aspect_ratio():
    sampler = AspectRatioBatchSampler(_Ratios([1.5, 0.5, 1.0, 0.75, 3.0]), batch_size=2, shuffle=False)
    assert list(sampler) == [[1, 3], [2, 0], [4]]
    assert len(sampler) == 3


def test_drop_last_drops_the_incomplete_batch():
    dataset = _Ratios([1.0] * 7)
    assert [len(b) for b in AspectRatioBatchSampler(dataset, 3, shuffle=False)] == [3, 3, 1]
    dropped = AspectRatioBatchSampler(dataset, 3, drop_last=True)
    assert len(dropped) == 2 and [len(b) for b in dropped] == [3, 3]


def test_epochs_reshuffle_deterministically_and_equal_ratios_meet_new_partners():
    sampler = AspectRatioBatchSampler(_Ratios([1.0] * 16), batch_size=2, seed=7)
    first = list(sampler)
    assert list(sampler) == first
    sampler.set_epoch(1)
    second = list(sampler)
    assert {frozenset(b) for b in second} != {frozenset(b) for b in first}
    sampler.set_epoch(0)
    assert list(sampler) == first
    other_seed = AspectRatioBatchSampler(_Ratios([1.0] * 16), batch_size=2, seed=8)
    assert list(other_seed) != first


@pytest.mark.parametrize("num_images, num_replicas", [(12, 3), (12, 2), (16, 4)])
def test_distributed_shares_are_disjoint_equal_and_cover_everything(num_images, num_replicas):
    dataset = _Ratios([0.5, 1.0, 2.0, 1.5] * (num_images // 4))
    shares = []
    for rank in range(num_replicas):
        sampler = AspectRatioBatchSampler(dataset, 2, seed=5, num_replicas=num_replicas, rank=rank)
        sampler.set_epoch(3)
        shares.append(list(sampler))
        assert len(shares[-1]) == len(sampler)
    assert len({len(share) for share in shares}) == 1
    indices = [i for share in shares for batch in share for i in batch]
    assert sorted(indices) == list(range(num_images))  # disjoint and covering


def test_distributed_shares_deal_out_the_single_process_batch_list():
    dataset = _Ratios([0.5, 2.0, 1.0] * 5)
    single = AspectRatioBatchSampler(dataset, 2, seed=2)
    single.set_epoch(4)
    expected = list(single)
    shares = []
    for rank in range(2):
        sampler = AspectRatioBatchSampler(dataset, 2, seed=2, num_replicas=2, rank=rank)
        sampler.set_epoch(4)
        shares.append(list(sampler))
    # 8 batches dealt round-robin: rank 0 gets batches 0, 2, 4, 6 and rank 1 gets 1, 3, 5, 7
    assert shares[0] == expected[0::2] and shares[1] == expected[1::2]


def test_uneven_batch_counts_repeat_early_batches_or_drop_the_rest():
    dataset = _Ratios([1.0] * 10)  # 5 batches of 2 over 2 ranks
    padded = [list(AspectRatioBatchSampler(dataset, 2, num_replicas=2, rank=r)) for r in range(2)]
    assert [len(share) for share in padded] == [3, 3]
    flat = [i for share in padded for batch in share for i in batch]
    assert sorted(set(flat)) == list(range(10)) and len(flat) == 12
    assert padded[1][-1] == list(AspectRatioBatchSampler(dataset, 2))[0]  # the 6th batch repeats the 1st
    dropped = [
        list(AspectRatioBatchSampler(dataset, 2, drop_last=True, num_replicas=2, rank=r)) for r in range(2)
    ]
    flat = [i for share in dropped for batch in share for i in batch]
    assert [len(share) for share in dropped] == [2, 2] and len(set(flat)) == 8


def test_more_ranks_than_batches_still_gives_every_rank_a_batch():
    shares = [list(AspectRatioBatchSampler(_Ratios([1.0] * 3), 2, num_replicas=4, rank=r)) for r in range(4)]
    assert [len(share) for share in shares] == [1, 1, 1, 1]


def test_invalid_arguments():
    with pytest.raises(ValueError, match="rank 2"):
        AspectRatioBatchSampler(_Ratios([1.0]), 1, num_replicas=2, rank=2)
    with pytest.raises(ValueError, match="batch_size"):
        AspectRatioBatchSampler(_Ratios([1.0]), 0)


def _sample(height, width, index, fill):
    return {
        "image": torch.full((3, height, width), float(fill)),
        "boxes": torch.tensor([[1.0, 2.0, 3.0, 4.0]]),
        "labels": torch.tensor([index]),
        "ignore": torch.zeros((0, 4)),
        "ignore_labels": torch.zeros((0,), dtype=torch.int64),
        "scale": 0.5,
        "orig_size": (height * 2, width * 2),
        "path": f"{index}.jpg",
        "index": index,
    }


def test_collate_pads_bottom_right_to_the_next_multiple_of_32():
    images, targets, metas = collate_batch([_sample(50, 70, 0, 1.0), _sample(64, 33, 1, 2.0)])
    assert images.shape == (2, 3, 64, 96)
    assert (images[0, :, :50, :70] == 1).all() and images[0, :, 50:].abs().sum() == 0
    assert images[0, :, :, 70:].abs().sum() == 0
    assert (images[1, :, :64, :33] == 2).all() and images[1, :, :, 33:].abs().sum() == 0
    assert [t["labels"].item() for t in targets] == [0, 1]
    assert set(targets[0]) == {"boxes", "labels", "ignore", "ignore_labels"}
    assert metas[1] == {"scale": 0.5, "orig_size": (128, 66), "image_size": (64, 33), "path": "1.jpg", "index": 1}


def test_collate_adds_no_padding_when_already_aligned():
    images, _, _ = collate_batch([_sample(64, 96, 0, 1.0)])
    assert images.shape == (1, 3, 64, 96)
    images, _, _ = collate_batch([_sample(64, 96, 0, 1.0), _sample(32, 32, 1, 1.0)])
    assert images.shape == (2, 3, 64, 96)
    images, _, _ = collate_batch([_sample(65, 97, 0, 1.0)])
    assert images.shape == (1, 3, 96, 128)
