"""A broker whose log reader goes away keeps serving and still shuts down
cleanly. Log lines then fail to write (EPIPE on stderr); a log sink that died
(a crashed collector, `silt broker 2>&1 | head`) must not take the broker
down with it. Found by the Java client suite, whose process API closes the
child's pipes when it sends SIGTERM: silt panicked and exited with code 101.
"""

from __future__ import annotations

import os
import signal
import subprocess

import pytest

from broker_process import _LISTENER_RE
from silt_harness import (BROKER_READY_TIMEOUT_S, BROKER_STOP_TIMEOUT_S, HarnessError, assert_broker_serves,
                          create_topic, wait_until)

pytestmark = pytest.mark.silt_only(reason="Silt's own process and its log sink")


class _Addr:
    """What the client helpers need from a broker whose log cannot be read."""

    def __init__(self, bootstrap: str, proc: subprocess.Popen):
        self.bootstrap = bootstrap
        self.proc = proc

    def assert_alive(self, context: str = ""):
        if self.proc.poll() is not None:
            raise HarnessError(f"broker exited with code {self.proc.returncode} {context}")

    def log_tail(self, n: int = 0) -> str:
        return "(the broker's log pipe is closed)"


def test_broker_survives_its_closed_log_pipe(silt_bin, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("SILT_") and k != "RUST_LOG"}
    env.update(NO_COLOR="1", SILT_STORAGE__DATA_DIR=str(tmp_path / "data"),
               SILT_KAFKA__LISTEN="127.0.0.1:0", SILT_HTTP__LISTEN="127.0.0.1:0")
    proc = subprocess.Popen([str(silt_bin), "broker"], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    try:
        lines: list[bytes] = []

        def ready():
            line = proc.stderr.readline()  # blocks per line; bounded by the broker's startup
            lines.append(line)
            if not line:
                raise HarnessError(f"broker exited with {proc.wait()} before 'broker ready': {lines}")
            return b"broker ready" in line
        wait_until(ready, BROKER_READY_TIMEOUT_S, "the 'broker ready' line")
        kafka = _LISTENER_RE["kafka_listener"].search(lines[-1].decode())
        broker = _Addr(f"{kafka.group('host')}:{kafka.group('port')}", proc)

        proc.stderr.close()  # every log line from here on fails with EPIPE
        # Creating a topic and producing log on the node and partition threads.
        create_topic(broker, "after-log-pipe-closed", partitions=2)
        assert_broker_serves(broker, "after-log-pipe-closed-liveness")
        broker.assert_alive("once its log pipe closed")

        proc.send_signal(signal.SIGTERM)  # the shutdown logs too
        code = proc.wait(timeout=BROKER_STOP_TIMEOUT_S)
        assert code == 0, f"broker exited with code {code} on SIGTERM with its log pipe closed (expected 0)"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
