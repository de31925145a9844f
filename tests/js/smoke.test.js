// KafkaJS smoke test against the real silt binary: admin create/delete topic,
// an idempotent gzip producer, and a consumer group reading it all back.
'use strict';

const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { Kafka, CompressionTypes, logLevel } = require('kafkajs');
const { startSilt, waitUntil } = require('./silt_broker');

const OP_TIMEOUT_MS = 60_000;
const PARTITIONS = 3;
const RECORDS = 300;

let silt;
let kafka;

before(async () => {
  silt = await startSilt();
  kafka = new Kafka({ clientId: 'silt-kafkajs', brokers: [silt.bootstrap], logLevel: logLevel.WARN });
});

after(async () => {
  if (silt) await silt.stop();
});

test('admin creates, lists and deletes a topic', async () => {
  const admin = kafka.admin();
  await admin.connect();
  try {
    const topic = 'js-admin-topic';
    assert.equal(await admin.createTopics({ topics: [{ topic, numPartitions: PARTITIONS }], waitForLeaders: true }), true);
    assert.ok((await admin.listTopics()).includes(topic));
    const md = await admin.fetchTopicMetadata({ topics: [topic] });
    assert.equal(md.topics[0].partitions.length, PARTITIONS);
    await admin.deleteTopics({ topics: [topic], timeout: OP_TIMEOUT_MS });
    await waitUntil(async () => !(await admin.listTopics()).includes(topic), OP_TIMEOUT_MS,
      () => `${topic} to leave listTopics`);
  } finally {
    await admin.disconnect();
  }
});

test('idempotent gzip producer, then a consumer group reads everything once', async () => {
  const topic = 'js-produce-consume';
  const admin = kafka.admin();
  await admin.connect();
  await admin.createTopics({ topics: [{ topic, numPartitions: PARTITIONS }], waitForLeaders: true });
  await admin.disconnect();

  const producer = kafka.producer({ idempotent: true, maxInFlightRequests: 1 });
  await producer.connect();
  const messages = [];
  for (let i = 0; i < RECORDS; i++) {
    messages.push({ key: `key-${i}`, value: `v-${i}`, partition: i % PARTITIONS });
  }
  const acks = await producer.send({ topic, acks: -1, compression: CompressionTypes.GZIP, messages });
  await producer.disconnect();
  assert.deepEqual(acks.map((a) => a.errorCode), acks.map(() => 0));

  const group = 'js-group';
  const consumer = kafka.consumer({ groupId: group, sessionTimeout: 6000, heartbeatInterval: 500 });
  const seen = new Map();
  await consumer.connect();
  try {
    await consumer.subscribe({ topic, fromBeginning: true });
    await consumer.run({
      eachMessage: async ({ partition, message }) => {
        const key = `${partition}/${message.offset}`;
        assert.ok(!seen.has(key), `record ${key} delivered twice`);
        seen.set(key, message.value.toString());
      },
    });
    await waitUntil(() => seen.size >= RECORDS, OP_TIMEOUT_MS, () => `${RECORDS} records (have ${seen.size})`);
  } finally {
    await consumer.disconnect();
  }
  assert.equal(seen.size, RECORDS);
  for (let i = 0; i < RECORDS; i++) {
    assert.equal(seen.get(`${i % PARTITIONS}/${Math.floor(i / PARTITIONS)}`), `v-${i}`);
  }

  // The group committed what it consumed (KafkaJS auto-commits on disconnect).
  const admin2 = kafka.admin();
  await admin2.connect();
  try {
    const offsets = await admin2.fetchOffsets({ groupId: group, topics: [topic] });
    const committed = offsets[0].partitions.map((p) => [p.partition, p.offset]).sort((a, b) => a[0] - b[0]);
    assert.deepEqual(committed, [...Array(PARTITIONS).keys()].map((p) => [p, String(RECORDS / PARTITIONS)]));
  } finally {
    await admin2.disconnect();
  }
});
