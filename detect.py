r"""Detect people (or any trained classes) in images, folders, globs and videos.

Usage:
    python detect.py --model_path weights/crowdhuman_resnet50.pt --classes class_names/crowdhuman.csv \
        --input photos/ --output_dir detect_results
    python detect.py --model_path weights/model.pt --input "data/**/*.jpg" --no_images
    python detect.py --model_path weights/model.pt --input street.mp4 --classes_to_show head

Writes into --output_dir:
    detections.jsonl  one JSON record per image ({"file", "height", "width", ...}) or video frame
                      ({"frame", "time_s", ...}) with "boxes" ([[x1, y1, x2, y2], ...] original pixels),
                      "scores", "labels" (class indices) and "classes" (class names); a person-triplet
                      model writes "full", "visible" and "head" boxes per person in place of "boxes"
                      (a detection of its head class has its box in all three)
    summary.json      counts, throughput (images/s or frames/s), unreadable files, settings
    annotated images  under the same relative paths as the inputs (not with --no_images), or
    <video name>.mp4 / .avi  the annotated video
Unreadable files in a folder or glob are reported, skipped and counted; a single unreadable input is an error.
"""
import argparse
import json
import os
import queue
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Dict, List, Optional, Sequence

import cv2
import numpy as np
from tqdm import tqdm

from retinanet.cli import (
    add_class_list_argument,
    add_inference_arguments,
    add_model_arguments,
    add_suppression_argument,
    check_inference_arguments,
    resolve_device,
    resolve_precision_arguments,
    run_cli,
    suppression_override,
)
from retinanet.data import Transform, read_class_list, read_image, read_image_size
from retinanet.data.image_sources import InputSpec, VideoInfo, make_batches, read_frames, resolve_input
from retinanet.engine import run_inference
from retinanet.errors import UserError
from retinanet.evaluation.detection_files import TRIPLET_FIELDS, TRIPLET_RECORD_KEYS
from retinanet.hub import load_model
from retinanet.io_utils import atomic_open, write_json
from retinanet.visualization import class_colours, draw_detections, select_detections, write_image

# Codecs every OpenCV build writes without extra libraries: MPEG-4 part 2 in .mp4, Motion-JPEG in .avi.
VIDEO_CODECS = {".mp4": "mp4v", ".avi": "MJPG"}


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_arguments(parser)
    add_suppression_argument(parser)
    add_class_list_argument(parser)
    parser.add_argument("--input", required=True,
                        help="an image, a folder of images, a quoted glob (e.g. 'data/**/*.jpg') or a "
                             "video file")
    parser.add_argument("--output_dir", default="./detect_results",
                        help="where outputs go (default: %(default)s)")
    parser.add_argument("--score_threshold", type=float, default=0.5,
                        help="keep detections scoring at least this (default: %(default)s)")
    parser.add_argument("--classes_to_show", nargs="+", default=None, metavar="CLASS",
                        help="only these class names, in the images and in detections.jsonl (default: all)")
    add_inference_arguments(parser, batch_help="images or frames per batch")
    parser.add_argument("--no_images", action="store_true",
                        help="write detections.jsonl and summary.json only, no annotated images or video")
    return parser


def class_indices(names: Optional[Sequence[str]], class_names: Sequence[str]) -> Optional[List[int]]:
    """--classes_to_show names -> class indices; an unknown name is a UserError listing the known ones."""
    if names is None:
        return None
    unknown = [name for name in names if name not in class_names]
    if unknown:
        raise UserError(f"--classes_to_show: unknown class {unknown[0]!r}; the model's classes are "
                        f"{', '.join(class_names)}")
    return [class_names.index(name) for name in names]


def detection_record(detections: Dict[str, np.ndarray], class_names: Sequence[str]) -> dict:
    """The JSON fields of one image's detections; boxes rounded to 0.01 px, scores to 1e-4.

    A person-triplet model's record has "full", "visible" and "head" boxes (one of each per person)
    in place of "boxes".
    """
    def rounded(boxes: np.ndarray) -> list:
        return np.round(boxes.astype(np.float64), 2).tolist()

    if "head_boxes" in detections:
        boxes = {field: rounded(detections[key]) for field, key in zip(TRIPLET_FIELDS, TRIPLET_RECORD_KEYS)}
    else:
        boxes = {"boxes": rounded(detections["boxes"])}
    return {
        **boxes,
        "scores": np.round(detections["scores"].astype(np.float64), 4).tolist(),
        "labels": detections["labels"].astype(int).tolist(),
        "classes": [class_names[label] for label in detections["labels"].tolist()],
    }


def output_image_path(path: str, spec: InputSpec, output_dir: str) -> str:
    """Annotated copy of ``path`` under ``output_dir``, at its path relative to the input root."""
    target = os.path.join(output_dir, os.path.relpath(os.path.abspath(path), spec.root))
    if os.path.abspath(target) == os.path.abspath(path):
        raise UserError(f"{path}: writing its annotated copy would overwrite it; choose another --output_dir")
    return target


def output_video_path(path: str, output_dir: str) -> str:
    stem, extension = os.path.splitext(os.path.basename(path))
    extension = extension.lower() if extension.lower() in VIDEO_CODECS else ".mp4"
    target = os.path.join(output_dir, stem + extension)
    if os.path.abspath(target) == os.path.abspath(path):
        raise UserError(f"{path}: writing the annotated video would overwrite it; "
                        "choose another --output_dir")
    return target


def write_annotated_images(spec: InputSpec, kept: Dict[int, Dict[str, np.ndarray]],
                           class_names: Sequence[str], output_dir: str) -> int:
    """Decode each image again, draw its detections and write it; returns images written.

    Threads overlap OpenCV's decoding and encoding, which release the GIL.
    """
    colours = class_colours(len(class_names))

    def annotate(index: int) -> None:
        path = spec.paths[index]
        image = draw_detections(read_image(path), kept[index], class_names, colours)
        write_image(output_image_path(path, spec, output_dir), image)

    with ThreadPoolExecutor(max_workers=max(2, min(8, os.cpu_count() or 1))) as pool:
        for _ in tqdm(pool.map(annotate, sorted(kept)), total=len(kept), desc="drawing", unit="image",
                      dynamic_ncols=True):
            pass
    return len(kept)


class AnnotatedVideoWriter:
    """Draws a video's detections and encodes its frames in a thread while the model runs on the next
    batches, so that decoding (the loader's worker), inference and encoding overlap.

    ``put(index, detections)`` in frame order; the thread decodes the video a second time (one frame
    at a time) to draw on. The file is written under a temporary name with the same extension (OpenCV
    picks the container from it); ``close()`` waits for the last frame and renames it, ``abort()``
    removes it. At most ``queue_size`` frames' detections wait for the thread.
    """

    def __init__(self, path: str, info: VideoInfo, class_names: Sequence[str], target: str, queue_size: int):
        self.path, self.target, self.class_names = path, target, class_names
        self.colours = class_colours(len(class_names))
        extension = os.path.splitext(target)[1]
        self.temporary = os.path.join(os.path.dirname(target), f".{os.path.basename(target)}.partial{extension}")
        os.makedirs(os.path.dirname(target) or ".", exist_ok=True)
        self.writer = cv2.VideoWriter(self.temporary, cv2.VideoWriter_fourcc(*VIDEO_CODECS[extension]),
                                      info.fps if info.fps > 0 else 25.0, (info.width, info.height))
        if not self.writer.isOpened():
            raise UserError(f"{target}: OpenCV cannot write {extension} video with codec {VIDEO_CODECS[extension]}")
        self.written = 0
        self.error: Optional[BaseException] = None
        self.queue: "queue.Queue" = queue.Queue(maxsize=queue_size)
        self.thread = threading.Thread(target=self._draw_frames, name="annotated-video", daemon=True)
        self.thread.start()

    def _draw_frames(self) -> None:
        frames = read_frames(self.path)
        try:
            while True:
                item = self.queue.get()
                if item is None:
                    return
                index, detections = item
                frame = next(frames, None)
                while frame is not None and self.written < index:  # frames without detections are not drawn
                    frame = next(frames, None)
                if frame is None:
                    raise UserError(f"{self.path}: the video ended before frame {index} on its second decoding")
                annotated = draw_detections(frame, detections, self.class_names, self.colours)
                del frame
                self.writer.write(cv2.cvtColor(annotated, cv2.COLOR_RGB2BGR))
                self.written = index + 1
        except BaseException as error:  # handed to the main thread by put() / close()
            self.error = error
            while self.queue.get() is not None:  # keep taking items, so that put() never blocks
                pass
        finally:
            frames.close()

    def _send(self, item) -> None:
        while self.thread.is_alive():
            try:
                self.queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def put(self, index: int, detections: Dict[str, np.ndarray]) -> None:
        if self.error is not None:
            raise self.error
        self._send((index, detections))

    def close(self) -> int:
        """Wait for the last frame, then move the finished file into place; returns frames written."""
        self._send(None)
        self.thread.join()
        self.writer.release()
        if self.error is not None:
            self._remove()
            raise self.error
        os.replace(self.temporary, self.target)
        return self.written

    def abort(self) -> None:
        """Stop the thread and remove the partial file."""
        self._send(None)
        self.thread.join()
        self.writer.release()
        self._remove()

    def _remove(self) -> None:
        if os.path.exists(self.temporary):
            os.remove(self.temporary)


def main(args: argparse.Namespace) -> dict:
    start = time.perf_counter()
    check_inference_arguments(args)
    spec = resolve_input(args.input)
    device = resolve_device(args.device)
    class_names = read_class_list(args.classes) if args.classes else None
    model, class_names = load_model(args.model_path, class_names=class_names, depth=args.depth,
                                    score_threshold=args.score_threshold, **suppression_override(args))
    model = model.to(device)
    precision = resolve_precision_arguments(args, device)
    print(precision.describe())
    shown = class_indices(args.classes_to_show, class_names)
    # Output names are checked before the long part: an input must never be overwritten.
    if not args.no_images:
        if spec.kind == "video":
            output_video_path(spec.paths[0], args.output_dir)
        else:
            for path in spec.paths:
                output_image_path(path, spec, args.output_dir)
    os.makedirs(args.output_dir, exist_ok=True)

    batches, video = make_batches(spec, Transform(args.min_side, args.max_side), args.batch_size,
                                  args.workers, on_error=tqdm.write)
    if spec.not_images:
        print(f"{len(spec.not_images)} files without an image extension were not read "
              f"(e.g. {spec.not_images[0]}; all listed in summary.json)")
    annotator, target = None, None
    if video is not None and not args.no_images:
        target = output_video_path(spec.paths[0], args.output_dir)
        annotator = AnnotatedVideoWriter(spec.paths[0], video, class_names, target, queue_size=2 * args.batch_size)

    def keep(index: int, detections: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        # Only the selection is kept, so the detections of a long video are never held twice.
        selection = select_detections(detections, args.score_threshold, shown)
        if annotator is not None:
            annotator.put(index, selection)
        return selection

    try:
        result = run_inference(model, batches, device, precision=precision, description="detect", on_image=keep)
        skipped = {error["index"] for error in batches.errors}
        kept = {index: detections for index, detections in enumerate(result.pop("detections"))
                if index not in skipped}
        if not kept:
            raise UserError(f"{args.input}: none of the {len(spec.paths)} images could be read")

        unit = "frames" if video is not None else "images"
        records_path = os.path.join(args.output_dir, "detections.jsonl")
        with atomic_open(records_path, "w", encoding="utf-8") as handle:
            # Image records read each file's header again for its size: seconds over thousands of files.
            for index, detections in tqdm(kept.items(), total=len(kept), desc="detections.jsonl",
                                          unit=unit[:-1], dynamic_ncols=True):
                if video is None:
                    height, width = read_image_size(spec.paths[index])
                    where = {"file": spec.paths[index], "height": height, "width": width}
                else:
                    where = {"frame": index, "time_s": round(index / video.fps, 4) if video.fps > 0 else None}
                handle.write(json.dumps({**where, **detection_record(detections, class_names)}) + "\n")

        outputs, annotated = [records_path], 0
        if annotator is not None:
            annotated = annotator.close()
            annotator = None
            outputs.append(f"{target} ({annotated} frames)")
    except BaseException:
        if annotator is not None:
            annotator.abort()
        raise
    if not args.no_images and video is None:
        annotated = write_annotated_images(spec, kept, class_names, args.output_dir)
        outputs.append(f"{annotated} annotated images in {args.output_dir}")

    summary = {
        "input": args.input,
        "kind": spec.kind,
        unit: len(kept),
        f"{unit}_per_second": round(result["images_per_second"], 3),
        "detections": int(sum(len(d["scores"]) for d in kept.values())),
        "annotated": annotated,
        "unreadable": batches.errors,
        "not_images": spec.not_images,
        "model_path": args.model_path,
        "classes": list(class_names),
        "classes_to_show": args.classes_to_show,
        "score_threshold": args.score_threshold,
        "device": str(device),
        "wall_seconds": round(time.perf_counter() - start, 3),
    }
    write_json(os.path.join(args.output_dir, "summary.json"), summary)
    skipped_note = f", {len(batches.errors)} unreadable files skipped" if video is None else ""
    print(f"detect: {len(kept)} {unit}, {summary[f'{unit}_per_second']:.2f} {unit}/s (inference), "
          f"{summary['detections']} detections >= {args.score_threshold}{skipped_note}; "
          f"wrote {', '.join(outputs)}")
    return summary


if __name__ == "__main__":
    run_cli(main, get_args_parser())
