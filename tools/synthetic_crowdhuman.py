"""A small synthetic CrowdHuman: drawn people in crowds, written in CrowdHuman's exact layout.

Layout written under ``output_dir``::

    CrowdHuman_train01/Images/<ID>.jpg ... CrowdHuman_train03/Images/<ID>.jpg
    CrowdHuman_val/Images/<ID>.jpg
    annotation_train.odgt, annotation_val.odgt

IDs look like the real ones (``273271,1a0d6000b9e1f5b7``: they contain a comma). Each person
is a skin-toned head with a hair cap on a clothed torso with arms and legs; people are drawn
back to front, so the visible box (``vbox``, from the pixels left visible) is smaller than
the full box (``fbox``) when occluded, and the full box may extend beyond the image. Crowd
patches far away are ``mask`` regions; ghostly "reflections" are people with ``extra.ignore``.

The data is meant to be learnable by a small RetinaNet from scratch: heads are at least
``min_head`` (28) pixels tall by default because the smallest anchor is 32x32 at stride 8
and a box only gets positive anchors at IoU >= 0.5; backgrounds avoid skin hues and are
less saturated than clothing.
"""
import json
import os
from dataclasses import dataclass

import cv2
import numpy as np
from tqdm import tqdm

from retinanet.data.crowdhuman import SPLITS
from retinanet.errors import UserError
from retinanet.io_utils import atomic_open

# Below this share of its pixels visible, a person is marked extra.ignore (a sliver of arm is
# not a learnable person), and a head below half visible gets head_attr.ignore.
MIN_VISIBLE_BODY_FRACTION = 0.2
MIN_VISIBLE_HEAD_FRACTION = 0.5

# OpenCV hue is 0..179. Skin tones sit at hues ~0-25 (and reds wrap at ~170+), so backgrounds and
# clothing draw from 35..155 and stay clearly apart from heads.
_NON_SKIN_HUES = (35, 155)

# (R, G, B) anchors of the skin palette, light to dark; tones are drawn between neighbours.
_SKIN_TONES = np.array(
    [(255, 224, 196), (241, 194, 150), (224, 172, 122), (198, 134, 86), (160, 102, 60), (110, 70, 42)],
    dtype=np.float64,
)
_HAIR_COLOURS = np.array([(20, 16, 14), (58, 36, 24), (100, 64, 36), (40, 40, 44), (150, 150, 150)])


@dataclass(frozen=True)
class SyntheticConfig:
    """What one generated image looks like. Sizes in pixels of the generated image."""

    width: int = 320
    height: int = 240
    min_people: int = 3
    max_people: int = 8
    min_head: int = 28
    max_head: int = 56
    min_body_heads: float = 3.0  # full-body height in head heights
    max_body_heads: float = 4.5
    border_fraction: float = 0.2  # people placed partly outside the image
    reflection_fraction: float = 0.05  # people drawn as faint reflections, annotated extra.ignore
    mask_fraction: float = 0.3  # images with a far-away crowd patch, annotated tag "mask"
    # people placed right behind someone already placed (a little farther, a shoulder's width aside):
    # their full bodies overlap heavily while their heads and upper bodies stay apart, as in a crowd
    behind_fraction: float = 0.0

    def check(self) -> None:
        if self.width < 64 or self.height < 64:
            raise UserError(f"image size must be at least 64x64, got {self.width}x{self.height}")
        if not 0 <= self.min_people <= self.max_people:
            raise UserError(f"need 0 <= min_people <= max_people, got {self.min_people}, {self.max_people}")
        if not 4 <= self.min_head <= self.max_head:
            raise UserError(f"need 4 <= min_head <= max_head, got {self.min_head}, {self.max_head}")
        if self.max_head > self.height // 2:
            raise UserError(f"max_head {self.max_head} is over half the image height {self.height}")
        if not 1.5 <= self.min_body_heads <= self.max_body_heads:
            raise UserError(
                "need 1.5 <= min_body_heads <= max_body_heads, "
                f"got {self.min_body_heads}, {self.max_body_heads}"
            )
        for name in ("border_fraction", "reflection_fraction", "mask_fraction", "behind_fraction"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise UserError(f"{name} must be in [0, 1], got {getattr(self, name)}")


# Sideways shift of a person behind another, in the front person's patch widths (arms included).
BEHIND_SHIFT = (0.05, 0.25)

# What --crowd chooses: "sparse" is the default set; "dense" has CrowdHuman's crowding: ~20 people per
# image (CrowdHuman: 22.6) and ~3 pairs of them per image at full-body IoU > 0.5 (CrowdHuman: 2.4),
# on 640x480 so that the people behind others keep enough of themselves visible to count.
CROWD_PRESETS = {
    "sparse": {},
    "dense": {"width": 640, "height": 480, "min_people": 30, "max_people": 50, "behind_fraction": 0.6},
}


def crowd_config(crowd: str, **overrides) -> "SyntheticConfig":
    """The SyntheticConfig of a crowd preset, with ``overrides`` (None values ignored) on top."""
    values = {**CROWD_PRESETS[crowd], **{key: value for key, value in overrides.items() if value is not None}}
    return SyntheticConfig(**values)


def _hsv_colour(rng: np.random.Generator, saturation: "tuple[int, int]", value: "tuple[int, int]"):
    hsv = [rng.integers(*_NON_SKIN_HUES), rng.integers(*saturation), rng.integers(*value)]
    return tuple(int(c) for c in cv2.cvtColor(np.array([[hsv]], np.uint8), cv2.COLOR_HSV2RGB)[0, 0])


def _background_colour(rng: np.random.Generator):
    if rng.random() < 0.25:
        grey = int(rng.integers(50, 220))
        return (grey, grey, grey)
    return _hsv_colour(rng, (20, 130), (50, 220))


def _clothing_colour(rng: np.random.Generator):
    if rng.random() < 0.2:  # black / white / grey clothes
        grey = int(rng.choice([25, 60, 200, 235]))
        return (grey, grey, grey)
    return _hsv_colour(rng, (150, 256), (70, 240))


def _skin_colour(rng: np.random.Generator):
    position = rng.uniform(0, len(_SKIN_TONES) - 1)
    low = int(position)
    high = min(low + 1, len(_SKIN_TONES) - 1)
    tone = _SKIN_TONES[low] + (position - low) * (_SKIN_TONES[high] - _SKIN_TONES[low])
    return tuple(int(c) for c in np.clip(tone + rng.normal(0, 6, 3), 0, 255))


def _darker(colour, factor: float):
    return tuple(int(c * factor) for c in colour)


def _draw_background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """(H, W, 3) uint8 RGB: a gradient with rectangles, bars and lines in non-skin colours."""
    start, end = np.array(_background_colour(rng)), np.array(_background_colour(rng))
    vertical = rng.random() < 0.5
    ramp = np.linspace(0.0, 1.0, height if vertical else width)[:, None]
    gradient = (start * (1 - ramp) + end * ramp).astype(np.uint8)  # (height or width, 3)
    gradient = gradient[:, None, :] if vertical else gradient[None, :, :]
    image = np.ascontiguousarray(np.broadcast_to(gradient, (height, width, 3)))
    for _ in range(rng.integers(4, 12)):
        x, y = int(rng.integers(-width // 4, width)), int(rng.integers(-height // 4, height))
        w, h = int(rng.integers(width // 16, width // 2)), int(rng.integers(height // 16, height // 2))
        cv2.rectangle(image, (x, y), (x + w, y + h), _background_colour(rng), -1)
    for _ in range(rng.integers(3, 10)):
        points = rng.integers(0, [width, height, width, height])
        thickness = int(rng.integers(1, 5))
        cv2.line(image, (int(points[0]), int(points[1])), (int(points[2]), int(points[3])),
                 _background_colour(rng), thickness)
    return image


@dataclass
class _Person:
    """A person drawn on its own patch: colours, silhouette and head masks, and where it goes."""

    patch: np.ndarray  # (h, w, 3) uint8 RGB
    silhouette: np.ndarray  # (h, w) bool
    head: np.ndarray  # (h, w) bool
    x0: int  # patch origin in the image, may be negative
    y0: int
    reflection: bool

    def overlap(self, height: int, width: int) -> "tuple[tuple[slice, slice], tuple[slice, slice]] | None":
        """(image slices, patch slices) of the part of the patch inside a (height, width) image."""
        patch_height, patch_width = self.silhouette.shape
        x0, y0 = max(self.x0, 0), max(self.y0, 0)
        x1, y1 = min(self.x0 + patch_width, width), min(self.y0 + patch_height, height)
        if x1 <= x0 or y1 <= y0:
            return None
        return ((slice(y0, y1), slice(x0, x1)),
                (slice(y0 - self.y0, y1 - self.y0), slice(x0 - self.x0, x1 - self.x0)))


# Part ids of the per-person label map; each is coloured from the person's palette afterwards.
_TROUSERS, _SLEEVES, _SHIRT, _SKIN, _HAIR, _EYES = range(1, 7)


def _draw_person(rng: np.random.Generator, head_height: int, body_heads: float) -> "tuple[np.ndarray, ...]":
    """One person on a patch: returns patch (h, w, 3) uint8, silhouette (h, w) bool, head (h, w) bool.

    The person is ``body_heads`` head heights tall and fills the patch height; the patch is wide
    enough for the arms.
    """
    head_width = max(4, int(round(head_height * rng.uniform(0.72, 0.85))))
    total_height = int(round(head_height * body_heads))
    torso_width = int(round(head_width * rng.uniform(1.5, 2.1)))
    torso_height = int(round((total_height - head_height) * rng.uniform(0.42, 0.5)))
    leg_length = total_height - head_height - torso_height
    arm_thickness = max(2, int(round(head_width * 0.28)))
    arm_length = int(round(torso_height * rng.uniform(0.85, 1.05)))
    margin = arm_length + arm_thickness + 2
    centre_x = torso_width // 2 + margin
    parts = np.zeros((total_height + 2, torso_width + 2 * margin), np.uint8)  # (h, w) part id, 0 = empty

    # Legs: two quadrilaterals from the hips, feet apart by a random stride (the "pose").
    hip_y, foot_y = head_height + torso_height - 2, total_height
    leg_width = max(3, torso_width // 2 - 1)
    stride = abs(int(rng.uniform(-0.35, 0.35) * leg_length))
    for side in (-1, 1):
        hip_x = centre_x + side * (torso_width // 4)
        foot_x = hip_x + side * (stride // 2)
        quad = [[hip_x - leg_width // 2, hip_y], [hip_x + leg_width // 2, hip_y],
                [foot_x + leg_width // 2, foot_y], [foot_x - leg_width // 2, foot_y]]
        cv2.fillConvexPoly(parts, np.array(quad, np.int32), _TROUSERS)
    # Arms: thick lines from the shoulders, hanging at a random angle, with small hands.
    for side in (-1, 1):
        angle = np.deg2rad(rng.uniform(5, 40))
        shoulder = (centre_x + side * (torso_width // 2 - arm_thickness // 2), head_height + arm_thickness)
        hand = (int(shoulder[0] + side * arm_length * np.sin(angle)),
                int(shoulder[1] + arm_length * np.cos(angle)))
        cv2.line(parts, shoulder, hand, _SLEEVES, arm_thickness)
        cv2.circle(parts, hand, max(2, arm_thickness // 2 + 1), _SKIN, -1)
    # Torso: a rectangle with rounded shoulders, just under the chin.
    shoulder_y = head_height - 2 + head_width // 4
    cv2.rectangle(parts, (centre_x - torso_width // 2, shoulder_y),
                  (centre_x + torso_width // 2, head_height - 2 + torso_height), _SHIRT, -1)
    cv2.ellipse(parts, (centre_x, shoulder_y), (torso_width // 2, head_width // 4), 0, 180, 360, _SHIRT, -1)
    # Head: a hair-coloured ellipse, the face (a lower, smaller ellipse) inside it, two eyes.
    head = np.zeros_like(parts)
    head_centre, head_axes = (centre_x, head_height // 2), (head_width // 2, head_height // 2)
    cv2.ellipse(head, head_centre, head_axes, 0, 0, 360, 1, -1)
    face = np.zeros_like(parts)
    face_centre = (centre_x + int(rng.integers(-1, 2)), head_height // 2 + max(1, head_height // 7))
    cv2.ellipse(face, face_centre, (int(head_axes[0] * 0.85), int(head_axes[1] * 0.8)), 0, 0, 360, 1, -1)
    parts[head > 0] = _HAIR
    parts[(head > 0) & (face > 0)] = _SKIN
    for side in (-1, 1):
        eye = (face_centre[0] + side * head_width // 5, face_centre[1] - head_height // 10)
        cv2.circle(parts, eye, max(1, head_width // 12), _EYES, -1)

    shirt = _clothing_colour(rng)
    palette = np.array([
        (0, 0, 0), _clothing_colour(rng), _darker(shirt, 0.85), shirt, _skin_colour(rng),
        _HAIR_COLOURS[rng.integers(len(_HAIR_COLOURS))], (30, 25, 25),
    ], np.uint8)  # indexed by part id
    return palette[parts], parts > 0, head > 0


def _place(
    rng: np.random.Generator,
    config: SyntheticConfig,
    patch_shape: "tuple[int, int]",
    head_height: int,
    depth: float,
    slot: float,
) -> "tuple[int, int]":
    """Patch origin (x0, y0) in the image; may be negative or past the border.

    depth in [0, 1] (0 far, 1 near) sets how low the feet are, as in a photo of a crowd on flat
    ground: near people are bigger and lower, and may be cut by the bottom border. slot in
    [0, 1) spreads people across the width so they overlap partly, not completely. With
    probability ``border_fraction`` a person is pushed partly out through the left or right border.
    The head stays inside the image unless the person is pushed out sideways.
    """
    width, height = config.width, config.height
    patch_height, patch_width = patch_shape
    centre_x = int(slot * width)
    if rng.random() < config.border_fraction:
        # The body centre goes near a side border, usually inside: the head is most often cut
        # less than half, the body and arms more.
        inside = int(rng.uniform(-0.3, 1.2) * head_height)
        centre_x = inside if rng.random() < 0.5 else width - inside
    feet_y = height * (0.55 + 0.5 * depth) + rng.normal(0, 0.04 * height)
    y0 = max(0, int(feet_y) - patch_height)
    return centre_x - patch_width // 2, y0


def _draw_crowd_patch(rng: np.random.Generator, image: np.ndarray) -> "list[int]":
    """A blurred, cross-hatched far-away crowd (too small to annotate): returns its [x, y, w, h]."""
    height, width = image.shape[:2]
    w, h = int(rng.integers(width // 5, width // 3)), int(rng.integers(height // 6, height // 3))
    x, y = int(rng.integers(0, width - w)), int(rng.integers(0, height - h))
    region = image[y:y + h, x:x + w].copy()
    for _ in range(int(w * h / 60)):
        px, py = int(rng.integers(0, w)), int(rng.integers(0, h))
        size = int(rng.integers(3, 7))
        cv2.ellipse(region, (px, py + size), (size, size * 2), 0, 0, 360, _clothing_colour(rng), -1)
        hair = tuple(int(c) for c in _HAIR_COLOURS[rng.integers(len(_HAIR_COLOURS))])
        cv2.circle(region, (px, py), max(2, size // 2 + 1), hair, -1)
    for offset in range(-h, w, 6):
        cv2.line(region, (offset, 0), (offset + h, h), _background_colour(rng), 1)
    image[y:y + h, x:x + w] = cv2.GaussianBlur(region, (5, 5), 1.5)
    return [x, y, w, h]


def _bbox(mask: np.ndarray) -> "tuple[int, int, int, int] | None":
    """[x, y, w, h] of the True pixels of a (h, w) mask, None when empty."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return None
    return int(cols[0]), int(rows[0]), int(cols[-1] - cols[0] + 1), int(rows[-1] - rows[0] + 1)


def generate_image(rng: np.random.Generator, config: SyntheticConfig) -> "tuple[np.ndarray, list[dict]]":
    """One image and its CrowdHuman gtboxes.

    Returns (H, W, 3) uint8 RGB (before JPEG) and gtboxes with integer ``[x, y, w, h]`` boxes:
    ``fbox``/``hbox`` from the full silhouette/head (may extend beyond the image), ``vbox``
    from the pixels left visible once everyone is drawn.
    """
    height, width = config.height, config.width
    image = _draw_background(rng, height, width)
    gtboxes = []
    if rng.random() < config.mask_fraction:
        region = _draw_crowd_patch(rng, image)
        gtboxes.append({"tag": "mask", "hbox": region, "head_attr": {}, "fbox": region, "vbox": region,
                        "extra": {"ignore": 1}})

    people = []
    placed = []  # (centre x, depth, patch width) of each person drawn so far
    count = int(rng.integers(config.min_people, config.max_people + 1))
    slots = (rng.permutation(count) + rng.uniform(0.15, 0.85, count)) / max(count, 1)
    for slot in slots:
        # Drawn only when asked for, so that sets without people behind others stay as they were.
        behind = bool(placed and config.behind_fraction > 0 and rng.random() < config.behind_fraction)
        if behind:
            front_x, front_depth, front_width = placed[int(rng.integers(len(placed)))]
            depth = float(np.clip(front_depth - rng.uniform(0.03, 0.12), 0, 1))
            size = np.clip(depth + rng.normal(0, 0.05), 0, 1)
            # A shoulder aside, to the left or right: the full bodies overlap at IoU ~0.5-0.7, the heads do not.
            shift = rng.choice([-1.0, 1.0]) * rng.uniform(*BEHIND_SHIFT) * front_width
            slot = (front_x + shift) / width
        else:
            depth = rng.random()
            # Near people have bigger heads (perspective); jitter keeps size from being a function of depth.
            size = np.clip(depth + rng.normal(0, 0.15), 0, 1)
        head_height = int(round(config.min_head + size * (config.max_head - config.min_head)))
        body_heads = rng.uniform(config.min_body_heads, config.max_body_heads)
        patch, silhouette, head = _draw_person(rng, head_height, body_heads)
        x0, y0 = _place(rng, config, patch.shape[:2], head_height, depth, slot)
        reflection = bool(rng.random() < config.reflection_fraction)
        people.append(_Person(patch, silhouette, head, x0, y0, reflection))
        placed.append((x0 + patch.shape[1] // 2, depth, patch.shape[1]))
    # Reflections first (they are on the background), then back to front: lower feet are nearer.
    people.sort(key=lambda person: (not person.reflection, person.y0 + person.patch.shape[0]))

    owner = np.full((height, width), -1, np.int32)  # (H, W) index of the person seen at each pixel
    overlaps = [person.overlap(height, width) for person in people]
    for index, (person, overlap) in enumerate(zip(people, overlaps)):
        if overlap is None:
            continue
        inside, local = overlap
        mask = person.silhouette[local]
        target = image[inside]
        if person.reflection:  # faint, half-transparent: a person in a shop window
            target[mask] = (0.45 * person.patch[local][mask] + 0.55 * target[mask]).astype(np.uint8)
        else:
            target[mask] = person.patch[local][mask]
        owner[inside][mask] = index

    for index, (person, overlap) in enumerate(zip(people, overlaps)):
        if overlap is None:
            continue
        inside, local = overlap
        visible = np.zeros_like(person.silhouette)  # (h, w) pixels of this person left visible
        visible[local] = owner[inside] == index
        visible_box = _bbox(visible)
        if visible_box is None:  # hidden behind others: not in the picture at all
            continue
        full_box, head_box = _bbox(person.silhouette), _bbox(person.head)
        body_fraction = visible.sum() / person.silhouette.sum()
        head_fraction = (visible & person.head).sum() / person.head.sum()
        shift = np.array([person.x0, person.y0, 0, 0])
        gtboxes.append({
            "tag": "person",
            "hbox": (np.array(head_box) + shift).tolist(),
            "head_attr": {"ignore": int(head_fraction < MIN_VISIBLE_HEAD_FRACTION or person.reflection),
                          "occ": int(head_fraction < 1), "unsure": 0},
            "fbox": (np.array(full_box) + shift).tolist(),
            "vbox": (np.array(visible_box) + shift).tolist(),
            "extra": {"box_id": len(gtboxes), "occ": int(body_fraction < 1),
                      "ignore": int(body_fraction < MIN_VISIBLE_BODY_FRACTION or person.reflection)},
        })
    noise = rng.normal(0.0, rng.uniform(2.0, 7.0), image.shape)
    image = np.clip(image + noise, 0, 255).astype(np.uint8)
    return image, gtboxes


def _image_id(rng: np.random.Generator, split_index: int, index: int) -> str:
    """Like the real IDs (a six-digit number, a comma, 16 hex digits); unique by split and index."""
    batch, random_hex = int(rng.integers(273271, 284194)), int(rng.integers(0, 2 ** 32))
    return f"{batch},{random_hex:08x}{split_index:x}{index:07x}"


def generate_split(
    output_dir: str, split: str, count: int, config: SyntheticConfig, seed: int
) -> "list[dict]":
    """Write ``count`` images of one split and its odgt; return the odgt records ({ID, gtboxes})."""
    layout = SPLITS[split]
    split_index = list(SPLITS).index(split)
    records = []
    for index in tqdm(range(count), desc=f"synthetic {split}"):
        # One generator per image, seeded by (seed, split, index): any image can be rebuilt alone.
        rng = np.random.default_rng([seed, split_index, index])
        image_id = _image_id(rng, split_index, index)
        image, gtboxes = generate_image(rng, config)
        folder = layout.image_folders[index * len(layout.image_folders) // max(count, 1)]
        images_dir = os.path.join(output_dir, folder, "Images")
        os.makedirs(images_dir, exist_ok=True)
        quality = int(rng.integers(70, 96))
        ok, encoded = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR),
                                   [cv2.IMWRITE_JPEG_QUALITY, quality])
        if not ok:
            raise UserError(f"OpenCV could not encode a {config.width}x{config.height} JPEG")
        with atomic_open(os.path.join(images_dir, f"{image_id}.jpg"), "wb") as handle:
            handle.write(encoded.tobytes())
        records.append({"ID": image_id, "gtboxes": gtboxes})
    with atomic_open(os.path.join(output_dir, layout.odgt), "w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record) + "\n")
    return records


def generate_dataset(
    output_dir: str,
    num_train: int = 200,
    num_val: int = 50,
    config: "SyntheticConfig | None" = None,
    seed: int = 0,
) -> "dict[str, list[dict]]":
    """Write a synthetic CrowdHuman into ``output_dir``; return the odgt records per split."""
    config = config or SyntheticConfig()
    config.check()
    if num_train < 1 or num_val < 1:
        raise UserError(f"need at least one train and one val image, got {num_train} and {num_val}")
    return {
        "train": generate_split(output_dir, "train", num_train, config, seed),
        "val": generate_split(output_dir, "val", num_val, config, seed),
    }
