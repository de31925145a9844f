"""Bad input to the group coordinator, sent as raw frames (kafka_wire): each
gets the error code Apache Kafka returns, the broker stays up, and the
group keeps working for well-behaved members afterwards.

Versions: each request uses the highest version both kafka_wire's encoder
and the broker's ApiVersions support (`pick_version`)."""

from __future__ import annotations


from kafka_wire import (GroupApiKey, GroupErrorCode, RawConnection, api_versions_v0,
                        encode_assignment, encode_subscription, pick_version, raw_heartbeat,
                        raw_join_group_full, raw_leave_group, raw_offset_commit, raw_sync_group)
from silt_harness import (ConfluentGroupConsumer, HarnessError, assert_broker_serves,
                          confluent_conf, create_topic, produce_keyed, wait_for_balanced_group,
                          wait_until)

MiB = 1024 * 1024
PARTITIONS = 4
#: Raw members use short timeouts so an abandoned one cannot stall a later
#: rebalance for long.
RAW_SESSION_TIMEOUT_MS = 6000
RAW_REBALANCE_TIMEOUT_MS = 6000
GROUP_APIS = [GroupApiKey.OFFSET_COMMIT, GroupApiKey.OFFSET_FETCH, GroupApiKey.FIND_COORDINATOR,
              GroupApiKey.JOIN_GROUP, GroupApiKey.HEARTBEAT, GroupApiKey.LEAVE_GROUP,
              GroupApiKey.SYNC_GROUP, GroupApiKey.DESCRIBE_GROUPS, GroupApiKey.LIST_GROUPS,
              GroupApiKey.DELETE_GROUPS, GroupApiKey.OFFSET_DELETE]


def _versions(broker) -> dict[int, tuple[int, int]]:
    with RawConnection(broker.kafka_addr) as conn:
        err, versions = api_versions_v0(conn)
    assert err == 0, f"ApiVersions v0 error {err}"
    return versions


def _join(conn, versions, group, topic, member_id="", protocol_type="consumer",
          protocols=None, timeout_s=30.0):
    protocols = protocols if protocols is not None else [("range", encode_subscription([topic]))]
    return raw_join_group_full(conn, pick_version(versions, GroupApiKey.JOIN_GROUP), group,
                               protocol_type, protocols, member_id=member_id,
                               session_timeout_ms=RAW_SESSION_TIMEOUT_MS,
                               rebalance_timeout_ms=RAW_REBALANCE_TIMEOUT_MS, timeout_s=timeout_s)


def _well_behaved_members_work(broker, group, topic, ids):
    """Two confluent-kafka members join `group`, share `topic` and consume
    the records `ids` (already produced) between them exactly once."""
    delivered = produce_keyed(broker, topic, ids, PARTITIONS)
    members = [ConfluentGroupConsumer(f"{group}-ok{i}", broker, group, topic,
                                      **{"partition.assignment.strategy": "range"}) for i in range(2)]
    try:
        for m in members:
            m.start()
        wait_for_balanced_group(members, PARTITIONS, broker=broker)
        want = set(delivered.values())
        wait_until(lambda: all((m.check() or True) for m in members) and
                   want <= {(p, o) for m in members for p, o, _ in m.snapshot()[0]},
                   60, f"well-behaved members of {group} to consume {len(want)} records",
                   interval_s=0.1,
                   diagnostics=lambda: "\n".join(m.describe() for m in members) + "\n" + broker.log_tail(30))
    finally:
        for m in members:
            m._stop.set()
        for m in members:
            m.stop()
    for m in members:
        m.check()
        assert not m.commit_errors, f"{m.name}: {m.commit_errors[:3]}"


def test_api_versions_advertises_group_apis(gbroker):
    versions = _versions(gbroker)
    missing = [k for k in GROUP_APIS if k not in versions]
    assert not missing, f"ApiVersions lacks group api keys {missing}: {versions}"
    for key in (GroupApiKey.JOIN_GROUP, GroupApiKey.SYNC_GROUP, GroupApiKey.HEARTBEAT,
                GroupApiKey.LEAVE_GROUP, GroupApiKey.OFFSET_COMMIT):
        pick_version(versions, key)  # raises if the raw tests cannot talk to the broker


def test_join_with_unknown_protocol_type_is_inconsistent_group_protocol(gbroker, topic_name):
    create_topic(gbroker, topic_name, PARTITIONS)
    group = f"group-{topic_name}"
    versions = _versions(gbroker)
    member = ConfluentGroupConsumer("real-member", gbroker, group, topic_name,
                                    **{"partition.assignment.strategy": "range"})
    try:
        member.start()
        wait_for_balanced_group([member], PARTITIONS, broker=gbroker)
        with RawConnection(gbroker.kafka_addr) as conn:
            # The group's protocol type is "consumer"; "connect" is another.
            res = _join(conn, versions, group, topic_name, protocol_type="connect")
            assert res.error_code == GroupErrorCode.INCONSISTENT_GROUP_PROTOCOL, (
                f"JoinGroup with protocol type 'connect' into a 'consumer' group: error "
                f"{res.error_code}, want INCONSISTENT_GROUP_PROTOCOL (23)")
            # Right type, but no assignor in common with the member.
            res = _join(conn, versions, group, topic_name,
                        protocols=[("no-such-assignor", encode_subscription([topic_name]))])
            assert res.error_code == GroupErrorCode.INCONSISTENT_GROUP_PROTOCOL, (
                f"JoinGroup with no protocol in common with the group: error {res.error_code}, "
                f"want INCONSISTENT_GROUP_PROTOCOL (23)")
        # The rejected joins did not disturb the member.
        assert member.snapshot()[1] == frozenset(range(PARTITIONS))
        produce_keyed(gbroker, topic_name, range(40), PARTITIONS)
        wait_until(lambda: (member.check() or True) and len(member.snapshot()[0]) >= 40, 30,
                   "the existing member to keep consuming after the rejected joins",
                   interval_s=0.1, diagnostics=member.describe)
    finally:
        member.stop()
    member.check()
    assert not member.commit_errors, member.commit_errors[:3]


def test_sync_and_heartbeat_from_stale_generation_are_illegal_generation(gbroker, topic_name):
    create_topic(gbroker, topic_name, PARTITIONS)
    group = f"group-{topic_name}"
    versions = _versions(gbroker)
    sync_v = pick_version(versions, GroupApiKey.SYNC_GROUP)
    hb_v = pick_version(versions, GroupApiKey.HEARTBEAT)
    assignment = encode_assignment({topic_name: list(range(PARTITIONS))})
    with RawConnection(gbroker.kafka_addr) as conn:
        first = _join(conn, versions, group, topic_name)
        assert first.error_code == 0, f"first JoinGroup: error {first.error_code}"
        assert first.member_id and first.leader == first.member_id, first
        assert first.protocol_name == "range"
        err, _ = raw_sync_group(conn, sync_v, group, first.generation_id, first.member_id,
                                [(first.member_id, assignment)], protocol_name="range")
        assert err == 0, f"SyncGroup generation {first.generation_id}: error {err}"
        # The leader rejoining starts a new generation (it is the only member,
        # so the join completes at once).
        second = _join(conn, versions, group, topic_name, member_id=first.member_id)
        assert second.error_code == 0, f"rejoin: error {second.error_code}"
        assert second.member_id == first.member_id
        assert second.generation_id > first.generation_id, (
            f"rejoin kept generation {second.generation_id} (was {first.generation_id})")
        err, _ = raw_sync_group(conn, sync_v, group, first.generation_id, first.member_id,
                                [(first.member_id, assignment)], protocol_name="range")
        assert err == GroupErrorCode.ILLEGAL_GENERATION, (
            f"SyncGroup with stale generation {first.generation_id} (current "
            f"{second.generation_id}): error {err}, want ILLEGAL_GENERATION (22)")
        err, got = raw_sync_group(conn, sync_v, group, second.generation_id, second.member_id,
                                  [(second.member_id, assignment)], protocol_name="range")
        assert err == 0, f"SyncGroup with the current generation after the stale one: error {err}"
        assert got == assignment, "SyncGroup returned a different assignment than the leader sent"
        err = raw_heartbeat(conn, hb_v, group, first.generation_id, first.member_id)
        assert err == GroupErrorCode.ILLEGAL_GENERATION, (
            f"Heartbeat with stale generation: error {err}, want ILLEGAL_GENERATION (22)")
        err = raw_heartbeat(conn, hb_v, group, second.generation_id, second.member_id)
        assert err == 0, f"Heartbeat with the current generation: error {err}"
        err = raw_heartbeat(conn, hb_v, group, second.generation_id, "no-such-member")
        assert err == GroupErrorCode.UNKNOWN_MEMBER_ID, (
            f"Heartbeat from an unknown member: error {err}, want UNKNOWN_MEMBER_ID (25)")
        err = raw_leave_group(conn, pick_version(versions, GroupApiKey.LEAVE_GROUP), group,
                              second.member_id)
        assert err == 0, f"LeaveGroup: error {err}"
    _well_behaved_members_work(gbroker, group, topic_name, range(100))


def test_offset_commit_for_missing_partition_is_unknown_topic_or_partition(gbroker, topic_name):
    from confluent_kafka import Consumer, TopicPartition
    create_topic(gbroker, topic_name, PARTITIONS)
    group = f"group-{topic_name}"
    versions = _versions(gbroker)
    missing_topic = f"{topic_name}-never-created"
    with RawConnection(gbroker.kafka_addr) as conn:
        res = raw_offset_commit(conn, pick_version(versions, GroupApiKey.OFFSET_COMMIT), group,
                                {topic_name: {0: 5, PARTITIONS + 95: 5}, missing_topic: {0: 1}})
    want = {(topic_name, 0): 0, (topic_name, PARTITIONS + 95): GroupErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
            (missing_topic, 0): GroupErrorCode.UNKNOWN_TOPIC_OR_PARTITION}
    assert res == want, f"OffsetCommit per-partition errors {res}, want {want}"
    c = Consumer(confluent_conf(gbroker, **{"group.id": group, "enable.auto.commit": False}))
    try:
        got = c.committed([TopicPartition(topic_name, 0), TopicPartition(topic_name, 1)], timeout=30)
    finally:
        c.close()
    assert [(tp.partition, tp.offset) for tp in got] == [(0, 5), (1, -1001)], (
        f"the valid partition of a partly failed commit: committed() {got}")
    gbroker.assert_alive("after OffsetCommit for missing partitions")


def test_oversized_member_metadata_is_refused_and_group_survives(gbroker, topic_name):
    """A 2 MiB subscription (well under the 100 MiB request limit). Apache
    Kafka accepts the JoinGroup but cannot store the group's metadata record
    (over the offsets topic's 1 MiB max.message.bytes), so the leader's
    SyncGroup fails with UNKNOWN_SERVER_ERROR (-1). Silt may refuse at either
    step, but must refuse with an error code, stay up, and let well-behaved
    members use the same group afterwards."""
    create_topic(gbroker, topic_name, PARTITIONS)
    group = f"group-{topic_name}"
    versions = _versions(gbroker)
    huge = encode_subscription([topic_name], user_data=b"\xa5" * (2 * MiB))
    with RawConnection(gbroker.kafka_addr, timeout_s=30) as conn:
        res = _join(conn, versions, group, topic_name, protocols=[("range", huge)])
        if res.error_code == 0:
            assert res.leader == res.member_id, "the only member must lead"
            sync_err, _ = raw_sync_group(
                conn, pick_version(versions, GroupApiKey.SYNC_GROUP), group, res.generation_id,
                res.member_id, [(res.member_id, encode_assignment({topic_name: list(range(PARTITIONS))}))],
                protocol_name="range")
            assert sync_err != 0, (
                "JoinGroup and SyncGroup both accepted 2 MiB of member metadata: the group record "
                "holding it is larger than Kafka's 1 MiB message limit for __consumer_offsets, where "
                "Kafka fails the SyncGroup with UNKNOWN_SERVER_ERROR (-1)")
            # The refused member leaves (or is already gone).
            leave = raw_leave_group(conn, pick_version(versions, GroupApiKey.LEAVE_GROUP), group,
                                    res.member_id)
            assert leave in (0, GroupErrorCode.UNKNOWN_MEMBER_ID), f"LeaveGroup: error {leave}"
        else:
            assert res.error_code != GroupErrorCode.MEMBER_ID_REQUIRED
    gbroker.assert_alive("after a 2 MiB JoinGroup")
    assert_broker_serves(gbroker)
    _well_behaved_members_work(gbroker, group, topic_name, range(100))


GROUP_SUBSCRIBED_TO_TOPIC = 86


def test_offset_delete(gbroker, topic_name):
    """OffsetDelete removes an empty group's committed offset; it refuses
    (GROUP_SUBSCRIBED_TO_TOPIC) while a member is subscribed to the topic, and
    answers GROUP_ID_NOT_FOUND for a group that does not exist."""
    from confluent_kafka import Consumer, TopicPartition
    from kafka_wire import raw_offset_delete
    create_topic(gbroker, topic_name, PARTITIONS)
    group = f"group-{topic_name}"
    versions = _versions(gbroker)
    lo, _ = versions.get(GroupApiKey.OFFSET_DELETE, (None, None))
    if lo is None or lo > 0:
        raise HarnessError(f"broker advertises OffsetDelete as {versions.get(GroupApiKey.OFFSET_DELETE)}; "
                           "the test sends v0")

    def committed():
        c = Consumer(confluent_conf(gbroker, **{"group.id": group, "enable.auto.commit": False}))
        try:
            return {tp.partition: tp.offset for tp in
                    c.committed([TopicPartition(topic_name, p) for p in range(2)], timeout=30)}
        finally:
            c.close()

    with RawConnection(gbroker.kafka_addr) as conn:
        res = raw_offset_commit(conn, pick_version(versions, GroupApiKey.OFFSET_COMMIT), group,
                                {topic_name: {0: 11, 1: 12}})
        assert set(res.values()) == {0}, res
        err, parts = raw_offset_delete(conn, group, {topic_name: [0]})
        assert (err, parts) == (0, {(topic_name, 0): 0}), f"OffsetDelete on an empty group: {err} {parts}"
    assert committed() == {0: -1001, 1: 12}, "OffsetDelete of partition 0 must remove only its offset"

    member = ConfluentGroupConsumer("subscribed", gbroker, group, topic_name)
    try:
        member.start()
        wait_for_balanced_group([member], PARTITIONS, broker=gbroker)
        with RawConnection(gbroker.kafka_addr) as conn:
            err, parts = raw_offset_delete(conn, group, {topic_name: [1]})
            assert err == 0 and parts == {(topic_name, 1): GROUP_SUBSCRIBED_TO_TOPIC}, (
                f"OffsetDelete while a member subscribes to the topic: {err} {parts}, want "
                f"partition error GROUP_SUBSCRIBED_TO_TOPIC (86)")
            err, _ = raw_offset_delete(conn, f"{group}-never-existed", {topic_name: [0]})
            assert err == GroupErrorCode.GROUP_ID_NOT_FOUND, (
                f"OffsetDelete for a group that does not exist: error {err}, want GROUP_ID_NOT_FOUND (69)")
    finally:
        member.stop()
    member.check()
