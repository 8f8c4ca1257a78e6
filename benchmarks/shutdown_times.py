"""How long lseg_node takes to end on SIGINT, SIGINT twice (Ctrl-C on `ros2 launch`) and SIGTERM in each
state, and whether it ends cleanly (exit 0, no abort/traceback, no child left). Target: 2 s.

    .venv/bin/python -m benchmarks shutdown_times --rounds 3
    .venv/bin/python -m benchmarks shutdown_times --states idle mid_frame --rounds 5
    .venv/bin/python -m benchmarks shutdown_times --states vitl16_building vitl16_mid_frame --rounds 1

States and the scenario code: test/shutdown_harness.py (the same as test/test_node_shutdown.py).
Prints a table and writes benchmarks/results/shutdown_<machine>_<date>.json.
"""
import argparse
import os
import statistics
import sys

from benchmarks.harness import machine, result_path, ros_domain, write_json


def main() -> int:
    from shutdown_harness import EXTRA_STATES, SIGNALS, STATES, lifecycle_available, run_round

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=3, help="tries per state and signal")
    ap.add_argument("--states", nargs="+", default=list(STATES), choices=STATES + EXTRA_STATES,
                    help=f"default: all but {', '.join(EXTRA_STATES)} (more transitions; the real-size model, ~1.5 GB per process)")
    ap.add_argument("--domain", type=int, default=None, help="ROS domain (default: a free one, claimed)")
    ap.add_argument("--out", default="", help="JSON path (default benchmarks/results/shutdown_<machine>_<date>.json)")
    a = ap.parse_args()

    from ros_harness import TestNode

    states = [s for s in a.states if lifecycle_available() or not s.startswith("lifecycle_")]
    outcomes = []
    with ros_domain(a.domain) as (_, env, ctx):
        t = TestNode(ctx, name="shutdown_bench")
        try:
            for state in states:
                for r in range(a.rounds):
                    for o in run_round(env, t, state, tag=f"_b{r}"):
                        outcomes.append(o)
                        print(("ok   " if o.clean else "FAIL ") + o.describe(), flush=True)
        finally:
            t.close()

    rows = []
    print(f"\n{'state':24s} {'signal':13s} {'clean':>7s} {'median s':>9s} {'max s':>7s}  phases at the signal")
    for state in states:
        for sig in SIGNALS:
            os_ = [o for o in outcomes if o.state == state and o.signal == sig]
            secs = [o.seconds for o in os_]
            row = dict(state=state, signal=sig, tries=len(os_), clean=sum(o.clean for o in os_),
                       median_s=statistics.median(secs), max_s=max(secs),
                       phases=sorted({o.phase for o in os_}), exit_codes=[o.returncode for o in os_],
                       failures=[o.describe() for o in os_ if not o.clean])
            rows.append(row)
            print(f"{state:24s} {sig:13s} {row['clean']:>3d}/{row['tries']:<3d} {row['median_s']:9.2f} "
                  f"{row['max_s']:7.2f}  {', '.join(row['phases'])}")
    all_secs = [o.seconds for o in outcomes]
    summary = dict(tries=len(outcomes), clean=sum(o.clean for o in outcomes),
                   within_2s=sum(s <= 2.0 for s in all_secs), max_s=max(all_secs),
                   median_s=statistics.median(all_secs))
    print(f"\n{summary['clean']}/{summary['tries']} clean, {summary['within_2s']}/{summary['tries']} within 2 s, "
          f"median {summary['median_s']:.2f} s, max {summary['max_s']:.2f} s "
          f"(machine {machine()}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}: shared machine)")
    write_json(a.out or result_path("shutdown"), dict(summary=summary, rows=rows, load_average=os.getloadavg(),
                                                       cpus=os.cpu_count()))
    return 0 if summary["clean"] == summary["tries"] else 1


if __name__ == "__main__":
    sys.exit(main())
