"""Runs that die: SIGKILL while a checkpoint is written, a damaged last.pt, a full disk, an image lost
mid-run, SIGTERM to one process under torchrun. Each ends with what the user sees and, where the run
can go on, with ``--resume`` reaching the weights of an uninterrupted run."""
import errno
import io
import os
import re
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import train as train_script
from retinanet.checkpoint import read_checkpoint_file, save_checkpoint
from retinanet.errors import UserError
from tests.helpers import DENSE_IMAGES, train_argv, write_tiny_csv_dataset

ROOT = Path(__file__).resolve().parents[1]
# 8 images at batch 2: 4 steps an epoch.
COMMON = ("--epochs", "2", "--batch_size", "2", "--seed", "5")


@pytest.fixture
def data(tmp_path):
    return write_tiny_csv_dataset(str(tmp_path / "data"), size=(128, 160), images=DENSE_IMAGES)


def train_cli(data, output_dir, *extra, preexec_fn=None, wait=True):
    """train.py in its own process, one thread (the same float rounding in every run of a test)."""
    command = [sys.executable, "train.py", *train_argv(data, output_dir, *COMMON, *extra)]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    if not wait:
        return subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
                          preexec_fn=preexec_fn)


def weights(path):
    return read_checkpoint_file(str(path))["model"]


def assert_same_weights(expected, actual):
    assert expected.keys() == actual.keys()
    for key in expected:
        assert torch.equal(expected[key], actual[key]), key


def temporaries(folder):
    return sorted(p.name for p in Path(folder).glob(".*.tmp"))


def kill_while_writing(process, folder, timeout=120.0):
    """SIGKILL ``process`` as soon as it starts writing a checkpoint over an existing last.pt.

    True when the kill landed mid-write (its temporary file is left behind), False when the write
    finished first or the run ended.
    """
    deadline = time.monotonic() + timeout
    while process.poll() is None and time.monotonic() < deadline:
        if (folder / "last.pt").exists() and temporaries(folder):
            process.kill()
            process.wait()
            return bool(temporaries(folder))
        time.sleep(0.001)
    process.kill()
    process.wait()
    return False


def test_sigkill_while_last_pt_is_written_keeps_it_readable_and_resume_matches_the_uninterrupted_run(
        data, tmp_path):
    straight = train_cli(data, tmp_path / "straight")
    assert straight.returncode == 0, straight.stderr[-2000:]

    folder = tmp_path / "killed"
    kills = 0
    for _ in range(5):  # the write may win the race; then the next save is killed
        resume = ("--resume", str(folder / "last.pt")) if (folder / "last.pt").exists() else ()
        process = train_cli(data, folder, "--save_every", "1", *resume, wait=False)
        if kill_while_writing(process, folder):
            kills += 1
            break
    assert kills == 1, "no SIGKILL landed while a checkpoint was being written"
    left = temporaries(folder)
    assert left and left[0].startswith(".last.pt.")
    interrupted = read_checkpoint_file(str(folder / "last.pt"))  # the previous one, whole
    assert interrupted["epoch"] * 4 + interrupted["batches_done"] < 8

    finished = train_cli(data, folder, "--save_every", "1", "--resume", str(folder / "last.pt"))
    assert finished.returncode == 0, finished.stderr[-2000:]
    assert f"removed {folder / left[0]}" in finished.stdout
    assert temporaries(folder) == []
    assert_same_weights(weights(tmp_path / "straight" / "last.pt"), weights(folder / "last.pt"))


def test_resume_from_a_damaged_last_pt_names_it_and_the_previous_checkpoint_which_resumes(data, tmp_path):
    folder = tmp_path / "run"
    first = train_script.main(train_script.get_args_parser().parse_args(
        train_argv(data, folder, *COMMON, "--epochs", "1", "--save_every", "3")))
    assert first["epoch"] == 1
    # --save_every 3 wrote step 3; the end of the epoch (step 4) wrote last.pt and moved step 3 to last.prev.pt.
    assert (read_checkpoint_file(str(folder / "last.prev.pt"))["batches_done"],
            read_checkpoint_file(str(folder / "last.pt"))["epoch"]) == (3, 1)
    whole = (folder / "last.pt").read_bytes()
    for damaged in (whole[: len(whole) // 2], whole[:100], b"", whole[:-200] + b"\x13" * 200):
        (folder / "last.pt").write_bytes(damaged)
        with pytest.raises(UserError) as info:
            train_script.main(train_script.get_args_parser().parse_args(
                train_argv(data, folder, *COMMON, "--resume", str(folder / "last.pt"))))
        assert str(info.value).startswith(f"--resume {folder / 'last.pt'}: not a readable PyTorch checkpoint")
        assert str(info.value).endswith(
            f"; continue from the checkpoint before it with --resume {folder / 'last.prev.pt'}")
    result = subprocess.run([sys.executable, "train.py", *train_argv(data, folder, *COMMON, "--resume",
                             str(folder / "last.pt"))], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"error: {info.value}"]
    # The previous checkpoint costs one interval: from step 3, on to the end of epoch 2.
    resumed = train_script.main(train_script.get_args_parser().parse_args(
        train_argv(data, folder, *COMMON, "--resume", str(folder / "last.prev.pt"))))
    assert resumed["epoch"] == 2


class FullDisk(io.FileIO):
    """A file on a disk that fills up after ``room`` bytes (the write that crosses it fails)."""

    room = 4096

    def write(self, data):
        if self.tell() + len(memoryview(data).cast("B")) > self.room:
            super().write(bytes(memoryview(data).cast("B")[: max(0, self.room - self.tell())]))
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return super().write(data)


def test_disk_full_while_saving_is_one_error_naming_the_folder_and_keeps_the_previous_checkpoints(
        data, tmp_path, monkeypatch):
    folder = tmp_path / "run"
    parse = train_script.get_args_parser().parse_args
    train_script.main(parse(train_argv(data, folder, *COMMON, "--epochs", "1")))
    before = {name: (folder / name).read_bytes() for name in ("last.pt", "best.pt") if (folder / name).exists()}

    import retinanet.checkpoint as checkpoint_module

    real_open = open

    def open_on_a_full_disk(path, mode="r", *args, **kwargs):
        return FullDisk(path, "wb") if "w" in mode else real_open(path, mode, *args, **kwargs)

    monkeypatch.setattr(checkpoint_module, "open", open_on_a_full_disk, raising=False)
    with pytest.raises(UserError) as info:
        train_script.main(parse(train_argv(data, folder, *COMMON, "--resume", str(folder / "last.pt"))))
    assert re.fullmatch(
        re.escape(f"cannot save checkpoint {folder / 'last.pt'} in {folder}: No space left on device (")
        + r"\d+ MiB free"
        + re.escape(f"); the previous {folder / 'last.pt'} is intact, no partial file left; free space there or "
                    "choose another --output_dir"), str(info.value)), str(info.value)
    assert {name: (folder / name).read_bytes() for name in before} == before
    assert temporaries(folder) == [] and not (folder / "last.prev.pt").exists()


def test_a_real_failed_write_exits_non_zero_with_one_line(data, tmp_path):
    """The kernel refuses the write (a file-size limit: EFBIG, as ENOSPC would), in a real run."""
    folder = tmp_path / "run"
    assert train_cli(data, folder, "--epochs", "1").returncode == 0
    before = (folder / "last.pt").read_bytes()

    def limit_file_size():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # otherwise the kernel kills the process
        resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))

    result = train_cli(data, folder, "--resume", str(folder / "last.pt"), preexec_fn=limit_file_size)
    assert result.returncode == 2
    # stderr also holds the progress bars; the error is one line, the last
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == result.stderr.strip().splitlines()[-1:], result.stderr[-2000:]
    assert errors[0].startswith(f"error: cannot save checkpoint {folder / 'last.pt'} in {folder}: File too large")
    assert "Traceback" not in result.stderr
    assert (folder / "last.pt").read_bytes() == before and temporaries(folder) == []


class DeleteImageAfter:
    """Wraps train_one_epoch so that ``image`` is deleted after ``steps`` optimizer steps of the run."""

    def __init__(self, steps, image):
        self.remaining, self.image = steps, image
        self.original = train_script.train_one_epoch

    def __call__(self, *args, on_step, **kwargs):
        def deleting(record):
            self.remaining -= 1
            if self.remaining == 0:
                os.remove(self.image)
            return on_step(record)

        return self.original(*args, on_step=deleting, **kwargs)


def test_image_deleted_mid_run_is_named_after_a_checkpoint_and_resume_continues_exactly(data, tmp_path, monkeypatch):
    parse = train_script.get_args_parser().parse_args
    straight = train_script.main(parse(train_argv(data, tmp_path / "straight", *COMMON)))["model"]

    folder = tmp_path / "run"
    image = Path(data[0]).parent / "image_2.jpg"
    saved_image = image.read_bytes()
    monkeypatch.setattr(train_script, "train_one_epoch", DeleteImageAfter(4, str(image)))
    with pytest.raises(UserError) as info:
        train_script.main(parse(train_argv(data, folder, *COMMON)))
    monkeypatch.undo()
    stopped = read_checkpoint_file(str(folder / "last.pt"))
    epoch, batch = stopped["epoch"], stopped["batches_done"]
    # deleted at the end of epoch 1 (step 4): its batch comes up in epoch 2
    assert epoch == 1 and 0 <= batch < 4
    line = next(number for number, row in enumerate(open(data[0]), 1) if row.startswith(f"{image},"))
    assert str(info.value) == (
        f"{data[0]}:{line}: {image}: cannot read image (No such file or directory); "
        f"saved {folder / 'last.pt'} at epoch 2, "
        f"batch {batch}/4: fix or replace the image, then continue with --resume {folder / 'last.pt'}")

    image.write_bytes(saved_image)
    resumed = train_script.main(parse(train_argv(data, folder, *COMMON, "--resume", str(folder / "last.pt"))))
    assert_same_weights(straight.state_dict(), resumed["model"].state_dict())


def test_keep_checkpoints_keeps_the_previous_ones_in_order(tmp_path):
    path = tmp_path / "last.pt"
    for step in range(4):
        save_checkpoint(str(path), {"step": step}, keep=3)
    assert [torch.load(tmp_path / name, weights_only=True)["step"]
            for name in ("last.pt", "last.prev.pt", "last.prev2.pt")] == [3, 2, 1]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.prev.pt", "last.prev2.pt", "last.pt"]
    save_checkpoint(str(path), {"step": 4})  # keep=1: no previous one is touched
    assert torch.load(tmp_path / "last.prev.pt", weights_only=True)["step"] == 2
