import argparse
import importlib
import json
import os
import shutil

import pytest
import torch

from retinanet.cli import resolve_device, run_cli
from retinanet.errors import UserError, user_message
from retinanet.io_utils import atomic_open, write_json
from tests.helpers import TINY_IMAGES, save_model_checkpoint, spread_model, write_tiny_csv_dataset


class BrokenImages(torch.utils.data.Dataset):
    def __len__(self):
        return 2

    def __getitem__(self, index):
        raise UserError(f"images/{index}.jpg: not a readable image (annotations.csv:{index + 1})")


def test_user_error_from_a_loader_worker_is_one_line():
    loader = torch.utils.data.DataLoader(BrokenImages(), num_workers=1)
    with pytest.raises(UserError) as info:
        next(iter(loader))
    assert "Traceback" in str(info.value)  # what torch hands back
    assert user_message(info.value) == "images/0.jpg: not a readable image (annotations.csv:1)"


def test_run_cli_prints_one_line_and_exits_2(monkeypatch, capsys):
    def main(args):
        raise UserError("data/train.csv:3: x2 (1.0) must be greater than x1 (5.0)")

    monkeypatch.setattr("sys.argv", ["script"])
    with pytest.raises(SystemExit) as info:
        run_cli(main, argparse.ArgumentParser())
    assert info.value.code == 2
    assert capsys.readouterr().err == "error: data/train.csv:3: x2 (1.0) must be greater than x1 (5.0)\n"


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(UserError, match="not a torch device"):
        resolve_device("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="CUDA is not available"):
            resolve_device("cuda")


def test_atomic_writes_leave_nothing_half_written(tmp_path):
    path = tmp_path / "metrics.json"
    write_json(path, {"map": 0.5})
    with pytest.raises(RuntimeError):
        with atomic_open(path) as handle:
            handle.write('{"map": ')
            raise RuntimeError("crash mid-write")
    assert json.loads(path.read_text()) == {"map": 0.5}
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


# The model flags every script that loads a model takes, in one spelling.
MODEL_SCRIPTS = ("detect", "visualize", "export", "csv_validation", "coco_validation")


@pytest.fixture(scope="module")
def model_and_data(tmp_path_factory):
    """A ResNet-18 checkpoint for classes a and b, four CSV images of them, and the same images as a COCO set."""
    folder = tmp_path_factory.mktemp("model_flags")
    annotations, classes = write_tiny_csv_dataset(str(folder / "csv"))
    checkpoint = str(folder / "model.pt")
    save_model_checkpoint(checkpoint, spread_model(), ["a", "b"])
    coco = folder / "coco"
    (coco / "images" / "val2017").mkdir(parents=True)
    (coco / "annotations").mkdir()
    images, boxes = [], []
    for index, objects in enumerate(TINY_IMAGES):
        shutil.copy(folder / "csv" / f"image_{index}.jpg", coco / "images" / "val2017")
        images.append({"id": index + 1, "file_name": f"image_{index}.jpg", "height": 96, "width": 128})
        boxes += [{"id": len(boxes) + 1, "image_id": index + 1, "category_id": 1 if name == "a" else 2,
                   "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1), "iscrowd": 0}
                  for name, (x1, y1, x2, y2) in objects]
    categories = [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]
    write_json(coco / "annotations" / "instances_val2017.json",
               {"images": images, "annotations": boxes, "categories": categories})
    return {"checkpoint": checkpoint, "annotations": annotations, "classes": classes, "coco": str(coco),
            "out": folder / "out"}


def script_argv(name, data):
    """Everything but the model flags for one run of ``name`` on the tiny data."""
    out = str(data["out"] / name)
    small = ["--min_side", "96", "--max_side", "128", "--workers", "0", "--device", "cpu"]
    return {
        "detect": ["--input", os.path.dirname(data["annotations"]), "--output_dir", out, "--no_images", *small],
        "visualize": ["--dataset", "csv", "--csv_val", data["annotations"], "--classes", data["classes"],
                      "--num_images", "1", "--output_dir", out, *small],
        "export": ["--output", out + ".onnx", "--sample_size", "64", "64"],
        "csv_validation": ["--csv_val", data["annotations"], "--output_dir", out, "--no_coco", *small],
        "coco_validation": ["--coco_path", data["coco"], "--output_dir", out, *small],
    }[name]


def run_script(monkeypatch, name, argv):
    """``python <name>.py argv``: main's result, or SystemExit after a one-line error."""
    module = importlib.import_module(name)
    monkeypatch.setattr("sys.argv", [f"{name}.py", *argv])
    result = []
    run_cli(lambda args: result.append(module.main(args)), module.get_args_parser())
    return result[0]


@pytest.mark.parametrize("name", MODEL_SCRIPTS)
def test_one_model_flag_fragment_runs_in_every_script(name, model_and_data, monkeypatch, capsys):
    import export

    exported = []

    def export_onnx(model, path, *args, **kwargs):  # the export itself is test_export.py's; here its model
        exported.append(model.depth)
        open(path, "wb").close()

    monkeypatch.setattr(export, "export_onnx", export_onnx)
    fragment = ["--model", model_and_data["checkpoint"], "--depth", "18"]
    result = run_script(monkeypatch, name, [*fragment, *script_argv(name, model_and_data)])
    if name == "detect":
        assert result["images"] == len(TINY_IMAGES) and result["classes"] == ["a", "b"]
    elif name == "visualize":
        assert len(result["pictures"]) == 1
    elif name == "export":
        assert exported == [18] and result["class_names"] == ["a", "b"]
    else:
        assert result["settings"]["depth"] == 18 and set(result["per_class"]) == {"a", "b"}

    wrong = ["--model", model_and_data["checkpoint"], "--depth", "50"]
    capsys.readouterr()
    with pytest.raises(SystemExit) as info:
        run_script(monkeypatch, name, [*wrong, *script_argv(name, model_and_data)])
    assert info.value.code == 2
    assert capsys.readouterr().err.splitlines() == [
        f"error: {model_and_data['checkpoint']}: checkpoint is a ResNet-18 RetinaNet, --depth 50 was given"]


@pytest.mark.parametrize("name", ["detect", "visualize", "export", "csv_validation"])
def test_the_class_list_flag_has_both_spellings(name):
    actions = importlib.import_module(name).get_args_parser()._option_string_actions
    assert actions["--classes"] is actions["--csv_classes"] and actions["--classes"].dest == "classes"
