"""CSVDataset: parsing (quoted paths, fork files, ignore classes, errors), image I/O, loading."""
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from retinanet.data import (
    AspectRatioBatchSampler,
    CSVDataset,
    Transform,
    collate_batch,
    read_image,
    read_image_size,
    write_class_list,
)
from retinanet.errors import UserError

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "csv"
CLASSES = ["person", "head"]


def _write_image(path: Path, height: int, width: int, rgb=(90, 120, 200)) -> None:
    """A solid-colour image of (height, width); the format follows the file extension."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = np.empty((height, width, 3), np.uint8)
    image[:] = rgb[::-1]  # OpenCV writes BGR
    assert cv2.imwrite(str(path), image)


def _dataset_dir(tmp_path: Path, fixture: str) -> Path:
    shutil.copy(FIXTURES / fixture, tmp_path / fixture)
    _write_image(tmp_path / "images" / "273271,1a0d.jpg", 300, 200)
    _write_image(tmp_path / "images" / "empty.jpg", 100, 150)
    return tmp_path / fixture


def _assert_fixture_annotations(dataset: CSVDataset, with_ignore: bool) -> None:
    assert len(dataset) == 2
    assert dataset.class_names == CLASSES and dataset.num_classes == 2
    assert dataset.image_path(0).endswith("images/273271,1a0d.jpg")
    first = dataset.annotations(0)
    np.testing.assert_array_equal(first["boxes"], [[10, 20, 50, 80], [12.5, 20, 30, 245]])
    np.testing.assert_array_equal(first["labels"], [0, 1])
    assert first["boxes"].dtype == np.float32 and first["labels"].dtype == np.int64
    if with_ignore:
        np.testing.assert_array_equal(first["ignore"], [[0, 0, 5, 5], [1, 2, 3, 4]])
        np.testing.assert_array_equal(first["ignore_labels"], [-1, 1])  # __ignore__, __ignore__:head
    empty = dataset.annotations(1)
    assert empty["boxes"].shape == (0, 4) and empty["labels"].shape == (0,)
    assert empty["ignore"].shape == (0, 4) and empty["ignore_labels"].shape == (0,)
    assert dataset.image_size(0) == (300, 200) and dataset.image_size(1) == (100, 150)
    assert dataset.aspect_ratio(0) == pytest.approx(200 / 300)


def test_quoted_paths_with_commas_float_coordinates_empty_images_and_ignore_classes(tmp_path):
    dataset = CSVDataset(_dataset_dir(tmp_path, "quoted_paths.csv"), CLASSES)
    _assert_fixture_annotations(dataset, with_ignore=True)


def test_space_delimited_files_of_the_crowdhuman_fork(tmp_path):
    dataset = CSVDataset(_dataset_dir(tmp_path, "fork_space_delimited.csv"), CLASSES, delimiter=" ")
    _assert_fixture_annotations(dataset, with_ignore=False)


def test_classes_from_a_class_list_file(tmp_path):
    write_class_list(tmp_path / "classes.csv", ["head", "person"])
    dataset = CSVDataset(_dataset_dir(tmp_path, "quoted_paths.csv"), str(tmp_path / "classes.csv"))
    assert dataset.class_names == ["head", "person"]
    np.testing.assert_array_equal(dataset.annotations(0)["labels"], [1, 0])
    np.testing.assert_array_equal(dataset.annotations(0)["ignore_labels"], [-1, 0])


def test_relative_paths_resolve_against_cwd_first_then_the_csv_folder(tmp_path, monkeypatch):
    (tmp_path / "ann").mkdir()
    (tmp_path / "ann" / "train.csv").write_text("img.png,1,1,5,5,person\n")
    _write_image(tmp_path / "ann" / "img.png", 20, 30)
    _write_image(tmp_path / "cwd" / "img.png", 40, 10)
    monkeypatch.chdir(tmp_path / "cwd")
    dataset = CSVDataset(tmp_path / "ann" / "train.csv", CLASSES)
    assert dataset.image_path(0) == "img.png" and dataset.image_size(0) == (40, 10)
    (tmp_path / "cwd" / "img.png").unlink()
    dataset = CSVDataset(tmp_path / "ann" / "train.csv", CLASSES)
    assert dataset.image_path(0) == str(tmp_path / "ann" / "img.png") and dataset.image_size(0) == (20, 30)


def test_images_of_one_image_may_be_spread_over_the_file(tmp_path):
    _write_image(tmp_path / "a.png", 10, 10)
    _write_image(tmp_path / "b.png", 10, 10)
    (tmp_path / "t.csv").write_text("a.png,1,1,2,2,person\nb.png,3,3,4,4,head\na.png,5,5,6,6,head\n")
    dataset = CSVDataset(tmp_path / "t.csv", CLASSES)
    np.testing.assert_array_equal(dataset.annotations(0)["boxes"], [[1, 1, 2, 2], [5, 5, 6, 6]])
    np.testing.assert_array_equal(dataset.annotations(0)["labels"], [0, 1])
    np.testing.assert_array_equal(dataset.annotations(1)["boxes"], [[3, 3, 4, 4]])


@pytest.mark.parametrize(
    "text, message",
    [
        ("a.png,1,2,3,person\n",
         ":1: expected 6 fields 'path,x1,y1,x2,y2,class_name' separated by ',', got 5"),
        ("a.png,1,2,3,4,person\na.png,1,x,3,4,person\n", ":2: y1 'x' is not a number"),
        ("a.png,5,2,3,4,person\n", ":1: x2 (3.0) must be greater than x1 (5.0)"),
        ("a.png,1,4,3,4,person\n", ":1: y2 (4.0) must be greater than y1 (4.0)"),
        ("a.png,1,2,3,4,dog\n", ":1: unknown class 'dog' (classes: person, head)"),
        ("a.png,1,2,3,4,__ignore__:dog\n", ":1: unknown class 'dog'"),
        ("a.png,1,2,,4,person\n", ":1: some of x1,y1,x2,y2,class_name are empty; give all or none"),
        ("a.png,1,2,3,inf,person\n", ":1: coordinates must be finite numbers"),
        ("a.png,1,2,3,nan,person\n", ":1: coordinates must be finite numbers"),
        (",1,2,3,4,person\n", ":1: empty image path"),
        # blank lines count: the error is on physical line 3
        ("a.png,1,2,3,4,person\n\na.png,7,2,3,4,person\n", ":3: x2 (3.0) must be greater than x1 (7.0)"),
        ('"a.png\n",1,2,3,4,person\na.png,1,2\n', ":3: expected 6 fields"),
    ],
)
def test_malformed_lines_stop_with_file_line_and_reason(tmp_path, text, message):
    _write_image(tmp_path / "a.png", 10, 10)
    path = tmp_path / "train.csv"
    path.write_text(text)
    with pytest.raises(UserError) as error:
        CSVDataset(path, CLASSES)
    assert str(error.value).startswith(f"{path}{message}")


def test_binary_files_and_csv_syntax_errors_are_user_errors(tmp_path):
    path = tmp_path / "train.csv"
    path.write_bytes(b"a.png,1,2,3,4,person\n\xff\xfe\x00\x01\n")
    with pytest.raises(UserError, match=f"^{path}: not a UTF-8 text file"):
        CSVDataset(path, CLASSES)
    path.write_text('a.png,1,2,3,4,person\n"' + "x" * 200_000 + '",1,2,3,4,person\n')
    with pytest.raises(UserError, match=f"^{path}:2: field larger than field limit"):
        CSVDataset(path, CLASSES)


def test_missing_image_names_the_image_and_its_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _write_image(tmp_path / "a.png", 10, 10)
    path = tmp_path / "train.csv"
    path.write_text("a.png,1,2,3,4,person\nmissing.png,,,,,\nalso_missing.png,1,2,3,4,head\n")
    with pytest.raises(UserError) as error:
        CSVDataset(path, CLASSES)
    assert str(error.value) == (
        f"{path}:2: image 'missing.png' not found in {tmp_path} or {tmp_path} (2 of 3 images are missing)"
    )


def test_unreadable_image_fails_at_start_up_naming_the_image_and_its_line(tmp_path):
    _write_image(tmp_path / "a.png", 10, 10)
    (tmp_path / "broken.png").write_bytes(b"not an image at all")
    path = tmp_path / "train.csv"
    path.write_text("a.png,1,2,3,4,person\nbroken.png,1,2,3,4,person\n")
    with pytest.raises(UserError) as error:
        CSVDataset(path, CLASSES)
    assert str(error.value).startswith(f"{path}:2: {tmp_path / 'broken.png'}: not a readable image")


def test_image_damaged_after_its_header_names_the_image_and_its_line_when_loaded(tmp_path):
    _write_image(tmp_path / "a.png", 10, 10)
    data = (tmp_path / "a.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])  # IHDR intact, image data cut
    path = tmp_path / "train.csv"
    path.write_text("a.png,1,2,3,4,person\ncut.png,1,2,3,4,person\n")
    dataset = CSVDataset(path, CLASSES)
    assert dataset.image_size(1) == (10, 10)
    with pytest.raises(UserError) as error:
        dataset[1]
    assert str(error.value).startswith(f"{path}:2: {tmp_path / 'cut.png'}: not a readable image")


def test_missing_or_empty_annotation_file_and_bad_arguments(tmp_path):
    with pytest.raises(UserError, match="annotation file not found"):
        CSVDataset(tmp_path / "nope.csv", CLASSES)
    (tmp_path / "empty.csv").write_text("\n")
    with pytest.raises(UserError, match="no annotations"):
        CSVDataset(tmp_path / "empty.csv", CLASSES)
    with pytest.raises(UserError, match="one character"):
        CSVDataset(tmp_path / "empty.csv", CLASSES, delimiter=", ")
    with pytest.raises(UserError, match="duplicate class name 'person'"):
        CSVDataset(tmp_path / "empty.csv", ["person", "person"])


def test_getitem_returns_network_input_and_resized_targets(tmp_path):
    _write_image(tmp_path / "a.png", 50, 100, rgb=(255, 0, 128))
    path = tmp_path / "t.csv"
    path.write_text("a.png,10,5,30,25,head\na.png,0,0,4,4,__ignore__\n")
    sample = CSVDataset(path, CLASSES, Transform(min_side=100, max_side=400))[0]
    assert sample["image"].shape == (3, 100, 200) and sample["image"].dtype == torch.float32
    expected_pixel = [(1 - 0.485) / 0.229, (0 - 0.456) / 0.224, (128 / 255 - 0.406) / 0.225]
    np.testing.assert_allclose(sample["image"][:, 0, 0].numpy(), expected_pixel, rtol=1e-6)
    assert sample["scale"] == 2.0 and sample["orig_size"] == (50, 100) and sample["index"] == 0
    assert sample["path"] == str(tmp_path / "a.png")
    assert torch.equal(sample["boxes"], torch.tensor([[20.0, 10.0, 60.0, 50.0]]))
    assert torch.equal(sample["labels"], torch.tensor([1]))
    assert torch.equal(sample["ignore"], torch.tensor([[0.0, 0.0, 8.0, 8.0]]))
    assert torch.equal(sample["ignore_labels"], torch.tensor([-1]))
    assert sample["boxes"].dtype == torch.float32 and sample["labels"].dtype == torch.int64


def test_default_transform_is_608_1024_without_flip(tmp_path):
    _write_image(tmp_path / "a.png", 304, 400)
    (tmp_path / "t.csv").write_text("a.png,,,,,\n")
    sample = CSVDataset(tmp_path / "t.csv", CLASSES)[0]
    assert sample["scale"] == 2.0 and sample["image"].shape == (3, 608, 800)


def _jpeg_with_fake_frame_in_exif(path: Path, height: int, width: int) -> None:
    """A JPEG whose first segment (APP1) holds bytes that look like a frame header of 16x16."""
    ok, encoded = cv2.imencode(".jpg", np.full((height, width, 3), 128, np.uint8))
    payload = b"Exif\x00\x00" + b"\xff\xc0\x00\x11\x08\x00\x10\x00\x10\x03" + b"\x00" * 20
    app1 = b"\xff\xe1" + (len(payload) + 2).to_bytes(2, "big") + payload
    data = encoded.tobytes()
    path.write_bytes(data[:2] + app1 + data[2:])


@pytest.mark.parametrize(
    "name", ["a.jpg", "progressive.jpg", "exif.jpg", "a.png", "a.bmp", "a.tiff", "grey.png"]
)
def test_image_sizes_from_headers_equal_decoded_sizes(tmp_path, name):
    path = tmp_path / name
    if name == "progressive.jpg":
        cv2.imwrite(str(path), np.zeros((37, 53, 3), np.uint8), [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])
    elif name == "exif.jpg":
        _jpeg_with_fake_frame_in_exif(path, 37, 53)
    elif name == "grey.png":
        cv2.imwrite(str(path), np.zeros((37, 53), np.uint8))
    else:
        _write_image(path, 37, 53)
    assert read_image_size(path) == (37, 53)
    image = read_image(path)
    assert image.shape == (37, 53, 3) and image.dtype == np.uint8


def test_read_image_returns_rgb(tmp_path):
    _write_image(tmp_path / "a.png", 4, 4, rgb=(250, 100, 10))
    np.testing.assert_array_equal(read_image(tmp_path / "a.png")[0, 0], [250, 100, 10])


def test_unreadable_files_are_user_errors(tmp_path):
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8\xff garbage")
    (tmp_path / "empty.png").write_bytes(b"")
    for name in ("bad.jpg", "empty.png"):
        with pytest.raises(UserError, match="not a readable image"):
            read_image(tmp_path / name)
        with pytest.raises(UserError, match="not a readable image"):
            read_image_size(tmp_path / name)
    with pytest.raises(UserError, match="cannot read image"):
        read_image(tmp_path / "missing.png")


def test_start_up_shows_a_progress_bar_only_for_large_files_and_on_rank_0(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("retinanet.data.dataset.PROGRESS_MIN_IMAGES", 3)
    for name in "abc":
        _write_image(tmp_path / f"{name}.png", 10, 10)
    (tmp_path / "small.csv").write_text("a.png,1,2,3,4,person\nb.png,1,2,3,4,person\n")
    (tmp_path / "large.csv").write_text("a.png,,,,,\nb.png,,,,,\nc.png,1,2,3,4,person\n")
    CSVDataset(tmp_path / "small.csv", CLASSES)
    assert capsys.readouterr().err == ""
    CSVDataset(tmp_path / "large.csv", CLASSES)
    bar = capsys.readouterr().err
    assert "image sizes (large.csv): 100%" in bar and "3/3 [" in bar  # [elapsed<remaining, rate]
    monkeypatch.setenv("RANK", "1")
    CSVDataset(tmp_path / "large.csv", CLASSES)
    assert capsys.readouterr().err == ""


def test_dataloader_with_two_workers(tmp_path):
    sizes = [(40, 60), (60, 40), (40, 60), (60, 40), (33, 50)]
    lines = []
    for index, (height, width) in enumerate(sizes):
        _write_image(tmp_path / f"{index}.png", height, width)
        lines.append(f"{index}.png,{index},1,{index + 5},6,person")
    (tmp_path / "t.csv").write_text("\n".join(lines) + "\n")
    dataset = CSVDataset(tmp_path / "t.csv", CLASSES, Transform(min_side=40, max_side=100))
    sampler = AspectRatioBatchSampler(dataset, batch_size=2, seed=3)
    loader = torch.utils.data.DataLoader(
        dataset, batch_sampler=sampler, collate_fn=collate_batch, num_workers=2
    )
    seen = []
    for images, targets, metas in loader:
        assert images.shape[2] % 32 == 0 and images.shape[3] % 32 == 0
        for target, meta in zip(targets, metas):
            seen.append(meta["index"])
            assert torch.equal(target["boxes"], dataset[meta["index"]]["boxes"])
        assert len({dataset.aspect_ratio(meta["index"]) > 1 for meta in metas}) == 1 or len(metas) == 1
    assert sorted(seen) == list(range(len(sizes)))
