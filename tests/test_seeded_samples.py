"""SeededSamples: augmentation drawn from (seed, epoch, index) alone, for any --seed a user may type."""
import torch

from retinanet.training import SeededSamples


class _RandomDraw(torch.utils.data.Dataset):
    def __len__(self):
        return 3

    def __getitem__(self, index):
        return float(torch.rand(()))


def test_large_seeds_do_not_overflow_and_samples_repeat_per_seed_epoch_index():
    samples = SeededSamples(_RandomDraw(), seed=20261201)  # the product overflowed 64 bits for seeds > ~9e5
    first = [samples[i] for i in range(3)]
    assert [samples[i] for i in (2, 0, 1)] == [first[2], first[0], first[1]]  # order of access does not matter
    samples.set_epoch(1)
    assert [samples[i] for i in range(3)] != first
    huge = SeededSamples(_RandomDraw(), seed=2 ** 62)
    assert 0.0 <= huge[0] < 1.0
