//! Server-side assignors of the consumer group protocol (KIP-848): pure
//! functions from the members' subscriptions, the subscribed topics' partition
//! counts and the previous target assignment to a new target assignment.
//!
//! Both are deterministic: the same input gives the same output, whatever the
//! order members joined in (members and topics are iterated in key order).

use std::collections::{BTreeMap, BTreeSet};

use uuid::Uuid;

/// Partitions per topic id, as members own them.
pub type Assignment = BTreeMap<Uuid, BTreeSet<i32>>;

/// The most balancing moves the uniform assignor makes per partition of the
/// group (each move strictly narrows the gap between two members, so the bound
/// is never reached by a correct run; it only caps a bug).
const MOVES_PER_PARTITION_MAX: usize = 64;

/// What the assignor knows of one member.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemberSpec {
    /// Topic ids the member subscribes to (that exist).
    pub subscribed: BTreeSet<Uuid>,
    /// The member's previous target assignment (the uniform assignor keeps it where it can).
    pub current: Assignment,
}

/// An assignor a member may name in `group.remote.assignor`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, serde::Serialize, serde::Deserialize)]
pub enum Assignor {
    /// Balanced across members, sticky where possible (Kafka's default).
    #[default]
    Uniform,
    /// Per topic, contiguous ranges of partitions by member id order.
    Range,
}

impl Assignor {
    /// The assignor of a `group.remote.assignor` name.
    pub fn from_name(name: &str) -> Option<Assignor> {
        match name {
            "uniform" => Some(Assignor::Uniform),
            "range" => Some(Assignor::Range),
            _ => None,
        }
    }

    /// Kafka's name of the assignor.
    pub fn name(self) -> &'static str {
        match self {
            Assignor::Uniform => "uniform",
            Assignor::Range => "range",
        }
    }

    /// The target assignment of every member (members without partitions get an empty one).
    pub fn assign(self, members: &BTreeMap<String, MemberSpec>, topics: &BTreeMap<Uuid, i32>) -> BTreeMap<String, Assignment> {
        match self {
            Assignor::Uniform => uniform(members, topics),
            Assignor::Range => range(members, topics),
        }
    }
}

/// Per topic, the members subscribed to it (in member id order) split its
/// partitions into contiguous ranges; the first `partitions % members` get one more.
pub fn range(members: &BTreeMap<String, MemberSpec>, topics: &BTreeMap<Uuid, i32>) -> BTreeMap<String, Assignment> {
    let mut out: BTreeMap<String, Assignment> = members.keys().map(|m| (m.clone(), Assignment::new())).collect();
    for (&topic, &partitions) in topics {
        let subscribers: Vec<&String> = members.iter().filter(|(_, s)| s.subscribed.contains(&topic)).map(|(id, _)| id).collect();
        if subscribers.is_empty() || partitions <= 0 {
            continue;
        }
        let count = subscribers.len() as i32;
        let (per, extra) = (partitions / count, partitions % count);
        let mut start = 0;
        for (i, member) in subscribers.into_iter().enumerate() {
            let len = per + i32::from((i as i32) < extra);
            if len > 0 {
                if let Some(a) = out.get_mut(member) {
                    a.entry(topic).or_default().extend(start..start + len);
                }
            }
            start += len;
        }
    }
    out
}

/// Balanced and sticky: every partition keeps its previous owner if that
/// member still subscribes to its topic; the rest go, most constrained first,
/// to the least loaded subscriber; then partitions move from the most to the
/// least loaded member that may take them until no move narrows a gap of two
/// or more. With identical subscriptions the counts differ by at most one.
pub fn uniform(members: &BTreeMap<String, MemberSpec>, topics: &BTreeMap<Uuid, i32>) -> BTreeMap<String, Assignment> {
    let mut owner: BTreeMap<(Uuid, i32), &str> = BTreeMap::new();
    let mut load: BTreeMap<&str, usize> = members.keys().map(|m| (m.as_str(), 0)).collect();
    let eligible = |topic: &Uuid| -> Vec<&str> { members.iter().filter(|(_, s)| s.subscribed.contains(topic)).map(|(id, _)| id.as_str()).collect() };
    // Stickiness: keep what each member had, if it still may.
    for (id, spec) in members {
        for (topic, partitions) in &spec.current {
            let Some(&count) = topics.get(topic) else { continue };
            if !spec.subscribed.contains(topic) {
                continue;
            }
            for &p in partitions.iter().filter(|&&p| p >= 0 && p < count) {
                if let std::collections::btree_map::Entry::Vacant(slot) = owner.entry((*topic, p)) {
                    slot.insert(id.as_str());
                    *load.entry(id.as_str()).or_default() += 1;
                }
            }
        }
    }
    // New partitions, those with the fewest candidates first.
    let mut free: Vec<(usize, Uuid, i32)> = Vec::new();
    let mut candidates: BTreeMap<Uuid, Vec<&str>> = BTreeMap::new();
    for (&topic, &count) in topics {
        let who = eligible(&topic);
        if who.is_empty() {
            continue;
        }
        for p in 0..count.max(0) {
            if !owner.contains_key(&(topic, p)) {
                free.push((who.len(), topic, p));
            }
        }
        candidates.insert(topic, who);
    }
    free.sort();
    for (_, topic, p) in free {
        let Some(who) = candidates.get(&topic) else { continue };
        if let Some(&best) = who.iter().min_by_key(|m| (load.get(*m).copied().unwrap_or(0), **m)) {
            owner.insert((topic, p), best);
            *load.entry(best).or_default() += 1;
        }
    }
    // Balance: move a partition from a loaded member to a lighter one that may take it.
    let moves_max = owner.len().saturating_mul(MOVES_PER_PARTITION_MAX);
    for _ in 0..moves_max {
        let mut by_load: Vec<(&str, usize)> = load.iter().map(|(m, l)| (*m, *l)).collect();
        by_load.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        let mut moved = None;
        'search: for &(heavy, heavy_load) in &by_load {
            // The heavy member's partitions, last first (lower partitions stay put).
            for (&(topic, p), _) in owner.iter().rev().filter(|(_, o)| **o == heavy) {
                let Some(who) = candidates.get(&topic) else { continue };
                let lightest = who.iter().filter(|m| **m != heavy).min_by_key(|m| (load.get(*m).copied().unwrap_or(0), **m));
                if let Some(&light) = lightest {
                    if load.get(light).copied().unwrap_or(0) + 1 < heavy_load {
                        moved = Some(((topic, p), heavy, light));
                        break 'search;
                    }
                }
            }
        }
        let Some((key, from, to)) = moved else { break };
        owner.insert(key, to);
        *load.entry(from).or_default() -= 1;
        *load.entry(to).or_default() += 1;
    }
    let mut out: BTreeMap<String, Assignment> = members.keys().map(|m| (m.clone(), Assignment::new())).collect();
    for ((topic, p), member) in owner {
        if let Some(a) = out.get_mut(member) {
            a.entry(topic).or_default().insert(p);
        }
    }
    out
}

/// The number of partitions in an assignment.
pub fn size(assignment: &Assignment) -> usize {
    assignment.values().map(BTreeSet::len).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topic(n: u128) -> Uuid {
        Uuid::from_u128(n)
    }

    fn spec(topics: &[Uuid]) -> MemberSpec {
        MemberSpec { subscribed: topics.iter().copied().collect(), current: Assignment::new() }
    }

    fn members(specs: &[(&str, MemberSpec)]) -> BTreeMap<String, MemberSpec> {
        specs.iter().map(|(id, s)| (id.to_string(), s.clone())).collect()
    }

    /// Every partition of every subscribed topic is assigned exactly once.
    fn assert_complete(out: &BTreeMap<String, Assignment>, topics: &BTreeMap<Uuid, i32>) {
        for (&t, &n) in topics {
            for p in 0..n {
                let owners = out.values().filter(|a| a.get(&t).is_some_and(|ps| ps.contains(&p))).count();
                assert_eq!(owners, 1, "partition {t}-{p} has {owners} owners: {out:?}");
            }
        }
    }

    #[test]
    fn uniform_balances_identical_subscriptions() {
        let (a, b) = (topic(1), topic(2));
        let topics = BTreeMap::from([(a, 6), (b, 5)]);
        let ms = members(&[("m1", spec(&[a, b])), ("m2", spec(&[a, b])), ("m3", spec(&[a, b]))]);
        let out = uniform(&ms, &topics);
        assert_complete(&out, &topics);
        let sizes: Vec<usize> = out.values().map(size).collect();
        assert!(sizes.iter().max().unwrap() - sizes.iter().min().unwrap() <= 1, "{sizes:?}");
        assert_eq!(sizes.iter().sum::<usize>(), 11);
    }

    #[test]
    fn uniform_is_sticky_when_a_member_joins() {
        let a = topic(1);
        let topics = BTreeMap::from([(a, 6)]);
        let mut ms = members(&[("m1", spec(&[a])), ("m2", spec(&[a]))]);
        let first = uniform(&ms, &topics);
        for (id, assignment) in &first {
            ms.get_mut(id).unwrap().current = assignment.clone();
        }
        ms.insert("m3".into(), spec(&[a]));
        let second = uniform(&ms, &topics);
        assert_complete(&second, &topics);
        for id in ["m1", "m2"] {
            assert_eq!(size(&second[id]), 2);
            assert!(second[id][&a].is_subset(&first[id][&a]), "{id} only loses partitions: {first:?} → {second:?}");
        }
        assert_eq!(size(&second["m3"]), 2);
    }

    #[test]
    fn uniform_is_deterministic() {
        let (a, b) = (topic(1), topic(2));
        let topics = BTreeMap::from([(a, 7), (b, 3)]);
        let ms = members(&[("x", spec(&[a])), ("y", spec(&[a, b])), ("z", spec(&[b]))]);
        assert_eq!(uniform(&ms, &topics), uniform(&ms.clone(), &topics));
    }

    #[test]
    fn uniform_respects_different_subscriptions() {
        let (a, b) = (topic(1), topic(2));
        let topics = BTreeMap::from([(a, 4), (b, 4)]);
        let ms = members(&[("only-a", spec(&[a])), ("both", spec(&[a, b])), ("only-b", spec(&[b]))]);
        let out = uniform(&ms, &topics);
        assert_complete(&out, &topics);
        assert!(!out["only-a"].contains_key(&b));
        assert!(!out["only-b"].contains_key(&a));
        let sizes: Vec<usize> = out.values().map(size).collect();
        assert!(sizes.iter().max().unwrap() - sizes.iter().min().unwrap() <= 1, "{out:?}");
    }

    #[test]
    fn range_gives_contiguous_ranges_by_member_order() {
        let (a, b) = (topic(1), topic(2));
        let topics = BTreeMap::from([(a, 7), (b, 2)]);
        let ms = members(&[("m2", spec(&[a, b])), ("m1", spec(&[a])), ("m3", spec(&[a, b]))]);
        let out = range(&ms, &topics);
        assert_complete(&out, &topics);
        assert_eq!(out["m1"][&a], BTreeSet::from([0, 1, 2]));
        assert_eq!(out["m2"][&a], BTreeSet::from([3, 4]));
        assert_eq!(out["m3"][&a], BTreeSet::from([5, 6]));
        assert_eq!(out["m2"][&b], BTreeSet::from([0]));
        assert_eq!(out["m3"][&b], BTreeSet::from([1]));
        assert!(!out["m1"].contains_key(&b));
        assert_eq!(range(&ms, &topics), out, "deterministic");
    }

    #[test]
    fn names_round_trip() {
        for a in [Assignor::Uniform, Assignor::Range] {
            assert_eq!(Assignor::from_name(a.name()), Some(a));
        }
        assert_eq!(Assignor::from_name("sticky"), None);
    }
}
