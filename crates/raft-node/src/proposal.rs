//! Exactly-once apply.
//!
//! Raft guarantees that every *log entry* is applied once, in order, on every member. It
//! does not guarantee that a *proposal* reaches the log once: a proposal forwarded to the
//! leader (`MsgProp`) carries no term, so raft accepts it whenever it arrives, and a copy
//! that was stuck in a connection the sender had given up on, or re-forwarded by a member
//! that stopped being leader, lands in the log a second time, long after the first.
//!
//! So every proposal carries a [`ProposalId`] in its entry's context: the proposing
//! member and a sequence number that only grows on that member. The node keeps a
//! [`ProposalLedger`] — the highest sequence applied per proposer — and applies an entry
//! only if its sequence is above that; anything else (a duplicate, or a proposal older
//! than one already applied from the same member) changes nothing but the applied index.
//!
//! A proposal may also carry a **deadline** (the proposer's wall clock, in milliseconds):
//! the time after which its client no longer waits. A member that receives a forwarded
//! proposal past its deadline drops it instead of appending it, so that a proposal stuck
//! in the network (a connection that heals seconds later) is never applied after its
//! client was told it timed out — and a client that then retried does not see its write
//! applied twice. Members' clocks must agree within
//! [`NodeConfig::proposal_clock_tolerance`](crate::NodeConfig::proposal_clock_tolerance).
//!
//! The ledger is replicated state: at any log index it is a function of the log before
//! it, so every member takes the same decision for the same entry. It is written with
//! every snapshot mark of the log (a restart replays the entries after the mark through
//! the same check, reproducing every earlier decision) and travels inside every state
//! machine snapshot sent to a follower (see [`crate::StateMachine::snapshot`]).

use std::collections::BTreeMap;

/// The first byte of an entry context that holds a [`ProposalId`].
const CONTEXT_TAG: u8 = 0xC1;
/// Length of an entry context holding a [`ProposalId`]: tag, proposer, sequence.
const CONTEXT_LEN: usize = 17;
/// The first byte of an entry context that holds a [`ProposalId`] and a deadline.
const CONTEXT_TAG_DEADLINE: u8 = 0xC2;
/// Its length: tag, proposer, sequence, deadline.
const CONTEXT_LEN_DEADLINE: usize = 25;

/// Who proposed an entry, and the proposal's sequence number on that member.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProposalId {
    /// The proposing member's raft id.
    pub proposer: u64,
    /// Grows with every proposal of that member (never 0).
    pub seq: u64,
}

impl ProposalId {
    /// The raft entry context carrying this id and, if given, the deadline (milliseconds
    /// since the Unix epoch) after which the proposal must not be appended any more.
    pub fn to_context(self, deadline_ms: Option<u64>) -> Vec<u8> {
        let mut out = Vec::with_capacity(CONTEXT_LEN_DEADLINE);
        out.push(if deadline_ms.is_some() {
            CONTEXT_TAG_DEADLINE
        } else {
            CONTEXT_TAG
        });
        out.extend_from_slice(&self.proposer.to_be_bytes());
        out.extend_from_slice(&self.seq.to_be_bytes());
        if let Some(deadline) = deadline_ms {
            out.extend_from_slice(&deadline.to_be_bytes());
        }
        out
    }

    /// The id in an entry context, if it holds one (entries made by raft itself, or by
    /// older versions, have none).
    pub fn from_context(context: &[u8]) -> Option<ProposalId> {
        match (context.first(), context.len()) {
            (Some(&CONTEXT_TAG), CONTEXT_LEN)
            | (Some(&CONTEXT_TAG_DEADLINE), CONTEXT_LEN_DEADLINE) => Some(ProposalId {
                proposer: word(context, 1),
                seq: word(context, 9),
            }),
            _ => None,
        }
    }

    /// The deadline in an entry context, if it holds one (milliseconds since the Unix
    /// epoch).
    pub fn deadline_in_context(context: &[u8]) -> Option<u64> {
        (context.first() == Some(&CONTEXT_TAG_DEADLINE) && context.len() == CONTEXT_LEN_DEADLINE)
            .then(|| word(context, 17))
    }
}

fn word(bytes: &[u8], at: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&bytes[at..at + 8]);
    u64::from_be_bytes(b)
}

/// What the ledger says of a committed proposal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Never applied: apply it.
    Fresh,
    /// Its sequence is at or below `last`, the highest already applied from the same
    /// member: a duplicate, or a proposal overtaken by a later one. Apply nothing.
    Stale {
        /// The highest sequence applied from that proposer.
        last: u64,
    },
}

/// The highest proposal sequence applied from each member.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProposalLedger {
    last: BTreeMap<u64, u64>,
}

/// A ledger's bytes could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed proposal ledger: {0}")]
pub struct LedgerDecodeError(String);

impl ProposalLedger {
    /// Whether `id` may be applied.
    pub fn check(&self, id: ProposalId) -> Verdict {
        let last = self.last(id.proposer);
        if id.seq > last {
            Verdict::Fresh
        } else {
            Verdict::Stale { last }
        }
    }

    /// Records that `id` was applied.
    pub fn record(&mut self, id: ProposalId) {
        let last = self.last.entry(id.proposer).or_insert(0);
        *last = (*last).max(id.seq);
    }

    /// The highest sequence applied from `proposer` (0: none).
    pub fn last(&self, proposer: u64) -> u64 {
        self.last.get(&proposer).copied().unwrap_or(0)
    }

    /// Every (proposer, highest sequence), by proposer.
    pub fn iter(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.last.iter().map(|(p, s)| (*p, *s))
    }

    /// Whether no proposal was ever recorded.
    pub fn is_empty(&self) -> bool {
        self.last.is_empty()
    }

    /// A compact encoding: a count, then (proposer, sequence) pairs, all big-endian.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(4 + 16 * self.last.len());
        out.extend_from_slice(&(self.last.len() as u32).to_be_bytes());
        for (proposer, seq) in &self.last {
            out.extend_from_slice(&proposer.to_be_bytes());
            out.extend_from_slice(&seq.to_be_bytes());
        }
        out
    }

    /// Reads what [`ProposalLedger::encode`] wrote; nothing else is accepted.
    pub fn decode(bytes: &[u8]) -> Result<ProposalLedger, LedgerDecodeError> {
        let Some((count, rest)) = bytes.split_first_chunk::<4>() else {
            return Err(LedgerDecodeError("shorter than its count".into()));
        };
        let count = u32::from_be_bytes(*count) as usize;
        if rest.len() != count.saturating_mul(16) {
            return Err(LedgerDecodeError(format!(
                "{count} pairs announced, {} bytes follow",
                rest.len()
            )));
        }
        let mut last = BTreeMap::new();
        for pair in rest.chunks_exact(16) {
            let mut p = [0u8; 8];
            let mut s = [0u8; 8];
            p.copy_from_slice(&pair[..8]);
            s.copy_from_slice(&pair[8..]);
            if last
                .insert(u64::from_be_bytes(p), u64::from_be_bytes(s))
                .is_some()
            {
                return Err(LedgerDecodeError("a proposer appears twice".into()));
            }
        }
        Ok(ProposalLedger { last })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_round_trips_and_foreign_contexts_hold_no_id() {
        let id = ProposalId {
            proposer: 0x8e9e_05c5_2164_694d,
            seq: 42,
        };
        let ctx = id.to_context(None);
        assert_eq!(ctx.len(), 17);
        assert_eq!(ProposalId::from_context(&ctx), Some(id));
        assert_eq!(ProposalId::deadline_in_context(&ctx), None);
        let with_deadline = id.to_context(Some(1_700_000_000_123));
        assert_eq!(with_deadline.len(), 25);
        assert_eq!(ProposalId::from_context(&with_deadline), Some(id));
        assert_eq!(
            ProposalId::deadline_in_context(&with_deadline),
            Some(1_700_000_000_123)
        );
        assert_eq!(ProposalId::from_context(&with_deadline[..17]), None);
        assert_eq!(ProposalId::from_context(&[]), None);
        assert_eq!(ProposalId::from_context(&42u64.to_be_bytes()), None);
        let mut other = ctx.clone();
        other[0] = 0;
        assert_eq!(ProposalId::from_context(&other), None);
    }

    #[test]
    fn only_sequences_above_the_last_applied_are_fresh() {
        let mut ledger = ProposalLedger::default();
        let a = |seq| ProposalId { proposer: 1, seq };
        let b = |seq| ProposalId { proposer: 2, seq };
        assert_eq!(ledger.check(a(5)), Verdict::Fresh);
        ledger.record(a(5));
        assert_eq!(ledger.check(a(5)), Verdict::Stale { last: 5 });
        assert_eq!(ledger.check(a(3)), Verdict::Stale { last: 5 });
        assert_eq!(ledger.check(a(6)), Verdict::Fresh);
        assert_eq!(ledger.check(b(1)), Verdict::Fresh);
        ledger.record(a(3));
        assert_eq!(ledger.last(1), 5, "recording never lowers the mark");
    }

    #[test]
    fn encoding_round_trips_and_rejects_malformed_bytes() {
        let mut ledger = ProposalLedger::default();
        assert_eq!(ProposalLedger::decode(&ledger.encode()), Ok(ledger.clone()));
        ledger.record(ProposalId {
            proposer: 9,
            seq: 1,
        });
        ledger.record(ProposalId {
            proposer: 3,
            seq: u64::MAX,
        });
        let bytes = ledger.encode();
        assert_eq!(ProposalLedger::decode(&bytes), Ok(ledger));
        for cut in 0..bytes.len() {
            assert!(
                ProposalLedger::decode(&bytes[..cut]).is_err(),
                "cut at {cut}"
            );
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(ProposalLedger::decode(&longer).is_err());
        let mut twice = 2u32.to_be_bytes().to_vec();
        twice.extend_from_slice(&[0u8; 32]);
        assert!(ProposalLedger::decode(&twice).is_err());
        assert!(ProposalLedger::decode(&u32::MAX.to_be_bytes()).is_err());
    }
}
