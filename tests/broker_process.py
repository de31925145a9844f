"""Broker processes for the black-box suite: Silt (`Broker`) and Apache Kafka
(`KafkaBroker`, started through tests/kafka/kafka), with one surface.

Both bind 127.0.0.1, drain their output into `lines` from background
threads (so pipes never fill), announce readiness with one line the harness
waits for under a deadline, survive `restart()` on the same data dir, and
stop on a signal with exit code 0 when graceful. silt_harness re-exports
everything here; tests import from silt_harness.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

#: How long a broker may take to print its readiness line.
BROKER_READY_TIMEOUT_S = 60.0
#: Apache Kafka is a JVM: format plus start take ~8 s on an idle 2-core box.
KAFKA_READY_TIMEOUT_S = 150.0
#: How long a broker may take to exit after SIGTERM/SIGINT.
BROKER_STOP_TIMEOUT_S = 30.0
#: Default deadline for a single raw request/response round trip.
RAW_IO_TIMEOUT_S = 10.0
#: Upper bound on how many output lines we keep per broker (diagnostics).
LOG_LINES_MAX = 20_000

REPO_ROOT = Path(__file__).resolve().parent.parent
#: The script that installs and starts Apache Kafka (see its header).
KAFKA_SCRIPT = REPO_ROOT / "tests" / "kafka" / "kafka"

_ANSI_RE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_LISTENER_RE = {
    name: re.compile(name + r'="?(?P<host>[0-9.]+|\[[0-9a-fA-F:]+\]):(?P<port>\d+)"?')
    for name in ("kafka_listener", "http_listener")
}
_KAFKA_READY_RE = re.compile(r"kafka ready bootstrap=(?P<host>[0-9.]+):(?P<port>\d+) pid=(?P<pid>\d+)")


class HarnessError(AssertionError):
    """A harness-level failure (timeout, unexpected exit). Subclasses
    AssertionError so pytest reports it as a test failure with its message."""


def default_silt_bin() -> Path:
    target = os.environ.get("CARGO_TARGET_DIR") or str(REPO_ROOT / "target")
    return Path(target) / "debug" / "silt"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (for servers that
    cannot bind port 0 and report it, like Prometheus and Kafka)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class BrokerProcess:
    """What Silt and Kafka brokers share: process control and diagnostics.

    Subclasses give the command, the environment and how to read the
    readiness line (`_command`, `_environment`, `_parse_ready`).
    """

    #: "silt" or "kafka": tests that must tell them apart read this.
    kind = ""
    ready_what = "its readiness line"
    ready_timeout_s = BROKER_READY_TIMEOUT_S

    def __init__(self, data_dir: Path, name: str):
        self.data_dir = Path(data_dir)
        self.name = name
        self.proc: subprocess.Popen | None = None
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self._threads: list[threading.Thread] = []
        self.kafka_host = ""
        self.kafka_port = 0
        self.incarnation = 0
        #: Set when the test itself stopped the process (so teardown does
        #: not mistake an intended exit for a crash).
        self.stopped_by_test = True
        self.exit_codes: list[int] = []

    # -- to override ---------------------------------------------------------
    def _command(self) -> list[str]:
        raise NotImplementedError

    def _environment(self) -> dict[str, str]:
        raise NotImplementedError

    def _parse_ready(self, line: str) -> bool:
        """Reads the addresses from `line` if it is the readiness line."""
        raise NotImplementedError

    def _check_startable(self):
        pass

    # -- addresses -------------------------------------------------------------
    @property
    def bootstrap(self) -> str:
        return f"{self.kafka_host}:{self.kafka_port}"

    @property
    def kafka_addr(self) -> tuple[str, int]:
        return (self.kafka_host, self.kafka_port)

    @property
    def pid(self) -> int:
        assert self.proc is not None, "broker was never started"
        return self.proc.pid

    # -- lifecycle -------------------------------------------------------------
    def _drain(self, stream, label: str, incarnation: int):
        for raw in iter(stream.readline, b""):
            line = _ANSI_RE.sub("", raw.decode("utf-8", "replace")).rstrip("\n")
            with self._cond:
                self.lines.append(f"[{self.name}#{incarnation} {label}] {line}")
                if len(self.lines) > LOG_LINES_MAX:
                    del self.lines[: len(self.lines) - LOG_LINES_MAX]
                self._cond.notify_all()
        stream.close()
        with self._cond:
            self._cond.notify_all()

    def start(self, timeout_s: float | None = None):
        assert self.proc is None or self.proc.poll() is not None, "broker already running"
        self._check_startable()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.incarnation += 1
        with self._cond:
            first_line = len(self.lines)
        self.proc = subprocess.Popen(
            self._command(),
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env=self._environment(), cwd=str(self.data_dir.parent),
            # Its own process group: a hard kill reaches every process it started.
            start_new_session=True,
        )
        self.stopped_by_test = False
        for stream, label in ((self.proc.stderr, "stderr"), (self.proc.stdout, "stdout")):
            t = threading.Thread(target=self._drain, args=(stream, label, self.incarnation),
                                 name=f"{self.name}-{label}-drain", daemon=True)
            t.start()
            self._threads.append(t)
        self._await_ready(first_line, timeout_s or self.ready_timeout_s)
        return self

    def _await_ready(self, first_line: int, timeout_s: float):
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while True:
                for line in self.lines[first_line:]:
                    if self._parse_ready(line):
                        return
                exited = self.proc.poll()
                remaining = deadline - time.monotonic()
                if exited is not None or remaining <= 0:
                    break
                self._cond.wait(timeout=min(remaining, 0.5))
        # Not ready: collect what we know, make sure nothing is left running.
        exited = self.proc.poll()
        if exited is None:
            self._hard_kill()
            why = f"no {self.ready_what} within {timeout_s:.0f}s"
        else:
            self._hard_kill()
            why = f"broker exited with code {exited} before printing {self.ready_what}"
        raise HarnessError(f"{why}\n{self.log_tail()}")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def assert_alive(self, context: str = ""):
        if not self.alive():
            code = self.proc.poll() if self.proc else None
            self._join_drains()
            raise HarnessError(f"broker is not running (exit code {code}) {context}\n{self.log_tail()}")

    def _join_drains(self):
        for t in self._threads:
            t.join(timeout=5)
        self._threads = [t for t in self._threads if t.is_alive()]

    def _kill_group(self):
        """SIGKILL to the broker's process group (the process and its children)."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def _hard_kill(self):
        if self.proc is not None:
            self._kill_group()
            if self.proc.poll() is None:
                self.proc.wait(timeout=BROKER_STOP_TIMEOUT_S)
        self._join_drains()

    def _send(self, sig: int):
        self.proc.send_signal(sig)

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = BROKER_STOP_TIMEOUT_S) -> int:
        """Send `sig` and wait for exit. Returns the exit code (negative for a
        signal death, as subprocess reports it). If the broker does not exit
        in time it is SIGKILLed and HarnessError is raised."""
        assert self.proc is not None, "broker was never started"
        self.stopped_by_test = True
        if self.proc.poll() is None:
            self._send(sig)
            try:
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self._hard_kill()
                raise HarnessError(
                    f"broker did not exit within {timeout_s:.0f}s of signal {signal.Signals(sig).name}"
                    f"; killed it\n{self.log_tail()}")
        self._join_drains()
        code = self.proc.returncode
        self.exit_codes.append(code)
        return code

    def kill9(self) -> int:
        """SIGKILL: no chance to flush or clean up."""
        return self.stop(signal.SIGKILL)

    def restart(self, timeout_s: float | None = None):
        assert self.proc is not None and self.proc.poll() is not None, "stop the broker before restart()"
        return self.start(timeout_s)

    # -- diagnostics -------------------------------------------------------------
    def log_tail(self, n: int = 80) -> str:
        with self._cond:
            tail = self.lines[-n:]
        return f"--- last {len(tail)} lines of {self.name} output ---\n" + "\n".join(tail)

    def rss_bytes(self) -> int:
        """Resident set size from /proc/PID/status (VmRSS, in kB)."""
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        raise HarnessError(f"no VmRSS in /proc/{self.pid}/status")


class Broker(BrokerProcess):
    """One `silt broker` process bound to 127.0.0.1 port 0.

    The object survives restarts: `restart()` starts a new process on the
    same data dir and environment, and the listener addresses are re-read
    from the new readiness line (port 0 means they change).
    """

    kind = "silt"
    ready_what = "'broker ready' line with kafka_listener= and http_listener="

    def __init__(self, silt_bin: Path, data_dir: Path, env: dict[str, str] | None = None,
                 name: str = "silt"):
        super().__init__(data_dir, name)
        self.silt_bin = Path(silt_bin)
        self.extra_env = dict(env or {})
        self.http_host = ""
        self.http_port = 0

    @property
    def http_base(self) -> str:
        return f"http://{self.http_host}:{self.http_port}"

    def _check_startable(self):
        if not self.silt_bin.is_file() or not os.access(self.silt_bin, os.X_OK):
            raise HarnessError(f"SILT_BIN {self.silt_bin} is not an executable file; "
                               "build it with `cargo build --bins` or set SILT_BIN")

    def _command(self) -> list[str]:
        return [str(self.silt_bin), "broker"]

    def _environment(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SILT_")}
        # The readiness line is an INFO event; an inherited RUST_LOG=warn
        # would hide it. SILT_TEST_RUST_LOG lets a developer turn logs up.
        env.pop("RUST_LOG", None)
        if os.environ.get("SILT_TEST_RUST_LOG"):
            env["RUST_LOG"] = os.environ["SILT_TEST_RUST_LOG"]
        env["NO_COLOR"] = "1"
        env["RUST_BACKTRACE"] = "1"
        env["SILT_STORAGE__DATA_DIR"] = str(self.data_dir)
        env["SILT_KAFKA__LISTEN"] = "127.0.0.1:0"
        env["SILT_HTTP__LISTEN"] = "127.0.0.1:0"
        env.update(self.extra_env)
        return env

    def _parse_ready(self, line: str) -> bool:
        if "broker ready" not in line:
            return False
        kafka = _LISTENER_RE["kafka_listener"].search(line)
        http = _LISTENER_RE["http_listener"].search(line)
        if not (kafka and http):
            return False
        self.kafka_host = kafka.group("host").strip("[]")
        self.kafka_port = int(kafka.group("port"))
        self.http_host = http.group("host").strip("[]")
        self.http_port = int(http.group("port"))
        if self.kafka_port == 0 or self.http_port == 0:
            raise HarnessError(f"broker advertised port 0 instead of the bound port: {line}")
        return True

    # -- HTTP --------------------------------------------------------------
    def http_get(self, path: str, timeout_s: float = RAW_IO_TIMEOUT_S) -> tuple[int, dict, bytes]:
        req = urllib.request.Request(self.http_base + path, method="GET")
        # Loopback only: never route through an http_proxy from the environment.
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with opener.open(req, timeout=timeout_s) as resp:
                return resp.status, dict(resp.headers), resp.read()
        except urllib.error.HTTPError as e:
            return e.code, dict(e.headers), e.read()


def _heartbeat_props(ms: str) -> dict[str, str]:
    # Kafka refuses a heartbeat interval below its floor (default 5 s).
    return {"group.consumer.heartbeat.interval.ms": ms, "group.consumer.min.heartbeat.interval.ms": ms}


def _consumer_session_props(ms: str) -> dict[str, str]:
    # Kafka refuses a session timeout below its floor (default 45 s).
    return {"group.consumer.session.timeout.ms": ms, "group.consumer.min.session.timeout.ms": ms}


#: Silt's broker settings (environment variables) that tests use, as Kafka
#: server.properties. A Silt setting missing here has no Kafka equivalent
#: the suite knows of: KafkaBroker refuses it, and the test is silt_only.
SILT_ENV_AS_KAFKA_PROPS = {
    "SILT_LOG__NUM_PARTITIONS": lambda v: {"num.partitions": v},
    "SILT_LOG__SEGMENT_BYTES": lambda v: {"log.segment.bytes": v},
    "SILT_LOG__AUTO_CREATE_TOPICS": lambda v: {"auto.create.topics.enable": v},
    "SILT_LOG__MAX_MESSAGE_BYTES": lambda v: {"message.max.bytes": v},
    "SILT_LOG__RETENTION_CHECK_INTERVAL_MS": lambda v: {"log.retention.check.interval.ms": v},
    "SILT_LOG__CLEANER_BACKOFF_MS": lambda v: {"log.cleaner.backoff.ms": v},
    "SILT_LOG__CLEANER_IO_MAX_BYTES_PER_SECOND": lambda v: {"log.cleaner.io.max.bytes.per.second": v},
    "SILT_LOG__CLEANER_DEDUPE_BUFFER_SIZE": lambda v: {"log.cleaner.dedupe.buffer.size": v},
    "SILT_KAFKA__MAX_CONNECTIONS": lambda v: {"max.connections": v},
    "SILT_KAFKA__SOCKET_REQUEST_MAX_BYTES": lambda v: {"socket.request.max.bytes": v},
    "SILT_GROUPS__INITIAL_REBALANCE_DELAY_MS": lambda v: {"group.initial.rebalance.delay.ms": v},
    "SILT_GROUPS__MIN_SESSION_TIMEOUT_MS": lambda v: {"group.min.session.timeout.ms": v},
    "SILT_GROUPS__CONSUMER_HEARTBEAT_INTERVAL_MS": _heartbeat_props,
    "SILT_GROUPS__CONSUMER_SESSION_TIMEOUT_MS": _consumer_session_props,
}


def kafka_props_for(silt_env: dict[str, str] | None) -> dict[str, str]:
    """Translates Silt broker settings into Kafka server.properties."""
    props: dict[str, str] = {}
    for key, value in (silt_env or {}).items():
        convert = SILT_ENV_AS_KAFKA_PROPS.get(key)
        if convert is None:
            raise HarnessError(f"{key} has no Kafka equivalent in SILT_ENV_AS_KAFKA_PROPS: add one, "
                               "or mark the test silt_only")
        props.update(convert(value))
    return props


class KafkaBroker(BrokerProcess):
    """One Apache Kafka KRaft node (broker+controller, node id 0) started by
    `tests/kafka/kafka start` on a free 127.0.0.1 port, kept across restarts.

    `pid` is the JVM's (for RSS and file descriptors); signals go to the
    script, which forwards them to the JVM and exits 0 after a graceful stop.
    SIGKILL goes to the whole process group.
    """

    kind = "kafka"
    ready_what = "'kafka ready' line"
    ready_timeout_s = KAFKA_READY_TIMEOUT_S

    def __init__(self, data_dir: Path, props: dict[str, str] | None = None, name: str = "kafka"):
        super().__init__(data_dir, name)
        self.props = dict(props or {})
        self.java_pid = 0

    @property
    def http_base(self) -> str:
        raise HarnessError("Apache Kafka has no Silt HTTP endpoint: this test is silt_only")

    @property
    def pid(self) -> int:
        assert self.java_pid, "Kafka was never ready"
        return self.java_pid

    def _check_startable(self):
        if not os.access(KAFKA_SCRIPT, os.X_OK):
            raise HarnessError(f"{KAFKA_SCRIPT} is missing or not executable")
        if not self.kafka_port:
            # Chosen once: a restart keeps the address, as a real broker's does.
            self.kafka_host = "127.0.0.1"
            self.kafka_port = free_port()

    def _command(self) -> list[str]:
        return [str(KAFKA_SCRIPT), "start", str(self.data_dir), str(self.kafka_port),
                *(f"{k}={v}" for k, v in self.props.items())]

    def _environment(self) -> dict[str, str]:
        env = dict(os.environ)
        # The C1 compiler alone: on 2 busy cores C2 compiling Kafka's startup
        # path more than doubles the time to ready (7.6 s against 19.9 s,
        # measured at load average 13); the tests' loads do not need C2.
        env.setdefault("KAFKA_JVM_OPTS", "-XX:TieredStopAtLevel=1")
        return env

    def _parse_ready(self, line: str) -> bool:
        m = _KAFKA_READY_RE.search(line)
        if m is None:
            return False
        if int(m.group("port")) != self.kafka_port:
            raise HarnessError(f"Kafka announced port {m.group('port')}, not {self.kafka_port}: {line}")
        self.java_pid = int(m.group("pid"))
        return True

    def _send(self, sig: int):
        if sig == signal.SIGKILL:
            self._kill_group()
        else:
            self.proc.send_signal(sig)
