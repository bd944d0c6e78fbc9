"""Image decoding (OpenCV) and image sizes read from file headers without decoding.

Orientation rule: images are used as they are displayed. OpenCV turns a photo upright by its
EXIF orientation tag (JPEG, PNG, WebP, TIFF) as ``PIL.ImageOps.exif_transpose`` does, and the
header readers below report the size after that turn, so sizes, boxes, clipping and drawings
all refer to the same pixels.
"""
import os
import struct
import zlib

import cv2
import numpy as np

from retinanet.errors import UserError

# File names read as images, compared in lower case (phones write ``IMG_0001.JPG``).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")

# IMREAD_COLOR applies the EXIF orientation and gives 3 channels (grey expanded, alpha and palette
# resolved, CMYK converted); ANYDEPTH keeps 16-bit samples so they are rounded to 8 bits below
# instead of OpenCV's shift by 8 bits.
_IMREAD_FLAGS = cv2.IMREAD_COLOR | cv2.IMREAD_ANYDEPTH

# JPEG start-of-frame markers carry the size; C4 (DHT), C8 (JPG) and CC (DAC) share the range but do not.
_JPEG_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
# Markers without a length field: TEM and RST0-7 (SOI/EOI never appear inside the header).
_JPEG_STANDALONE_MARKERS = frozenset([0x01, *range(0xD0, 0xD8)])
_JPEG_APP1, _JPEG_SOS = 0xE1, 0xDA
_EXIF_HEADER = b"Exif\x00\x00"
_EXIF_ORIENTATION_TAG = 0x0112
# EXIF orientations 5-8 turn the image by a quarter (with or without a mirror): width and height swap.
_SWAPPING_ORIENTATIONS = frozenset(range(5, 9))
# A PNG eXIf chunk after the image data is looked for in this many bytes before IEND.
_PNG_TAIL_BYTES = 1 << 16


def has_image_extension(path: str) -> bool:
    return path.lower().endswith(IMAGE_EXTENSIONS)


def read_image(path: "str | os.PathLike") -> np.ndarray:
    """Decode an image file; return it as (H, W, 3) uint8 RGB in its displayed orientation.

    Grey, palette and CMYK images become RGB, alpha is dropped, 16-bit samples are rounded to
    8 bits (v / 257). An unreadable file is a ``UserError`` naming the path.
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
    if image.dtype == np.uint16:
        image = cv2.convertScaleAbs(image, alpha=1 / 257)  # rounds: 0 -> 0, 65535 -> 255, 257 k -> k
    elif image.dtype != np.uint8:
        raise UserError(f"{path}: {image.dtype} samples are not supported; save the image with 8 or 16 bits")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def _exif_orientation(tiff: bytes) -> int:
    """The orientation tag (1-8) of an EXIF block (a TIFF header and IFD0); 1 when absent or damaged."""
    if tiff[:4] == b"II*\x00":
        order = "<"
    elif tiff[:4] == b"MM\x00*":
        order = ">"
    else:
        return 1
    try:
        (ifd,) = struct.unpack_from(order + "I", tiff, 4)
        (count,) = struct.unpack_from(order + "H", tiff, ifd)
        for entry in range(ifd + 2, ifd + 2 + 12 * count, 12):
            tag, kind, _, value = struct.unpack_from(order + "HHIH", tiff, entry)
            if tag == _EXIF_ORIENTATION_TAG:
                return value if kind == 3 else 1  # 3 = SHORT, the only type the tag may have
    except struct.error:  # offsets past the end of the block
        return 1
    return 1


def _displayed(size: "tuple[int, int]", orientation: int) -> "tuple[int, int]":
    return (size[1], size[0]) if orientation in _SWAPPING_ORIENTATIONS else size


def _jpeg_size(handle) -> "tuple[int, int] | None":
    """(H, W) as displayed: the frame header's size, turned by the first EXIF block's orientation.

    Segments are walked up to the start of scan, as the decoder reads them: an EXIF block may
    follow the frame header.
    """
    handle.seek(2)
    size, orientation = None, None
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
        if marker == _JPEG_SOS:  # start of scan: no more header segments
            return None if size is None else _displayed(size, orientation or 1)
        length_bytes = handle.read(2)
        if len(length_bytes) < 2:
            return None
        (length,) = struct.unpack(">H", length_bytes)
        if length < 2:  # corrupt: the length counts its own two bytes
            return None
        if marker in _JPEG_SOF_MARKERS and size is None:
            frame = handle.read(length - 2)
            if len(frame) < 5:
                return None
            _, height, width = struct.unpack_from(">BHH", frame)
            size = (height, width)
        elif marker == _JPEG_APP1 and orientation is None:
            payload = handle.read(length - 2)
            if payload.startswith(_EXIF_HEADER):
                orientation = _exif_orientation(payload[len(_EXIF_HEADER):])
        else:
            # Skip the segment by its length, so SOF-like bytes inside EXIF thumbnails are never read.
            handle.seek(length - 2, os.SEEK_CUR)


def _png_tail_exif(handle) -> "bytes | None":
    """The payload of an eXIf chunk stored after the image data, found by its CRC near IEND."""
    end = handle.seek(0, os.SEEK_END)
    start = max(end - _PNG_TAIL_BYTES, 0)
    handle.seek(start)
    tail = handle.read()
    position = tail.rfind(b"eXIf")
    while position >= 4:
        (length,) = struct.unpack_from(">I", tail, position - 4)
        data_end = position + 4 + length
        if data_end + 4 <= len(tail):
            (crc,) = struct.unpack_from(">I", tail, data_end)
            if crc == zlib.crc32(tail[position:data_end]):
                return tail[position + 4:data_end]
        position = tail.rfind(b"eXIf", 0, position)
    return None


def _png_size(handle, width: int, height: int) -> "tuple[int, int]":
    """(H, W) as displayed: IHDR's size turned by the eXIf chunk, which may come before or after the data."""
    handle.seek(33)  # signature (8) + IHDR chunk (4 + 4 + 13 + 4)
    exif = None
    while True:
        header = handle.read(8)
        if len(header) < 8:
            break
        length, kind = struct.unpack(">I4s", header)
        if kind == b"eXIf":
            exif = handle.read(length)
            break
        if kind in (b"IDAT", b"IEND"):
            exif = _png_tail_exif(handle)
            break
        handle.seek(length + 4, os.SEEK_CUR)  # data and CRC
    return _displayed((height, width), _exif_orientation(exif) if exif else 1)


def _header_size(path: str) -> "tuple[int, int] | None":
    """(H, W) as displayed from a JPEG, PNG or BMP header, or None for other formats / damaged headers."""
    with open(path, "rb") as handle:
        head = handle.read(26)
        if head[:3] == b"\xff\xd8\xff":
            return _jpeg_size(handle)
        if head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR":
            width, height = struct.unpack(">II", head[16:24])
            return _png_size(handle, width, height)
        # BITMAPINFOHEADER and successors (>= 40 bytes) hold 32-bit sizes; OS/2 ones fall back to decoding.
        if head[:2] == b"BM" and len(head) == 26 and struct.unpack("<I", head[14:18])[0] >= 40:
            width, height = struct.unpack("<ii", head[18:26])
            return abs(height), width  # negative height means rows stored top-down
    return None


def read_image_size(path: "str | os.PathLike") -> "tuple[int, int]":
    """(H, W) of an image file as displayed, from its header for JPEG/PNG/BMP (no pixel decoding).

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
