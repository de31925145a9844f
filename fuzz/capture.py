#!/usr/bin/env python3
"""A recording TCP proxy: forwards every connection to the broker and saves
what the client sent, one file per connection (the raw byte stream, length
prefixes included). fuzz/seed runs real clients through it to build the
request corpora.

    capture.py LISTEN_PORT UPSTREAM_HOST:UPSTREAM_PORT OUT_DIR

Listens on 127.0.0.1 only and runs until SIGTERM or SIGINT.
"""
import asyncio
import itertools
import pathlib
import signal
import sys

# Bytes read at once from either side.
CHUNK_BYTES = 65536


async def pipe(reader, writer, record=None):
    try:
        while data := await reader.read(CHUNK_BYTES):
            if record is not None:
                record.write(data)
            writer.write(data)
            await writer.drain()
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        writer.close()


async def main(listen_port, upstream, out_dir):
    host, port = upstream.rsplit(":", 1)
    out_dir.mkdir(parents=True, exist_ok=True)
    numbers = itertools.count()

    async def serve(client_reader, client_writer):
        broker_reader, broker_writer = await asyncio.open_connection(host, int(port))
        with open(out_dir / f"conn-{next(numbers):04}.bin", "wb") as record:
            await asyncio.gather(pipe(client_reader, broker_writer, record), pipe(broker_reader, client_writer))

    server = await asyncio.start_server(serve, "127.0.0.1", listen_port)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), sys.argv[2], pathlib.Path(sys.argv[3])))
