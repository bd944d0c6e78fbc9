"""train.py end to end on tiny data: overfitting, resume, fine-tuning, NaN guard, DDP, bad flags."""
import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

import train as train_script
from retinanet.boxes import box_iou
from retinanet.checkpoint import read_checkpoint_file
from retinanet.data import CSVDataset, Transform
from retinanet.errors import UserError
from retinanet.model import RetinaNet
from tests.helpers import DENSE_IMAGES, write_tiny_csv_dataset

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    return write_tiny_csv_dataset(str(tmp_path_factory.mktemp("tiny")), size=(128, 160), images=DENSE_IMAGES)


def args_for(data, output_dir, *extra):
    annotations, classes = data
    argv = ["--dataset", "csv", "--csv_train", annotations, "--csv_classes", classes,
            "--depth", "18", "--feature_size", "32", "--no_pretrained", "--min_side", "128", "--max_side", "160",
            "--workers", "0", "--device", "cpu", "--output_dir", str(output_dir), "--flip_prob", "0.5",
            "--optimizer", "adam", "--lr", "1e-3", "--warmup_iters", "2", "--clip_grad_norm", "0", *extra]
    return train_script.get_args_parser().parse_args(argv)


def test_overfits_tiny_data_and_finds_the_drawn_objects(tiny_data, tmp_path):
    annotations, classes = tiny_data
    result = train_script.main(args_for(tiny_data, tmp_path, "--epochs", "40", "--batch_size", "4",
                                        "--csv_val", annotations, "--val_every", "40", "--lr_schedule", "constant"))
    history = result["history"]
    assert history[-1]["loss"] < 0.3 * history[0]["loss"]
    assert history[-1]["map"] > 0.5
    model = result["model"].eval()
    dataset = CSVDataset(annotations, classes, Transform(128, 160))
    found = total = 0
    for index, objects in enumerate(DENSE_IMAGES):
        with torch.no_grad():
            detections = model(dataset[index]["image"][None])[0]
        confident = detections["scores"] > 0.2
        for name, box in objects:
            same_class = confident & (detections["labels"] == ["a", "b"].index(name))
            ious = box_iou(torch.tensor([box], dtype=torch.float32), detections["boxes"][same_class])
            found += int(ious.numel() > 0 and ious.max() > 0.5)
            total += 1
    assert found >= 0.75 * total, f"found {found} of {total} drawn objects"
    for name in ("last.pt", "best.pt", "metrics.jsonl", "training_curves.png"):
        assert (tmp_path / name).exists(), name
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == list(range(1, 41))
    checkpoint = read_checkpoint_file(str(tmp_path / "last.pt"))
    assert checkpoint["class_names"] == ["a", "b"] and checkpoint["epoch"] == 40
    assert {"optimizer", "scheduler", "scaler", "rng", "args", "metrics", "model_args"} <= set(checkpoint)


class InterruptAfter:
    """Wraps train_one_epoch so that the run stops (as on Ctrl-C) after ``steps`` optimizer steps."""

    def __init__(self, steps):
        self.remaining = steps
        self.original = train_script.train_one_epoch

    def __call__(self, *args, on_step, **kwargs):
        def interrupting(record):
            on_step(record)
            self.remaining -= 1
            return self.remaining <= 0

        return self.original(*args, on_step=interrupting, **kwargs)


def test_resume_mid_epoch_reaches_the_same_weights(tiny_data, tmp_path, monkeypatch):
    common = ("--epochs", "3", "--batch_size", "2", "--seed", "3")
    straight = train_script.main(args_for(tiny_data, tmp_path / "straight", *common))["model"]

    monkeypatch.setattr(train_script, "train_one_epoch", InterruptAfter(5))
    stopped = train_script.main(args_for(tiny_data, tmp_path / "resumed", *common))
    assert stopped["epoch"] == 1  # inside the second epoch
    saved = read_checkpoint_file(str(tmp_path / "resumed" / "last.pt"))
    assert (saved["epoch"], saved["batches_done"]) == (1, 1)
    monkeypatch.undo()

    resumed = train_script.main(args_for(tiny_data, tmp_path / "resumed", *common,
                                         "--resume", str(tmp_path / "resumed" / "last.pt")))["model"]
    for (key, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), key


def test_fine_tune_from_module_prefixed_coco_checkpoint(tiny_data, tmp_path, capsys):
    coco = RetinaNet(num_classes=80, depth=18, feature_size=32)
    path = tmp_path / "coco_ddp.pt"
    torch.save({"module." + k: v for k, v in coco.state_dict().items()}, path)
    classes = tmp_path / "person_head.csv"
    classes.write_text("person,0\nhead,1\n")
    annotations = tmp_path / "ph.csv"
    lines = open(tiny_data[0]).read().replace(",a\n", ",person\n").replace(",b\n", ",head\n")
    annotations.write_text(lines)
    args = args_for((str(annotations), str(classes)), tmp_path / "out", "--epochs", "1", "--batch_size", "4",
                    "--model_path", str(path), "--start_epoch", "0", "--amp")  # bf16 autocast on the CPU
    model = train_script.main(args)["model"]
    output = capsys.readouterr().out
    assert "copied by name for 1 classes" in output and "initialised from the prior: head" in output
    assert "backbone BatchNorm frozen" in output
    assert model.classificationModel.output.weight.shape[0] == 9 * 2
    assert (tmp_path / "out" / "last.pt").exists()


def test_nan_loss_is_skipped_then_stops_with_last_checkpoint_intact(tiny_data, tmp_path, monkeypatch):
    train_script.main(args_for(tiny_data, tmp_path, "--epochs", "1", "--batch_size", "2"))
    before = (tmp_path / "last.pt").read_bytes()

    import retinanet.model as model_module

    real_loss = model_module.retinanet_loss

    def nan_loss(*args, **kwargs):
        losses = real_loss(*args, **kwargs)
        return {"classification": losses["classification"] * float("nan"), "regression": losses["regression"]}

    monkeypatch.setattr(model_module, "retinanet_loss", nan_loss)
    args = args_for(tiny_data, tmp_path, "--epochs", "2", "--batch_size", "1", "--max_nonfinite_steps", "3",
                    "--resume", str(tmp_path / "last.pt"))
    with pytest.warns(RuntimeWarning, match=r"non-finite loss skipped \(classification=nan, regression=.*image_"):
        with pytest.raises(UserError, match="3 non-finite losses in a row"):
            train_script.main(args)
    assert (tmp_path / "last.pt").read_bytes() == before


def run_script(args, env_extra=None):
    env = dict(os.environ, OMP_NUM_THREADS="1", **(env_extra or {}))
    return subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def test_two_process_gloo_ddp_first_step_equals_single_process(tmp_path):
    folder = tmp_path / "two"
    annotations, classes = write_tiny_csv_dataset(str(folder), size=(128, 160), images=DENSE_IMAGES)
    two = folder / "two.csv"
    two.write_text("".join(line for line in open(annotations) if "image_0" in line or "image_1" in line))
    common = ["--dataset", "csv", "--csv_train", str(two), "--csv_classes", classes, "--depth", "18",
              "--feature_size", "16", "--no_pretrained", "--freeze_bn", "on", "--min_side", "128", "--max_side", "160",
              "--workers", "0", "--device", "cpu", "--flip_prob", "0", "--epochs", "1", "--warmup_iters", "0"]
    single = run_script([sys.executable, "train.py", *common, "--batch_size", "2", "--output_dir", str(tmp_path / "1")])
    assert single.returncode == 0, single.stderr[-2000:]
    torchrun = shutil.which("torchrun") or None
    launcher = [torchrun] if torchrun else [sys.executable, "-m", "torch.distributed.run"]
    double = run_script([*launcher, "--nproc_per_node=2", "--master_port=29531", "train.py", *common,
                         "--batch_size", "1", "--output_dir", str(tmp_path / "2")])
    assert double.returncode == 0, double.stderr[-3000:]
    assert "2 process(es)" in double.stdout
    first = [json.loads(line) for line in open(tmp_path / "1" / "metrics.jsonl")]
    second = [json.loads(line) for line in open(tmp_path / "2" / "metrics.jsonl")]
    assert len(first) == len(second) == 1
    assert second[0]["loss"] == pytest.approx(first[0]["loss"], rel=1e-4)
    assert second[0]["classification"] == pytest.approx(first[0]["classification"], rel=1e-4)


def test_bad_flags_and_missing_files(tiny_data, tmp_path, capsys):
    parser = train_script.get_args_parser()
    for argv in (["--dataset", "csv", "--depth", "42"], ["--dataset", "yolo"], ["--dataset", "csv", "--lr", "fast"]):
        with pytest.raises(SystemExit) as exit_info:
            parser.parse_args(argv)
        assert exit_info.value.code == 2
    with pytest.raises(UserError, match="needs --csv_train and --csv_classes"):
        train_script.main(parser.parse_args(["--dataset", "csv"]))
    with pytest.raises(UserError, match="missing.csv: annotation file not found"):
        train_script.main(args_for((str(tmp_path / "missing.csv"), tiny_data[1]), tmp_path))
    with pytest.raises(UserError, match="--model_path .*nothing.pt: file not found"):
        train_script.main(args_for(tiny_data, tmp_path, "--model_path", str(tmp_path / "nothing.pt")))
    result = run_script([sys.executable, "train.py", "--dataset", "csv", "--csv_train", str(tmp_path / "x.csv"),
                         "--csv_classes", tiny_data[1], "--device", "cpu"])
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"error: {tmp_path / 'x.csv'}: annotation file not found"]
