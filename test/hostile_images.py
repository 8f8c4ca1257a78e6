"""Hand-built compressed images for the hostile-input tests: decompression bombs and bare headers.

Built from the format specifications (PNG chunks with their CRCs, JPEG marker segments) rather than
with an encoder, so their headers can claim anything.
"""
from __future__ import annotations

import struct
import zlib


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def png_bomb(width: int, height: int) -> bytes:
    """A valid 1-bit grey PNG of zeros: ~110 KB for 30000x30000, 900 MB once decoded to 8 bit."""
    row, z = b"\x00" + bytes((width + 7) // 8), zlib.compressobj(9)
    idat = b"".join(z.compress(row) for _ in range(height)) + z.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")


def png_head(width: int = 64, height: int = 48, depth: int = 8, color: int = 2, kind: bytes = b"IHDR",
             length: int = 13) -> bytes:
    """The signature and a first chunk header with the given fields (CRC zero), nothing after it."""
    return b"\x89PNG\r\n\x1a\n" + struct.pack(">I", length) + kind + struct.pack(
        ">IIBBBBB", width, height, depth, color, 0, 0, 0) + bytes(4)


def jpeg_sof(width: int, height: int, comps: int = 3) -> bytes:
    """SOI, a JFIF APP0 and a baseline start-of-frame claiming width x height: no tables, no scan."""
    app0 = b"\xff\xe0" + struct.pack(">H", 16) + b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
    sof = b"\xff\xc0" + struct.pack(">HBHHB", 8 + 3 * comps, 8, height, width, comps) + b"\x01\x22\x00" * comps
    return b"\xff\xd8" + app0 + sof
