"""lseg_ros.geometry: depth decoding (REP 118 encodings), depth/colour size rules, intrinsics."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lseg_ros.geometry import GeometryError, Intrinsics, decode_depth, sample_grid

ROOT = Path(__file__).resolve().parents[1]


def test_16uc1_millimetres_to_metres():
    mm = np.array([[0, 1, 1500], [65535, 250, 4000]], np.uint16)
    d = decode_depth("16UC1", 2, 3, 6, False, mm.tobytes())
    assert d.dtype == np.float32 and d.shape == (2, 3)
    np.testing.assert_allclose(d, [[0, 0.001, 1.5], [65.535, 0.25, 4.0]], rtol=1e-6)


def test_32fc1_metres_kept_and_big_endian_and_padded_rows():
    m = np.array([[1.25, np.nan, 0.0], [np.inf, 2.5, 7.0]], np.float32)
    np.testing.assert_array_equal(decode_depth("32FC1", 2, 3, 12, False, m.tobytes()), m)
    np.testing.assert_array_equal(decode_depth("32FC1", 2, 3, 12, True, m.astype(">f4").tobytes()), m)
    padded = np.zeros((2, 16), np.uint8)                 # step 16 > row 12: 4 bytes of padding per row
    padded[:, :12] = m.view(np.uint8).reshape(2, 12)
    np.testing.assert_array_equal(decode_depth("32FC1", 2, 3, 16, False, padded.tobytes()), m)
    mm = np.array([[1000, 2000]], np.uint16)
    np.testing.assert_allclose(decode_depth("16UC1", 1, 2, 4, True, mm.astype(">u2").tobytes()), [[1.0, 2.0]])


def test_16uc1_and_32fc1_agree():
    rng = np.random.default_rng(1)
    mm = rng.integers(0, 10000, (24, 32)).astype(np.uint16)
    a = decode_depth("16UC1", 24, 32, 64, False, mm.tobytes())
    b = decode_depth("32FC1", 24, 32, 128, False, (mm / 1000.0).astype(np.float32).tobytes())
    np.testing.assert_allclose(a, b, rtol=1e-6)


@pytest.mark.parametrize("encoding", ["mono16", "mono8", "8UC1", "64FC1", "rgb8", "16SC1"])
def test_non_metric_encodings_refused_by_name(encoding):
    with pytest.raises(GeometryError, match=f"'{encoding}' is not metric depth.*16UC1.*32FC1"):
        decode_depth(encoding, 2, 2, 4, False, bytes(16))


def test_malformed_depth_refused():
    with pytest.raises(GeometryError, match="empty depth image: 0x2"):
        decode_depth("16UC1", 2, 0, 0, False, b"")
    with pytest.raises(GeometryError, match="step 4 is smaller than width \\* 2 = 6"):
        decode_depth("16UC1", 2, 3, 4, False, bytes(12))
    with pytest.raises(GeometryError, match="has 10 bytes.*needs 12"):
        decode_depth("16UC1", 2, 3, 6, False, bytes(10))


def test_smaller_depth_sampled_nearest_at_pixel_centres():
    """A half-resolution aligned depth: colour pixel (v, u) reads depth (v // 2, u // 2)."""
    rows, cols = sample_grid((3, 4), (6, 8), 1)
    depth = np.arange(12, dtype=np.float32).reshape(3, 4)
    up = depth[rows, cols]
    assert up.shape == (6, 8)
    np.testing.assert_array_equal(up, np.repeat(np.repeat(depth, 2, 0), 2, 1))
    rows, cols = sample_grid((3, 4), (6, 8), 3)            # decimated colour pixels 0, 3 / 0, 3, 6
    np.testing.assert_array_equal(depth[rows, cols], [[0, 1, 3], [4, 5, 7]])
    big = np.arange(48, dtype=np.float32).reshape(6, 8)   # larger depth: the centre's nearest sample
    rows, cols = sample_grid((6, 8), (3, 4), 1)
    np.testing.assert_array_equal(big[rows, cols], big[1::2, 1::2])


def test_depth_of_another_aspect_ratio_refused():
    with pytest.raises(GeometryError, match=r"depth 640x360 is not aligned to the 640x480 colour image"):
        sample_grid((360, 640), (480, 640), 1)
    with pytest.raises(GeometryError, match="decimation must be >= 1, got 0"):
        sample_grid((4, 4), (4, 4), 0)


def test_intrinsics_from_k_and_p():
    k = [525.0, 0, 319.5, 0, 526.0, 239.5, 0, 0, 1]
    i = Intrinsics.from_k(k, 640, 480)
    assert (i.fx, i.fy, i.cx, i.cy, i.width, i.height) == (525.0, 526.0, 319.5, 239.5, 640, 480)
    p = [500.0, 0, 320, 0, 0, 501.0, 240, 0, 0, 0, 1, 0]
    assert Intrinsics.from_p(p, 640, 480) == Intrinsics(500.0, 501.0, 320.0, 240.0, 640, 480)


@pytest.mark.parametrize("k, match", [
    ([0.0] * 9, r"focal length fx=0.0, fy=0.0: must be > 0"),
    ([525, 0, 320, 0, -1, 240, 0, 0, 1], "fy=-1.0"),
    ([525, 0, 320, 0, 525, 240], "K must have 9 values, got 6"),
    ([np.nan, 0, 320, 0, 525, 240, 0, 0, 1], "non-finite"),
])
def test_bad_intrinsics_refused(k, match):
    with pytest.raises(GeometryError, match=match):
        Intrinsics.from_k(k, 640, 480)


def test_intrinsics_for_another_resolution():
    i = Intrinsics.from_k([600, 0, 319.5, 0, 600, 239.5, 0, 0, 1], 640, 480)
    assert i.for_image(640, 480) is i
    half = i.for_image(320, 240)
    # pixel centres: the centre of the image stays the centre, focal lengths halve
    assert (half.fx, half.fy, half.cx, half.cy) == (300.0, 300.0, 159.5, 119.5)
    unsized = Intrinsics.from_k([600, 0, 10, 0, 600, 10, 0, 0, 1], 0, 0).for_image(20, 20)
    assert (unsized.width, unsized.height, unsized.cx) == (20, 20, 10.0)
    with pytest.raises(GeometryError, match="camera_info is for 640x480, the image is 640x360"):
        i.for_image(640, 360)


def test_geometry_imports_without_ros_or_torch():
    code = ("import sys; import lseg_ros.geometry; "
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('rclpy', 'torch', 'cv2') "
            "or m in ('lseg_ros.msg', 'lseg_ros.srv')); print(bad); sys.exit(1 if bad else 0)")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
