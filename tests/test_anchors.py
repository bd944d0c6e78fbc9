import math

import torch

from retinanet.anchors import AnchorGenerator, cell_anchors


def test_cell_anchors_ratio_major_hand_values():
    cells = cell_anchors(32)
    assert cells.shape == (9, 4)
    # index 0: ratio 0.5 (h/w), scale 1 -> w = sqrt(32^2 / 0.5) = 45.2548, h = 22.6274
    w, h = math.sqrt(32 ** 2 / 0.5), math.sqrt(32 ** 2 / 0.5) * 0.5
    assert torch.allclose(cells[0], torch.tensor([-w / 2, -h / 2, w / 2, h / 2], dtype=torch.float64))
    # index 1: same ratio, scale 2^(1/3) (scales vary fastest)
    w1 = math.sqrt((32 * 2 ** (1 / 3)) ** 2 / 0.5)
    assert math.isclose(float(cells[1, 2] - cells[1, 0]), w1, rel_tol=1e-9)
    # index 3: ratio 1, scale 1 -> a 32 x 32 square
    assert torch.allclose(cells[3], torch.tensor([-16.0, -16.0, 16.0, 16.0], dtype=torch.float64))
    # index 6: ratio 2 -> twice as tall as wide, area (32)^2
    w6 = float(cells[6, 2] - cells[6, 0])
    h6 = float(cells[6, 3] - cells[6, 1])
    assert math.isclose(h6 / w6, 2.0) and math.isclose(w6 * h6, 1024.0)


def test_anchor_grid_count_centres_and_order():
    generator = AnchorGenerator()
    anchors = generator((64, 64), torch.device("cpu"))
    # P3 8x8, P4 4x4, P5 2x2, P6 1x1, P7 1x1 locations, 9 anchors each
    assert anchors.shape == ((64 + 16 + 4 + 1 + 1) * 9, 4)
    centres = (anchors[:, :2] + anchors[:, 2:]) / 2
    assert torch.allclose(centres[0:9], torch.tensor([4.0, 4.0]).expand(9, 2))
    assert torch.allclose(centres[9], torch.tensor([12.0, 4.0]))  # next column first
    assert torch.allclose(centres[8 * 9], torch.tensor([4.0, 12.0]))  # then next row
    assert torch.allclose(anchors[3], torch.tensor([-12.0, -12.0, 20.0, 20.0]))
    p4_start = 64 * 9
    assert torch.allclose(centres[p4_start], torch.tensor([8.0, 8.0]))
    assert torch.allclose(anchors[p4_start + 3], torch.tensor([-24.0, -24.0, 40.0, 40.0]))
    p7 = anchors[-9:]
    assert torch.allclose((p7[:, :2] + p7[:, 2:]) / 2, torch.tensor([64.0, 64.0]).expand(9, 2))
    assert torch.allclose(p7[3], torch.tensor([64.0 - 256, 64.0 - 256, 64.0 + 256, 64.0 + 256]))


def test_feature_sizes_round_up_and_cache():
    generator = AnchorGenerator()
    assert generator.feature_sizes((100, 70)) == [(13, 9), (7, 5), (4, 3), (2, 2), (1, 1)]
    first = generator((96, 128), torch.device("cpu"))
    assert generator((96, 128), torch.device("cpu")) is first
    assert first.dtype == torch.float32
    assert len(first) == sum(generator.num_anchors_per_level((96, 128)))
