"""Width and height of a compressed image read from its header, before anything is decoded.

Why: a 30000x30000 PNG of zeros is under 1 MB on the wire and 900 MB (1.7 GB peak) once
cv2.imdecode has decoded it; the pixel limit has to be checked first, from the header alone. This
module parses only the few header bytes of the formats lseg_node accepts on `image/compressed`:
PNG (IHDR), JPEG (the SOFn marker, found by walking the marker segments), WebP (VP8, VP8L, VP8X)
and BMP. Anything else (TIFF, GIF, JPEG 2000, AVIF, PNM, ...: OpenCV decodes them, but no camera
driver sends them through image_transport) is refused, so no decoder runs on an unchecked header.
No numpy, no OpenCV, no ROS: a few struct reads, microseconds, no allocation.
"""
from __future__ import annotations

import struct
from typing import NamedTuple

__all__ = ["HeaderError", "CompressedHeader", "read_header", "FORMATS"]

FORMATS = ("PNG", "JPEG", "WebP", "BMP")
_PNG_SIG = b"\x89PNG\r\n\x1a\n"
# PNG colour type -> (channels, allowed bit depths)
_PNG_COLOR = {0: (1, (1, 2, 4, 8, 16)), 2: (3, (8, 16)), 3: (3, (1, 2, 4, 8)), 4: (2, (8, 16)), 6: (4, (8, 16))}
# JPEG start-of-frame markers (baseline, extended, progressive, lossless; Huffman and arithmetic)
_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
_STANDALONE = {0x01, *range(0xD0, 0xD8)}  # TEM, RST0-7: markers without a length field


class HeaderError(ValueError):
    """The header is truncated, corrupt or of a format that is not accepted; the message says which."""


class CompressedHeader(NamedTuple):
    format: str  # one of FORMATS
    width: int
    height: int
    channels: int
    bit_depth: int  # bits per channel sample (8 or 16; PNG may say 1, 2 or 4)

    @property
    def pixels(self) -> int:
        return self.width * self.height


def _png(b: bytes) -> CompressedHeader:
    if len(b) < 33:
        raise HeaderError(f"truncated PNG header: {len(b)} bytes, the IHDR chunk needs 33")
    length, kind = struct.unpack(">I4s", b[8:16])
    if kind != b"IHDR" or length != 13:
        raise HeaderError(f"corrupt PNG header: first chunk is {kind!r} of {length} bytes, not IHDR of 13")
    w, h, depth, color = struct.unpack(">IIBB", b[16:26])
    if w == 0 or h == 0 or w > 2**31 - 1 or h > 2**31 - 1:
        raise HeaderError(f"corrupt PNG header: size {w}x{h}")
    if color not in _PNG_COLOR or depth not in _PNG_COLOR[color][1]:
        raise HeaderError(f"corrupt PNG header: bit depth {depth} with colour type {color}")
    return CompressedHeader("PNG", w, h, _PNG_COLOR[color][0], depth)


def _jpeg(b: memoryview) -> CompressedHeader:
    i, n = 2, len(b)
    while True:
        if i + 2 > n:
            raise HeaderError(f"truncated JPEG header: no start-of-frame marker in {n} bytes")
        if b[i] != 0xFF:
            raise HeaderError(f"corrupt JPEG header: byte {b[i]:#04x} at offset {i} where a marker should be")
        while i + 1 < n and b[i + 1] == 0xFF:  # fill bytes
            i += 1
        if i + 2 > n:
            raise HeaderError(f"truncated JPEG header: no start-of-frame marker in {n} bytes")
        marker = b[i + 1]
        if marker in _STANDALONE:
            i += 2
            continue
        if marker in (0xD8, 0xD9, 0xDA, 0x00):
            what = {0xD8: "a second start-of-image", 0xD9: "end-of-image", 0xDA: "start-of-scan",
                    0x00: "a stuffed 0xFF00"}[marker]
            raise HeaderError(f"corrupt JPEG header: {what} at offset {i} before any start-of-frame marker")
        if i + 4 > n:
            raise HeaderError(f"truncated JPEG header: segment {marker:#04x} at offset {i} cut off")
        length = struct.unpack(">H", b[i + 2:i + 4])[0]
        if length < 2:
            raise HeaderError(f"corrupt JPEG header: segment {marker:#04x} at offset {i} has length {length}")
        if marker in _SOF:
            if i + 10 > n:
                raise HeaderError(f"truncated JPEG header: start-of-frame at offset {i} cut off")
            precision, h, w, comps = struct.unpack(">BHHB", b[i + 4:i + 10])
            if w == 0 or h == 0:
                raise HeaderError(f"JPEG header gives size {w}x{h} (a height of 0 defers it to a DNL marker, "
                                  "which is not supported)")
            if comps not in (1, 3, 4) or precision not in (8, 12, 16):
                raise HeaderError(f"corrupt JPEG header: {comps} components of {precision} bits")
            return CompressedHeader("JPEG", w, h, comps, 8 if precision == 8 else 16)
        i += 2 + length


def _webp(b: bytes) -> CompressedHeader:
    if len(b) < 30:
        raise HeaderError(f"truncated WebP header: {len(b)} bytes, needs 30")
    chunk = b[12:16]
    if chunk == b"VP8X":
        w = 1 + int.from_bytes(b[24:27], "little")
        h = 1 + int.from_bytes(b[27:30], "little")
        ch = 4 if b[20] & 0x10 else 3
    elif chunk == b"VP8L":
        if b[20] != 0x2F:
            raise HeaderError("corrupt WebP header: VP8L chunk without its 0x2f signature")
        bits = int.from_bytes(b[21:25], "little")
        w, h, ch = 1 + (bits & 0x3FFF), 1 + ((bits >> 14) & 0x3FFF), 4
    elif chunk == b"VP8 ":
        if b[23:26] != b"\x9d\x01\x2a":
            raise HeaderError("corrupt WebP header: VP8 chunk without its start code")
        w, h = (struct.unpack("<H", b[26:28])[0] & 0x3FFF), (struct.unpack("<H", b[28:30])[0] & 0x3FFF)
        ch = 3
        if w == 0 or h == 0:
            raise HeaderError(f"corrupt WebP header: size {w}x{h}")
    else:
        raise HeaderError(f"corrupt WebP header: first chunk {chunk!r} is none of VP8, VP8L, VP8X")
    return CompressedHeader("WebP", w, h, ch, 8)


def _bmp(b: bytes) -> CompressedHeader:
    if len(b) < 26:
        raise HeaderError(f"truncated BMP header: {len(b)} bytes, needs 26")
    size = struct.unpack("<I", b[14:18])[0]
    if size == 12:  # BITMAPCOREHEADER: unsigned 16-bit sizes
        w, h = struct.unpack("<HH", b[18:22])
        bpp = struct.unpack("<H", b[24:26])[0]
    elif size >= 40 and len(b) >= 30:
        w, h = struct.unpack("<ii", b[18:26])
        bpp = struct.unpack("<H", b[28:30])[0]
        h = abs(h)  # negative height = rows stored top-down
    else:
        raise HeaderError(f"corrupt or truncated BMP header: info header of {size} bytes in a {len(b)}-byte file")
    if w <= 0 or h <= 0:
        raise HeaderError(f"corrupt BMP header: size {w}x{h}")
    return CompressedHeader("BMP", w, h, 4 if bpp == 32 else 3, 8)


def read_header(data: bytes) -> CompressedHeader:
    """Format, size and channels of a compressed image, from its first bytes (JPEG: up to its SOFn).

    Raises:
        HeaderError: truncated or corrupt header, or a format other than PNG, JPEG, WebP, BMP.
    """
    mv = memoryview(data)
    if mv.ndim != 1 or mv.format != "B":
        mv = mv.cast("B")
    b = bytes(mv[:12])
    if b[:8] == _PNG_SIG:
        return _png(bytes(mv[:33]))
    if b[:3] == b"\xff\xd8\xff":
        return _jpeg(mv)
    if b[:4] == b"RIFF" and b[8:12] == b"WEBP":
        return _webp(bytes(mv[:30]))
    if b[:2] == b"BM":
        return _bmp(bytes(mv[:30]))
    if len(mv) < 8:
        raise HeaderError(f"truncated compressed image: {len(mv)} bytes {b!r}")
    raise HeaderError(f"not a {', '.join(FORMATS[:-1])} or {FORMATS[-1]} image (starts with {b[:8]!r})")
