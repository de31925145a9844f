//! Committed offsets and the record format of the `__consumer_offsets` topic.
//!
//! Records are JSON, versioned by a `"v"` field in the key (currently 1):
//!
//! | key | value |
//! |---|---|
//! | `{"v":1,"offset":{"group":g,"topic":t,"partition":p}}` | `{"offset":o,"leader_epoch":e,"metadata":m,"commit_timestamp_ms":ts}` |
//! | `{"v":1,"group":g}` | `{"protocol_type":..,"generation_id":..,"protocol":..,"leader":..,"members":[..],"consumer":{..}}` |
//!
//! A record without a value (null) is a tombstone: the offset or group is
//! gone. `consumer` (optional) holds a consumer-protocol group: its epochs,
//! members, target assignment and the topic metadata it was computed from.
//! Byte fields (member metadata, assignments) are arrays of numbers.
//! The last record of a key wins when the topic is read back at startup.

use std::collections::BTreeMap;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::TopicPartition;

/// The largest commit metadata string accepted (Kafka's `offset.metadata.max.bytes`).
pub const OFFSET_METADATA_BYTES_MAX: usize = 4096;
/// The record format version written in every key.
pub const RECORD_VERSION: u32 = 1;

/// One committed offset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Committed {
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: String,
    pub commit_timestamp_ms: i64,
}

/// A group's committed offsets.
pub type Offsets = BTreeMap<TopicPartition, Committed>;

/// A member as stored in the group's metadata record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredMember {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    pub protocols: Vec<(String, Vec<u8>)>,
    pub assignment: Vec<u8>,
}

/// The group metadata record's value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredGroup {
    pub protocol_type: Option<String>,
    pub generation_id: i32,
    pub protocol: Option<String>,
    pub leader: Option<String>,
    pub members: Vec<StoredMember>,
    /// A consumer-protocol group's state (absent for classic groups and in
    /// records written before the consumer protocol existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consumer: Option<super::consumer::ConsumerGroup>,
}

#[derive(Debug, Serialize, Deserialize)]
struct OffsetKey {
    group: String,
    topic: String,
    partition: i32,
}

#[derive(Debug, Serialize, Deserialize)]
struct RecordKey {
    v: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    offset: Option<OffsetKey>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    group: Option<String>,
}

/// A decoded record of the offsets topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OffsetsRecord {
    Offset { group: String, tp: TopicPartition, committed: Option<Committed> },
    Group { group: String, value: Option<StoredGroup> },
}

impl OffsetsRecord {
    pub fn group(&self) -> &str {
        match self {
            OffsetsRecord::Offset { group, .. } | OffsetsRecord::Group { group, .. } => group,
        }
    }

    /// The record's key and value (`None`: tombstone).
    pub fn encode(&self) -> (Bytes, Option<Bytes>) {
        let to_bytes = |v: &dyn erased::Json| Bytes::from(v.json());
        match self {
            OffsetsRecord::Offset { group, tp, committed } => {
                let key = RecordKey {
                    v: RECORD_VERSION,
                    offset: Some(OffsetKey { group: group.clone(), topic: tp.topic.to_string(), partition: tp.partition }),
                    group: None,
                };
                (to_bytes(&key), committed.as_ref().map(|c| to_bytes(c)))
            }
            OffsetsRecord::Group { group, value } => {
                let key = RecordKey { v: RECORD_VERSION, offset: None, group: Some(group.clone()) };
                (to_bytes(&key), value.as_ref().map(|v| to_bytes(v)))
            }
        }
    }

    /// Decodes a record; `None` for keys of another format version or shape
    /// (skipped, so a newer broker's records do not stop an older one).
    pub fn decode(key: &[u8], value: Option<&[u8]>) -> Result<Option<OffsetsRecord>, serde_json::Error> {
        let key: RecordKey = serde_json::from_slice(key)?;
        if key.v != RECORD_VERSION {
            return Ok(None);
        }
        match (key.offset, key.group) {
            (Some(k), None) => {
                let committed = value.map(serde_json::from_slice).transpose()?;
                Ok(Some(OffsetsRecord::Offset { group: k.group, tp: TopicPartition { topic: k.topic.into(), partition: k.partition }, committed }))
            }
            (None, Some(group)) => {
                let value = value.map(serde_json::from_slice).transpose()?;
                Ok(Some(OffsetsRecord::Group { group, value }))
            }
            _ => Ok(None),
        }
    }
}

mod erased {
    /// Serialises any of the record parts (serde_json cannot fail on them:
    /// plain structs with string keys).
    pub trait Json {
        fn json(&self) -> Vec<u8>;
    }
    impl<T: serde::Serialize> Json for T {
        fn json(&self) -> Vec<u8> {
            serde_json::to_vec(self).expect("records serialise: plain structs with string keys")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn consumer_group() -> super::super::consumer::ConsumerGroup {
        use super::super::consumer::{ConsumerGroup, Heartbeat};
        let mut g = ConsumerGroup::new();
        let topic = uuid::Uuid::from_u128(9);
        let join = Heartbeat { member_id: "m".into(), subscribed_topic_names: Some(vec!["t".into()]), rebalance_timeout_ms: 1000, ..Heartbeat::default() };
        g.heartbeat("c", join, |_| Some((topic, 3)), Vec::new, || unreachable!(), 10).unwrap();
        g
    }

    #[test]
    fn records_round_trip_with_tombstones() {
        let tp = TopicPartition { topic: "orders".into(), partition: 3 };
        let committed = Committed { offset: 42, leader_epoch: -1, metadata: "m".into(), commit_timestamp_ms: 7 };
        let records = [
            OffsetsRecord::Offset { group: "g".into(), tp: tp.clone(), committed: Some(committed) },
            OffsetsRecord::Offset { group: "g".into(), tp, committed: None },
            OffsetsRecord::Group {
                group: "g".into(),
                value: Some(StoredGroup {
                    protocol_type: Some("consumer".into()),
                    generation_id: 3,
                    protocol: Some("range".into()),
                    leader: Some("m1".into()),
                    members: vec![StoredMember {
                        member_id: "m1".into(),
                        instance_id: None,
                        client_id: "c".into(),
                        client_host: "/1.2.3.4".into(),
                        session_timeout_ms: 10_000,
                        rebalance_timeout_ms: 30_000,
                        protocols: vec![("range".into(), vec![1, 2])],
                        assignment: vec![3],
                    }],
                    consumer: None,
                }),
            },
            OffsetsRecord::Group { group: "g".into(), value: None },
            OffsetsRecord::Group {
                group: "c".into(),
                value: Some(StoredGroup {
                    protocol_type: Some("consumer".into()),
                    generation_id: 0,
                    protocol: None,
                    leader: None,
                    members: vec![],
                    consumer: Some(consumer_group()),
                }),
            },
        ];
        for record in records {
            let (key, value) = record.encode();
            let decoded = OffsetsRecord::decode(&key, value.as_deref()).unwrap();
            assert_eq!(decoded, Some(record));
        }
        assert_eq!(OffsetsRecord::decode(br#"{"v":2,"group":"g"}"#, None).unwrap(), None, "future versions are skipped");
        assert!(OffsetsRecord::decode(b"not json", None).is_err());
    }
}
