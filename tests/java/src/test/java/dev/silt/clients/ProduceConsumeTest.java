package dev.silt.clients;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.RecordMetadata;
import org.apache.kafka.common.TopicPartition;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/**
 * An idempotent producer with each compression codec, then a consumer reading
 * everything back: every record arrives once, in order, at the offset the
 * producer was told.
 */
class ProduceConsumeTest {
    static final int PARTITIONS = 3;
    static final int RECORDS = 600;

    static SiltBroker broker;

    @BeforeAll
    static void startBroker() throws Exception {
        broker = SiltBroker.start();
    }

    @AfterAll
    static void stopBroker() throws Exception {
        if (broker != null) {
            broker.close();
        }
    }

    @ParameterizedTest(name = "compression={0}")
    @ValueSource(strings = {"gzip", "snappy", "lz4", "zstd"})
    void idempotentProduceThenConsume(String compression) throws Exception {
        String topic = "java-produce-" + compression;
        try (Admin admin = Clients.admin(broker)) {
            Clients.createTopic(admin, topic, PARTITIONS);
        }
        Map<Integer, RecordMetadata> acked;
        try (KafkaProducer<String, String> producer = Clients.idempotentProducer(broker, compression)) {
            // Two flushes: the second batch continues the producer's sequence numbers.
            acked = new HashMap<>(Clients.produce(producer, topic, PARTITIONS, 0, RECORDS / 2));
            acked.putAll(Clients.produce(producer, topic, PARTITIONS, RECORDS / 2, RECORDS / 2));
        }
        Map<TopicPartition, Long> end = new TreeMap<>(java.util.Comparator.comparing(TopicPartition::partition));
        for (int p = 0; p < PARTITIONS; p++) {
            end.put(new TopicPartition(topic, p), (long) RECORDS / PARTITIONS);
        }
        // Each partition holds exactly its ids at offsets 0..n-1: no gaps, no duplicates.
        for (var e : acked.entrySet()) {
            int id = e.getKey();
            RecordMetadata md = e.getValue();
            assertEquals(id % PARTITIONS, md.partition(), "partition of id " + id);
            assertEquals(id / PARTITIONS, md.offset(), "offset of id " + id);
        }

        List<ConsumerRecord<String, String>> records = Clients.readAll(broker, topic, end);
        assertEquals(RECORDS, records.size(), "records read back");
        Map<Integer, Long> nextOffset = new HashMap<>();
        for (ConsumerRecord<String, String> r : records) {
            long expected = nextOffset.getOrDefault(r.partition(), 0L);
            assertEquals(expected, r.offset(), "offsets in partition " + r.partition() + " are dense and in order");
            nextOffset.put(r.partition(), expected + 1);
            int id = (int) (r.offset() * PARTITIONS + r.partition());
            assertEquals("key-" + id, r.key());
            assertEquals("v-" + id, r.value());
        }
        broker.assertAlive();
        assertTrue(records.stream().allMatch(r -> r.timestamp() > 0), "every record carries a timestamp");
    }
}
