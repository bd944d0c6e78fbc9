"""Export: the wrapper equals the model; ONNX and TorchScript parity at other sizes; comparison rules."""
import numpy as np
import pytest
import torch

import export as export_script
from retinanet.errors import UserError
from retinanet.export import (
    BOX_TOLERANCE_PX,
    ExportableRetinaNet,
    compare_detections,
    export_onnx,
    export_torchscript,
    graph_outputs_by_image,
    onnx_runner,
    parity_ok,
    reference_detections,
)
from tests.helpers import save_model_checkpoint, spread_model

CLASS_NAMES = ["person", "head"]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """export.py run once (ONNX and TorchScript, each checked) on a checkpoint, with a per-image cap of 20."""
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    folder = tmp_path_factory.mktemp("export")
    checkpoint = str(folder / "model.pt")
    save_model_checkpoint(checkpoint, spread_model(), CLASS_NAMES)
    args = export_script.get_args_parser().parse_args([
        "--model_path", checkpoint, "--output", str(folder / "model.onnx"),
        "--torchscript", str(folder / "model.ts"),
        "--sample_size", "64", "96", "--max_detections", "20", "--score_threshold", "0.5",
    ])
    result = export_script.main(args)
    return folder, result


def test_wrapper_in_eager_mode_equals_the_model():
    model = spread_model()
    images = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        outputs = ExportableRetinaNet(model)(images, torch.tensor(0.05))
    boxes, scores, labels, batch_index = outputs
    assert batch_index.tolist() == sorted(batch_index.tolist())  # grouped by image
    for ref, got in zip(reference_detections(model, images, 0.05), graph_outputs_by_image(outputs, 2)):
        assert len(ref["scores"]) > 20
        assert np.all(np.diff(got["scores"]) <= 0)  # best first within an image
        row = compare_detections(ref, got, 0.05, model.nms_iou_threshold, model.max_detections)
        assert row["unmatched_reference"] == row["unmatched_candidate"] == row["near_ties"] == 0
        assert row["max_box_diff"] < 1e-3


@pytest.mark.filterwarnings("ignore:.*torch.jit.trace.*deprecated:FutureWarning")
def test_traced_anchors_equal_the_eager_ones():
    """Under tracing the anchors are built from the feature maps' traced sizes, not from the cache."""
    model = spread_model()
    images = torch.zeros(1, 3, 96, 160)
    with torch.no_grad():
        features = model.features(images)
        traced = torch.jit.trace(lambda *levels: tuple(model.anchors(list(levels))), tuple(features))
        # The trace runs at another image size: its grids follow the new feature maps.
        other = model.features(torch.zeros(1, 3, 160, 64))
        ours = torch.cat(traced(*other))
    expected = model.anchor_generator((160, 64), torch.device("cpu"))
    assert ours.shape == expected.shape == (9 * (20 * 8 + 10 * 4 + 5 * 2 + 3 * 1 + 2 * 1), 4)
    assert torch.equal(ours, expected)


def test_onnx_file_is_opset_17_with_dynamic_batch_and_size_and_class_metadata(exported):
    import onnx

    folder, result = exported
    assert result["outputs"] == [str(folder / "model.onnx"), str(folder / "model.ts")]
    graph = onnx.load(str(folder / "model.onnx"))
    assert max(opset.version for opset in graph.opset_import if opset.domain in ("", "ai.onnx")) >= 17
    images = graph.graph.input[0]
    assert images.name == "images"
    dims = images.type.tensor_type.shape.dim
    assert [d.dim_param for d in dims] == ["batch", "", "height", "width"] and dims[1].dim_value == 3
    metadata = {prop.key: prop.value for prop in graph.metadata_props}
    assert metadata["class_names"] == '["person", "head"]'
    assert metadata["max_detections_per_image"] == "20"
    assert "NonMaxSuppression" in all_op_types(graph.graph)


def all_op_types(graph) -> set:
    """Operator types of a graph and of the subgraphs of its If/Loop nodes."""
    types = set()
    for node in graph.node:
        types.add(node.op_type)
        for attribute in node.attribute:
            if attribute.g.node:
                types |= all_op_types(attribute.g)
    return types


def test_export_script_checked_both_formats_on_other_batch_and_image_sizes(exported):
    _, result = exported
    for name in ("onnxruntime", "torchscript"):
        rows = result["checks"][name]
        assert parity_ok(rows)
        assert all(row["unmatched_reference"] == row["unmatched_candidate"] == 0 for row in rows)
        assert {row["input"] for row in rows} == {"1x3x64x96", "3x3x128x64"}
        assert len(rows) == 8  # 4 images at thresholds 0.5 and 0.0
        # The cap of 20 holds every image at threshold 0; at 0.5 some images keep fewer.
        low = [row for row in rows if row["score_threshold"] == 0.0]
        assert all(row["reference"] == row["candidate"] == 20 for row in low)
        assert any(0 < row["reference"] < 20 for row in rows if row["score_threshold"] == 0.5)
        assert max(row["max_box_diff"] for row in rows) < BOX_TOLERANCE_PX


def test_onnx_graph_runs_at_a_batch_and_size_never_seen(exported):
    folder, _ = exported
    model = spread_model(max_detections=20)
    images = torch.randn(2, 3, 96, 64)
    expected = reference_detections(model, images, 0.3)
    got = onnx_runner(str(folder / "model.onnx"))(images.numpy(), 0.3)
    for ref, cand in zip(expected, got):
        assert len(ref["scores"]) > 0
        row = compare_detections(ref, cand, 0.3, model.nms_iou_threshold, model.max_detections)
        assert row["unmatched_reference"] == row["unmatched_candidate"] == 0


def test_compare_detections_hand_made_cases():
    reference = {
        "boxes": np.array([[0, 0, 10, 10], [20, 20, 40, 40], [50, 50, 60, 60]], np.float32),
        "scores": np.array([0.9, 0.6, 0.3], np.float32),
        "labels": np.array([0, 1, 0]),
    }
    shifted = {key: value.copy() for key, value in reference.items()}
    shifted["boxes"][0] += 0.01
    row = compare_detections(reference, shifted, 0.05, 0.5, 300)
    assert (row["unmatched_reference"], row["unmatched_candidate"], row["near_ties"]) == (0, 0, 0)
    assert row["max_box_diff"] == pytest.approx(0.01, abs=1e-6)

    # Dropping the 0.6 detection is a real difference; a wrong label is one on each side.
    dropped = {key: value[[0, 2]] for key, value in reference.items()}
    assert compare_detections(reference, dropped, 0.05, 0.5, 300)["unmatched_reference"] == 1
    relabelled = {key: value.copy() for key, value in reference.items()}
    relabelled["labels"][2] = 1
    row = compare_detections(reference, relabelled, 0.05, 0.5, 300)
    assert (row["unmatched_reference"], row["unmatched_candidate"]) == (1, 1)

    # NMS kept the other box of a near-tied overlapping pair (IoU 0.6): a near tie, not a failure.
    swapped = {key: value.copy() for key, value in reference.items()}
    swapped["boxes"][1] = [20, 24, 40, 44]  # IoU with [20, 20, 40, 40] = 16 * 20 / (2 * 400 - 320) = 0.667
    swapped["scores"][1] = 0.60005
    row = compare_detections(reference, swapped, 0.05, 0.5, 300)
    assert (row["unmatched_reference"], row["unmatched_candidate"], row["near_ties"]) == (0, 0, 2)
    # The same swap with a score gap of 0.01 is a real difference.
    swapped["scores"][1] = 0.61
    row = compare_detections(reference, swapped, 0.05, 0.5, 300)
    assert (row["unmatched_reference"], row["unmatched_candidate"]) == (1, 1)

    # A detection scoring within the tolerance of the threshold may exist on one side only.
    borderline = {key: value.copy() for key, value in reference.items()}
    borderline["scores"][2] = 0.30003
    row = compare_detections(borderline, dropped, 0.3, 0.5, 300)
    assert row["unmatched_reference"] == 1 and row["near_ties"] == 0  # the 0.6 one is still missing
    row = compare_detections(borderline, {k: v[[0, 1]] for k, v in reference.items()}, 0.3, 0.5, 300)
    assert (row["unmatched_reference"], row["near_ties"]) == (0, 1)
    # Likewise the lowest detection of a side cut at max_detections (here 2).
    row = compare_detections(reference, {k: v[[0, 1]] for k, v in reference.items()}, 0.05, 0.5, 2)
    assert (row["unmatched_reference"], row["near_ties"]) == (1, 0)  # 0.3 is not near 0.6
    capped = {key: value.copy() for key, value in reference.items()}
    capped["scores"][2] = 0.59995
    row = compare_detections(capped, {k: v[[0, 1]] for k, v in reference.items()}, 0.05, 0.5, 2)
    assert (row["unmatched_reference"], row["near_ties"]) == (0, 1)


def test_compare_detections_follows_the_nms_cascade_of_a_tie():
    """Boxes A and A' tie (0.8 vs 0.80005, IoU 0.67); A' suppresses C (IoU 0.67) where A does not (0.43).

    Reference kept A and C, candidate kept A'; C is explained through A'.
    """
    boxes = {"A": [0, 0, 20, 20], "A'": [0, 4, 20, 24], "C": [0, 8, 20, 28]}
    reference = {"boxes": np.array([boxes["A"], boxes["C"]], np.float32),
                 "scores": np.array([0.8, 0.7], np.float32), "labels": np.array([0, 0])}
    candidate = {"boxes": np.array([boxes["A'"]], np.float32),
                 "scores": np.array([0.80005], np.float32), "labels": np.array([0])}
    row = compare_detections(reference, candidate, 0.05, 0.5, 300)
    assert (row["unmatched_reference"], row["unmatched_candidate"], row["near_ties"]) == (0, 0, 3)
    # Without the tie (0.9 vs 0.8) the same boxes are three real differences.
    candidate["scores"][0] = 0.9
    row = compare_detections(reference, candidate, 0.05, 0.5, 300)
    assert (row["unmatched_reference"], row["unmatched_candidate"], row["near_ties"]) == (2, 1, 0)


def test_parity_allows_one_percent_unexplained():
    row = {"reference": 100, "unmatched_reference": 0, "unmatched_candidate": 0}
    assert parity_ok([row, {**row, "unmatched_reference": 1, "unmatched_candidate": 1}])  # 2 of 200
    assert not parity_ok([row, {**row, "unmatched_reference": 2, "unmatched_candidate": 1}])  # 3 of 200
    assert not parity_ok([{**row, "reference": 0, "unmatched_candidate": 1}])


def test_bad_export_settings_are_user_errors(tmp_path):
    model = spread_model()
    with pytest.raises(UserError, match="opset 16"):
        export_onnx(model, str(tmp_path / "m.onnx"), CLASS_NAMES, (64, 64), opset=16)
    with pytest.raises(UserError, match="multiples of 32"):
        export_onnx(model, str(tmp_path / "m.onnx"), CLASS_NAMES, (64, 100))
    assert not (tmp_path / "m.onnx").exists()


def test_a_failed_verification_leaves_no_file(tmp_path):
    def reject(path):
        raise UserError("rejected")

    with pytest.raises(UserError, match="rejected"):
        export_torchscript(spread_model(), str(tmp_path / "m.ts"), (64, 64), verify=reject)
    assert list(tmp_path.iterdir()) == []
