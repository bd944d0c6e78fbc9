"""CUDA smoke tests, skipped without a CUDA device: ``pytest -m cuda``.

One AMP training step in each low-precision type, inference in each precision against fp32, and the
export's parity check of the ONNX graph (run by onnxruntime on the CPU) against the model on CUDA.
"""
import pytest
import torch

from retinanet.export import check_parity, check_sizes, export_onnx, onnx_runner, parity_ok
from retinanet.precision import resolve_precision
from tests.helpers import spread_model

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]
CUDA = torch.device("cuda")


def targets():
    return [{"boxes": torch.tensor([[8.0, 8.0, 48.0, 56.0]], device=CUDA), "labels": torch.tensor([1], device=CUDA)},
            {"boxes": torch.zeros(0, 4, device=CUDA), "labels": torch.zeros(0, dtype=torch.int64, device=CUDA)}]


@pytest.mark.parametrize("name", ["fp16", "bf16"])
def test_an_amp_training_step_changes_the_weights_and_keeps_losses_finite(name):
    precision = resolve_precision(name, CUDA)
    if precision.name != name:
        pytest.skip(precision.reason)
    model = spread_model().to(CUDA).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
    scaler = torch.amp.GradScaler("cuda", enabled=precision.dtype == torch.float16)
    before = model.classificationModel.conv1.weight.detach().clone()
    with precision.autocast(CUDA):
        losses = model(torch.randn(2, 3, 128, 160, device=CUDA), targets())
    loss = losses["classification"] + losses["regression"]
    assert losses["classification"].dtype == torch.float32 and torch.isfinite(loss)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    assert not torch.equal(before, model.classificationModel.conv1.weight)


@pytest.mark.parametrize("name", ["fp32", "fp16", "bf16"])
def test_inference_on_cuda_matches_the_cpu(name):
    precision = resolve_precision(name, CUDA)
    if precision.name != name:
        pytest.skip(precision.reason)
    cpu_model = spread_model()
    images = torch.randn(2, 3, 96, 128)
    expected = cpu_model(images)
    with precision.autocast(CUDA):
        got = cpu_model.to(CUDA)(images.to(CUDA))
    for ref, out in zip(expected, got):
        assert out["boxes"].dtype == torch.float32 and len(out["scores"]) > 0
        # The best detection is the same one; low precision moves its box by a fraction of a pixel.
        assert int(out["labels"][0]) == int(ref["labels"][0])
        tolerance = 1e-3 if name == "fp32" else 0.5
        assert torch.allclose(out["boxes"][0].cpu(), ref["boxes"][0], atol=tolerance)


def test_export_parity_against_the_model_on_cuda(tmp_path):
    pytest.importorskip("onnxruntime")
    model = spread_model(max_detections=20)
    path = str(tmp_path / "model.onnx")
    export_onnx(model, path, ["a", "b"], sample_size=(64, 96))
    rows = check_parity(model.to(CUDA), onnx_runner(path), check_sizes((64, 96)), [0.3, 0.0])
    assert parity_ok(rows)
