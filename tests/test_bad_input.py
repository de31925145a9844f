"""Hostile and malformed input on the Kafka port. Each case: the offending
connection gets an error or is closed, and the broker stays up and keeps
serving fresh clients."""

from __future__ import annotations

import socket
import struct
import time

import pytest
from confluent_kafka import KafkaError, Producer

from kafka_wire import (ApiKey, ConnectionClosed, ErrorCode, RawConnection, Reader, Writer,
                        api_versions_v0, decode_api_versions_v0_body, frame, raw_produce_v3,
                        request_frame, request_header)
from silt_harness import (DeliveryTracker, HarnessError, assert_broker_serves, confluent_conf,
                          create_topic, kafka_python_kwargs, produce_all, wait_until)

#: Every API the broker contract says is implemented.
CONTRACT_APIS = [ApiKey.PRODUCE, ApiKey.FETCH, ApiKey.LIST_OFFSETS, ApiKey.METADATA, ApiKey.API_VERSIONS,
                 ApiKey.CREATE_TOPICS, ApiKey.DELETE_TOPICS, ApiKey.DELETE_RECORDS, ApiKey.INIT_PRODUCER_ID,
                 ApiKey.DESCRIBE_CONFIGS, ApiKey.CREATE_PARTITIONS, ApiKey.INCREMENTAL_ALTER_CONFIGS,
                 ApiKey.DESCRIBE_CLUSTER]
CLOSE_DEADLINE_S = 10.0
MiB = 1024 * 1024


def test_api_versions_advertises_the_contract(broker):
    with RawConnection(broker.kafka_addr) as conn:
        err, versions = api_versions_v0(conn)
    assert err == ErrorCode.NONE
    missing = [k for k in CONTRACT_APIS if k not in versions]
    assert not missing, f"ApiVersions lacks api keys {missing}: {versions}"
    bad = {k: v for k, v in versions.items() if not 0 <= v[0] <= v[1]}
    assert not bad, f"nonsensical version ranges {bad}"


@pytest.mark.kafka_differs(reason="Silt has no transactions and does not advertise their APIs; Kafka does")
def test_transaction_apis_are_not_advertised(broker):
    with RawConnection(broker.kafka_addr) as conn:
        err, versions = api_versions_v0(conn)
    assert err == ErrorCode.NONE
    for absent in (24, 25, 26):  # AddPartitionsToTxn, AddOffsetsToTxn, EndTxn
        assert absent not in versions, f"ApiVersions advertises unimplemented api key {absent}"


def test_http_request_on_kafka_port_is_closed(broker):
    # "GET " read as a size prefix is 0x47455420 = 1.1 GiB, over the request limit.
    with RawConnection(broker.kafka_addr) as conn:
        conn.send(b"GET / HTTP/1.1\r\nHost: silt\r\n\r\n")
        conn.wait_closed(CLOSE_DEADLINE_S, "after an HTTP request on the Kafka port")
    assert_broker_serves(broker)


def test_garbage_frame(broker):
    with RawConnection(broker.kafka_addr) as conn:
        conn.send(frame(b"\xde\xad\xbe\xef" * 16))  # api key -8531, then junk
        try:
            conn.wait_closed_or_frame(CLOSE_DEADLINE_S)
        except TimeoutError:
            raise HarnessError("broker neither answered nor closed a complete garbage frame")
    assert_broker_serves(broker)


def test_empty_frame(broker):
    with RawConnection(broker.kafka_addr) as conn:
        conn.send(struct.pack(">i", 0))
        try:
            conn.wait_closed_or_frame(CLOSE_DEADLINE_S)
        except TimeoutError:
            raise HarnessError("broker neither answered nor closed a zero-length frame")
    assert_broker_serves(broker)


def test_truncated_frame_then_close(broker):
    with RawConnection(broker.kafka_addr) as conn:
        conn.send(struct.pack(">i", 100) + request_header(ApiKey.METADATA, 1, 1)[:6])
    assert_broker_serves(broker)


@pytest.mark.parametrize("prefix", [0x7FFFFFFF, 0xFFFFFFFF, 0x80000000],
                         ids=["2GiB", "minus-1", "int-min"])
def test_absurd_length_prefix_is_closed(broker, prefix):
    with RawConnection(broker.kafka_addr) as conn:
        conn.send(struct.pack(">I", prefix) + b"\x00" * 16)
        conn.wait_closed(CLOSE_DEADLINE_S, f"after a size prefix of {prefix:#x}")
    assert_broker_serves(broker)


def test_unknown_api_key(broker):
    with RawConnection(broker.kafka_addr) as conn:
        conn.send(request_frame(999, 0, 7, b"\x00" * 8))
        try:
            conn.wait_closed_or_frame(CLOSE_DEADLINE_S)
        except TimeoutError:
            raise HarnessError("broker neither answered nor closed a request with api key 999")
    assert_broker_serves(broker)


def test_api_versions_too_new_answers_v0_unsupported_version(broker):
    body = Writer().compact_string("silt-tests").compact_string("1.0").tagged_fields().bytes()
    with RawConnection(broker.kafka_addr) as conn:
        corr = conn.next_correlation_id()
        conn.send(request_frame(ApiKey.API_VERSIONS, 99, corr, body, header_version=2))
        r = Reader(conn.read_frame(CLOSE_DEADLINE_S))
        assert r.int32() == corr, "correlation id mismatch"
        err, versions = decode_api_versions_v0_body(r)
        assert err == ErrorCode.UNSUPPORTED_VERSION, f"ApiVersions v99: error {err}, want 35"
        # KIP-511: the error response still says which ApiVersions versions
        # are served (Kafka lists that key alone; listing all is allowed too).
        assert ApiKey.API_VERSIONS in versions and versions[ApiKey.API_VERSIONS][0] == 0, \
            f"UNSUPPORTED_VERSION response must list ApiVersions' range (KIP-511): {versions}"
        assert r.remaining() == 0, f"{r.remaining()} trailing bytes: response is not in the v0 format"
        # KIP-511: the client retries on the same connection with a version it now knows.
        err, again = api_versions_v0(conn)
        assert err == ErrorCode.NONE
        assert again[ApiKey.API_VERSIONS] == versions[ApiKey.API_VERSIONS]
        assert all(again.get(k) == v for k, v in versions.items()), \
            f"the error response's ranges {versions} differ from the full list {again}"
    assert_broker_serves(broker)


def test_metadata_absurd_version(broker):
    with RawConnection(broker.kafka_addr) as conn:
        conn.send(request_frame(ApiKey.METADATA, 9999, 1, b"\x00\x00\x00\x00"))
        try:
            conn.wait_closed_or_frame(CLOSE_DEADLINE_S)
        except TimeoutError:
            raise HarnessError("broker neither answered nor closed Metadata v9999")
    assert_broker_serves(broker)


def test_produce_with_garbage_records(broker, topic_name):
    create_topic(broker, topic_name, 1)
    with RawConnection(broker.kafka_addr) as conn:
        try:
            err, _ = raw_produce_v3(conn, topic_name, 0, b"\x00\x01garbage-not-a-record-batch\xff" * 3)
            assert err != ErrorCode.NONE, "garbage records were accepted"
        except ConnectionClosed:
            pass  # closing the connection is an acceptable answer
    assert_broker_serves(broker, topic_name)


def test_request_over_socket_request_max_bytes_is_refused_unbuffered(broker_factory):
    broker = broker_factory({"SILT_KAFKA__SOCKET_REQUEST_MAX_BYTES": str(1 * MiB)})
    header = request_header(ApiKey.PRODUCE, 3, 1)
    declared = 2 * MiB
    with RawConnection(broker.kafka_addr) as conn:
        # Send the size prefix, the header and a little of the body; never the
        # rest. A broker that waits to buffer 2 MiB would hang here.
        conn.send(struct.pack(">i", declared) + header + b"\x00" * 4096)
        conn.wait_closed(CLOSE_DEADLINE_S, "after a 2 MiB size prefix with a 1 MiB request limit")
    # Requests under the limit still work, including a ~900 KiB produce.
    assert_broker_serves(broker)
    tracker = DeliveryTracker()
    produce_all(Producer(confluent_conf(broker, acks="all")), "silt-big-under-limit",
                [{"id": 0, "value": b"b" * (900 * 1024), "partition": 0}], tracker)
    assert not tracker.failed, f"900 KiB produce under a 1 MiB request limit failed: {tracker.failed}"


def test_stalled_half_sent_requests_do_not_block_others(broker):
    stalled = []
    try:
        for i in range(20):
            c = RawConnection(broker.kafka_addr)
            full = request_frame(ApiKey.METADATA, 1, i, Writer().int32(0).bytes())
            c.send(full[: len(full) // 2])
            stalled.append(c)
        t0 = time.monotonic()
        assert_broker_serves(broker)
        took = time.monotonic() - t0
        assert took < 30, f"produce+consume took {took:.1f}s while 20 connections stalled mid-request"
        # The stalled connections are still just waiting, not answered with junk.
        for c in stalled:
            assert c.nothing_received_for(0.0), "a half-sent request got a response"
    finally:
        for c in stalled:
            c.close()
    assert_broker_serves(broker)


def _fd_count(pid: int) -> int:
    import os
    return len(os.listdir(f"/proc/{pid}/fd"))


def test_memory_and_fds_stay_bounded_under_bad_connections(broker):
    assert_broker_serves(broker)  # warm up allocator, client paths
    rss0 = broker.rss_bytes()
    fds0 = _fd_count(broker.pid)
    peak = rss0
    junk = b"\xab" * MiB
    waves, per_wave = 5, 100
    unclosed = []
    for wave in range(waves):
        conns = []
        for j in range(per_wave):
            kind = j % 5
            try:
                s = socket.create_connection(broker.kafka_addr, timeout=5)
            except OSError as e:
                raise HarnessError(f"wave {wave}: connect #{j} failed: {e!r}")
            s.setblocking(False)
            if kind == 0:
                payload = struct.pack(">I", 0x7FFFFFFF) + junk   # 2 GiB claimed, 1 MiB sent
            elif kind == 1:
                payload = struct.pack(">I", 0xFFFFFFFF) + junk[:4096]
            elif kind == 2:
                payload = b"GET / HTTP/1.1\r\nHost: silt\r\n\r\n"  # 1.1 GiB as a size prefix
            elif kind == 3:
                payload = frame(b"\xde\xad\xbe\xef" * 64)
            else:
                payload = struct.pack(">i", 100) + b"\x00" * 10
            try:
                s.send(payload)  # non-blocking: whatever fits
            except (BlockingIOError, ConnectionError):
                pass
            conns.append((kind, s))
        # Broker must close the over-limit ones on its own.
        deadline = time.monotonic() + CLOSE_DEADLINE_S
        for kind, s in conns:
            if kind not in (0, 1, 2):
                continue
            closed = False
            while not closed and time.monotonic() < deadline:
                try:
                    s.settimeout(max(0.01, deadline - time.monotonic()))
                    closed = s.recv(65536) == b""
                except (ConnectionError, OSError):
                    closed = True
            if not closed:
                unclosed.append((wave, kind))
        peak = max(peak, broker.rss_bytes())
        for _, s in conns:
            s.close()
        broker.assert_alive(f"after wave {wave} of bad connections")
    assert not unclosed, (f"{len(unclosed)} connections with an over-limit size prefix were not closed "
                          f"within {CLOSE_DEADLINE_S}s: {unclosed[:10]}")
    growth = peak - rss0
    assert growth < 64 * MiB, f"RSS grew by {growth / MiB:.1f} MiB under {waves * per_wave} bad connections"
    wait_until(lambda: _fd_count(broker.pid) <= fds0 + 5, 30,
               f"broker fd count to return near {fds0} after closing bad connections",
               diagnostics=lambda: f"now {_fd_count(broker.pid)} fds")
    assert_broker_serves(broker)


def test_max_connections_caps_concurrent_connections(broker_factory):
    cap = 8
    broker = broker_factory({"SILT_KAFKA__MAX_CONNECTIONS": str(cap)})
    socks = []
    try:
        for i in range(3 * cap):
            try:
                s = socket.create_connection(broker.kafka_addr, timeout=5)
            except OSError:
                continue  # refusing outright is a valid way to cap
            try:
                s.sendall(request_frame(ApiKey.API_VERSIONS, 0, i, b""))
            except OSError:
                pass
            socks.append(s)
        served = 0
        deadline = time.monotonic() + 3
        pending = list(socks)
        while pending and time.monotonic() < deadline:
            for s in list(pending):
                s.settimeout(0.05)
                try:
                    data = s.recv(4)
                except socket.timeout:
                    continue
                except OSError:
                    pending.remove(s)
                    continue
                pending.remove(s)
                if data:
                    served += 1
        assert 1 <= served <= cap, f"{served} of {len(socks)} connections answered with max_connections={cap}"
    finally:
        for s in socks:
            s.close()
    assert_broker_serves(broker)


def test_batch_over_broker_max_message_bytes(broker_factory):
    broker = broker_factory({"SILT_LOG__MAX_MESSAGE_BYTES": "10000"})
    p = Producer(confluent_conf(broker, acks="all", **{"message.max.bytes": 1_000_000,
                                                       "compression.type": "none"}))
    tracker = DeliveryTracker()
    produce_all(p, "silt-too-large", [{"id": "big", "value": b"x" * 20_000, "partition": 0}], tracker)
    assert "big" in tracker.failed, f"a 20 kB batch over max.message.bytes=10000 was accepted at {tracker.ok}"
    code = tracker.failed["big"].code()
    assert code == KafkaError.MSG_SIZE_TOO_LARGE, f"expected MSG_SIZE_TOO_LARGE (10), got {tracker.failed['big']}"

    from kafka import KafkaProducer
    from kafka.errors import MessageSizeTooLargeError
    kp = KafkaProducer(**kafka_python_kwargs(broker, acks="all", max_request_size=1_000_000, retries=0))
    try:
        fut = kp.send("silt-too-large", value=b"y" * 20_000, partition=0)
        with pytest.raises(MessageSizeTooLargeError):
            fut.get(timeout=60)
    finally:
        kp.close(timeout=30)
    assert_broker_serves(broker, "silt-too-large")


def test_topic_max_message_bytes_override(broker, topic_name):
    create_topic(broker, topic_name, 1, {"max.message.bytes": "5000"})
    p = Producer(confluent_conf(broker, acks="all", **{"compression.type": "none"}))
    tracker = DeliveryTracker()
    produce_all(p, topic_name, [{"id": "big", "value": b"z" * 8000, "partition": 0}], tracker)
    assert "big" in tracker.failed and tracker.failed["big"].code() == KafkaError.MSG_SIZE_TOO_LARGE, \
        f"8000-byte record on a topic with max.message.bytes=5000: ok={tracker.ok} failed={tracker.failed}"
    tracker = DeliveryTracker()
    produce_all(p, topic_name, [{"id": "small", "value": b"z" * 1000, "partition": 0}], tracker)
    assert tracker.ok.get("small") == (0, 0), f"small record after a rejected one: {tracker.failed}"
