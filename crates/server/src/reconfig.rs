//! etcd's rules for runtime reconfiguration, as pure decisions over the member list and
//! the leader's view of replication: the Cluster service asks them before it proposes a
//! change, and they are tested without a cluster.

use std::collections::HashMap;

use cairn_grpc_gateway::EtcdError;
use cairn_proto::etcdserverpb::Member;

/// A learner may be promoted once its log matches at least this share of the leader's.
pub(crate) const LEARNER_READY_PERCENT: f64 = 0.9;
/// A voter counts as started while its log is at most this many entries behind the
/// leader's.
pub(crate) const STARTED_MAX_LAG: u64 = 10_000;

/// A majority of `voters`.
pub(crate) fn quorum(voters: usize) -> usize {
    voters / 2 + 1
}

/// Whether every URL is an `http(s)://host:port` peer URL (and there is one at least).
pub(crate) fn valid_peer_urls(urls: &[String]) -> bool {
    !urls.is_empty() && urls.iter().all(|u| valid_peer_url(u))
}

fn valid_peer_url(url: &str) -> bool {
    let Ok(uri) = url.parse::<http::Uri>() else {
        return false;
    };
    matches!(uri.scheme_str(), Some("http" | "https"))
        && uri.host().is_some_and(|h| !h.is_empty())
        && uri.port_u16().is_some()
        && matches!(uri.path(), "" | "/")
        && uri.query().is_none()
}

/// Refuses peer URLs another member (any but `except`) already has.
pub(crate) fn check_peer_urls_free(
    members: &[Member],
    urls: &[String],
    except: Option<u64>,
) -> Result<(), EtcdError> {
    let taken = members
        .iter()
        .filter(|m| Some(m.id) != except)
        .any(|m| m.peer_ur_ls.iter().any(|u| urls.contains(u)));
    if taken {
        return Err(EtcdError::PeerUrlExist);
    }
    Ok(())
}

fn find(members: &[Member], id: u64) -> Result<Member, EtcdError> {
    members
        .iter()
        .find(|m| m.id == id)
        .cloned()
        .ok_or(EtcdError::MemberNotFound)
}

fn voters(members: &[Member]) -> usize {
    members.iter().filter(|m| !m.is_learner).count()
}

/// Adding a learner: `max_learners` at most (`--max-learners`, 1 by default).
pub(crate) fn check_learner_add(members: &[Member], max_learners: usize) -> Result<(), EtcdError> {
    if members.iter().filter(|m| m.is_learner).count() >= max_learners {
        return Err(EtcdError::TooManyLearners);
    }
    Ok(())
}

/// Adding a voter (etcd's strict reconfiguration check): the new voter set, in which the
/// new member has not started yet, must still have a quorum of started members.
pub(crate) fn check_voter_add(members: &[Member], started_voters: &[u64]) -> Result<(), EtcdError> {
    if started_voters.len() < quorum(voters(members) + 1) {
        return Err(EtcdError::MemberNotEnoughStarted);
    }
    Ok(())
}

/// Removing member `id`: it must exist, and removing a voter must leave a quorum of
/// started voters among the others (and one voter at least), so that a dead member can
/// be removed while the live ones hold a quorum. Returns the member.
pub(crate) fn check_remove(
    members: &[Member],
    id: u64,
    started_voters: &[u64],
) -> Result<Member, EtcdError> {
    let member = find(members, id)?;
    if member.is_learner {
        return Ok(member);
    }
    let voters = voters(members);
    let remaining_started = started_voters.iter().filter(|v| **v != id).count();
    if voters <= 1 || remaining_started < quorum(voters - 1) {
        return Err(EtcdError::MemberNotEnoughStarted);
    }
    Ok(member)
}

/// Promoting member `id`: it must be a learner whose log has caught up with the leader's
/// (`progress` holds each member's matched index, the leader's own included). Returns the
/// member.
pub(crate) fn check_promote(
    members: &[Member],
    id: u64,
    leader_id: u64,
    progress: &HashMap<u64, u64>,
) -> Result<Member, EtcdError> {
    let member = find(members, id)?;
    if !member.is_learner {
        return Err(EtcdError::MemberNotLearner);
    }
    let leader_match = progress.get(&leader_id).copied().unwrap_or(0);
    let learner_match = progress.get(&id).copied().unwrap_or(0);
    if (learner_match as f64) < (leader_match as f64) * LEARNER_READY_PERCENT {
        return Err(EtcdError::LearnerNotReady);
    }
    Ok(member)
}

/// The `voters` that count as started from the leader's view (`progress`): the leader
/// itself, and every voter that has acknowledged entries and is not far behind.
pub(crate) fn started_voters(
    voters: &[u64],
    leader_id: u64,
    progress: &HashMap<u64, u64>,
) -> Vec<u64> {
    let leader_match = progress.get(&leader_id).copied().unwrap_or(0);
    voters
        .iter()
        .copied()
        .filter(|id| {
            *id == leader_id
                || progress
                    .get(id)
                    .is_some_and(|m| *m > 0 && leader_match.saturating_sub(*m) < STARTED_MAX_LAG)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: u64, url: &str, learner: bool) -> Member {
        Member {
            id,
            name: format!("m{id}"),
            peer_ur_ls: vec![url.to_string()],
            client_ur_ls: Vec::new(),
            is_learner: learner,
        }
    }

    fn three_voters() -> Vec<Member> {
        vec![
            member(1, "http://10.0.0.1:2380", false),
            member(2, "http://10.0.0.2:2380", false),
            member(3, "http://10.0.0.3:2380", false),
        ]
    }

    fn urls(list: &[&str]) -> Vec<String> {
        list.iter().map(|u| u.to_string()).collect()
    }

    #[test]
    fn peer_urls_must_be_http_host_port() {
        for good in [
            "http://10.0.0.4:2380",
            "https://node-4.example:2380/",
            "http://[::1]:2380",
        ] {
            assert!(valid_peer_urls(&urls(&[good])), "{good}");
        }
        for bad in [
            "10.0.0.4:2380",
            "unix://sock:1",
            "http://10.0.0.4",
            "http://10.0.0.4:2380/path",
            "http://:2380",
            "http://10.0.0.4:99999",
            "",
        ] {
            assert!(!valid_peer_urls(&urls(&[bad])), "{bad}");
        }
        assert!(!valid_peer_urls(&[]));
        assert!(!valid_peer_urls(&urls(&["http://a:1", "b:2"])));
    }

    #[test]
    fn a_peer_url_belongs_to_one_member() {
        let members = three_voters();
        assert_eq!(
            check_peer_urls_free(&members, &urls(&["http://10.0.0.2:2380"]), None),
            Err(EtcdError::PeerUrlExist)
        );
        assert_eq!(
            check_peer_urls_free(&members, &urls(&["http://10.0.0.9:2380"]), None),
            Ok(())
        );
        // A member may keep its own URL when it updates them.
        assert_eq!(
            check_peer_urls_free(&members, &urls(&["http://10.0.0.2:2380"]), Some(2)),
            Ok(())
        );
    }

    #[test]
    fn max_learners_at_most() {
        let mut members = three_voters();
        assert_eq!(check_learner_add(&members, 1), Ok(()));
        members.push(member(4, "http://10.0.0.4:2380", true));
        assert_eq!(
            check_learner_add(&members, 1),
            Err(EtcdError::TooManyLearners)
        );
        assert_eq!(check_learner_add(&members, 2), Ok(()));
    }

    #[test]
    fn a_new_voter_needs_a_started_quorum_of_the_larger_cluster() {
        let members = three_voters();
        // Four voters need three started.
        assert_eq!(check_voter_add(&members, &[1, 2, 3]), Ok(()));
        assert_eq!(
            check_voter_add(&members, &[1, 3]),
            Err(EtcdError::MemberNotEnoughStarted)
        );
        // A learner does not count as a voter.
        let one = vec![
            member(1, "http://a:1", false),
            member(2, "http://b:1", true),
        ];
        assert_eq!(
            check_voter_add(&one, &[1]),
            Err(EtcdError::MemberNotEnoughStarted)
        );
        assert_eq!(check_voter_add(&one, &[1, 2]), Ok(()));
    }

    #[test]
    fn removal_keeps_a_started_quorum() {
        let members = three_voters();
        assert_eq!(
            check_remove(&members, 9, &[1, 2, 3]),
            Err(EtcdError::MemberNotFound)
        );
        // 3 voters, all started: removing one leaves 2 of 2.
        assert_eq!(check_remove(&members, 3, &[1, 2, 3]).map(|m| m.id), Ok(3));
        // 3 voters, member 2 down: removing member 3 leaves 1 started of 2.
        assert_eq!(
            check_remove(&members, 3, &[1, 3]),
            Err(EtcdError::MemberNotEnoughStarted)
        );
        // ...but removing the one that is down leaves 2 of 2.
        assert_eq!(check_remove(&members, 2, &[1, 3]).map(|m| m.id), Ok(2));
        // The last voter stays.
        let alone = vec![member(1, "http://a:1", false)];
        assert_eq!(
            check_remove(&alone, 1, &[1]),
            Err(EtcdError::MemberNotEnoughStarted)
        );
        // A learner goes whatever the voters do.
        let mut with_learner = alone.clone();
        with_learner.push(member(2, "http://b:1", true));
        assert_eq!(check_remove(&with_learner, 2, &[]).map(|m| m.id), Ok(2));
    }

    #[test]
    fn only_an_in_sync_learner_is_promoted() {
        let mut members = three_voters();
        members.push(member(4, "http://10.0.0.4:2380", true));
        let progress = |learner: u64| HashMap::from([(1, 1000), (2, 1000), (4, learner)]);
        assert_eq!(
            check_promote(&members, 9, 1, &progress(1000)),
            Err(EtcdError::MemberNotFound)
        );
        assert_eq!(
            check_promote(&members, 2, 1, &progress(1000)),
            Err(EtcdError::MemberNotLearner)
        );
        assert_eq!(
            check_promote(&members, 4, 1, &progress(899)),
            Err(EtcdError::LearnerNotReady)
        );
        assert_eq!(
            check_promote(&members, 4, 1, &progress(900)).map(|m| m.id),
            Ok(4)
        );
        // Unknown progress counts as nothing replicated.
        assert_eq!(
            check_promote(&members, 4, 1, &HashMap::from([(1, 10)])),
            Err(EtcdError::LearnerNotReady)
        );
    }

    #[test]
    fn started_voters_are_the_leader_and_the_ones_keeping_up() {
        let voters = [1, 2, 3, 4];
        let progress = HashMap::from([(1, 20_000), (2, 19_999), (3, 10_000), (4, 0)]);
        // 2 is close behind, 3 is 10 000 behind (too far), 4 never acknowledged.
        assert_eq!(started_voters(&voters, 1, &progress), vec![1, 2]);
        // The leader counts even without progress of its own.
        assert_eq!(started_voters(&[1], 1, &HashMap::new()), vec![1]);
        assert_eq!(quorum(1), 1);
        assert_eq!(quorum(4), 3);
        assert_eq!(quorum(5), 3);
    }
}
