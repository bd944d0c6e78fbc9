"""Validation under two gloo processes: each infers its share, the first gathers and scores them."""
import json
import os
import socket

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from retinanet.data import CSVDataset, Transform
from retinanet.distributed import init_distributed, shutdown
from retinanet.validation import evaluation_model, predict_dataset, validate
from tests.helpers import DENSE_IMAGES, spread_model, write_tiny_csv_dataset

# 8 images at batch 3: batches of 3, 3 and 2 images; the first process gets two of them, the second one.
BATCH_SIZE = 3


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def summary(result: dict) -> dict:
    return {"map": result["map"], "per_class": {
        name: [c["ap"], c["num_detections"], c["precision"], c["recall"]] for name, c in result["per_class"].items()
    }}


def _validate_in_process(rank: int, port: int, threads: int, annotations: str, classes: str, output: str) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(threads)  # the CPU convolutions round differently with another thread count
    context = init_distributed("cpu", timeout_minutes=42)
    try:
        timeout = dist.group.WORLD._get_backend(torch.device("cpu")).options._timeout
        dataset = CSVDataset(annotations, classes, Transform(128, 160))
        model = spread_model()
        result = validate(model, dataset, torch.device("cpu"), BATCH_SIZE, workers=0, context=context)
        detections, _ = predict_dataset(evaluation_model(model), dataset, torch.device("cpu"), BATCH_SIZE,
                                        workers=0, context=context)
        if rank == 0:
            np.savez(output + ".npz", **{f"{i}_{key}": d[key] for i, d in enumerate(detections) for key in d})
        with open(f"{output}.{rank}.json", "w") as handle:
            json.dump({"timeout_s": timeout.total_seconds(), "result": result and summary(result),
                       "detections": detections is not None}, handle)
    finally:
        shutdown(context)


def test_two_process_validation_equals_one_process(tmp_path):
    annotations, classes = write_tiny_csv_dataset(str(tmp_path / "data"), size=(128, 160), images=DENSE_IMAGES)
    output = str(tmp_path / "rank")
    mp.spawn(_validate_in_process, args=(free_port(), torch.get_num_threads(), annotations, classes, output),
             nprocs=2, join=True)
    first, second = (json.load(open(f"{output}.{rank}.json")) for rank in (0, 1))
    assert first["timeout_s"] == second["timeout_s"] == 42 * 60
    assert second["result"] is None and not second["detections"] and first["detections"]

    dataset = CSVDataset(annotations, classes, Transform(128, 160))
    model = spread_model()
    single = validate(model, dataset, torch.device("cpu"), BATCH_SIZE, workers=0)
    assert first["result"] == summary(single)
    assert 0 < single["map"] < 1 and all(c["num_detections"] > 0 for c in single["per_class"].values())

    detections, _ = predict_dataset(evaluation_model(model), dataset, torch.device("cpu"), BATCH_SIZE, workers=0)
    gathered = np.load(output + ".npz")
    assert len(gathered.files) == 3 * len(dataset)
    for index, image in enumerate(detections):
        for key, value in image.items():
            np.testing.assert_array_equal(gathered[f"{index}_{key}"], value)
