//! `silt perf produce --raw` and `silt perf consume --raw`: a load generator
//! that the broker, not the client, limits.
//!
//! librdkafka does real work per record (batching, queueing, delivery
//! reports; on consume, parsing every record), and on a 2-core machine that
//! work sets the pace of every `silt perf` figure. The raw commands do none:
//! the producer encodes its Produce requests once (record batches from the
//! project's one batch codec, `silt_tiering::batch`) and sends the same bytes
//! again and again, pipelined on several connections; the consumer sends
//! Fetch requests and counts what comes back by batch headers, without
//! reading a record. Both speak only kafka-protocol's types on plain blocking
//! sockets, so they work against any Kafka broker: ApiVersions picks the
//! versions, Metadata finds each partition's leader, CreateTopics makes a
//! missing topic.
//!
//! | module | owns |
//! |---|---|
//! | [`wire`] | one connection: framing, version negotiation, pipelined sends |
//! | [`cluster`] | partitions and leaders, topic creation, offsets |
//! | [`produce`] | the raw producer |
//! | [`consume`] | the raw consumer |

pub mod cluster;
pub mod consume;
pub mod produce;
pub mod wire;

use std::collections::BTreeMap;

use cluster::PartitionLeader;

/// Connection-level settings both raw commands take.
#[derive(clap::Args, Debug, Clone)]
pub struct RawArgs {
    /// Send hand-encoded requests instead of using librdkafka (see `--connections`).
    #[arg(long)]
    pub raw: bool,
    /// With --raw: connections across the partition leaders (at least one per leader).
    #[arg(long, default_value_t = 1)]
    pub connections: u32,
    /// With --raw: requests in flight per connection before waiting for a response
    /// (produce only: a fetch's next offset is in its response).
    #[arg(long, default_value_t = 5)]
    pub in_flight: u32,
}

/// One connection's share of the work: the leader it connects to and the
/// partitions it sends to or reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    pub leader: String,
    pub partitions: Vec<i32>,
}

/// Deals `connections` connections over the partitions' leaders (round
/// robin, at least one each) and each leader's partitions over its
/// connections (round robin; when a leader has more connections than
/// partitions, connections share partitions).
pub fn assign(partitions: &[PartitionLeader], connections: usize) -> Vec<Assignment> {
    let mut by_leader: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
    for p in partitions {
        by_leader.entry(p.leader.as_str()).or_default().push(p.partition);
    }
    let leaders = by_leader.len();
    let connections = connections.max(leaders);
    let mut out = Vec::with_capacity(connections);
    for (i, (leader, parts)) in by_leader.iter().enumerate() {
        let mine = connections / leaders + usize::from(i < connections % leaders);
        for c in 0..mine {
            let partitions = if mine <= parts.len() { parts.iter().skip(c).step_by(mine).copied().collect() } else { vec![parts[c % parts.len()]] };
            out.push(Assignment { leader: (*leader).to_owned(), partitions });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaders(spec: &[(i32, &str)]) -> Vec<PartitionLeader> {
        spec.iter().map(|&(partition, leader)| PartitionLeader { partition, leader: leader.to_owned() }).collect()
    }

    #[test]
    fn partitions_are_dealt_over_connections() {
        let parts = leaders(&[(0, "a"), (1, "a"), (2, "a"), (3, "a"), (4, "a"), (5, "a")]);
        let got = assign(&parts, 4);
        let got: Vec<Vec<i32>> = got.into_iter().map(|a| a.partitions).collect();
        assert_eq!(got, vec![vec![0, 4], vec![1, 5], vec![2], vec![3]]);
    }

    #[test]
    fn more_connections_than_partitions_share_them() {
        let got = assign(&leaders(&[(0, "a"), (1, "a")]), 3);
        let got: Vec<Vec<i32>> = got.into_iter().map(|a| a.partitions).collect();
        assert_eq!(got, vec![vec![0], vec![1], vec![0]]);
    }

    #[test]
    fn every_leader_gets_a_connection() {
        let got = assign(&leaders(&[(0, "a"), (1, "b"), (2, "a")]), 1);
        assert_eq!(got, vec![Assignment { leader: "a".into(), partitions: vec![0, 2] }, Assignment { leader: "b".into(), partitions: vec![1] }]);
    }
}
