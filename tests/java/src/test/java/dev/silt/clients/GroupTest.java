package dev.silt.clients;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.time.Duration;
import java.util.ArrayList;
import java.util.Collection;
import java.util.HashMap;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.Set;
import java.util.TreeMap;
import java.util.concurrent.TimeUnit;
import java.util.stream.Collectors;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRebalanceListener;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.RecordMetadata;
import org.apache.kafka.common.GroupType;
import org.apache.kafka.common.KafkaException;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.errors.WakeupException;
import org.apache.kafka.common.serialization.StringDeserializer;
import org.junit.jupiter.api.extension.RegisterExtension;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/**
 * A consumer group of three that commits after every batch; then one member
 * leaves. The other two take over its partitions from the committed offsets:
 * across the whole run every produced record is consumed exactly once and the
 * group's committed offsets end at the log end. Runs once with the classic
 * protocol (JoinGroup/SyncGroup, client-side assignment) and once with the
 * KIP-848 consumer protocol (ConsumerGroupHeartbeat, server-side assignment).
 */
class GroupTest {
    static final int PARTITIONS = 6;
    static final int RECORDS_PER_ROUND = 300;
    static final Duration ROUND_TIMEOUT = Duration.ofSeconds(90);

    @RegisterExtension
    static final BrokerExtension silt = new BrokerExtension();

    /** One group member polling, recording and committing on its own thread. */
    static final class Member implements Runnable {
        final String name;
        final KafkaConsumer<String, String> consumer;
        final String topic;
        final Thread thread;
        /** (partition, offset) of every record this member processed, in order. */
        final List<long[]> seen = new ArrayList<>();
        /** Next offset to commit per partition, processed but not yet committed. */
        final Map<TopicPartition, OffsetAndMetadata> pending = new java.util.concurrent.ConcurrentHashMap<>();
        volatile Set<Integer> assignment = Set.of();
        final List<String> commitRetries = new ArrayList<>();
        volatile Throwable crash;
        volatile boolean stop;

        Member(String name, String protocol, String assignor, String group, String topic) {
            this.name = name;
            this.topic = topic;
            Properties p = Clients.common(silt.broker(), "silt-java-" + name);
            p.put(ConsumerConfig.GROUP_ID_CONFIG, group);
            p.put(ConsumerConfig.GROUP_PROTOCOL_CONFIG, protocol);
            p.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, "false");
            p.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
            p.put(ConsumerConfig.MAX_POLL_RECORDS_CONFIG, "50");
            if (protocol.equals("classic")) {
                // The consumer protocol takes its timers from the broker and refuses these.
                p.put(ConsumerConfig.SESSION_TIMEOUT_MS_CONFIG, "6000");
                p.put(ConsumerConfig.HEARTBEAT_INTERVAL_MS_CONFIG, "500");
                p.put(ConsumerConfig.MAX_POLL_INTERVAL_MS_CONFIG, "20000");
            }
            if (assignor != null) {
                p.put(ConsumerConfig.GROUP_REMOTE_ASSIGNOR_CONFIG, assignor);
            }
            consumer = new KafkaConsumer<>(p, new StringDeserializer(), new StringDeserializer());
            thread = new Thread(this, "member-" + name);
            thread.setDaemon(true);
        }

        Member start() {
            thread.start();
            return this;
        }

        private void commit(Collection<TopicPartition> only) {
            Map<TopicPartition, OffsetAndMetadata> nxt = new HashMap<>();
            pending.forEach((tp, o) -> {
                if (only == null || only.contains(tp)) {
                    nxt.put(tp, o);
                }
            });
            if (nxt.isEmpty()) {
                return;
            }
            try {
                consumer.commitSync(nxt, Duration.ofSeconds(30));
                nxt.keySet().forEach(pending::remove);
            } catch (KafkaException e) {
                // A rebalance overtook the commit (REBALANCE_IN_PROGRESS, STALE_MEMBER_EPOCH):
                // the offsets stay pending and are committed on revocation or after the next poll.
                synchronized (this) {
                    commitRetries.add(nxt + ": " + e);
                }
            }
        }

        @Override
        public void run() {
            try {
                consumer.subscribe(List.of(topic), new ConsumerRebalanceListener() {
                    @Override
                    public void onPartitionsRevoked(Collection<TopicPartition> revoked) {
                        commit(revoked);
                        revoked.forEach(pending::remove);
                        assignment = currentAssignment();
                    }

                    @Override
                    public void onPartitionsAssigned(Collection<TopicPartition> assigned) {
                        assignment = currentAssignment();
                    }

                    @Override
                    public void onPartitionsLost(Collection<TopicPartition> lost) {
                        lost.forEach(pending::remove);
                        assignment = currentAssignment();
                    }
                });
                while (!stop) {
                    for (ConsumerRecord<String, String> r : consumer.poll(Clients.POLL)) {
                        synchronized (this) {
                            seen.add(new long[] {r.partition(), r.offset()});
                        }
                        pending.put(new TopicPartition(r.topic(), r.partition()),
                                new OffsetAndMetadata(r.offset() + 1));
                    }
                    commit(null);
                    assignment = currentAssignment();
                }
                commit(null);
            } catch (WakeupException e) {
                // close requested
            } catch (Throwable t) {
                crash = t;
            } finally {
                consumer.close(org.apache.kafka.clients.consumer.CloseOptions.timeout(Duration.ofSeconds(30)));
            }
        }

        private Set<Integer> currentAssignment() {
            return consumer.assignment().stream().map(TopicPartition::partition).collect(Collectors.toSet());
        }

        void close() throws InterruptedException {
            stop = true;
            thread.join(60_000);
            if (thread.isAlive()) {
                throw new AssertionError("member " + name + " did not stop within 60s");
            }
        }

        void check() {
            if (crash != null) {
                throw new AssertionError("member " + name + " crashed", crash);
            }
        }

        synchronized List<long[]> seenCopy() {
            return new ArrayList<>(seen);
        }

        String describe() {
            synchronized (this) {
                return name + ": assignment=" + assignment + " seen=" + seen.size() + " pending=" + pending
                        + " commitRetries=" + commitRetries;
            }
        }
    }

    static void awaitBalanced(List<Member> members) {
        Clients.waitUntil(() -> {
            members.forEach(Member::check);
            List<Set<Integer>> views = members.stream().map(m -> m.assignment).toList();
            Set<Integer> union = new HashSet<>();
            views.forEach(union::addAll);
            int total = views.stream().mapToInt(Set::size).sum();
            int min = views.stream().mapToInt(Set::size).min().orElse(0);
            int max = views.stream().mapToInt(Set::size).max().orElse(0);
            return total == PARTITIONS && union.size() == PARTITIONS && min >= 1 && max - min <= 1;
        }, ROUND_TIMEOUT, () -> members.size() + " members to hold a balanced, disjoint assignment of all "
                + PARTITIONS + " partitions:\n" + members.stream().map(Member::describe)
                        .collect(Collectors.joining("\n")) + "\n" + silt.broker().logTail(30));
    }

    /** Waits until the members together have seen every acked (partition, offset). */
    static void awaitConsumed(List<Member> all, Set<List<Long>> acked) {
        Clients.waitUntil(() -> {
            all.forEach(Member::check);
            Set<List<Long>> seen = new HashSet<>();
            all.forEach(m -> m.seenCopy().forEach(r -> seen.add(List.of(r[0], r[1]))));
            return seen.containsAll(acked);
        }, ROUND_TIMEOUT, () -> acked.size() + " records to be consumed:\n" + all.stream()
                .map(Member::describe).collect(Collectors.joining("\n")));
    }

    static Set<List<Long>> produceRound(String topic, int fromId) throws Exception {
        try (KafkaProducer<String, String> p = Clients.idempotentProducer(silt.broker(), "lz4")) {
            Map<Integer, RecordMetadata> acked = Clients.produce(p, topic, PARTITIONS, fromId, RECORDS_PER_ROUND);
            return acked.values().stream().map(md -> List.of((long) md.partition(), md.offset()))
                    .collect(Collectors.toSet());
        }
    }

    /** "classic", or "consumer" with the broker's default assignor, or "consumer:range". */
    @ParameterizedTest(name = "group.protocol={0}")
    @ValueSource(strings = {"classic", "consumer", "consumer:range"})
    void threeMembersCommitAndOneLeaves(String variant) throws Exception {
        String protocol = variant.split(":")[0];
        String assignor = variant.contains(":") ? variant.split(":")[1] : null;
        String topic = "java-group-" + variant.replace(':', '-');
        String group = topic;
        try (Admin admin = Clients.admin(silt.broker())) {
            Clients.createTopic(admin, topic, PARTITIONS);
        }
        List<Member> all = List.of(new Member("a", protocol, assignor, group, topic),
                new Member("b", protocol, assignor, group, topic), new Member("c", protocol, assignor, group, topic));
        try {
            all.forEach(Member::start);
            awaitBalanced(all);
            try (Admin admin = Clients.admin(silt.broker())) {
                // The group is of the protocol asked for (no silent fallback to classic).
                var described = admin.describeConsumerGroups(List.of(group)).all()
                        .get(30, TimeUnit.SECONDS).get(group);
                assertEquals(GroupType.parse(protocol), described.type(), "group type");
                assertEquals(3, described.members().size(), "members: " + described.members());
                if (assignor != null) {
                    assertEquals(assignor, described.partitionAssignor(), "the group's assignor");
                }
            }

            Set<List<Long>> acked = new HashSet<>(produceRound(topic, 0));
            awaitConsumed(all, acked);

            // Member c leaves the group; a and b take over its partitions.
            Set<Integer> leaving = all.get(2).assignment;
            all.get(2).close();
            List<Member> rest = all.subList(0, 2);
            awaitBalanced(rest);
            assertTrue(rest.stream().anyMatch(m -> m.assignment.stream().anyMatch(leaving::contains)),
                    "c's partitions " + leaving + " were reassigned");

            acked.addAll(produceRound(topic, RECORDS_PER_ROUND));
            awaitConsumed(all, acked);

            // Exactly once: the new owners resumed from c's committed offsets.
            Map<List<Long>, Integer> counts = new HashMap<>();
            all.forEach(m -> m.seenCopy().forEach(r -> counts.merge(List.of(r[0], r[1]), 1, Integer::sum)));
            Map<List<Long>, Integer> dups = counts.entrySet().stream().filter(e -> e.getValue() > 1)
                    .collect(Collectors.toMap(Map.Entry::getKey, Map.Entry::getValue));
            assertEquals(Map.of(), dups, "records consumed more than once; " + all.stream()
                    .map(Member::describe).collect(Collectors.joining("; ")));
            assertEquals(acked, counts.keySet(), "consumed exactly what was produced");

            // The committed offsets reach the log end once the members have committed.
            Map<TopicPartition, Long> want = new TreeMap<>(java.util.Comparator.comparing(TopicPartition::partition));
            for (int p = 0; p < PARTITIONS; p++) {
                want.put(new TopicPartition(topic, p), 2L * RECORDS_PER_ROUND / PARTITIONS);
            }
            try (Admin admin = Clients.admin(silt.broker())) {
                Clients.waitUntil(() -> {
                    try {
                        Map<TopicPartition, OffsetAndMetadata> got = admin.listConsumerGroupOffsets(group)
                                .partitionsToOffsetAndMetadata().get(30, TimeUnit.SECONDS);
                        return want.entrySet().stream().allMatch(e -> got.get(e.getKey()) != null
                                && got.get(e.getKey()).offset() == e.getValue());
                    } catch (Exception e) {
                        throw new AssertionError(e);
                    }
                }, ROUND_TIMEOUT, () -> "committed offsets " + want);
            }
        } finally {
            for (Member m : all) {
                m.close();
            }
            silt.broker().assertAlive();
        }
        all.forEach(Member::check);
    }
}
