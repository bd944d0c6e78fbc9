"""COCO AP/AR (retinanet.evaluation.coco): hand-computed cases, each backend against the other library
run directly, conversions and errors."""

import contextlib
import copy
import io
import json

import faster_coco_eval
import numpy as np
import pycocotools.coco
import pycocotools.cocoeval
import pytest

from retinanet.errors import UserError
from retinanet.evaluation.coco import (
    COCO_METRIC_NAMES,
    detections_to_coco_results,
    evaluate_coco,
    write_coco_results,
    write_detections_as_coco_results,
)


def random_coco(seed, num_images=25):
    """A small COCO data set (three categories, all sizes, some iscrowd) and noisy results."""
    rng = np.random.default_rng(seed)
    images = [
        {"id": 100 + i, "width": 640, "height": 480, "file_name": f"{i}.jpg"} for i in range(num_images)
    ]
    categories = [{"id": 1, "name": "person"}, {"id": 5, "name": "head"}, {"id": 9, "name": "car"}]
    annotations, results = [], []
    for image in images:
        for _ in range(int(rng.integers(0, 7))):
            side = float(rng.choice([12.0, 50.0, 150.0])) * rng.uniform(0.7, 1.3)
            x, y = rng.uniform(0, 640 - side), rng.uniform(0, 480 - side)
            bbox = [x, y, side * rng.uniform(0.6, 1.4), side]
            category = int(rng.choice([1, 5, 9]))
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image["id"],
                    "category_id": category,
                    "bbox": bbox,
                    "area": bbox[2] * bbox[3],
                    "iscrowd": int(rng.random() < 0.15),
                }
            )
            for _ in range(int(rng.integers(0, 3))):
                noisy = (np.array(bbox) + rng.normal(0, side / 8, size=4)).tolist()
                results.append(
                    {
                        "image_id": image["id"],
                        "category_id": category,
                        "bbox": noisy,
                        "score": float(rng.uniform()),
                    }
                )
        for _ in range(int(rng.integers(0, 3))):
            results.append(
                {
                    "image_id": image["id"],
                    "category_id": int(rng.choice([1, 5, 9])),
                    "bbox": [float(v) for v in rng.uniform(0, 300, size=4)],
                    "score": float(rng.uniform()),
                }
            )
    return {"images": images, "annotations": annotations, "categories": categories}, results


# Each library's COCO and COCOeval classes, run directly the way their READMEs do.
LIBRARIES = {
    "pycocotools": (pycocotools.coco.COCO, pycocotools.cocoeval.COCOeval),
    "faster": (faster_coco_eval.COCO, faster_coco_eval.COCOeval_faster),
}


def library_stats(library, gt, results):
    coco_class, eval_class = LIBRARIES[library]
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = coco_class()
        coco_gt.dataset = copy.deepcopy(gt)
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(copy.deepcopy(results))
        evaluator = eval_class(coco_gt, coco_dt, "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return evaluator.stats


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("backend,other", [("faster", "pycocotools"), ("pycocotools", "faster")])
def test_each_backend_gives_the_other_librarys_numbers(seed, backend, other):
    gt, results = random_coco(seed)
    assert any(a["iscrowd"] for a in gt["annotations"])
    expected = library_stats(other, gt, results)
    ours = evaluate_coco(gt, results, backend=backend)
    assert list(ours) == list(COCO_METRIC_NAMES)
    # Two implementations (Python/C and C++) of one protocol; 1e-9 leaves room for summation order.
    np.testing.assert_allclose([ours[name] for name in COCO_METRIC_NAMES], expected[:12], rtol=0, atol=1e-9)
    assert 0.05 < ours["AP"] < 0.95  # the data set is neither trivial nor hopeless


@pytest.mark.parametrize("backend", ["faster", "pycocotools"])
def test_hand_computed_ranking_iou_thresholds_and_area_ranges(backend):
    """Two large ground-truth boxes; by score: an exact hit, a medium false positive, a hit of IoU 0.72.

    At IoU 0.50..0.70 (5 of the 10 thresholds) the ranking is TP, FP, TP: interpolated precision
    is 1 at the 51 recall points 0..0.50 and 2/3 at the 50 points 0.51..1, AP = (51 + 100/3) / 101.
    At 0.75..0.95 it is TP, FP, FP: AP = 51 / 101. AP is their mean, 203 / 303.
    The large area range ignores unmatched detections of other areas (the 50x50 false positive, and
    the 100x72 box where it misses): AP is 1 at the first five thresholds, 51 / 101 at the others.
    """
    gt = {
        "images": [{"id": 1, "width": 640, "height": 480}],
        "categories": [{"id": 1, "name": "person"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 100, 100], "area": 10000, "iscrowd": 0},
            {"id": 2, "image_id": 1, "category_id": 1, "bbox": [200, 0, 100, 100], "area": 10000, "iscrowd": 0},
        ],
    }
    results = [
        {"image_id": 1, "category_id": 1, "bbox": [0, 0, 100, 100], "score": 0.9},
        {"image_id": 1, "category_id": 1, "bbox": [400, 300, 50, 50], "score": 0.8},
        {"image_id": 1, "category_id": 1, "bbox": [200, 0, 100, 72], "score": 0.7},  # IoU 7200 / 10000
    ]
    metrics = evaluate_coco(gt, results, backend=backend)
    expected = {
        "AP": 203 / 303, "AP50": (51 + 100 / 3) / 101, "AP75": 51 / 101, "APs": -1.0, "APm": -1.0,
        "APl": (1 + 51 / 101) / 2,
        "AR1": 0.5, "AR10": 0.75, "AR100": 0.75, "ARs": -1.0, "ARm": -1.0, "ARl": 0.75,
    }
    assert metrics == pytest.approx(expected, abs=1e-12)


def test_perfect_results_and_undefined_areas():
    gt = {
        "images": [{"id": 1, "width": 300, "height": 300}],
        "categories": [{"id": 1, "name": "person"}],
        "annotations": [
            {
                "id": 1,
                "image_id": 1,
                "category_id": 1,
                "bbox": [10, 10, 100, 120],
                "area": 12000,
                "iscrowd": 0,
            },
            {
                "id": 2,
                "image_id": 1,
                "category_id": 1,
                "bbox": [150, 20, 110, 100],
                "area": 11000,
                "iscrowd": 0,
            },
        ],
    }
    results = [
        {"image_id": 1, "category_id": 1, "bbox": [10, 10, 100, 120], "score": 0.9},
        {"image_id": 1, "category_id": 1, "bbox": [150, 20, 110, 100], "score": 0.8},
    ]
    for backend in ("faster", "pycocotools"):
        metrics = evaluate_coco(gt, results, backend=backend)
        assert metrics["AP"] == pytest.approx(1.0) and metrics["AR1"] == pytest.approx(0.5)
        assert metrics["APl"] == pytest.approx(1.0)
        assert metrics["APs"] == metrics["APm"] == -1.0  # no small or medium ground truth


@pytest.mark.parametrize("backend", ["faster", "pycocotools"])
def test_empty_results_give_zero(backend):
    gt, _ = random_coco(0, num_images=5)
    metrics = evaluate_coco(gt, [], backend=backend)
    assert metrics["AP"] == 0.0 and metrics["AR100"] == 0.0


def test_inputs_are_not_modified_and_files_work(tmp_path):
    gt, results = random_coco(1, num_images=6)
    gt_before, results_before = copy.deepcopy(gt), copy.deepcopy(results)
    from_objects = evaluate_coco(gt, results)
    assert gt == gt_before and results == results_before
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    write_coco_results(tmp_path / "results.json", results)
    assert evaluate_coco(str(tmp_path / "gt.json"), tmp_path / "results.json") == from_objects


def test_detections_to_coco_results():
    detections = [
        {"boxes": np.array([[10.0, 20.0, 40.0, 60.0]]), "scores": np.array([0.5]), "labels": np.array([1])},
        {"boxes": np.zeros((0, 4)), "scores": np.zeros(0), "labels": np.zeros(0, dtype=np.int64)},
        {
            "boxes": np.array([[0.0, 0, 5, 5], [1, 2, 3, 4]]),
            "scores": np.array([0.9, 0.1]),
            "labels": np.array([0, 1]),
        },
    ]
    results = detections_to_coco_results(detections, image_ids=[7, 8, 9], category_ids=[1, 90])
    assert results == [
        {"image_id": 7, "category_id": 90, "bbox": [10.0, 20.0, 30.0, 40.0], "score": 0.5},
        {"image_id": 9, "category_id": 1, "bbox": [0.0, 0.0, 5.0, 5.0], "score": 0.9},
        {"image_id": 9, "category_id": 90, "bbox": [1.0, 2.0, 2.0, 2.0], "score": 0.1},
    ]
    assert all(type(r["image_id"]) is int and type(r["score"]) is float for r in results)


def test_coco_results_written_an_image_at_a_time_are_the_bytes_of_the_whole_list(tmp_path):
    rng = np.random.default_rng(3)
    detections = []
    for count in (3, 0, 5, 0, 1):
        corners = rng.uniform(0, 300, size=(count, 2))
        detections.append({"boxes": np.hstack([corners, corners + rng.uniform(1, 50, size=(count, 2))]),
                           "scores": rng.uniform(0, 1, count), "labels": rng.integers(0, 2, count)})
    for records, ids in ((detections, [4, 5, 6, 7, 8]), (detections[1:2], [5]), ([], [])):
        write_coco_results(tmp_path / "whole.json", detections_to_coco_results(records, ids, [1, 90]))
        write_detections_as_coco_results(tmp_path / "streamed.json", records, ids, [1, 90])
        assert (tmp_path / "streamed.json").read_bytes() == (tmp_path / "whole.json").read_bytes()
        assert len(json.loads((tmp_path / "streamed.json").read_text())) == sum(len(r["scores"]) for r in records)


def test_bad_input_is_a_user_error(tmp_path):
    gt, results = random_coco(0, num_images=3)
    with pytest.raises(UserError, match="result 0 has image_id 12345, not in the ground truth"):
        evaluate_coco(gt, [{"image_id": 12345, "category_id": 1, "bbox": [0, 0, 1, 1], "score": 1.0}])
    with pytest.raises(UserError, match="result 0 has category_id 2"):
        evaluate_coco(gt, [{"image_id": 100, "category_id": 2, "bbox": [0, 0, 1, 1], "score": 1.0}])
    with pytest.raises(UserError, match="result 0 is not an object with image_id"):
        evaluate_coco(gt, [{"image_id": 100}])
    good = {"image_id": 100, "category_id": 1, "bbox": [0, 0, 1, 1], "score": 1.0}
    with pytest.raises(UserError, match=r"result 1 has image_id \[100\], not in the ground truth"):
        evaluate_coco(gt, [good, {**good, "image_id": [100]}])
    with pytest.raises(UserError, match="result 2 has score True, expected a number"):
        evaluate_coco(gt, [good, good, {**good, "score": True}])
    with pytest.raises(UserError, match=r"result 1 has bbox \[0, 0, 1\], expected \[x, y, width, height\]"):
        evaluate_coco(gt, [good, {**good, "bbox": [0, 0, 1]}])
    bad = tmp_path / "results.json"
    bad.write_text('[{"image_id": 100,\n oops]')
    with pytest.raises(UserError, match=r"results.json:2: COCO results file is not valid JSON"):
        evaluate_coco(gt, bad)
    with pytest.raises(UserError, match="missing.json: COCO annotation file not found"):
        evaluate_coco(tmp_path / "missing.json", results)
    with pytest.raises(UserError, match="images entry 1 is not an object with an 'id'"):
        evaluate_coco({**gt, "images": [gt["images"][0], {"file_name": "x.jpg"}]}, [])
    with pytest.raises(UserError, match="no 'annotations' list"):
        evaluate_coco({"images": [], "categories": []}, [])
    no_area = copy.deepcopy(gt)
    del no_area["annotations"][0]["area"]
    with pytest.raises(UserError, match="annotation 0 has no 'area'"):
        evaluate_coco(no_area, results)
    with pytest.raises(ValueError, match="unknown COCO backend"):
        evaluate_coco(gt, results, backend="detectron")
