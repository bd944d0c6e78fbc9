"""What detect.py reads (an image, a folder, a glob, a video) as datasets that batch like the annotated ones.

Samples have the keys of ``DetectionDataset.__getitem__`` (with empty targets), so the loaders
feed ``retinanet.engine.run_inference`` unchanged. A file that cannot be decoded becomes an error
record instead of a sample; ``ReadableBatches`` reports it in the main process and skips it, or
stops with a ``UserError`` when skipping is not allowed (a single input file).
"""
import glob
import os
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterator, List, Optional

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset

from retinanet.data.collate import collate_batch
from retinanet.data.image_io import read_image
from retinanet.data.loader import make_loader
from retinanet.data.transforms import Transform
from retinanet.data.image_io import IMAGE_EXTENSIONS, has_image_extension
from retinanet.errors import UserError

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".m4v", ".webm")
# Batches each loader worker decodes ahead of the model: enough to hide decoding, and a bound on
# the samples alive at once whatever the input's length.
PREFETCH_BATCHES = 2
_GLOB_CHARACTERS = "*?["


@dataclass
class InputSpec:
    """What ``--input`` names: kind "images" (paths in order) or "video" (one path).

    root: the folder output names are taken relative to; not_images: files a folder or glob
    matched that have no image extension (counted, not read).
    """

    kind: str
    paths: List[str]
    root: str
    not_images: List[str] = field(default_factory=list)


def _images_among(candidates: List[str], source: str) -> InputSpec:
    files = sorted(path for path in candidates if os.path.isfile(path))
    images = [path for path in files if has_image_extension(path)]
    if not images:
        raise UserError(f"{source}: no images ({', '.join(IMAGE_EXTENSIONS)}) found")
    root = os.path.commonpath([os.path.dirname(os.path.abspath(path)) for path in images])
    return InputSpec("images", images, root, [path for path in files if not has_image_extension(path)])


def resolve_input(text: str) -> InputSpec:
    """Classify ``--input``: an existing folder (its images, not recursive), a video or image file,
    or a glob pattern (``**`` recurses). Nothing found is a ``UserError``."""
    if os.path.isdir(text):
        return _images_among([os.path.join(text, name) for name in os.listdir(text)], text)
    if os.path.isfile(text):
        kind = "video" if text.lower().endswith(VIDEO_EXTENSIONS) else "images"
        return InputSpec(kind, [text], os.path.dirname(os.path.abspath(text)))
    if any(character in text for character in _GLOB_CHARACTERS):
        matches = glob.glob(text, recursive=True)
        if not matches:
            raise UserError(f"{text}: the pattern matches no files")
        return _images_among(matches, text)
    raise UserError(f"{text}: no such file or folder")


def _sample(image: np.ndarray, transform: Transform, path: str, index: int) -> dict:
    """A ``DetectionDataset``-style sample with no targets. image: (H, W, 3) uint8 RGB."""
    tensor, _, _, scale = transform(image)
    return {
        "image": tensor,
        "boxes": torch.zeros((0, 4), dtype=torch.float32),
        "labels": torch.zeros(0, dtype=torch.int64),
        "ignore": torch.zeros((0, 4), dtype=torch.float32),
        "ignore_labels": torch.zeros(0, dtype=torch.int64),
        "scale": scale,
        "orig_size": (image.shape[0], image.shape[1]),
        "path": path,
        "index": index,
    }


class ImageFiles(Dataset):
    """Image files in a given order; sample ``index`` is the position in ``paths``.

    An unreadable file yields ``{"index", "path", "error"}`` instead of a sample: decoding happens
    in DataLoader workers, where an exception would surface as a traceback of the worker.
    """

    def __init__(self, paths: List[str], transform: Transform):
        self.paths = list(paths)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict:
        path = self.paths[index]
        try:
            image = read_image(path)
        except UserError as error:
            return {"index": index, "path": path, "error": str(error)}
        return _sample(image, self.transform, path, index)


@dataclass
class VideoInfo:
    fps: float
    frame_count: int  # from the container header; 0 when unknown, and not always exact
    height: int
    width: int


def open_video(path: str) -> "tuple[cv2.VideoCapture, VideoInfo]":
    """Open a video with OpenCV; a file it cannot open or whose first frame cannot be read is a UserError."""
    capture = cv2.VideoCapture(path)
    if not capture.isOpened():
        raise UserError(f"{path}: OpenCV cannot open this video (unsupported codec or not a video)")
    info = VideoInfo(
        fps=float(capture.get(cv2.CAP_PROP_FPS) or 0.0),
        frame_count=max(int(capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0), 0),
        height=int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)),
        width=int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)),
    )
    return capture, info


def read_frames(path: str) -> Iterator[np.ndarray]:
    """Decode a video's frames in order, each (H, W, 3) uint8 RGB, until the stream ends."""
    capture, _ = open_video(path)
    try:
        while True:
            ok, frame = capture.read()
            if not ok:
                return
            yield cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
    finally:
        capture.release()


class VideoFrames(IterableDataset):
    """The frames of one video as samples; ``index`` is the frame number (0-based).

    Frames are decoded sequentially (seeking is slow and inexact in most codecs), so this dataset
    must be read by at most one DataLoader worker.
    """

    def __init__(self, path: str, transform: Transform):
        capture, self.info = open_video(path)
        ok, _ = capture.read()
        capture.release()
        if not ok:
            raise UserError(f"{path}: no frame could be decoded from this video")
        self.path = path
        self.transform = transform

    def __iter__(self) -> Iterator[dict]:
        worker = torch.utils.data.get_worker_info()
        if worker is not None and worker.num_workers > 1:
            raise RuntimeError("VideoFrames must be read by one DataLoader worker; every worker would decode "
                               "the whole video")
        for index, frame in enumerate(read_frames(self.path)):
            yield _sample(frame, self.transform, self.path, index)


def collate_readable(samples: List[dict]) -> "tuple[Optional[torch.Tensor], list, list, list]":
    """``collate_batch`` over the readable samples: (images or None, targets, metas, error records)."""
    errors = [sample for sample in samples if "error" in sample]
    readable = [sample for sample in samples if "error" not in sample]
    if not readable:
        return None, [], [], errors
    images, targets, metas = collate_batch(readable)
    return images, targets, metas, errors


class ReadableBatches:
    """Iterates a DataLoader built on ``collate_readable`` and yields ``(images, targets, metas)``.

    Error records are collected in ``errors`` and passed to ``on_error`` (a message printer)
    when ``skip_unreadable``; otherwise the first one is raised as a ``UserError``.
    ``len()`` is the number of batches when the source knows its size.
    """

    def __init__(self, loader: DataLoader, skip_unreadable: bool, on_error: Callable[[str], None],
                 num_batches: Optional[int]):
        self.loader = loader
        self.skip_unreadable = skip_unreadable
        self.on_error = on_error
        self.num_batches = num_batches
        self.errors: List[Dict[str, object]] = []

    def __len__(self) -> int:
        if self.num_batches is None:
            raise TypeError("the number of batches is not known in advance")
        return self.num_batches

    def __iter__(self):
        for images, targets, metas, errors in self.loader:
            for error in errors:
                if not self.skip_unreadable:
                    raise UserError(error["error"])
                self.errors.append({"index": error["index"], "path": error["path"], "error": error["error"]})
                self.on_error(f"skipped: {error['error']}")
            if images is not None:
                yield images, targets, metas


def make_batches(spec: InputSpec, transform: Transform, batch_size: int, num_workers: int,
                 on_error: Callable[[str], None] = print) -> "tuple[ReadableBatches, Optional[VideoInfo]]":
    """Batches for ``run_inference`` over ``spec``, and the video's properties (None for images).

    Unreadable images are skipped and reported when there are several inputs; a single unreadable
    input is an error. A video is decoded by one worker at most (in order). Inputs are decoded as
    the batches are consumed: at most ``batch_size * (PREFETCH_BATCHES * workers + 1)`` samples are
    alive at once, however long the video or the list of images. ``len()`` of the batches, the total
    of a progress bar, comes from a video's header frame count when it has one.
    """
    if spec.kind == "video":
        dataset = VideoFrames(spec.paths[0], transform)
        info = dataset.info
        num_workers = min(num_workers, 1)
        num_batches = -(-info.frame_count // batch_size) if info.frame_count else None
    else:
        dataset = ImageFiles(spec.paths, transform)
        info = None
        num_batches = -(-len(dataset) // batch_size)
    loader = make_loader(dataset, batch_size=batch_size, workers=num_workers, collate_fn=collate_readable,
                         prefetch_batches=PREFETCH_BATCHES)
    skip = spec.kind == "images" and len(spec.paths) > 1
    return ReadableBatches(loader, skip, on_error, num_batches), info
