"""pytest fixtures for the Silt black-box suite.

Fixtures start real `silt broker` processes (binary from $SILT_BIN, falling
back to ${CARGO_TARGET_DIR:-target}/debug/silt) on 127.0.0.1 port 0 with a
fresh data dir, and stop every one of them at teardown. A broker that died
during a test, or that does not exit with code 0 on SIGTERM at teardown,
fails the test's teardown: "the broker stays up" and "graceful shutdown"
are part of every test, not just the dedicated ones.
"""

from __future__ import annotations

import itertools
import os
import signal
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from silt_harness import GROUP_BROKER_ENV, Broker, HarnessError, default_silt_bin  # noqa: E402

#: Brokers started and not yet torn down; their logs are attached to the
#: report of any test that fails while they are live.
_LIVE: list[Broker] = []
_names = itertools.count(1)


@pytest.fixture(scope="session")
def silt_bin() -> Path:
    path = Path(os.environ.get("SILT_BIN") or default_silt_bin())
    if not path.is_file() or not os.access(path, os.X_OK):
        pytest.fail(f"silt binary not found at {path}: build it (`cargo build --bins`) "
                    "or point SILT_BIN at it; the suite cannot run without it", pytrace=False)
    return path


class BrokerSet:
    """Starts brokers for one fixture scope and stops them all at the end."""

    def __init__(self, silt_bin: Path, base_dir: Path):
        self.silt_bin = silt_bin
        self.base_dir = base_dir
        self.brokers: list[Broker] = []

    def start(self, env: dict | None = None, data_dir: Path | None = None,
              name: str | None = None) -> Broker:
        name = name or f"silt{next(_names)}"
        data_dir = data_dir or (self.base_dir / f"{name}-data")
        b = Broker(self.silt_bin, data_dir, env=env, name=name)
        self.brokers.append(b)
        _LIVE.append(b)
        try:
            b.start()
        except BaseException:
            # start() already reported and cleaned up; don't report it twice.
            self.brokers.remove(b)
            _LIVE.remove(b)
            raise
        return b

    def close(self):
        problems = []
        for b in self.brokers:
            try:
                if b.proc is None:
                    continue
                if not b.stopped_by_test and b.proc.poll() is not None:
                    b.stop()  # collects the exit code and drains the pipes
                    problems.append(f"{b.name} exited on its own during the test with code "
                                    f"{b.proc.returncode}\n{b.log_tail(40)}")
                    continue
                if b.alive():
                    code = b.stop(signal.SIGTERM)
                    if code != 0:
                        problems.append(f"{b.name} exited with code {code} on SIGTERM at teardown "
                                        f"(expected 0)\n{b.log_tail(40)}")
            except HarnessError as e:
                problems.append(str(e))
            finally:
                if b in _LIVE:
                    _LIVE.remove(b)
        if problems:
            pytest.fail("\n\n".join(problems), pytrace=False)


@pytest.fixture
def broker_factory(silt_bin, tmp_path):
    """Call with optional env overrides (e.g. {"SILT_LOG__NUM_PARTITIONS": "3"})
    to get a started Broker; all are stopped at teardown."""
    brokers = BrokerSet(silt_bin, tmp_path)
    yield brokers.start
    brokers.close()


@pytest.fixture
def broker(broker_factory) -> Broker:
    """A fresh broker with default settings for this test alone."""
    return broker_factory()


@pytest.fixture
def gbroker(broker_factory) -> Broker:
    """A fresh broker configured for group tests (GROUP_BROKER_ENV)."""
    return broker_factory(dict(GROUP_BROKER_ENV))


@pytest.fixture(scope="module")
def module_broker(silt_bin, tmp_path_factory) -> Broker:
    """One default broker shared by a module's tests (each uses its own topics)."""
    brokers = BrokerSet(silt_bin, tmp_path_factory.mktemp("module-broker"))
    b = brokers.start()
    yield b
    brokers.close()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.failed and _LIVE:
        for b in _LIVE:
            report.sections.append((f"{b.name} output ({report.when})", b.log_tail(200)))


_counter = itertools.count(1)


@pytest.fixture
def topic_name(request) -> str:
    """A topic name unique within the session, derived from the test name."""
    base = "".join(c if c.isalnum() else "-" for c in request.node.name)[:80].strip("-")
    return f"{base}-{next(_counter)}"
