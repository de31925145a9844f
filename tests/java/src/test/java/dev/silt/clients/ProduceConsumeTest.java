package dev.silt.clients;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.TreeMap;
import java.util.concurrent.TimeUnit;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.clients.producer.RecordMetadata;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.header.Headers;
import org.apache.kafka.common.serialization.StringDeserializer;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.RegisterExtension;
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

    @RegisterExtension
    static final BrokerExtension silt = new BrokerExtension();

    @ParameterizedTest(name = "compression={0}")
    @ValueSource(strings = {"gzip", "snappy", "lz4", "zstd"})
    void idempotentProduceThenConsume(String compression) throws Exception {
        String topic = "java-produce-" + compression;
        try (Admin admin = Clients.admin(silt.broker())) {
            Clients.createTopic(admin, topic, PARTITIONS);
        }
        Map<Integer, RecordMetadata> acked;
        try (KafkaProducer<String, String> producer = Clients.idempotentProducer(silt.broker(), compression)) {
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

        List<ConsumerRecord<String, String>> records = Clients.readAll(silt.broker(), topic, end);
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
        silt.broker().assertAlive();
        assertTrue(records.stream().allMatch(r -> r.timestamp() > 0), "every record carries a timestamp");
    }

    /**
     * Record shapes beyond key and value: headers, a null key, a null value (a
     * tombstone), an empty value and a 600 KB value, read back by a
     * read_committed consumer whose per-partition fetch limit (1 KiB) is
     * smaller than the big record's batch: the broker must still return it.
     */
    @Test
    void headersNullsAndALargeRecordRoundTrip() throws Exception {
        String topic = "java-record-shapes";
        try (Admin admin = Clients.admin(silt.broker())) {
            Clients.createTopic(admin, topic, 1);
        }
        String big = "x".repeat(600 * 1024);
        List<ProducerRecord<String, String>> sent = new ArrayList<>();
        ProducerRecord<String, String> withHeaders = new ProducerRecord<>(topic, 0, "h", "with headers");
        withHeaders.headers().add("trace", "abc".getBytes(StandardCharsets.UTF_8)).add("empty", new byte[0])
                .add("null", null);
        sent.add(withHeaders);
        sent.add(new ProducerRecord<>(topic, 0, null, "no key"));
        sent.add(new ProducerRecord<>(topic, 0, "tombstone", null));
        sent.add(new ProducerRecord<>(topic, 0, "empty", ""));
        sent.add(new ProducerRecord<>(topic, 0, "big", big));
        try (KafkaProducer<String, String> producer = Clients.idempotentProducer(silt.broker(), "zstd")) {
            for (ProducerRecord<String, String> r : sent) {
                producer.send(r).get(Clients.OP_TIMEOUT.toSeconds(), TimeUnit.SECONDS);
            }
        }
        Properties props = Clients.common(silt.broker(), "silt-java-shapes");
        props.put(ConsumerConfig.ISOLATION_LEVEL_CONFIG, "read_committed");
        props.put(ConsumerConfig.MAX_PARTITION_FETCH_BYTES_CONFIG, "1024");
        props.put(ConsumerConfig.FETCH_MAX_BYTES_CONFIG, "1024");
        List<ConsumerRecord<String, String>> got = new ArrayList<>();
        TopicPartition tp = new TopicPartition(topic, 0);
        try (KafkaConsumer<String, String> c = new KafkaConsumer<>(props, new StringDeserializer(),
                new StringDeserializer())) {
            c.assign(List.of(tp));
            c.seekToBeginning(List.of(tp));
            Clients.waitUntil(() -> {
                c.poll(Clients.POLL).forEach(got::add);
                return got.size() >= sent.size();
            }, Clients.OP_TIMEOUT, () -> sent.size() + " records, have " + got.size());
        }
        assertEquals(sent.size(), got.size());
        for (int i = 0; i < sent.size(); i++) {
            assertEquals(i, got.get(i).offset());
            assertEquals(sent.get(i).key(), got.get(i).key(), "key of record " + i);
            assertEquals(sent.get(i).value(), got.get(i).value(), "value of record " + i);
        }
        Headers h = got.get(0).headers();
        assertEquals("abc", new String(h.lastHeader("trace").value(), StandardCharsets.UTF_8));
        assertEquals(0, h.lastHeader("empty").value().length);
        assertNull(h.lastHeader("null").value());
        assertEquals(3, h.toArray().length, "header count");
    }
}
