"""Drawing primitives on hand-made images, and visualize.py on a hand-made set checked pixel by pixel."""
import colorsys
import os

import cv2
import numpy as np
import pytest
import torch

import visualize
from retinanet.data import CSVDataset, Transform, read_image
from retinanet.errors import UserError
from retinanet.hub import load_model
from retinanet.visualization import (
    class_colours,
    draw_boxes,
    draw_ignore_regions,
    select_detections,
    side_by_side,
    write_image,
)
from tests.helpers import save_model_checkpoint, spread_model

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLASSES_CSV = os.path.join(ROOT, "class_names", "crowdhuman.csv")
GREY = 90


def grey_image(height=80, width=120):
    return np.full((height, width, 3), GREY, dtype=np.uint8)


def test_class_colours_are_distinct_and_do_not_depend_on_the_class_count():
    colours = class_colours(6)
    assert colours.shape == (6, 3) and colours.dtype == np.uint8
    assert colours[:2].tolist() == [list(PERSON_RGB), list(HEAD_RGB)]
    # Python's own HSV conversion at the hue OpenCV keeps: k golden-ratio turns, in whole 1/180ths.
    for k, colour in enumerate(colours.tolist()):
        hue = int((k * 0.618033988749895 % 1.0) * 180) / 180
        expected = [255 * channel for channel in colorsys.hsv_to_rgb(hue, 220 / 255, 1.0)]
        assert np.abs(np.array(colour) - expected).max() <= 1, k
    assert len({tuple(c) for c in colours.tolist()}) == 6
    assert np.array_equal(class_colours(3), colours[:3])


def test_box_edges_take_the_class_colour_and_the_input_is_untouched():
    image = grey_image()
    colours = class_colours(2)
    drawn = draw_boxes(image, np.array([[20.2, 30.0, 70.0, 79.9]]), np.array([1]), ["person", "head"],
                       scores=np.array([0.875]))
    assert np.all(image == GREY)
    head = colours[1]
    # Left edge x = 20 from below the caption to the bottom; bottom edge y = 79 (80 clipped to the last row).
    assert np.all(drawn[45:79, 20] == head)
    assert np.all(drawn[79, 20:71] == head)
    assert np.all(drawn[40:70, 30:60] == GREY)  # inside the box
    # "head 0.88" at scale 0.4 is OpenCV's text size (53 x 11 pixels + 1 baseline in OpenCV 4, 55 wide in
    # 5): its 2-pixel padded patch of the class colour ends on the box's top edge (row 30) and starts at x = 20.
    (width, height), baseline = cv2.getTextSize("head 0.88", cv2.FONT_HERSHEY_SIMPLEX, 0.4, 1)
    top, right = 30 - height - baseline - 2, 20 + width + 2
    assert (top, height, baseline) == (16, 11, 1) and width in (53, 55)
    assert np.all(drawn[:top] == GREY) and np.all(drawn[:, right + 1:] == GREY)
    assert np.all(drawn[top:31, right] == head)
    caption = drawn[top:30, 20:right]
    assert 0.5 < (caption == head).all(axis=2).mean() < 1.0  # patch with text in it


def test_ignore_regions_are_hatched_inside_a_dashed_border():
    image = grey_image(64, 64)
    drawn = draw_ignore_regions(image, np.array([[8, 8, 56, 56]]), np.array([-1]))
    changed = np.any(drawn != GREY, axis=2)
    assert not changed[:8].any() and not changed[57:].any() and not changed[:, :8].any()
    bottom = changed[55, 8:56]  # dashed: runs of drawn and undrawn pixels
    assert 0.3 < bottom.mean() < 0.7
    # Below the caption, 1 pixel in 8 is on a stripe of slope -1: (x + y) mod 8 constant.
    interior = changed[30:54, 10:54]
    assert interior.mean() == pytest.approx(1 / 8, abs=0.02)
    ys, xs = np.nonzero(interior)
    assert len(set(((xs + ys) % 8).tolist())) == 1


def test_side_by_side_puts_both_images_under_title_bars():
    left, right = grey_image(60, 80), np.zeros((60, 80, 3), np.uint8)
    picture = side_by_side(left, right, "ground truth", "detections")
    bar, gap = 20, 4
    assert picture.shape == (60 + bar, 2 * 80 + gap, 3)
    assert np.array_equal(picture[bar:, :80], left)
    assert np.array_equal(picture[bar:, 80 + gap:], right)
    assert (picture[:bar, :80] < 128).any()  # title text


def test_select_detections_by_score_and_class():
    detections = {"boxes": np.arange(16, dtype=np.float32).reshape(4, 4),
                  "scores": np.array([0.9, 0.5, 0.49, 0.7], np.float32), "labels": np.array([0, 1, 0, 1])}
    kept = select_detections(detections, 0.5)
    assert kept["scores"].tolist() == pytest.approx([0.9, 0.5, 0.7])
    kept = select_detections(detections, 0.5, classes=[1])
    assert kept["labels"].tolist() == [1, 1] and kept["boxes"][:, 0].tolist() == [4.0, 12.0]


def test_write_image_round_trips_png_and_rejects_unknown_extensions(tmp_path):
    image = np.random.default_rng(0).integers(0, 256, (10, 12, 3), dtype=np.uint8)
    write_image(tmp_path / "a.png", image)
    assert np.array_equal(read_image(tmp_path / "a.png"), image)
    with pytest.raises(UserError, match="extension '.xyz'"):
        write_image(tmp_path / "a.xyz", image)
    assert sorted(os.listdir(tmp_path)) == ["a.png"]


# class_colours by hand: HSV saturation 220, value 255 and hue 0 (class 0) or 0.618 turns = 111 of
# OpenCV's 180 = 222 degrees (class 1) are RGB (255, 35, 35) and (35, 255 - 0.7 * 220, 255).
PERSON_RGB, HEAD_RGB = (255, 35, 35), (35, 101, 255)
# Per image of the hand-made set: a person box and a head box, shifted right by 8 px per image, and an
# ignore region; the drawn objects sit 8 px inside their boxes, so box edges fall on plain background.
HAND_BOXES = [{"person": (20 + 8 * i, 40, 70 + 8 * i, 110), "head": (100 + 8 * i, 24, 140 + 8 * i, 64),
               "__ignore__": (84 + 8 * i, 80, 150, 124)} for i in range(3)]


@pytest.fixture(scope="module")
def hand_set(tmp_path_factory):
    """Three 128x160 PNGs (grey 90, objects 140) with HAND_BOXES, their CSV, and a spread_model checkpoint."""
    folder = tmp_path_factory.mktemp("hand")
    lines = []
    for index, boxes in enumerate(HAND_BOXES):
        image = np.full((128, 160, 3), GREY, np.uint8)
        path = str(folder / f"street_{index}.png")
        for name, (x1, y1, x2, y2) in boxes.items():
            if name != "__ignore__":
                image[y1 + 8:y2 - 8, x1 + 8:x2 - 8] = 140
            lines.append(f"{path},{x1},{y1},{x2},{y2},{name}")
        write_image(path, image)
    annotations = folder / "annotations.csv"
    annotations.write_text("\n".join(lines) + "\n")
    checkpoint = str(folder / "model.pt")
    save_model_checkpoint(checkpoint, spread_model(), ["person", "head"])
    return str(annotations), checkpoint


def run_visualize(annotations, checkpoint, output_dir, *extra):
    args = visualize.get_args_parser().parse_args([
        "--dataset", "csv", "--csv_classes", CLASSES_CSV, "--csv_val", annotations,
        "--model_path", checkpoint,
        "--output_dir", str(output_dir), "--min_side", "128", "--max_side", "160", "--workers", "0",
        "--device", "cpu", *extra,
    ])
    return visualize.main(args)


def assert_line_colour(pixels, rgb):
    """pixels (N, 3) of a 1-pixel line in the written JPEG: its median has ``rgb``'s dominant channel.

    The JPEG's 4:2:0 chroma subsampling halves a thin line's colour against the grey around it, so
    the channel order, not the value, is what survives: e.g. (255, 35, 35) is written ~(160, 76, 76).
    """
    median = np.median(pixels.astype(int), axis=0)
    dominant = int(np.argmax(rgb))
    assert median[dominant] - np.delete(median, dominant).max() > 50, (median, rgb)


def assert_box_drawn(half, box, rgb):
    """Left edge (below its caption, which sits above the top edge) and bottom edge of ``box`` in ``rgb``."""
    x1, y1, x2, y2 = box
    assert_line_colour(half[y1 + 2:y2, x1], rgb)
    assert_line_colour(half[y2, x1 + 2:x2 - 1], rgb)


def test_visualize_draws_ground_truth_and_detections_side_by_side(hand_set, tmp_path, monkeypatch, capsys):
    annotations, checkpoint = hand_set
    monkeypatch.setattr(visualize, "display_available", lambda: False)
    # 0.353 keeps 5, 2 and 3 detections, at least 0.004 from the threshold (kernels differ by ~1e-6).
    result = run_visualize(annotations, checkpoint, tmp_path, "--num_images", "3", "--score_threshold", "0.353",
                           "--batch_size", "2", "--show", "--precision", "fp32")  # as the model below
    names = sorted(os.listdir(tmp_path))
    assert names == ["0000_street_0.jpg", "0001_street_1.jpg", "0002_street_2.jpg"]
    assert names == [os.path.basename(p) for p in result["pictures"]]
    assert "--show: no display available" in capsys.readouterr().out

    # The detections, computed here from the PNG without the data loader or run_inference.
    model, _ = load_model(checkpoint, score_threshold=0.353)
    dataset = CSVDataset(annotations, CLASSES_CSV, Transform(128, 160))  # 160x128 needs no resize
    expected_count = 0
    for index, (name, boxes) in enumerate(zip(names, HAND_BOXES)):
        picture = read_image(tmp_path / name)
        # Title bars of max(20, 128 // 16) rows over two 160-px halves, a white gap of max(4, 160 // 100).
        assert picture.shape == (20 + 128, 160 + 4 + 160, 3)
        assert (picture[:20] > 200).mean() > 0.8 and (picture[:20] < 100).any()  # white bars with titles
        assert np.median(picture[20:, 160:164]) > 240  # the gap (JPEG blurs lines next to it into it)
        left, right = picture[20:, :160], picture[20:, 164:]

        assert_box_drawn(left, boxes["person"], PERSON_RGB)
        assert_box_drawn(left, boxes["head"], HEAD_RGB)
        person = boxes["person"]
        assert np.abs(left[75, person[0] + 12].astype(int) - 140).max() <= 3  # the object inside, untouched
        assert np.abs(left[10, 5].astype(int) - GREY).max() <= 3
        x1, y1, x2, y2 = boxes["__ignore__"]
        border = left[y1 + 12:y2 - 1, x1].astype(int)  # dashes of (160, 160, 160) on grey 90
        assert border.max() > 140 and np.abs(border[:, 0] - border[:, 2]).max() <= 8

        with torch.no_grad():
            output = model(dataset[index]["image"][None])[0]
        assert len(output["scores"]) > 1
        expected_count += len(output["scores"])
        # The best detection is drawn last, over the others.
        best = [int(round(float(v))) for v in output["boxes"][0].clamp(min=0)]
        best = [min(best[0], 159), min(best[1], 127), min(best[2], 159), min(best[3], 127)]
        assert_box_drawn(right, best, PERSON_RGB if int(output["labels"][0]) == 0 else HEAD_RGB)
    assert result["detections"] == expected_count


def test_visualize_with_nothing_above_the_threshold_leaves_the_right_half_clean(hand_set, tmp_path):
    annotations, checkpoint = hand_set
    result = run_visualize(annotations, checkpoint, tmp_path, "--num_images", "1",
                           "--score_threshold", "0.99")
    assert result["detections"] == 0
    image = read_image(CSVDataset(annotations, CLASSES_CSV).image_path(0))
    picture = read_image(result["pictures"][0])
    height, width = image.shape[:2]
    right = picture[picture.shape[0] - height:, width + 4:]
    assert np.abs(right.astype(int) - image.astype(int)).mean() < 3  # JPEG noise only


def test_visualize_errors_are_one_line_user_errors(hand_set, tmp_path):
    annotations, checkpoint = hand_set
    with pytest.raises(UserError, match=r"--dataset csv needs --classes \(or --csv_classes\) and --csv_val"):
        visualize.main(visualize.get_args_parser().parse_args(["--dataset", "csv", "--model", checkpoint]))
    with pytest.raises(UserError, match="--dataset coco needs --coco_path"):
        visualize.main(visualize.get_args_parser().parse_args(["--dataset", "coco", "--model", checkpoint]))
    with pytest.raises(UserError, match="--classes only applies to --dataset csv"):
        visualize.main(visualize.get_args_parser().parse_args(
            ["--dataset", "coco", "--coco_path", str(tmp_path), "--classes", CLASSES_CSV, "--model", checkpoint]))
    with pytest.raises(UserError, match="checkpoint file not found"):
        run_visualize(annotations, str(tmp_path / "missing.pt"), tmp_path)
    assert not os.listdir(tmp_path)


def test_the_original_readme_flags_parse():
    args = visualize.get_args_parser().parse_args(
        ["--dataset", "coco", "--coco_path", "./data/COCO2017", "--model", "w.pt"])
    assert (args.model_path, args.num_images, args.output_dir, args.score_threshold) == (
        "w.pt", 10, "./vis_results", 0.5)
    args = visualize.get_args_parser().parse_args(
        ["--dataset", "csv", "--csv_classes", "c.csv", "--csv_val", "v.csv", "--model_path", "w.pt"])
    assert args.model_path == "w.pt" and args.show is False
