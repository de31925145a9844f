"""A compacted topic with the archive on: the archive keeps every version
(segments are cleaned only after they are uploaded), while the local log is
compacted, and `silt replay --latest-per-key` prints the table: the latest
value of each key from the archive plus the broker's local tail."""

from __future__ import annotations

import json
import subprocess

import pytest

from silt_harness import create_topic, wait_until
from test_compaction import CLEANER_ENV, COMPACTION_TIMEOUT_S, compaction_done, produce, roll
from test_tiering import TIERING_ENV, TOOL_ENV

pytestmark = pytest.mark.silt_only(reason="Silt's Parquet archive; Kafka refuses tiered storage on compacted topics")

KEYS = 20
ROUNDS = 200


def replay(silt_bin, *args) -> list[dict]:
    out = subprocess.run([str(silt_bin), "replay", *args], capture_output=True, timeout=120, env=TOOL_ENV)
    assert out.returncode == 0, out.stderr.decode()[-2000:]
    return [json.loads(line) for line in out.stdout.decode().splitlines()]


def test_the_archive_keeps_every_version_and_replay_gives_the_latest(broker_factory, silt_bin, topic_name):
    broker = broker_factory(env={**TIERING_ENV, **CLEANER_ENV})
    create_topic(broker, topic_name, 1, {"cleanup.policy": "compact", "segment.bytes": "16384", "segment.ms": "300",
                                         "min.cleanable.dirty.ratio": "0.01", "local.retention.ms": "-1"})
    records = [(f"key-{k:02}", f"{r}".encode()) for r in range(ROUNDS) for k in range(KEYS)]
    produce(broker, topic_name, records, **{"batch.num.messages": 200})
    expected = {f"key-{k:02}".encode(): ((ROUNDS - 1) * KEYS + k, f"{ROUNDS - 1}".encode()) for k in range(KEYS)}
    roll(broker, topic_name)
    wait_until(lambda: compaction_done(broker, topic_name, expected), COMPACTION_TIMEOUT_S,
               "the local log to compact (after its segments were archived)", interval_s=0.5)
    url = f"file://{broker.data_dir.with_name(broker.data_dir.name + '-archive')}"

    history = replay(silt_bin, "--topic", topic_name, "--archive-url", url)
    offsets = [r["offset"] for r in history]
    assert offsets == list(range(len(offsets))), "the archive holds every offset it covers: nothing was cleaned first"
    assert len(offsets) >= len(records) * 9 // 10, f"most of the history is archived ({len(offsets)} of {len(records)})"
    assert [(r["key"], r["value"]) for r in history[:KEYS]] == [(f"key-{k:02}", "0") for k in range(KEYS)]

    snapshot = replay(silt_bin, "--topic", topic_name, "--archive-url", url, "--latest-per-key",
                      "--bootstrap-server", broker.bootstrap)
    table = {r["key"]: (r["offset"], r["value"]) for r in snapshot if r["key"] != "roll"}
    assert table == {k.decode(): (o, v.decode()) for k, (o, v) in expected.items()}
    assert [r["offset"] for r in snapshot] == sorted(r["offset"] for r in snapshot), "in offset order"
