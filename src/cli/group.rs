//! `silt group list|describe|reset-offsets|delete`: consumer groups, their
//! members and committed offsets, lag per partition, and moving a stopped
//! group's offsets (a dry run unless `--execute`, as in Kafka's tool).

use std::collections::BTreeMap;

use clap::Subcommand;
use futures::executor::block_on;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::groups::GroupInfo;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};

use super::client::{require_topic, Connection, Context};
use super::{parse_time_ms, print_table, CliError};

#[derive(Subcommand)]
pub enum GroupCommand {
    /// List consumer groups with their state and member count.
    List {
        #[command(flatten)]
        connection: Connection,
    },
    /// Show a group's state and members, and per partition its committed
    /// offset, log end offset and lag.
    Describe {
        #[command(flatten)]
        connection: Connection,
        /// The group id.
        group: String,
    },
    /// Move a group's committed offsets. The group must have no active members.
    /// Prints the plan and changes nothing unless --execute is given.
    ResetOffsets {
        #[command(flatten)]
        connection: Connection,
        /// The group id.
        group: String,
        /// The topic whose offsets to move (repeatable).
        #[arg(long, short = 't', required = true)]
        topic: Vec<String>,
        /// Only these partitions (repeatable; default all of each topic).
        #[arg(long, short = 'p')]
        partition: Vec<i32>,
        /// To each partition's log start offset.
        #[arg(long, group = "target")]
        to_earliest: bool,
        /// To each partition's log end offset.
        #[arg(long, group = "target")]
        to_latest: bool,
        /// To the first offset at or after this time: milliseconds since the epoch or a time ago like -1h.
        #[arg(long, group = "target", value_parser = parse_time_ms, allow_hyphen_values = true)]
        to_datetime: Option<i64>,
        /// To this offset (kept within each partition's log start and end).
        #[arg(long, group = "target")]
        to_offset: Option<i64>,
        /// Commit the new offsets (without it: a dry run).
        #[arg(long)]
        execute: bool,
    },
    /// Delete groups (their committed offsets included). A group with members cannot be deleted.
    Delete {
        #[command(flatten)]
        connection: Connection,
        /// The group ids.
        #[arg(required = true)]
        groups: Vec<String>,
    },
}

/// Where `reset-offsets` moves each partition.
#[derive(Clone, Copy, Debug)]
enum Target {
    Earliest,
    Latest,
    Time(i64),
    Offset(i64),
}

pub fn run(command: GroupCommand) -> Result<(), CliError> {
    match command {
        GroupCommand::List { connection } => {
            let admin = connection.admin()?;
            connection.metadata(admin.inner())?;
            let list = admin.inner().fetch_group_list(None, connection.timeout).map_err(CliError::kafka("list consumer groups"))?;
            let mut groups: Vec<&GroupInfo> = list.groups().iter().collect();
            groups.sort_by(|a, b| a.name().cmp(b.name()));
            let mut rows = vec![vec!["GROUP".into(), "STATE".into(), "PROTOCOL-TYPE".into(), "MEMBERS".into()]];
            rows.extend(groups.iter().map(|g| vec![g.name().to_owned(), g.state().to_owned(), g.protocol_type().to_owned(), g.members().len().to_string()]));
            print_table(&rows);
            Ok(())
        }
        GroupCommand::Describe { connection, group } => describe(&connection, &group),
        GroupCommand::ResetOffsets { connection, group, topic, partition, to_earliest, to_latest, to_datetime, to_offset, execute } => {
            let target = match (to_earliest, to_latest, to_datetime, to_offset) {
                (true, ..) => Target::Earliest,
                (_, true, ..) => Target::Latest,
                (_, _, Some(ms), _) => Target::Time(ms),
                (.., Some(o)) => Target::Offset(o),
                _ => return Err(CliError::BadArgument("say where to: --to-earliest, --to-latest, --to-datetime or --to-offset".into())),
            };
            reset_offsets(&connection, &group, &topic, &partition, target, execute)
        }
        GroupCommand::Delete { connection, groups } => {
            let admin = connection.admin()?;
            connection.metadata(admin.inner())?;
            let names: Vec<&str> = groups.iter().map(String::as_str).collect();
            let results = block_on(admin.delete_groups(&names, &connection.admin_options())).map_err(CliError::kafka("delete consumer groups"))?;
            for result in results {
                match result {
                    Ok(name) => println!("deleted group {name}"),
                    Err((name, RDKafkaErrorCode::GroupIdNotFound)) => return Err(CliError::UnknownGroup { group: name }),
                    Err((name, RDKafkaErrorCode::NonEmptyGroup)) => {
                        return Err(CliError::Refused {
                            action: format!("delete group {name:?}"),
                            reason: "it still has active members; stop them first".into(),
                        })
                    }
                    Err((name, code)) => return Err(CliError::Refused { action: format!("delete group {name:?}"), reason: code.to_string() }),
                }
            }
            Ok(())
        }
    }
}

/// A consumer whose group id is `group`; it never subscribes, so it never
/// joins: it only reads and commits the group's offsets.
fn group_client(connection: &Connection, group: &str) -> Result<BaseConsumer<Context>, CliError> {
    connection.create(&[("group.id", group), ("enable.auto.commit", "false"), ("allow.auto.create.topics", "false")])
}

/// The group as the coordinator describes it (state "Dead" when unknown).
fn group_info(consumer: &BaseConsumer<Context>, connection: &Connection, group: &str) -> Result<(String, Vec<Member>, String), CliError> {
    let list = consumer.fetch_group_list(Some(group), connection.timeout).map_err(CliError::kafka(format!("describe group {group:?}")))?;
    let info = list.groups().iter().find(|g| g.name() == group);
    Ok(match info {
        None => ("Dead".into(), Vec::new(), String::new()),
        Some(g) => {
            let members = g
                .members()
                .iter()
                .map(|m| Member {
                    id: m.id().to_owned(),
                    client_id: m.client_id().to_owned(),
                    host: m.client_host().to_owned(),
                    partitions: if g.protocol_type() == "consumer" { m.assignment().map(parse_assignment).unwrap_or_default() } else { Vec::new() },
                })
                .collect();
            (g.state().to_owned(), members, g.protocol().to_owned())
        }
    })
}

struct Member {
    id: String,
    client_id: String,
    host: String,
    partitions: Vec<(String, i32)>,
}

/// Committed offsets of `group` for every partition of `topics` (partitions
/// without a commit are left out).
fn committed(
    consumer: &BaseConsumer<Context>,
    connection: &Connection,
    group: &str,
    topics: &[(String, Vec<i32>)],
) -> Result<BTreeMap<(String, i32), i64>, CliError> {
    let mut tpl = TopicPartitionList::new();
    for (topic, partitions) in topics {
        for p in partitions {
            tpl.add_partition(topic, *p);
        }
    }
    if tpl.count() == 0 {
        return Ok(BTreeMap::new());
    }
    let answered = consumer.committed_offsets(tpl, connection.timeout).map_err(CliError::kafka(format!("read the committed offsets of group {group:?}")))?;
    Ok(answered
        .elements()
        .iter()
        .filter_map(|e| match e.offset() {
            Offset::Offset(o) => Some(((e.topic().to_owned(), e.partition()), o)),
            _ => None,
        })
        .collect())
}

fn describe(connection: &Connection, group: &str) -> Result<(), CliError> {
    let consumer = group_client(connection, group)?;
    let metadata = connection.metadata(consumer.client())?;
    let (state, members, protocol) = group_info(&consumer, connection, group)?;
    let topics: Vec<(String, Vec<i32>)> = metadata
        .topics()
        .iter()
        .filter(|t| !t.name().starts_with("__") && t.error().is_none())
        .map(|t| (t.name().to_owned(), t.partitions().iter().map(|p| p.id()).collect()))
        .collect();
    let offsets = committed(&consumer, connection, group, &topics)?;
    if (state == "Dead" || state.is_empty()) && members.is_empty() && offsets.is_empty() {
        return Err(CliError::UnknownGroup { group: group.to_owned() });
    }
    println!("group {group}  state {state}  protocol {}  members {}", if protocol.is_empty() { "-" } else { &protocol }, members.len());
    let owner: BTreeMap<(String, i32), &Member> = members.iter().flat_map(|m| m.partitions.iter().map(move |tp| (tp.clone(), m))).collect();
    let mut rows = vec![["TOPIC", "PARTITION", "COMMITTED", "LOG-END", "LAG", "MEMBER", "CLIENT-ID", "HOST"].map(String::from).to_vec()];
    let mut total_lag = 0i64;
    let mut keys: Vec<(String, i32)> = offsets.keys().cloned().collect();
    keys.extend(owner.keys().filter(|k| !offsets.contains_key(*k)).cloned());
    keys.sort();
    for key in keys {
        let (_, high) =
            consumer.fetch_watermarks(&key.0, key.1, connection.timeout).map_err(CliError::kafka(format!("read the offsets of {}/{}", key.0, key.1)))?;
        let committed = offsets.get(&key);
        let lag = committed.map(|c| (high - c).max(0));
        total_lag += lag.unwrap_or(0);
        let (member, client, host) = owner.get(&key).map_or(("-".into(), "-".into(), "-".into()), |m| (m.id.clone(), m.client_id.clone(), m.host.clone()));
        rows.push(vec![
            key.0.clone(),
            key.1.to_string(),
            committed.map_or("-".into(), i64::to_string),
            high.to_string(),
            lag.map_or("-".into(), |l| l.to_string()),
            member,
            client,
            host,
        ]);
    }
    print_table(&rows);
    println!("total lag {total_lag}");
    for m in members.iter().filter(|m| m.partitions.is_empty()) {
        println!("member {} ({} at {}) owns no partitions", m.id, m.client_id, m.host);
    }
    Ok(())
}

fn reset_offsets(connection: &Connection, group: &str, topics: &[String], only: &[i32], target: Target, execute: bool) -> Result<(), CliError> {
    let consumer = group_client(connection, group)?;
    let metadata = connection.metadata(consumer.client())?;
    let mut chosen: Vec<(String, Vec<i32>)> = Vec::new();
    for topic in topics {
        let all: Vec<i32> = require_topic(&metadata, topic)?.partitions().iter().map(|p| p.id()).collect();
        if let Some(p) = only.iter().find(|p| !all.contains(p)) {
            return Err(CliError::BadArgument(format!("topic {topic} has no partition {p}")));
        }
        chosen.push((topic.clone(), if only.is_empty() { all } else { only.to_vec() }));
    }
    let (state, members, _) = group_info(&consumer, connection, group)?;
    if !members.is_empty() {
        return Err(CliError::Refused {
            action: format!("reset the offsets of group {group:?}"),
            reason: format!("the group is {state} with {} active members; stop them first (offsets can only be reset in an inactive group)", members.len()),
        });
    }
    let current = committed(&consumer, connection, group, &chosen)?;
    let mut plan = TopicPartitionList::new();
    let mut rows = vec![["TOPIC", "PARTITION", "CURRENT", "NEW"].map(String::from).to_vec()];
    for (topic, partitions) in &chosen {
        let by_time = match target {
            Target::Time(ms) => {
                let mut query = TopicPartitionList::new();
                for p in partitions {
                    query.add_partition_offset(topic, *p, Offset::Offset(ms)).map_err(CliError::kafka("build the partition list"))?;
                }
                Some(consumer.offsets_for_times(query, connection.timeout).map_err(CliError::kafka(format!("look up offsets by time in {topic}")))?)
            }
            _ => None,
        };
        for p in partitions {
            let (low, high) = consumer.fetch_watermarks(topic, *p, connection.timeout).map_err(CliError::kafka(format!("read the offsets of {topic}/{p}")))?;
            let new = match target {
                Target::Earliest => low,
                Target::Latest => high,
                Target::Offset(o) => o.clamp(low, high),
                Target::Time(_) => match by_time.as_ref().and_then(|t| t.find_partition(topic, *p)).map(|e| e.offset()) {
                    Some(Offset::Offset(o)) => o,
                    _ => high, // no record that new: the end
                },
            };
            plan.add_partition_offset(topic, *p, Offset::Offset(new)).map_err(CliError::kafka("build the partition list"))?;
            rows.push(vec![topic.clone(), p.to_string(), current.get(&(topic.clone(), *p)).map_or("-".into(), i64::to_string), new.to_string()]);
        }
    }
    print_table(&rows);
    if execute {
        consumer.commit(&plan, CommitMode::Sync).map_err(CliError::kafka(format!("commit the new offsets of group {group:?}")))?;
        println!("committed new offsets for {} partitions of group {group}", plan.count());
    } else {
        println!("dry run: nothing changed; add --execute to commit these offsets");
    }
    Ok(())
}

/// The partitions in a classic consumer-protocol assignment
/// (`ConsumerProtocolAssignment`: version, [topic, [partition]], user data).
/// Anything malformed yields what was read so far: it only labels output.
fn parse_assignment(bytes: &[u8]) -> Vec<(String, i32)> {
    fn take<'a>(b: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
        if b.len() < n {
            return None;
        }
        let (head, tail) = b.split_at(n);
        *b = tail;
        Some(head)
    }
    fn int16(b: &mut &[u8]) -> Option<i16> {
        take(b, 2).map(|s| i16::from_be_bytes([s[0], s[1]]))
    }
    fn int32(b: &mut &[u8]) -> Option<i32> {
        take(b, 4).map(|s| i32::from_be_bytes([s[0], s[1], s[2], s[3]]))
    }
    let mut out = Vec::new();
    let mut b = bytes;
    let parse = |b: &mut &[u8], out: &mut Vec<(String, i32)>| -> Option<()> {
        int16(b)?;
        let topics = int32(b)?;
        for _ in 0..topics.max(0) {
            let len = usize::try_from(int16(b)?).ok()?;
            let topic = String::from_utf8_lossy(take(b, len)?).into_owned();
            let partitions = int32(b)?;
            for _ in 0..partitions.max(0) {
                out.push((topic.clone(), int32(b)?));
            }
        }
        Some(())
    };
    let _ = parse(&mut b, &mut out);
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn assignments_are_parsed_and_truncation_is_tolerated() {
        let mut bytes = vec![0, 1, 0, 0, 0, 1, 0, 3, b'a', b'b', b'c', 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 5];
        bytes.extend_from_slice(&[0xff, 0xff, 0xff, 0xff]); // null user data
        assert_eq!(super::parse_assignment(&bytes), vec![("abc".to_owned(), 0), ("abc".to_owned(), 5)]);
        assert_eq!(super::parse_assignment(&bytes[..19]), vec![("abc".to_owned(), 0)]);
        assert!(super::parse_assignment(&[]).is_empty());
    }
}
