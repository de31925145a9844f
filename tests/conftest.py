"""pytest fixtures for the Silt black-box suite.

Fixtures start real broker processes on 127.0.0.1 with a fresh data dir and
stop every one of them at teardown. A broker that died during a test, or
that does not exit with code 0 on SIGTERM at teardown, fails the test's
teardown: "the broker stays up" and "graceful shutdown" are part of every
test, not just the dedicated ones.

`--broker silt` (the default) runs `silt broker` from $SILT_BIN (falling
back to ${CARGO_TARGET_DIR:-target}/debug/silt). `--broker kafka` runs the
same tests against Apache Kafka (tests/kafka/kafka), the oracle: a test
Kafka fails is wrong, or it asserts a deliberate difference and carries
`kafka_differs` (then it must fail against Kafka: it runs as a strict
xfail). Tests of Silt-only features carry `silt_only` and are skipped there.
A JVM starts slowly, so against Kafka the `broker`, `gbroker` and
`module_broker` fixtures share one session broker (group settings on,
restarted after a test that stopped it); `broker_factory` still starts a
fresh one per call.
"""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from silt_harness import (GROUP_BROKER_ENV, KAFKA_SCRIPT, Broker, BrokerProcess,  # noqa: E402
                          HarnessError, KafkaBroker, default_silt_bin, kafka_props_for)

#: Brokers started and not yet torn down; their logs are attached to the
#: report of any test that fails while they are live.
_LIVE: list[BrokerProcess] = []
_names = itertools.count(1)
#: How long `tests/kafka/kafka install` may take (Maven downloads on a first run).
KAFKA_INSTALL_TIMEOUT_S = 900
#: The markers that say how a test relates to Apache Kafka; each needs a reason.
ORACLE_MARKERS = ("silt_only", "kafka_differs")


def pytest_addoption(parser):
    parser.addoption("--broker", choices=("silt", "kafka"), default="silt",
                     help="run the suite against silt (default) or Apache Kafka (the oracle pass)")


def pytest_collection_modifyitems(config, items):
    kafka = config.getoption("--broker") == "kafka"
    for item in items:
        for name in ORACLE_MARKERS:
            mark = item.get_closest_marker(name)
            if mark is None:
                continue
            reason = mark.kwargs.get("reason", "")
            if not reason or mark.args:
                raise pytest.UsageError(f"{item.nodeid}: @pytest.mark.{name} needs reason=\"...\" "
                                        "and nothing else")
            if not kafka:
                continue
            if name == "silt_only":
                item.add_marker(pytest.mark.skip(reason=f"silt_only: {reason}"))
            else:
                item.add_marker(pytest.mark.xfail(reason=f"kafka_differs: {reason}", strict=True))


@pytest.fixture(scope="session")
def broker_kind(request) -> str:
    """"silt" or "kafka": which broker the fixtures start."""
    return request.config.getoption("--broker")


@pytest.fixture(scope="session")
def silt_bin() -> Path:
    path = Path(os.environ.get("SILT_BIN") or default_silt_bin())
    if not path.is_file() or not os.access(path, os.X_OK):
        pytest.fail(f"silt binary not found at {path}: build it (`cargo build --bins`) "
                    "or point SILT_BIN at it; the suite cannot run without it", pytrace=False)
    return path


@pytest.fixture(scope="session")
def kafka_installed() -> Path:
    """Installs Apache Kafka (idempotent, fast when done) and returns its lib dir."""
    try:
        done = subprocess.run([str(KAFKA_SCRIPT), "install"], capture_output=True, text=True,
                              timeout=KAFKA_INSTALL_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{KAFKA_SCRIPT} install took over {KAFKA_INSTALL_TIMEOUT_S}s", pytrace=False)
    if done.returncode != 0:
        pytest.fail(f"{KAFKA_SCRIPT} install failed ({done.returncode}):\n{done.stderr}", pytrace=False)
    return Path(done.stdout.strip())


@pytest.fixture(scope="session")
def make_broker(request, broker_kind):
    """A function (name, data_dir, env) -> unstarted broker of the chosen kind.
    `env` holds Silt settings; for Kafka they become server.properties."""
    if broker_kind == "kafka":
        request.getfixturevalue("kafka_installed")
        return lambda name, data_dir, env: KafkaBroker(data_dir, kafka_props_for(env), name=f"kafka-{name}")
    silt = request.getfixturevalue("silt_bin")
    return lambda name, data_dir, env: Broker(silt, data_dir, env=env, name=name)


class BrokerSet:
    """Starts brokers for one fixture scope and stops them all at the end."""

    def __init__(self, make_broker, base_dir: Path):
        self.make_broker = make_broker
        self.base_dir = base_dir
        self.brokers: list[BrokerProcess] = []

    def start(self, env: dict | None = None, data_dir: Path | None = None,
              name: str | None = None) -> BrokerProcess:
        name = name or f"silt{next(_names)}"
        data_dir = data_dir or (self.base_dir / f"{name}-data")
        b = self.make_broker(name, data_dir, env)
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
def broker_factory(make_broker, tmp_path):
    """Call with optional env overrides (e.g. {"SILT_LOG__NUM_PARTITIONS": "3"})
    to get a started broker; all are stopped at teardown."""
    brokers = BrokerSet(make_broker, tmp_path)
    yield brokers.start
    brokers.close()


@pytest.fixture(scope="session")
def _kafka_session_broker(make_broker, broker_kind, tmp_path_factory):
    """Against Kafka: the one broker that `broker`, `gbroker` and
    `module_broker` share (group settings as GROUP_BROKER_ENV)."""
    assert broker_kind == "kafka", "the shared broker is for the Kafka pass only"
    brokers = BrokerSet(make_broker, tmp_path_factory.mktemp("kafka-session"))
    b = brokers.start(dict(GROUP_BROKER_ENV), name="shared")
    yield b
    brokers.close()


@pytest.fixture
def _kafka_shared_for_test(_kafka_session_broker):
    """The shared Kafka broker for one test: it must still be up afterwards
    (or have been stopped by the test, which then gets it restarted)."""
    b = _kafka_session_broker
    yield b
    if b.alive():
        return
    if b.stopped_by_test:
        b.restart()
        return
    b.stop()  # collects the exit code and drains the pipes
    problem = f"{b.name} exited on its own during the test with code {b.proc.returncode}\n{b.log_tail(40)}"
    b.restart()
    pytest.fail(problem, pytrace=False)


def _default_broker(request, env: dict | None = None) -> BrokerProcess:
    if request.getfixturevalue("broker_kind") == "kafka":
        return request.getfixturevalue("_kafka_shared_for_test")
    return request.getfixturevalue("broker_factory")(env)


@pytest.fixture
def broker(request) -> BrokerProcess:
    """A fresh broker with default settings for this test alone (the shared
    one against Kafka)."""
    return _default_broker(request)


@pytest.fixture
def gbroker(request) -> BrokerProcess:
    """A fresh broker configured for group tests (GROUP_BROKER_ENV) (the
    shared one against Kafka)."""
    return _default_broker(request, dict(GROUP_BROKER_ENV))


@pytest.fixture(scope="module")
def module_broker(request, broker_kind, make_broker, tmp_path_factory) -> BrokerProcess:
    """One default broker shared by a module's tests (each uses its own
    topics); against Kafka, the session's."""
    if broker_kind == "kafka":
        yield request.getfixturevalue("_kafka_session_broker")
        return
    brokers = BrokerSet(make_broker, tmp_path_factory.mktemp("module-broker"))
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


def pytest_generate_tests(metafunc):
    """Cluster tests run one cluster kind, the suite's `--broker`."""
    if "cluster_kind" in metafunc.fixturenames:
        metafunc.parametrize("cluster_kind", [metafunc.config.getoption("--broker")])


@pytest.fixture
def cluster(cluster_kind, request, tmp_path):
    """A started three-node cluster of the suite's kind, each node in its own
    network namespace (tests/cluster_harness.py); stopped and checked after."""
    from cluster_harness import started_cluster
    yield from started_cluster(cluster_kind, request, tmp_path)
