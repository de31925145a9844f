#!/usr/bin/env python3
"""Rebuilds the seed corpora in fuzz/seeds/ from real traffic: starts a
broker (SILT_BIN) with small segments so that it seals and archives them,
runs real clients (fuzz/traffic.py, kcat) through the recording proxy
(fuzz/capture.py), then cuts the seeds out of what was recorded and stored:

  request_frames   whole client connections (their first bytes)
  request_bodies   one frame per API and version the clients sent
  record_batches   batches of every codec, from the broker's segment files
  parquet_rebuild  archived segment files
  manifest         archive manifests

Run with the test venv's Python (it has confluent-kafka and kafka-python):
    $SILT_VENV/bin/python fuzz/seed.py [--silt target/debug/silt]
Uses 127.0.0.1 only and stops everything it started.
"""
import argparse
import collections
import os
import pathlib
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time

HERE = pathlib.Path(__file__).resolve().parent
# Keep the committed corpora small: a few hundred KB in all.
CONNECTION_BYTES_MAX = 8192
CONNECTIONS_MAX = 10
FRAME_BYTES_MAX = 16384
BATCH_BYTES_MAX = 4096
BATCHES_PER_CODEC = 3
PARQUET_FILES_MAX = 3
CODEC_NAMES = {0: "none", 1: "gzip", 2: "snappy", 3: "lz4", 4: "zstd"}
DEADLINE_S = 60


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(what, check, deadline_s=DEADLINE_S):
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise SystemExit(f"fuzz/seed: gave up after {deadline_s} s waiting for {what}")


def can_connect(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def frames(stream):
    at = 0
    while at + 4 <= len(stream):
        (size,) = struct.unpack_from(">i", stream, at)
        if size < 0 or at + 4 + size > len(stream):
            return
        yield stream[at + 4: at + 4 + size]
        at += 4 + size


def batches(segment):
    at = 0
    while at + 61 <= len(segment):
        (length,) = struct.unpack_from(">i", segment, at + 8)
        if length <= 0 or at + 12 + length > len(segment):
            return
        yield segment[at: at + 12 + length]
        at += 12 + length


def smallest_frames(work, api):
    for path in (work / "connections").glob("conn-*.bin"):
        for frame in frames(path.read_bytes()):
            if 8 <= len(frame) <= FRAME_BYTES_MAX and struct.unpack_from(">h", frame)[0] == api:
                yield frame


def write(directory, name, data):
    directory.mkdir(parents=True, exist_ok=True)
    (directory / name).write_bytes(data)


def run_traffic(silt, work):
    data_dir = work / "data"
    broker_port, proxy_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SILT_")}
    env.update({
        "SILT_STORAGE__DATA_DIR": str(data_dir),
        "SILT_KAFKA__LISTEN": f"127.0.0.1:{broker_port}",
        # Clients reconnect to the advertised address: the proxy's, so every connection is recorded.
        "SILT_KAFKA__ADVERTISED_ADDRESS": f"127.0.0.1:{proxy_port}",
        "SILT_HTTP__LISTEN": "127.0.0.1:0",
        "SILT_LOG__SEGMENT_BYTES": "2048",
        "SILT_GROUPS__INITIAL_REBALANCE_DELAY_MS": "0",
    })
    started = []
    try:
        broker = subprocess.Popen([silt, "broker"], env=env, stdout=open(work / "broker.log", "wb"), stderr=subprocess.STDOUT)
        started.append(broker)
        wait_for("the broker to listen", lambda: can_connect(broker_port))
        proxy = subprocess.Popen([sys.executable, HERE / "capture.py", str(proxy_port), f"127.0.0.1:{broker_port}", work / "connections"])
        started.append(proxy)
        wait_for("the proxy to listen", lambda: can_connect(proxy_port))
        bootstrap = f"127.0.0.1:{proxy_port}"
        subprocess.run([sys.executable, HERE / "traffic.py", bootstrap], check=True, timeout=300)
        if shutil.which("kcat"):
            subprocess.run(["kcat", "-b", bootstrap, "-L"], check=True, timeout=60, stdout=subprocess.DEVNULL)
            subprocess.run(["kcat", "-b", bootstrap, "-C", "-t", "fuzz-lz4", "-c", "20", "-e"], check=True, timeout=60, stdout=subprocess.DEVNULL)
            subprocess.run(["kcat", "-b", bootstrap, "-P", "-t", "fuzz-kcat", "-z", "snappy"], input=b"one\ntwo\nthree\n", check=True, timeout=60)
        archive = pathlib.Path(str(data_dir) + "-archive")
        wait_for("archived segments of every codec",
                 lambda: all(list(archive.glob(f"topic=fuzz-{c}/partition=0/*.parquet")) for c in CODEC_NAMES.values()))
    finally:
        for process in reversed(started):
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
    return data_dir, archive


def cut_seeds(work, data_dir, archive, out):
    if out.exists():
        shutil.rmtree(out)
    # Whole connections, the most varied first (by the APIs in their first bytes).
    connections = []
    for path in sorted((work / "connections").glob("conn-*.bin")):
        head = path.read_bytes()[:CONNECTION_BYTES_MAX]
        apis = frozenset(struct.unpack_from(">hh", f) for f in frames(head) if len(f) >= 4)
        connections.append((len(apis), path.name, head, apis))
    seen_apis = set()
    kept = 0
    for _, name, head, apis in sorted(connections, key=lambda c: -c[0]):
        if kept < CONNECTIONS_MAX and not apis <= seen_apis:
            write(out / "request_frames", name, head)
            seen_apis |= apis
            kept += 1
    # The smallest frame of each API and version.
    smallest = {}
    for path in (work / "connections").glob("conn-*.bin"):
        for frame in frames(path.read_bytes()):
            if 8 <= len(frame) <= FRAME_BYTES_MAX:
                key = struct.unpack_from(">hh", frame)
                if key not in smallest or len(frame) < len(smallest[key]):
                    smallest[key] = frame
    # And the smallest Produce frame of each codec's topic (its batches use that codec).
    for codec in CODEC_NAMES.values():
        topic = f"fuzz-{codec}".encode()
        produce = [f for f in smallest_frames(work, api=0) if topic in f]
        if produce:
            frame = min(produce, key=len)
            smallest[(0, f"{struct.unpack_from('>h', frame, 2)[0]}-{codec}")] = frame
    for (api, version), frame in sorted(smallest.items(), key=str):
        write(out / "request_bodies", f"api{api}-v{version}.bin", frame)
    # Batches of each codec from the stored segments: the smallest and the largest that fit.
    by_codec = collections.defaultdict(list)
    for segment in sorted(data_dir.glob("*/*.log")):
        for batch in batches(segment.read_bytes()):
            (attributes,) = struct.unpack_from(">h", batch, 21)
            if len(batch) <= BATCH_BYTES_MAX:
                by_codec[attributes & 7].append(batch)
    for codec, found in sorted(by_codec.items()):
        found.sort(key=len)
        picks = {found[0], found[-1], found[len(found) // 2]}
        for i, batch in enumerate(sorted(picks, key=len)[:BATCHES_PER_CODEC]):
            write(out / "record_batches", f"{CODEC_NAMES.get(codec, codec)}-{i}.bin", batch)
    # Archived files, the smallest first, and every manifest.
    files = sorted(archive.glob("topic=*/partition=*/*.parquet"), key=lambda p: p.stat().st_size)
    for path in files[:PARQUET_FILES_MAX]:
        write(out / "parquet_rebuild", f"{path.parent.parent.name}-{path.name}", path.read_bytes())
    for path in sorted(archive.glob("_silt/topic=*/partition=*/manifest.json")):
        write(out / "manifest", f"{path.parent.parent.name}-{path.parent.name}.json", path.read_bytes())


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--silt", default=os.environ.get("SILT_BIN", "target/debug/silt"))
    parser.add_argument("--out", default=str(HERE / "seeds"))
    parser.add_argument("--keep", action="store_true", help="keep the work directory and say where")
    args = parser.parse_args()
    work = pathlib.Path(tempfile.mkdtemp(prefix="silt-fuzz-seed-"))
    try:
        data_dir, archive = run_traffic(args.silt, work)
        cut_seeds(work, data_dir, archive, pathlib.Path(args.out))
    finally:
        if args.keep:
            print(f"fuzz/seed: work directory kept at {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    for target in sorted(pathlib.Path(args.out).iterdir()):
        sizes = [p.stat().st_size for p in target.iterdir()]
        print(f"fuzz/seed: {target.name}: {len(sizes)} seeds, {sum(sizes)} bytes")


if __name__ == "__main__":
    main()
