"""A minimal hand-written Kafka wire codec for the black-box tests.

It exists so tests can send bytes no well-behaved client would (garbage,
truncated frames, absurd versions) and can observe protocol details a client
library hides (long-poll timing, producer ids and sequences in batch
headers). Deliberately small: only the API versions the tests use, all
non-flexible except the ApiVersions probe. Every read has a deadline.
"""

from __future__ import annotations

import select
import socket
import struct
import time
from dataclasses import dataclass, field
from typing import Optional

from silt_harness import RAW_IO_TIMEOUT_S, HarnessError

#: Upper bound on any raw frame we are willing to read back.
RAW_FRAME_BYTES_MAX = 64 * 1024 * 1024


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

    def compact_string(self) -> Optional[str]:
        n = self.uvarint()
        return None if n == 0 else self._take(n - 1).decode()

    def tagged_fields(self) -> None:
        for _ in range(self.uvarint()):
            self.uvarint()  # tag
            self._take(self.uvarint())

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


try:  # optional accelerator (tests/requirements.txt installs it)
    from crc32c import crc32c as _crc32c_fast
except ImportError:  # pragma: no cover
    _crc32c_fast = None


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli), as used by record batch v2."""
    if _crc32c_fast is not None:
        return _crc32c_fast(data)
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
            p, err, base = r.int32(), r.int16(), r.int64()
            r.int64()  # log_append_time_ms
            if name == topic and p == partition:
                result = (err, base)
    if result is None:
        raise AssertionError(f"produce response lacks {topic}-{partition}")
    return result


def raw_init_producer_id(conn: RawConnection) -> tuple[int, int, int]:
    """InitProducerId v0 for a non-transactional producer: (error, id, epoch)."""
    r = conn.request(ApiKey.INIT_PRODUCER_ID, 0, Writer().string(None).int32(60000).bytes())
    r.int32()  # throttle_time_ms
    err, pid, epoch = r.int16(), r.int64(), r.int16()
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


# -- Consumer-group APIs (classic protocol) -----------------------------------
#
# Encoders for the group APIs at any version in the ranges below, flexible
# (compact) or not, so a test can pick the highest version both it and the
# broker support (`pick_version`). Added for tests/test_groups*.py.

class GroupApiKey:
    OFFSET_COMMIT = 8
    OFFSET_FETCH = 9
    FIND_COORDINATOR = 10
    JOIN_GROUP = 11
    HEARTBEAT = 12
    LEAVE_GROUP = 13
    SYNC_GROUP = 14
    DESCRIBE_GROUPS = 15
    LIST_GROUPS = 16
    DELETE_GROUPS = 42
    OFFSET_DELETE = 47


class GroupErrorCode:
    NONE = 0
    UNKNOWN_SERVER_ERROR = -1
    UNKNOWN_TOPIC_OR_PARTITION = 3
    COORDINATOR_NOT_AVAILABLE = 15
    NOT_COORDINATOR = 16
    ILLEGAL_GENERATION = 22
    INCONSISTENT_GROUP_PROTOCOL = 23
    INVALID_GROUP_ID = 24
    UNKNOWN_MEMBER_ID = 25
    INVALID_SESSION_TIMEOUT = 26
    REBALANCE_IN_PROGRESS = 27
    RECORD_LIST_TOO_LARGE = 18
    MESSAGE_TOO_LARGE = 10
    NON_EMPTY_GROUP = 68
    GROUP_ID_NOT_FOUND = 69
    MEMBER_ID_REQUIRED = 79


#: (lowest, highest) version each encoder below implements, and the first
#: flexible version of each API.
GROUP_API_RANGES = {
    GroupApiKey.JOIN_GROUP: (2, 9),
    GroupApiKey.SYNC_GROUP: (0, 5),
    GroupApiKey.HEARTBEAT: (0, 4),
    GroupApiKey.LEAVE_GROUP: (0, 5),
    GroupApiKey.OFFSET_COMMIT: (2, 8),
}
FIRST_FLEXIBLE = {
    GroupApiKey.JOIN_GROUP: 6,
    GroupApiKey.SYNC_GROUP: 4,
    GroupApiKey.HEARTBEAT: 4,
    GroupApiKey.LEAVE_GROUP: 4,
    GroupApiKey.OFFSET_COMMIT: 8,
}


def pick_version(versions: dict[int, tuple[int, int]], api_key: int) -> int:
    """Highest version of `api_key` that both the broker (ApiVersions v0
    result) and our encoder support; HarnessError if there is none."""
    lo, hi = GROUP_API_RANGES[api_key]
    blo, bhi = versions.get(api_key, (None, None))
    if blo is None or max(lo, blo) > min(hi, bhi):
        raise HarnessError(f"broker advertises api_key {api_key} as {blo}..{bhi}; the raw group "
                           f"tests implement {lo}..{hi}")
    return min(hi, bhi)


class GWriter(Writer):
    """Writer that encodes strings, bytes and arrays compactly when `flex`."""

    def __init__(self, flex: bool):
        super().__init__()
        self.flex = flex

    def str_(self, s: Optional[str]):
        return self.compact_string(s) if self.flex else self.string(s)

    def bytes_any(self, b: Optional[bytes]):
        if not self.flex:
            return self.bytes_(b)
        if b is None:
            return self.uvarint(0)
        return self.uvarint(len(b) + 1).raw(b)

    def array_len(self, n: int):
        return self.uvarint(n + 1) if self.flex else self.int32(n)

    def tags(self):
        if self.flex:
            self.tagged_fields()
        return self


class GReader:
    """Reader helpers that decode compactly when `flex`."""

    def __init__(self, r: Reader, flex: bool):
        self.r = r
        self.flex = flex

    def str_(self) -> Optional[str]:
        return self.r.compact_string() if self.flex else self.r.string()

    def bytes_any(self) -> Optional[bytes]:
        if not self.flex:
            return self.r.bytes_()
        n = self.r.uvarint()
        return None if n == 0 else self.r._take(n - 1)

    def array_len(self) -> int:
        n = self.r.uvarint() - 1 if self.flex else self.r.int32()
        if n > 100_000:
            raise ValueError(f"absurd array length {n}")
        return n

    def tags(self):
        if self.flex:
            self.r.tagged_fields()


def group_request(conn: RawConnection, api_key: int, version: int, body: bytes,
                  timeout_s: float = RAW_IO_TIMEOUT_S) -> GReader:
    flex = version >= FIRST_FLEXIBLE[api_key]
    r = conn.request(api_key, version, body, header_version=2 if flex else 1,
                     timeout_s=timeout_s, response_header_version=1 if flex else 0)
    return GReader(r, flex)


def encode_subscription(topics: list[str], user_data: Optional[bytes] = None) -> bytes:
    """ConsumerProtocolSubscription v0 (the `consumer` protocol's metadata)."""
    w = Writer().int16(0).int32(len(topics))
    for t in topics:
        w.string(t)
    return w.bytes_(user_data).bytes()


def encode_assignment(partitions: dict[str, list[int]]) -> bytes:
    """ConsumerProtocolAssignment v0."""
    w = Writer().int16(0).int32(len(partitions))
    for t, ps in partitions.items():
        w.string(t).int32(len(ps))
        for p in ps:
            w.int32(p)
    return w.bytes_(None).bytes()


@dataclass
class JoinGroupResult:
    error_code: int
    generation_id: int
    protocol_name: Optional[str]
    leader: str
    member_id: str
    members: list  # [(member_id, metadata bytes)]


def raw_join_group(conn: RawConnection, version: int, group: str, member_id: str,
                   protocol_type: str, protocols: list[tuple[str, bytes]],
                   session_timeout_ms: int = 6000, rebalance_timeout_ms: int = 6000,
                   timeout_s: float = 30.0) -> JoinGroupResult:
    flex = version >= FIRST_FLEXIBLE[GroupApiKey.JOIN_GROUP]
    w = GWriter(flex).str_(group)
    w.int32(session_timeout_ms)
    w.int32(rebalance_timeout_ms)  # v1+
    w.str_(member_id)
    if version >= 5:
        w.str_(None)  # group_instance_id
    w.str_(protocol_type)
    w.array_len(len(protocols))
    for name, meta in protocols:
        w.str_(name).bytes_any(meta).tags()
    if version >= 8:
        w.str_(None)  # reason
    w.tags()
    g = group_request(conn, GroupApiKey.JOIN_GROUP, version, w.bytes(), timeout_s=timeout_s)
    r = g.r
    r.int32()  # throttle_time_ms (v2+)
    err = r.int16()
    gen = r.int32()
    if version >= 7:
        g.str_()  # protocol_type
    proto = g.str_()
    leader = g.str_()
    if version >= 9:
        r.int8()  # skip_assignment
    mid = g.str_()
    members = []
    for _ in range(g.array_len()):
        m = g.str_()
        if version >= 5:
            g.str_()
        meta = g.bytes_any()
        g.tags()
        members.append((m, meta))
    g.tags()
    return JoinGroupResult(err, gen, proto, leader or "", mid or "", members)


def raw_join_group_full(conn: RawConnection, version: int, group: str, protocol_type: str,
                        protocols: list[tuple[str, bytes]], member_id: str = "",
                        **kw) -> JoinGroupResult:
    """JoinGroup, repeating it once with the assigned id if the broker
    answers MEMBER_ID_REQUIRED (KIP-394, v4+)."""
    res = raw_join_group(conn, version, group, member_id, protocol_type, protocols, **kw)
    if res.error_code == GroupErrorCode.MEMBER_ID_REQUIRED:
        if not res.member_id:
            raise AssertionError("MEMBER_ID_REQUIRED without a member id")
        res = raw_join_group(conn, version, group, res.member_id, protocol_type, protocols, **kw)
    return res


def raw_sync_group(conn: RawConnection, version: int, group: str, generation_id: int,
                   member_id: str, assignments: list[tuple[str, bytes]],
                   protocol_type: Optional[str] = "consumer", protocol_name: Optional[str] = None,
                   timeout_s: float = 30.0) -> tuple[int, Optional[bytes]]:
    """SyncGroup: (error_code, assignment bytes)."""
    flex = version >= FIRST_FLEXIBLE[GroupApiKey.SYNC_GROUP]
    w = GWriter(flex).str_(group).int32(generation_id).str_(member_id)
    if version >= 3:
        w.str_(None)
    if version >= 5:
        w.str_(protocol_type).str_(protocol_name)
    w.array_len(len(assignments))
    for m, a in assignments:
        w.str_(m).bytes_any(a).tags()
    w.tags()
    g = group_request(conn, GroupApiKey.SYNC_GROUP, version, w.bytes(), timeout_s=timeout_s)
    if version >= 1:
        g.r.int32()
    err = g.r.int16()
    if version >= 5:
        g.str_()
        g.str_()
    assignment = g.bytes_any()
    g.tags()
    return err, assignment


def raw_heartbeat(conn: RawConnection, version: int, group: str, generation_id: int,
                  member_id: str) -> int:
    flex = version >= FIRST_FLEXIBLE[GroupApiKey.HEARTBEAT]
    w = GWriter(flex).str_(group).int32(generation_id).str_(member_id)
    if version >= 3:
        w.str_(None)
    w.tags()
    g = group_request(conn, GroupApiKey.HEARTBEAT, version, w.bytes())
    if version >= 1:
        g.r.int32()
    return g.r.int16()


def raw_leave_group(conn: RawConnection, version: int, group: str, member_id: str) -> int:
    """LeaveGroup for one member: the top-level error, or the member's error
    when the top level is NONE (v3+)."""
    flex = version >= FIRST_FLEXIBLE[GroupApiKey.LEAVE_GROUP]
    w = GWriter(flex).str_(group)
    if version < 3:
        w.str_(member_id)
    else:
        w.array_len(1).str_(member_id).str_(None)
        if version >= 5:
            w.str_(None)
        w.tags()
    w.tags()
    g = group_request(conn, GroupApiKey.LEAVE_GROUP, version, w.bytes())
    if version >= 1:
        g.r.int32()
    err = g.r.int16()
    if version >= 3 and err == 0:
        for _ in range(g.array_len()):
            g.str_()
            g.str_()
            merr = g.r.int16()
            g.tags()
            if merr != 0:
                err = merr
    return err


def raw_offset_commit(conn: RawConnection, version: int, group: str,
                      offsets: dict[str, dict[int, int]], generation_id: int = -1,
                      member_id: str = "", metadata: Optional[str] = None
                      ) -> dict[tuple[str, int], int]:
    """OffsetCommit; {(topic, partition): error_code}. generation -1 and an
    empty member id commit as a standalone (simple) consumer."""
    flex = version >= FIRST_FLEXIBLE[GroupApiKey.OFFSET_COMMIT]
    w = GWriter(flex).str_(group).int32(generation_id).str_(member_id)
    if version >= 7:
        w.str_(None)
    if 2 <= version <= 4:
        w.int64(-1)  # retention_time_ms: broker default
    w.array_len(len(offsets))
    for topic, parts in offsets.items():
        w.str_(topic).array_len(len(parts))
        for p, off in parts.items():
            w.int32(p).int64(off)
            if version >= 6:
                w.int32(-1)  # committed_leader_epoch
            w.str_(metadata).tags()
        w.tags()
    w.tags()
    g = group_request(conn, GroupApiKey.OFFSET_COMMIT, version, w.bytes())
    if version >= 3:
        g.r.int32()
    out = {}
    for _ in range(g.array_len()):
        topic = g.str_()
        for _ in range(g.array_len()):
            p = g.r.int32()
            out[(topic, p)] = g.r.int16()
            g.tags()
        g.tags()
    g.tags()
    return out


def raw_offset_delete(conn: RawConnection, group: str, topics: dict[str, list[int]]
                      ) -> tuple[int, dict[tuple[str, int], int]]:
    """OffsetDelete v0 (never flexible): (top-level error, {(topic, partition): error})."""
    w = Writer().string(group).int32(len(topics))
    for t, ps in topics.items():
        w.string(t).int32(len(ps))
        for p in ps:
            w.int32(p)
    r = conn.request(GroupApiKey.OFFSET_DELETE, 0, w.bytes())
    err = r.int16()
    r.int32()  # throttle_time_ms
    out = {}
    for _ in range(r.int32()):
        t = r.string()
        for _ in range(r.int32()):
            p = r.int32()
            out[(t, p)] = r.int16()
    return err, out
