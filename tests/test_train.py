"""train.py end to end on tiny data: overfitting, validation, resume, LR schedule, fine-tuning, NaN guard, DDP,
bad flags."""
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch

import csv_validation
import train as train_script
from retinanet.boxes import box_iou
from retinanet.checkpoint import read_checkpoint_file, save_checkpoint
from retinanet.data import CSVDataset, Transform
from retinanet.errors import UserError
from retinanet.model import RetinaNet
from retinanet.precision import cpu_has_fast
from tests.helpers import (
    DENSE_IMAGES,
    logical_order,
    save_model_checkpoint,
    tiny_layout,
    train_argv,
    write_tiny_csv_dataset,
)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    return write_tiny_csv_dataset(str(tmp_path_factory.mktemp("tiny")), size=(128, 160), images=DENSE_IMAGES)


def args_for(data, output_dir, *extra):
    return train_script.get_args_parser().parse_args(train_argv(data, output_dir, *extra))


@pytest.fixture(scope="module")
def overfit_run(tiny_data, tmp_path_factory):
    """40 epochs on the 8 tiny images, validated at the end: (train.main's result, output folder)."""
    output = tmp_path_factory.mktemp("overfit")
    result = train_script.main(args_for(tiny_data, output, "--epochs", "40", "--batch_size", "4",
                                        "--csv_val", tiny_data[0], "--val_every", "40", "--lr_schedule", "constant"))
    return result, output


def test_overfits_tiny_data_and_finds_the_drawn_objects(tiny_data, overfit_run):
    annotations, classes = tiny_data
    result, tmp_path = overfit_run
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
    assert {"optimizer", "iteration", "scaler", "rng", "args", "metrics", "model_args"} <= set(checkpoint)


def test_map_logged_for_an_epoch_is_what_csv_validation_reports_for_its_checkpoint(tiny_data, overfit_run, tmp_path):
    annotations, _ = tiny_data
    # The trained model made less sure of itself: some drawn objects now score between 0.01 and 0.05,
    # found by csv_validation.py's settings (score > 0.01) and lost at score > 0.05.
    trained = read_checkpoint_file(str(overfit_run[1] / "last.pt"))
    trained["model"]["classificationModel.output.bias"] -= 2.0
    save_checkpoint(str(tmp_path / "doubtful.pt"), {key: trained[key] for key in ("format", "model", "class_names",
                                                                                  "model_args")})
    # Trained BatchNorm here; the checkpoint loaded for inference folds it into the convolutions. The LR
    # is too small to undo the shift.
    train_script.main(args_for(tiny_data, tmp_path / "run", "--model_path", str(tmp_path / "doubtful.pt"),
                               "--freeze_bn", "off", "--epochs", "1", "--batch_size", "4", "--lr", "1e-6",
                               "--csv_val", annotations))
    logged = json.loads((tmp_path / "run" / "metrics.jsonl").read_text())
    evaluated = csv_validation.main(csv_validation.get_args_parser().parse_args([
        "--csv_val", annotations, "--model_path", str(tmp_path / "run" / "best.pt"), "--min_side", "128",
        "--max_side", "160", "--workers", "0", "--device", "cpu", "--no_coco", "--output_dir", str(tmp_path / "val")]))
    assert 0.3 < logged["map"] < 1
    assert evaluated["map"] == logged["map"]
    assert {name: c["ap"] for name, c in evaluated["per_class"].items()} == logged["ap"]


@pytest.mark.skipif(not cpu_has_fast("bf16"), reason="this CPU has no fast bf16: --precision bf16 runs fp32")
def test_bf16_inference_scores_a_trained_model_within_0_002_of_fp32(overfit_run, tmp_path):
    """On 64 new images of the tiny kind (~300 objects: on the 8 training images one swapped rank moves
    AP by 0.015); per class within 0.005, the AP step of a class's swapped neighbours here."""
    annotations, classes = write_tiny_csv_dataset(str(tmp_path / "new"), size=(128, 160),
                                                  images=tiny_layout(num_images=64, seed=1))
    results = {}
    for name in ("fp32", "bf16"):
        results[name] = csv_validation.main(csv_validation.get_args_parser().parse_args([
            "--csv_val", annotations, "--csv_classes", classes, "--model_path", str(overfit_run[1] / "last.pt"),
            "--min_side", "128",
            "--max_side", "160", "--workers", "0", "--device", "cpu", "--no_coco", "--precision", name,
            "--output_dir", str(tmp_path / name)]))
    assert results["bf16"]["settings"]["precision"] == "bf16"
    assert 0.5 < results["fp32"]["map"]
    assert abs(results["bf16"]["map"] - results["fp32"]["map"]) <= 0.002
    for class_name, fp32 in results["fp32"]["per_class"].items():
        assert abs(results["bf16"]["per_class"][class_name]["ap"] - fp32["ap"]) <= 0.005
    # bf16 did run: its detections are not fp32's to the last digit.
    assert (tmp_path / "fp32" / "detections.jsonl").read_text() != (tmp_path / "bf16" / "detections.jsonl").read_text()


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
    """Under the default plateau schedule, here with no patience: the LR drops after any epoch whose
    loss is not lower, and the resumed run must see the same epoch losses to take the same LRs."""
    common = ("--epochs", "3", "--batch_size", "2", "--seed", "3", "--lr_patience", "0", "--lr_gamma", "0.5")
    straight = train_script.main(args_for(tiny_data, tmp_path / "straight", *common))["model"]

    monkeypatch.setattr(train_script, "train_one_epoch", InterruptAfter(5))
    stopped = train_script.main(args_for(tiny_data, tmp_path / "resumed", *common))
    assert stopped["epoch"] == 1  # inside the second epoch
    saved = read_checkpoint_file(str(tmp_path / "resumed" / "last.pt"))
    assert (saved["epoch"], saved["batches_done"]) == (1, 1)
    monkeypatch.undo()
    with pytest.raises(UserError, match="stopped inside an epoch at --batch_size 2 on 1 process"):
        train_script.main(args_for(tiny_data, tmp_path / "resumed", "--epochs", "3", "--batch_size", "4",
                                   "--resume", str(tmp_path / "resumed" / "last.pt")))

    resumed = train_script.main(args_for(tiny_data, tmp_path / "resumed", *common,
                                         "--resume", str(tmp_path / "resumed" / "last.pt")))["model"]
    for (key, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), key
    logged = {}
    for run in ("straight", "resumed"):
        records = [json.loads(line) for line in open(tmp_path / run / "metrics.jsonl")]
        logged[run] = [(r["loss"], r["classification"], r["regression"], r["lr"]) for r in records]
    assert logged["resumed"] == logged["straight"]  # the epoch cut by the stop reports all of its steps

    # The LRs are torch's ReduceLROnPlateau stepped on each epoch's loss (after the 2-iteration warm-up).
    reference_optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1e-3)
    reference = torch.optim.lr_scheduler.ReduceLROnPlateau(reference_optimizer, patience=0, factor=0.5)
    for loss, _, _, lr in logged["straight"]:
        assert lr == pytest.approx(reference_optimizer.param_groups[0]["lr"], rel=1e-12)
        reference.step(loss)
    for run in ("straight", "resumed"):  # the LR the next step would take, decided on the last epoch's loss
        next_lr = read_checkpoint_file(str(tmp_path / run / "last.pt"))["optimizer"]["param_groups"][0]["lr"]
        assert next_lr == pytest.approx(reference_optimizer.param_groups[0]["lr"], rel=1e-12)


def lrs(folder):
    return [json.loads(line)["lr"] for line in open(folder / "metrics.jsonl")]


def test_warmup_is_capped_and_resume_follows_the_current_schedule_and_lr(tiny_data, tmp_path, capsys):
    # 8 images at batch 4: 2 iterations an epoch, so the default 500 warm-up iterations are capped at 1.
    # Half-size images: only the LR matters here.
    common = ("--batch_size", "4", "--warmup_iters", "500", "--lr_schedule", "cosine", "--feature_size", "16",
              "--min_side", "64", "--max_side", "80")
    straight = tmp_path / "straight"
    train_script.main(args_for(tiny_data, straight, *common, "--epochs", "4"))
    assert "linear warm-up from 0.001x over 1 iterations, cosine decay to 0 at iteration 8 " \
           "(--warmup_iters 500 capped at the first epoch)" in capsys.readouterr().out
    # the LR after epoch e (iteration 2e): 1e-3 * (1 + cos(pi * 2e / 8)) / 2
    expected = [1e-3 * (1 + math.cos(math.pi * e / 4)) / 2 for e in (1, 2, 3, 4)]
    assert lrs(straight) == pytest.approx(expected, rel=1e-12, abs=1e-18)

    # 2 epochs, then on to 4 at twice the LR: epochs 3 and 4 follow the 4-epoch schedule at 2e-3.
    short = tmp_path / "short"
    train_script.main(args_for(tiny_data, short, *common, "--epochs", "2"))
    capsys.readouterr()
    train_script.main(args_for(tiny_data, short, *common, "--epochs", "4", "--lr", "2e-3",
                               "--resume", str(short / "last.pt")))
    output = capsys.readouterr().out
    assert "--lr 0.002 applies from iteration 4 (the checkpoint's run had 0.001)" in output
    resumed = lrs(short)
    assert resumed[2:] == pytest.approx([2 * lr for lr in lrs(straight)[2:]], rel=1e-12, abs=1e-18)
    assert resumed[2] > 2e-4

    # What the optimizer state cannot follow is a one-line error.
    last = str(short / "last.pt")
    for flags, message in (
        (("--optimizer", "sgd"), "its adam state cannot continue as --optimizer sgd"),
        (("--depth", "34"), "trained with --depth 18, the flags say --depth 34"),
        (("--feature_size", "32"), "trained with --feature_size 16, the flags say --feature_size 32"),
        (("--freeze_bn", "on"), "trained with backbone BatchNorm trained, --freeze_bn on would change"),
    ):
        args = args_for(tiny_data, tmp_path / "bad", *common, "--epochs", "5", "--resume", last, *flags)
        with pytest.raises(UserError, match=message) as error:
            train_script.main(args)
        assert "\n" not in str(error.value)


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


def torchrun(*args):
    launcher = [shutil.which("torchrun")] if shutil.which("torchrun") else [sys.executable, "-m",
                                                                           "torch.distributed.run"]
    return [*launcher, "--nproc_per_node=2", *args]


def worker_with_rank(launcher: subprocess.Popen, rank: int) -> int:
    """The pid of the training process torchrun started with RANK=rank (Linux /proc)."""
    children = open(f"/proc/{launcher.pid}/task/{launcher.pid}/children").read().split()
    for pid in children:
        environ = open(f"/proc/{pid}/environ", "rb").read().split(b"\0")
        if f"RANK={rank}".encode() in environ:
            return int(pid)
    raise AssertionError(f"no process with RANK={rank} among {children}")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds torchrun's processes in /proc")
def test_two_process_gloo_ddp_trains_the_weights_of_one_process_and_stops_together_on_sigterm(tmp_path):
    """Two images: every epoch is one step over both, at batch 2 in one process or batch 1 in each of two.
    Losses are normalised per image, so both take the same gradient; the backbone BatchNorm is frozen
    (--freeze_bn on) because trained BatchNorm normalises over a process's own images. SGD, whose step
    is linear in the gradient, keeps float rounding rounding-sized in the weights (Adam divides a
    near-zero gradient by its own size). Then SIGTERM to the second process of a two-process run: both
    stop at the same step, the first saves, all exit 0, and --resume under torchrun ends on the weights
    of the uninterrupted two-process run. In fp32: bf16 rounds a one-image batch's activations otherwise
    than a two-image batch's, which is not what this compares."""
    folder = tmp_path / "two"
    annotations, classes = write_tiny_csv_dataset(str(folder), size=(128, 160), images=DENSE_IMAGES)
    two = folder / "two.csv"
    two.write_text("".join(line for line in open(annotations) if "image_0" in line or "image_1" in line))
    initial = RetinaNet(num_classes=2, depth=18, feature_size=16)
    with torch.no_grad(), logical_order(initial):  # the paper's small head weights: unclipped SGD diverges
        for head in (initial.classificationModel, initial.regressionModel):
            for conv in (head.conv1, head.conv2, head.conv3, head.conv4, head.output):
                conv.weight.normal_(0, 0.01)
    save_model_checkpoint(tmp_path / "initial.pt", initial, ["a", "b"])
    epochs = 6
    common = ["--dataset", "csv", "--csv_train", str(two), "--csv_classes", classes, "--depth", "18",
              "--feature_size", "16", "--model_path", str(tmp_path / "initial.pt"), "--freeze_bn", "on",
              "--min_side", "128", "--max_side", "160", "--workers", "0", "--device", "cpu", "--flip_prob", "0.5",
              "--epochs", str(epochs), "--warmup_iters", "0", "--lr_schedule", "constant", "--optimizer", "sgd",
              "--lr", "0.05", "--clip_grad_norm", "0", "--precision", "fp32"]
    single = run_script([sys.executable, "train.py", *common, "--batch_size", "2", "--output_dir", str(tmp_path / "1")])
    assert single.returncode == 0, single.stderr[-2000:]
    double = run_script(torchrun("--master_port=29531", "train.py", *common, "--batch_size", "1",
                                 "--output_dir", str(tmp_path / "2")))
    assert double.returncode == 0, double.stderr[-3000:]
    assert "2 process(es)" in double.stdout
    first = [json.loads(line) for line in open(tmp_path / "1" / "metrics.jsonl")]
    second = [json.loads(line) for line in open(tmp_path / "2" / "metrics.jsonl")]
    assert len(first) == len(second) == epochs
    for one, two in zip(first, second):
        assert math.isfinite(one["loss"]) and two["loss"] == pytest.approx(one["loss"], rel=1e-5)
    one_process = read_checkpoint_file(str(tmp_path / "1" / "last.pt"))["model"]
    two_processes = read_checkpoint_file(str(tmp_path / "2" / "last.pt"))["model"]
    trainable = {key: p.detach() for key, p in initial.named_parameters() if p.requires_grad}
    for key, start in trainable.items():
        step = (one_process[key] - start).abs().max().item()
        # within 1e-3 of how far the weights moved, or float32 rounding of the weights themselves
        assert step > 0 and torch.allclose(two_processes[key], one_process[key], rtol=1e-6, atol=1e-3 * step), key

    stopped = tmp_path / "stopped"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    launcher = subprocess.Popen(torchrun("--master_port=29532", "train.py", *common, "--batch_size", "1",
                                         "--output_dir", str(stopped)),
                                cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while not (stopped / "last.pt").exists() and launcher.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)  # the first epoch's checkpoint: every process is inside the loop by now
    os.kill(worker_with_rank(launcher, 1), signal.SIGTERM)
    out, err = launcher.communicate(timeout=240)
    assert launcher.returncode == 0, err[-3000:]
    assert "SIGTERM: stopping after this step" in out + err
    saved = read_checkpoint_file(str(stopped / "last.pt"))
    assert 1 <= saved["epoch"] < epochs and saved["batches_done"] == 0
    assert f"stopped after epoch {saved['epoch']}; saved {stopped / 'last.pt'}" in out
    resumed = run_script(torchrun("--master_port=29533", "train.py", *common, "--batch_size", "1",
                                  "--output_dir", str(stopped), "--resume", str(stopped / "last.pt")))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resumed {stopped / 'last.pt'}: epoch {saved['epoch']}" in resumed.stdout
    finished = read_checkpoint_file(str(stopped / "last.pt"))["model"]
    for key in two_processes:
        assert torch.equal(finished[key], two_processes[key]), key


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
    with pytest.raises(UserError, match="--keep_checkpoints must be at least 1, got 0"):
        train_script.main(args_for(tiny_data, tmp_path, "--keep_checkpoints", "0"))
    with pytest.raises(UserError, match="--lr_patience must be 0 or more, got -1"):
        train_script.main(args_for(tiny_data, tmp_path, "--lr_patience", "-1"))
    with pytest.raises(UserError, match="--model_path .*nothing.pt: file not found"):
        train_script.main(args_for(tiny_data, tmp_path, "--model_path", str(tmp_path / "nothing.pt")))
    result = run_script([sys.executable, "train.py", "--dataset", "csv", "--csv_train", str(tmp_path / "x.csv"),
                         "--csv_classes", tiny_data[1], "--device", "cpu"])
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"error: {tmp_path / 'x.csv'}: annotation file not found"]
