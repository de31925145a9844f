"""The history checker (tests/history.py) on synthetic histories: a clean
one passes, and each anomaly is caught in a history that has only that one.
No broker: these run the same in both passes."""

from __future__ import annotations

import threading

import pytest

from history import History, check, parse_id, record_id


def clean_history(n: int = 6) -> History:
    """Two producers on two partitions, everything acknowledged and read once,
    plus one unknown write that was read and one that was not."""
    h = History()
    offsets = {0: 0, 1: 0}
    for seq in range(n):
        for producer, p in (("a", 0), ("b", 1)):
            rid = h.invoke(producer, seq, p)
            h.ok(rid, p, offsets[p])
            h.read(p, offsets[p], producer, rid)
            offsets[p] += 1
    seen = h.invoke("a", n, 0)
    h.info(seen, "timed out")
    h.read(0, offsets[0], "a", seen)
    h.info(h.invoke("a", n + 1, 0), "timed out")
    # A second reader of partition 0 agreeing with the first.
    for reader, p, o, key, value in list(h.reads):
        if p == 0:
            h.read(p, o, key, value, reader="second")
    return h


def test_clean_history_is_valid():
    report = check(clean_history())
    assert report.valid, report.summary()
    assert report.stats == {"attempted": 14, "acknowledged": 12, "failed": 0, "unknown": 2,
                            "read": 13, "unknown_read": 1}


def test_lost_acknowledged_record_is_caught():
    h = clean_history()
    h.reads = [r for r in h.reads if r[4] != "b-3"]
    report = check(h)
    assert report.lost == ["b-3 (acknowledged at partition 1 offset 3)"], report.summary()
    assert not report.valid


def test_duplicate_is_caught():
    h = clean_history()
    # The retry of a-2 written again after the unknown write (a-6 at offset 6).
    h.read(0, 7, "a", "a-2")
    report = check(h)
    assert report.duplicated == ["a-2 at [(0, 2), (0, 7)]"], report.summary()
    assert not report.valid


def test_reordered_records_are_caught():
    h = History()
    ids = [h.invoke("a", seq, 0) for seq in range(3)]
    for offset, rid in enumerate(ids):
        h.ok(rid, 0, offset)
    # a-1 and a-2 swapped in the log, and acknowledged so.
    h.acks = [("a-0", 0, 0), ("a-1", 0, 2), ("a-2", 0, 1)]
    for offset, rid in enumerate(["a-0", "a-2", "a-1"]):
        h.read(0, offset, "a", rid)
    report = check(h)
    assert report.reordered == ["partition 0: a-2 at offset 1 before a-1 at offset 2",
                                "partition 0: a-2 acknowledged at offset 1 after a-1 at offset 2"], \
        report.summary()
    assert not report.lost and not report.duplicated and not report.inconsistent


def test_two_producers_interleaved_are_not_reordered():
    h = History()
    offset = 0
    for seq in range(4):
        for producer in ("a", "b"):
            rid = h.invoke(producer, seq, 0)
            h.ok(rid, 0, offset)
            h.read(0, offset, producer, rid)
            offset += 1
    assert check(h).valid


def test_two_values_at_one_offset_are_caught():
    h = clean_history()
    # An old leader that kept a divergent tail: offset 6 of partition 0 holds
    # something else there than the new leader has.
    h.read(0, 6, "a", "a-7", reader="old-leader")
    report = check(h)
    assert report.inconsistent == ["partition 0 offset 6 read as ['a-6', 'a-7']"], report.summary()
    assert not report.valid


def test_ack_at_another_offset_is_caught():
    h = History()
    rid = h.invoke("a", 0, 0)
    h.ok(rid, 0, 5)
    h.read(0, 4, "a", rid)
    report = check(h)
    assert report.inconsistent == ["a-0 acknowledged at partition 0 offset 5, read at [(0, 4)]"]


def test_phantom_and_failed_present_are_caught():
    h = clean_history()
    h.fail(h.invoke("b", 99, 1), "NOT_ENOUGH_REPLICAS")
    h.read(1, 6, "b", "b-99")
    h.read(1, 7, None, "garbage")
    report = check(h)
    assert report.failed_present == ["b-99 at [(1, 6)] failed with NOT_ENOUGH_REPLICAS"]
    assert report.phantom == ["garbage at [(1, 7)]"]


def test_dump_and_load_round_trip():
    h = clean_history()
    h.read(0, 9, "a", "a-0")
    again = History.load(h.dump())
    assert check(again) == check(h)
    assert not check(again).valid


def test_ids():
    assert record_id("p1", 7) == "p1-7"
    assert parse_id("p1-7") == ("p1", 7)
    assert parse_id("garbage") is None
    assert parse_id("p-x") is None
    with pytest.raises(ValueError):
        record_id("a-b", 1)
    h = History()
    h.invoke("a", 1)
    with pytest.raises(ValueError):
        h.invoke("a", 1)


def test_concurrent_recording_keeps_every_event():
    h = History()

    def produce(name: str):
        for seq in range(2000):
            rid = h.invoke(name, seq, 0)
            h.info(rid, "x")
    threads = [threading.Thread(target=produce, args=(f"t{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert h.resolved_count() == 8000
