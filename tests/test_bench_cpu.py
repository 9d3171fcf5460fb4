"""`bench/gates.py` divides the CPU the stack spent on a level by its decisions; Postgres serves them from backends
that come and go. A child that ended between two readings must keep counting (in its parent's waited-for
children's time), or a level's CPU drops, even below zero (it did: "postgres -1 ms per decision" in a session-10
run). Real processes here: a parent that starts a child, the child burns CPU and ends, the parent waits for it."""

from __future__ import annotations

import subprocess
import sys
import time

import psutil

from bench.gates_liveness import tree_cpu

BURN = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.4: pass\n"
PARENT = (
    "import subprocess, sys\n"
    f"child = subprocess.Popen([sys.executable, '-c', {BURN!r}])\n"
    "sys.stdin.readline()\n"  # the test reads the tree while the child burns or has ended, not yet waited for
    "child.wait()\n"
    "sys.stdin.readline()\n"  # then reads it again, with the child waited for
)


def test_a_child_that_ended_keeps_counting_in_its_parent() -> None:
    parent = subprocess.Popen([sys.executable, "-c", PARENT], stdin=subprocess.PIPE, text=True)
    try:
        proc = psutil.Process(parent.pid)
        deadline = time.monotonic() + 20
        while not proc.children() and time.monotonic() < deadline:
            time.sleep(0.01)
        child = proc.children()[0]
        while child.cpu_times().user + child.cpu_times().system < 0.3 and time.monotonic() < deadline:
            time.sleep(0.02)
        during = tree_cpu([proc, *proc.children(recursive=True)])  # the child's burn counted as it runs
        assert parent.stdin is not None
        parent.stdin.write("\n")  # the parent waits for the child: it leaves the tree
        parent.stdin.flush()
        while proc.children() and time.monotonic() < deadline:
            time.sleep(0.01)
        after = tree_cpu([proc, *proc.children(recursive=True)])
        assert not proc.children()
        assert during >= 0.3
        assert after >= during  # the child's CPU moved into the parent's children_*; nothing was lost
        parent.stdin.write("\n")
        parent.stdin.flush()
        parent.wait(timeout=20)
    finally:
        if parent.poll() is None:
            parent.kill()
