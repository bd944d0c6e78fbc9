"""Valid files that look unusual load with no flag: odd pixel formats, EXIF orientations, CSV and
class files as editors and spreadsheets write them, awkward paths, YOLO-style COCO labels.

Every file is written here; Pillow (an independent decoder) is the reference for pixels and for
the displayed orientation (``ImageOps.exif_transpose``).
"""
import struct

import cv2
import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from retinanet.coco_names import COCO_CATEGORY_IDS, COCO_CLASS_NAMES
from retinanet.data import CocoDataset, CSVDataset, Transform, read_class_list, read_image, read_image_size
from retinanet.data.image_sources import ImageFiles, resolve_input
from retinanet.errors import UserError
from retinanet.evaluation import evaluate_coco

CLASSES = ["person", "head"]


def _pattern(height: int, width: int) -> np.ndarray:
    """(H, W, 3) uint8 RGB of 8-pixel blocks in distinct colours: any turn or mirror changes it a lot."""
    rows, columns = np.mgrid[0:height, 0:width] // 8
    return np.stack([(rows * 70) % 256, (columns * 90) % 256, ((rows + 2 * columns) * 40) % 256],
                    axis=2).astype(np.uint8)


def _exif(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif.tobytes()


def _pillow_rgb(path) -> np.ndarray:
    """What Pillow displays: (H, W, 3) uint8 RGB after the EXIF orientation."""
    with Image.open(path) as image:
        return np.asarray(ImageOps.exif_transpose(image).convert("RGB"))


def _one_box_csv(folder, image_name: str, box="1,2,5,6") -> str:
    path = folder / "train.csv"
    path.write_text(f'"{image_name}",{box},person\n', encoding="utf-8")
    return str(path)


# --- pixel formats ---------------------------------------------------------------------------

def _write_odd_image(path, kind: str) -> np.ndarray:
    """Write ``kind`` to ``path``; return the (H, W, 3) uint8 RGB it must decode to, computed apart."""
    rgb = _pattern(24, 40)
    if kind == "grey.png":
        Image.fromarray(rgb[..., 0]).save(path)
        return np.repeat(rgb[..., :1], 3, axis=2)
    if kind == "rgba.png":
        Image.fromarray(np.dstack([rgb, np.full(rgb.shape[:2], 9, np.uint8)])).save(path)
        return rgb  # alpha dropped, colour kept
    if kind == "palette.png":
        Image.fromarray(rgb).quantize(colors=16).save(path)
        return _pillow_rgb(path)
    if kind in ("rgb16.png", "grey16.png"):
        rng = np.random.default_rng(0)
        samples = rng.integers(0, 65536, (24, 40, 3 if kind == "rgb16.png" else 1), dtype=np.uint16)
        samples[0, 0] = [65535] * samples.shape[2]
        samples[0, 1] = [128] * samples.shape[2]  # 0.498 of a level: rounds to 0
        samples[0, 2] = [129] * samples.shape[2]  # 0.502 of a level: rounds to 1
        cv2.imwrite(str(path), samples[..., ::-1] if samples.shape[2] == 3 else samples[..., 0])
        # nearest 8-bit level of each 16-bit sample, by integer arithmetic (v / 257 rounded)
        expected = ((samples.astype(np.int64) * 2 + 257) // 514).astype(np.uint8)
        return np.repeat(expected, 3, axis=2) if samples.shape[2] == 1 else expected
    if kind == "grey.jpg":
        Image.fromarray(rgb[..., 0]).save(path, quality=95)
        return _pillow_rgb(path)
    if kind == "cmyk.jpg":
        Image.fromarray(rgb).convert("CMYK").save(path, quality=95)
        return _pillow_rgb(path)
    raise AssertionError(kind)


@pytest.mark.parametrize(
    "kind", ["grey.png", "rgba.png", "palette.png", "rgb16.png", "grey16.png", "grey.jpg", "cmyk.jpg"]
)
def test_pixel_formats_load_as_8_bit_rgb(tmp_path, kind):
    expected = _write_odd_image(tmp_path / kind, kind)
    dataset = CSVDataset(_one_box_csv(tmp_path, kind), CLASSES, Transform(min_side=48, max_side=200))
    assert dataset.image_size(0) == (24, 40)
    image = read_image(dataset.image_path(0))
    assert image.shape == (24, 40, 3) and image.dtype == np.uint8
    # Pillow and OpenCV run different JPEG colour conversions; PNG decoding is exact.
    tolerance = 2 if kind.endswith(".jpg") else 0
    assert np.abs(image.astype(int) - expected).max() <= tolerance
    sample = dataset[0]
    assert sample["image"].shape == (3, 48, 80) and sample["orig_size"] == (24, 40)


def test_16_bit_samples_round_to_the_nearest_level(tmp_path):
    # k + 0.5 levels is 257 k + 128.5: 128 and 385 round down, 129 and 386 up (a shift by 8 bits gives 0, 1).
    samples = np.array([[[0, 128, 129], [257, 385, 386], [65406, 65407, 65535]]], np.uint16)
    cv2.imwrite(str(tmp_path / "a.png"), samples[..., ::-1])
    np.testing.assert_array_equal(read_image(tmp_path / "a.png"), [[[0, 0, 1], [1, 1, 2], [254, 255, 255]]])


def test_float_samples_are_a_user_error(tmp_path):
    path = tmp_path / "float.tiff"
    assert cv2.imwrite(str(path), np.full((4, 4, 3), 0.5, np.float32))
    with pytest.raises(UserError, match=r"float.tiff: float32 samples are not supported"):
        read_image(path)


# --- EXIF orientation ------------------------------------------------------------------------

@pytest.mark.parametrize("extension", ["jpg", "png"])
@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_sizes_and_pixels_are_as_displayed(tmp_path, extension, orientation):
    path = tmp_path / f"photo.{extension}"
    Image.fromarray(_pattern(24, 40)).save(path, exif=_exif(orientation), quality=95)
    displayed = _pillow_rgb(path)
    assert displayed.shape[:2] == ((40, 24) if orientation >= 5 else (24, 40))
    image = read_image(path)
    assert image.shape == displayed.shape
    assert np.abs(image.astype(int) - displayed).mean() < 2  # a wrong turn differs by ~80 on average
    assert read_image_size(path) == displayed.shape[:2]


def _jpeg_with_exif(path, orientation: int, byte_order: str, after_frame: bool) -> None:
    """A 24x40 JPEG whose EXIF block (written here by hand, in either byte order) holds ``orientation``."""
    fmt = "<" if byte_order == "II" else ">"
    tiff = (byte_order.encode() + struct.pack(fmt + "HI", 42, 8)
            + struct.pack(fmt + "H", 2)  # two entries: Make first, Orientation second
            + struct.pack(fmt + "HHI4s", 0x010F, 2, 4, b"abc\x00")
            + struct.pack(fmt + "HHIHH", 0x0112, 3, 1, orientation, 0) + struct.pack(fmt + "I", 0))
    payload = b"Exif\x00\x00" + tiff
    segment = b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload
    data = cv2.imencode(".jpg", _pattern(24, 40))[1].tobytes()
    position = data.index(b"\xff\xc0") if after_frame else 2
    if after_frame:  # just after the frame header, where the decoder still reads it
        position += 2 + struct.unpack(">H", data[position + 2:position + 4])[0]
    path.write_bytes(data[:position] + segment + data[position:])


@pytest.mark.parametrize("byte_order", ["II", "MM"])
@pytest.mark.parametrize("after_frame", [False, True])
def test_jpeg_header_size_follows_the_exif_block_opencv_applies(tmp_path, byte_order, after_frame):
    path = tmp_path / "a.jpg"
    _jpeg_with_exif(path, 6, byte_order, after_frame)
    assert read_image(path).shape[:2] == (40, 24)  # OpenCV turned it: the reference
    assert read_image_size(path) == (40, 24)


def test_png_exif_chunk_after_the_image_data_counts_too(tmp_path):
    Image.fromarray(_pattern(24, 40)).save(tmp_path / "a.png", exif=_exif(8))
    data = (tmp_path / "a.png").read_bytes()
    chunks, position = [], 8
    while position < len(data):
        (length,) = struct.unpack(">I", data[position:position + 4])
        chunks.append(data[position:position + 12 + length])
        position += 12 + length
    exif = next(chunk for chunk in chunks if chunk[4:8] == b"eXIf")
    others = [chunk for chunk in chunks if chunk is not exif]
    (tmp_path / "late.png").write_bytes(data[:8] + b"".join(others[:-1]) + exif + others[-1])  # before IEND
    assert read_image(tmp_path / "late.png").shape[:2] == (40, 24)
    assert read_image_size(tmp_path / "late.png") == (40, 24)


def test_boxes_of_a_turned_photo_are_in_displayed_pixels(tmp_path):
    # Stored 24 high x 40 wide, shown 40 high x 24 wide; the box is drawn on the shown picture.
    Image.fromarray(_pattern(24, 40)).save(tmp_path / "phone.jpg", exif=_exif(6))
    dataset = CSVDataset(_one_box_csv(tmp_path, "phone.jpg", "0,20,24,40"), CLASSES,
                         Transform(min_side=48, max_side=400))
    assert dataset.image_size(0) == (40, 24) and dataset.aspect_ratio(0) == pytest.approx(24 / 40)
    sample = dataset[0]
    assert sample["orig_size"] == (40, 24) and sample["image"].shape == (3, 80, 48)
    assert torch.equal(sample["boxes"], torch.tensor([[0.0, 40.0, 48.0, 80.0]]))  # 2x, at the border


def test_detect_reports_the_size_the_model_saw(tmp_path):
    Image.fromarray(_pattern(24, 40)).save(tmp_path / "phone.jpg", exif=_exif(6))
    spec = resolve_input(str(tmp_path))
    sample = ImageFiles(spec.paths, Transform(min_side=48, max_side=400))[0]
    assert sample["orig_size"] == read_image_size(spec.paths[0]) == (40, 24)
    assert sample["image"].shape == (3, 80, 48)


# --- CSV and class files -------------------------------------------------------------------------

def test_csv_and_class_files_with_bom_crlf_and_trailing_blank_lines(tmp_path):
    cv2.imwrite(str(tmp_path / "a.png"), np.zeros((50, 60, 3), np.uint8))
    (tmp_path / "classes.csv").write_bytes("\ufeffperson,0\r\nhead,1\r\n\r\n  \r\n".encode("utf-8"))
    (tmp_path / "train.csv").write_bytes(
        "\ufeffa.png,1,2,3,4,head\r\na.png,5,6,7,8,person\r\n\r\n,,,,,\r\n   \r\n".encode("utf-8")
    )
    assert read_class_list(tmp_path / "classes.csv") == ["person", "head"]
    dataset = CSVDataset(tmp_path / "train.csv", str(tmp_path / "classes.csv"))
    assert len(dataset) == 1 and dataset.image_path(0) == str(tmp_path / "a.png")
    np.testing.assert_array_equal(dataset.annotations(0)["boxes"], [[1, 2, 3, 4], [5, 6, 7, 8]])
    np.testing.assert_array_equal(dataset.annotations(0)["labels"], [1, 0])


def test_bom_in_a_class_names_txt_and_a_coco_json(tmp_path):
    from retinanet.data import read_class_names_txt

    (tmp_path / "names.txt").write_bytes("\ufeffperson\r\nhead\r\n\r\n".encode("utf-8"))
    assert read_class_names_txt(tmp_path / "names.txt") == ["person", "head"]
    (tmp_path / "images" / "val2017").mkdir(parents=True)
    cv2.imwrite(str(tmp_path / "images" / "val2017" / "a.png"), np.zeros((10, 10, 3), np.uint8))
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "instances_val2017.json").write_bytes(
        '\ufeff{"images": [{"id": 1, "file_name": "a.png"}], "categories": [{"id": 1, "name": "person"}], '
        '"annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 2, 3, 4]}]}'.encode("utf-8")
    )
    np.testing.assert_array_equal(CocoDataset(tmp_path).annotations(0)["boxes"], [[1, 2, 4, 6]])


def test_paths_with_spaces_commas_non_ascii_and_upper_case_extensions(tmp_path):
    names = ["my photos/beach day.JPG", "273271,1a0d.PNG", "фото/日本 1.jpeg"]
    for index, name in enumerate(names):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        ok, data = cv2.imencode(".png" if name.endswith(".PNG") else ".jpg", np.zeros((20 + index, 30, 3), np.uint8))
        (tmp_path / name).write_bytes(data.tobytes())  # cv2.imwrite cannot write non-ASCII paths everywhere
    (tmp_path / "train.csv").write_text(
        "".join(f'"{name}",1,2,3,4,person\n' for name in names), encoding="utf-8"
    )
    dataset = CSVDataset(tmp_path / "train.csv", CLASSES, Transform(min_side=20, max_side=100))
    assert [dataset.image_path(i) for i in range(3)] == [str(tmp_path / name) for name in names]
    assert [dataset.image_size(i) for i in range(3)] == [(20, 30), (21, 30), (22, 30)]
    assert [dataset[i]["orig_size"] for i in range(3)] == [(20, 30), (21, 30), (22, 30)]
    assert resolve_input(str(tmp_path / "my photos")).paths == [str(tmp_path / names[0])]


def test_coordinates_in_any_float_notation_and_boxes_on_the_border(tmp_path):
    cv2.imwrite(str(tmp_path / "a.png"), np.zeros((80, 100, 3), np.uint8))
    (tmp_path / "train.csv").write_text(
        "a.png,2e1,60.5, 1E2 ,8.0e+1,person\n"  # 20, 60.5, 100, 80: on the right and bottom border
        "a.png,0,0,100,80,head\n"  # the whole image
        "a.png,.5,1.,25,30,head\n"
    )
    transform = Transform(min_side=160, max_side=400, flip_prob=1.0)
    dataset = CSVDataset(tmp_path / "train.csv", CLASSES, transform)
    np.testing.assert_array_equal(
        dataset.annotations(0)["boxes"], [[20, 60.5, 100, 80], [0, 0, 100, 80], [0.5, 1, 25, 30]]
    )
    sample = dataset[0]  # scaled by 2 and mirrored in a 200-pixel-wide image
    expected = [[0, 121, 160, 160], [0, 0, 200, 160], [150, 2, 199, 60]]
    np.testing.assert_array_equal(sample["boxes"].numpy(), expected)


# --- COCO in the YOLO-style layout -----------------------------------------------------------

def _write_yolo_coco(root, with_list: bool = True):
    """val2017 of three images; returns the boxes each must give, converted by hand to pixels."""
    images = root / "images" / "val2017"
    labels = root / "labels" / "val2017"
    images.mkdir(parents=True)
    labels.mkdir(parents=True)
    cv2.imwrite(str(images / "000000000139.jpg"), np.zeros((40, 60, 3), np.uint8))  # H 40, W 60
    (labels / "000000000139.txt").write_text(
        "0 0.5 0.5 0.5 0.25\r\n"  # centre (30, 20), 30 x 10
        "56 0.1 0.2 0.2 0.4\n"  # centre (6, 8), 12 x 16: on the top-left border
        "2 1 1 0.5 0.5\n"  # centre on the bottom-right corner: cut to the image
        "\n"
        "3 0.1 0.1 0.5 0.2 0.3 0.6\n"  # a polygon: its bounding box
        "5 0.5 0.5 0.01 0.5\n"  # 0.6 pixels wide: dropped for training
    )
    # Stored 20 high x 30 wide, shown 30 high x 20 wide: the fractions are of the shown picture.
    Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(images / "000000000285.jpg", exif=_exif(6))
    (labels / "000000000285.txt").write_text("79 0.5 0.5 1 1\n")
    cv2.imwrite(str(images / "000000000632.png"), np.zeros((10, 10, 3), np.uint8))  # no label file: no objects
    if with_list:
        (root / "val2017.txt").write_text(
            "./images/val2017/000000000139.jpg\n./images/val2017/000000000285.jpg\n"
            "./images/val2017/000000000632.png\n\n"
        )
    return [
        ([0, 56, 2, 3], [[15, 15, 45, 25], [0, 0, 12, 16], [45, 30, 60, 40], [6, 4, 30, 24]]),
        ([79], [[0, 0, 20, 30]]),
        ([], np.zeros((0, 4))),
    ]


@pytest.mark.parametrize("with_list", [True, False])
def test_yolo_style_coco_layout_gives_the_boxes_in_pixels(tmp_path, with_list):
    expected = _write_yolo_coco(tmp_path, with_list)
    dataset = CocoDataset(tmp_path, "val2017")
    assert dataset.layout == "yolo"
    assert dataset.class_names == list(COCO_CLASS_NAMES) and dataset.category_ids == list(COCO_CATEGORY_IDS)
    assert dataset.image_ids == [139, 285, 632]
    assert [dataset.image_size(i) for i in range(3)] == [(40, 60), (30, 20), (10, 10)]
    for index, (labels, boxes) in enumerate(expected):
        annotation = dataset.annotations(index)
        np.testing.assert_array_equal(annotation["labels"], labels)
        np.testing.assert_allclose(annotation["boxes"], np.array(boxes, np.float32).reshape(-1, 4), atol=1e-4)
        assert annotation["ignore"].shape == (0, 4)
    assert dataset.num_dropped_boxes == 1
    assert dataset[1]["orig_size"] == (30, 20)


def test_yolo_style_ground_truth_scores_itself_perfectly(tmp_path):
    _write_yolo_coco(tmp_path)
    dataset = CocoDataset(tmp_path, "val2017")
    truth = dataset.coco_ground_truth()
    assert [image["id"] for image in truth["images"]] == [139, 285, 632]
    assert len(truth["annotations"]) == 6  # the sub-pixel box too, as COCO's own files keep them
    perfect = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 1.0}
               for a in truth["annotations"]]
    assert evaluate_coco(truth, perfect, backend="pycocotools")["AP"] == pytest.approx(1.0)
    assert {a["category_id"] for a in truth["annotations"]} == {1, 62, 3, 4, 6, 90}  # person, chair, car, ...


def test_coco_category_ids_are_the_official_ones():
    weights = pytest.importorskip("torchvision.models.detection").FasterRCNN_ResNet50_FPN_Weights
    categories = weights.DEFAULT.meta["categories"]  # index = COCO category id, "N/A" for unused ids
    ids = [index for index, name in enumerate(categories) if name not in ("__background__", "N/A")]
    assert list(COCO_CATEGORY_IDS) == ids
    assert [categories[index] for index in ids] == list(COCO_CLASS_NAMES)


@pytest.mark.parametrize(
    "row, message",
    [
        ("0 0.5 0.5 0.2\n", r"000000000139.txt:2: expected 'class cx cy w h' \(5 numbers\) or a polygon"),
        ("0 0.5 0.5 0.2 0.2 0.1\n", r"000000000139.txt:2: expected 'class cx cy w h'"),
        ("0 0.5 x 0.2 0.2\n", r"000000000139.txt:2: 'x' is not a number"),
        ("80 0.5 0.5 0.2 0.2\n", r"000000000139.txt:2: class '80' is not a COCO class id 0..79"),
        ("1.5 0.5 0.5 0.2 0.2\n", r"000000000139.txt:2: class '1.5' is not a COCO class id"),
        ("0 30 20 12 16\n", r"000000000139.txt:2: coordinates must be fractions of the image size in \[0, 1\]"),
        ("0 0.5 0.5 nan 0.2\n", r"000000000139.txt:2: coordinates must be fractions"),
    ],
)
def test_malformed_yolo_label_rows_name_file_and_line(tmp_path, row, message):
    _write_yolo_coco(tmp_path)
    label = tmp_path / "labels" / "val2017" / "000000000139.txt"
    label.write_text("0 0.5 0.5 0.5 0.25\n" + row)
    with pytest.raises(UserError, match=message):
        CocoDataset(tmp_path, "val2017")


def test_yolo_style_missing_pieces(tmp_path):
    _write_yolo_coco(tmp_path)
    (tmp_path / "images" / "val2017" / "000000000285.jpg").unlink()
    with pytest.raises(UserError, match=r"val2017.txt:2: image './images/val2017/000000000285.jpg' not found .*"
                                        r"\(1 of 3 images are missing\)"):
        CocoDataset(tmp_path, "val2017")
    with pytest.raises(UserError, match=r"instances_train2017.json: COCO annotation file not found, nor "
                                        r"YOLO-style labels in .*train2017"):
        CocoDataset(tmp_path, "train2017")
