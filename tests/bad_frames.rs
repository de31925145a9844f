//! Hostile and broken input at the socket: each bad frame closes (or is
//! answered on) only the connection that sent it. The broker process stays
//! up, a fresh connection still gets an ApiVersions answer, and a client
//! that stalls mid-frame holds up no one else.

mod common;

use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use common::*;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable};

/// max.message.bytes for the size-limit tests.
const MAX_MESSAGE_BYTES: usize = 4096;
/// kafka.socket_request_max_bytes for the size-limit tests.
const SOCKET_REQUEST_MAX_BYTES: usize = 1024 * 1024;
/// The length prefix announced (and never sent) in the oversized-request test.
const ANNOUNCED_BYTES: i32 = 200 * 1024 * 1024;
/// Offset of the CRC in a v2 record batch header (base offset 8, length 4,
/// leader epoch 4, magic 1), and of the first byte the CRC covers.
const BATCH_CRC_OFFSET: usize = 17;
const BATCH_ATTRIBUTES_OFFSET: usize = 21;

/// A new connection's ApiVersions still gets a well-formed answer.
fn assert_serving(broker: &mut Broker, after: &str) {
    broker.assert_alive(after);
    let mut client = broker.client();
    let response =
        client.call(&api_versions_request(), 3).unwrap_or_else(|e| panic!("ApiVersions on a new connection after {after}: {e}\n{}", broker.log_tail()));
    assert_eq!(response.error_code, 0, "ApiVersions after {after}: error {}", code_name(response.error_code));
    assert!(!response.api_keys.is_empty(), "ApiVersions after {after} lists no API");
}

/// Sends `bytes` on a new connection, requires the broker to close it
/// without answering, and checks the broker still serves others.
fn expect_refused(broker: &mut Broker, what: &str, bytes: &[u8]) {
    let mut client = broker.client();
    match client.send_raw(bytes) {
        Ok(()) => {}
        // The broker may close before it has read everything we sent.
        Err(WireError::Closed(_)) => {}
        Err(e) => panic!("{what}: sending failed: {e}"),
    }
    client.expect_closed(CLOSE_TIMEOUT).unwrap_or_else(|e| panic!("{what}: {e}\n{}", broker.log_tail()));
    assert_serving(broker, what);
}

fn frame_of(body: &[u8]) -> Vec<u8> {
    let mut out = (body.len() as i32).to_be_bytes().to_vec();
    out.extend_from_slice(body);
    out
}

#[test]
fn garbage_is_refused_and_the_broker_keeps_serving() {
    let mut broker = Broker::start();
    // An HTTP request: "GET " read as a length prefix is ~1.1 GB, over the limit.
    expect_refused(&mut broker, "an HTTP request", b"GET / HTTP/1.1\r\nHost: silt\r\n\r\n");
    // A plausible length followed by noise: API key 0xffff (-1) is unknown.
    expect_refused(&mut broker, "a 32-byte frame of 0xff", &frame_of(&[0xffu8; 32]));
    // Pseudo-random bytes (deterministic), framed.
    let mut noise = Vec::with_capacity(256);
    let mut x: u32 = 0x9e37_79b9;
    for _ in 0..256 {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        noise.push((x >> 24) as u8);
    }
    // Make the header name Metadata v1 so the noise reaches the body decoder.
    noise[0..4].copy_from_slice(&[0, 3, 0, 1]);
    expect_refused(&mut broker, "Metadata v1 with a body of noise", &frame_of(&noise));
}

#[test]
fn malformed_lengths_are_refused() {
    let mut broker = Broker::start();
    expect_refused(&mut broker, "a frame shorter than a request header", &frame_of(&[0, 18, 0]));
    expect_refused(&mut broker, "a zero length prefix", &0i32.to_be_bytes());
    expect_refused(&mut broker, "a negative length prefix", &(-1i32).to_be_bytes());
    expect_refused(&mut broker, "length prefix i32::MIN", &i32::MIN.to_be_bytes());
    // 2 GiB announced, nothing else sent: refused from the prefix alone.
    let started = Instant::now();
    expect_refused(&mut broker, "a 2 GiB length prefix", &0x7fff_ffffi32.to_be_bytes());
    assert!(started.elapsed() < CLOSE_TIMEOUT, "the 2 GiB prefix took {:?} to be refused", started.elapsed());
}

#[test]
fn unknown_apis_and_versions_are_refused() {
    let mut broker = Broker::start();
    expect_refused(&mut broker, "unknown API key 9999", &request_frame_raw(9999, 0, 17, &[]));
    expect_refused(&mut broker, "unknown API key -1", &request_frame_raw(-1, 0, 17, &[]));
    // Transactions are not implemented: EndTxn v3 is closed, not answered.
    let end_txn = EndTxnRequest::default().with_transactional_id(TransactionalId(str_bytes("txn")));
    expect_refused(&mut broker, "EndTxn v3 (not implemented)", &request_frame(ApiKey::EndTxn, 3, 17, &encode_body(&end_txn, 3)));
    expect_refused(&mut broker, "Metadata v99", &request_frame_raw(ApiKey::Metadata as i16, 99, 17, &[0, 0, 0, 0]));
    expect_refused(&mut broker, "Produce v-1", &request_frame_raw(ApiKey::Produce as i16, -1, 17, &[]));

    // ApiVersions of an unknown version is answered (KIP-511): error 35 in the v0 format.
    let mut client = broker.client();
    client.send_raw(&request_frame_raw(ApiKey::ApiVersions as i16, 99, 4242, &[0, 0])).expect("send ApiVersions v99");
    let mut response = client.read_frame(Instant::now() + IO_TIMEOUT).unwrap_or_else(|e| panic!("ApiVersions v99: {e}"));
    let header = ResponseHeader::decode(&mut response, 0).expect("a v0 response header");
    assert_eq!(header.correlation_id, 4242, "ApiVersions v99: correlation id");
    let body: ApiVersionsResponse = decode_exact(ApiKey::ApiVersions, 0, response).unwrap_or_else(|e| panic!("ApiVersions v99 answer in the v0 format: {e}"));
    assert_eq!(body.error_code, 35, "ApiVersions v99: error {}", code_name(body.error_code));
    assert!(body.api_keys.iter().any(|k| k.api_key == ApiKey::ApiVersions as i16), "the v99 answer lists the supported ApiVersions versions");
    assert_serving(&mut broker, "ApiVersions v99");
}

/// A request frame with an arbitrary (possibly unknown) API key and version.
/// The header is v1 (non-flexible) when the API is unknown.
fn request_frame_raw(api_key: i16, version: i16, correlation_id: i32, body: &[u8]) -> Vec<u8> {
    let mut buf = BytesMut::new();
    buf.put_i16(api_key);
    buf.put_i16(version);
    buf.put_i32(correlation_id);
    buf.put_i16(CLIENT_ID.len() as i16);
    buf.put_slice(CLIENT_ID.as_bytes());
    buf.put_slice(body);
    frame_of(&buf)
}

#[test]
fn huge_declared_lengths_inside_a_request_are_refused() {
    let mut broker = Broker::start();
    // Metadata v0: topics array claiming 2^31-1 entries, then a few bytes.
    let mut body = BytesMut::new();
    body.put_i32(0x7fff_ffff);
    body.put_slice(&[0, 3, b'a', b'b', b'c']);
    expect_refused(&mut broker, "Metadata v0 with a topics array of 2^31-1", &request_frame(ApiKey::Metadata, 0, 17, &body));

    // Metadata v12 (flexible): a compact array length varint of 2^32-1 (UNSIGNED_VARINT 0xffffffff).
    let mut body = BytesMut::new();
    body.put_slice(&[0xff, 0xff, 0xff, 0xff, 0x0f]);
    body.put_slice(&[1, 0, 0]);
    expect_refused(&mut broker, "Metadata v12 with a compact topics array of 2^32-2", &request_frame(ApiKey::Metadata, 12, 17, &body));

    // Produce v3: records bytes declaring 2^31-1 bytes, a few present.
    let mut body = BytesMut::new();
    body.put_i16(-1); // transactional id: null
    body.put_i16(-1); // acks
    body.put_i32(30_000); // timeout
    body.put_i32(1); // one topic
    body.put_i16(1);
    body.put_slice(b"t");
    body.put_i32(1); // one partition
    body.put_i32(0); // index
    body.put_i32(0x7fff_ffff); // records: bytes length
    body.put_slice(&[0u8; 8]);
    expect_refused(&mut broker, "Produce v3 with records of 2^31-1 bytes", &request_frame(ApiKey::Produce, 3, 17, &body));

    // A string (client id) longer than the frame.
    let mut header = BytesMut::new();
    header.put_i16(ApiKey::Metadata as i16);
    header.put_i16(1);
    header.put_i32(17);
    header.put_i16(0x7fff);
    header.put_slice(b"short");
    expect_refused(&mut broker, "a client id declaring 32767 bytes", &frame_of(&header));

    // Trailing bytes after a well-formed body are ignored, as Apache Kafka
    // ignores them (librdkafka 2.16 sends some after an all-topics Metadata v13).
    let mut body = BytesMut::new();
    MetadataRequest::default().with_topics(None).encode(&mut body, 1).expect("encode metadata");
    body.put_slice(b"trailing");
    let mut client = broker.client();
    let answer = client.call_raw(ApiKey::Metadata, 1, &body).unwrap_or_else(|e| panic!("Metadata v1 with trailing bytes: {e}\n{}", broker.log_tail()));
    let response: MetadataResponse = decode_exact(ApiKey::Metadata, 1, answer).expect("a Metadata v1 response");
    assert_eq!(response.brokers.len(), 1, "Metadata with trailing bytes is answered");
}

/// A broker with small limits for the size tests.
fn small_limits_broker() -> Broker {
    Broker::start_with(&[
        ("SILT_LOG__MAX_MESSAGE_BYTES", &MAX_MESSAGE_BYTES.to_string()),
        ("SILT_KAFKA__SOCKET_REQUEST_MAX_BYTES", &SOCKET_REQUEST_MAX_BYTES.to_string()),
    ])
}

#[test]
fn a_batch_over_max_message_bytes_is_refused_with_message_too_large() {
    let mut broker = small_limits_broker();
    let topic = unique_topic("too-large");
    let mut client = broker.client();
    client.create_topic_ok(&topic, 1);

    let small = vec![b's'; MAX_MESSAGE_BYTES / 4];
    let fits = client.produce(&topic, 0, plain_batch(&[&small]));
    assert_eq!(fits.error_code, 0, "a batch under max.message.bytes: error {}", code_name(fits.error_code));

    let big = vec![b'x'; MAX_MESSAGE_BYTES * 2];
    let batch = plain_batch(&[&big]);
    assert!(batch.len() > MAX_MESSAGE_BYTES && batch.len() < SOCKET_REQUEST_MAX_BYTES);
    let refused = client.produce(&topic, 0, batch);
    assert_eq!(
        refused.error_code,
        10,
        "a {}-byte batch with max.message.bytes {MAX_MESSAGE_BYTES}: error {}",
        MAX_MESSAGE_BYTES * 2,
        code_name(refused.error_code)
    );
    assert_eq!(client.log_end_offset(&topic, 0), 1, "the refused batch changed the log end");
    // The connection stays usable after an error code.
    let after = client.produce(&topic, 0, plain_batch(&[b"after"]));
    assert_eq!(after.error_code, 0);
    assert_eq!(after.base_offset, 1);
    assert_serving(&mut broker, "a batch over max.message.bytes");
}

#[test]
fn a_batch_with_a_corrupted_crc_is_refused_with_corrupt_message() {
    let mut broker = Broker::start();
    let topic = unique_topic("corrupt");
    let mut client = broker.client();
    client.create_topic_ok(&topic, 1);
    let good = plain_batch(&[b"first", b"second"]);
    assert_eq!(client.produce(&topic, 0, good.clone()).error_code, 0);

    // Flip one byte of a record value (covered by the CRC).
    let mut corrupted = good.to_vec();
    let last = corrupted.len() - 3;
    corrupted[last] ^= 0x55;
    let refused = client.produce(&topic, 0, Bytes::from(corrupted));
    assert_eq!(refused.error_code, 2, "a batch whose value no longer matches its CRC: error {}", code_name(refused.error_code));

    // Change the CRC itself.
    let mut bad_crc = good.to_vec();
    bad_crc[BATCH_CRC_OFFSET] ^= 0xff;
    let refused = client.produce(&topic, 0, Bytes::from(bad_crc));
    assert_eq!(refused.error_code, 2, "a batch with a wrong CRC field: error {}", code_name(refused.error_code));

    // Flip a bit of the attributes (the first CRC-covered field).
    let mut bad_attributes = good.to_vec();
    bad_attributes[BATCH_ATTRIBUTES_OFFSET + 1] ^= 0x08;
    let refused = client.produce(&topic, 0, Bytes::from(bad_attributes));
    assert_eq!(refused.error_code, 2, "a batch with altered attributes: error {}", code_name(refused.error_code));

    assert_eq!(client.log_end_offset(&topic, 0), 2, "a corrupt batch changed the log end");
    let records = client.read_all(&topic, 0, 0);
    let values: Vec<_> = records.iter().map(|r| r.value.clone().unwrap_or_default()).collect();
    assert_eq!(values, vec![Bytes::from_static(b"first"), Bytes::from_static(b"second")], "the log holds only the good batch");
    assert_serving(&mut broker, "corrupted batches");
}

#[test]
fn a_request_over_socket_request_max_bytes_is_closed_before_it_is_read() {
    let mut broker = small_limits_broker();
    let mut client = broker.client();
    // Only the prefix of a 200 MiB frame: the broker must not wait for the body.
    let started = Instant::now();
    client.send_raw(&ANNOUNCED_BYTES.to_be_bytes()).expect("send the length prefix");
    client
        .expect_closed(CLOSE_TIMEOUT)
        .unwrap_or_else(|e| panic!("a {ANNOUNCED_BYTES}-byte request with socket_request_max_bytes {SOCKET_REQUEST_MAX_BYTES}: {e}\n{}", broker.log_tail()));
    assert!(started.elapsed() < CLOSE_TIMEOUT);
    assert_serving(&mut broker, "an oversized request");

    // Just over the limit, fully sent: also refused.
    let over = SOCKET_REQUEST_MAX_BYTES + 1;
    let mut frame = (over as i32).to_be_bytes().to_vec();
    frame.resize(4 + over, 0);
    expect_refused(&mut broker, "a request one byte over socket_request_max_bytes", &frame);

    // Within the limit: a real produce of ~512 KiB to a topic whose max.message.bytes allows it.
    let topic = unique_topic("near-limit");
    let mut client = broker.client();
    let create = CreateTopicsRequest::default()
        .with_topics(vec![kafka_protocol::messages::create_topics_request::CreatableTopic::default()
            .with_name(topic_name(&topic))
            .with_num_partitions(1)
            .with_replication_factor(1)
            .with_configs(vec![kafka_protocol::messages::create_topics_request::CreatableTopicConfig::default()
                .with_name(str_bytes("max.message.bytes"))
                .with_value(Some(str_bytes(&SOCKET_REQUEST_MAX_BYTES.to_string())))])])
        .with_timeout_ms(30_000);
    let created = client.must(&create, 7);
    assert_eq!(created.topics[0].error_code, 0, "create {topic}: error {}", code_name(created.topics[0].error_code));
    let value = vec![b'v'; SOCKET_REQUEST_MAX_BYTES / 2];
    let produced = client.produce(&topic, 0, plain_batch(&[&value]));
    assert_eq!(produced.error_code, 0, "a {}-byte produce under socket_request_max_bytes: error {}", value.len(), code_name(produced.error_code));
}

#[test]
fn a_stalled_half_frame_does_not_block_other_connections() {
    let mut broker = Broker::start();
    let topic = unique_topic("stall");
    let mut admin = broker.client();
    admin.create_topic_ok(&topic, 1);

    // Half of a produce frame, then silence.
    let full = request_frame(ApiKey::Produce, 9, 5, &encode_body(&produce_request(&topic, 0, plain_batch(&[b"stalled"])), 9));
    let mut stalled = broker.client();
    stalled.send_raw(&full[..full.len() / 2]).expect("send half a frame");
    // And a connection that sent only two bytes of a length prefix.
    let mut stalled_prefix = broker.client();
    stalled_prefix.send_raw(&full[..2]).expect("send half a length prefix");
    // Wait until the broker has read the half frame off the socket, so it
    // is really parked in the middle of that request.
    wait_until(IO_TIMEOUT, "the broker to read the half frame from its socket", || broker_receive_queue(broker.kafka, stalled.local_addr()) == Some(0));

    let mut other = broker.client();
    other.timeout = Duration::from_secs(5);
    let started = Instant::now();
    for i in 0..3 {
        let produced = other.produce(&topic, 0, plain_batch(&[format!("other-{i}").as_bytes()]));
        assert_eq!(produced.error_code, 0, "produce while another connection stalls: error {}", code_name(produced.error_code));
        assert_eq!(produced.base_offset, i);
    }
    let fetched = other.fetch(&topic, 0, 0, 0, 1);
    assert_eq!(fetched.error_code, 0);
    assert_eq!(decode_records(fetched.records.as_ref()).len(), 3, "records fetched while another connection stalls");
    assert!(started.elapsed() < Duration::from_secs(5), "3 produces and a fetch took {:?} next to a stalled connection", started.elapsed());

    // The stalled producer completes its frame late: it is still served.
    stalled.send_raw(&full[full.len() / 2..]).expect("send the rest of the frame");
    let mut response = stalled.read_frame(Instant::now() + IO_TIMEOUT).unwrap_or_else(|e| panic!("the completed frame: {e}"));
    let header = ResponseHeader::decode(&mut response, ApiKey::Produce.response_header_version(9)).expect("response header");
    assert_eq!(header.correlation_id, 5);
    let body: ProduceResponse = decode_exact(ApiKey::Produce, 9, response).expect("produce response");
    let p = single_produce_partition(body, &topic);
    assert_eq!(p.error_code, 0);
    assert_eq!(p.base_offset, 3, "the late batch lands after the others");
    drop(stalled_prefix);
    assert_serving(&mut broker, "stalled connections");
}

/// Many connections sending garbage at once, then a normal client.
#[test]
fn a_burst_of_bad_connections_leaves_the_broker_serving() {
    /// Connections in the burst.
    const CONNECTIONS: usize = 50;
    let mut broker = Broker::start();
    let addr = broker.kafka;
    let payloads: Vec<Vec<u8>> = vec![
        b"\x00\x00\x00\x04\x00".to_vec(),
        (-7i32).to_be_bytes().to_vec(),
        frame_of(&[0xee; 40]),
        request_frame_raw(ApiKey::Metadata as i16, 77, 1, &[]),
        0x7fff_ffffi32.to_be_bytes().to_vec(),
    ];
    let mut clients: Vec<Client> = (0..CONNECTIONS).map(|_| Client::connect(addr)).collect();
    for (i, client) in clients.iter_mut().enumerate() {
        let _ = client.send_raw(&payloads[i % payloads.len()]);
    }
    for (i, client) in clients.iter_mut().enumerate() {
        // The first payload is an incomplete frame: we end it by closing our side.
        if i % payloads.len() == 0 {
            client.shutdown_write();
        }
        client.expect_closed(CLOSE_TIMEOUT).unwrap_or_else(|e| panic!("bad connection {i}: {e}"));
    }
    assert_serving(&mut broker, "a burst of bad connections");
    let metadata = broker.client().metadata(&[], false);
    assert_eq!(metadata.brokers.len(), 1);
}
