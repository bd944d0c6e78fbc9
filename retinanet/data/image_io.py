"""Image decoding (OpenCV) and image sizes read from file headers without decoding."""
import os
import struct

import cv2
import numpy as np

from retinanet.errors import UserError

# Pixels exactly as stored: annotations (COCO, CrowdHuman, the original CSV pipeline) are
# in stored-pixel coordinates, and the header size readers below do not rotate either.
_IMREAD_FLAGS = cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION

# JPEG start-of-frame markers carry the size; C4 (DHT), C8 (JPG) and CC (DAC) share the range but do not.
_JPEG_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
# Markers without a length field: TEM and RST0-7 (SOI/EOI never appear inside the header).
_JPEG_STANDALONE_MARKERS = frozenset([0x01, *range(0xD0, 0xD8)])


def read_image(path: "str | os.PathLike") -> np.ndarray:
    """Decode an image file; return it as (H, W, 3) uint8 RGB.

    Grey and 16-bit images are converted to 8-bit RGB, alpha is dropped. An unreadable
    file is a ``UserError`` naming the path.
    """
    path = os.fspath(path)
    # imdecode on the bytes rather than imread(path): imread cannot open non-ASCII paths on Windows.
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as error:
        raise UserError(f"{path}: cannot read image ({error.strerror})") from None
    image = cv2.imdecode(data, _IMREAD_FLAGS) if data.size else None
    if image is None:
        raise UserError(f"{path}: not a readable image (empty, truncated or an unsupported format)")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def _jpeg_size(handle) -> "tuple[int, int] | None":
    handle.seek(2)
    while True:
        byte = handle.read(1)
        while byte and byte != b"\xff":
            byte = handle.read(1)
        while byte == b"\xff":  # any number of fill bytes may precede a marker
            byte = handle.read(1)
        if not byte:
            return None
        marker = byte[0]
        if marker in _JPEG_STANDALONE_MARKERS:
            continue
        length_bytes = handle.read(2)
        if len(length_bytes) < 2:
            return None
        (length,) = struct.unpack(">H", length_bytes)
        if length < 2:  # corrupt: the length counts its own two bytes
            return None
        if marker in _JPEG_SOF_MARKERS:
            frame = handle.read(5)
            if len(frame) < 5:
                return None
            _, height, width = struct.unpack(">BHH", frame)
            return height, width
        if marker == 0xDA:  # start of scan before any frame header: not a valid JPEG
            return None
        # Skip the segment by its length, so SOF-like bytes inside EXIF thumbnails are never read.
        handle.seek(length - 2, os.SEEK_CUR)


def _header_size(path: str) -> "tuple[int, int] | None":
    """(H, W) from a JPEG, PNG or BMP header, or None for other formats / damaged headers."""
    with open(path, "rb") as handle:
        head = handle.read(26)
        if head[:3] == b"\xff\xd8\xff":
            return _jpeg_size(handle)
        if head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR":
            width, height = struct.unpack(">II", head[16:24])
            return height, width
        # BITMAPINFOHEADER and successors (>= 40 bytes) hold 32-bit sizes; OS/2 ones fall back to decoding.
        if head[:2] == b"BM" and len(head) == 26 and struct.unpack("<I", head[14:18])[0] >= 40:
            width, height = struct.unpack("<ii", head[18:26])
            return abs(height), width  # negative height means rows stored top-down
    return None


def read_image_size(path: "str | os.PathLike") -> "tuple[int, int]":
    """(H, W) of an image file, from its header for JPEG/PNG/BMP (no pixel decoding).

    Other formats (or a header this reader cannot parse) fall back to a full decode, so
    the answer always equals ``read_image(path).shape[:2]``.
    """
    path = os.fspath(path)
    try:
        size = _header_size(path)
    except OSError as error:
        raise UserError(f"{path}: cannot read image ({error.strerror})") from None
    if size is None or min(size) <= 0:
        size = read_image(path).shape[:2]
    return int(size[0]), int(size[1])
