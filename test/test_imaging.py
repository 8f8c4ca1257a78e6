"""lseg_ros.imaging without ROS: sensor_msgs encodings <-> numpy, compressed input, palettes, overlays."""
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from lseg_ros import imaging
from lseg_ros.imaging import ImageError, decode_compressed, decode_image, encode_image

from hostile_images import jpeg_sof, png_head

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def rgb():
    import skimage.data
    return np.ascontiguousarray(cv2.resize(skimage.data.astronaut(), (64, 48)))


def test_imaging_imports_no_rclpy():
    import subprocess
    code = "import sys, lseg_ros.imaging; sys.exit('rclpy' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


@pytest.mark.parametrize("encoding, make, order", [
    ("rgb8", lambda a: a, "rgb"),
    ("bgr8", lambda a: a[:, :, ::-1], "bgr"),
    ("rgba8", lambda a: np.dstack([a, np.full(a.shape[:2], 7, np.uint8)]), "rgb"),
    ("bgra8", lambda a: np.dstack([a[:, :, ::-1], np.full(a.shape[:2], 7, np.uint8)]), "bgr"),
    ("8UC3", lambda a: a[:, :, ::-1], "bgr"),
])
def test_colour_encodings(rgb, encoding, make, order):
    arr = np.ascontiguousarray(make(rgb))
    img, got_order = decode_image(encoding, 48, 64, arr.strides[0], False, arr.tobytes())
    assert got_order == order and img.shape == (48, 64, 3) and img.dtype == np.uint8
    as_rgb = img if order == "rgb" else img[:, :, ::-1]
    np.testing.assert_array_equal(as_rgb, rgb)


def test_row_padding_is_skipped(rgb):
    step = 64 * 3 + 13
    buf = np.zeros((48, step), np.uint8)
    buf[:, :64 * 3] = rgb.reshape(48, -1)
    img, _ = decode_image("rgb8", 48, 64, step, False, buf.tobytes())
    np.testing.assert_array_equal(img, rgb)
    # the last row's padding may be missing (some drivers send step*(h-1)+row bytes)
    img, _ = decode_image("rgb8", 48, 64, step, False, buf.tobytes()[:-13])
    np.testing.assert_array_equal(img, rgb)


def test_mono8_is_replicated(rgb):
    g = np.ascontiguousarray(rgb[:, :, 1])
    for enc in ("mono8", "8UC1"):
        img, order = decode_image(enc, 48, 64, 64, False, g.tobytes())
        assert order == "rgb"
        for c in range(3):
            np.testing.assert_array_equal(img[:, :, c], g)


@pytest.mark.parametrize("big", [False, True])
def test_mono16_is_min_max_stretched(big):
    a = np.linspace(1000, 5000, 48 * 64).reshape(48, 64).astype(np.uint16)
    data = a.astype(">u2" if big else "<u2").tobytes()
    for enc in ("mono16", "16UC1"):
        img, _ = decode_image(enc, 48, 64, 128, big, data)
        assert img[0, 0, 0] == 0 and img[-1, -1, 0] == 255
        assert np.all(np.diff(img[:, :, 0].ravel().astype(int)) >= 0)  # monotonic mapping
    flat, _ = decode_image("mono16", 2, 2, 4, False, np.full((2, 2), 7, np.uint16).tobytes())
    assert flat.max() == 0


def test_rgb16_takes_the_high_byte(rgb):
    a = rgb.astype(np.uint16) << 8
    img, order = decode_image("rgb16", 48, 64, 64 * 6, False, a.tobytes())
    np.testing.assert_array_equal(img, rgb)


def test_yuv422(rgb):
    yuyv = cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV_YUYV) if hasattr(cv2, "COLOR_RGB2YUV_YUYV") else None
    if yuyv is None:
        pytest.skip("OpenCV has no RGB->YUYV conversion")
    img, order = decode_image("yuv422_yuy2", 48, 64, 128, False, yuyv.tobytes())
    assert order == "rgb" and np.abs(img.astype(int) - rgb).mean() < 12


@pytest.mark.parametrize("args, words", [
    (("32FC1", 4, 4, 16, False, bytes(64)), ["unsupported encoding '32FC1'", "rgb8", "mono16"]),
    (("rgb8", 4, 4, 11, False, bytes(48)), ["step 11", "12"]),
    (("rgb8", 4, 4, 12, False, bytes(40)), ["40 bytes", "48"]),
    (("rgb8", 0, 4, 12, False, b""), ["empty image"]),
    (("rgb8", 4, 0, 0, False, b""), ["empty image"]),
    (("mono16", 3, 3, 5, False, bytes(18)), ["step 5"]),
])
def test_bad_images_raise_naming_the_problem(args, words):
    with pytest.raises(ImageError) as e:
        decode_image(*args)
    for w in words:
        assert w in str(e.value)


def test_huge_image_guard():
    with pytest.raises(ImageError, match="too large.*max_image_pixels=100"):
        decode_image("mono8", 20, 20, 20, False, bytes(400), max_pixels=100)


def test_compressed_jpeg_png_and_corrupt(rgb):
    ok, jpg = cv2.imencode(".jpg", rgb[:, :, ::-1])
    img, order = decode_compressed("rgb8; jpeg compressed bgr8", jpg.tobytes())
    assert order == "bgr" and img.shape == (48, 64, 3)
    assert np.abs(img[:, :, ::-1].astype(int) - rgb).mean() < 8
    ok, png = cv2.imencode(".png", (rgb[:, :, 0].astype(np.uint16) * 100))
    img, order = decode_compressed("png", png.tobytes())
    assert img.shape == (48, 64, 3) and img.max() == 255
    with pytest.raises(ImageError, match="corrupt"):
        decode_compressed("jpeg", b"\xff\xd8\xff garbage" * 10)
    with pytest.raises(ImageError, match="empty"):
        decode_compressed("jpeg", b"")
    with pytest.raises(ImageError, match="compressedDepth"):
        decode_compressed("16UC1; compressedDepth", png.tobytes())
    with pytest.raises(ImageError, match="too large"):
        decode_compressed("jpeg", jpg.tobytes(), max_pixels=100)


def test_encode_image_round_trip():
    m8 = (np.arange(12).reshape(3, 4) % 5).astype(np.uint8)
    h, w, step, big, data = encode_image(m8, "mono8")
    assert (h, w, step, big) == (3, 4, 4, False)
    np.testing.assert_array_equal(decode_image("mono8", h, w, step, big, data)[0][:, :, 0], m8)
    m16 = np.full((2, 3), 65535, np.uint16)
    h, w, step, big, data = encode_image(m16, "mono16")
    assert step == 6 and big == (sys.byteorder == "big") and np.frombuffer(data, np.uint16).max() == 65535
    conf = np.random.default_rng(0).random((5, 7)).astype(np.float32)
    h, w, step, big, data = encode_image(conf, "32FC1")
    assert step == 28 and np.array_equal(np.frombuffer(data, np.float32).reshape(5, 7), conf)
    with pytest.raises(ImageError):
        encode_image(conf, "mono8x")


@pytest.mark.parametrize("name", imaging.PALETTES)
def test_palette(name):
    p = imaging.palette(300, name)
    assert p.shape == (300, 3) and p.dtype == np.uint8
    first = imaging.palette(20, name)
    assert len({tuple(c) for c in first}) == 20  # distinct colours for the first 20 ids
    assert not np.all(first[0] == 0)  # id 0 is not black (black means unlabeled in colorize)
    with pytest.raises(ValueError, match="unknown palette"):
        imaging.palette(3, "nope")


def test_colorize_and_overlay_with_legend(rgb):
    mask = np.zeros((48, 64), np.uint8)
    mask[:, 32:] = 1
    mask[:4, :4] = 255  # unlabeled: keeps the image
    colors = imaging.palette(2)
    col = imaging.colorize(mask, colors)
    assert np.array_equal(col[10, 10], colors[0]) and np.array_equal(col[0, 0], [0, 0, 0])
    out = imaging.overlay(rgb, mask, colors, None, alpha=1.0)
    assert np.array_equal(out[10, 40], colors[1]) and np.array_equal(out[0, 0], rgb[0, 0])
    big = cv2.resize(rgb, (640, 480))
    bmask = cv2.resize(mask, (640, 480), interpolation=cv2.INTER_NEAREST)
    with_legend = imaging.overlay(big, bmask, colors, ["floor", "person"], alpha=0.5)
    plain = imaging.overlay(big, bmask, colors, None, alpha=0.5)
    diff = np.any(with_legend != plain, axis=2)
    ys, xs = np.nonzero(diff)
    assert diff.sum() > 100 and ys.max() < 80 and xs.max() < 200  # legend in the top-left corner only
    # many labels: the legend lists only those present
    names = [f"c{i}" for i in range(30)]
    imaging.overlay(big, bmask, imaging.palette(30), names)
    with pytest.raises(ValueError, match="mask shape"):
        imaging.overlay(big, mask, colors)


# ---- compressed headers: the pixel limit before decoding ------------------------------------------

def _encoded(rgb, ext, *params):
    ok, buf = cv2.imencode(ext, rgb[:, :, ::-1], list(params))
    assert ok
    return buf.tobytes()


@pytest.mark.parametrize("ext, params, fmt", [
    (".png", (), "PNG"), (".jpg", (), "JPEG"), (".jpg", (cv2.IMWRITE_JPEG_PROGRESSIVE, 1), "JPEG"),
    (".webp", (cv2.IMWRITE_WEBP_QUALITY, 80), "WebP"), (".webp", (cv2.IMWRITE_WEBP_QUALITY, 101), "WebP"),
    (".bmp", (), "BMP"),
])
def test_header_size_is_the_decoded_size(rgb, ext, params, fmt):
    from lseg_ros.image_header import read_header
    data = _encoded(rgb, ext, *params)
    head = read_header(data)
    assert (head.format, head.width, head.height) == (fmt, 64, 48)
    img, _ = decode_compressed("whatever", data, max_pixels=64 * 48)  # exactly at the limit: accepted
    assert img.shape == (48, 64, 3)
    with pytest.raises(ImageError, match=rf"too large: {fmt} header says 64x48 = 3072 pixels, exceeds "
                                         r"max_image_pixels=3071 \(refused before decoding"):
        decode_compressed("whatever", data, max_pixels=64 * 48 - 1)


def test_grey_and_16bit_png_headers():
    from lseg_ros.image_header import read_header
    ok, grey = cv2.imencode(".png", np.zeros((5, 7), np.uint8))
    ok, deep = cv2.imencode(".png", np.zeros((5, 7, 3), np.uint16))
    assert read_header(grey.tobytes())[1:] == (7, 5, 1, 8)
    assert read_header(deep.tobytes())[1:] == (7, 5, 3, 16)


def test_png_bomb_is_refused_from_its_header_without_decoding():
    """30000x30000 (900 Mpixel) PNG of ~110 KB: refused from the IHDR; the subprocess's peak RSS shows
    no decode happened (decoding it takes ~1.7 GB)."""
    import json
    import subprocess
    code = f"""
import json, resource, sys, time
sys.path.insert(0, {str(ROOT / 'test')!r})
from hostile_images import png_bomb
from lseg_ros.imaging import ImageError, decode_compressed
data = png_bomb(30000, 30000)
rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t0 = time.perf_counter()
try:
    decode_compressed("png", data, max_pixels=4096 * 4096)
    msg = None
except ImageError as e:
    msg = str(e)
print(json.dumps(dict(msg=msg, s=time.perf_counter() - t0, size=len(data),
                      grew_mb=(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) / 1024)))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert res["size"] < 200_000
    assert res["msg"] and "PNG header says 30000x30000 = 900000000 pixels" in res["msg"], res
    assert "max_image_pixels=16777216" in res["msg"] and "refused before decoding" in res["msg"]
    assert res["grew_mb"] < 50, f"peak RSS grew {res['grew_mb']:.0f} MB: the bomb was decoded ({res})"


BAD_HEADERS = {
    "png_cut_in_ihdr": (lambda rgb: _encoded(rgb, ".png")[:20], "truncated PNG header: 20 bytes"),
    "png_first_chunk_not_ihdr": (lambda rgb: png_head(kind=b"IDAT") + bytes(100), "first chunk is b'IDAT'"),
    "png_ihdr_bad_length": (lambda rgb: png_head(length=12) + bytes(100), "not IHDR of 13"),
    "png_zero_width": (lambda rgb: png_head(width=0) + bytes(100), "corrupt PNG header: size 0x48"),
    "png_bad_depth": (lambda rgb: png_head(depth=3) + bytes(100), "bit depth 3 with colour type 2"),
    "png_bad_colour_type": (lambda rgb: png_head(color=5) + bytes(100), "colour type 5"),
    "png_header_only": (lambda rgb: png_head(), "corrupt or unsupported compressed image (PNG 64x48"),
    "jpeg_cut_before_sof": (lambda rgb: _encoded(rgb, ".jpg")[:12], "truncated JPEG header"),
    "jpeg_sof_cut": (lambda rgb: jpeg_sof(64, 48)[:26], "start-of-frame at offset 20 cut off"),
    "jpeg_scan_before_sof": (lambda rgb: b"\xff\xd8\xff\xda\x00\x08" + bytes(200), "start-of-scan at offset 2"),
    "jpeg_eoi_first": (lambda rgb: b"\xff\xd8\xff\xd9" + bytes(50), "end-of-image at offset 2"),
    "jpeg_not_a_marker": (lambda rgb: b"\xff\xd8\xff\xe0\x00\x04ab\x12\x34" + bytes(50), "byte 0x12 at offset 8"),
    "jpeg_bad_segment_length": (lambda rgb: b"\xff\xd8\xff\xe1\x00\x01" + bytes(50), "has length 1"),
    "jpeg_height_zero_dnl": (lambda rgb: jpeg_sof(64, 0) + bytes(50), "size 64x0"),
    "jpeg_two_components": (lambda rgb: jpeg_sof(64, 48, comps=2) + bytes(50), "2 components"),
    "jpeg_corrupt_after_sof": (lambda rgb: jpeg_sof(64, 48) + b"\xff\xda" + bytes(300),
                               "corrupt or unsupported compressed image (JPEG 64x48"),
    "webp_cut": (lambda rgb: _encoded(rgb, ".webp")[:20], "truncated WebP header"),
    "webp_unknown_chunk": (lambda rgb: b"RIFF\x00\x01\x00\x00WEBPALPH" + bytes(40), "b'ALPH' is none of"),
    "bmp_cut": (lambda rgb: _encoded(rgb, ".bmp")[:20], "truncated BMP header"),
    "gif": (lambda rgb: b"GIF89a" + bytes(100), "not a PNG, JPEG, WebP or BMP image (starts with b'GIF89a"),
    "tiff": (lambda rgb: b"II*\x00" + bytes(100), "not a PNG, JPEG, WebP or BMP image"),
    "three_bytes": (lambda rgb: b"\xff\xd8\xff", "truncated JPEG header"),
    "two_bytes": (lambda rgb: b"\x89P", "truncated compressed image: 2 bytes"),
    "text": (lambda rgb: b"hello world, not an image", "not a PNG, JPEG, WebP or BMP image"),
}


@pytest.mark.parametrize("kind", list(BAD_HEADERS))
def test_truncated_and_corrupt_headers_are_refused_clearly(rgb, kind):
    make, words = BAD_HEADERS[kind]
    with pytest.raises(ImageError) as e:
        decode_compressed("png", make(rgb), max_pixels=4096 * 4096)
    assert words in str(e.value)
    assert str(e.value).startswith("corrupt or unsupported compressed image")


def test_huge_jpeg_claim_is_refused_before_decoding():
    data = jpeg_sof(60000, 50000) + bytes(100)  # header of a 3 Gpixel JPEG, then nothing
    with pytest.raises(ImageError, match="JPEG header says 60000x50000 = 3000000000 pixels, exceeds "
                                         "max_image_pixels=16777216"):
        decode_compressed("jpeg", data, max_pixels=4096 * 4096)





@pytest.mark.parametrize("n, present, size", [(4, None, (480, 640)), (20, "counts", (240, 320)), (3, None, (90, 60))])
def test_cached_decoration_equals_drawing_it(n, present, size):
    """decorate() blends a legend and banner rendered once per label set and size: within a level of
    drawing them into the frame directly (draw_legend, draw_banner), whatever the frame holds."""
    from lseg_ros.imaging import decorate, draw_banner, draw_legend, palette
    rng = np.random.default_rng(n)
    names = [f"class {i}" for i in range(n)]
    colors = palette(n)
    counts = rng.integers(0, 5, n) if present else None
    for _ in range(2):  # the second frame comes from the cache
        frame = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
        want = frame.copy()
        ids = [i for i in np.argsort(-counts, kind="stable") if counts[i] > 0] if present else None
        draw_legend(want, names, colors, ids)
        draw_banner(want, "UNTRAINED")
        got = decorate(frame.copy(), names, colors, counts, banner="UNTRAINED")
        assert np.abs(got.astype(int) - want.astype(int)).max() <= 1
