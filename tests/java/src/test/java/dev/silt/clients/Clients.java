package dev.silt.clients;

import java.time.Duration;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.concurrent.TimeUnit;
import java.util.function.BooleanSupplier;
import java.util.function.Supplier;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.clients.producer.RecordMetadata;
import org.apache.kafka.common.KafkaFuture;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.StringDeserializer;
import org.apache.kafka.common.serialization.StringSerializer;

/** Client construction and bounded waits shared by the test classes. */
final class Clients {
    /** Deadline for one client operation (admin call, flush, a consume). */
    static final Duration OP_TIMEOUT = Duration.ofSeconds(60);
    /** One consumer poll; a pacing bound, never a synchronisation sleep. */
    static final Duration POLL = Duration.ofMillis(200);

    private Clients() {}

    static Properties common(SiltBroker broker, String clientId) {
        Properties p = new Properties();
        p.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, broker.bootstrap());
        p.put(AdminClientConfig.CLIENT_ID_CONFIG, clientId);
        p.put(AdminClientConfig.REQUEST_TIMEOUT_MS_CONFIG, "30000");
        return p;
    }

    static Admin admin(SiltBroker broker) {
        return Admin.create(common(broker, "silt-java-admin"));
    }

    /** An idempotent producer (acks=all) with the given compression codec. */
    static KafkaProducer<String, String> idempotentProducer(SiltBroker broker, String compression) {
        Properties p = common(broker, "silt-java-producer-" + compression);
        p.put(ProducerConfig.ENABLE_IDEMPOTENCE_CONFIG, "true");
        p.put(ProducerConfig.ACKS_CONFIG, "all");
        p.put(ProducerConfig.COMPRESSION_TYPE_CONFIG, compression);
        p.put(ProducerConfig.LINGER_MS_CONFIG, "5");
        p.put(ProducerConfig.DELIVERY_TIMEOUT_MS_CONFIG, "60000");
        return new KafkaProducer<>(p, new StringSerializer(), new StringSerializer());
    }

    /** A consumer with no group, for assign()-and-seek reads. */
    static KafkaConsumer<String, String> plainConsumer(SiltBroker broker) {
        Properties p = common(broker, "silt-java-reader");
        p.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, "false");
        p.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
        return new KafkaConsumer<>(p, new StringDeserializer(), new StringDeserializer());
    }

    /** The value of an admin future, or its failure, within {@link #OP_TIMEOUT}. */
    static <T> T get(KafkaFuture<T> f) throws Exception {
        return f.get(OP_TIMEOUT.toSeconds(), TimeUnit.SECONDS);
    }

    static void createTopic(Admin admin, String topic, int partitions) throws Exception {
        admin.createTopics(List.of(new NewTopic(topic, partitions, (short) 1)))
                .all().get(OP_TIMEOUT.toSeconds(), TimeUnit.SECONDS);
    }

    /**
     * Sends one record per id with key "key-i" and value "v-i" to partition
     * i % partitions, flushes, and returns where each landed. Every send must succeed.
     */
    static Map<Integer, RecordMetadata> produce(KafkaProducer<String, String> producer, String topic,
                                                int partitions, int fromId, int count) throws Exception {
        Map<Integer, java.util.concurrent.Future<RecordMetadata>> futures = new HashMap<>();
        for (int i = fromId; i < fromId + count; i++) {
            futures.put(i, producer.send(new ProducerRecord<>(topic, i % partitions, "key-" + i, "v-" + i)));
        }
        producer.flush();
        Map<Integer, RecordMetadata> out = new HashMap<>();
        for (var e : futures.entrySet()) {
            out.put(e.getKey(), e.getValue().get(OP_TIMEOUT.toSeconds(), TimeUnit.SECONDS));
        }
        return out;
    }

    /** Reads every partition of {@code topic} from the beginning up to {@code end} offsets. */
    static List<ConsumerRecord<String, String>> readAll(SiltBroker broker, String topic,
                                                        Map<TopicPartition, Long> end) {
        List<ConsumerRecord<String, String>> out = new ArrayList<>();
        try (KafkaConsumer<String, String> c = plainConsumer(broker)) {
            c.assign(end.keySet());
            c.seekToBeginning(end.keySet());
            waitUntil(() -> {
                for (ConsumerRecord<String, String> r : c.poll(POLL)) {
                    out.add(r);
                }
                return end.entrySet().stream().allMatch(e -> c.position(e.getKey()) >= e.getValue());
            }, OP_TIMEOUT, () -> "reading " + topic + " up to " + end + "; have " + out.size() + " records");
        }
        return out;
    }

    /**
     * Polls {@code condition} until it holds or {@code timeout} passes, then
     * fails naming what was awaited. The condition decides when to proceed.
     */
    static void waitUntil(BooleanSupplier condition, Duration timeout, Supplier<String> what) {
        long deadline = System.nanoTime() + timeout.toNanos();
        while (!condition.getAsBoolean()) {
            if (System.nanoTime() >= deadline) {
                throw new AssertionError("timed out after " + timeout + " waiting for " + what.get());
            }
            try {
                Thread.sleep(20);
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                throw new AssertionError("interrupted waiting for " + what.get(), e);
            }
        }
    }
}
