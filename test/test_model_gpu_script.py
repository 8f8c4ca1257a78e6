"""benchmarks/gpu_fastpath.py, the prepared GPU check, completes its --dry-run on the CPU (tiny models)
and writes its report and JSON: the device machine's few minutes are not spent finding script errors."""


def test_gpu_fastpath_dry_run(benchmark_dry_run):
    report, data = benchmark_dry_run("gpu_fastpath", "--runs", "1", report="gpu_fastpath_dry-run-cpu_*.json")
    variants = data["env"]["variants"]
    assert "fp16+compile+graphs" in variants
    for v in variants[1:]:  # every variant compared with fp32 on the fixtures and on photos
        assert 0.0 <= data["fidelity"][f"{v}/photos_480x640_20labels"]["argmax_agreement"] <= 1.0
    rows = data["speed"]
    assert {r["model"] for r in rows} == {"tiny_vit", "tiny_resnet"}
    assert {(r["variant"], r["labels"], r["batch"]) for r in rows if r["model"] == "tiny_vit"} == {
        (v, n, b) for v in variants for n in (3, 20) for b in (1, 2)}
    assert all(r["ms_per_batch"] > 0 and r["pipelined_fps"] > 0 and r["pipelined_with_images_fps"] > 0
               and set(r["stages_ms"]) == set(r["stages_with_images_ms"]) == {"upload", "forward", "post", "download"}
               for r in rows)
    assert set(data["label_switch_10_s"]) == {"tiny_vit", "tiny_resnet"}
    assert report.with_suffix(".txt").read_text().startswith("# benchmarks/gpu_fastpath.py on cpu")
