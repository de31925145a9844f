"""Black-box harness for the Silt broker: process control, bounded waits,
Kafka client helpers and a minimal hand-written Kafka wire codec.

Everything here talks to a real `silt broker` process on 127.0.0.1 with
port 0 listeners. Nothing sleeps to synchronise: every wait is a poll with a
deadline that names what it waited for (see `wait_until`).

The raw codec exists so tests can send bytes no well-behaved client would
(garbage, truncated frames, absurd versions) and can observe protocol
details a client library hides (long-poll timing, producer ids in batch
headers). It is deliberately small: only the API versions the tests use.
"""

from __future__ import annotations

import os
import re
import select
import signal
import socket
import struct
import subprocess
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Optional

# ---------------------------------------------------------------------------
# Limits. Every loop and wait in the suite is bounded by one of these.
# ---------------------------------------------------------------------------

#: How long a broker may take to print its readiness line.
BROKER_READY_TIMEOUT_S = 60.0
#: How long a broker may take to exit after SIGTERM/SIGINT.
BROKER_STOP_TIMEOUT_S = 30.0
#: Default deadline for a single raw request/response round trip.
RAW_IO_TIMEOUT_S = 10.0
#: Default deadline for a client operation (admin call, flush, consume).
CLIENT_TIMEOUT_S = 60.0
#: Upper bound on how many stderr lines we keep per broker (diagnostics).
LOG_LINES_MAX = 20_000
#: Upper bound on any raw frame we are willing to read back.
RAW_FRAME_BYTES_MAX = 64 * 1024 * 1024

REPO_ROOT = Path(__file__).resolve().parent.parent

_ANSI_RE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_LISTENER_RE = {
    name: re.compile(name + r'="?(?P<host>[0-9.]+|\[[0-9a-fA-F:]+\]):(?P<port>\d+)"?')
    for name in ("kafka_listener", "http_listener")
}


class HarnessError(AssertionError):
    """A harness-level failure (timeout, unexpected exit). Subclasses
    AssertionError so pytest reports it as a test failure with its message."""


def wait_until(predicate: Callable[[], object], timeout_s: float, what: str,
               interval_s: float = 0.05, diagnostics: Callable[[], str] | None = None):
    """Poll `predicate` until it returns a truthy value or `timeout_s` passes.

    Returns the truthy value. On timeout raises HarnessError naming `what`
    and, if given, appending `diagnostics()`. The poll interval is a pacing
    delay between checks of a condition, not a synchronisation sleep: the
    condition itself decides when we proceed.
    """
    deadline = time.monotonic() + timeout_s
    last_exc: BaseException | None = None
    while True:
        try:
            value = predicate()
            if value:
                return value
            last_exc = None
        except Exception as exc:  # the predicate may race with startup
            last_exc = exc
        if time.monotonic() >= deadline:
            msg = f"timed out after {timeout_s:.1f}s waiting for {what}"
            if last_exc is not None:
                msg += f" (last error: {last_exc!r})"
            if diagnostics is not None:
                msg += "\n" + diagnostics()
            raise HarnessError(msg)
        time.sleep(interval_s)


def default_silt_bin() -> Path:
    target = os.environ.get("CARGO_TARGET_DIR") or str(REPO_ROOT / "target")
    return Path(target) / "debug" / "silt"


# ---------------------------------------------------------------------------
# Broker process
# ---------------------------------------------------------------------------

class Broker:
    """One `silt broker` process bound to 127.0.0.1 port 0.

    The object survives restarts: `restart()` starts a new process on the
    same data dir and environment, and the listener addresses are re-read
    from the new readiness line (port 0 means they change). stderr and
    stdout are drained by background threads into `self.lines` so the pipes
    never fill; `log_tail()` exposes them for failure messages.
    """

    def __init__(self, silt_bin: Path, data_dir: Path, env: dict[str, str] | None = None,
                 name: str = "silt"):
        self.silt_bin = Path(silt_bin)
        self.data_dir = Path(data_dir)
        self.extra_env = dict(env or {})
        self.name = name
        self.proc: subprocess.Popen | None = None
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self._threads: list[threading.Thread] = []
        self.kafka_host = ""
        self.kafka_port = 0
        self.http_host = ""
        self.http_port = 0
        self.incarnation = 0
        #: Set when the test itself stopped the process (so teardown does
        #: not mistake an intended exit for a crash).
        self.stopped_by_test = True
        self.exit_codes: list[int] = []

    # -- addresses ---------------------------------------------------------
    @property
    def bootstrap(self) -> str:
        return f"{self.kafka_host}:{self.kafka_port}"

    @property
    def kafka_addr(self) -> tuple[str, int]:
        return (self.kafka_host, self.kafka_port)

    @property
    def http_base(self) -> str:
        return f"http://{self.http_host}:{self.http_port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None, "broker was never started"
        return self.proc.pid

    # -- lifecycle ---------------------------------------------------------
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

    def start(self, timeout_s: float = BROKER_READY_TIMEOUT_S) -> "Broker":
        assert self.proc is None or self.proc.poll() is not None, "broker already running"
        if not self.silt_bin.is_file() or not os.access(self.silt_bin, os.X_OK):
            raise HarnessError(f"SILT_BIN {self.silt_bin} is not an executable file; "
                               "build it with `cargo build --bins` or set SILT_BIN")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.incarnation += 1
        with self._cond:
            first_line = len(self.lines)
        self.proc = subprocess.Popen(
            [str(self.silt_bin), "broker"],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env=self._environment(), cwd=str(self.data_dir.parent),
        )
        self.stopped_by_test = False
        for stream, label in ((self.proc.stderr, "stderr"), (self.proc.stdout, "stdout")):
            t = threading.Thread(target=self._drain, args=(stream, label, self.incarnation),
                                 name=f"{self.name}-{label}-drain", daemon=True)
            t.start()
            self._threads.append(t)
        self._await_ready(first_line, timeout_s)
        return self

    def _await_ready(self, first_line: int, timeout_s: float):
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while True:
                for line in self.lines[first_line:]:
                    if "broker ready" not in line:
                        continue
                    kafka = _LISTENER_RE["kafka_listener"].search(line)
                    http = _LISTENER_RE["http_listener"].search(line)
                    if kafka and http:
                        self.kafka_host = kafka.group("host").strip("[]")
                        self.kafka_port = int(kafka.group("port"))
                        self.http_host = http.group("host").strip("[]")
                        self.http_port = int(http.group("port"))
                        if self.kafka_port == 0 or self.http_port == 0:
                            raise HarnessError(
                                f"broker advertised port 0 instead of the bound port: {line}")
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
            why = f"no 'broker ready' line with kafka_listener= and http_listener= within {timeout_s:.0f}s"
        else:
            self._join_drains()
            why = f"broker exited with code {exited} before printing 'broker ready'"
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

    def _hard_kill(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=BROKER_STOP_TIMEOUT_S)
        self._join_drains()

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = BROKER_STOP_TIMEOUT_S) -> int:
        """Send `sig` and wait for exit. Returns the exit code (negative for a
        signal death, as subprocess reports it). If the broker does not exit
        in time it is SIGKILLed and HarnessError is raised."""
        assert self.proc is not None, "broker was never started"
        self.stopped_by_test = True
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
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

    def restart(self, timeout_s: float = BROKER_READY_TIMEOUT_S) -> "Broker":
        assert self.proc is not None and self.proc.poll() is not None, "stop the broker before restart()"
        return self.start(timeout_s)

    # -- diagnostics -------------------------------------------------------
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

    # -- HTTP --------------------------------------------------------------
    def http_get(self, path: str, timeout_s: float = RAW_IO_TIMEOUT_S) -> tuple[int, dict, bytes]:
        req = urllib.request.Request(self.http_base + path, method="GET")
        try:
            with urllib.request.urlopen(req, timeout=timeout_s) as resp:
                return resp.status, dict(resp.headers), resp.read()
        except urllib.error.HTTPError as e:
            return e.code, dict(e.headers), e.read()


# ---------------------------------------------------------------------------
# Client helpers (confluent-kafka, kafka-python)
# ---------------------------------------------------------------------------

def client_errors_sink():
    """An error_cb for confluent-kafka clients that records errors instead of
    printing them; tests include them in failure messages."""
    errors: list = []

    def cb(err):
        errors.append(err)
    return errors, cb


def confluent_conf(broker: Broker, **extra) -> dict:
    conf = {
        "bootstrap.servers": broker.bootstrap,
        "broker.address.family": "v4",
        "socket.timeout.ms": 30000,
    }
    conf.update({k.replace("_", "."): v for k, v in extra.items()})
    return conf


def admin_client(broker: Broker):
    from confluent_kafka.admin import AdminClient
    return AdminClient(confluent_conf(broker))


def future_result(fut, what: str, timeout_s: float = CLIENT_TIMEOUT_S):
    import concurrent.futures
    try:
        return fut.result(timeout=timeout_s)
    except concurrent.futures.TimeoutError:
        raise HarnessError(f"timed out after {timeout_s:.0f}s waiting for {what}")


def create_topic(broker: Broker, name: str, partitions: int = 1, config: dict | None = None,
                 replication_factor: int = 1):
    """Create a topic with confluent-kafka's AdminClient and wait until its
    metadata shows every partition with a leader."""
    from confluent_kafka.admin import NewTopic
    admin = admin_client(broker)
    fs = admin.create_topics([NewTopic(name, num_partitions=partitions,
                                       replication_factor=replication_factor,
                                       config=dict(config or {}))],
                             operation_timeout=30, request_timeout=30)
    future_result(fs[name], f"CreateTopics({name})")
    wait_for_partitions(broker, name, partitions)


def wait_for_partitions(broker: Broker, topic: str, partitions: int,
                        timeout_s: float = CLIENT_TIMEOUT_S):
    admin = admin_client(broker)

    def ready():
        md = admin.list_topics(topic=topic, timeout=5)
        t = md.topics.get(topic)
        if t is None or t.error is not None or len(t.partitions) != partitions:
            return False
        return all(p.leader == 0 for p in t.partitions.values())
    wait_until(ready, timeout_s, f"metadata of topic {topic!r} to show {partitions} partitions led by node 0",
               diagnostics=broker.log_tail)


class DeliveryTracker:
    """Collects confluent-kafka delivery reports by an opaque per-record id."""

    def __init__(self):
        self.ok: dict[object, tuple[int, int]] = {}
        self.failed: dict[object, object] = {}

    def callback(self, ident):
        def cb(err, msg):
            if err is not None:
                self.failed[ident] = err
            else:
                self.ok[ident] = (msg.partition(), msg.offset())
        return cb


def produce_all(producer, topic: str, records: Iterable[dict], tracker: DeliveryTracker,
                flush_timeout_s: float = 180.0):
    """Produce `records` (dicts of produce() kwargs plus 'id') and wait for
    every delivery report. Local queue-full is handled by polling, bounded by
    the same deadline as the flush."""
    deadline = time.monotonic() + flush_timeout_s
    count = 0
    for rec in records:
        rec = dict(rec)
        ident = rec.pop("id")
        while True:
            try:
                producer.produce(topic, on_delivery=tracker.callback(ident), **rec)
                break
            except BufferError:
                if time.monotonic() > deadline:
                    raise HarnessError(f"producer queue stayed full for {flush_timeout_s:.0f}s "
                                       f"after {count} records")
                producer.poll(0.05)
        count += 1
        if count % 1000 == 0:
            producer.poll(0)
    remaining = producer.flush(max(1.0, deadline - time.monotonic()))
    if remaining:
        raise HarnessError(f"{remaining} of {count} records still undelivered after "
                           f"{flush_timeout_s:.0f}s flush")
    return count


def consume_partitions(broker: Broker, topic: str, end_offsets: dict[int, int],
                       start_offsets: dict[int, int] | None = None,
                       timeout_s: float = 180.0, **conf_extra) -> dict[int, list]:
    """Read every partition in `end_offsets` from its start offset (default 0)
    up to the given end offset using confluent-kafka with manual assignment,
    and return {partition: [Message, ...]} in the order received.

    Finishes when each partition has reported end-of-partition at or beyond
    its end offset; fails on any consumer error or on the deadline.
    """
    from confluent_kafka import Consumer, KafkaError, TopicPartition
    start_offsets = start_offsets or {p: 0 for p in end_offsets}
    conf = confluent_conf(
        broker,
        **{"group.id": "silt-tests-assign-only",  # required by the client; never joined
           "enable.auto.commit": False, "enable.auto.offset.store": False,
           "enable.partition.eof": True, "auto.offset.reset": "error",
           "check.crcs": True, "fetch.wait.max.ms": 100})
    conf.update(conf_extra)
    consumer = Consumer(conf)
    out: dict[int, list] = {p: [] for p in end_offsets}
    position = dict(start_offsets)
    done = {p for p, end in end_offsets.items() if start_offsets[p] >= end}
    try:
        consumer.assign([TopicPartition(topic, p, start_offsets[p]) for p in end_offsets])
        deadline = time.monotonic() + timeout_s
        while len(done) < len(end_offsets):
            if time.monotonic() > deadline:
                raise HarnessError(
                    f"timed out after {timeout_s:.0f}s consuming {topic}: positions {position}, "
                    f"wanted {end_offsets}\n{broker.log_tail(30)}")
            for msg in consumer.consume(num_messages=10_000, timeout=0.5):
                err = msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        if msg.offset() >= end_offsets[msg.partition()]:
                            done.add(msg.partition())
                        continue
                    raise HarnessError(f"consumer error on {topic}: {err}")
                out[msg.partition()].append(msg)
                position[msg.partition()] = msg.offset() + 1
    finally:
        consumer.close()
    return out


def watermarks(broker: Broker, topic: str, partition: int) -> tuple[int, int]:
    from confluent_kafka import Consumer, TopicPartition
    c = Consumer(confluent_conf(broker, **{"group.id": "silt-tests-assign-only",
                                           "enable.auto.commit": False}))
    try:
        return c.get_watermark_offsets(TopicPartition(topic, partition), timeout=10, cached=False)
    finally:
        c.close()


def assert_broker_serves(broker: Broker, topic: str = "silt-liveness"):
    """The broker process is alive and a brand-new client can produce a record
    and read it back. Used after every piece of hostile input."""
    from confluent_kafka import Producer
    broker.assert_alive("before the liveness check")
    marker = f"alive-{time.monotonic_ns()}".encode()
    errors, error_cb = client_errors_sink()
    p = Producer(confluent_conf(broker, acks="all", error_cb=error_cb,
                                **{"message.timeout.ms": 30000}))
    tracker = DeliveryTracker()
    produce_all(p, topic, [{"id": 0, "value": marker, "partition": 0}], tracker, flush_timeout_s=60)
    assert not tracker.failed, f"liveness produce failed: {tracker.failed} (client errors {errors})"
    partition, offset = tracker.ok[0]
    got = consume_partitions(broker, topic, {partition: offset + 1}, {partition: offset}, timeout_s=60)
    values = [m.value() for m in got[partition]]
    assert values == [marker], f"liveness record read back as {values!r}, wanted [{marker!r}]"
    broker.assert_alive("after the liveness check")


def kafka_python_kwargs(broker: Broker, **extra) -> dict:
    kw = {"bootstrap_servers": broker.bootstrap, "request_timeout_ms": 30000,
          "api_version_auto_timeout_ms": 10000}
    kw.update(extra)
    return kw


# ---------------------------------------------------------------------------
# Raw Kafka wire protocol
# ---------------------------------------------------------------------------

class ApiKey:
    PRODUCE = 0
    FETCH = 1
    LIST_OFFSETS = 2
    METADATA = 3
    API_VERSIONS = 18
    CREATE_TOPICS = 19
    DELETE_TOPICS = 20
    DELETE_RECORDS = 21
    INIT_PRODUCER_ID = 22
    DESCRIBE_CONFIGS = 32
    CREATE_PARTITIONS = 37
    INCREMENTAL_ALTER_CONFIGS = 44
    DESCRIBE_CLUSTER = 60


class ErrorCode:
    NONE = 0
    OFFSET_OUT_OF_RANGE = 1
    CORRUPT_MESSAGE = 2
    UNKNOWN_TOPIC_OR_PARTITION = 3
    MESSAGE_TOO_LARGE = 10
    UNSUPPORTED_VERSION = 35
    TOPIC_ALREADY_EXISTS = 36
    INVALID_PARTITIONS = 37
    INVALID_REPLICATION_FACTOR = 38
    INVALID_CONFIG = 40
    OUT_OF_ORDER_SEQUENCE_NUMBER = 45
    DUPLICATE_SEQUENCE_NUMBER = 46


class Writer:
    """Big-endian Kafka primitive encoder."""

    def __init__(self):
        self.buf = bytearray()

    def int8(self, v): self.buf += struct.pack(">b", v); return self
    def int16(self, v): self.buf += struct.pack(">h", v); return self
    def int32(self, v): self.buf += struct.pack(">i", v); return self
    def uint32(self, v): self.buf += struct.pack(">I", v); return self
    def int64(self, v): self.buf += struct.pack(">q", v); return self
    def raw(self, b): self.buf += b; return self

    def string(self, s: Optional[str]):
        if s is None:
            return self.int16(-1)
        b = s.encode()
        return self.int16(len(b)).raw(b)

    def bytes_(self, b: Optional[bytes]):
        if b is None:
            return self.int32(-1)
        return self.int32(len(b)).raw(b)

    def uvarint(self, v: int):
        assert v >= 0
        while True:
            byte = v & 0x7F
            v >>= 7
            if v:
                self.buf.append(byte | 0x80)
            else:
                self.buf.append(byte)
                return self

    def varint(self, v: int):
        return self.uvarint((v << 1) ^ (v >> 63))  # zigzag, works for varlong too

    def compact_string(self, s: Optional[str]):
        if s is None:
            return self.uvarint(0)
        b = s.encode()
        return self.uvarint(len(b) + 1).raw(b)

    def tagged_fields(self):
        return self.uvarint(0)

    def bytes(self) -> bytes:
        return bytes(self.buf)


class Reader:
    """Big-endian Kafka primitive decoder over one response body."""

    def __init__(self, data: bytes):
        self.data = data
        self.pos = 0

    def _take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise ValueError(f"need {n} bytes at {self.pos}, only {len(self.data) - self.pos} left")
        b = self.data[self.pos:self.pos + n]
        self.pos += n
        return b

    def int8(self): return struct.unpack(">b", self._take(1))[0]
    def int16(self): return struct.unpack(">h", self._take(2))[0]
    def int32(self): return struct.unpack(">i", self._take(4))[0]
    def uint32(self): return struct.unpack(">I", self._take(4))[0]
    def int64(self): return struct.unpack(">q", self._take(8))[0]

    def string(self) -> Optional[str]:
        n = self.int16()
        return None if n < 0 else self._take(n).decode()

    def bytes_(self) -> Optional[bytes]:
        n = self.int32()
        return None if n < 0 else self._take(n)

    def uvarint(self) -> int:
        shift = 0
        value = 0
        for _ in range(10):
            byte = self._take(1)[0]
            value |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return value
            shift += 7
        raise ValueError("varint longer than 10 bytes")

    def varint(self) -> int:
        v = self.uvarint()
        return (v >> 1) ^ -(v & 1)

    def remaining(self) -> int:
        return len(self.data) - self.pos


def request_header(api_key: int, api_version: int, correlation_id: int,
                   client_id: Optional[str] = "silt-raw-tests", header_version: int = 1) -> bytes:
    """Request header v1 (non-flexible APIs) or v2 (flexible: adds tagged fields)."""
    w = Writer().int16(api_key).int16(api_version).int32(correlation_id).string(client_id)
    if header_version >= 2:
        w.tagged_fields()
    return w.bytes()


def frame(payload: bytes) -> bytes:
    return struct.pack(">i", len(payload)) + payload


def request_frame(api_key: int, api_version: int, correlation_id: int, body: bytes,
                  header_version: int = 1) -> bytes:
    return frame(request_header(api_key, api_version, correlation_id, header_version=header_version) + body)


class ConnectionClosed(Exception):
    """The peer closed (EOF or reset) before a complete frame arrived."""


class RawConnection:
    """A blocking TCP connection with deadline-bounded frame reads."""

    def __init__(self, addr: tuple[str, int], timeout_s: float = RAW_IO_TIMEOUT_S):
        self.sock = socket.create_connection(addr, timeout=timeout_s)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._rbuf = bytearray()
        self._corr = 0

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def next_correlation_id(self) -> int:
        self._corr += 1
        return self._corr

    def send(self, data: bytes):
        self.sock.sendall(data)

    def try_send(self, data: bytes) -> bool:
        """Send, tolerating the peer having closed; returns False if it had."""
        try:
            self.sock.sendall(data)
            return True
        except (BrokenPipeError, ConnectionResetError):
            return False
        except socket.timeout:
            return False

    def _fill(self, n: int, deadline: float):
        while len(self._rbuf) < n:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no complete frame within deadline ({len(self._rbuf)} of {n} bytes)")
            ready, _, _ = select.select([self.sock], [], [], remaining)
            if not ready:
                continue
            try:
                chunk = self.sock.recv(65536)
            except (ConnectionResetError, ConnectionAbortedError):
                raise ConnectionClosed("connection reset by broker")
            if not chunk:
                raise ConnectionClosed(f"EOF after {len(self._rbuf)} bytes")
            self._rbuf += chunk

    def read_frame(self, timeout_s: float = RAW_IO_TIMEOUT_S) -> bytes:
        """Read one size-prefixed response frame; raise TimeoutError or
        ConnectionClosed."""
        deadline = time.monotonic() + timeout_s
        self._fill(4, deadline)
        (size,) = struct.unpack(">i", self._rbuf[:4])
        if size < 0 or size > RAW_FRAME_BYTES_MAX:
            raise ValueError(f"broker sent a frame size prefix of {size}")
        self._fill(4 + size, deadline)
        payload = bytes(self._rbuf[4:4 + size])
        del self._rbuf[:4 + size]
        return payload

    def nothing_received_for(self, duration_s: float) -> bool:
        """True if no byte arrives (and the peer does not close) for
        `duration_s`. Used to assert that a long-poll is parked."""
        ready, _, _ = select.select([self.sock], [], [], duration_s)
        return not ready

    def request(self, api_key: int, api_version: int, body: bytes, header_version: int = 1,
                timeout_s: float = RAW_IO_TIMEOUT_S, response_header_version: int = 0) -> Reader:
        corr = self.next_correlation_id()
        self.send(request_frame(api_key, api_version, corr, body, header_version))
        resp = Reader(self.read_frame(timeout_s))
        got = resp.int32()
        if got != corr:
            raise AssertionError(f"response correlation id {got}, sent {corr}")
        if response_header_version >= 1:
            resp.uvarint()  # tagged fields count (tests never expect any)
        return resp

    def wait_closed_or_frame(self, timeout_s: float = RAW_IO_TIMEOUT_S) -> Optional[bytes]:
        """After hostile input: returns None if the broker closed the
        connection, or the frame it answered with. Raises TimeoutError if it
        did neither within the deadline."""
        try:
            return self.read_frame(timeout_s)
        except ConnectionClosed:
            return None

    def wait_closed(self, timeout_s: float = RAW_IO_TIMEOUT_S, what: str = "") -> None:
        """Assert the broker closes this connection (EOF or RST) within the
        deadline without sending a frame first."""
        try:
            payload = self.read_frame(timeout_s)
        except ConnectionClosed:
            return
        except TimeoutError:
            raise HarnessError(f"broker neither closed the connection nor answered within "
                               f"{timeout_s:.0f}s {what}")
        raise HarnessError(f"expected the broker to close the connection {what}, "
                           f"but it answered a {len(payload)}-byte frame")


def api_versions_v0(conn: RawConnection) -> tuple[int, dict[int, tuple[int, int]]]:
    r = conn.request(ApiKey.API_VERSIONS, 0, b"")
    return decode_api_versions_v0_body(r)


def decode_api_versions_v0_body(r: Reader) -> tuple[int, dict[int, tuple[int, int]]]:
    error = r.int16()
    n = r.int32()
    if n < 0 or n > 10_000:
        raise ValueError(f"absurd api_keys count {n}")
    keys = {}
    for _ in range(n):
        key, lo, hi = r.int16(), r.int16(), r.int16()
        keys[key] = (lo, hi)
    return error, keys


def require_version(versions: dict[int, tuple[int, int]], api_key: int, version: int):
    lo, hi = versions.get(api_key, (None, None))
    if lo is None or not lo <= version <= hi:
        raise HarnessError(f"broker does not advertise api_key {api_key} v{version} "
                           f"(advertised range {lo}..{hi}); the raw test needs it")


# -- record batches (magic 2) ------------------------------------------------

def _make_crc32c_table():
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_CRC32C_TABLE = _make_crc32c_table()


def crc32c(data: bytes) -> int:
    try:
        import crc32c as _fast  # optional accelerator, in requirements.txt
        return _fast.crc32c(data)
    except ImportError:
        crc = 0xFFFFFFFF
        for b in data:
            crc = _CRC32C_TABLE[(crc ^ b) & 0xFF] ^ (crc >> 8)
        return crc ^ 0xFFFFFFFF


@dataclass
class Record:
    offset: int
    timestamp: int
    key: Optional[bytes]
    value: Optional[bytes]
    headers: list = field(default_factory=list)


@dataclass
class RecordBatch:
    base_offset: int
    partition_leader_epoch: int
    magic: int
    crc: int
    attributes: int
    last_offset_delta: int
    base_timestamp: int
    max_timestamp: int
    producer_id: int
    producer_epoch: int
    base_sequence: int
    record_count: int
    crc_ok: bool
    records: list  # decoded only for uncompressed batches

    @property
    def compression(self) -> int:
        return self.attributes & 0x07

    @property
    def next_offset(self) -> int:
        return self.base_offset + self.last_offset_delta + 1


def encode_record_batch(values: list[tuple[Optional[bytes], Optional[bytes]]], base_timestamp: int,
                        producer_id: int = -1, producer_epoch: int = -1,
                        base_sequence: int = -1) -> bytes:
    """An uncompressed magic-2 batch with base offset 0, as a producer sends it."""
    recs = Writer()
    for i, (key, value) in enumerate(values):
        body = Writer().int8(0).varint(0).varint(i)
        if key is None:
            body.varint(-1)
        else:
            body.varint(len(key)).raw(key)
        if value is None:
            body.varint(-1)
        else:
            body.varint(len(value)).raw(value)
        body.varint(0)  # headers
        b = body.bytes()
        recs.varint(len(b)).raw(b)
    after_crc = (Writer().int16(0).int32(len(values) - 1).int64(base_timestamp).int64(base_timestamp)
                 .int64(producer_id).int16(producer_epoch).int32(base_sequence)
                 .int32(len(values)).raw(recs.bytes()).bytes())
    crc = crc32c(after_crc)
    tail = Writer().int32(-1).int8(2).uint32(crc).raw(after_crc).bytes()
    return Writer().int64(0).int32(len(tail)).raw(tail).bytes()


def decode_record_batches(data: bytes) -> list[RecordBatch]:
    """Decode consecutive magic-2 batches. A trailing partial batch (allowed
    in Fetch responses) is ignored."""
    out = []
    pos = 0
    while len(data) - pos >= 12:
        base_offset, batch_len = struct.unpack(">qi", data[pos:pos + 12])
        if batch_len < 49 or pos + 12 + batch_len > len(data):
            break
        r = Reader(data[pos + 12:pos + 12 + batch_len])
        epoch, magic, crc = r.int32(), r.int8(), r.uint32()
        if magic != 2:
            raise ValueError(f"record batch at {base_offset} has magic {magic}, expected 2")
        crc_ok = crc32c(r.data[r.pos:]) == crc
        attributes = r.int16()
        last_delta = r.int32()
        base_ts, max_ts = r.int64(), r.int64()
        pid, pepoch, bseq = r.int64(), r.int16(), r.int32()
        count = r.int32()
        records = []
        if attributes & 0x07 == 0:
            for _ in range(count):
                length = r.varint()
                rr = Reader(r._take(length))
                rr.int8()
                ts_delta = rr.varint()
                off_delta = rr.varint()
                klen = rr.varint()
                key = None if klen < 0 else rr._take(klen)
                vlen = rr.varint()
                value = None if vlen < 0 else rr._take(vlen)
                headers = []
                for _ in range(rr.varint()):
                    hk = rr._take(rr.varint()).decode()
                    hl = rr.varint()
                    headers.append((hk, None if hl < 0 else rr._take(hl)))
                records.append(Record(base_offset + off_delta, base_ts + ts_delta, key, value, headers))
        out.append(RecordBatch(base_offset, epoch, magic, crc, attributes, last_delta, base_ts, max_ts,
                               pid, pepoch, bseq, count, crc_ok, records))
        pos += 12 + batch_len
    return out


# -- Fetch / Produce / InitProducerId / ListOffsets bodies -------------------

@dataclass
class FetchPartition:
    partition: int
    error_code: int
    high_watermark: int
    last_stable_offset: int
    log_start_offset: int  # -1 when the version has no such field
    records: bytes


def encode_fetch(version: int, topic: str, partition: int, offset: int, max_wait_ms: int,
                 min_bytes: int = 1, max_bytes: int = 50 * 1024 * 1024,
                 partition_max_bytes: int = 10 * 1024 * 1024) -> bytes:
    assert 4 <= version <= 6, "only non-flexible Fetch v4..v6 is implemented here"
    w = Writer().int32(-1).int32(max_wait_ms).int32(min_bytes).int32(max_bytes).int8(0)
    w.int32(1).string(topic).int32(1).int32(partition).int64(offset)
    if version >= 5:
        w.int64(-1)  # log_start_offset (follower only)
    w.int32(partition_max_bytes)
    return w.bytes()


def decode_fetch(version: int, r: Reader) -> tuple[int, dict[tuple[str, int], FetchPartition]]:
    throttle = r.int32()
    out = {}
    for _ in range(r.int32()):
        topic = r.string()
        for _ in range(r.int32()):
            p = r.int32()
            err = r.int16()
            hw = r.int64()
            lso = r.int64()
            lso_start = r.int64() if version >= 5 else -1
            n_aborted = r.int32()
            for _ in range(max(n_aborted, 0)):
                r.int64()
                r.int64()
            records = r.bytes_() or b""
            out[(topic, p)] = FetchPartition(p, err, hw, lso, lso_start, records)
    return throttle, out


def raw_fetch(conn: RawConnection, topic: str, partition: int, offset: int, max_wait_ms: int = 0,
              version: int = 4, timeout_s: float = RAW_IO_TIMEOUT_S, **kw) -> FetchPartition:
    r = conn.request(ApiKey.FETCH, version,
                     encode_fetch(version, topic, partition, offset, max_wait_ms, **kw),
                     timeout_s=timeout_s)
    _, parts = decode_fetch(version, r)
    if (topic, partition) not in parts:
        raise AssertionError(f"fetch response lacks {topic}-{partition}: {list(parts)}")
    return parts[(topic, partition)]


def encode_produce_v3(topic: str, partition: int, batch: bytes, acks: int = -1,
                      timeout_ms: int = 30000) -> bytes:
    return (Writer().string(None).int16(acks).int32(timeout_ms)
            .int32(1).string(topic).int32(1).int32(partition).bytes_(batch).bytes())


def raw_produce_v3(conn: RawConnection, topic: str, partition: int, batch: bytes,
                   acks: int = -1) -> tuple[int, int]:
    """Returns (error_code, base_offset)."""
    r = conn.request(ApiKey.PRODUCE, 3, encode_produce_v3(topic, partition, batch, acks))
    result = None
    for _ in range(r.int32()):
        name = r.string()
        for _ in range(r.int32()):
            p, err, base, _append_time = r.int32(), r.int16(), r.int64(), r.int64()
            if name == topic and p == partition:
                result = (err, base)
    if result is None:
        raise AssertionError(f"produce response lacks {topic}-{partition}")
    return result


def raw_init_producer_id(conn: RawConnection) -> tuple[int, int, int]:
    """InitProducerId v0 for a non-transactional producer: (error, id, epoch)."""
    r = conn.request(ApiKey.INIT_PRODUCER_ID, 0, Writer().string(None).int32(60000).bytes())
    _throttle, err, pid, epoch = r.int32(), r.int16(), r.int64(), r.int16()
    return err, pid, epoch


def fetch_all_batches(conn: RawConnection, topic: str, partition: int, start: int, end: int,
                      version: int = 4, max_rounds: int = 100_000) -> list[RecordBatch]:
    """Fetch raw batches covering [start, end). Bounded by `max_rounds`."""
    batches = []
    offset = start
    for _ in range(max_rounds):
        if offset >= end:
            return batches
        fp = raw_fetch(conn, topic, partition, offset, max_wait_ms=0, version=version)
        if fp.error_code != ErrorCode.NONE:
            raise AssertionError(f"fetch {topic}-{partition}@{offset} returned error {fp.error_code}")
        got = decode_record_batches(fp.records)
        if not got:
            raise AssertionError(f"fetch {topic}-{partition}@{offset} returned no complete batch "
                                 f"(high watermark {fp.high_watermark}, {len(fp.records)} bytes)")
        for b in got:
            if b.next_offset > offset:
                batches.append(b)
                offset = b.next_offset
    raise HarnessError(f"more than {max_rounds} fetch rounds for {topic}-{partition}")


# -- Prometheus text ---------------------------------------------------------

_SAMPLE_RE = re.compile(r'^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?P<labels>\{[^}]*\})?\s+(?P<value>\S+)')


def parse_prometheus(text: str) -> list[tuple[str, str, float]]:
    """[(metric_name, raw_label_block, value)] for every sample line."""
    samples = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE_RE.match(line)
        if not m:
            continue
        try:
            value = float(m.group("value"))
        except ValueError:
            continue
        samples.append((m.group("name"), m.group("labels") or "", value))
    return samples
