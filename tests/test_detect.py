"""detect.py on folders (with a corrupt file), globs, single images and a video written here with OpenCV."""
import json
import os

import cv2
import numpy as np
import pytest
import torch

import detect
from retinanet.data import Transform, collate_batch, read_image
from retinanet.data.image_sources import ImageFiles, collate_readable, resolve_input
from retinanet.errors import UserError
from retinanet.hub import load_model
from retinanet.visualization import draw_detections
from tests.helpers import save_model_checkpoint, spread_model

CLASS_NAMES = ["person", "head"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A random ResNet-18 RetinaNet scoring ~(0.1, 0.7), so a 0.3 threshold keeps some boxes."""
    model = spread_model()
    path = str(tmp_path_factory.mktemp("model") / "model.pt")
    save_model_checkpoint(path, model, CLASS_NAMES)
    return path


def noise_image(seed, height=64, width=96):
    rng = np.random.default_rng(seed)
    image = cv2.GaussianBlur(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), (5, 5), 0)
    cv2.rectangle(image, (10 + seed, 8), (40 + seed, 56), (230, 230, 230), -1)
    return image


@pytest.fixture()
def folder(tmp_path):
    """b.png (64x96), c.jpg (80x72), sub/d.png, a corrupt a.jpg, and notes.txt."""
    root = tmp_path / "inputs"
    (root / "sub").mkdir(parents=True)
    cv2.imwrite(str(root / "b.png"), noise_image(1))
    cv2.imwrite(str(root / "c.jpg"), noise_image(2, 80, 72))
    cv2.imwrite(str(root / "sub" / "d.png"), noise_image(3))
    (root / "a.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (root / "notes.txt").write_text("not an image\n")
    return root


def run_detect(checkpoint, input_path, output_dir, *extra):
    args = detect.get_args_parser().parse_args([
        "--model_path", checkpoint, "--input", str(input_path), "--output_dir", str(output_dir),
        "--min_side", "64", "--max_side", "96", "--workers", "0", "--device", "cpu",
        "--score_threshold", "0.3", *extra,
    ])
    return detect.main(args)


def read_records(output_dir):
    with open(os.path.join(output_dir, "detections.jsonl"), encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]


def test_folder_skips_and_counts_the_corrupt_file(checkpoint, folder, tmp_path):
    out = tmp_path / "out"
    summary = run_detect(checkpoint, folder, out, "--batch_size", "2")
    assert summary["images"] == 2
    assert [(e["index"], os.path.basename(e["path"])) for e in summary["unreadable"]] == [(0, "a.jpg")]
    assert "not a readable image" in summary["unreadable"][0]["error"]
    assert [os.path.basename(p) for p in summary["not_images"]] == ["notes.txt"]
    records = read_records(out)
    assert [(os.path.basename(r["file"]), r["height"], r["width"]) for r in records] == [
        ("b.png", 64, 96), ("c.jpg", 80, 72)]
    assert summary["detections"] == sum(len(r["scores"]) for r in records) > 0
    for record in records:
        counts = {key: len(record[key]) for key in ("boxes", "scores", "labels", "classes")}
        assert len(set(counts.values())) == 1
        assert all(score >= 0.3 for score in record["scores"])
        assert [CLASS_NAMES[label] for label in record["labels"]] == record["classes"]
    assert sorted(os.listdir(out)) == ["b.png", "c.jpg", "detections.jsonl", "summary.json"]
    assert json.loads((out / "summary.json").read_text())["images"] == 2
    # b.png is lossless: its annotated copy is exactly the recorded boxes drawn on the input.
    assert summary["annotated"] == 2
    record = records[0]
    detections = {"boxes": np.array(record["boxes"], np.float32), "scores": np.array(record["scores"]),
                  "labels": np.array(record["labels"])}
    original = read_image(folder / "b.png")
    expected = draw_detections(original, detections, CLASS_NAMES)
    assert np.any(expected != original)
    assert np.array_equal(read_image(out / "b.png"), expected)


def test_records_hold_the_model_detections_in_original_pixels(checkpoint, folder, tmp_path):
    """c.jpg (80x72) is resized by 64/72: its recorded boxes are the model's, divided by that scale."""
    run_detect(checkpoint, folder / "c.jpg", tmp_path / "out", "--precision", "fp32")  # as the model below
    records = read_records(tmp_path / "out")
    model, _ = load_model(checkpoint, score_threshold=0.3)
    image = read_image(folder / "c.jpg")
    tensor, _, _, scale = Transform(64, 96)(image)
    assert scale == pytest.approx(64 / 72)
    assert tensor.shape == (3, 71, 64)
    padded = torch.nn.functional.pad(tensor, (0, 0, 0, 96 - 71))[None]  # bottom rows up to a multiple of 32
    with torch.no_grad():
        output = model(padded, image_sizes=[(71, 64)], image_scales=[scale])[0]
    boxes = output["boxes"].numpy()
    boxes[:, 0::2] = boxes[:, 0::2].clip(0, 72)
    boxes[:, 1::2] = boxes[:, 1::2].clip(0, 80)
    assert len(records) == 1 and len(records[0]["boxes"]) == len(boxes) > 0
    assert np.allclose(records[0]["boxes"], boxes, atol=0.011)
    assert np.allclose(records[0]["scores"], output["scores"].numpy(), atol=1e-4)
    assert records[0]["labels"] == output["labels"].tolist()


def test_glob_recurses_and_keeps_relative_output_paths(checkpoint, folder, tmp_path):
    out = tmp_path / "out"
    summary = run_detect(checkpoint, f"{folder}/**/*.png", out, "--batch_size", "4")
    assert summary["images"] == 2 and summary["unreadable"] == [] and summary["not_images"] == []
    files = [os.path.relpath(r["file"], folder) for r in read_records(out)]
    assert files == ["b.png", os.path.join("sub", "d.png")]
    assert (out / "b.png").is_file() and (out / "sub" / "d.png").is_file()


def test_classes_to_show_and_no_images(checkpoint, folder, tmp_path):
    out = tmp_path / "out"
    everything = run_detect(checkpoint, folder / "b.png", tmp_path / "all", "--no_images")
    summary = run_detect(checkpoint, folder / "b.png", out, "--no_images", "--classes_to_show", "head")
    records = read_records(out)
    assert all(label == 1 for label in records[0]["labels"])
    all_labels = read_records(tmp_path / "all")[0]["labels"]
    assert summary["detections"] == all_labels.count(1) < everything["detections"]
    assert sorted(os.listdir(out)) == ["detections.jsonl", "summary.json"] and summary["annotated"] == 0


def test_video_records_every_frame_in_order(checkpoint, tmp_path):
    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (96, 64))
    for frame_index in range(7):
        writer.write(noise_image(frame_index))
    writer.release()
    out = tmp_path / "out"
    summary = run_detect(checkpoint, video, out, "--batch_size", "3", "--workers", "1")
    assert summary["kind"] == "video" and summary["frames"] == summary["annotated"] == 7
    assert summary["frames_per_second"] > 0
    records = read_records(out)
    assert [r["frame"] for r in records] == list(range(7))
    assert [r["time_s"] for r in records] == pytest.approx([i / 10 for i in range(7)])
    capture = cv2.VideoCapture(str(out / "clip.avi"))
    frames = 0
    while capture.read()[0]:
        frames += 1
    capture.release()
    assert frames == 7
    assert sorted(os.listdir(out)) == ["clip.avi", "detections.jsonl", "summary.json"]


@pytest.mark.parametrize("make_input,message", [
    (lambda folder: folder / "a.jpg", "a.jpg: not a readable image"),
    (lambda folder: folder / "missing.png", "missing.png: no such file or folder"),
    (lambda folder: f"{folder}/*.gif", r"\*.gif: the pattern matches no files"),
    (lambda folder: folder / "notes.txt", "notes.txt: not a readable image"),
])
def test_a_single_bad_input_is_a_user_error(checkpoint, folder, tmp_path, make_input, message):
    with pytest.raises(UserError, match=message):
        run_detect(checkpoint, make_input(folder), tmp_path / "out")
    assert not (tmp_path / "out" / "detections.jsonl").exists()


def test_bad_options_are_user_errors(checkpoint, folder, tmp_path):
    with pytest.raises(UserError, match="unknown class 'car'; the model's classes are person, head"):
        run_detect(checkpoint, folder, tmp_path / "out", "--classes_to_show", "car")
    with pytest.raises(UserError, match="would overwrite it"):
        run_detect(checkpoint, folder / "b.png", folder)
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "x.png").write_bytes(b"")
    (tmp_path / "broken" / "y.jpg").write_bytes(b"GIF89a")
    with pytest.raises(UserError, match="none of the 2 images could be read"):
        run_detect(checkpoint, tmp_path / "broken", tmp_path / "out")


def test_readable_collate_separates_unreadable_samples(folder):
    spec = resolve_input(str(folder))
    assert [os.path.basename(p) for p in spec.paths] == ["a.jpg", "b.png", "c.jpg"]
    dataset = ImageFiles(spec.paths, Transform(64, 96))
    images, _, metas, errors = collate_readable([dataset[0], dataset[1], dataset[2]])
    expected, _, _ = collate_batch([dataset[1], dataset[2]])
    assert torch.equal(images, expected)
    assert [m["index"] for m in metas] == [1, 2] and [e["index"] for e in errors] == [0]
    assert collate_readable([dataset[0]])[0] is None
