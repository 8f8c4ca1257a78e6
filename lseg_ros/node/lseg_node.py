"""lseg_node: camera images in; LSeg class masks, overlays, confidences and label maps out.

main() owns the process: SIGINT and SIGTERM (once, or twice as Ctrl-C on `ros2 launch` delivers
them) only set a flag, in every state, so the process ends with status 0 within about 2 s: the
executor stops, the worker cancels the frame in hand (CPU) or finishes it (CUDA, milliseconds), the
node is destroyed and rclpy shut down, and the process ends with os._exit: work that cannot be
interrupted (a weights file being read in a transition, a label set being encoded) is abandoned
after the grace period instead of being joined, torch's thread pools are not torn down under a
running thread ("terminate called without an active exception"), and Fast DDS's static
destructors, which were seen sleeping for seconds at exit on a loaded machine, do not run. Heavy
imports (rclpy, torch) come after the handlers are installed.
"""
from __future__ import annotations

import os
import signal
import sys
import threading
import time
from typing import List, Optional

GRACE_S = 1.5  # for the worker and executor threads once a signal arrived


def _autostart(node, stop: threading.Event) -> None:
    """configure + activate, as a lifecycle manager would; failures are logged by the node."""
    from lifecycle_msgs.msg import State
    from rclpy.lifecycle import TransitionCallbackReturn

    if stop.is_set() or node.trigger_configure() != TransitionCallbackReturn.SUCCESS:
        return
    if not stop.is_set() and node._state_machine.current_state[0] == State.PRIMARY_STATE_INACTIVE:
        node.trigger_activate()


def _teardown(node, executor, starter) -> None:
    """Stops the worker and the executor within GRACE_S; destroys the node and shuts rclpy down when
    nothing is still running in a callback (a transition or a label encoding in an executor thread)."""
    import rclpy

    deadline = time.monotonic() + GRACE_S
    worker_done = node.close(GRACE_S)
    try:
        executor.shutdown(timeout_sec=0, wait_for_threads=False)
    except TypeError:  # rclpy < 9 (Jazzy): no wait_for_threads, and its thread pool is never shut down
        executor.shutdown(timeout_sec=0)
        pool = getattr(executor, "_executor", None)
        if pool is not None:
            pool.shutdown(wait=False)

    def busy():
        return [t.name for t in threading.enumerate()
                if t is not threading.main_thread() and t.is_alive() and (not t.daemon or t is starter)]
    while busy() and time.monotonic() < deadline:
        time.sleep(0.02)
    running = busy()
    if worker_done and not running:
        node.destroy_node()
        rclpy.try_shutdown()
    else:
        node.get_logger().warning(f"exiting while {', '.join(running) or 'the worker'} is busy")
    sys.stdout.flush()
    sys.stderr.flush()


def main(args: Optional[List[str]] = None) -> None:
    """Runs the node until SIGINT/SIGTERM; ends the process (status 0, or 1 when it cannot start)."""
    stop = threading.Event()  # set by SIGINT/SIGTERM; the main loop polls it
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda _signum, _frame: stop.set())
    from ..model.heap import keep_freed_memory
    keep_freed_memory()  # every frame's megabytes reuse warm pages (model/heap.py)
    import rclpy
    from rclpy.executors import MultiThreadedExecutor
    from rclpy.signals import SignalHandlerOptions

    from .lifecycle_node import LSegNode
    from .predictor_setup import StartupError

    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    try:
        node = LSegNode()
    except StartupError as e:
        rclpy.logging.get_logger("lseg_node").fatal(str(e))
        rclpy.try_shutdown()
        sys.stderr.flush()
        os._exit(1)
    executor = MultiThreadedExecutor(num_threads=4)
    executor.add_node(node)
    starter = None
    if node.cfg.autostart:
        starter = threading.Thread(target=_autostart, args=(node, stop), name="lseg_autostart", daemon=True)
        starter.start()
    code = 0
    try:
        while not stop.is_set() and rclpy.ok():
            try:
                executor.spin_once(timeout_sec=0.1)
            except Exception as e:  # a failing callback must not take the node down
                node.get_logger().error(f"callback failed: {type(e).__name__}: {e}")
            if starter is not None and not starter.is_alive():
                if node.cfg.autostart and node.state == "unconfigured":
                    code = 1  # autostart configure failed (logged): a launch file sees the failure
                    break
                starter = None
    finally:
        _teardown(node, executor, starter)
        os._exit(code)  # see the module docstring: never leave the end to the interpreter's exit


if __name__ == "__main__":
    sys.exit(main())
