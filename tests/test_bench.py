"""Keeps the side-by-side benchmark working: `tests/bench/run --quick` must
run to the end against the freshly built broker and print its table and
JSON. No figure is checked against a threshold (machines are noisy)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from silt_harness import REPO_ROOT

pytestmark = pytest.mark.silt_only(reason="Silt's benchmark script")

#: The quick run takes under a minute; below pytest.ini's 300 s per test.
BENCH_TIMEOUT_S = 280


def test_quick_benchmark_prints_every_section(silt_bin, tmp_path):
    proc = subprocess.run(
        [sys.executable, str(REPO_ROOT / "tests" / "bench" / "run"), "--quick", "--silt-bin", str(silt_bin),
         "--work-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=BENCH_TIMEOUT_S,
        env={k: v for k, v in os.environ.items() if not k.startswith("SILT_")},
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = proc.stdout
    assert "| figure | Silt | unit |" in out
    for figure in ("limit: loopback TCP", "limit: disk write, fdatasync per 1 MiB", "produce 1024B-acks1-p6",
                   "consume 1024B-acks1-p6 (page cache)", "raw produce 1024B-acks1-p6", "raw consume 100B-acks1-p6",
                   "broker CPU-s per GiB produced, 1024B records", "broker CPU-s per GiB consumed, raw 1024B",
                   "broker RSS idle", "broker RSS peak under load", "produce 1024B acks=all p1, flush.messages=1",
                   "produce latency p99 at 50% of max rate", "end-to-end latency p99",
                   "tiering: segment encode to Parquet", "tiering: replay from the archive",
                   "scale: startup after clean shutdown to /ready"):
        assert figure in out, f"{figure!r} missing from the table:\n{out[:4000]}"
    assert "left out: --quick runs without the peers" in out, "the quick run must say that it left the peers out"
    results = json.loads(re.search(r"```json\n(.*)\n```", out, re.S).group(1))
    assert results["peers"] == {}
    silt = results["silt"]
    assert set(silt["cases"]) == {f"{size}B-acks{acks}-p{p}" for size in (100, 1024) for acks in ("1", "all")
                                  for p in (1, 6)} | {"1024B-acks1-p6-2producers"}
    latency = silt["latency_at_half_max"]
    assert latency["linger_ms"] == 1 and len(latency["p99_runs_ms"]) == 3
    assert latency["latency"]["p99_ms"] == sorted(latency["p99_runs_ms"])[1], "the median run is reported"
    for case in [*silt["cases"].values(), *silt["raw"].values()]:
        assert case["produce"]["records"] == case["consume"]["records"] > 0
        assert case["produce"]["errors"] == 0
        assert case["produce"]["broker_cpu_s"] >= 0 and case["consume"]["broker_cpu_s"] >= 0
    assert set(silt["raw"]) == {"1024B-acks1-p6", "100B-acks1-p6"}
    assert sum(case["produce"]["broker_cpu_s"] for case in silt["cases"].values()) > 0, "the broker's CPU is read"
    assert 0 < silt["rss_idle_mib"] <= silt["rss_load_peak_mib"]
    assert silt["durable"]["records"] > 0
    rows = {row["figure"]: row for row in results["rows"]}
    assert rows["broker CPU-s per GiB produced, raw 1024B"]["value"] > 0
    assert silt["end_to_end"]["latency"]["p99_ms"] > 0
    assert results["scale"]["recovery_s"] > 0
    tier = results["tiering"]
    assert tier["replay_archive"]["records"] == tier["consume_local"]["records"] > 0, "both topics replay whole"
    assert tier["segments_uploaded"] > 0 and tier["upload_mib_per_s_per_core"] > 0
