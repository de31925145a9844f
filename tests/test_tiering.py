"""Tiered storage, end to end: sealed segments archived as Parquet (to the
embedded file:// default and to a real S3-compatible server, moto), queried
in place with DuckDB, DataFusion, Polars and pyarrow (given the whole archive
with a glob, and a topic's folder as a table) and Spark (the folder), replayed through the Kafka
protocol from offset 0 with confluent-kafka and kcat, found by timestamp,
replayed by `silt replay`, kept correct across an object-store outage and a
kill -9 in the middle of uploads, and moved from the first layout (manifests
inside the topic's folder) by a restarted broker. `silt replay --key` reads
only the row groups that can hold the key (bloom filters and statistics).
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from confluent_kafka import Producer, TopicPartition

from kafka_wire import RawConnection, raw_fetch
from silt_harness import (DeliveryTracker, HarnessError, confluent_conf, consume_partitions,
                          create_topic, parse_prometheus, produce_all, wait_until)

pytestmark = pytest.mark.silt_only(reason="Silt's Parquet archive (tiered storage) and its settings")

#: A tiered broker that uploads and applies local retention promptly.
TIERING_ENV = {
    "SILT_TIERING__UPLOAD_CHECK_INTERVAL_MS": "100",
    "SILT_LOG__RETENTION_CHECK_INTERVAL_MS": "200",
    # Small row groups, so that reads and statistics span several per file.
    "SILT_TIERING__ROW_GROUP_BYTES": "65536",
}
#: Small segments, removed from local disk as soon as they are archived.
TOPIC_CONFIG = {"segment.bytes": "65536", "local.retention.ms": "0"}
#: Timestamp of record i: BASE_TS + i (ms), so time lookups are exact.
BASE_TS = 1_700_000_000_000
ARCHIVE_TIMEOUT_S = 120.0
#: The environment of `silt replay`: SILT_<SECTION>__<KEY> variables are
#: configuration to it, so the suite's own settings are left out.
TOOL_ENV = {k: v for k, v in os.environ.items() if not k.startswith("SILT_")}
FILE_RE = re.compile(r"^topic=(?P<topic>[A-Za-z0-9._-]+)/partition=(?P<partition>\d+)/"
                     r"(?P<base>\d{20})-(?P<last>\d{20})\.parquet$")


def record(i: int) -> dict:
    return {
        "id": i,
        "key": f"user-{i % 97}".encode(),
        "value": json.dumps({"n": i, "user": i % 97, "pad": "x" * (i % 50)}).encode(),
        # Duplicate header keys and a null value: replay must keep them exactly.
        "headers": [("seq", str(i).encode()), ("dup", b"a"), ("dup", b"b"), ("none", None)],
        "timestamp": BASE_TS + i,
    }


def produce_dataset(broker, topic: str, ids, partitions: int, make=record) -> dict[int, dict]:
    """Produces records `make(i)` for `ids` (`record` by default) spread over
    partitions by id; returns {id: (partition, offset)} from the delivery reports."""
    # Bounded batches: one huge batch per partition would fill a segment alone.
    p = Producer(confluent_conf(broker, acks="all", **{"linger.ms": 20, "compression.type": "lz4",
                                                       "batch.size": 16384, "message.timeout.ms": 120000}))
    tracker = DeliveryTracker()
    recs = []
    for i in ids:
        r = make(i)
        r["partition"] = i % partitions
        recs.append(r)
    produce_all(p, topic, recs, tracker)
    assert not tracker.failed, f"deliveries failed: {list(tracker.failed.items())[:5]}"
    return tracker.ok


def metric_sum(broker, name: str, **labels) -> float:
    _, _, body = broker.http_get("/metrics")
    total = 0.0
    for sample, label_text, value in parse_prometheus(body.decode()):
        if sample == name and all(f'{k}="{v}"' in label_text for k, v in labels.items()):
            total += value
    return total


def local_segments(data_dir: Path, topic: str, partition: int) -> list[Path]:
    return sorted((data_dir / f"{topic}-{partition}").glob("*.log"))


def manifest_path(root: Path, topic: str, partition: int) -> Path:
    """Where the manifest lives: apart from the data, so that a topic's folder
    holds Parquet files only (docs/archive.md, "Layout")."""
    return root / "_silt" / f"topic={topic}" / f"partition={partition}" / "manifest.json"


def legacy_manifest_path(root: Path, topic: str, partition: int) -> Path:
    """Where the first layout kept it: inside the partition's data folder."""
    return root / f"topic={topic}" / f"partition={partition}" / "manifest.json"


def read_manifest(root: Path, topic: str, partition: int) -> dict | None:
    path = manifest_path(root, topic, partition)
    return json.loads(path.read_text()) if path.is_file() else None


def assert_topic_folder_is_parquet_only(root: Path, topic: str, manifests: dict[int, dict]):
    """Everything under topic=<topic>/ is a file some manifest names: no
    manifest, temporary or staged upload that an engine would try to read."""
    folder = root / f"topic={topic}"
    found = sorted(str(f.relative_to(root)) for f in folder.rglob("*") if not f.is_dir())
    named = sorted(f"topic={topic}/partition={p}/{s['file']}" for p, m in manifests.items() for s in m["segments"])
    assert found == named, f"unexpected files: {sorted(set(found) - set(named))[:5]}, missing: {sorted(set(named) - set(found))[:5]}"
    assert all(FILE_RE.match(f) for f in found), found[:5]


def expected_rows(placed: dict, ids: list[int]) -> dict[tuple[int, int], tuple[bytes, bytes]]:
    """{(partition, offset): (key, value)} of the records `ids`."""
    return {placed[i]: (record(i)["key"], record(i)["value"]) for i in ids}


@pytest.fixture
def spark(tmp_path):
    """A local SparkSession (one core, no UI, loopback only) whose JVM is
    ended with the test: pyspark starts it with a stdin pipe and it exits on EOF."""
    from pyspark import SparkContext
    from pyspark.sql import SparkSession
    session = (SparkSession.builder.master("local[1]").appName("silt-tests")
               .config("spark.ui.enabled", "false").config("spark.ui.showConsoleProgress", "false")
               .config("spark.sql.shuffle.partitions", "2")
               # A short run: the C1 compiler alone and no adaptive re-planning
               # cut the queries from about 30 s to 10 s on a loaded 2-core machine.
               .config("spark.driver.extraJavaOptions", "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC")
               .config("spark.sql.adaptive.enabled", "false")
               .config("spark.driver.bindAddress", "127.0.0.1").config("spark.driver.host", "127.0.0.1")
               .config("spark.local.dir", str(tmp_path / "spark"))
               .config("spark.sql.warehouse.dir", str(tmp_path / "spark-warehouse"))
               .getOrCreate())
    session.sparkContext.setLogLevel("ERROR")
    gateway = SparkContext._gateway
    try:
        yield session
    finally:
        session.stop()
        gateway.shutdown()
        gateway.proc.stdin.close()
        try:
            gateway.proc.wait(30)
        except subprocess.TimeoutExpired:
            gateway.proc.kill()
            gateway.proc.wait(10)
        SparkContext._gateway = SparkContext._jvm = None


#: The columns an engine's rows are compared on (`partition` comes from the path).
ROW_COLUMNS = ["partition", "offset", "key", "value"]


def assert_rows(engine: str, rows, want: dict[tuple[int, int], tuple[bytes, bytes]]):
    """`rows` (partition, offset, key, value) are exactly `want`: the count,
    no duplicate, every record."""
    got = [(int(p), o, bytes(k), bytes(v)) for p, o, k, v in rows]
    assert len(got) == len(want), f"{engine} read {len(got)} rows, want {len(want)}"
    by_offset = {(p, o): (k, v) for p, o, k, v in got}
    assert len(by_offset) == len(got), f"{engine}: duplicate (partition, offset) rows"
    wrong = sorted(po for po in want if by_offset.get(po) != want[po])
    assert not wrong, f"{engine}: {len(wrong)} records differ or are missing, first {wrong[:3]}"


def assert_engines_read_topic_folder(folder: Path, want: dict[tuple[int, int], tuple[bytes, bytes]], spark):
    """Each engine is given the topic's folder, as a user would point it at a
    table (no glob picking the Parquet files out), and must see exactly the
    archived records: count, then every (partition, offset, key, value)."""
    def check(engine: str, rows):
        assert_rows(f"{engine} on {folder}", rows, want)

    columns = ROW_COLUMNS
    import pyarrow.dataset as ds
    table = ds.dataset(str(folder), format="parquet", partitioning="hive").to_table(columns=columns)
    check("pyarrow", zip(*(table[c].to_pylist() for c in columns)))

    import polars as pl
    check("Polars", pl.scan_parquet(f"{folder}/").select(columns).collect().rows())

    import duckdb
    con = duckdb.connect()
    for source in (f"{folder}/**", str(folder)):
        check(f"DuckDB read_parquet('{source}')",
              con.execute(f"SELECT partition, \"offset\", key, value FROM read_parquet('{source}')").fetchall())

    import datafusion
    import pyarrow as pa
    ctx = datafusion.SessionContext()
    ctx.register_parquet("topic_table", str(folder), table_partition_cols=[("partition", pa.int32())])
    out = ctx.sql('SELECT "partition", "offset", key, value FROM topic_table').to_pydict()
    check("DataFusion", zip(*(out[c] for c in columns)))

    # Spark, with the query of docs/archive.md ("Spark") as well.
    df = spark.read.parquet(str(folder))
    check("Spark", df.select(*columns).collect())
    sums = {int(r["partition"]): r["sum(n)"] for r in
            df.selectExpr("partition", "get_json_object(cast(value as string), '$.n') as n")
              .groupBy("partition").agg({"n": "sum"}).collect()}
    want_sums: dict[int, int] = {}
    for (p, _), (_, value) in want.items():
        want_sums[p] = want_sums.get(p, 0) + json.loads(value)["n"]
    assert sums == want_sums, f"Spark: sums per partition {sums}, want {want_sums}"


def wait_until_offloaded(broker, topic: str, partitions: int, manifest_of) -> dict[int, dict]:
    """Waits until every sealed segment is archived and gone from local disk
    (one active segment left per partition); returns the manifests."""
    def offloaded():
        manifests = {}
        for p in range(partitions):
            m = manifest_of(p)
            if not m or not m["segments"] or len(local_segments(broker.data_dir, topic, p)) != 1:
                return None
            first_local = int(local_segments(broker.data_dir, topic, p)[0].stem)
            if m["segments"][-1]["last_offset"] + 1 != first_local:
                return None
            manifests[p] = m
        return manifests
    return wait_until(offloaded, ARCHIVE_TIMEOUT_S, f"every sealed segment of {topic} archived and offloaded",
                      interval_s=0.2, diagnostics=broker.log_tail)


def archived_ids(placed: dict, manifests: dict[int, dict]) -> list[int]:
    """The record ids whose offsets lie in the archive."""
    ends = {p: m["segments"][-1]["last_offset"] + 1 for p, m in manifests.items()}
    starts = {p: m["segments"][0]["base_offset"] for p, m in manifests.items()}
    return sorted(i for i, (p, o) in placed.items() if starts[p] <= o < ends[p])


def assert_consumed_exactly(broker, topic: str, placed: dict, partitions: int):
    """Consumes every partition from offset 0 with confluent-kafka and checks
    every record field against what was produced."""
    ends = {p: 1 + max(o for (pp, o) in placed.values() if pp == p) for p in range(partitions)}
    got = consume_partitions(broker, topic, ends, timeout_s=180)
    by_offset = {(p, o): i for i, (p, o) in placed.items()}
    for p in range(partitions):
        offsets = [m.offset() for m in got[p]]
        assert offsets == list(range(ends[p])), f"partition {p}: offsets not contiguous from 0"
        for m in got[p]:
            want = record(by_offset[(p, m.offset())])
            assert (m.key(), m.value(), m.timestamp()[1]) == (want["key"], want["value"], want["timestamp"]), \
                f"record {p}@{m.offset()} differs"
            assert [(k, v) for k, v in m.headers()] == want["headers"], f"headers of {p}@{m.offset()} differ"


# ---------------------------------------------------------------------------
# The embedded default: file:// archive beside the data directory
# ---------------------------------------------------------------------------

@pytest.fixture
def tiered(broker_factory):
    return broker_factory(env=dict(TIERING_ENV))


def test_file_archive_layout_queries_replay_and_time_lookup(tiered, tmp_path, silt_bin, spark):
    broker, topic, partitions, n = tiered, "orders", 3, 24_000
    create_topic(broker, topic, partitions, config=TOPIC_CONFIG)
    placed = produce_dataset(broker, topic, range(n), partitions)
    # The embedded default puts the archive beside the data directory.
    root = broker.data_dir.with_name(broker.data_dir.name + "-archive")
    manifests = wait_until_offloaded(broker, topic, partitions, lambda p: read_manifest(root, topic, p))

    # Layout: a Hive-partitioned dataset; exactly the files the manifests
    # name, and nothing else in the topic's folder.
    assert_topic_folder_is_parquet_only(root, topic, manifests)
    assert sorted(root.rglob("*.parquet")) == sorted((root / f"topic={topic}").rglob("*.parquet")), "no Parquet elsewhere"
    for p, m in manifests.items():
        segs = m["segments"]
        assert segs[0]["base_offset"] == 0
        assert all(b["base_offset"] == a["last_offset"] + 1 for a, b in zip(segs, segs[1:])), "contiguous"
        assert all(s["rows"] == s["last_offset"] - s["base_offset"] + 1 for s in segs)
        assert all(s["min_timestamp"] <= s["max_timestamp"] for s in segs)

    ids = archived_ids(placed, manifests)
    want_count, want_keys, want_sum = len(ids), len({i % 97 for i in ids}), sum(ids)
    assert want_count > n // 2, "most records are archived"
    glob = str(root / "**" / "*.parquet")

    import duckdb
    con = duckdb.connect()
    row = con.execute(
        "SELECT count(*), count(DISTINCT key), sum(CAST(json_extract(decode(value), '$.n') AS BIGINT)), "
        "min(timestamp), count(DISTINCT partition) "
        f"FROM read_parquet('{glob}', hive_partitioning = true) WHERE topic = '{topic}'").fetchone()
    assert row[:3] == (want_count, want_keys, want_sum), row
    assert row[4] == partitions
    per_partition = dict(con.execute(
        f"SELECT partition, max(\"offset\") FROM read_parquet('{glob}', hive_partitioning = true) "
        "GROUP BY partition").fetchall())
    assert {int(p): o for p, o in per_partition.items()} == \
        {p: m["segments"][-1]["last_offset"] for p, m in manifests.items()}
    headers = con.execute(
        f"SELECT headers FROM read_parquet('{glob}', hive_partitioning = true) WHERE partition = 0 "
        "AND \"offset\" = 0").fetchone()[0]
    assert [(h["key"], h["value"]) for h in headers] == [("seq", b"0"), ("dup", b"a"), ("dup", b"b"), ("none", None)]

    import datafusion
    import pyarrow as pa
    ctx = datafusion.SessionContext()
    ctx.register_parquet("archive", str(root), table_partition_cols=[("topic", pa.string()), ("partition", pa.int32())],
                         file_extension=".parquet")
    df = ctx.sql(
        "SELECT count(*) AS c, count(DISTINCT key) AS k, "
        "sum(CAST(regexp_replace(CAST(value AS VARCHAR), '^.*\"n\": ([0-9]+).*$', '\\1') AS BIGINT)) AS s "
        f"FROM archive WHERE topic = '{topic}'").to_pydict()
    assert (df["c"][0], df["k"][0], df["s"][0]) == (want_count, want_keys, want_sum), df

    import polars as pl
    out = (pl.scan_parquet(glob, hive_partitioning=True)
           .filter(pl.col("topic") == topic)
           .select(pl.len().alias("c"), pl.col("key").n_unique().alias("k"),
                   pl.col("value").cast(pl.String).str.json_path_match("$.n").cast(pl.Int64).sum().alias("s"))
           .collect())
    assert (out["c"][0], out["k"][0], out["s"][0]) == (want_count, want_keys, want_sum), out

    # Every engine reads the topic's folder as a table.
    started = time.monotonic()
    assert_engines_read_topic_folder(root / f"topic={topic}", expected_rows(placed, ids), spark)
    print(f"the engines read the topic's folder in {time.monotonic() - started:.1f} s")
    # The whole root reads as one table too, where the engine skips `_silt/`
    # by the Hive/Spark convention (Polars does not: docs/archive.md).
    import pyarrow.dataset as ds
    whole = ds.dataset(str(root), format="parquet", partitioning="hive")
    assert whole.count_rows(filter=ds.field("topic") == topic) == want_count
    assert spark.read.parquet(str(root)).where(f"topic = '{topic}'").count() == want_count

    # Consumers at offset 0 replay the whole history through the Kafka protocol.
    assert_consumed_exactly(broker, topic, placed, partitions)
    assert metric_sum(broker, "silt_tiering_remote_fetch_bytes_total", topic=topic) > 0
    assert metric_sum(broker, "silt_tiering_uploaded_segments_total", topic=topic) == sum(len(m["segments"]) for m in manifests.values())
    assert metric_sum(broker, "silt_log_archived_size_bytes", topic=topic) > 0
    kcat = subprocess.run(["kcat", "-C", "-b", broker.bootstrap, "-t", topic, "-p", "1", "-o", "beginning", "-e",
                           "-q", "-f", "%o %k %s\n"], capture_output=True, timeout=120, check=True)
    lines = kcat.stdout.decode().splitlines()
    want1 = sorted((o, i) for i, (p, o) in placed.items() if p == 1)
    assert len(lines) == len(want1)
    for line, (o, i) in zip(lines, want1):
        r = record(i)
        assert line == f"{o} {r['key'].decode()} {r['value'].decode()}", line

    # ListOffsets by time lands inside the archive, on the exact record.
    target = ids[len(ids) // 3]
    p, o = placed[target]
    first_local = int(local_segments(broker.data_dir, topic, p)[0].stem)
    assert o < first_local, "the record is only in the archive"
    from confluent_kafka import Consumer
    c = Consumer(confluent_conf(broker, **{"group.id": "silt-tests-assign-only"}))
    try:
        found = c.offsets_for_times([TopicPartition(topic, p, BASE_TS + target)], timeout=30)
        assert found[0].offset == o, (found[0], o)
        low, _ = c.get_watermark_offsets(TopicPartition(topic, p), timeout=10, cached=False)
        assert low == 0, "the log start offset includes the archive"
    finally:
        c.close()

    # silt replay reads the archive directly: stdout, a time window, another topic.
    url = f"file://{root}"
    out = subprocess.run([str(silt_bin), "replay", "--topic", topic, "--archive-url", url, "--partitions", "2"],
                         capture_output=True, timeout=120, check=True, env=TOOL_ENV)
    rows = [json.loads(line) for line in out.stdout.decode().splitlines()]
    want2 = sorted((o, i) for i, (p, o) in placed.items() if p == 2 and o <= manifests[2]["segments"][-1]["last_offset"])
    assert [(r["offset"], r["value"]) for r in rows] == [(o, record(i)["value"].decode()) for o, i in want2]
    assert rows[0]["headers"] == [{"key": "seq", "value": str(want2[0][1])}, {"key": "dup", "value": "a"},
                                  {"key": "dup", "value": "b"}, {"key": "none", "value": None}]
    lo, hi = want2[10][1], want2[20][1]
    window = subprocess.run([str(silt_bin), "replay", "--topic", topic, "--archive-url", url, "--partitions", "2",
                             "--from-time", str(BASE_TS + lo), "--to-time", str(BASE_TS + hi)],
                            capture_output=True, timeout=120, check=True, env=TOOL_ENV)
    assert [json.loads(x)["offset"] for x in window.stdout.decode().splitlines()] == [o for o, _ in want2[10:21]]
    create_topic(broker, "orders-replayed", 3)
    into = subprocess.run([str(silt_bin), "replay", "--topic", topic, "--archive-url", url, "--to-topic",
                           "orders-replayed", "--bootstrap-server", broker.bootstrap, "--keep-partitions"],
                          capture_output=True, timeout=180, env=TOOL_ENV)
    assert into.returncode == 0, into.stderr.decode()[-2000:]
    assert f"{len(ids)} records replayed" in into.stderr.decode()
    ends = {p: sum(1 for i in ids if placed[i][0] == p) for p in range(partitions)}
    replayed = consume_partitions(broker, "orders-replayed", ends)
    assert sorted(m.value() for msgs in replayed.values() for m in msgs) == sorted(record(i)["value"] for i in ids)
    bad = subprocess.run([str(silt_bin), "replay", "--topic", "no-such-topic", "--archive-url", url],
                         capture_output=True, timeout=60, env=TOOL_ENV)
    assert bad.returncode != 0 and b"no-such-topic" in bad.stderr


#: Records whose key is rare: they sit in a few row groups only.
NEEDLES = {**{i: b"needle-a" for i in range(3000, 3006)}, **{i: b"needle-b" for i in range(3006, 3012)}}


def needle_record(i: int) -> dict:
    r = record(i)
    r["key"] = NEEDLES.get(i, r["key"])
    return r


def replay_json(silt_bin, *args) -> tuple[list[dict], dict]:
    """Runs `silt replay ... --stats`; returns its records and what it read."""
    out = subprocess.run([str(silt_bin), "replay", *args, "--stats"], capture_output=True, timeout=120, env=TOOL_ENV)
    assert out.returncode == 0, out.stderr.decode()[-2000:]
    stats = [line for line in out.stderr.decode().splitlines() if line.startswith("silt replay: stats ")]
    assert len(stats) == 1, out.stderr.decode()[-2000:]
    return [json.loads(x) for x in out.stdout.decode().splitlines()], json.loads(stats[0].split(" stats ", 1)[1])


def test_replay_by_key_reads_only_the_row_groups_that_can_hold_it(broker_factory, silt_bin):
    # Row groups of about one (lz4-compressed) batch each: several per archived file.
    broker = broker_factory(env={**TIERING_ENV, "SILT_TIERING__ROW_GROUP_BYTES": "4096"})
    topic, partitions, n = "lookups", 2, 8_000
    create_topic(broker, topic, partitions, config=TOPIC_CONFIG)
    placed = produce_dataset(broker, topic, range(n), partitions, make=needle_record)
    root = broker.data_dir.with_name(broker.data_dir.name + "-archive")
    manifests = wait_until_offloaded(broker, topic, partitions, lambda p: read_manifest(root, topic, p))
    ids = archived_ids(placed, manifests)
    assert set(NEEDLES) <= set(ids), "the needles are archived"
    url = f"file://{root}"

    def rows_of(rows):
        return sorted((r["partition"], r["offset"], r["key"], r["value"]) for r in rows)

    def want(selected):
        return sorted((*placed[i], needle_record(i)["key"].decode(), needle_record(i)["value"].decode()) for i in selected)

    full_rows, full = replay_json(silt_bin, "--topic", topic, "--archive-url", url)
    assert rows_of(full_rows) == want(ids)
    print(f"full scan: {full}")
    assert full["row_groups_read"] == full["row_groups"] >= full["files"], full
    assert full["records_scanned"] == len(ids) and full["files_opened"] == full["files"], full

    # One key: exactly its records, from a fraction of the row groups and bytes.
    rows, by_key = replay_json(silt_bin, "--topic", topic, "--archive-url", url, "--key", "needle-a")
    assert rows_of(rows) == want(i for i, k in NEEDLES.items() if k == b"needle-a")
    # "needle-a" sorts before every "user-<n>": the key column's min/max rule most row groups out.
    assert by_key["row_groups_skipped_by_stats"] > 0, by_key
    assert by_key["row_groups_read"] <= 4 and by_key["row_groups_read"] < full["row_groups_read"] // 4, (by_key, full)
    # Every file's footer is still read (the manifest knows nothing of keys);
    # on these small files a footer read is most of the file.
    assert by_key["page_bytes"] < full["page_bytes"] // 4, (by_key, full)
    assert by_key["bytes_read"] < full["bytes_read"], (by_key, full)
    # A key inside every row group's min/max but in none of them: only the
    # bloom filters (1% false positives) rule the row groups out.
    rows, absent = replay_json(silt_bin, "--topic", topic, "--archive-url", url, "--key", "user-1000")
    assert rows == [] and absent["row_groups_read"] <= 2, absent
    assert absent["row_groups_skipped_by_bloom"] >= absent["row_groups"] - 2 - absent["row_groups_skipped_by_stats"], absent
    assert absent["bloom_filters_read"] >= absent["row_groups_skipped_by_bloom"] > full["row_groups"] // 2, absent

    # A key prefix prunes by the key column's min/max.
    rows, by_prefix = replay_json(silt_bin, "--topic", topic, "--archive-url", url, "--key-prefix", "needle-")
    assert rows_of(rows) == want(NEEDLES)
    assert by_prefix["row_groups_skipped_by_stats"] > 0 and by_prefix["row_groups_read"] < full["row_groups_read"] // 4, by_prefix

    # A time window prunes files by the manifest and row groups by statistics.
    lo, hi = 3000, 3099
    rows, window = replay_json(silt_bin, "--topic", topic, "--archive-url", url,
                               "--from-time", str(BASE_TS + lo), "--to-time", str(BASE_TS + hi))
    assert rows_of(rows) == want(range(lo, hi + 1))
    assert window["files_opened"] < window["files"] and window["row_groups_read"] < full["row_groups_read"] // 4, window
    print(f"full scan {full}; --key {by_key}; --key-prefix {by_prefix}; time window {window}")


def test_a_damaged_archive_file_fails_only_that_fetch(tiered):
    broker, topic = tiered, "damaged"
    create_topic(broker, topic, 2, config=TOPIC_CONFIG)
    # Enough records for several archived segments per partition (lz4 shrinks them a lot).
    placed = produce_dataset(broker, topic, range(20_000), 2)
    root = broker.data_dir.with_name(broker.data_dir.name + "-archive")
    manifests = wait_until_offloaded(broker, topic, 2, lambda p: read_manifest(root, topic, p))
    assert len(manifests[0]["segments"]) >= 3, manifests[0]["segments"]
    victim = root / f"topic={topic}" / "partition=0" / manifests[0]["segments"][0]["file"]
    victim.write_bytes(b"PAR1 this is not a parquet file PAR1")
    with RawConnection(broker.kafka_addr) as conn:
        damaged = raw_fetch(conn, topic, 0, 0)
        assert damaged.error_code == -1, f"UNKNOWN_SERVER_ERROR expected, got {damaged.error_code}"
        healthy = raw_fetch(conn, topic, 1, 0)
        assert healthy.error_code == 0 and healthy.records, "the other partition still replays"
        second = manifests[0]["segments"][1]["base_offset"]
        assert raw_fetch(conn, topic, 0, second).error_code == 0, "the rest of the partition still serves"
    assert "archive read failed" in broker.log_tail(200)
    broker.assert_alive("after a damaged archive file")
    # The local tail is untouched.
    ends = {1: 1 + max(o for p, o in placed.values() if p == 1)}
    assert len(consume_partitions(broker, topic, ends)[1]) == ends[1]


def test_kill9_during_uploads_leaves_no_duplicates_and_no_gaps(broker_factory):
    env = dict(TIERING_ENV, SILT_TIERING__UPLOAD_CONCURRENCY="1", SILT_TIERING__ZSTD_LEVEL="19")
    broker = broker_factory(env=env)
    topic, partitions = "crashy", 2
    create_topic(broker, topic, partitions, config={"segment.bytes": "32768", "local.retention.ms": "0"})
    placed = produce_dataset(broker, topic, range(30_000), partitions)
    root = broker.data_dir.with_name(broker.data_dir.name + "-archive")

    def some_uploaded():
        ms = [read_manifest(root, topic, p) for p in range(partitions)]
        return all(m and m["segments"] for m in ms) and any(len(local_segments(broker.data_dir, topic, p)) > 3 for p in range(partitions))
    wait_until(some_uploaded, ARCHIVE_TIMEOUT_S, "uploads under way, with more still waiting",
               interval_s=0.02, diagnostics=broker.log_tail)
    broker.kill9()
    broker.restart()
    manifests = wait_until_offloaded(broker, topic, partitions, lambda p: read_manifest(root, topic, p))
    for p, m in manifests.items():
        segs = m["segments"]
        assert segs[0]["base_offset"] == 0
        assert all(b["base_offset"] == a["last_offset"] + 1 for a, b in zip(segs, segs[1:])), f"gap in partition {p}"
    # No unlisted, duplicate or half-written file is left among the data.
    assert_topic_folder_is_parquet_only(root, topic, manifests)
    assert_consumed_exactly(broker, topic, placed, partitions)


def test_an_archive_of_the_first_layout_is_moved_on_restart_and_replays(tiered):
    """The first layout kept each manifest.json inside the partition's data
    folder. A broker restarted on such an archive moves every manifest out
    (partition 0: the old one alone; partition 1: both, as a crash in the
    middle of the move leaves them) and loses or duplicates nothing."""
    broker, topic, partitions = tiered, "legacy", 2
    create_topic(broker, topic, partitions, config=TOPIC_CONFIG)
    placed = produce_dataset(broker, topic, range(12_000), partitions)
    root = broker.data_dir.with_name(broker.data_dir.name + "-archive")
    manifests = wait_until_offloaded(broker, topic, partitions, lambda p: read_manifest(root, topic, p))
    assert all(len(m["segments"]) >= 2 for m in manifests.values()), "several segments per partition"
    assert broker.stop() == 0
    # The same archive at the first layout (the manifest's format did not change).
    for p in range(partitions):
        current, legacy = manifest_path(root, topic, p), legacy_manifest_path(root, topic, p)
        legacy.write_bytes(current.read_bytes())
        if p == 0:
            current.unlink()
    broker.restart()

    def moved():
        return all(manifest_path(root, topic, p).is_file() and not legacy_manifest_path(root, topic, p).exists()
                   for p in range(partitions))
    wait_until(moved, ARCHIVE_TIMEOUT_S, "every manifest moved out of the topic's folder", diagnostics=broker.log_tail)
    after = {p: read_manifest(root, topic, p) for p in range(partitions)}
    assert {p: m["segments"] for p, m in after.items()} == {p: m["segments"] for p, m in manifests.items()}, \
        "the moved manifests list the same segments"
    assert_topic_folder_is_parquet_only(root, topic, after)
    assert_consumed_exactly(broker, topic, placed, partitions)


def test_invalid_archive_url_is_refused_at_startup(silt_bin, tmp_path):
    env = dict(TOOL_ENV, SILT_STORAGE__DATA_DIR=str(tmp_path / "d"), SILT_TIERING__ARCHIVE_URL="ftp://example/x",
               SILT_KAFKA__LISTEN="127.0.0.1:0", SILT_HTTP__LISTEN="127.0.0.1:0")
    out = subprocess.run([str(silt_bin), "broker"], env=env, capture_output=True, timeout=30)
    assert out.returncode == 2
    assert b"tiering.archive_url" in out.stderr and b"ftp://example/x" in out.stderr


# ---------------------------------------------------------------------------
# A real S3-compatible server (moto), behind a proxy the test can cut
# ---------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Outage:
    """A TCP proxy in front of the S3 server. `cut()` closes the listener and
    every connection (the broker sees connection refused / reset), `restore()`
    listens again on the same port. The S3 server keeps its state."""

    def __init__(self, upstream_port: int):
        self.upstream = ("127.0.0.1", upstream_port)
        self.port = free_port()
        self.listener = None
        self.conns: list[socket.socket] = []
        self.lock = threading.Lock()
        self.restore()

    def restore(self):
        ls = socket.socket()
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ls.bind(("127.0.0.1", self.port))
        ls.listen(64)
        self.listener = ls
        threading.Thread(target=self._accept, args=(ls,), daemon=True).start()

    def _accept(self, ls):
        while True:
            try:
                client, _ = ls.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.upstream, timeout=10)
            except OSError:
                client.close()
                continue
            with self.lock:
                self.conns += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src, dst):
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def cut(self):
        self.listener.close()
        with self.lock:
            for s in self.conns:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                    s.close()
                except OSError:
                    pass
            self.conns.clear()


@pytest.fixture
def s3_server(tmp_path):
    port = free_port()
    moto = Path(sys.executable).with_name("moto_server")
    assert moto.is_file(), f"moto_server missing from the venv ({moto}): tests/run installs it"
    log = open(tmp_path / "moto.log", "wb")
    proc = subprocess.Popen([str(moto), "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=subprocess.STDOUT)
    try:
        import boto3
        s3 = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}", region_name="us-east-1",
                          aws_access_key_id="silt", aws_secret_access_key="silt-secret")
        wait_until(lambda: s3.create_bucket(Bucket="silt-archive"), 30, "moto_server to accept requests",
                   interval_s=0.1)
        yield port, s3
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        log.close()


def test_s3_archive_survives_an_outage_and_serves_history(broker_factory, s3_server):
    port, s3 = s3_server
    proxy = Outage(port)
    env = dict(TIERING_ENV,
               SILT_TIERING__ARCHIVE_URL="s3://silt-archive/cluster-a",
               SILT_TIERING__S3_ENDPOINT=f"http://127.0.0.1:{proxy.port}",
               SILT_TIERING__S3_ALLOW_HTTP="true",
               SILT_TIERING__UPLOAD_RETRY_BACKOFF_MAX_MS="1000",
               AWS_ACCESS_KEY_ID="silt", AWS_SECRET_ACCESS_KEY="silt-secret", AWS_REGION="us-east-1")
    broker = broker_factory(env=env)
    topic, partitions = "events", 2
    create_topic(broker, topic, partitions, config=TOPIC_CONFIG)

    def manifest_of(p):
        try:
            body = s3.get_object(Bucket="silt-archive", Key=f"cluster-a/_silt/topic={topic}/partition={p}/manifest.json")["Body"]
            return json.loads(body.read())
        except s3.exceptions.NoSuchKey:
            return None

    placed = produce_dataset(broker, topic, range(8_000), partitions)
    wait_until_offloaded(broker, topic, partitions, manifest_of)
    before = {p: len(manifest_of(p)["segments"]) for p in range(partitions)}

    # The store goes away: produce and consume of the hot tier keep working,
    # uploads fail and retry, local segments stay until archived.
    proxy.cut()
    placed.update(produce_dataset(broker, topic, range(8_000, 16_000), partitions))
    wait_until(lambda: metric_sum(broker, "silt_tiering_upload_failures_total", topic=topic) > 0, 60,
               "upload failures to be counted", diagnostics=broker.log_tail)
    wait_until(lambda: metric_sum(broker, "silt_tiering_lag_segments", topic=topic) > 0, 60,
               "the archive lag to show the waiting segments")
    assert all(len(local_segments(broker.data_dir, topic, p)) > 1 for p in range(partitions)), \
        "unarchived segments are kept locally"
    tail = {p: 1 + max(o for (pp, o) in placed.values() if pp == p) for p in range(partitions)}
    recent = {p: tail[p] - 10 for p in range(partitions)}
    assert all(len(v) == 10 for v in consume_partitions(broker, topic, tail, recent).values())

    # The store returns: uploads resume and catch up.
    proxy.restore()
    manifests = wait_until_offloaded(broker, topic, partitions, manifest_of)
    assert all(len(manifests[p]["segments"]) > before[p] for p in range(partitions))
    wait_until(lambda: metric_sum(broker, "silt_tiering_lag_segments", topic=topic) == 0, 60, "the lag to drain")
    listed = [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket="silt-archive")
              for o in page.get("Contents", [])]
    parquet = sorted(k for k in listed if k.endswith(".parquet"))
    assert all(FILE_RE.match(k.removeprefix("cluster-a/")) for k in parquet), parquet[:3]
    assert len(parquet) == sum(len(m["segments"]) for m in manifests.values())
    # The topic's folder holds the Parquet files only; the manifests are apart.
    assert sorted(k for k in listed if k.startswith(f"cluster-a/topic={topic}/")) == parquet
    assert sorted(k for k in listed if k not in parquet) == \
        [f"cluster-a/_silt/topic={topic}/partition={p}/manifest.json" for p in range(partitions)]

    # History replays from S3, and Polars queries the bucket in place.
    assert_consumed_exactly(broker, topic, placed, partitions)
    import polars as pl
    ids = archived_ids(placed, manifests)
    storage = {"aws_endpoint_url": f"http://127.0.0.1:{port}", "aws_allow_http": "true", "aws_region": "us-east-1",
               "aws_access_key_id": "silt", "aws_secret_access_key": "silt-secret"}
    out = (pl.scan_parquet("s3://silt-archive/cluster-a/**/*.parquet", hive_partitioning=True, storage_options=storage)
           .select(pl.len().alias("c"), pl.col("value").cast(pl.String).str.json_path_match("$.n").cast(pl.Int64).sum().alias("s"))
           .collect())
    assert (out["c"][0], out["s"][0]) == (len(ids), sum(ids))
    # And the topic's folder in the bucket, as a table (DuckDB would need its
    # httpfs extension, downloaded on demand, and Spark its s3a connector).
    want = expected_rows(placed, ids)
    folder = f"silt-archive/cluster-a/topic={topic}"
    assert_rows("Polars on S3", pl.scan_parquet(f"s3://{folder}/", storage_options=storage).select(ROW_COLUMNS).collect().rows(), want)
    import pyarrow.dataset as ds
    import pyarrow.fs
    fs = pyarrow.fs.S3FileSystem(endpoint_override=f"127.0.0.1:{port}", scheme="http", region="us-east-1",
                                 access_key="silt", secret_key="silt-secret")
    table = ds.dataset(folder, filesystem=fs, format="parquet", partitioning="hive").to_table(columns=ROW_COLUMNS)
    assert_rows("pyarrow on S3", zip(*(table[c].to_pylist() for c in ROW_COLUMNS)), want)
    proxy.cut()
