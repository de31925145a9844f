//! The consumer group protocol of KIP-848 (Kafka's `ConsumerGroup`), as
//! plain Rust: no timers, no I/O. The actor feeds it heartbeats (with a lookup
//! of topic ids and partition counts) and session expiries.
//!
//! Epochs: the **group epoch** bumps whenever a member joins, leaves or
//! changes its subscription, or a subscribed topic changes its partition
//! count. The **assignment epoch** is the group epoch the target assignment
//! was computed for (computed at once, in the heartbeat that saw the bump). A
//! member's **member epoch** reaches the assignment epoch when it has
//! reconciled.
//!
//! Reconciliation rule: a member first gives up the partitions its target no
//! longer holds (the heartbeat answer omits them, and they stay "pending
//! revocation" until the member's `topic_partitions` no longer report them);
//! only then does its member epoch advance, and it receives the new
//! partitions of its target that no other member still owns or is revoking.
//! The rest come in later heartbeats, once released.
//!
//! Invariants: `target` has an entry for every key of `members` after a
//! heartbeat; a partition is in at most one member's `assigned ∪
//! pending_revocation`.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::assignors::{Assignment, Assignor, MemberSpec};
use super::error::GroupError;

/// The member epoch of a member leaving the group.
pub const LEAVE_GROUP_MEMBER_EPOCH: i32 = -1;
/// The member epoch of a static member leaving temporarily (it keeps its partitions until its session expires).
pub const LEAVE_GROUP_STATIC_MEMBER_EPOCH: i32 = -2;
/// The most topics one member may subscribe to.
pub const SUBSCRIBED_TOPICS_MAX: usize = 10_000;

/// Where a member is in its reconciliation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MemberState {
    /// The member owns its whole target at the assignment epoch.
    Stable,
    /// The member must give up partitions before it advances.
    UnrevokedPartitions,
    /// The member waits for partitions other members still own.
    UnreleasedPartitions,
}

/// One member of a consumer group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsumerMember {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub rack_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub rebalance_timeout_ms: i32,
    /// Sorted, without duplicates.
    pub subscribed_topic_names: Vec<String>,
    /// A regular expression (RE2 syntax) that subscribes the member to every
    /// topic whose whole name it matches, besides `subscribed_topic_names`.
    /// It is matched again at every heartbeat, so topics created or deleted
    /// later join or leave the subscription.
    #[serde(default)]
    pub subscribed_topic_regex: Option<String>,
    /// The topics `subscribed_topic_regex` matched at the last heartbeat.
    #[serde(default)]
    pub regex_topic_names: Vec<String>,
    pub server_assignor: Option<String>,
    pub member_epoch: i32,
    pub previous_member_epoch: i32,
    /// The partitions the member may own now.
    pub assigned: Assignment,
    /// The partitions the member must give up before it advances.
    pub pending_revocation: Assignment,
    pub state: MemberState,
}

impl ConsumerMember {
    /// The topic names the member subscribes to: its names, then its regex's matches.
    pub fn subscription(&self) -> impl Iterator<Item = &str> {
        self.subscribed_topic_names.iter().chain(&self.regex_topic_names).map(String::as_str)
    }
}

/// The most bytes a subscription regex may have.
pub const SUBSCRIBED_TOPIC_REGEX_BYTES_MAX: usize = 4096;

/// `regex` anchored to match whole topic names, as Kafka matches a
/// subscription regex (RE2/J `matches`).
pub fn whole_name_regex(regex: &str) -> Result<regex::Regex, GroupError> {
    let invalid = |reason: String| GroupError::InvalidRegularExpression { regex: regex.to_owned(), reason };
    if regex.len() > SUBSCRIBED_TOPIC_REGEX_BYTES_MAX {
        return Err(invalid(format!("longer than {SUBSCRIBED_TOPIC_REGEX_BYTES_MAX} bytes")));
    }
    regex::RegexBuilder::new(&format!("^(?:{regex})$")).size_limit(1 << 20).build().map_err(|e| invalid(e.to_string()))
}

/// A ConsumerGroupHeartbeat, as domain values. `None` fields are unchanged.
#[derive(Debug, Clone, Default)]
pub struct Heartbeat {
    /// Empty for a v0 member joining (the coordinator names it).
    pub member_id: String,
    pub member_epoch: i32,
    pub instance_id: Option<String>,
    pub rack_id: Option<String>,
    /// -1: unchanged.
    pub rebalance_timeout_ms: i32,
    pub subscribed_topic_names: Option<Vec<String>>,
    /// `Some("")` clears the member's regex.
    pub subscribed_topic_regex: Option<String>,
    pub server_assignor: Option<Assignor>,
    /// The partitions the member owns (`None`: unchanged since its last heartbeat).
    pub owned: Option<Assignment>,
    pub client_id: String,
    pub client_host: String,
}

/// What a member learns from a heartbeat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeartbeatAnswer {
    pub member_id: String,
    pub member_epoch: i32,
    /// The partitions the member may own, when it must be told.
    pub assignment: Option<Assignment>,
}

/// Topic ids and partition counts by name, as the group last saw them.
pub type TopicsMetadata = BTreeMap<String, (Uuid, i32)>;

/// A consumer group's state. See the module docs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsumerGroup {
    pub group_epoch: i32,
    pub assignment_epoch: i32,
    pub members: BTreeMap<String, ConsumerMember>,
    pub target: BTreeMap<String, Assignment>,
    pub metadata: TopicsMetadata,
    pub assignor: Assignor,
}

/// The state Kafka reports for a consumer group.
pub fn state_name(group: &ConsumerGroup) -> &'static str {
    if group.members.is_empty() {
        "Empty"
    } else if group.assignment_epoch < group.group_epoch {
        "Assigning"
    } else if group.members.values().any(|m| m.member_epoch != group.assignment_epoch || m.state != MemberState::Stable) {
        "Reconciling"
    } else {
        "Stable"
    }
}

fn minus(a: &Assignment, b: &Assignment) -> Assignment {
    let mut out = Assignment::new();
    for (t, ps) in a {
        let rest: BTreeSet<i32> = match b.get(t) {
            Some(other) => ps.difference(other).copied().collect(),
            None => ps.clone(),
        };
        if !rest.is_empty() {
            out.insert(*t, rest);
        }
    }
    out
}

fn intersect(a: &Assignment, b: &Assignment) -> Assignment {
    let mut out = Assignment::new();
    for (t, ps) in a {
        if let Some(other) = b.get(t) {
            let both: BTreeSet<i32> = ps.intersection(other).copied().collect();
            if !both.is_empty() {
                out.insert(*t, both);
            }
        }
    }
    out
}

fn union_into(into: &mut Assignment, from: &Assignment) {
    for (t, ps) in from {
        into.entry(*t).or_default().extend(ps.iter().copied());
    }
}

fn is_subset(a: &Assignment, b: &Assignment) -> bool {
    minus(a, b).is_empty()
}

impl Default for ConsumerGroup {
    fn default() -> Self {
        ConsumerGroup::new()
    }
}

impl ConsumerGroup {
    pub fn new() -> ConsumerGroup {
        ConsumerGroup {
            group_epoch: 0,
            assignment_epoch: 0,
            members: BTreeMap::new(),
            target: BTreeMap::new(),
            metadata: TopicsMetadata::new(),
            assignor: Assignor::default(),
        }
    }

    fn unknown(group_id: &str, member_id: &str) -> GroupError {
        GroupError::UnknownMemberId { group_id: group_id.to_owned(), member_id: member_id.to_owned() }
    }

    fn fenced(group_id: &str, member_id: &str, epoch: i32, current: i32) -> GroupError {
        GroupError::FencedMemberEpoch { group_id: group_id.to_owned(), member_id: member_id.to_owned(), member_epoch: epoch, current }
    }

    /// Handles a heartbeat. `topics` resolves a topic name to its id and
    /// partition count (`None`: the topic does not exist); `topic_names`
    /// lists every topic, and is called only when a member subscribes by regex.
    pub fn heartbeat(
        &mut self,
        group_id: &str,
        request: Heartbeat,
        topics: impl Fn(&str) -> Option<(Uuid, i32)>,
        topic_names: impl Fn() -> Vec<String>,
        new_member_id: impl FnOnce() -> String,
        max_size: usize,
    ) -> Result<HeartbeatAnswer, GroupError> {
        if request.member_epoch == LEAVE_GROUP_MEMBER_EPOCH || request.member_epoch == LEAVE_GROUP_STATIC_MEMBER_EPOCH {
            return self.leave(group_id, &request.member_id, request.member_epoch);
        }
        if request.subscribed_topic_names.as_ref().is_some_and(|t| t.len() > SUBSCRIBED_TOPICS_MAX) {
            return Err(GroupError::InvalidRequest(format!("a member may subscribe to at most {SUBSCRIBED_TOPICS_MAX} topics")));
        }
        if let Some(regex) = request.subscribed_topic_regex.as_deref().filter(|r| !r.is_empty()) {
            whole_name_regex(regex)?;
        }
        let joining = request.member_epoch == 0;
        let mut bump = false;
        let member_id = if joining {
            let member_id = if request.member_id.is_empty() { new_member_id() } else { request.member_id.clone() };
            self.join(group_id, &member_id, &request, max_size, &mut bump)?;
            member_id
        } else {
            let Some(member) = self.members.get(&request.member_id) else { return Err(Self::unknown(group_id, &request.member_id)) };
            let epoch = request.member_epoch;
            if epoch > member.member_epoch {
                return Err(Self::fenced(group_id, &request.member_id, epoch, member.member_epoch));
            }
            if epoch < member.member_epoch {
                // A member that missed the answer that advanced it may retry at its previous epoch.
                let retry = epoch == member.previous_member_epoch && request.owned.as_ref().is_some_and(|o| is_subset(o, &member.assigned));
                if !retry {
                    return Err(Self::fenced(group_id, &request.member_id, epoch, member.member_epoch));
                }
            }
            request.member_id.clone()
        };
        let before = self.members.get(&member_id).map(|m| m.assigned.clone());
        if let Some(member) = self.members.get_mut(&member_id) {
            if request.rack_id.is_some() {
                member.rack_id = request.rack_id.clone();
            }
            member.client_id = request.client_id.clone();
            member.client_host = request.client_host.clone();
            if request.rebalance_timeout_ms >= 0 {
                member.rebalance_timeout_ms = request.rebalance_timeout_ms;
            }
            if let Some(names) = &request.subscribed_topic_names {
                let mut names = names.clone();
                names.sort();
                names.dedup();
                if names != member.subscribed_topic_names {
                    member.subscribed_topic_names = names;
                    bump = true;
                }
            }
            if let Some(regex) = &request.subscribed_topic_regex {
                let regex = Some(regex.clone()).filter(|r| !r.is_empty());
                if regex != member.subscribed_topic_regex {
                    // Matched again below while any member has a regex; none left means no matches.
                    member.regex_topic_names.clear();
                    member.subscribed_topic_regex = regex;
                    bump = true;
                }
            }
            if let Some(assignor) = request.server_assignor {
                if member.server_assignor.as_deref() != Some(assignor.name()) {
                    member.server_assignor = Some(assignor.name().to_owned());
                    bump = true;
                }
            }
        }
        self.resolve_regexes(&topic_names);
        let metadata = self.subscribed_metadata(&topics);
        if metadata != self.metadata {
            self.metadata = metadata;
            bump = true;
        }
        if bump {
            self.group_epoch += 1;
        }
        if self.assignment_epoch < self.group_epoch {
            self.compute_target();
        }
        self.reconcile(&member_id, request.owned.as_ref());
        let member = self.members.get(&member_id).ok_or_else(|| Self::unknown(group_id, &member_id))?;
        let full = (request.subscribed_topic_names.is_some() || request.subscribed_topic_regex.is_some())
            && request.owned.is_some()
            && request.rebalance_timeout_ms >= 0;
        let changed = before.as_ref() != Some(&member.assigned);
        Ok(HeartbeatAnswer {
            member_id: member_id.clone(),
            member_epoch: member.member_epoch,
            assignment: (joining || full || changed).then(|| member.assigned.clone()),
        })
    }

    fn join(&mut self, group_id: &str, member_id: &str, request: &Heartbeat, max_size: usize, bump: &mut bool) -> Result<(), GroupError> {
        if request.subscribed_topic_names.is_none() && request.subscribed_topic_regex.is_none() {
            return Err(GroupError::InvalidRequest("subscribed_topic_names or subscribed_topic_regex must be set when a member joins".into()));
        }
        if let Some(instance) = &request.instance_id {
            let holder = self.members.values().find(|m| m.instance_id.as_deref() == Some(instance)).map(|m| (m.member_id.clone(), m.member_epoch));
            match holder {
                // The static member came back: it takes its old place, partitions and epoch.
                Some((old, LEAVE_GROUP_STATIC_MEMBER_EPOCH)) => {
                    if let Some(mut member) = self.members.remove(&old) {
                        member.member_id = member_id.to_owned();
                        member.member_epoch = member.previous_member_epoch;
                        self.members.insert(member_id.to_owned(), member);
                    }
                    if let Some(target) = self.target.remove(&old) {
                        self.target.insert(member_id.to_owned(), target);
                    }
                    return Ok(());
                }
                Some((old, _)) if old != member_id => {
                    return Err(GroupError::UnreleasedInstanceId {
                        group_id: group_id.to_owned(),
                        instance_id: instance.clone(),
                        member_id: member_id.to_owned(),
                    });
                }
                _ => {}
            }
        }
        if self.members.contains_key(member_id) {
            return Ok(()); // rejoining: the full assignment is sent again
        }
        if self.members.len() >= max_size {
            return Err(GroupError::GroupMaxSizeReached { group_id: group_id.to_owned(), max: max_size });
        }
        self.members.insert(
            member_id.to_owned(),
            ConsumerMember {
                member_id: member_id.to_owned(),
                instance_id: request.instance_id.clone(),
                rack_id: request.rack_id.clone(),
                client_id: request.client_id.clone(),
                client_host: request.client_host.clone(),
                rebalance_timeout_ms: request.rebalance_timeout_ms,
                subscribed_topic_names: Vec::new(),
                subscribed_topic_regex: None,
                regex_topic_names: Vec::new(),
                server_assignor: None,
                member_epoch: 0,
                previous_member_epoch: 0,
                assigned: Assignment::new(),
                pending_revocation: Assignment::new(),
                state: MemberState::Stable,
            },
        );
        *bump = true;
        Ok(())
    }

    fn leave(&mut self, group_id: &str, member_id: &str, epoch: i32) -> Result<HeartbeatAnswer, GroupError> {
        let Some(member) = self.members.get_mut(member_id) else { return Err(Self::unknown(group_id, member_id)) };
        if epoch == LEAVE_GROUP_STATIC_MEMBER_EPOCH && member.instance_id.is_some() {
            // Kept, with its partitions, until it returns or its session expires.
            if member.member_epoch != LEAVE_GROUP_STATIC_MEMBER_EPOCH {
                member.previous_member_epoch = member.member_epoch;
            }
            member.member_epoch = LEAVE_GROUP_STATIC_MEMBER_EPOCH;
        } else {
            self.remove(member_id);
        }
        Ok(HeartbeatAnswer { member_id: member_id.to_owned(), member_epoch: epoch, assignment: None })
    }

    /// Removes a member (it left, or its session expired) and bumps the group
    /// epoch. Whether it was a member.
    pub fn remove(&mut self, member_id: &str) -> bool {
        if self.members.remove(member_id).is_none() {
            return false;
        }
        self.target.remove(member_id);
        self.group_epoch += 1;
        true
    }

    /// Matches every member's regex against all topic names (listed once, and
    /// only if some member has a regex).
    fn resolve_regexes(&mut self, topic_names: &impl Fn() -> Vec<String>) {
        if self.members.values().all(|m| m.subscribed_topic_regex.is_none()) {
            return;
        }
        let all = topic_names();
        for member in self.members.values_mut() {
            // A stored regex compiled when it was accepted; one that no longer does matches nothing.
            member.regex_topic_names = match member.subscribed_topic_regex.as_deref().map(whole_name_regex) {
                Some(Ok(re)) => all.iter().filter(|n| re.is_match(n)).cloned().collect(),
                Some(Err(_)) | None => Vec::new(),
            };
        }
    }

    /// Ids and partition counts of the topics any member subscribes to (that exist).
    fn subscribed_metadata(&self, topics: &impl Fn(&str) -> Option<(Uuid, i32)>) -> TopicsMetadata {
        let names: BTreeSet<&str> = self.members.values().flat_map(ConsumerMember::subscription).collect();
        names.into_iter().filter_map(|n| topics(n).map(|meta| (n.to_owned(), meta))).collect()
    }

    /// The assignor most members ask for (ties: uniform before range); uniform if none asks.
    fn choose_assignor(&self) -> Assignor {
        let mut votes: BTreeMap<Assignor, usize> = BTreeMap::new();
        for m in self.members.values() {
            if let Some(a) = m.server_assignor.as_deref().and_then(Assignor::from_name) {
                *votes.entry(a).or_default() += 1;
            }
        }
        votes.into_iter().max_by(|a, b| a.1.cmp(&b.1).then(b.0.cmp(&a.0))).map(|(a, _)| a).unwrap_or_default()
    }

    /// Computes the target assignment for the group epoch.
    fn compute_target(&mut self) {
        self.assignor = self.choose_assignor();
        let specs: BTreeMap<String, MemberSpec> = self
            .members
            .iter()
            .map(|(id, m)| {
                let subscribed = m.subscription().filter_map(|n| self.metadata.get(n).map(|(id, _)| *id)).collect();
                (id.clone(), MemberSpec { subscribed, current: self.target.get(id).cloned().unwrap_or_default() })
            })
            .collect();
        let topics: BTreeMap<Uuid, i32> = self.metadata.values().copied().collect();
        self.target = self.assignor.assign(&specs, &topics);
        self.assignment_epoch = self.group_epoch;
    }

    /// Moves a member toward its target (see the module docs).
    fn reconcile(&mut self, member_id: &str, owned: Option<&Assignment>) {
        let target = self.target.get(member_id).cloned().unwrap_or_default();
        // Partitions other members own or are giving up.
        let mut taken = Assignment::new();
        for (id, m) in &self.members {
            if id != member_id {
                union_into(&mut taken, &m.assigned);
                union_into(&mut taken, &m.pending_revocation);
            }
        }
        let assignment_epoch = self.assignment_epoch;
        let Some(member) = self.members.get_mut(member_id) else { return };
        if member.member_epoch < 0 {
            return;
        }
        if member.state == MemberState::UnrevokedPartitions {
            match owned {
                Some(owned) if intersect(owned, &member.pending_revocation).is_empty() => member.pending_revocation.clear(),
                _ => return,
            }
        }
        if member.state == MemberState::Stable && member.member_epoch == assignment_epoch {
            return;
        }
        let keep = intersect(&member.assigned, &target);
        let revoke = minus(&member.assigned, &target);
        if !revoke.is_empty() {
            member.assigned = keep;
            member.pending_revocation = revoke;
            member.state = MemberState::UnrevokedPartitions;
            return;
        }
        let wanted = minus(&target, &keep);
        let free = minus(&wanted, &taken);
        let unreleased = intersect(&wanted, &taken);
        let mut assigned = keep;
        union_into(&mut assigned, &free);
        member.assigned = assigned;
        if member.member_epoch != assignment_epoch {
            member.previous_member_epoch = member.member_epoch;
            member.member_epoch = assignment_epoch;
        }
        member.state = if unreleased.is_empty() { MemberState::Stable } else { MemberState::UnreleasedPartitions };
    }

    /// Checks an OffsetCommit of `member_id` at `member_epoch`.
    pub fn check_commit(&self, group_id: &str, member_id: &str, member_epoch: i32) -> Result<(), GroupError> {
        if member_epoch < 0 && self.members.is_empty() {
            return Ok(()); // a commit from outside the group (an admin tool)
        }
        let Some(member) = self.members.get(member_id) else { return Err(Self::unknown(group_id, member_id)) };
        if member_epoch != member.member_epoch {
            return Err(GroupError::StaleMemberEpoch {
                group_id: group_id.to_owned(),
                member_id: member_id.to_owned(),
                member_epoch,
                current: member.member_epoch,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Uuid = Uuid::from_u128(7);

    fn topics(name: &str) -> Option<(Uuid, i32)> {
        (name == "t").then_some((T, 6))
    }

    fn join(id: &str) -> Heartbeat {
        Heartbeat {
            member_id: id.into(),
            member_epoch: 0,
            rebalance_timeout_ms: 30_000,
            subscribed_topic_names: Some(vec!["t".into()]),
            owned: Some(Assignment::new()),
            ..Heartbeat::default()
        }
    }

    fn beat(id: &str, epoch: i32, owned: Option<&Assignment>) -> Heartbeat {
        Heartbeat { member_id: id.into(), member_epoch: epoch, rebalance_timeout_ms: -1, owned: owned.cloned(), ..Heartbeat::default() }
    }

    fn hb(g: &mut ConsumerGroup, h: Heartbeat) -> HeartbeatAnswer {
        g.heartbeat("g", h, topics, Vec::new, || "new".into(), usize::MAX).unwrap()
    }

    fn parts(a: &Assignment) -> BTreeSet<i32> {
        a.get(&T).cloned().unwrap_or_default()
    }

    #[test]
    fn two_members_reconcile_through_revocation() {
        let mut g = ConsumerGroup::new();
        let a = hb(&mut g, join("a"));
        assert_eq!((a.member_epoch, parts(a.assignment.as_ref().unwrap()).len()), (1, 6));
        let a_owned = a.assignment.unwrap();
        let b = hb(&mut g, join("b"));
        assert_eq!(g.group_epoch, 2);
        // b's target partitions are still a's: b advances with nothing yet.
        assert_eq!(b.member_epoch, 2);
        assert!(parts(b.assignment.as_ref().unwrap()).is_empty());
        assert_eq!(g.members["b"].state, MemberState::UnreleasedPartitions);
        // a is told to keep 3; its epoch does not advance until it revokes.
        let a2 = hb(&mut g, beat("a", 1, None));
        assert_eq!(a2.member_epoch, 1);
        let kept = a2.assignment.unwrap();
        assert_eq!(parts(&kept).len(), 3);
        assert_eq!(state_name(&g), "Reconciling");
        // Not yet revoked: a still reports all six.
        let a3 = hb(&mut g, beat("a", 1, Some(&a_owned)));
        assert_eq!(a3.member_epoch, 1);
        assert!(g.check_commit("g", "a", 1).is_ok());
        // b still waits.
        let b2 = hb(&mut g, beat("b", 2, Some(&Assignment::new())));
        assert!(b2.assignment.is_none());
        // a revokes: it advances to epoch 2.
        let a4 = hb(&mut g, beat("a", 1, Some(&kept)));
        assert_eq!(a4.member_epoch, 2);
        // b gets the three released partitions.
        let b3 = hb(&mut g, beat("b", 2, Some(&Assignment::new())));
        let b_parts = parts(b3.assignment.as_ref().unwrap());
        assert_eq!(b_parts.len(), 3);
        assert!(b_parts.is_disjoint(&parts(&kept)));
        assert_eq!(state_name(&g), "Stable");
        // a leaves; b takes everything.
        let left = hb(&mut g, beat("a", LEAVE_GROUP_MEMBER_EPOCH, None));
        assert_eq!(left.member_epoch, -1);
        let b4 = hb(&mut g, beat("b", 2, None));
        assert_eq!((b4.member_epoch, parts(b4.assignment.as_ref().unwrap()).len()), (3, 6));
    }

    #[test]
    fn a_regex_subscribes_to_whole_name_matches_and_follows_new_topics() {
        const A: Uuid = Uuid::from_u128(10);
        const B: Uuid = Uuid::from_u128(11);
        let with_b = std::cell::Cell::new(false);
        let lookup = |name: &str| match name {
            "logs-a" => Some((A, 2)),
            "logs-b" if with_b.get() => Some((B, 1)),
            "other-logs" => Some((Uuid::from_u128(12), 4)),
            _ => None,
        };
        let names = || {
            let mut n = vec!["logs-a".to_owned(), "other-logs".to_owned()];
            if with_b.get() {
                n.push("logs-b".to_owned());
            }
            n
        };
        let mut g = ConsumerGroup::new();
        let by_regex = Heartbeat {
            member_id: "a".into(),
            rebalance_timeout_ms: 30_000,
            subscribed_topic_regex: Some("logs-.*".into()),
            owned: Some(Assignment::new()),
            ..Heartbeat::default()
        };
        let a = g.heartbeat("g", by_regex, lookup, names, || unreachable!(), usize::MAX).unwrap();
        // "other-logs" contains a match but is not one: the regex matches whole names.
        let assigned = a.assignment.unwrap();
        assert_eq!(assigned.keys().copied().collect::<Vec<_>>(), vec![A]);
        assert_eq!(g.members["a"].subscribed_topic_regex.as_deref(), Some("logs-.*"));
        // A matching topic created later joins the subscription at the next heartbeat.
        with_b.set(true);
        let a2 = g.heartbeat("g", beat("a", 1, Some(&assigned)), lookup, names, || unreachable!(), usize::MAX).unwrap();
        assert_eq!(a2.member_epoch, 2);
        assert_eq!(a2.assignment.unwrap().keys().copied().collect::<Vec<_>>(), vec![A, B]);
        // An empty regex clears it.
        let clear = Heartbeat { subscribed_topic_regex: Some(String::new()), ..beat("a", 2, None) };
        g.heartbeat("g", clear, lookup, names, || unreachable!(), usize::MAX).unwrap();
        assert_eq!(g.members["a"].subscribed_topic_regex, None);
        assert!(g.members["a"].subscription().next().is_none());
    }

    #[test]
    fn an_invalid_regex_is_refused() {
        let mut g = ConsumerGroup::new();
        let bad = Heartbeat { subscribed_topic_regex: Some("logs-(".into()), ..join("a") };
        let err = g.heartbeat("g", bad, topics, Vec::new, || unreachable!(), usize::MAX).unwrap_err();
        assert!(matches!(err, GroupError::InvalidRegularExpression { .. }), "{err:?}");
        assert!(g.members.is_empty());
        let long = Heartbeat { subscribed_topic_regex: Some("a".repeat(SUBSCRIBED_TOPIC_REGEX_BYTES_MAX + 1)), ..join("a") };
        assert!(matches!(g.heartbeat("g", long, topics, Vec::new, || unreachable!(), usize::MAX), Err(GroupError::InvalidRegularExpression { .. })));
    }

    #[test]
    fn fencing_and_unknown_members() {
        let mut g = ConsumerGroup::new();
        hb(&mut g, join("a"));
        let err = g.heartbeat("g", beat("a", 5, None), topics, Vec::new, || unreachable!(), usize::MAX).unwrap_err();
        assert!(matches!(err, GroupError::FencedMemberEpoch { .. }), "{err:?}");
        let err = g.heartbeat("g", beat("zz", 1, None), topics, Vec::new, || unreachable!(), usize::MAX).unwrap_err();
        assert!(matches!(err, GroupError::UnknownMemberId { .. }));
        hb(&mut g, join("b"));
        hb(&mut g, beat("a", 1, None));
        let kept = g.members["a"].assigned.clone();
        hb(&mut g, beat("a", 1, Some(&kept)));
        assert_eq!(g.members["a"].member_epoch, 2);
        // A retry at the previous epoch with a subset of the assignment is accepted; an older one is fenced.
        assert!(g.heartbeat("g", beat("a", 1, Some(&kept)), topics, Vec::new, || unreachable!(), usize::MAX).is_ok());
        assert!(matches!(g.heartbeat("g", beat("a", 1, None), topics, Vec::new, || unreachable!(), usize::MAX), Err(GroupError::FencedMemberEpoch { .. })));
        assert!(matches!(g.check_commit("g", "a", 1), Err(GroupError::StaleMemberEpoch { .. })));
        assert!(matches!(g.check_commit("g", "x", 1), Err(GroupError::UnknownMemberId { .. })));
    }

    #[test]
    fn static_members_leave_temporarily_and_return() {
        let mut g = ConsumerGroup::new();
        let mut s = join("s1");
        s.instance_id = Some("i".into());
        let first = hb(&mut g, s.clone());
        assert_eq!(parts(first.assignment.as_ref().unwrap()).len(), 6);
        let left = hb(&mut g, beat("s1", LEAVE_GROUP_STATIC_MEMBER_EPOCH, None));
        assert_eq!(left.member_epoch, -2);
        let epoch = g.group_epoch;
        // Another member with the same instance id while it is held: refused only if not released.
        s.member_id = "s2".into();
        let back = hb(&mut g, s.clone());
        assert_eq!(back.member_epoch, 1, "the old epoch is restored");
        assert_eq!(parts(back.assignment.as_ref().unwrap()).len(), 6);
        assert_eq!(g.group_epoch, epoch, "no rebalance");
        s.member_id = "s3".into();
        assert!(matches!(g.heartbeat("g", s, topics, Vec::new, || unreachable!(), usize::MAX), Err(GroupError::UnreleasedInstanceId { .. })));
    }

    #[test]
    fn joins_need_a_subscription_and_respect_the_size_limit() {
        let mut g = ConsumerGroup::new();
        let mut bad = join("a");
        bad.subscribed_topic_names = None;
        assert!(matches!(g.heartbeat("g", bad, topics, Vec::new, || unreachable!(), 10), Err(GroupError::InvalidRequest(_))));
        hb(&mut g, join("a"));
        assert!(matches!(g.heartbeat("g", join("b"), topics, Vec::new, || unreachable!(), 1), Err(GroupError::GroupMaxSizeReached { .. })));
        // A v0 member without an id gets one.
        let named = hb(&mut g, join(""));
        assert_eq!(named.member_id, "new");
    }

    #[test]
    fn removal_bumps_the_epoch_and_frees_partitions() {
        let mut g = ConsumerGroup::new();
        hb(&mut g, join("a"));
        hb(&mut g, join("b"));
        assert!(g.remove("a"));
        assert!(!g.remove("a"));
        let b = hb(&mut g, beat("b", 2, Some(&Assignment::new())));
        assert_eq!(parts(b.assignment.as_ref().unwrap()).len(), 6);
        assert_eq!(b.member_epoch, 3);
    }
}
