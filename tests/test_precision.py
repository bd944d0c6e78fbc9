"""--precision on every script that runs the model, the fallback where the CPU has no bf16, and the
library model's defaults (channels-last, inference_mode)."""
import argparse

import pytest
import torch

import csv_validation
import detect
import train as train_script
import visualize
from retinanet import precision as precision_module
from retinanet.cli import add_precision_arguments, resolve_precision_arguments
from retinanet.errors import UserError
from retinanet.model import resnet18
from retinanet.precision import FP32, cpu_has_fast, resolve_precision
from tests.helpers import save_model_checkpoint, spread_model, train_argv, write_tiny_csv_dataset

CPU = torch.device("cpu")
CLASS_NAMES = ["a", "b"]
HAS_BF16 = cpu_has_fast("bf16")


@pytest.fixture
def no_fast_bf16(monkeypatch):
    monkeypatch.setattr(precision_module, "cpu_has_fast", lambda name: False)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_tiny_csv_dataset(str(tmp_path_factory.mktemp("tiny")))


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("model") / "model.pt")
    save_model_checkpoint(path, spread_model(), CLASS_NAMES)
    return path


def test_auto_is_bf16_exactly_where_the_cpu_computes_it(monkeypatch):
    monkeypatch.setattr(precision_module, "cpu_has_fast", lambda name: name == "bf16")
    chosen = resolve_precision("auto", CPU)
    assert (chosen.name, chosen.dtype) == ("bf16", torch.bfloat16) and "computes bf16" in chosen.reason
    monkeypatch.setattr(precision_module, "cpu_has_fast", lambda name: False)
    chosen = resolve_precision("auto", CPU)
    assert (chosen.name, chosen.dtype) == ("fp32", None) and "no fast bf16" in chosen.reason


def test_a_type_without_a_fast_path_runs_fp32_and_says_so(no_fast_bf16):
    for name in ("bf16", "fp16"):
        chosen = resolve_precision(name, CPU)
        assert (chosen.name, chosen.dtype) == ("fp32", None)
        assert chosen.describe() == (f"precision fp32 ({name} asked for, but this CPU has no fast {name}: "
                                     "running fp32)")
    assert resolve_precision("fp32", CPU) is FP32


def test_amp_is_an_alias_and_a_contradiction_is_an_error(monkeypatch):
    monkeypatch.setattr(precision_module, "cpu_has_fast", lambda name: True)
    parser = argparse.ArgumentParser()
    add_precision_arguments(parser)
    assert resolve_precision_arguments(parser.parse_args(["--amp"]), CPU).name == "bf16"
    assert resolve_precision_arguments(parser.parse_args(["--amp", "--precision", "bf16"]), CPU).name == "bf16"
    assert resolve_precision_arguments(parser.parse_args([]), CPU, default="fp32").name == "fp32"
    with pytest.raises(UserError, match="--amp means --precision bf16 on cpu; it contradicts --precision fp32"):
        resolve_precision_arguments(parser.parse_args(["--amp", "--precision", "fp32"]), CPU)


@pytest.mark.skipif(not HAS_BF16, reason="this CPU has no fast bf16")
def test_bf16_runs_the_network_in_bf16_and_decoding_nms_and_losses_in_fp32():
    model = spread_model()
    images = torch.randn(1, 3, 64, 96)
    precision = resolve_precision("bf16", CPU)
    with precision.autocast(CPU):
        logits, deltas = model.head_outputs(model.features(images))
        detections = model(images)[0]
        model.train()
        losses = model(images, [{"boxes": torch.tensor([[8.0, 8.0, 48.0, 56.0]]), "labels": torch.tensor([1])}])
    assert logits[0].dtype == deltas[0].dtype == torch.bfloat16
    assert detections["boxes"].dtype == detections["scores"].dtype == torch.float32
    assert len(detections["scores"]) > 0
    assert losses["classification"].dtype == losses["regression"].dtype == torch.float32


def test_the_library_model_is_channels_last_and_infers_under_inference_mode():
    model = resnet18(num_classes=2).eval()
    convs = [p for p in model.parameters() if p.dim() == 4]
    assert convs and all(p.is_contiguous(memory_format=torch.channels_last) for p in convs)
    images = torch.randn(1, 3, 64, 64)
    assert model.features(images)[0].is_contiguous(memory_format=torch.channels_last)
    detections = model(images)[0]
    assert torch.is_inference(detections["scores"])
    # Anchors first made under inference_mode still serve training, which autograd needs them for.
    model.train()
    losses = model(images, [{"boxes": torch.tensor([[8.0, 8.0, 40.0, 40.0]]), "labels": torch.tensor([0])}])
    (losses["classification"] + losses["regression"]).backward()
    assert model.classificationModel.output.weight.grad is not None


def run_detect(checkpoint, data, output_dir, *extra):
    folder = data[0].rsplit("/", 1)[0]
    return detect.main(detect.get_args_parser().parse_args([
        "--model_path", checkpoint, "--input", f"{folder}/image_0.jpg", "--output_dir", str(output_dir),
        "--min_side", "96", "--max_side", "128", "--workers", "0", "--device", "cpu", "--score_threshold", "0.3",
        "--no_images", *extra]))


def detected(output_dir):
    return (output_dir / "detections.jsonl").read_text()


def test_detect_without_fast_bf16_says_so_once_and_detects_as_fp32(checkpoint, data, tmp_path, capsys,
                                                                    no_fast_bf16):
    run_detect(checkpoint, data, tmp_path / "bf16", "--precision", "bf16")
    out = capsys.readouterr().out
    assert out.count("bf16 asked for, but this CPU has no fast bf16: running fp32") == 1
    run_detect(checkpoint, data, tmp_path / "fp32", "--precision", "fp32")
    assert detected(tmp_path / "bf16") == detected(tmp_path / "fp32")


def expected_line(name: str) -> str:
    return resolve_precision(name, CPU).describe()


def test_every_script_that_runs_the_model_takes_precision(checkpoint, data, tmp_path, capsys):
    annotations, classes = data
    run_detect(checkpoint, data, tmp_path / "detect", "--precision", "bf16")
    assert expected_line("bf16") in capsys.readouterr().out
    if HAS_BF16:  # bf16 ran: the records differ from fp32's in their last digits at most
        run_detect(checkpoint, data, tmp_path / "detect32", "--precision", "fp32")
        assert detected(tmp_path / "detect") != "" and detected(tmp_path / "detect32") != ""

    visualize.main(visualize.get_args_parser().parse_args([
        "--dataset", "csv", "--csv_classes", classes, "--csv_val", annotations, "--model_path", checkpoint,
        "--output_dir", str(tmp_path / "vis"), "--min_side", "96", "--max_side", "128", "--workers", "0",
        "--device", "cpu", "--num_images", "1", "--precision", "bf16"]))
    assert expected_line("bf16") in capsys.readouterr().out

    result = csv_validation.main(csv_validation.get_args_parser().parse_args([
        "--csv_val", annotations, "--csv_classes", classes, "--model_path", checkpoint, "--min_side", "96",
        "--max_side", "128", "--workers", "0", "--device", "cpu", "--no_coco", "--output_dir", str(tmp_path / "val"),
        "--amp"]))
    assert expected_line("bf16") in capsys.readouterr().out
    assert result["settings"]["precision"] == resolve_precision("bf16", CPU).name

    train_script.main(train_script.get_args_parser().parse_args(train_argv(
        data, tmp_path / "train", "--epochs", "1", "--batch_size", "4", "--precision", "bf16")))
    assert expected_line("bf16") in capsys.readouterr().out


def test_cpu_probes_missing_from_torch_mean_no_fast_path(monkeypatch):
    for feature in ("avx512_bf16", "amx_tile", "amx_fp16"):
        monkeypatch.delattr(torch.cpu, f"_is_{feature}_supported", raising=False)
    assert not cpu_has_fast("bf16") and not cpu_has_fast("fp16")
    assert resolve_precision("auto", CPU).name == "fp32"
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True, raising=False)
    assert cpu_has_fast("bf16") and resolve_precision("auto", CPU).name == "bf16"
