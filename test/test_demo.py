"""The README's first command, small: the demo runs player -> lseg_node -> viewer over DDS,
switches labels through /set_labels, writes overlays and says the weights are untrained."""
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.timeout(300)
def test_demo_runs_end_to_end_with_untrained_tiny_model(ros_env, tmp_path):
    out = tmp_path / "demo"
    env = dict(ros_env, LSEG_WEIGHTS="")
    run = subprocess.run([sys.executable, "-m", "lseg_ros.node.demo", "--model", "tiny_vit", "--frames", "1",
                          "--out", str(out), "--timeout", "240"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=280)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    for alarming in ("terminate called", "Traceback", "KeyboardInterrupt", "exit code -"):  # it ends cleanly
        assert alarming not in run.stdout + run.stderr, run.stdout[-3000:] + run.stderr[-3000:]
    assert "UNTRAINED" in run.stdout
    assert "set_labels -> success=True" in run.stdout
    frames = sorted(out.glob("frame_*.png"))
    assert [f.name.split("_labels_")[1] for f in frames] == ["v1.png", "v2.png"]
    for f in frames + [out / "overview.png"]:
        img = cv2.imread(str(f))
        assert img is not None and img.ndim == 3
    first = cv2.imread(str(frames[0]))
    assert first.shape == (480, 640, 3)
    # The overlay itself says the weights are untrained: a red banner across the bottom.
    assert (first[-3, 2] == (0, 0, 200)).all()


@pytest.mark.timeout(200)
def test_image_player_ends_cleanly_on_sigint(ros_env, tmp_path):
    """SIGINT (Ctrl-C, or the demo stopping it) ends the player with status 0 and no traceback, whether
    spin sees the KeyboardInterrupt or the context rclpy's handler shut down first (a race: repeated)."""
    import signal
    import time

    photo = tmp_path / "photo.png"
    cv2.imwrite(str(photo), np.full((48, 64, 3), 128, np.uint8))
    for i in range(8):
        p = subprocess.Popen([sys.executable, "-m", "lseg_ros.node.image_player", "--ros-args", "-p",
                              f"source:={photo}", "-p", "rate:=200.0", "-p", "width:=64", "-p", "height:=48"],
                             env=ros_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        deadline = time.monotonic() + 60
        for line in p.stdout:  # started and publishing
            if "publishing" in line or time.monotonic() > deadline:
                break
        time.sleep(0.05 * i)
        p.send_signal(signal.SIGINT)
        out = p.communicate(timeout=30)[0]
        assert p.returncode == 0 and "Traceback" not in out, f"try {i}: exit {p.returncode}\n{out[-3000:]}"
