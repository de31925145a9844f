//! The classic group state machine (Kafka's `ClassicGroup`), as plain Rust:
//! no timers, no I/O. The actor feeds it requests and timer expiries with the
//! current time, and it answers with what to tell which member.
//!
//! States: `Empty` (no members) → `PreparingRebalance` (members (re)join) →
//! `CompletingRebalance` (the leader computes the assignment) → `Stable`
//! (every member has its assignment), and `Dead` once the group is deleted.
//!
//! Invariants: `leader` is a key of `members` whenever `members` is not empty
//! and the state is `CompletingRebalance` or `Stable`; `static_members` maps
//! each instance id to a key of `members`.

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;

use super::error::GroupError;

/// The most bytes of protocol metadata one member may send in a JoinGroup
/// (Kafka has no such limit; Silt refuses larger joins with INVALID_REQUEST
/// rather than hold arbitrarily large blobs per member).
pub const MEMBER_METADATA_BYTES_MAX: usize = 1024 * 1024;
/// The most members waiting to rejoin with the id MEMBER_ID_REQUIRED gave them.
pub const PENDING_MEMBERS_MAX: usize = 10_000;

/// Where a group is in its rebalance cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Phase {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
    Dead,
}

impl Phase {
    /// Kafka's name of the state (ListGroups, DescribeGroups, metrics).
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Empty => "Empty",
            Phase::PreparingRebalance => "PreparingRebalance",
            Phase::CompletingRebalance => "CompletingRebalance",
            Phase::Stable => "Stable",
            Phase::Dead => "Dead",
        }
    }
}

/// Limits from the broker's configuration.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub min_session_timeout_ms: i32,
    pub max_session_timeout_ms: i32,
    pub max_size: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { min_session_timeout_ms: 6_000, max_session_timeout_ms: 1_800_000, max_size: usize::MAX }
    }
}

/// One member of a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    /// Supported protocols in the member's order of preference, with metadata.
    pub protocols: Vec<(String, Bytes)>,
    pub assignment: Bytes,
    /// The member has joined the rebalance in progress and waits for its answer.
    pub awaiting_join: bool,
    /// The member has sent SyncGroup and waits for its assignment.
    pub awaiting_sync: bool,
}

impl Member {
    /// The member's metadata for `protocol`.
    pub fn metadata(&self, protocol: &str) -> Bytes {
        self.protocols.iter().find(|(name, _)| name == protocol).map(|(_, m)| m.clone()).unwrap_or_default()
    }
}

/// A JoinGroup, as domain values.
#[derive(Debug, Clone)]
pub struct JoinRequest {
    /// Empty for a member joining for the first time.
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: i32,
    /// -1 (JoinGroup v0) means "the session timeout".
    pub rebalance_timeout_ms: i32,
    pub protocol_type: String,
    pub protocols: Vec<(String, Bytes)>,
    /// JoinGroup v4+: a new dynamic member must first learn its id (KIP-394).
    pub require_known_member_id: bool,
}

/// What a member learns when a rebalance completes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinResult {
    pub generation_id: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub leader: String,
    pub member_id: String,
    /// Every member with its metadata for the chosen protocol; only for the leader.
    pub members: Vec<(String, Option<String>, Bytes)>,
}

/// What the actor does with a JoinGroup.
#[derive(Debug)]
pub enum JoinOutcome {
    /// Answer now.
    Now(Result<JoinResult, GroupError>),
    /// Answer when the rebalance completes; the member's id is this.
    Wait { member_id: String },
}

/// Answers for members whose join or sync completed.
pub type Completed<T> = Vec<(String, Result<T, GroupError>)>;

/// A group's state. See the module docs.
#[derive(Debug, Clone)]
pub struct GroupState {
    pub group_id: String,
    pub phase: Phase,
    pub generation_id: i32,
    pub protocol_type: Option<String>,
    pub protocol: Option<String>,
    pub leader: Option<String>,
    pub members: BTreeMap<String, Member>,
    /// `group.instance.id` → member id.
    pub static_members: HashMap<String, String>,
    /// Member ids handed out by MEMBER_ID_REQUIRED, with when.
    pending_members: HashMap<String, i64>,
    /// When the current rebalance started (ms), for the initial delay.
    pub rebalance_started_ms: i64,
    /// The rebalance started from an empty group (the initial delay applies).
    pub initial_rebalance: bool,
    /// Rebalances completed since the group was created or loaded.
    pub rebalances: u64,
    pub limits: Limits,
}

impl GroupState {
    pub fn new(group_id: impl Into<String>, limits: Limits) -> GroupState {
        GroupState {
            group_id: group_id.into(),
            phase: Phase::Empty,
            generation_id: 0,
            protocol_type: None,
            protocol: None,
            leader: None,
            members: BTreeMap::new(),
            static_members: HashMap::new(),
            pending_members: HashMap::new(),
            rebalance_started_ms: 0,
            initial_rebalance: false,
            rebalances: 0,
            limits,
        }
    }

    fn unknown_member(&self, member_id: &str) -> GroupError {
        GroupError::UnknownMemberId { group_id: self.group_id.clone(), member_id: member_id.to_owned() }
    }

    fn illegal_generation(&self, generation_id: i32) -> GroupError {
        GroupError::IllegalGeneration { group_id: self.group_id.clone(), generation_id, current: self.generation_id }
    }

    /// The protocols every member supports.
    fn candidate_protocols(&self) -> Vec<String> {
        let mut members = self.members.values();
        let Some(first) = members.next() else { return Vec::new() };
        let mut candidates: Vec<String> = first.protocols.iter().map(|(n, _)| n.clone()).collect();
        for m in members {
            candidates.retain(|c| m.protocols.iter().any(|(n, _)| n == c));
        }
        candidates
    }

    /// Kafka's `supportsProtocols`: an empty group takes any non-empty type
    /// and protocol list; otherwise the type must match and at least one
    /// protocol must be supported by every member.
    fn supports(&self, protocol_type: &str, protocols: &[(String, Bytes)], ignoring: Option<&str>) -> bool {
        let others: Vec<&Member> = self.members.values().filter(|m| Some(m.member_id.as_str()) != ignoring).collect();
        if others.is_empty() {
            return !protocol_type.is_empty() && !protocols.is_empty();
        }
        if self.protocol_type.as_deref() != Some(protocol_type) {
            return false;
        }
        protocols.iter().any(|(name, _)| others.iter().all(|m| m.protocols.iter().any(|(n, _)| n == name)))
    }

    /// The protocol supported by all members that most members prefer
    /// (ties go to the earlier protocol in the leader's list).
    fn select_protocol(&self) -> Option<String> {
        let candidates = self.candidate_protocols();
        let mut votes: HashMap<&str, usize> = HashMap::new();
        for m in self.members.values() {
            if let Some((name, _)) = m.protocols.iter().find(|(n, _)| candidates.contains(n)) {
                *votes.entry(name.as_str()).or_default() += 1;
            }
        }
        let order: Vec<&str> = match self.leader.as_ref().and_then(|l| self.members.get(l)) {
            Some(leader) => leader.protocols.iter().map(|(n, _)| n.as_str()).filter(|n| candidates.iter().any(|c| c == n)).collect(),
            None => candidates.iter().map(String::as_str).collect(),
        };
        let mut best: Option<(&str, usize)> = None;
        for name in order {
            let count = votes.get(name).copied().unwrap_or(0);
            if best.is_none_or(|(_, b)| count > b) {
                best = Some((name, count));
            }
        }
        best.map(|(n, _)| n.to_owned())
    }

    fn check_join(&self, request: &JoinRequest) -> Result<(), GroupError> {
        let min = self.limits.min_session_timeout_ms;
        let max = self.limits.max_session_timeout_ms;
        if request.session_timeout_ms < min || request.session_timeout_ms > max {
            return Err(GroupError::InvalidSessionTimeout { timeout_ms: request.session_timeout_ms, min, max });
        }
        let size: usize = request.protocols.iter().map(|(n, m)| n.len() + m.len()).sum();
        if size > MEMBER_METADATA_BYTES_MAX {
            return Err(GroupError::MemberMetadataTooLarge { group_id: self.group_id.clone(), size, max: MEMBER_METADATA_BYTES_MAX });
        }
        if self.phase == Phase::Dead {
            return Err(GroupError::CoordinatorNotAvailable(format!("group {} was deleted", self.group_id)));
        }
        Ok(())
    }

    fn inconsistent(&self) -> GroupError {
        GroupError::InconsistentGroupProtocol(self.group_id.clone())
    }

    /// Handles a JoinGroup at `now_ms`.
    pub fn join(&mut self, request: JoinRequest, new_member_id: impl FnOnce() -> String, now_ms: i64) -> JoinOutcome {
        if let Err(e) = self.check_join(&request) {
            return JoinOutcome::Now(Err(e));
        }
        self.pending_members.retain(|_, at| now_ms - *at < i64::from(request.session_timeout_ms.max(1)));
        if request.member_id.is_empty() {
            return self.join_unknown(request, new_member_id(), now_ms);
        }
        let member_id = request.member_id.clone();
        if let Some(instance) = &request.instance_id {
            match self.static_members.get(instance) {
                Some(known) if *known != member_id => {
                    return JoinOutcome::Now(Err(GroupError::FencedInstanceId { group_id: self.group_id.clone(), instance_id: instance.clone(), member_id }))
                }
                _ => {}
            }
        }
        if !self.members.contains_key(&member_id) {
            if self.pending_members.remove(&member_id).is_some() {
                if !self.supports(&request.protocol_type, &request.protocols, None) {
                    return JoinOutcome::Now(Err(self.inconsistent()));
                }
                if self.members.len() >= self.limits.max_size {
                    return JoinOutcome::Now(Err(GroupError::GroupMaxSizeReached { group_id: self.group_id.clone(), max: self.limits.max_size }));
                }
                self.add_member(member_id.clone(), request, now_ms);
                return JoinOutcome::Wait { member_id };
            }
            return JoinOutcome::Now(Err(self.unknown_member(&member_id)));
        }
        if !self.supports(&request.protocol_type, &request.protocols, Some(&member_id)) {
            return JoinOutcome::Now(Err(self.inconsistent()));
        }
        let unchanged = self.members.get(&member_id).is_some_and(|m| m.protocols == request.protocols);
        let is_leader = self.leader.as_deref() == Some(member_id.as_str());
        match self.phase {
            Phase::PreparingRebalance => {
                self.update_member(&member_id, request);
                JoinOutcome::Wait { member_id }
            }
            Phase::CompletingRebalance | Phase::Stable if unchanged && !(self.phase == Phase::Stable && is_leader) => {
                // The member missed the answer to its join: repeat it.
                JoinOutcome::Now(Ok(self.join_result(&member_id)))
            }
            Phase::CompletingRebalance | Phase::Stable => {
                self.update_member(&member_id, request);
                self.prepare_rebalance(now_ms);
                JoinOutcome::Wait { member_id }
            }
            Phase::Empty | Phase::Dead => JoinOutcome::Now(Err(self.unknown_member(&member_id))),
        }
    }

    fn join_unknown(&mut self, request: JoinRequest, new_id: String, now_ms: i64) -> JoinOutcome {
        if !self.supports(&request.protocol_type, &request.protocols, None) {
            return JoinOutcome::Now(Err(self.inconsistent()));
        }
        if let Some(instance) = request.instance_id.clone() {
            if let Some(old_id) = self.static_members.get(&instance).cloned() {
                // A static member restarted: it takes over its old member id's place.
                if let Some(mut old) = self.members.remove(&old_id) {
                    old.member_id = new_id.clone();
                    self.members.insert(new_id.clone(), old);
                }
                if self.leader.as_deref() == Some(old_id.as_str()) {
                    self.leader = Some(new_id.clone());
                }
                self.static_members.insert(instance, new_id.clone());
                let was_stable = self.phase == Phase::Stable;
                self.update_member(&new_id, request);
                if was_stable && self.select_protocol() == self.protocol {
                    // KIP-345: a restarted static member keeps its assignment
                    // without a rebalance; it syncs to fetch it.
                    if let Some(m) = self.members.get_mut(&new_id) {
                        m.awaiting_join = false;
                    }
                    let mut result = self.join_result(&new_id);
                    result.members = Vec::new();
                    return JoinOutcome::Now(Ok(result));
                }
                self.prepare_rebalance(now_ms);
                return JoinOutcome::Wait { member_id: new_id };
            }
        }
        if self.members.len() >= self.limits.max_size {
            return JoinOutcome::Now(Err(GroupError::GroupMaxSizeReached { group_id: self.group_id.clone(), max: self.limits.max_size }));
        }
        if request.require_known_member_id && request.instance_id.is_none() {
            if self.pending_members.len() < PENDING_MEMBERS_MAX {
                self.pending_members.insert(new_id.clone(), now_ms);
            }
            return JoinOutcome::Now(Err(GroupError::MemberIdRequired { group_id: self.group_id.clone(), member_id: new_id }));
        }
        self.add_member(new_id.clone(), request, now_ms);
        JoinOutcome::Wait { member_id: new_id }
    }

    fn add_member(&mut self, member_id: String, request: JoinRequest, now_ms: i64) {
        if self.members.is_empty() {
            self.protocol_type = Some(request.protocol_type.clone());
        }
        if let Some(instance) = &request.instance_id {
            self.static_members.insert(instance.clone(), member_id.clone());
        }
        let member = Member {
            member_id: member_id.clone(),
            instance_id: None,
            client_id: String::new(),
            client_host: String::new(),
            session_timeout_ms: 0,
            rebalance_timeout_ms: 0,
            protocols: Vec::new(),
            assignment: Bytes::new(),
            awaiting_join: false,
            awaiting_sync: false,
        };
        self.members.insert(member_id.clone(), member);
        if self.leader.is_none() {
            self.leader = Some(member_id.clone());
        }
        self.update_member(&member_id, request);
        self.prepare_rebalance(now_ms);
    }

    fn update_member(&mut self, member_id: &str, request: JoinRequest) {
        if let Some(m) = self.members.get_mut(member_id) {
            m.instance_id = request.instance_id;
            m.client_id = request.client_id;
            m.client_host = request.client_host;
            m.session_timeout_ms = request.session_timeout_ms;
            m.rebalance_timeout_ms = if request.rebalance_timeout_ms < 0 { request.session_timeout_ms } else { request.rebalance_timeout_ms };
            m.protocols = request.protocols;
            m.awaiting_join = true;
        }
    }

    /// Starts a rebalance (if one is not already running).
    pub fn prepare_rebalance(&mut self, now_ms: i64) {
        match self.phase {
            Phase::PreparingRebalance | Phase::Dead => {}
            phase => {
                self.initial_rebalance = phase == Phase::Empty;
                self.phase = Phase::PreparingRebalance;
                self.rebalance_started_ms = now_ms;
            }
        }
    }

    /// The longest rebalance timeout of the members: how long a rebalance may wait.
    pub fn rebalance_timeout_ms(&self) -> i32 {
        self.members.values().map(|m| m.rebalance_timeout_ms).max().unwrap_or(0)
    }

    /// Whether every member has rejoined the rebalance in progress.
    pub fn all_joined(&self) -> bool {
        self.members.values().all(|m| m.awaiting_join)
    }

    /// Completes the rebalance in progress: members that did not rejoin are
    /// removed, the generation advances, a protocol and a leader are chosen,
    /// and every waiting member gets its answer. No-op outside
    /// PreparingRebalance.
    pub fn complete_join(&mut self) -> Completed<JoinResult> {
        if self.phase != Phase::PreparingRebalance {
            return Vec::new();
        }
        let gone: Vec<String> = self.members.values().filter(|m| !m.awaiting_join).map(|m| m.member_id.clone()).collect();
        for id in gone {
            self.remove_member(&id);
        }
        self.generation_id = self.generation_id.wrapping_add(1).max(1);
        self.rebalances += 1;
        if self.members.is_empty() {
            self.phase = Phase::Empty;
            self.protocol = None;
            self.leader = None;
            return Vec::new();
        }
        if self.leader.as_ref().is_none_or(|l| !self.members.contains_key(l)) {
            self.leader = self.members.keys().next().cloned();
        }
        self.protocol = self.select_protocol();
        self.phase = Phase::CompletingRebalance;
        let ids: Vec<String> = self.members.keys().cloned().collect();
        ids.into_iter()
            .map(|id| {
                let result = self.join_result(&id);
                if let Some(m) = self.members.get_mut(&id) {
                    m.awaiting_join = false;
                    m.assignment = Bytes::new();
                }
                (id, Ok(result))
            })
            .collect()
    }

    fn join_result(&self, member_id: &str) -> JoinResult {
        let leader = self.leader.clone().unwrap_or_default();
        let protocol = self.protocol.clone().unwrap_or_default();
        let members = if leader == member_id {
            self.members.values().map(|m| (m.member_id.clone(), m.instance_id.clone(), m.metadata(&protocol))).collect()
        } else {
            Vec::new()
        };
        JoinResult {
            generation_id: self.generation_id,
            protocol_type: self.protocol_type.clone(),
            protocol_name: self.protocol.clone(),
            leader,
            member_id: member_id.to_owned(),
            members,
        }
    }

    fn remove_member(&mut self, member_id: &str) -> Option<Member> {
        let member = self.members.remove(member_id)?;
        if let Some(instance) = &member.instance_id {
            if self.static_members.get(instance).map(String::as_str) == Some(member_id) {
                self.static_members.remove(instance);
            }
        }
        if self.leader.as_deref() == Some(member_id) {
            self.leader = self.members.keys().next().cloned();
        }
        Some(member)
    }

    /// Checks a member id (and instance id) against the group.
    fn validate_member(&self, member_id: &str, instance_id: Option<&str>) -> Result<(), GroupError> {
        if let Some(instance) = instance_id {
            if let Some(known) = self.static_members.get(instance) {
                if known != member_id {
                    return Err(GroupError::FencedInstanceId {
                        group_id: self.group_id.clone(),
                        instance_id: instance.to_owned(),
                        member_id: member_id.to_owned(),
                    });
                }
            }
        }
        if !self.members.contains_key(member_id) {
            return Err(self.unknown_member(member_id));
        }
        Ok(())
    }

    fn check_dead(&self) -> Result<(), GroupError> {
        if self.phase == Phase::Dead {
            return Err(GroupError::CoordinatorNotAvailable(format!("group {} was deleted", self.group_id)));
        }
        Ok(())
    }

    /// Handles a SyncGroup. `Ok(None)`: wait for the leader's assignment.
    /// `Ok(Some(done))`: the answers of every waiting member (the caller's included).
    #[allow(clippy::type_complexity, reason = "one (member id, generation, assignment) list per answer; a type alias would hide what it holds")]
    pub fn sync(
        &mut self,
        member_id: &str,
        instance_id: Option<&str>,
        generation_id: i32,
        protocol_type: Option<&str>,
        protocol_name: Option<&str>,
        assignments: Vec<(String, Bytes)>,
    ) -> Result<Option<Completed<Bytes>>, GroupError> {
        self.check_dead()?;
        if self.phase == Phase::Empty {
            return Err(self.unknown_member(member_id));
        }
        self.validate_member(member_id, instance_id)?;
        if generation_id != self.generation_id {
            return Err(self.illegal_generation(generation_id));
        }
        if protocol_type.is_some_and(|t| Some(t) != self.protocol_type.as_deref()) || protocol_name.is_some_and(|p| Some(p) != self.protocol.as_deref()) {
            return Err(self.inconsistent());
        }
        match self.phase {
            Phase::PreparingRebalance => Err(GroupError::RebalanceInProgress(self.group_id.clone())),
            Phase::CompletingRebalance => {
                if let Some(m) = self.members.get_mut(member_id) {
                    m.awaiting_sync = true;
                }
                if self.leader.as_deref() != Some(member_id) {
                    return Ok(None);
                }
                let mut given: HashMap<String, Bytes> = assignments.into_iter().collect();
                for m in self.members.values_mut() {
                    m.assignment = given.remove(&m.member_id).unwrap_or_default();
                }
                self.phase = Phase::Stable;
                Ok(Some(self.take_sync_waiters()))
            }
            Phase::Stable => {
                let assignment = self.members.get(member_id).map(|m| m.assignment.clone()).unwrap_or_default();
                Ok(Some(vec![(member_id.to_owned(), Ok(assignment))]))
            }
            Phase::Empty | Phase::Dead => Err(self.unknown_member(member_id)),
        }
    }

    fn take_sync_waiters(&mut self) -> Completed<Bytes> {
        self.members
            .values_mut()
            .filter(|m| m.awaiting_sync)
            .map(|m| {
                m.awaiting_sync = false;
                (m.member_id.clone(), Ok(m.assignment.clone()))
            })
            .collect()
    }

    /// Handles a Heartbeat.
    pub fn heartbeat(&self, member_id: &str, instance_id: Option<&str>, generation_id: i32) -> Result<(), GroupError> {
        self.check_dead()?;
        if self.phase == Phase::Empty {
            return Err(self.unknown_member(member_id));
        }
        self.validate_member(member_id, instance_id)?;
        if generation_id != self.generation_id {
            return Err(self.illegal_generation(generation_id));
        }
        match self.phase {
            Phase::PreparingRebalance => Err(GroupError::RebalanceInProgress(self.group_id.clone())),
            _ => Ok(()),
        }
    }

    /// Removes a member that left (LeaveGroup) or whose session expired, and
    /// starts a rebalance. Answers to waiting syncs are returned (they must
    /// rejoin).
    pub fn leave(&mut self, member_id: &str, now_ms: i64) -> Result<Completed<Bytes>, GroupError> {
        self.check_dead()?;
        if self.remove_member(member_id).is_none() {
            return Err(self.unknown_member(member_id));
        }
        let mut answers = Vec::new();
        if self.phase == Phase::CompletingRebalance {
            let rebalance = GroupError::RebalanceInProgress(self.group_id.clone());
            for m in self.members.values_mut().filter(|m| m.awaiting_sync) {
                m.awaiting_sync = false;
                answers.push((m.member_id.clone(), Err(rebalance.clone())));
            }
        }
        match self.phase {
            Phase::Stable | Phase::CompletingRebalance => self.prepare_rebalance(now_ms),
            Phase::PreparingRebalance | Phase::Empty | Phase::Dead => {}
        }
        Ok(answers)
    }

    /// The member id an instance id names (LeaveGroup v3+ may name a member by instance only).
    pub fn member_for_instance(&self, instance_id: &str) -> Option<&str> {
        self.static_members.get(instance_id).map(String::as_str)
    }

    /// Checks whether an OffsetCommit of `member_id` at `generation_id` may commit.
    pub fn check_commit(&self, member_id: &str, instance_id: Option<&str>, generation_id: i32) -> Result<(), GroupError> {
        self.check_dead()?;
        if generation_id < 0 && self.phase == Phase::Empty {
            return Ok(()); // a commit by a consumer outside any group (or an admin tool)
        }
        self.validate_member(member_id, instance_id)?;
        if generation_id != self.generation_id {
            return Err(self.illegal_generation(generation_id));
        }
        match self.phase {
            Phase::CompletingRebalance => Err(GroupError::RebalanceInProgress(self.group_id.clone())),
            Phase::Empty | Phase::Dead => Err(self.unknown_member(member_id)),
            Phase::Stable | Phase::PreparingRebalance => Ok(()),
        }
    }

    /// Marks the group deleted.
    pub fn kill(&mut self) {
        self.phase = Phase::Dead;
        self.members.clear();
        self.static_members.clear();
        self.leader = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn join(member_id: &str, protocols: &[&str]) -> JoinRequest {
        JoinRequest {
            member_id: member_id.into(),
            instance_id: None,
            client_id: "c".into(),
            client_host: "/127.0.0.1".into(),
            session_timeout_ms: 10_000,
            rebalance_timeout_ms: 30_000,
            protocol_type: "consumer".into(),
            protocols: protocols.iter().map(|p| (p.to_string(), Bytes::from(format!("meta-{p}")))).collect(),
            require_known_member_id: false,
        }
    }

    fn wait_id(outcome: JoinOutcome) -> String {
        match outcome {
            JoinOutcome::Wait { member_id } => member_id,
            other => panic!("expected to wait, got {other:?}"),
        }
    }

    /// Two members joined and synced: a stable group at generation 1.
    fn stable_pair() -> (GroupState, String, String) {
        let mut g = GroupState::new("g", Limits::default());
        let a = wait_id(g.join(join("", &["range", "roundrobin"]), || "a".into(), 0));
        let b = wait_id(g.join(join("", &["roundrobin", "range"]), || "b".into(), 0));
        assert!(g.all_joined());
        let done = g.complete_join();
        assert_eq!(done.len(), 2);
        assert_eq!(g.phase, Phase::CompletingRebalance);
        assert_eq!(g.generation_id, 1);
        let leader = done.iter().find(|(id, _)| id == &a).unwrap().1.clone().unwrap();
        assert_eq!(leader.leader, "a", "the first member to join leads");
        assert_eq!(leader.members.len(), 2, "the leader sees every member");
        let follower = done.iter().find(|(id, _)| id == &b).unwrap().1.clone().unwrap();
        assert!(follower.members.is_empty());
        assert!(g.sync(&b, None, 1, None, None, vec![]).unwrap().is_none(), "followers wait for the leader");
        let answers =
            g.sync(&a, None, 1, Some("consumer"), None, vec![(a.clone(), Bytes::from_static(b"A")), (b.clone(), Bytes::from_static(b"B"))]).unwrap().unwrap();
        assert_eq!(answers.len(), 2);
        assert_eq!(g.phase, Phase::Stable);
        (g, a, b)
    }

    #[test]
    fn joins_elect_a_leader_and_sync_distributes_the_assignment() {
        let (g, a, b) = stable_pair();
        assert_eq!(g.members[&a].assignment, Bytes::from_static(b"A"));
        assert_eq!(g.members[&b].assignment, Bytes::from_static(b"B"));
        // Both support both; one vote each: the leader's preference wins the tie.
        assert_eq!(g.protocol.as_deref(), Some("range"));
    }

    #[test]
    fn most_preferred_common_protocol_wins() {
        let mut g = GroupState::new("g", Limits::default());
        wait_id(g.join(join("", &["a", "b"]), || "1".into(), 0));
        wait_id(g.join(join("", &["b", "a"]), || "2".into(), 0));
        wait_id(g.join(join("", &["b", "c", "a"]), || "3".into(), 0));
        g.complete_join();
        assert_eq!(g.protocol.as_deref(), Some("b"));
    }

    #[test]
    fn heartbeat_in_each_state() {
        let mut g = GroupState::new("g", Limits::default());
        assert!(matches!(g.heartbeat("x", None, 0), Err(GroupError::UnknownMemberId { .. })), "empty group");
        let a = wait_id(g.join(join("", &["range"]), || "a".into(), 0));
        assert!(matches!(g.heartbeat(&a, None, 0), Err(GroupError::RebalanceInProgress(_))));
        g.complete_join();
        assert_eq!(g.heartbeat(&a, None, 1), Ok(()), "completing rebalance");
        assert!(matches!(g.heartbeat(&a, None, 0), Err(GroupError::IllegalGeneration { .. })));
        g.sync(&a, None, 1, None, None, vec![]).unwrap();
        assert_eq!(g.heartbeat(&a, None, 1), Ok(()), "stable");
        assert!(matches!(g.heartbeat("nobody", None, 1), Err(GroupError::UnknownMemberId { .. })));
    }

    #[test]
    fn stale_generation_and_inconsistent_protocols_are_refused() {
        let (mut g, a, _) = stable_pair();
        assert!(matches!(g.sync(&a, None, 0, None, None, vec![]), Err(GroupError::IllegalGeneration { .. })));
        let mut other = join("", &["range"]);
        other.protocol_type = "connect".into();
        assert!(matches!(g.join(other, || "c".into(), 0), JoinOutcome::Now(Err(GroupError::InconsistentGroupProtocol(_)))));
        assert!(matches!(g.join(join("", &["sticky"]), || "c".into(), 0), JoinOutcome::Now(Err(GroupError::InconsistentGroupProtocol(_)))));
        assert_eq!(g.phase, Phase::Stable, "refused joins do not disturb the group");
    }

    #[test]
    fn member_id_required_then_join() {
        let mut g = GroupState::new("g", Limits::default());
        let mut first = join("", &["range"]);
        first.require_known_member_id = true;
        let id = match g.join(first, || "m-1".into(), 0) {
            JoinOutcome::Now(Err(GroupError::MemberIdRequired { member_id, .. })) => member_id,
            other => panic!("{other:?}"),
        };
        assert!(g.members.is_empty());
        assert_eq!(wait_id(g.join(join(&id, &["range"]), || unreachable!(), 1)), "m-1");
        assert!(matches!(g.join(join("unknown", &["range"]), || unreachable!(), 1), JoinOutcome::Now(Err(GroupError::UnknownMemberId { .. }))));
    }

    #[test]
    fn session_expiry_and_leave_rebalance_and_remove() {
        let (mut g, a, b) = stable_pair();
        g.leave(&a, 5).unwrap();
        assert_eq!(g.phase, Phase::PreparingRebalance);
        assert_eq!(g.leader.as_deref(), Some(b.as_str()), "a new leader");
        // b does not rejoin in time: the forced completion removes it too.
        let done = g.complete_join();
        assert!(done.is_empty());
        assert_eq!(g.phase, Phase::Empty);
        assert_eq!(g.generation_id, 2);
        assert!(matches!(g.leave(&b, 6), Err(GroupError::UnknownMemberId { .. })));
    }

    #[test]
    fn static_member_replacement_and_fencing() {
        let mut g = GroupState::new("g", Limits::default());
        let mut s = join("", &["range"]);
        s.instance_id = Some("i-1".into());
        s.require_known_member_id = true;
        let old = wait_id(g.join(s.clone(), || "old".into(), 0));
        g.complete_join();
        g.sync(&old, Some("i-1"), 1, None, None, vec![(old.clone(), Bytes::from_static(b"X"))]).unwrap();
        // The instance restarts and rejoins without its member id: it takes the
        // old member's place and assignment without a rebalance.
        let rejoined = match g.join(s.clone(), || "new".into(), 1) {
            JoinOutcome::Now(Ok(result)) => result,
            other => panic!("expected an immediate answer, got {other:?}"),
        };
        assert_eq!((rejoined.member_id.as_str(), rejoined.generation_id, rejoined.leader.as_str()), ("new", 1, "new"));
        assert_eq!(g.phase, Phase::Stable);
        assert_eq!(g.sync("new", Some("i-1"), 1, None, None, vec![]).unwrap().unwrap()[0].1, Ok(Bytes::from_static(b"X")));
        assert!(!g.members.contains_key("old"));
        assert_eq!(g.member_for_instance("i-1"), Some("new"));
        assert!(matches!(g.heartbeat("old", Some("i-1"), 1), Err(GroupError::FencedInstanceId { .. })));
        let mut stale = s;
        stale.member_id = "old".into();
        assert!(matches!(g.join(stale, || unreachable!(), 2), JoinOutcome::Now(Err(GroupError::FencedInstanceId { .. }))));
    }

    #[test]
    fn limits_are_enforced() {
        let mut g = GroupState::new("g", Limits { max_size: 1, ..Limits::default() });
        wait_id(g.join(join("", &["range"]), || "a".into(), 0));
        assert!(matches!(g.join(join("", &["range"]), || "b".into(), 0), JoinOutcome::Now(Err(GroupError::GroupMaxSizeReached { .. }))));
        let mut big = join("", &["range"]);
        big.protocols[0].1 = Bytes::from(vec![0u8; MEMBER_METADATA_BYTES_MAX + 1]);
        assert!(matches!(g.join(big, || "c".into(), 0), JoinOutcome::Now(Err(GroupError::MemberMetadataTooLarge { .. }))));
        let mut short = join("", &["range"]);
        short.session_timeout_ms = 1;
        assert!(matches!(g.join(short, || "d".into(), 0), JoinOutcome::Now(Err(GroupError::InvalidSessionTimeout { .. }))));
    }

    #[test]
    fn commits_need_the_current_generation_except_simple_commits() {
        let g = GroupState::new("g", Limits::default());
        assert_eq!(g.check_commit("", None, -1), Ok(()));
        let (g, a, _) = stable_pair();
        assert_eq!(g.check_commit(&a, None, 1), Ok(()));
        assert!(matches!(g.check_commit(&a, None, 0), Err(GroupError::IllegalGeneration { .. })));
        assert!(matches!(g.check_commit("", None, -1), Err(GroupError::UnknownMemberId { .. })));
    }
}
