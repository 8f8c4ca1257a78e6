"""lseg_node against hostile input over DDS: malformed Image and CompressedImage messages and bad
/set_labels requests. Each one is answered (a frame: logged naming the problem and counted as
dropped_invalid in /diagnostics; a request: success false with the reason, the labels in force kept)
and the next good frame is processed. Odd but legal input (big-endian 16-bit, odd strides, 1x1
frames, unicode labels, exactly 77 tokens...) is processed or accepted.

Two node processes for the module (tiny model): `lseg_node` on raw `image`, `lseg_node_c` in
namespace /c on `/c/image/compressed` (input_transport is chosen when the inputs are created).
"""
from __future__ import annotations

from typing import Callable, Dict, List, Tuple, Union

import cv2
import numpy as np
import pytest

from hostile_images import jpeg_sof, png_bomb, png_head
from ros_harness import (TINY, NodeProcess, TestNode, compressed_msg, diagnostics_counter, photo,
                         publish_until_output, stamp_key, wait_for)

pytestmark = pytest.mark.timeout(600)

LIMIT = 1_000_000  # max_image_pixels of both nodes: "too large" cases stay cheap to build
COMMON = TINY + (f"max_image_pixels:={LIMIT}", "diagnostics_period:=0.5", "max_frame_age:=0")
OK = None  # expected answer of a legal frame: processed, outputs at its resolution


class Rig:
    """The two node processes, the test node, publishers and the labels in force."""

    def __init__(self, raw: NodeProcess, comp: NodeProcess, t: TestNode) -> None:
        self.raw, self.comp, self.t = raw, comp, t
        self.labels: List[str] = []  # in force now
        self.initial: List[str] = []


@pytest.fixture(scope="module")
def rig(ros_env, rclpy_context):
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.qos import DurabilityPolicy, QoSProfile
    from sensor_msgs.msg import CompressedImage, Image

    from lseg_ros.msg import ClassConfidences, LabelMap

    raw = NodeProcess(ros_env, params=COMMON)
    comp = NodeProcess(ros_env, params=COMMON + ("input_transport:=compressed",),
                       ros_args=("-r", "__node:=lseg_node_c", "-r", "__ns:=/c"))
    t = TestNode(rclpy_context)
    r = Rig(raw, comp, t)
    try:
        for topic in ("lseg/mask", "/c/lseg/mask"):
            t.subscribe(topic, Image)
        t.subscribe("lseg/class_confidences", ClassConfidences, QoSProfile(depth=50))
        t.subscribe("lseg/labels", LabelMap, QoSProfile(depth=50, durability=DurabilityPolicy.TRANSIENT_LOCAL))
        t.subscribe("/diagnostics", DiagnosticArray, QoSProfile(depth=50))
        t.pub = t.node.create_publisher(Image, "image", 5)
        t.cpub = t.node.create_publisher(CompressedImage, "/c/image/compressed", 5)
        for proc, pub in ((raw, t.pub), (comp, t.cpub)):
            wait_for(lambda: pub.get_subscription_count() > 0 or proc.proc.poll() is not None, 120,
                     "node subscribed to its input")
            assert proc.proc.poll() is None, proc.log()
        good_frame(r)
        good_frame(r, compressed=True)
        r.labels = r.initial = list(t.get_params("lseg_node", "labels")[0])
        yield r
    finally:
        t.close()
        codes = (raw.stop(), comp.stop())
        assert "Traceback" not in raw.log() + comp.log(), raw.log() + comp.log()
        assert codes == (0, 0), f"exit codes {codes}\n{raw.log()}\n{comp.log()}"


def _now(t: TestNode):
    return t.node.get_clock().now().to_msg()


def good_frame(r: Rig, compressed: bool = False):
    """A real photo (160x120) published until its mask comes back; returns the mask."""
    t = r.t
    if compressed:
        ok, jpg = cv2.imencode(".jpg", photo(160, 120)[:, :, ::-1])
        msg, pub, topic = compressed_msg(jpg.tobytes(), "rgb8; jpeg compressed bgr8", _now(t), "good"), t.cpub, "/c/lseg/mask"
    else:
        msg, pub, topic = raw_msg("rgb8", 120, 160, 480, photo(160, 120).tobytes(), stamp=_now(t)), t.pub, "lseg/mask"
    mask = publish_until_output(t, pub, msg, topic)
    assert (mask.width, mask.height) == (160, 120)
    return mask


def raw_msg(encoding: str, height: int, width: int, step: int, data: bytes, big: bool = False, stamp=None):
    """sensor_msgs/Image with every field given as is (no consistency between them assumed)."""
    from sensor_msgs.msg import Image

    msg = Image(encoding=encoding, height=height, width=width, step=step, is_bigendian=big, data=bytes(data))
    msg.header.frame_id = "hostile"
    if stamp is not None:
        msg.header.stamp = stamp
    return msg


def _rgb(h: int = 48, w: int = 64) -> np.ndarray:
    return photo(w, h)


def _padded(arr2d: np.ndarray, step: int, cut: int = 0) -> bytes:
    """Rows of arr2d (bytes) padded to `step`; the last `cut` bytes dropped."""
    rows = arr2d.reshape(arr2d.shape[0], -1).view(np.uint8)
    buf = np.zeros((rows.shape[0], step), np.uint8)
    buf[:, :rows.shape[1]] = rows
    data = buf.tobytes()
    return data[:len(data) - cut] if cut else data


def _mono16(big: bool, flat: bool = False) -> bytes:
    a = np.full((48, 64), 4000, np.uint16) if flat else (np.arange(48 * 64).reshape(48, 64) * 3 + 500).astype(np.uint16)
    return a.astype(">u2" if big else "<u2").tobytes()


def _rgb16(big: bool) -> bytes:
    return (_rgb().astype(np.uint16) << 8).astype(">u2" if big else "<u2").tobytes()


Expect = Union[str, None]
# name -> (fields of the Image: encoding, height, width, step, data, is_bigendian), expected error text or OK
RAW: Dict[str, Tuple[Callable[[], tuple], Expect]] = {
    "encoding_32FC1": (lambda: ("32FC1", 8, 8, 32, bytes(256)), "unsupported encoding '32FC1'"),
    "encoding_empty": (lambda: ("", 8, 8, 24, bytes(192)), "unsupported encoding ''"),
    "encoding_upper_case": (lambda: ("RGB8", 8, 8, 24, bytes(192)), "unsupported encoding 'RGB8'"),
    "encoding_leading_space": (lambda: (" rgb8", 8, 8, 24, bytes(192)), "unsupported encoding ' rgb8'"),
    "encoding_bayer": (lambda: ("bayer_rggb8", 8, 8, 8, bytes(64)), "unsupported encoding 'bayer_rggb8'"),
    "encoding_16UC3": (lambda: ("16UC3", 8, 8, 48, bytes(384)), "unsupported encoding '16UC3'"),
    "encoding_32SC1": (lambda: ("32SC1", 8, 8, 32, bytes(256)), "unsupported encoding '32SC1'"),
    "encoding_jpeg_in_raw": (lambda: ("jpeg", 48, 64, 192, cv2.imencode(".jpg", _rgb())[1].tobytes()),
                             "unsupported encoding 'jpeg'"),
    "step_too_small": (lambda: ("rgb8", 8, 8, 10, bytes(192)), "step 10 is smaller than width * bytes per pixel = 8 * 3 = 24"),
    "step_zero": (lambda: ("rgb8", 8, 8, 0, bytes(192)), "step 0 is smaller"),
    "step_of_8bit_for_mono16": (lambda: ("mono16", 8, 8, 8, bytes(128)), "step 8 is smaller than width * bytes per pixel = 8 * 2 = 16"),
    "step_of_rgb8_for_rgba8": (lambda: ("rgba8", 8, 8, 24, bytes(256)), "= 8 * 4 = 32"),
    "data_too_short": (lambda: ("rgb8", 8, 8, 24, bytes(100)), "data has 100 bytes"),
    "data_empty": (lambda: ("rgb8", 8, 8, 24, b""), "data has 0 bytes"),
    "data_one_byte_short": (lambda: ("rgb8", 8, 8, 24, bytes(191)), "data has 191 bytes"),
    "padding_claimed_but_absent": (lambda: ("rgb8", 8, 8, 32, bytes(192)), "data has 192 bytes"),
    "mono16_odd_byte_count": (lambda: ("mono16", 8, 8, 16, bytes(127)), "data has 127 bytes"),
    "rgb16_data_short": (lambda: ("rgb16", 4, 4, 24, bytes(50)), "data has 50 bytes"),
    "step_near_uint32_max": (lambda: ("rgb8", 2, 2, 2**32 - 1, bytes(12)), "data has 12 bytes"),
    "zero_width": (lambda: ("rgb8", 8, 0, 0, b""), "empty image: 0x8"),
    "zero_height": (lambda: ("rgb8", 0, 8, 24, b""), "empty image: 8x0"),
    "zero_both_with_data": (lambda: ("rgb8", 0, 0, 0, bytes(300)), "empty image: 0x0"),
    "huge_claimed_size": (lambda: ("mono8", 65535, 65535, 65535, bytes(100)), "too large: 65535x65535"),
    "width_uint32_max": (lambda: ("mono8", 1, 2**32 - 1, 2**32 - 1, bytes(100)), "too large: 4294967295x1"),
    "tall_and_thin_over_limit": (lambda: ("mono8", 2_000_000, 1, 1, bytes(10)), "too large: 1x2000000"),
    "one_pixel_over_limit": (lambda: ("mono8", 1000, 1001, 1001, bytes(1001 * 1000)),
                             f"1001x1000 = 1001000 pixels exceeds max_image_pixels={LIMIT}"),
    "yuv422_odd_width": (lambda: ("yuv422", 8, 7, 14, bytes(112)), "yuv422 needs an even width, got 7"),
    # legal, if odd: processed at their own resolution
    "big_endian_mono16": (lambda: ("mono16", 48, 64, 128, _mono16(True), True), OK),
    "little_endian_16UC1": (lambda: ("16UC1", 48, 64, 128, _mono16(False)), OK),
    "flat_mono16": (lambda: ("mono16", 48, 64, 128, _mono16(False, flat=True)), OK),
    "big_endian_rgb16": (lambda: ("rgb16", 48, 64, 384, _rgb16(True), True), OK),
    "odd_stride_rgb8": (lambda: ("rgb8", 48, 64, 193, _padded(_rgb(), 193)), OK),
    "odd_stride_rgb16": (lambda: ("rgb16", 48, 64, 385, _padded(np.frombuffer(_rgb16(False), np.uint8).reshape(48, -1), 385)), OK),
    "last_row_padding_absent": (lambda: ("bgr8", 48, 64, 200, _padded(_rgb(), 200, cut=8)), OK),
    "trailing_extra_data": (lambda: ("rgb8", 48, 64, 192, _rgb().tobytes() + bytes(999)), OK),
    "big_endian_flag_on_8bit": (lambda: ("rgb8", 48, 64, 192, _rgb().tobytes(), True), OK),
    "one_pixel": (lambda: ("rgb8", 1, 1, 3, b"\x10\x80\xf0"), OK),
    "one_row": (lambda: ("mono8", 1, 640, 640, bytes(range(256)) * 2 + bytes(128)), OK),
    "one_column": (lambda: ("mono8", 480, 1, 1, bytes(480)), OK),
    "bgra8": (lambda: ("bgra8", 48, 64, 256, np.dstack([_rgb(), np.zeros((48, 64), np.uint8)]).tobytes()), OK),
    "yuv422_yuy2": (lambda: ("yuv422_yuy2", 48, 64, 128, bytes([16, 128]) * (48 * 64)), OK),
    "at_the_pixel_limit": (lambda: ("mono8", 1000, 1000, 1000, np.tile(np.arange(1000, dtype=np.uint8), 1000).tobytes()), OK),
}


def _enc(ext: str, img: np.ndarray, *params) -> bytes:
    ok, buf = cv2.imencode(ext, img, list(params))
    assert ok
    return buf.tobytes()


def _photo_jpg() -> bytes:
    return _enc(".jpg", photo(160, 120)[:, :, ::-1])


def _photo_png() -> bytes:
    return _enc(".png", photo(160, 120)[:, :, ::-1])


def _flip_bytes(data: bytes, start: int, every: int = 7) -> bytes:
    b = bytearray(data)
    for i in range(start, len(b), every):
        b[i] ^= 0x55
    return bytes(b)


# name -> ((format, data), expected error text or OK)
COMPRESSED: Dict[str, Tuple[Callable[[], tuple], Expect]] = {
    "empty_payload": (lambda: ("jpeg", b""), "compressed image is empty"),
    "two_bytes": (lambda: ("png", b"\x89P"), "truncated compressed image: 2 bytes"),
    "text_not_an_image": (lambda: ("jpeg", b"definitely not a jpeg" * 50), "not a PNG, JPEG, WebP or BMP image"),
    "gif": (lambda: ("gif", b"GIF89a" + bytes(200)), "not a PNG, JPEG, WebP or BMP image (starts with b'GIF89a"),
    "tiff": (lambda: ("tiff", b"II*\x00" + bytes(200)), "not a PNG, JPEG, WebP or BMP image"),
    "compressed_depth": (lambda: ("16UC1; compressedDepth", _photo_png()), "compressedDepth"),
    "jpeg_junk_after_soi": (lambda: ("jpeg", b"\xff\xd8\xff\xe0 definitely not a jpeg" * 50), "truncated JPEG header"),
    "jpeg_cut_before_sof": (lambda: ("jpeg", _photo_jpg()[:12]), "truncated JPEG header"),
    "jpeg_scan_before_sof": (lambda: ("jpeg", b"\xff\xd8\xff\xda\x00\x08" + bytes(200)), "start-of-scan at offset 2"),
    "jpeg_height_zero_dnl": (lambda: ("jpeg", jpeg_sof(64, 0) + bytes(100)), "size 64x0"),
    "jpeg_truncated_half": (lambda: ("jpeg", _photo_jpg()[:len(_photo_jpg()) // 2]), "(JPEG 160x120"),
    "jpeg_corrupt_entropy_data": (lambda: ("jpeg", _flip_bytes(_photo_jpg(), 600)), "(JPEG 160x120"),
    "jpeg_claims_3_gigapixels": (lambda: ("jpeg", jpeg_sof(60000, 50000) + bytes(100)),
                                 "JPEG header says 60000x50000 = 3000000000 pixels"),
    "png_bomb_30000x30000": (lambda: ("png", png_bomb(30000, 30000)), "PNG header says 30000x30000 = 900000000 pixels"),
    "png_bomb_one_row_over": (lambda: ("png", png_bomb(1000, 1001)), f"PNG header says 1000x1001 = 1001000 pixels, exceeds max_image_pixels={LIMIT}"),
    "png_header_claims_1e10_pixels": (lambda: ("png", png_head(100000, 100000)), "PNG header says 100000x100000"),
    "png_truncated_half": (lambda: ("png", _photo_png()[:len(_photo_png()) // 2]), "(PNG 160x120"),
    "png_corrupt_ihdr_crc": (lambda: ("png", _flip_bytes(_photo_png(), 29, every=10**9)), "(PNG 160x120"),
    "png_zero_width": (lambda: ("png", png_head(0, 48) + bytes(100)), "corrupt PNG header: size 0x48"),
    "png_first_chunk_not_ihdr": (lambda: ("png", png_head(kind=b"IDAT") + bytes(100)), "first chunk is b'IDAT'"),
    # legal: decoded and processed at their own resolution
    "format_string_lies": (lambda: ("png", _photo_jpg()), OK),
    "grey_png": (lambda: ("mono8; png compressed mono8", _enc(".png", photo(160, 120)[:, :, 1])), OK),
    "png_16bit": (lambda: ("mono16; png compressed mono16", _enc(".png", photo(160, 120)[:, :, 1].astype(np.uint16) * 200)), OK),
    "png_rgba": (lambda: ("bgra8; png compressed bgra8", _enc(".png", np.dstack([photo(160, 120), np.full((120, 160), 9, np.uint8)]))), OK),
    "progressive_jpeg": (lambda: ("jpeg", _enc(".jpg", photo(160, 120), cv2.IMWRITE_JPEG_PROGRESSIVE, 1)), OK),
    "webp": (lambda: ("webp", _enc(".webp", photo(160, 120))), OK),
    "bmp": (lambda: ("bmp", _enc(".bmp", photo(160, 120))), OK),
}


def _invalid_count(r: Rig, node_name: str) -> int:
    return diagnostics_counter(r.t.messages("/diagnostics"), node_name, "dropped_invalid") or 0


def _check_frame(r: Rig, proc: NodeProcess, node_name: str, msg, pub, topic: str, expect: Expect,
                 size: Tuple[int, int], compressed: bool) -> None:
    t = r.t
    wait_for(lambda: diagnostics_counter(t.messages("/diagnostics"), node_name, "dropped_invalid") is not None,
             20, f"{node_name}'s /diagnostics")
    before, mark = _invalid_count(r, node_name), proc.log_size()
    if expect is OK:
        out = publish_until_output(t, pub, msg, topic)
        assert (out.width, out.height) == size, f"output {out.width}x{out.height} for a {size[0]}x{size[1]} frame"
        return
    pub.publish(msg)
    try:
        proc.wait_log(expect, mark, 20)
    except AssertionError:
        raise AssertionError(f"no log naming the problem ({expect!r}); node log since:\n{proc.log_since(mark)}")
    good_frame(r, compressed)
    assert not [m for m in t.messages(topic) if stamp_key(m) == stamp_key(msg)], "a refused frame gave outputs"
    wait_for(lambda: _invalid_count(r, node_name) >= before + 1, 20, "dropped_invalid + 1 in /diagnostics")
    assert _invalid_count(r, node_name) == before + 1
    assert proc.proc.poll() is None


@pytest.mark.parametrize("case", list(RAW))
def test_raw_frame(rig, case):
    make, expect = RAW[case]
    enc, h, w, step, data, *big = make()
    msg = raw_msg(enc, h, w, step, data, bool(big and big[0]), stamp=_now(rig.t))
    _check_frame(rig, rig.raw, "lseg_node", msg, rig.t.pub, "lseg/mask", expect, (w, h), compressed=False)


@pytest.mark.parametrize("case", list(COMPRESSED))
def test_compressed_frame(rig, case):
    make, expect = COMPRESSED[case]
    fmt, data = make()
    msg = compressed_msg(data, fmt, _now(rig.t), "hostile")
    _check_frame(rig, rig.comp, "lseg_node_c", msg, rig.t.cpub, "/c/lseg/mask", expect, (160, 120), compressed=True)


def test_at_least_30_malformed_frames():
    bad = [k for k, (_, e) in RAW.items() if e is not OK] + [k for k, (_, e) in COMPRESSED.items() if e is not OK]
    assert len(bad) >= 30 and len(LABELS_REFUSED) >= 20


# ---- /set_labels ------------------------------------------------------------------------------

def _max_labels() -> int:
    from lseg_ros.node import params as P
    return int(getattr(P, "MAX_LABELS", 256))


LABELS_REFUSED: Dict[str, Tuple[Callable[[], List[str]], str]] = {
    "empty_list": (lambda: [], "empty"),
    "empty_string": (lambda: [""], "empty"),
    "spaces": (lambda: ["   "], "empty"),
    "tab_and_newline": (lambda: ["\t\n"], "empty"),
    "no_break_space": (lambda: ["\u00a0"], "empty"),
    "ideographic_space": (lambda: ["\u3000"], "empty"),
    "nul_character": (lambda: ["\x00"], "empty"),
    "zero_width_space": (lambda: ["\u200b"], "empty"),
    "zero_width_alternative": (lambda: ["cat|\u2060\ufeff"], "empty alternative"),
    "empty_among_others": (lambda: ["cat", "", "dog"], "label 1"),
    "duplicate": (lambda: ["cat", "cat"], "duplicate label 'cat'"),
    "duplicate_other_case": (lambda: ["Cat", "cAT"], "duplicate label"),
    "duplicate_with_spaces": (lambda: ["cat", "  cat  "], "duplicate label"),
    "duplicate_by_unicode_casefold": (lambda: ["STRASSE", "straße"], "duplicate label"),
    "duplicate_display_name": (lambda: ["cat|feline", "cat|kitty"], "duplicate label"),
    "duplicate_after_many": (lambda: [f"thing {i}" for i in range(100)] + ["thing 5"], "duplicate label 'thing 5'"),
    "trailing_pipe": (lambda: ["cat|", "dog"], "empty alternative"),
    "leading_pipe": (lambda: ["|cat"], "empty alternative"),
    "pipe_only": (lambda: ["|"], "empty"),
    "double_pipe": (lambda: ["car||vehicle"], "empty alternative"),
    "blank_alternative": (lambda: ["car| |vehicle"], "empty alternative"),
    "78_tokens": (lambda: ["word " * 76], "78 tokens long"),
    "long_alternative": (lambda: ["cat|" + "very " * 80 + "long"], "tokens long"),
    "one_long_word": (lambda: ["a" * 1000], "tokens long"),
    "one_over_max_labels": (lambda: [f"class {i}" for i in range(_max_labels() + 1)], "at most"),
    "four_thousand_labels": (lambda: [f"class {i}" for i in range(4000)], "at most"),
}

# legal, if odd: accepted; the display names that frames then carry
LABELS_ACCEPTED: Dict[str, Tuple[Callable[[], List[str]], List[str]]] = {
    "exactly_77_tokens": (lambda: ["word " * 75, "other"], [("word " * 75).strip(), "other"]),
    "unicode": (lambda: ["猫", "犬", "café", "naïve thing"], ["猫", "犬", "café", "naïve thing"]),
    "emoji": (lambda: ["🐱 cat", "🐶"], ["🐱 cat", "🐶"]),
    "surrounding_whitespace": (lambda: ["  cat ", "dog\t"], ["cat", "dog"]),
    "alternatives": (lambda: ["car|vehicle|automobile", "road | street"], ["car", "road"]),
    "single_label": (lambda: ["thing"], ["thing"]),
}


def _frame_labels(r: Rig) -> List[str]:
    """The label names a new good frame's class_confidences carries (and its map version matches)."""
    t = r.t
    mask = good_frame(r)
    scores = wait_for(lambda: next((m for m in t.messages("lseg/class_confidences") if stamp_key(m) == stamp_key(mask)),
                                   None), 20, "class_confidences of the good frame")
    maps = {m.version: m for m in t.messages("lseg/labels")}
    assert scores.label_set_version in maps, "frame refers to a label map version never published"
    assert [e.name for e in maps[scores.label_set_version].entries] == list(scores.labels)
    return list(scores.labels)


def _call(r: Rig, labels: List[str]):
    from lseg_ros.srv import SetLabels
    return r.t.call(SetLabels, "/set_labels", SetLabels.Request(labels=labels), timeout=120)


@pytest.mark.parametrize("case", list(LABELS_REFUSED))
def test_bad_set_labels_request_is_refused_with_the_reason(rig, case):
    make, reason = LABELS_REFUSED[case]
    before = _frame_labels(rig)
    ans = _call(rig, make())
    assert not ans.success, f"accepted: {ans.message}"
    assert reason in ans.message, f"reason {reason!r} not in the answer {ans.message[:500]!r}"
    assert len(ans.message) < 400, f"the reason quotes too much: {len(ans.message)} characters"
    assert list(ans.labels) == rig.labels, "the answer must give the labels still in force"
    assert _frame_labels(rig) == before
    assert rig.raw.proc.poll() is None


@pytest.mark.parametrize("case", list(LABELS_ACCEPTED))
def test_odd_but_legal_labels_are_accepted(rig, case):
    make, names = LABELS_ACCEPTED[case]
    labels = make()
    try:
        ans = _call(rig, labels)
        assert ans.success, ans.message
        assert list(ans.labels) == labels
        rig.labels = labels
        assert _frame_labels(rig) == names
    finally:
        ans = _call(rig, rig.initial)
        assert ans.success, ans.message
        rig.labels = rig.initial
