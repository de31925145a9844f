package dev.silt.clients;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.Collection;
import java.util.List;
import java.util.Map;
import java.util.concurrent.ExecutionException;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AlterConfigOp;
import org.apache.kafka.clients.admin.Config;
import org.apache.kafka.clients.admin.ConfigEntry;
import org.apache.kafka.clients.admin.DeletedRecords;
import org.apache.kafka.clients.admin.ListOffsetsResult;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.admin.OffsetSpec;
import org.apache.kafka.clients.admin.RecordsToDelete;
import org.apache.kafka.clients.admin.TopicDescription;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.Uuid;
import org.apache.kafka.common.config.ConfigResource;
import org.apache.kafka.common.errors.UnknownTopicOrPartitionException;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.RegisterExtension;

/** The Admin API an operator's tooling uses, each call checked by reading the result back. */
class AdminTest {
    @RegisterExtension
    static final BrokerExtension silt = new BrokerExtension();

    static Admin admin() {
        return silt.admin();
    }

    static Map<String, ConfigEntry> topicConfig(String topic) throws Exception {
        ConfigResource res = new ConfigResource(ConfigResource.Type.TOPIC, topic);
        Config cfg = Clients.get(admin().describeConfigs(List.of(res)).all()).get(res);
        return cfg.entries().stream().collect(java.util.stream.Collectors.toMap(ConfigEntry::name, e -> e));
    }

    @Test
    void createDescribeAlterConfigsAndDeleteTopic() throws Exception {
        String topic = "java-admin-topic";
        NewTopic nt = new NewTopic(topic, 3, (short) 1).configs(Map.of("retention.ms", "3600000"));
        Clients.get(admin().createTopics(List.of(nt)).all());

        assertTrue(Clients.get(admin().listTopics().names()).contains(topic), "listTopics shows the new topic");
        TopicDescription d = Clients.get(admin().describeTopics(List.of(topic)).allTopicNames()).get(topic);
        assertEquals(3, d.partitions().size(), "partitions");
        for (var p : d.partitions()) {
            assertTrue(p.leader() != null && !p.leader().isEmpty(), "partition " + p.partition() + " has a leader");
            assertEquals(1, p.replicas().size(), "replicas of partition " + p.partition());
        }
        assertNotEquals(Uuid.ZERO_UUID, d.topicId(), "topic id");

        ConfigEntry retention = topicConfig(topic).get("retention.ms");
        assertEquals("3600000", retention.value());
        assertEquals(ConfigEntry.ConfigSource.DYNAMIC_TOPIC_CONFIG, retention.source());

        // SET one key and DELETE (revert to default) another in one request.
        ConfigResource res = new ConfigResource(ConfigResource.Type.TOPIC, topic);
        Collection<AlterConfigOp> ops = List.of(
                new AlterConfigOp(new ConfigEntry("cleanup.policy", "delete"), AlterConfigOp.OpType.SET),
                new AlterConfigOp(new ConfigEntry("segment.bytes", "1048576"), AlterConfigOp.OpType.SET),
                new AlterConfigOp(new ConfigEntry("retention.ms", ""), AlterConfigOp.OpType.DELETE));
        Clients.get(admin().incrementalAlterConfigs(Map.of(res, ops)).all());
        Map<String, ConfigEntry> after = topicConfig(topic);
        assertEquals("1048576", after.get("segment.bytes").value());
        assertEquals(ConfigEntry.ConfigSource.DYNAMIC_TOPIC_CONFIG, after.get("segment.bytes").source());
        // Back to the broker's default: what a topic created without overrides shows.
        String control = topic + "-defaults";
        Clients.createTopic(admin(), control, 1);
        assertEquals(topicConfig(control).get("retention.ms").value(), after.get("retention.ms").value(),
                "retention.ms back to the broker default");
        assertTrue(after.get("retention.ms").source() != ConfigEntry.ConfigSource.DYNAMIC_TOPIC_CONFIG,
                "retention.ms is no longer a topic override: " + after.get("retention.ms"));
        Clients.get(admin().deleteTopics(List.of(control)).all());

        // An unknown key is refused.
        AlterConfigOp unknown = new AlterConfigOp(new ConfigEntry("no.such.config", "1"), AlterConfigOp.OpType.SET);
        ExecutionException bad = assertThrows(ExecutionException.class,
                () -> Clients.get(admin().incrementalAlterConfigs(Map.of(res, List.of(unknown))).all()));
        assertInstanceOf(org.apache.kafka.common.errors.InvalidConfigurationException.class, bad.getCause());

        Clients.get(admin().deleteTopics(List.of(topic)).all());
        Clients.waitUntil(() -> {
            try {
                return !Clients.get(admin().listTopics().names()).contains(topic);
            } catch (Exception e) {
                throw new AssertionError(e);
            }
        }, Clients.OP_TIMEOUT, () -> topic + " to leave listTopics");
        ExecutionException gone = assertThrows(ExecutionException.class,
                () -> Clients.get(admin().describeTopics(List.of(topic)).allTopicNames()));
        assertInstanceOf(UnknownTopicOrPartitionException.class, gone.getCause());
    }

    @Test
    void deleteRecordsMovesTheLogStart() throws Exception {
        String topic = "java-admin-delete-records";
        Clients.createTopic(admin(), topic, 1);
        TopicPartition tp = new TopicPartition(topic, 0);
        try (KafkaProducer<String, String> producer = Clients.idempotentProducer(silt.broker(), "none")) {
            Clients.produce(producer, topic, 1, 0, 20);
        }
        DeletedRecords deleted = Clients.get(admin().deleteRecords(Map.of(tp, RecordsToDelete.beforeOffset(7)))
                .lowWatermarks().get(tp));
        assertEquals(7, deleted.lowWatermark(), "low watermark after DeleteRecords");

        ListOffsetsResult.ListOffsetsResultInfo earliest =
                Clients.get(admin().listOffsets(Map.of(tp, OffsetSpec.earliest())).partitionResult(tp));
        ListOffsetsResult.ListOffsetsResultInfo latest =
                Clients.get(admin().listOffsets(Map.of(tp, OffsetSpec.latest())).partitionResult(tp));
        assertEquals(7, earliest.offset(), "earliest offset");
        assertEquals(20, latest.offset(), "latest offset");

        List<ConsumerRecord<String, String>> rest = Clients.readAll(silt.broker(), topic, Map.of(tp, 20L));
        assertEquals(13, rest.size(), "records left after the deletion");
        assertEquals(7, rest.get(0).offset(), "a read from the beginning starts at the new log start");
        assertEquals("v-7", rest.get(0).value());
    }
}
