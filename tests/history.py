"""A history checker for the failure tests, in the spirit of Jepsen's Kafka
analyses: the test records every produce attempt and its outcome and every
record it consumed, and `check()` judges the whole history at the end rather
than ad-hoc asserts along the way. Pure Python, no dependencies.

Every produced value is a unique id, `<producer>-<seq>`, with `seq`
counting up from 0 in send order per producer (`record_id`). Outcomes:

- ``ok``: acknowledged, with the partition and offset the broker gave;
- ``fail``: definitely not written (the broker refused it before appending);
- ``unknown``: may or may not have been written (timeout, lost connection,
  NOT_ENOUGH_REPLICAS_AFTER_APPEND, a client giving up).

Reads are (partition, offset, key, value) as a consumer saw them; several
readers (e.g. one per leader) may read the same offsets. The anomalies:

- **lost**: acknowledged, never read;
- **duplicated**: one id read at two different offsets;
- **reordered**: within a partition, one producer's records out of send
  order by offset, or its acknowledgements out of offset order (an
  idempotent producer promises both);
- **inconsistent**: two different values read at one offset, or an id read
  at an offset other than the one its acknowledgement gave;
- **phantom**: a value read that no producer ever sent;
- **failed_present**: a definitely failed write that was read anyway.

Unknown writes may appear once or not at all; either is fine.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field

#: Anomaly kinds `Report` carries, in the order they are summarised.
ANOMALY_KINDS = ("lost", "duplicated", "reordered", "inconsistent", "phantom", "failed_present")
#: Examples of each anomaly kept in a summary (the counts are always exact).
SUMMARY_EXAMPLES_MAX = 5


def record_id(producer: str, seq: int) -> str:
    """The value a producer sends as its `seq`-th record."""
    if "-" in producer:
        raise ValueError(f"producer name {producer!r} must not contain '-'")
    return f"{producer}-{seq}"


def parse_id(value: str) -> tuple[str, int] | None:
    """(producer, seq) of a value made by `record_id`, else None."""
    producer, sep, seq = value.rpartition("-")
    if not sep or not producer or not seq.isdigit():
        return None
    return producer, int(seq)


class History:
    """Thread-safe log of produce attempts, outcomes and reads.

    Produce callbacks run on client threads, so every method takes the lock.
    The history serialises to JSON (`dump`/`load`) so a failed run can be
    kept and re-checked.
    """

    def __init__(self):
        self._lock = threading.Lock()
        #: id -> partition it was sent to (None: the client chose).
        self.invoked: dict[str, int | None] = {}
        #: Acknowledgements in the order they arrived: (id, partition, offset).
        self.acks: list[tuple[str, int, int]] = []
        #: id -> error text, for definite failures.
        self.failed: dict[str, str] = {}
        #: id -> error text, for indeterminate outcomes.
        self.unknown: dict[str, str] = {}
        #: (reader, partition, offset, key, value) in the order read.
        self.reads: list[tuple[str, int, int, str | None, str]] = []

    def invoke(self, producer: str, seq: int, partition: int | None = None) -> str:
        rid = record_id(producer, seq)
        with self._lock:
            if rid in self.invoked:
                raise ValueError(f"record id {rid} invoked twice: ids must be unique")
            self.invoked[rid] = partition
        return rid

    def ok(self, rid: str, partition: int, offset: int):
        with self._lock:
            self.acks.append((rid, partition, offset))

    def fail(self, rid: str, error: str):
        with self._lock:
            self.failed[rid] = error

    def info(self, rid: str, error: str):
        """An indeterminate outcome (Jepsen's :info)."""
        with self._lock:
            self.unknown[rid] = error

    def read(self, partition: int, offset: int, key: str | None, value: str, reader: str = "reader"):
        with self._lock:
            self.reads.append((reader, partition, offset, key, value))

    # -- counts, for progress checks in tests -----------------------------------
    def acked_count(self) -> int:
        with self._lock:
            return len(self.acks)

    def resolved_count(self) -> int:
        with self._lock:
            return len(self.acks) + len(self.failed) + len(self.unknown)

    # -- persistence -------------------------------------------------------------
    def dump(self) -> str:
        with self._lock:
            return json.dumps({"invoked": self.invoked, "acks": self.acks, "failed": self.failed,
                               "unknown": self.unknown, "reads": self.reads})

    @classmethod
    def load(cls, text: str) -> History:
        data = json.loads(text)
        h = cls()
        h.invoked = dict(data["invoked"])
        h.acks = [tuple(a) for a in data["acks"]]
        h.failed = dict(data["failed"])
        h.unknown = dict(data["unknown"])
        h.reads = [tuple(r) for r in data["reads"]]
        return h


@dataclass
class Report:
    """What `check` found. Each list holds one human-readable line per anomaly."""
    lost: list[str] = field(default_factory=list)
    duplicated: list[str] = field(default_factory=list)
    reordered: list[str] = field(default_factory=list)
    inconsistent: list[str] = field(default_factory=list)
    phantom: list[str] = field(default_factory=list)
    failed_present: list[str] = field(default_factory=list)
    #: Totals for the summary: attempted, acknowledged, failed, unknown,
    #: distinct ids read, unknown writes that were read.
    stats: dict[str, int] = field(default_factory=dict)

    @property
    def valid(self) -> bool:
        return not any(getattr(self, k) for k in ANOMALY_KINDS)

    def summary(self) -> str:
        lines = ["history: " + ", ".join(f"{k}={v}" for k, v in self.stats.items())]
        for kind in ANOMALY_KINDS:
            found = getattr(self, kind)
            if found:
                lines.append(f"  {kind}: {len(found)}, e.g. " + "; ".join(found[:SUMMARY_EXAMPLES_MAX]))
        lines.append("  valid" if self.valid else "  INVALID")
        return "\n".join(lines)


def check(h: History) -> Report:
    """Judges a finished history (no producer or reader still running)."""
    r = Report()
    # Reads: one value per (partition, offset), one offset per id.
    at: dict[tuple[int, int], set[str]] = {}
    where: dict[str, set[tuple[int, int]]] = {}
    for _reader, p, o, _key, value in h.reads:
        at.setdefault((p, o), set()).add(value)
        where.setdefault(value, set()).add((p, o))
    for (p, o), values in sorted(at.items()):
        if len(values) > 1:
            r.inconsistent.append(f"partition {p} offset {o} read as {sorted(values)}")
    for rid, places in sorted(where.items()):
        if len(places) > 1:
            r.duplicated.append(f"{rid} at {sorted(places)}")
        if rid not in h.invoked:
            r.phantom.append(f"{rid} at {sorted(places)}")
        if rid in h.failed:
            r.failed_present.append(f"{rid} at {sorted(places)} failed with {h.failed[rid]}")

    # Acknowledgements: each is read, at the offset it was given.
    for rid, p, o in h.acks:
        places = where.get(rid)
        if not places:
            r.lost.append(f"{rid} (acknowledged at partition {p} offset {o})")
        elif (p, o) not in places:
            r.inconsistent.append(f"{rid} acknowledged at partition {p} offset {o}, read at {sorted(places)}")

    # Order per (producer, partition): send order by offset, ack order by offset.
    by_offset: dict[tuple[str, int], list[tuple[int, int, str]]] = {}
    for (p, o), values in at.items():
        for value in values:
            parsed = parse_id(value)
            if parsed is not None:
                by_offset.setdefault((parsed[0], p), []).append((o, parsed[1], value))
    for (producer, p), recs in sorted(by_offset.items()):
        recs.sort()
        for (o1, s1, v1), (o2, s2, v2) in zip(recs, recs[1:]):
            if s2 <= s1 and v1 != v2:
                r.reordered.append(f"partition {p}: {v1} at offset {o1} before {v2} at offset {o2}")
    last_ack: dict[tuple[str, int], tuple[int, str]] = {}
    for rid, p, o in h.acks:
        parsed = parse_id(rid)
        if parsed is None:
            continue
        prev = last_ack.get((parsed[0], p))
        if prev is not None and o <= prev[0]:
            r.reordered.append(f"partition {p}: {rid} acknowledged at offset {o} after {prev[1]} "
                               f"at offset {prev[0]}")
        last_ack[(parsed[0], p)] = (o, rid)

    acked = {rid for rid, _, _ in h.acks}
    r.stats = {"attempted": len(h.invoked), "acknowledged": len(acked), "failed": len(h.failed),
               "unknown": len(h.unknown), "read": len(where),
               "unknown_read": sum(1 for rid in h.unknown if rid in where)}
    return r


def main(argv: list[str]) -> int:
    """`python tests/history.py <history.json>`: re-checks a dumped history."""
    if len(argv) != 2:
        print("usage: python tests/history.py <history.json>")
        return 2
    with open(argv[1]) as f:
        report = check(History.load(f.read()))
    print(report.summary())
    return 0 if report.valid else 1


if __name__ == "__main__":
    import sys
    sys.exit(main(sys.argv))
