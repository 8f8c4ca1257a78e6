"""lseg-fetch verification and lseg-convert, on tiny files (no network in tests)."""
import numpy as np
import pytest
import torch

pytest.importorskip("lseg_ros.model")
from lseg_ros.model import LSegConfig, LSegNet  # noqa: E402
from lseg_ros.tools import convert, fetch  # noqa: E402


def released_layout_file(path, net):
    """A Lightning-style file in the released key layout (docs/model.md §2.1), from a tiny net."""
    sd = {}
    for k, v in net.state_dict().items():
        k = "clip_pretrained." + k[len("text.tower."):] if k.startswith("text.tower.") else k
        sd["net." + k] = v.half() if k.startswith("clip_pretrained.") and v.is_floating_point() else v
    torch.save({"epoch": 1, "global_step": 10, "pytorch-lightning_version": "1.4.9", "state_dict": sd}, path)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    torch.manual_seed(0)
    net = LSegNet.from_config(LSegConfig.tiny_vit())
    path = tmp_path_factory.mktemp("ckpt") / "tiny.ckpt"
    released_layout_file(path, net)
    return net, path


def test_verify_valid_html_truncated(tiny, tmp_path):
    _, path = tiny
    assert "OK" in fetch.verify_checkpoint(path, config=LSegConfig.tiny_vit())
    page = tmp_path / "page.ckpt"
    page.write_text("<!DOCTYPE html><html><head><title>Google Drive - Quota exceeded</title></head></html>")
    with pytest.raises(fetch.VerifyError, match="HTML page"):
        fetch.verify_checkpoint(page)
    cut = tmp_path / "cut.ckpt"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(fetch.VerifyError, match="truncated"):
        fetch.verify_checkpoint(cut)
    empty = tmp_path / "empty.ckpt"
    empty.write_bytes(b"")
    with pytest.raises(fetch.VerifyError, match="empty"):
        fetch.verify_checkpoint(empty)
    # a whole torch file of the wrong layout
    other = tmp_path / "other.ckpt"
    torch.save({"state_dict": {"model.weight": torch.zeros(2)}}, other)
    with pytest.raises(fetch.VerifyError, match="net."):
        fetch.verify_checkpoint(other)


def test_drive_confirm_page():
    page = ('<html><form id="download-form" action="https://drive.usercontent.google.com/download" '
            'method="get"><input type="hidden" name="id" value="ABC"><input type="hidden" name="export" '
            'value="download"><input type="hidden" name="confirm" value="t"><input type="hidden" '
            'name="uuid" value="u-1"></form></html>')
    url = fetch.drive_confirm_url(page, "ABC")
    assert url.startswith("https://drive.usercontent.google.com/download?") and "confirm=t" in url
    assert "uuid=u-1" in url
    assert fetch.drive_confirm_url("<html>no</html>", "ABC") is None


def test_fetch_failure_removes_part_and_says_what_to_do(tmp_path, monkeypatch):
    def fake_download(file_id, dest, timeout):  # stands in for the network
        dest.write_text("<html><body>Sorry, quota exceeded</body></html>")

    monkeypatch.setattr(fetch, "download_drive", fake_download)
    with pytest.raises(fetch.ToolError) as e:
        fetch.fetch("demo_e200.ckpt", tmp_path)
    msg = str(e.value)
    assert "HTML" in msg and "1FTuHY1xPUkM-5gaDtMfgCl3D0gR89WV7" in msg and "lseg-convert" in msg
    assert list(tmp_path.iterdir()) == []          # no partial file left behind
    with pytest.raises(fetch.ToolError, match="README"):
        fetch.fetch("fss_l16.ckpt", tmp_path)       # no known direct link: manual steps


def test_fetch_cli(tmp_path, capsys):
    assert fetch.main(["--list"]) == 0
    assert "demo_e200.ckpt" in capsys.readouterr().out
    assert fetch.main(["--verify", str(tmp_path / "nope.ckpt")]) == 2
    assert "nope.ckpt" in capsys.readouterr().err


def test_convert_round_trip(tiny, tmp_path, capsys):
    net, path = tiny
    dst = tmp_path / "tiny.safetensors"
    assert convert.main([str(path), str(dst), "--config", "tiny_vit"]) == 0
    assert "wrote" in capsys.readouterr().out
    back = LSegNet.from_checkpoint(dst)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        t = net.encode_text(["a", "b"])
        np.testing.assert_allclose(back(x, t), net(x, t), atol=1e-5)        # image path exact
        # text tower went through fp16 (as the released CLIP weights do): equal to fp16 rounding
        np.testing.assert_allclose(back.encode_text(["a", "b"]), t, atol=5e-3)
    assert convert.main([str(path), str(dst), "--config", "tiny_vit"]) == 2      # no overwrite
    assert "exists" in capsys.readouterr().err
