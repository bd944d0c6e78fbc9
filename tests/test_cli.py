import argparse
import json

import pytest
import torch

from retinanet.cli import resolve_device, run_cli, user_message
from retinanet.errors import UserError
from retinanet.io_utils import atomic_open, write_json


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
