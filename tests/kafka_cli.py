"""Runs one of Apache Kafka's command-line tools (kafka-topics,
kafka-reassign-partitions, kafka-metadata-quorum, ...) from the jars
tests/kafka/kafka installs, the way an operator runs them: `run-class` with
the tool's main class. One runner for every test that drives Kafka's tools,
so each gets the same small-heap JVM settings, deadline and error report.
"""

from __future__ import annotations

import os
import subprocess

from broker_process import KAFKA_SCRIPT, HarnessError

#: How long one tool run may take by default: a JVM start on a loaded 2-core
#: machine plus a few admin round trips.
TOOL_TIMEOUT_S = 120.0
#: A tool is a short-lived client: a small heap starts faster.
TOOL_HEAP_OPTS = "-Xmx256m -Xms64m"
#: Only the first JIT tier: a tool that runs for seconds starts ~30% faster.
#: Not for the perf tools, whose throughput needs the optimising tier.
QUICK_JIT_OPTS = "-XX:TieredStopAtLevel=1"


def run_kafka_tool(main_class: str, *args: str, input: str | None = None, check: bool = True,
                   timeout_s: float = TOOL_TIMEOUT_S, quick_jit: bool = True) -> subprocess.CompletedProcess:
    """Runs `main_class` with `args`; its completed process (text stdout and
    stderr). `input` is fed to its stdin (else stdin is closed). Raises
    HarnessError when it outlives `timeout_s`, or exits non-zero and `check`."""
    cmd = [str(KAFKA_SCRIPT), "run-class", main_class, *args]
    env = dict(os.environ)
    env.setdefault("KAFKA_HEAP_OPTS", TOOL_HEAP_OPTS)
    if quick_jit:
        env.setdefault("KAFKA_JVM_OPTS", QUICK_JIT_OPTS)
    tool = main_class.rsplit(".", 1)[-1]
    try:
        done = subprocess.run(cmd, input=input, capture_output=True, text=True, timeout=timeout_s, env=env,
                              stdin=None if input is not None else subprocess.DEVNULL)
    except subprocess.TimeoutExpired as e:
        raise HarnessError(f"{tool} {' '.join(args)} did not finish within {timeout_s:.0f}s; "
                           f"stdout so far: {e.stdout!r}; stderr: {e.stderr!r}") from None
    if check and done.returncode != 0:
        raise HarnessError(f"{tool} {' '.join(args)} exited {done.returncode}\n"
                           f"stdout:\n{done.stdout[-4000:]}\nstderr:\n{done.stderr[-4000:]}")
    return done
