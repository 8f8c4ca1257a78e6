"""One registry of model variants and one label rule, read by the node's parameters, the tools and the
checkpoint loader; both load without torch (the node checks parameters before loading the model)."""
import subprocess
import sys
from pathlib import Path

import pytest

from lseg_ros.model.labels import label_problem, parse_labels
from lseg_ros.model.variants import NAMES, VARIANTS, named_config, released_variant, variant

ROOT = Path(__file__).resolve().parents[1]


def test_registry_is_what_node_tools_and_loader_read():
    from lseg_ros.node import params
    from lseg_ros.tools import common, fetch

    assert params.MODELS == NAMES == ("vitl16", "rn101", "tiny_vit", "tiny_resnet")
    assert "must be one of vitl16, rn101, tiny_vit, tiny_resnet" in params.validate("model", "vit_l16")
    assert common.named_config("rn101") == named_config("rn101") and named_config("rn101").backbone == "resnet"
    with pytest.raises(common.ToolError, match="unknown model 'x'; choose from vitl16"):
        common.named_config("x")
    released = [name for v in VARIANTS.values() for name, _ in v.released]
    assert list(fetch.RELEASES) == released and "demo_e200.ckpt" in released
    assert variant("tiny_vit").backbone == "vit" and not variant("tiny_vit").released
    assert released_variant(["net.pretrained.model.blocks.0.attn.qkv.weight"]).name == "vitl16"
    assert released_variant(["net.pretrained.layer1.4.0.conv1.weight"]).name == "rn101"
    assert released_variant(["net.scratch.head1.weight"]) is None


@pytest.mark.parametrize("labels, why", [
    ([], "empty"), (["cat", "Cat "], "duplicate label 'Cat'"), (["STRASSE", "straße"], "duplicate"),
    (["cat|feline", "cat|kitty"], "duplicate"), (["a", "b|"], "empty alternative"), (["a", "\u200b"], "empty"),
    ("cat", "not one string"), (["a", 3], "not str"),
])
def test_one_label_rule_for_parameter_service_and_tools(labels, why):
    from lseg_ros.node import params
    from lseg_ros.tools.common import ToolError, parse_label_args

    assert why in label_problem(labels)
    assert params.validate("labels", labels) == label_problem(labels)  # the parameter and set_labels
    if isinstance(labels, list) and all(isinstance(s, str) and "," not in s for s in labels) and labels:
        with pytest.raises(ToolError, match=why):
            parse_label_args([", ".join(labels)], None)


def test_label_rule_limits_count_and_returns_names():
    assert "at most 3" in label_problem(["a", "b", "c", "d"], max_labels=3)
    names, alternatives = parse_labels([" person | pedestrian", "other"])
    assert names == ("person", "other") and alternatives == (("person", "pedestrian"), ("other",))


def test_registry_labels_and_node_parameters_load_without_torch():
    code = ("import sys, lseg_ros.node.params, lseg_ros.tools.common, lseg_ros.tools.fetch\n"
            "heavy = sorted(m for m in ('torch', 'open_clip', 'timm', 'rclpy') if m in sys.modules)\n"
            "assert not heavy, heavy\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
