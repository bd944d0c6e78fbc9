"""detect.py streams a video: no pass holds more than a batch of decoded frames, frames are drawn and
encoded while the next batches run, the progress bar knows the number of batches, and an interrupted
or failed run leaves no partial output."""
import os
import weakref

import cv2
import numpy as np
import pytest

import detect
from retinanet.data import Transform, image_sources
from retinanet.data.image_sources import make_batches, resolve_input
from retinanet.model import RetinaNet
from tests.helpers import save_model_checkpoint, spread_model

FRAMES = 12
BATCH_SIZE = 3


class TrackedFrame(np.ndarray):
    """A decoded frame whose lifetime a test can follow: plain ndarrays take no weak references."""


class FrameCensus:
    """Wraps ``read_frames``: counts the frames it decoded and the most alive at any moment.

    Each frame is handed out as a ``TrackedFrame`` that owns its pixels, so any view or tensor made
    from it keeps it (and so the count) alive.
    """

    def __init__(self, read_frames):
        self.read_frames = read_frames
        self.decoded = self.alive = self.most_alive = 0

    def _freed(self) -> None:
        self.alive -= 1

    def __call__(self, path):
        for frame in self.read_frames(path):
            tracked = np.ndarray.__new__(TrackedFrame, frame.shape, frame.dtype)
            tracked[...] = frame
            del frame
            weakref.finalize(tracked, self._freed)
            self.decoded += 1
            self.alive += 1
            self.most_alive = max(self.most_alive, self.alive)
            yield tracked
            del tracked


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("model") / "model.pt")
    save_model_checkpoint(path, spread_model(), ["person", "head"])
    return path


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    """12 frames of 96x64 noise with a bright rectangle moving right, Motion-JPEG at 10 fps."""
    path = str(tmp_path_factory.mktemp("video") / "clip.avi")
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (96, 64))
    rng = np.random.default_rng(0)
    for index in range(FRAMES):
        frame = cv2.GaussianBlur(rng.integers(0, 256, (64, 96, 3), dtype=np.uint8), (5, 5), 0)
        cv2.rectangle(frame, (4 + 4 * index, 8), (34 + 4 * index, 56), (230, 230, 230), -1)
        writer.write(frame)
    writer.release()
    return path


def run_detect(checkpoint, video, output_dir):
    args = detect.get_args_parser().parse_args([
        "--model_path", checkpoint, "--input", video, "--output_dir", str(output_dir), "--min_side", "64",
        "--max_side", "96", "--batch_size", str(BATCH_SIZE), "--workers", "0", "--device", "cpu",
        "--score_threshold", "0.3",
    ])
    return detect.main(args)


def test_no_pass_holds_more_than_a_batch_of_frames(checkpoint, video, tmp_path, monkeypatch):
    inference, drawing = FrameCensus(image_sources.read_frames), FrameCensus(detect.read_frames)
    monkeypatch.setattr(image_sources, "read_frames", inference)  # what VideoFrames decodes for the model
    monkeypatch.setattr(detect, "read_frames", drawing)  # what the annotated video is drawn on
    summary = run_detect(checkpoint, video, tmp_path / "out")
    assert summary["frames"] == summary["annotated"] == FRAMES
    assert inference.decoded == drawing.decoded == FRAMES
    assert 1 <= inference.most_alive <= BATCH_SIZE
    assert 1 <= drawing.most_alive <= BATCH_SIZE
    assert inference.alive == drawing.alive == 0


def test_progress_total_is_the_number_of_batches(video):
    batches, info = make_batches(resolve_input(video), Transform(64, 96), 5, 0)
    assert info.frame_count == FRAMES and info.fps == pytest.approx(10.0)
    assert len(batches) == 3  # 12 frames in batches of 5: 5, 5, 2
    assert [len(metas) for _, _, metas in batches] == [5, 5, 2]


def test_an_interrupted_run_leaves_no_partial_records(checkpoint, video, tmp_path, monkeypatch):
    read_frames = image_sources.read_frames

    def interrupted_after_seven_frames(path):
        for index, frame in enumerate(read_frames(path)):
            if index == 7:
                raise KeyboardInterrupt
            yield frame

    monkeypatch.setattr(image_sources, "read_frames", interrupted_after_seven_frames)
    with pytest.raises(KeyboardInterrupt):
        run_detect(checkpoint, video, tmp_path / "out")
    assert os.listdir(tmp_path / "out") == []


def test_frames_go_to_the_video_writer_as_their_batch_is_done(checkpoint, video, tmp_path, monkeypatch):
    """Drawing and encoding overlap inference: the writer thread gets each batch's frames before the
    model runs the next batch (not after the last one)."""
    events = []
    original_detections, original_put = RetinaNet.detections, detect.AnnotatedVideoWriter.put

    def logged_detections(self, images, *args, **kwargs):
        events.append(("batch", images.shape[0]))
        return original_detections(self, images, *args, **kwargs)

    def logged_put(self, index, selection):
        events.append(("put", index))
        return original_put(self, index, selection)

    monkeypatch.setattr(RetinaNet, "detections", logged_detections)
    monkeypatch.setattr(detect.AnnotatedVideoWriter, "put", logged_put)
    summary = run_detect(checkpoint, video, tmp_path / "out")
    assert summary["annotated"] == FRAMES
    expected = []
    for start in range(0, FRAMES, BATCH_SIZE):
        expected += [("batch", BATCH_SIZE)] + [("put", index) for index in range(start, start + BATCH_SIZE)]
    assert events == expected
    capture = cv2.VideoCapture(str(tmp_path / "out" / "clip.avi"))
    assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == FRAMES


def test_a_drawing_failure_stops_the_run_and_leaves_no_partial_video(checkpoint, video, tmp_path, monkeypatch):
    def broken(frame, *args):
        raise OSError("drawing failed")

    monkeypatch.setattr(detect, "draw_detections", broken)
    with pytest.raises(OSError, match="drawing failed"):
        run_detect(checkpoint, video, tmp_path / "out")
    assert not [name for name in os.listdir(tmp_path / "out") if name.endswith(".avi")]
