"""Drawing primitives on hand-made images, and visualize.py on a synthetic CrowdHuman set."""
import os

import cv2
import numpy as np
import pytest
import torch

import build_annotations_file
import visualize
from retinanet.checkpoint import load_model
from retinanet.data import CSVDataset, Transform, read_image
from retinanet.data.synthetic import SyntheticConfig, generate_dataset
from retinanet.errors import UserError
from retinanet.model import RetinaNet
from retinanet.visualization import (
    class_colours,
    draw_annotation,
    draw_boxes,
    draw_detections,
    draw_ignore_regions,
    select_detections,
    side_by_side,
    write_image,
)
from tests.helpers import save_model_checkpoint

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLASSES_CSV = os.path.join(ROOT, "class_names", "crowdhuman.csv")
GREY = 90


def grey_image(height=80, width=120):
    return np.full((height, width, 3), GREY, dtype=np.uint8)


def test_class_colours_are_distinct_and_do_not_depend_on_the_class_count():
    colours = class_colours(6)
    assert colours.shape == (6, 3) and colours.dtype == np.uint8
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
    # "head 0.88" is 53 x 11 pixels (+1 baseline) at scale 0.4: its 2-pixel padded patch of the class
    # colour spans rows 16..30 (ending on the box's top edge) and columns 20..75.
    assert np.all(drawn[:16] == GREY) and np.all(drawn[:, 76:] == GREY)
    caption = drawn[16:30, 20:76]
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


@pytest.fixture(scope="module")
def synthetic_set(tmp_path_factory):
    """Four 160x128 synthetic CrowdHuman validation images, each with a mask region, and a checkpoint."""
    folder = str(tmp_path_factory.mktemp("synthetic"))
    generate_dataset(folder, num_train=1, num_val=4, config=SyntheticConfig(width=160, height=128,
                                                                            mask_fraction=1.0), seed=3)
    args = build_annotations_file.get_args_parser().parse_args(["--data_dir", folder])
    build_annotations_file.main(args)
    torch.manual_seed(0)
    model = RetinaNet(num_classes=2, depth=18, feature_size=16).eval()
    with torch.no_grad():
        # Scaled heads spread the scores over ~(0.1, 0.7), so a 0.6 threshold keeps a few boxes.
        for conv in (*[getattr(model.classificationModel, f"conv{i}") for i in range(1, 5)],
                     model.classificationModel.output):
            conv.weight.mul_(10)
        model.classificationModel.output.bias.fill_(-1.0)
        model.regressionModel.output.weight.mul_(50)
    checkpoint = os.path.join(folder, "model.pt")
    save_model_checkpoint(checkpoint, model, ["person", "head"])
    return os.path.join(folder, "valid_annotations.csv"), checkpoint


def run_visualize(annotations, checkpoint, output_dir, *extra):
    args = visualize.get_args_parser().parse_args([
        "--dataset", "csv", "--csv_classes", CLASSES_CSV, "--csv_val", annotations,
        "--model_path", checkpoint,
        "--output_dir", str(output_dir), "--min_side", "128", "--max_side", "160", "--workers", "0",
        "--device", "cpu", *extra,
    ])
    return visualize.main(args)


def assert_drawn_as(picture_half, image, drawn):
    """Where the drawing changed ``image``, the written (JPEG) half is much closer to ``drawn`` than to
    ``image``; 8+ pixels away from any change (one JPEG block), it is ``image`` up to JPEG noise."""
    changed = np.any(drawn != image, axis=2)
    to_drawn = np.abs(picture_half.astype(int) - drawn.astype(int)).mean(axis=2)
    to_image = np.abs(picture_half.astype(int) - image.astype(int)).mean(axis=2)
    assert changed.mean() > 0.02
    assert to_drawn[changed].mean() < 0.4 * to_image[changed].mean()
    far = cv2.dilate(changed.astype(np.uint8), np.ones((17, 17), np.uint8)) == 0
    assert far.any() and to_image[far].mean() < 4


def test_visualize_draws_ground_truth_and_detections_side_by_side(synthetic_set, tmp_path, monkeypatch,
                                                                    capsys):
    annotations, checkpoint = synthetic_set
    monkeypatch.setattr(visualize, "display_available", lambda: False)
    result = run_visualize(annotations, checkpoint, tmp_path, "--num_images", "3", "--score_threshold", "0.6",
                           "--batch_size", "2", "--show")
    dataset = CSVDataset(annotations, CLASSES_CSV, Transform(128, 160))
    names = sorted(os.listdir(tmp_path))
    assert len(names) == 3 and names == [os.path.basename(p) for p in result["pictures"]]
    assert [name[:5] for name in names] == ["0000_", "0001_", "0002_"]
    assert "--show: no display available" in capsys.readouterr().out

    model, class_names = load_model(checkpoint, score_threshold=0.6)
    expected_count = 0
    for index, name in enumerate(names):
        assert name[5:] == os.path.splitext(os.path.basename(dataset.image_path(index)))[0] + ".jpg"
        image = read_image(dataset.image_path(index))
        picture = read_image(tmp_path / name)
        height, width = image.shape[:2]
        bar = picture.shape[0] - height
        assert picture.shape == (height + bar, 2 * width + 4, 3)
        annotation = dataset.annotations(index)
        assert len(annotation["boxes"]) and len(annotation["ignore"])
        assert_drawn_as(picture[bar:, :width], image, draw_annotation(image, annotation, class_names))

        # The detections, computed here without the data loader and run_inference (160x128 needs no resize).
        sample = dataset[index]
        with torch.no_grad():
            output = model(sample["image"][None], image_sizes=[(height, width)])[0]
        detections = {key: value.numpy() for key, value in output.items()}
        expected_count += len(detections["scores"])
        if len(detections["scores"]):
            assert_drawn_as(picture[bar:, width + 4:], image, draw_detections(image, detections, class_names))
    assert expected_count > 0 and result["detections"] == expected_count


def test_visualize_with_nothing_above_the_threshold_leaves_the_right_half_clean(synthetic_set, tmp_path):
    annotations, checkpoint = synthetic_set
    result = run_visualize(annotations, checkpoint, tmp_path, "--num_images", "1",
                           "--score_threshold", "0.99")
    assert result["detections"] == 0
    image = read_image(CSVDataset(annotations, CLASSES_CSV).image_path(0))
    picture = read_image(result["pictures"][0])
    height, width = image.shape[:2]
    right = picture[picture.shape[0] - height:, width + 4:]
    assert np.abs(right.astype(int) - image.astype(int)).mean() < 3  # JPEG noise only


def test_visualize_errors_are_one_line_user_errors(synthetic_set, tmp_path):
    annotations, checkpoint = synthetic_set
    with pytest.raises(UserError, match="--dataset csv needs --csv_classes and --csv_val"):
        visualize.main(visualize.get_args_parser().parse_args(["--dataset", "csv", "--model", checkpoint]))
    with pytest.raises(UserError, match="--dataset coco needs --coco_path"):
        visualize.main(visualize.get_args_parser().parse_args(["--dataset", "coco", "--model", checkpoint]))
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
