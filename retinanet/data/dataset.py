"""What the CSV and COCO datasets share: annotations kept in original coordinates, decoded on demand."""
import os
from typing import Iterable, Sequence, TypeVar

import numpy as np
import torch
from tqdm import tqdm

from retinanet.data.class_list import check_class_names
from retinanet.data.image_io import read_image, read_image_size
from retinanet.data.transforms import Transform
from retinanet.errors import UserError

# Start-up passes over at least this many images show a progress bar with an ETA (seconds of
# header reads on a cold disk); smaller sets start in well under a second, without one.
PROGRESS_MIN_IMAGES = 2000

Item = TypeVar("Item")
# A person triplet's boxes beside its full-body "boxes" (retinanet.data.crowdhuman_people).
PERSON_BOX_KEYS = ("visible_boxes", "head_boxes")


def reports_start_up() -> bool:
    """Whether this process reports start-up progress: every rank of a distributed run builds its
    datasets, and only rank 0 (or a run without ``RANK``) speaks."""
    return os.environ.get("RANK", "0") == "0"


def start_up_progress(items: "Sequence[Item]", description: str) -> "Iterable[Item]":
    """``items`` (one per image), behind a progress bar when there are many (see ``reports_start_up``)."""
    quiet = len(items) < PROGRESS_MIN_IMAGES or not reports_start_up()
    return tqdm(items, desc=description, unit="image", disable=quiet, dynamic_ncols=True)


def make_annotation(
    boxes: np.ndarray, labels: np.ndarray, ignore: np.ndarray, ignore_labels: np.ndarray
) -> "dict[str, np.ndarray]":
    """One image's annotation in the dtypes every consumer expects.

    boxes: (N, 4) x1y1x2y2 -> float32; labels: (N,) -> int64;
    ignore: (M, 4) x1y1x2y2 -> float32; ignore_labels: (M,) -> int64, -1 = every class.
    """
    return {
        "boxes": np.asarray(boxes, dtype=np.float32).reshape(-1, 4),
        "labels": np.asarray(labels, dtype=np.int64).reshape(-1),
        "ignore": np.asarray(ignore, dtype=np.float32).reshape(-1, 4),
        "ignore_labels": np.asarray(ignore_labels, dtype=np.int64).reshape(-1),
    }


def group_by_image(
    num_images: int, box_images: np.ndarray, boxes: np.ndarray, labels: np.ndarray, is_ignore: np.ndarray
) -> "list[dict[str, np.ndarray]]":
    """Split flat per-box arrays into one ``make_annotation`` dict per image.

    box_images: (B,) image index of each box; boxes: (B, 4); labels: (B,); is_ignore: (B,) bool.
    Boxes keep their input order within an image.
    """
    order = np.argsort(box_images, kind="stable")
    box_images, boxes, labels, is_ignore = box_images[order], boxes[order], labels[order], is_ignore[order]
    bounds = np.searchsorted(box_images, np.arange(num_images + 1))
    annotations = []
    for start, end in zip(bounds[:-1], bounds[1:]):
        objects = ~is_ignore[start:end]
        annotations.append(make_annotation(
            boxes[start:end][objects], labels[start:end][objects],
            boxes[start:end][~objects], labels[start:end][~objects],
        ))
    return annotations


class DetectionDataset(torch.utils.data.Dataset):
    """Images with boxes, labels and ignore regions; subclasses only parse their file format.

    Args:
        class_names: label index -> class name.
        image_paths: one resolved path per image.
        annotations: one ``make_annotation`` dict per image, original image coordinates.
        sources: per image, where it was declared (e.g. ``train.csv:12``), for error messages.
        transform: applied in ``__getitem__``; None means ``Transform()`` (608/1024, no flip).
        image_sizes: per image (H, W) when the annotation file states it, else None (read from the header).
    """

    def __init__(
        self,
        class_names: Sequence[str],
        image_paths: "list[str]",
        annotations: "list[dict[str, np.ndarray]]",
        sources: "list[str]",
        transform: "Transform | None" = None,
        image_sizes: "list[tuple[int, int] | None] | None" = None,
    ):
        self.class_names = check_class_names(class_names)
        self.num_classes = len(self.class_names)
        self.transform = transform if transform is not None else Transform()
        self._image_paths = image_paths
        self._annotations = annotations
        self._sources = sources
        self._image_sizes = list(image_sizes) if image_sizes is not None else [None] * len(image_paths)

    def __len__(self) -> int:
        return len(self._image_paths)

    def image_path(self, index: int) -> str:
        return self._image_paths[index]

    def annotations(self, index: int) -> "dict[str, np.ndarray]":
        """Copies of image ``index``'s boxes (N, 4), labels (N,), ignore (M, 4), ignore_labels (M,).

        Original image coordinates; no image is decoded.
        """
        return {key: value.copy() for key, value in self._annotations[index].items()}

    def read_image_sizes(self, description: str = "image sizes") -> None:
        """Read every size not yet known from its file header (a start-up check of every image).

        A missing or damaged image then fails here, naming where it was declared, rather than in
        the middle of an epoch; sizes are in the displayed orientation (see ``image_io``).
        """
        unknown = [index for index, size in enumerate(self._image_sizes) if size is None]
        for index in start_up_progress(unknown, description):
            self.image_size(index)

    def image_size(self, index: int) -> "tuple[int, int]":
        """(H, W) of image ``index`` as displayed, read from its file header once and cached."""
        size = self._image_sizes[index]
        if size is None:
            try:
                size = read_image_size(self._image_paths[index])
            except UserError as error:
                raise UserError(f"{self._sources[index]}: {error}") from None
            self._image_sizes[index] = size
        return size

    def aspect_ratio(self, index: int) -> float:
        """Width / height of image ``index`` (what the batch sampler groups by)."""
        height, width = self.image_size(index)
        return width / height

    def __getitem__(self, index: int) -> dict:
        """Image ``index`` ready for the network, with its targets in resized coordinates.

        Returns a dict: image (3, h, w) float32; boxes (N, 4) float32; labels (N,) int64;
        ignore (M, 4) float32; ignore_labels (M,) int64; scale (float); orig_size (H, W);
        path (str); index (int). Person-triplet annotations (``data.crowdhuman_people``) add
        visible_boxes (N, 4), head_boxes (N, 4), resized and flipped with the boxes, visible_valid (N,)
        and head_valid (N,).
        """
        annotation = self._annotations[index]
        path = self._image_paths[index]
        try:
            image = read_image(path)
        except UserError as error:
            raise UserError(f"{self._sources[index]}: {error}") from None
        # A person triplet's visible and head boxes go through the transform with the full boxes, as
        # one (S N, 4) array: one resize, one flip.
        kinds = [key for key in ("boxes", *PERSON_BOX_KEYS) if key in annotation]
        stacked = np.concatenate([annotation[key] for key in kinds]) if len(kinds) > 1 else annotation["boxes"]
        tensor, boxes, ignore, scale = self.transform(image, stacked, annotation["ignore"])
        person = {}
        if len(kinds) > 1:
            boxes, *others = np.split(boxes, len(kinds))
            person = {key: torch.from_numpy(value) for key, value in zip(kinds[1:], others)}
            for key in ("visible_valid", "head_valid"):
                if key in annotation:
                    person[key] = torch.from_numpy(annotation[key].copy())
        return {
            "image": tensor,
            "boxes": torch.from_numpy(boxes),
            **person,
            "labels": torch.tensor(annotation["labels"]),
            "ignore": torch.from_numpy(ignore),
            "ignore_labels": torch.tensor(annotation["ignore_labels"]),
            "scale": scale,
            "orig_size": (image.shape[0], image.shape[1]),
            "path": path,
            "index": index,
        }
