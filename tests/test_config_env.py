"""`SILT_*` environment variables: only `SILT_<SECTION>__<KEY>` names are
configuration. Others (SILT_BIN, which this very harness sets, SILT_HOME,
SILT_VERSION, common in scripts and images) are ignored with a warning that
names them, while a misspelt key inside a known section still stops the
broker with exit code 2, as any invalid configuration does."""

from __future__ import annotations

import pytest

from silt_harness import assert_broker_serves, free_port, run_silt

pytestmark = pytest.mark.silt_only(reason="Silt's SILT_ environment configuration; Kafka reads server.properties")

NOT_KEYS = {"SILT_BIN": "/usr/local/bin/silt", "SILT_HOME": "/opt/silt", "SILT_VERSION": "0.1.0"}


def test_silt_variables_that_are_not_keys_are_ignored_with_a_warning(broker_factory):
    broker = broker_factory(dict(NOT_KEYS))
    assert_broker_serves(broker)
    warnings = [line for line in broker.lines if "WARN" in line and "not configuration keys" in line]
    assert warnings, f"no warning about ignored variables\n{broker.log_tail()}"
    for name in NOT_KEYS:
        assert name in warnings[0], f"the warning does not name {name}: {warnings[0]}"


def test_a_misspelt_key_in_a_known_section_still_fails(silt_bin, tmp_path):
    env = dict(NOT_KEYS, SILT_KAFKA__LISTN="127.0.0.1:0", SILT_STORAGE__DATA_DIR=str(tmp_path / "data"),
               SILT_HTTP__LISTEN="127.0.0.1:0")
    result = run_silt(silt_bin, "broker", env=env)
    assert result.returncode == 2, f"exit {result.returncode}\n{result.stderr.decode()[-2000:]}"
    assert "listn" in result.stderr.decode(), result.stderr.decode()[-2000:]


@pytest.mark.parametrize("voters, problem", [
    ("1@127.0.0.1:19093,two@127.0.0.1:29093", "two@127.0.0.1:29093"),
    ("1@127.0.0.1:19093,1@127.0.0.1:29093", "repeats a node id"),
    ("2@127.0.0.1:29093,3@127.0.0.1:39093", "node.id"),
])
def test_an_invalid_cluster_voter_list_stops_the_broker_naming_the_key(silt_bin, tmp_path, voters, problem):
    env = dict(SILT_NODE__ID="1", SILT_CLUSTER__VOTERS=voters, SILT_CLUSTER__LISTEN="127.0.0.1:0",
               SILT_KAFKA__LISTEN="127.0.0.1:0", SILT_HTTP__LISTEN="127.0.0.1:0", SILT_STORAGE__DATA_DIR=str(tmp_path / "data"))
    result = run_silt(silt_bin, "broker", env=env)
    stderr = result.stderr.decode()
    assert result.returncode == 2, f"exit {result.returncode}\n{stderr[-2000:]}"
    assert "cluster.voters" in stderr and problem in stderr, stderr[-2000:]


def test_a_one_voter_cluster_section_serves_through_the_broker_session(broker_factory):
    """`[cluster]` with this node as the only voter: the node runs the cluster
    edge (listener, session controller, broker session) instead of
    registering itself, is unfenced by its own controller and then serves."""
    port = free_port()
    broker = broker_factory({"SILT_NODE__ID": "1", "SILT_CLUSTER__LISTEN": f"127.0.0.1:{port}",
                             "SILT_CLUSTER__VOTERS": f"1@127.0.0.1:{port}"})
    assert_broker_serves(broker)
    lines = "\n".join(broker.lines)
    assert "registered with the active controller" in lines and "the controller unfenced this broker" in lines, broker.log_tail()
