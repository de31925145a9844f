package dev.silt.clients;

import static org.junit.jupiter.api.Assertions.assertEquals;

import java.util.HashSet;
import java.util.List;
import java.util.Properties;
import java.util.Set;
import java.util.function.Consumer;
import java.util.regex.Pattern;

import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.consumer.SubscriptionPattern;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.common.serialization.StringDeserializer;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.RegisterExtension;

/**
 * Subscribing by pattern: every record of the topics that match, including a
 * topic created after the subscription, and nothing from a topic that does
 * not match. java.util.regex patterns are matched by the client (both
 * protocols); a {@link SubscriptionPattern} is sent to the broker
 * (ConsumerGroupHeartbeat's SubscribedTopicRegex, KIP-848), which matches it.
 */
class RegexSubscriptionTest {
    @RegisterExtension
    static final BrokerExtension silt = new BrokerExtension();

    static final int RECORDS = 10;

    /** Runs the scenario with names prefixed {@code prefix}; {@code subscribe} subscribes to "prefix-.*". */
    static void consumeByPattern(String prefix, String protocol,
                                 Consumer<KafkaConsumer<String, String>> subscribe) throws Exception {
        Clients.createTopic(silt.admin(), prefix + "-a", 1);
        Clients.createTopic(silt.admin(), "other-" + prefix, 1);
        try (KafkaProducer<String, String> p = Clients.idempotentProducer(silt.broker(), "none")) {
            Clients.produce(p, prefix + "-a", 1, 0, RECORDS);
            Clients.produce(p, "other-" + prefix, 1, 0, RECORDS);
        }
        Properties props = Clients.common(silt.broker(), "silt-java-" + prefix);
        props.put(ConsumerConfig.GROUP_ID_CONFIG, prefix);
        props.put(ConsumerConfig.GROUP_PROTOCOL_CONFIG, protocol);
        props.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
        // Client-side matching sees a new topic on the next metadata refresh.
        props.put(ConsumerConfig.METADATA_MAX_AGE_CONFIG, "500");
        Set<String> seen = new HashSet<>();
        try (KafkaConsumer<String, String> c = new KafkaConsumer<>(props, new StringDeserializer(),
                new StringDeserializer())) {
            subscribe.accept(c);
            Runnable poll = () -> {
                for (ConsumerRecord<String, String> r : c.poll(Clients.POLL)) {
                    seen.add(r.topic() + "/" + r.offset());
                }
            };
            Clients.waitUntil(() -> {
                poll.run();
                return seen.size() >= RECORDS;
            }, Clients.OP_TIMEOUT, () -> RECORDS + " records of " + prefix + "-a, have " + seen);

            Clients.createTopic(silt.admin(), prefix + "-b", 1);
            try (KafkaProducer<String, String> p = Clients.idempotentProducer(silt.broker(), "none")) {
                Clients.produce(p, prefix + "-b", 1, 0, RECORDS);
            }
            Clients.waitUntil(() -> {
                poll.run();
                return seen.size() >= 2 * RECORDS;
            }, Clients.OP_TIMEOUT, () -> "the records of " + prefix + "-b created after subscribing, have " + seen);
        }
        Set<String> want = new HashSet<>();
        for (int i = 0; i < RECORDS; i++) {
            want.add(prefix + "-a/" + i);
            want.add(prefix + "-b/" + i);
        }
        assertEquals(want, seen, "records consumed by pattern (nothing from other-" + prefix + ")");
    }

    @Test
    void classicProtocolClientSidePattern() throws Exception {
        consumeByPattern("regex-classic", "classic", c -> c.subscribe(Pattern.compile("regex-classic-.*")));
    }

    @Test
    void consumerProtocolClientSidePattern() throws Exception {
        consumeByPattern("regex-consumer", "consumer", c -> c.subscribe(Pattern.compile("regex-consumer-.*")));
    }

    /** The broker matches the regex (KIP-848 SubscribedTopicRegex) and re-matches it as topics come and go. */
    @Test
    void consumerProtocolBrokerSidePattern() throws Exception {
        consumeByPattern("regex-broker", "consumer", c -> c.subscribe(new SubscriptionPattern("regex-broker-.*")));
    }
}
