"""Post-processing on the CPU: the banded path (postprocess.summarize_upsampled, no full-size logits)
against upsampling first and summarizing (postprocess.summarize), for 3 / 20 / 150 labels.

    .venv/bin/python benchmarks/postprocess_bench.py [--size 480x640] [--labels 3,20,150] [--runs 5]

Random half-resolution logits (as LSegNet.score(upsample=False) returns them); prints the median
time of each path and their agreement (mask equality, largest confidence difference).
"""
import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", default="480x640")
    ap.add_argument("--labels", default="3,20,150")
    ap.add_argument("--runs", type=int, default=5)
    a = ap.parse_args()

    import torch
    import torch.nn.functional as F

    from lseg_ros.model.postprocess import summarize, summarize_upsampled

    h, w = (int(v) for v in a.size.split("x"))
    print(f"{a.size}, torch threads {torch.get_num_threads()}; median of {a.runs}")
    g = torch.Generator().manual_seed(0)
    for n in (int(v) for v in a.labels.split(",")):
        low = torch.randn(n, (h + 1) // 2, (w + 1) // 2, generator=g) * 3

        def banded():
            return summarize_upsampled(low, (h, w))

        def upsample_first():
            full = F.interpolate(low[None], scale_factor=2, mode="bilinear", align_corners=True)[0, :, :h, :w]
            return summarize(full)
        res, times = {}, {}
        for name, fn in (("banded", banded), ("upsample+summarize", upsample_first)):
            res[name] = fn()
            ts = []
            for _ in range(a.runs):
                t = time.perf_counter()
                fn()
                ts.append(time.perf_counter() - t)
            times[name] = statistics.median(ts)
        x, y = res["banded"], res["upsample+summarize"]
        same = (x.mask == y.mask).float().mean().item()
        print(f"{n:4d} labels: banded {1000 * times['banded']:6.0f} ms, upsample+summarize "
              f"{1000 * times['upsample+summarize']:6.0f} ms; masks equal on {100 * same:.4f}% of pixels, "
              f"confidence within {(x.confidence - y.confidence).abs().max().item():.1e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
