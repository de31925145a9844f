package dev.silt.clients;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.Set;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.DescribeClusterResult;
import org.apache.kafka.clients.admin.GroupListing;
import org.apache.kafka.clients.admin.NewPartitions;
import org.apache.kafka.clients.admin.OffsetSpec;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.clients.producer.RecordMetadata;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.StringDeserializer;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.RegisterExtension;

/**
 * The Admin calls around groups and partitions that operators' tools make:
 * alter, list and delete a group's committed offsets (and a consumer then
 * starting from them), list and delete groups, describe the cluster, add
 * partitions, and find offsets by timestamp.
 */
class GroupAdminTest {
    @RegisterExtension
    static final BrokerExtension silt = new BrokerExtension();

    static Admin admin() {
        return silt.admin();
    }

    @Test
    void groupOffsetsSetByAdminAreWhereAConsumerStarts() throws Exception {
        String topic = "java-group-admin";
        String group = "java-group-admin";
        Clients.createTopic(admin(), topic, 2);
        try (KafkaProducer<String, String> p = Clients.idempotentProducer(silt.broker(), "zstd")) {
            Clients.produce(p, topic, 2, 0, 20);
        }
        TopicPartition p0 = new TopicPartition(topic, 0);
        TopicPartition p1 = new TopicPartition(topic, 1);
        Clients.get(admin().alterConsumerGroupOffsets(group, Map.of(p0, new OffsetAndMetadata(3), p1,
                new OffsetAndMetadata(5, "set by admin"))).all());
        Map<TopicPartition, OffsetAndMetadata> committed =
                Clients.get(admin().listConsumerGroupOffsets(group).partitionsToOffsetAndMetadata());
        assertEquals(3, committed.get(p0).offset());
        assertEquals(5, committed.get(p1).offset());
        assertEquals("set by admin", committed.get(p1).metadata());

        // A member of the group starts at the committed offsets, not at the reset point.
        Properties props = Clients.common(silt.broker(), "silt-java-group-admin");
        props.put(ConsumerConfig.GROUP_ID_CONFIG, group);
        props.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, "false");
        props.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
        Map<Integer, Long> first = new HashMap<>();
        try (KafkaConsumer<String, String> c = new KafkaConsumer<>(props, new StringDeserializer(),
                new StringDeserializer())) {
            c.subscribe(List.of(topic));
            Clients.waitUntil(() -> {
                for (ConsumerRecord<String, String> r : c.poll(Clients.POLL)) {
                    first.putIfAbsent(r.partition(), r.offset());
                }
                return first.size() == 2;
            }, Clients.OP_TIMEOUT, () -> "a record from each partition, have " + first);
        }
        assertEquals(Map.of(0, 3L, 1, 5L), first, "first offsets consumed");

        Clients.get(admin().deleteConsumerGroupOffsets(group, Set.of(p1)).all());
        committed = Clients.get(admin().listConsumerGroupOffsets(group).partitionsToOffsetAndMetadata());
        assertEquals(Set.of(p0), committed.keySet(), "offsets left after deleting p1's");

        assertTrue(Clients.get(admin().listGroups().all()).stream().map(GroupListing::groupId).anyMatch(group::equals),
                "listGroups shows " + group);
        Clients.get(admin().deleteConsumerGroups(List.of(group)).all());
        assertFalse(Clients.get(admin().listGroups().all()).stream().map(GroupListing::groupId).anyMatch(group::equals),
                "listGroups no longer shows " + group);
    }

    @Test
    void describeClusterAndAddPartitions() throws Exception {
        DescribeClusterResult cluster = admin().describeCluster();
        assertEquals(1, Clients.get(cluster.nodes()).size(), "nodes");
        assertNotNull(Clients.get(cluster.controller()), "controller");
        assertFalse(Clients.get(cluster.clusterId()).isEmpty(), "cluster id");

        String topic = "java-add-partitions";
        Clients.createTopic(admin(), topic, 2);
        Clients.get(admin().createPartitions(Map.of(topic, NewPartitions.increaseTo(5))).all());
        Clients.waitUntil(() -> {
            try {
                return Clients.get(admin().describeTopics(List.of(topic)).allTopicNames()).get(topic)
                        .partitions().size() == 5;
            } catch (Exception e) {
                throw new AssertionError(e);
            }
        }, Clients.OP_TIMEOUT, () -> topic + " to have 5 partitions");
        try (KafkaProducer<String, String> p = Clients.idempotentProducer(silt.broker(), "gzip")) {
            Clients.produce(p, topic, 5, 0, 10);
        }
    }

    @Test
    void offsetsByTimestamp() throws Exception {
        String topic = "java-offsets-by-time";
        Clients.createTopic(admin(), topic, 1);
        TopicPartition tp = new TopicPartition(topic, 0);
        long base = System.currentTimeMillis() - 60_000;
        try (KafkaProducer<String, String> p = Clients.idempotentProducer(silt.broker(), "snappy")) {
            List<Future<RecordMetadata>> sent = new java.util.ArrayList<>();
            for (int i = 0; i < 10; i++) {
                // Timestamps base, base+1000, ... base+9000: offset i carries base + 1000 i.
                sent.add(p.send(new ProducerRecord<>(topic, 0, base + 1000L * i, "k" + i, "v" + i)));
            }
            p.flush();
            for (Future<RecordMetadata> f : sent) {
                f.get(Clients.OP_TIMEOUT.toSeconds(), TimeUnit.SECONDS);
            }
        }
        assertEquals(4, Clients.get(admin().listOffsets(Map.of(tp, OffsetSpec.forTimestamp(base + 3500)))
                .partitionResult(tp)).offset(), "first offset with timestamp >= base+3500");
        assertEquals(0, Clients.get(admin().listOffsets(Map.of(tp, OffsetSpec.forTimestamp(base - 1)))
                .partitionResult(tp)).offset(), "a timestamp before every record");
        var max = Clients.get(admin().listOffsets(Map.of(tp, OffsetSpec.maxTimestamp())).partitionResult(tp));
        assertEquals(9, max.offset(), "offset of the largest timestamp");
        assertEquals(base + 9000, max.timestamp(), "the largest timestamp");
    }
}
