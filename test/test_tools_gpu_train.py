"""benchmarks/gpu_train.py, the prepared GPU training check, completes its --dry-run on the CPU (tiny ViT):
the training steps with and without activation checkpointing in processes of their own, then lseg-train
and lseg-evaluate under torchrun; the device machine's minutes are not spent finding script errors."""
import pytest


def test_gpu_train_dry_run(benchmark_dry_run):
    report, data = benchmark_dry_run("gpu_train", "--steps", "3", report="gpu_train_dry-run_tiny_vit_cpu_*.json")
    plain, ckpt = data["steps"]
    assert (plain["variant"], ckpt["variant"]) == ("plain", "checkpoint")
    for s in (plain, ckpt):
        assert len(s["losses"]) == 3 and s["median_step_s"] > 0 and s["peak_mb"] > 0 and s["amp"] == "off"
    # checkpointing recomputes the blocks, it does not change the arithmetic
    assert ckpt["losses"] == pytest.approx(plain["losses"], rel=1e-5)
    train, evaluate = data["tools"]["train"], data["tools"]["evaluate"]
    assert train["rc"] == 0 and train["record"]["world_size"] == 1 and train["record"]["iteration"] == 2
    assert evaluate["rc"] == 0 and evaluate["record"]["world_size"] == 1 and evaluate["record"]["images"] == 4
    assert report.with_suffix(".txt").read_text().startswith("# benchmarks/gpu_train.py on cpu")
