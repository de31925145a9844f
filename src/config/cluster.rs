//! The `[cluster]` and `[broker]` sections: how this node finds the metadata
//! quorum's voters and which roles it plays, and the broker session timers.
//!
//! Kafka's KRaft names are kept (`controller.quorum.voters` is `voters`,
//! `process.roles` is `roles`, `broker.session.timeout.ms` is
//! `broker.session_timeout_ms`). Lists accept a TOML array or, as environment
//! variables can only give a string, one comma-separated string:
//! `SILT_CLUSTER__VOTERS=1@a:9093,2@b:9093,3@c:9093`.
//!
//! No `[cluster]` section means today's embedded single node; a section without
//! voters is refused rather than guessed.

use std::collections::BTreeSet;
use std::fmt;

use serde::{Deserialize, Deserializer};

use super::{invalid, ConfigError};

/// The most voters a quorum may list. Raft's cost grows with voters and Kafka
/// deployments use 3 or 5; the bound keeps a typo from building a huge fan-out.
pub const VOTERS_MAX: usize = 9;

/// `[cluster]`: node-to-node traffic and the metadata quorum.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterSection {
    /// Address the node-to-node listener binds (Raft and broker→controller RPCs).
    pub listen: String,
    /// `host:port` the other nodes use to reach this one; defaults to `listen`.
    pub advertised: Option<String>,
    /// The metadata quorum, `id@host:port` each (Kafka's `controller.quorum.voters`).
    #[serde(deserialize_with = "list_or_comma_string")]
    pub voters: Vec<String>,
    /// `controller`, `broker` or both (Kafka's `process.roles`).
    #[serde(deserialize_with = "list_or_comma_string")]
    pub roles: Vec<String>,
    /// `auto.leader.rebalance.enable`: the active controller gives leadership
    /// back to preferred replicas when a broker leads too few of its own.
    pub auto_leader_rebalance: bool,
    /// `leader.imbalance.check.interval.seconds`, in ms.
    pub leader_imbalance_check_interval_ms: u64,
}

impl Default for ClusterSection {
    fn default() -> Self {
        ClusterSection {
            listen: "127.0.0.1:9093".into(),
            advertised: None,
            voters: Vec::new(),
            roles: vec!["controller".into(), "broker".into()],
            auto_leader_rebalance: true,
            leader_imbalance_check_interval_ms: 300_000,
        }
    }
}

/// `[broker]`: this broker's place and its session with the active controller.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BrokerSection {
    /// `broker.rack`: replicas of a partition are spread across racks.
    pub rack: Option<String>,
    /// `broker.heartbeat.interval.ms`: how often the broker heartbeats to the active controller.
    pub heartbeat_interval_ms: u64,
    /// `broker.session.timeout.ms`: a broker without a heartbeat this long is fenced.
    pub session_timeout_ms: u64,
}

impl Default for BrokerSection {
    fn default() -> Self {
        // Kafka's are 2 s and 9 s. Silt fences a silent broker after 3 s, so a
        // killed leader's partitions move in about 3 s (the failover target is a
        // 5 s median); a heartbeat every 500 ms leaves five chances before that.
        BrokerSection { rack: None, heartbeat_interval_ms: 500, session_timeout_ms: 3_000 }
    }
}

/// One voter of the metadata quorum: `id@host:port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Voter {
    pub id: i32,
    /// `host:port`, as openraft's `BasicNode::addr`.
    pub address: String,
}

impl fmt::Display for Voter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.id, self.address)
    }
}

/// What a node does (Kafka's `process.roles`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// A voter of the metadata quorum; the elected one is the active controller.
    Controller,
    /// Serves Kafka clients and holds partition replicas.
    Broker,
}

/// The `[cluster]` section checked and parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    pub node_id: i32,
    pub listen: String,
    pub advertised: String,
    pub voters: Vec<Voter>,
    pub roles: BTreeSet<Role>,
    /// How often the active controller rebalances leadership; `None`: never.
    pub leader_rebalance_interval: Option<std::time::Duration>,
}

impl ClusterConfig {
    /// Does this node vote in the metadata quorum?
    pub fn is_controller(&self) -> bool {
        self.roles.contains(&Role::Controller)
    }

    /// Does this node serve clients and hold replicas?
    pub fn is_broker(&self) -> bool {
        self.roles.contains(&Role::Broker)
    }
}

/// Parses `id@host:port`.
pub fn parse_voter(text: &str) -> Result<Voter, &'static str> {
    let (id, address) = text.trim().split_once('@').ok_or("must be id@host:port")?;
    let id: i32 = id.parse().map_err(|_| "must start with a numeric node id (id@host:port)")?;
    if id < 0 {
        return Err("node ids must not be negative");
    }
    check_host_port(address)?;
    Ok(Voter { id, address: address.to_owned() })
}

/// `host:port` with a non-empty host and a port number.
pub fn check_host_port(text: &str) -> Result<(), &'static str> {
    match text.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => Ok(()),
        _ => Err("must be host:port"),
    }
}

/// Checks `[cluster]` for node `node_id` and parses it.
pub fn resolve(section: &ClusterSection, node_id: i32) -> Result<ClusterConfig, ConfigError> {
    check_host_port(&section.listen).map_err(|problem| invalid("cluster.listen", &section.listen, problem))?;
    let advertised = section.advertised.clone().unwrap_or_else(|| section.listen.clone());
    check_host_port(&advertised).map_err(|problem| invalid("cluster.advertised", &advertised, problem))?;
    let mut roles = BTreeSet::new();
    for role in &section.roles {
        let parsed = match role.trim() {
            "controller" => Role::Controller,
            "broker" => Role::Broker,
            _ => return Err(invalid("cluster.roles", role, "must be \"controller\" or \"broker\"")),
        };
        if !roles.insert(parsed) {
            return Err(invalid("cluster.roles", role, "is listed twice"));
        }
    }
    if roles.is_empty() {
        return Err(invalid("cluster.roles", "[]", "must name controller, broker or both"));
    }
    if section.voters.is_empty() {
        return Err(invalid("cluster.voters", "[]", "must list the metadata quorum as id@host:port"));
    }
    if section.voters.len() > VOTERS_MAX {
        return Err(invalid("cluster.voters", section.voters.len(), "must list at most 9 voters"));
    }
    let mut voters: Vec<Voter> = Vec::with_capacity(section.voters.len());
    for text in &section.voters {
        let voter = parse_voter(text).map_err(|problem| invalid("cluster.voters", text, problem))?;
        if voters.iter().any(|v| v.id == voter.id) {
            return Err(invalid("cluster.voters", text, "repeats a node id"));
        }
        voters.push(voter);
    }
    if node_id < 0 {
        return Err(invalid("node.id", node_id, "must not be negative in a cluster"));
    }
    let listed = voters.iter().any(|v| v.id == node_id);
    if roles.contains(&Role::Controller) && !listed {
        return Err(invalid("cluster.voters", section.voters.join(","), "must include this node's node.id when its roles include controller"));
    }
    if !roles.contains(&Role::Controller) && listed {
        return Err(invalid("cluster.roles", section.roles.join(","), "must include controller: node.id is one of cluster.voters"));
    }
    if section.leader_imbalance_check_interval_ms == 0 {
        return Err(invalid("cluster.leader_imbalance_check_interval_ms", 0, "must be positive (set cluster.auto_leader_rebalance = false to turn it off)"));
    }
    let leader_rebalance_interval = section.auto_leader_rebalance.then(|| std::time::Duration::from_millis(section.leader_imbalance_check_interval_ms));
    Ok(ClusterConfig { node_id, listen: section.listen.clone(), advertised, voters, roles, leader_rebalance_interval })
}

/// The cluster id a fresh data directory of a cluster node gets when
/// `node.cluster_id` is unset: derived from the voter list (order and spaces
/// aside), so every node configured with the same voters writes the same id
/// without a separate formatting step. 22 hex digits, like a random one.
pub fn default_cluster_id(voters: &[String]) -> String {
    let mut sorted: Vec<&str> = voters.iter().map(|v| v.trim()).collect();
    sorted.sort_unstable();
    let text = sorted.join(",");
    // FNV-1a, twice with different offsets: stable across builds and platforms
    // (std's hasher promises neither).
    let fnv = |offset: u64| text.bytes().fold(offset, |hash, byte| (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3));
    let id = format!("{:016x}{:016x}", fnv(0xcbf2_9ce4_8422_2325), fnv(0x6c62_272e_07bb_0142));
    id[..22].to_owned()
}

/// Checks `[broker]`.
pub fn validate_broker(section: &BrokerSection) -> Result<(), ConfigError> {
    if section.heartbeat_interval_ms == 0 {
        return Err(invalid("broker.heartbeat_interval_ms", 0, "must be positive"));
    }
    if section.session_timeout_ms <= section.heartbeat_interval_ms {
        return Err(invalid("broker.session_timeout_ms", section.session_timeout_ms, "must be above broker.heartbeat_interval_ms"));
    }
    if section.session_timeout_ms > 3_600_000 {
        return Err(invalid("broker.session_timeout_ms", section.session_timeout_ms, "must be at most 3600000"));
    }
    if section.rack.as_deref().is_some_and(|r| r.trim().is_empty()) {
        return Err(invalid("broker.rack", "\"\"", "must not be blank (leave it unset)"));
    }
    Ok(())
}

/// A list given as a TOML array or one comma-separated string (environment).
fn list_or_comma_string<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum ListOrString {
        List(Vec<String>),
        String(String),
    }
    Ok(match ListOrString::deserialize(deserializer)? {
        ListOrString::List(items) => items,
        ListOrString::String(text) => text.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(voters: &[&str], roles: &[&str]) -> ClusterSection {
        ClusterSection {
            listen: "127.0.0.1:9093".into(),
            advertised: None,
            voters: voters.iter().map(|s| s.to_string()).collect(),
            roles: roles.iter().map(|s| s.to_string()).collect(),
            ..ClusterSection::default()
        }
    }

    #[test]
    fn the_leader_rebalance_is_on_by_default_and_can_be_turned_off() {
        let mut s = section(&["1@a:9093"], &["controller", "broker"]);
        assert_eq!(resolve(&s, 1).unwrap().leader_rebalance_interval, Some(std::time::Duration::from_secs(300)));
        s.leader_imbalance_check_interval_ms = 0;
        assert!(err(&s, 1).contains("cluster.leader_imbalance_check_interval_ms"));
        s.auto_leader_rebalance = false;
        s.leader_imbalance_check_interval_ms = 1_000;
        assert_eq!(resolve(&s, 1).unwrap().leader_rebalance_interval, None);
    }

    fn err(section: &ClusterSection, node_id: i32) -> String {
        resolve(section, node_id).unwrap_err().to_string()
    }

    #[test]
    fn voters_and_roles_parse() {
        let c = resolve(&section(&["1@a:9093", " 2@b.example:9093", "3@10.0.0.3:1"], &["controller", "broker"]), 2).unwrap();
        assert_eq!(c.voters[1], Voter { id: 2, address: "b.example:9093".into() });
        assert!(c.is_controller() && c.is_broker());
        assert_eq!(c.advertised, "127.0.0.1:9093");
        let broker_only = resolve(&section(&["1@a:9093"], &["broker"]), 7).unwrap();
        assert!(!broker_only.is_controller() && broker_only.is_broker());
    }

    #[test]
    fn bad_values_name_the_key() {
        let e = err(&section(&["1@a:9093", "two@b:9093"], &["controller"]), 1);
        assert!(e.contains("cluster.voters") && e.contains("two@b:9093"), "{e}");
        let e = err(&section(&["1@a"], &["controller"]), 1);
        assert!(e.contains("cluster.voters") && e.contains("host:port"), "{e}");
        let e = err(&section(&["1@a:1", "1@b:2"], &["controller"]), 1);
        assert!(e.contains("cluster.voters") && e.contains("repeats"), "{e}");
        let e = err(&section(&["1@a:1", "2@b:2"], &["controller", "broker"]), 3);
        assert!(e.contains("cluster.voters") && e.contains("node.id"), "{e}");
        let e = err(&section(&["1@a:1"], &["broker"]), 1);
        assert!(e.contains("cluster.roles"), "{e}");
        let e = err(&section(&["1@a:1"], &["controler"]), 1);
        assert!(e.contains("cluster.roles") && e.contains("controler"), "{e}");
        let e = err(&section(&[], &["broker"]), 1);
        assert!(e.contains("cluster.voters"), "{e}");
        let mut s = section(&["1@a:1"], &["controller"]);
        s.listen = "nowhere".into();
        assert!(err(&s, 1).contains("cluster.listen"));
    }

    #[test]
    fn every_node_of_a_voter_list_derives_the_same_cluster_id() {
        let a = default_cluster_id(&["1@a:9093".into(), "2@b:9093".into(), "3@c:9093".into()]);
        let b = default_cluster_id(&[" 3@c:9093".into(), "1@a:9093".into(), "2@b:9093 ".into()]);
        assert_eq!(a, b);
        assert_eq!(a.len(), 22);
        assert_ne!(a, default_cluster_id(&["1@a:9093".into(), "2@b:9093".into(), "4@d:9093".into()]));
        assert_eq!(a, "276f0f1475b4c17065a6ee", "stable across builds: a node upgraded later must derive the same id");
    }

    #[test]
    fn broker_timers_are_checked() {
        let mut b = BrokerSection::default();
        assert_eq!((b.heartbeat_interval_ms, b.session_timeout_ms), (500, 3_000));
        validate_broker(&b).unwrap();
        b.session_timeout_ms = 500;
        assert!(validate_broker(&b).unwrap_err().to_string().contains("broker.session_timeout_ms"));
    }
}
