//! Committed entries reach the state machine here, each proposal at most once (see
//! [`crate::proposal`]), and membership changes reach raft.

use raft::eraftpb::{ConfChangeV2, Entry, EntryType};
use raft_proto::ConfChangeI as _;

use super::Node;
use crate::error::RaftError;
use crate::proposal::{ProposalId, Verdict};
use crate::state_machine::{CommittedEntry, EntryKind, StateMachine};
use crate::transport::Transport;
use crate::wire;

impl<S: StateMachine, T: Transport> Node<S, T> {
    pub(super) fn apply(&mut self, entries: Vec<Entry>) -> Result<(), String> {
        if entries.is_empty() {
            return Ok(());
        }
        for entry in &entries {
            let proposal = ProposalId::from_context(&entry.context);
            let verdict = proposal.map(|id| (id, self.ledger.check(id)));
            let rejected = match verdict {
                Some((id, Verdict::Stale { last })) => Some((id, last)),
                Some((id, Verdict::Fresh)) => {
                    self.ledger.record(id);
                    None
                }
                None => None,
            };
            // Entries the state machine already holds are replayed after a restart so that
            // membership and the ledger are rebuilt; only newer ones reach the state machine.
            let replay = entry.index <= self.applied;
            let kind = match (rejected, entry.get_entry_type()) {
                (Some((id, _)), _) => EntryKind::Rejected(id),
                (None, EntryType::EntryNormal) if entry.data.is_empty() => EntryKind::Empty,
                (None, EntryType::EntryNormal) => EntryKind::Normal(&entry.data),
                (None, EntryType::EntryConfChange) => {
                    let cc = wire::parse_conf_change(&entry.data)
                        .map_err(|e| format!("undecodable conf change at {}: {e}", entry.index))?;
                    self.apply_conf_change(entry.index, cc.into_v2())?
                }
                (None, EntryType::EntryConfChangeV2) => {
                    let cc = wire::parse_conf_change_v2(&entry.data)
                        .map_err(|e| format!("undecodable conf change at {}: {e}", entry.index))?;
                    self.apply_conf_change(entry.index, cc)?
                }
            };
            if replay {
                continue;
            }
            if let Some((id, last)) = rejected {
                metrics::counter!(crate::metrics::PROPOSALS_REJECTED_TOTAL).increment(1);
                tracing::warn!(
                    index = entry.index,
                    term = entry.term,
                    proposer = %format!("{:x}", id.proposer),
                    seq = id.seq,
                    last_applied_seq = last,
                    "a proposal reached the log again or after a later one of its member; not applied"
                );
            }
            let out = self
                .sm
                .apply(CommittedEntry {
                    index: entry.index,
                    term: entry.term,
                    proposal: if rejected.is_none() { proposal } else { None },
                    kind,
                })
                .map_err(|e| format!("applying entry {}: {e}", entry.index))?;
            self.applied = entry.index;
            crash_point!("raft::between_applies");
            let Some(id) = proposal.filter(|id| id.proposer == self.cfg.id) else {
                continue;
            };
            match rejected {
                None => {
                    if let Some(reply) = self.proposals.remove(&id.seq) {
                        let _ = reply.send(Ok(out));
                    }
                }
                Some((_, last)) => {
                    // The first copy already answered its waiter; a waiter still here
                    // belongs to a proposal overtaken by a later one: it never applies.
                    if let Some(reply) = self.proposals.remove(&id.seq) {
                        let _ = reply.send(Err(RaftError::ProposalDropped(
                            "overtaken by a later proposal of this member".into(),
                        )));
                    }
                    self.ids.advance_past(last);
                }
            }
        }
        let _ = self.applied_tx.send(self.applied);
        self.gauges.applied.set(self.applied as f64);
        Ok(())
    }

    /// Applies a membership change to raft (also when replaying entries the state machine
    /// already holds: raft forgets membership on restart).
    pub(super) fn apply_conf_change(
        &mut self,
        index: u64,
        change: ConfChangeV2,
    ) -> Result<EntryKind<'static>, String> {
        let state = self
            .raw
            .apply_conf_change(&change)
            .map_err(|e| format!("conf change at {index}: {e}"))?;
        self.conf_state = state.clone();
        self.campaign_alone = true;
        Ok(EntryKind::ConfChange { change, state })
    }
}
