"""Transform: resize rule, boxes moved with the pixels, flips, normalisation."""
import numpy as np
import pytest
import torch

from retinanet.data import IMAGENET_MEAN, IMAGENET_STD, Transform, resize_scale
from retinanet.errors import UserError


def _unnormalise(tensor: torch.Tensor) -> np.ndarray:
    """(3, h, w) network input -> (h, w, 3) float64 in 0..255."""
    mean = np.array(IMAGENET_MEAN)[:, None, None]
    std = np.array(IMAGENET_STD)[:, None, None]
    return ((tensor.double().numpy() * std + mean) * 255).transpose(1, 2, 0)


def _white_square_image() -> np.ndarray:
    """(40, 80, 3) black with a white square on rows 10..19, columns 20..29: box [20, 10, 30, 20]."""
    image = np.zeros((40, 80, 3), np.uint8)
    image[10:20, 20:30] = 255
    return image


@pytest.mark.parametrize(
    "height, width, expected_scale, expected_shape",
    [
        (480, 640, 608 / 480, (608, 811)),  # short side to 608; long side 810.67 -> 811 fits under 1024
        (720, 1280, 0.8, (576, 1024)),  # short side would give 1080.9 > 1024: long side to 1024
        (100, 50, 10.24, (1024, 512)),  # upscaling obeys the same cap
        (608, 608, 1.0, (608, 608)),
    ],
)
def test_resize_rule_short_side_608_unless_long_side_passes_1024(
    height, width, expected_scale, expected_shape
):
    assert resize_scale(height, width, 608, 1024) == pytest.approx(expected_scale)
    image = np.zeros((height, width, 3), np.uint8)
    boxes = np.array([[10, 20, 30, 40]], np.float32)
    tensor, out_boxes, out_ignore, scale = Transform()(image, boxes, None)
    assert tuple(tensor.shape) == (3, *expected_shape)
    assert tensor.dtype == torch.float32
    assert scale == pytest.approx(expected_scale)
    np.testing.assert_allclose(out_boxes, [[10 * scale, 20 * scale, 30 * scale, 40 * scale]], rtol=1e-6)
    assert out_ignore.shape == (0, 4) and out_ignore.dtype == np.float32


def test_resize_moves_boxes_with_the_pixels():
    tensor, boxes, ignore, scale = Transform(min_side=80, max_side=1000)(
        _white_square_image(), np.array([[20, 10, 30, 20]], np.float32), np.array([[0, 0, 10, 5]], np.float32)
    )
    assert scale == 2.0 and tuple(tensor.shape) == (3, 80, 160)
    np.testing.assert_array_equal(boxes, [[40, 20, 60, 40]])
    np.testing.assert_array_equal(ignore, [[0, 0, 20, 10]])
    pixels = _unnormalise(tensor)
    # Inside the scaled box (one pixel in from its edges, where linear interpolation blends) it is white,
    # one pixel outside it is black.
    assert pixels[21:39, 41:59].min() > 254
    assert pixels[20:40, 37].max() < 1 and pixels[20:40, 62].max() < 1
    assert pixels[17, 40:60].max() < 1 and pixels[42, 40:60].max() < 1


def test_flip_mirrors_image_boxes_and_ignore_regions():
    transform = Transform(min_side=40, max_side=1000, flip_prob=1.0)
    tensor, boxes, ignore, scale = transform(
        _white_square_image(), np.array([[20, 10, 30, 20]], np.float32), np.array([[0, 0, 10, 5]], np.float32)
    )
    assert scale == 1.0
    # width 80: x -> 80 - x, so [20, 30] -> [50, 60] and [0, 10] -> [70, 80]
    np.testing.assert_array_equal(boxes, [[50, 10, 60, 20]])
    np.testing.assert_array_equal(ignore, [[70, 0, 80, 5]])
    pixels = _unnormalise(tensor)
    assert pixels[10:20, 50:60].min() > 254
    assert pixels[10:20, 20:30].max() < 1


def test_flip_after_resize_uses_the_resized_width():
    transform = Transform(min_side=80, max_side=1000, flip_prob=1.0)
    _, boxes, _, _ = transform(_white_square_image(), np.array([[20, 10, 30, 20]], np.float32))
    # resized width 160: [40, 60] -> [100, 120]
    np.testing.assert_array_equal(boxes, [[100, 20, 120, 40]])


def test_flip_probability():
    image = _white_square_image()
    box = np.array([[20, 10, 30, 20]], np.float32)
    never = Transform(min_side=40, flip_prob=0.0)
    assert all(never(image, box)[1][0, 0] == 20 for _ in range(20))
    torch.manual_seed(0)
    half = Transform(min_side=40, flip_prob=0.5)
    flips = sum(half(image, box)[1][0, 0] == 50 for _ in range(200))
    assert 70 < flips < 130


def test_normalisation_is_imagenet_mean_std_on_rgb_over_255():
    image = np.empty((3, 5, 3), np.uint8)
    image[:] = (255, 0, 128)
    tensor, _, _, _ = Transform(min_side=3, max_side=100)(image)
    expected = [(255 / 255 - 0.485) / 0.229, (0 / 255 - 0.456) / 0.224, (128 / 255 - 0.406) / 0.225]
    for channel in range(3):
        np.testing.assert_allclose(tensor[channel].numpy(), expected[channel], rtol=1e-6)


def test_output_is_not_padded():
    tensor, _, _, _ = Transform(min_side=33, max_side=1000)(np.zeros((33, 47, 3), np.uint8))
    assert tuple(tensor.shape) == (3, 33, 47)


def test_bad_arguments():
    with pytest.raises(UserError, match="positive"):
        Transform(min_side=0)
    with pytest.raises(UserError, match=r"\[0, 1\]"):
        Transform(flip_prob=1.5)
    with pytest.raises(ValueError, match=r"\(H, W, 3\) uint8"):
        Transform()(np.zeros((10, 10, 3), np.float32))
    with pytest.raises(ValueError, match=r"\(N, 4\)"):
        Transform()(np.zeros((10, 10, 3), np.uint8), np.zeros((2, 5), np.float32))
