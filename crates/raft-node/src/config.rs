//! The node's settings.

use std::path::PathBuf;
use std::time::Duration;

use crate::storage::InitialMember;

/// The node's settings. Durations follow etcd's flags.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// This member's raft id (etcd's member id). Never 0.
    pub id: u64,
    /// Voters of a new cluster; used only when no log exists yet. Empty for a member that
    /// joins an existing cluster (it learns the membership from the leader).
    pub initial_members: Vec<InitialMember>,
    /// Where the write-ahead log lives.
    pub wal_dir: PathBuf,
    /// Bytes stored with a new log (e.g. member and cluster ids).
    pub wal_metadata: Vec<u8>,
    /// WAL options.
    pub wal_options: cairn_wal::WalOptions,
    /// One raft tick (etcd's `--heartbeat-interval`).
    pub tick_interval: Duration,
    /// Ticks without a leader before an election (`--election-timeout` / heartbeat).
    pub election_ticks: usize,
    /// Ticks between heartbeats.
    pub heartbeat_ticks: usize,
    /// Elect after exactly `election_ticks` instead of a random time in
    /// `[election_ticks, 2 × election_ticks)`: for deterministic tests, where each member
    /// gets its own value instead.
    pub fixed_election_timeout: bool,
    /// Applied entries between two snapshot marks (`--snapshot-count`).
    pub snapshot_count: u64,
    /// Entries kept in memory behind a snapshot mark for slow followers.
    pub snapshot_catchup_entries: u64,
    /// Largest append message to a follower.
    pub max_size_per_msg: u64,
    /// Append messages in flight to one follower.
    pub max_inflight_msgs: usize,
    /// Bytes of proposals the leader holds uncommitted before it refuses more (raft's
    /// `max_uncommitted_size`): a leader that cannot commit does not grow without bound.
    pub max_uncommitted_bytes: u64,
    /// Commands (proposals, peer messages, reads) queued for the raft thread before new
    /// ones are refused.
    pub max_queued_commands: usize,
    /// Bytes of proposals queued for the raft thread before new ones are refused with
    /// [`crate::RaftError::TooManyRequests`].
    pub max_queued_proposal_bytes: usize,
    /// Committed entries not yet applied before new proposals are refused (etcd's
    /// `maxGapBetweenApplyAndCommitIndex`).
    pub max_apply_lag: u64,
    /// How far members' clocks may disagree: a forwarded proposal is dropped once this
    /// much past its deadline (see [`crate::proposal`]).
    pub proposal_clock_tolerance: Duration,
    /// How long a proposal may take to reach the leader: its deadline is never later than
    /// this after it was made, whatever its client's. A proposal takes milliseconds to
    /// reach the leader; one delivered seconds later was stuck in a connection that has
    /// just healed, and by then its client may have retried elsewhere.
    pub max_forward_delay: Duration,
    /// Ticks a read-index request may stay unanswered before it is asked again (raft may
    /// drop it silently, e.g. while a new leader has not yet committed in its term).
    pub read_index_retry_ticks: usize,
    /// Fast-forward election ticks at start (etcd's `--initial-election-tick-advance`).
    pub initial_election_tick_advance: bool,
}

impl NodeConfig {
    /// etcd's defaults for member `id` with its log in `wal_dir`.
    pub fn new(id: u64, wal_dir: PathBuf) -> Self {
        NodeConfig {
            id,
            initial_members: vec![InitialMember {
                id,
                context: Vec::new(),
            }],
            wal_dir,
            wal_metadata: Vec::new(),
            wal_options: cairn_wal::WalOptions::default(),
            tick_interval: Duration::from_millis(100),
            election_ticks: 10,
            heartbeat_ticks: 1,
            fixed_election_timeout: false,
            snapshot_count: 100_000,
            snapshot_catchup_entries: 5_000,
            max_size_per_msg: 1024 * 1024,
            max_inflight_msgs: 4096 / 8,
            max_uncommitted_bytes: 256 * 1024 * 1024,
            max_queued_commands: 16 * 1024,
            max_queued_proposal_bytes: 64 * 1024 * 1024,
            max_apply_lag: 5_000,
            proposal_clock_tolerance: Duration::from_secs(1),
            max_forward_delay: Duration::from_secs(1),
            read_index_retry_ticks: 5,
            initial_election_tick_advance: true,
        }
    }

    /// raft-rs's configuration for this node, with the log starting after `applied`.
    pub(crate) fn raft_config(&self, applied: u64) -> raft::Config {
        let (min_election_tick, max_election_tick) = if self.fixed_election_timeout {
            (self.election_ticks, self.election_ticks + 1)
        } else {
            (0, 0) // raft-rs's default range
        };
        raft::Config {
            id: self.id,
            election_tick: self.election_ticks,
            heartbeat_tick: self.heartbeat_ticks,
            min_election_tick,
            max_election_tick,
            applied,
            max_size_per_msg: self.max_size_per_msg,
            max_inflight_msgs: self.max_inflight_msgs,
            max_uncommitted_size: self.max_uncommitted_bytes,
            check_quorum: true,
            pre_vote: true,
            read_only_option: raft::ReadOnlyOption::Safe,
            ..Default::default()
        }
    }
}
