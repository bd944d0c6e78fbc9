"""Atomic file writes: nothing is ever left half-written."""
import contextlib
import glob
import json
import os
import tempfile
from pathlib import Path
from typing import Iterator, Union

PathLike = Union[str, os.PathLike]


TEMPORARY_SUFFIX = ".tmp"


def temporary_prefix(path: PathLike) -> str:
    """The name prefix of ``atomic_path``'s temporary files for ``path`` (hidden, beside it)."""
    return f".{Path(path).name}."


@contextlib.contextmanager
def atomic_path(path: PathLike, durable: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` on success.

    On an exception the temporary file is removed and ``path`` is untouched. A process killed
    meanwhile (SIGKILL, power loss) leaves ``path`` as it was, and the temporary file for
    ``remove_stale_temporaries``. durable: flush the file and the rename to the disk before
    returning, so that a machine that goes down right after still holds the new file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=temporary_prefix(path), suffix=TEMPORARY_SUFFIX, dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    # mkstemp creates 0600; give the result the permissions a plain open() would (umask applied).
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    try:
        yield tmp
        if durable:
            _fsync(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if durable:
        try:
            _fsync(path.parent)
        except OSError:  # a folder cannot be opened for fsync on Windows
            pass


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove_stale_temporaries(path: PathLike) -> list:
    """Delete the temporary files a killed writer of ``path`` left beside it; returns their paths.

    Only for a file no other process is writing now (e.g. a run's own checkpoints at its start).
    """
    path = Path(path)
    if not path.parent.is_dir():
        return []
    stale = sorted(path.parent.glob(f"{glob.escape(temporary_prefix(path))}*{TEMPORARY_SUFFIX}"))
    for tmp in stale:
        tmp.unlink(missing_ok=True)
    return stale


@contextlib.contextmanager
def atomic_open(path: PathLike, mode: str = "w", **kwargs):
    """``open`` for writing whose result appears at ``path`` only when complete."""
    with atomic_path(path) as tmp:
        with open(tmp, mode, **kwargs) as handle:
            yield handle


def write_json(path: PathLike, obj, indent: int = 2) -> None:
    with atomic_open(path, "w", encoding="utf-8") as handle:
        # json.dumps uses the C encoder; json.dump to a file never does (6x slower on big files).
        handle.write(json.dumps(obj, indent=indent) + "\n")
