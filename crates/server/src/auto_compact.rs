//! Automatic compaction (`--auto-compaction-mode`, `--auto-compaction-retention`), with
//! etcd's semantics, run by the leader through raft off the request path.
//!
//! - **periodic** keeps a window of history: the current revision is sampled every tenth
//!   of the window (of an hour at most); once a whole window has passed, and then every
//!   window (an hour at most), history is compacted up to the revision sampled a window
//!   ago.
//! - **revision** keeps the last N revisions: every five minutes, history is compacted up
//!   to the current revision minus N.
//!
//! The planning is pure ([`Periodic`], [`Revisions`]: given the time and the current
//! revision, which revision to compact to), so it is tested without clocks; [`spawn`]
//! drives it on the member.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cairn_grpc_gateway::EtcdError;
use cairn_proto::cairnpb::internal_request::Request;
use cairn_proto::etcdserverpb::CompactionRequest;
use cairn_raft_node::Role;
use tokio::task::JoinHandle;

use crate::config::AutoCompaction;
use crate::member::Member;

/// How often the revision mode looks (etcd's).
const REVISION_INTERVAL: Duration = Duration::from_secs(5 * 60);
/// Shortens [`REVISION_INTERVAL`] (milliseconds), for tests: etcd has no flag for it.
const REVISION_INTERVAL_ENV: &str = "CAIRN_AUTO_COMPACTION_REVISION_INTERVAL_MS";

fn revision_interval() -> Duration {
    std::env::var(REVISION_INTERVAL_ENV)
        .ok()
        .and_then(|ms| ms.parse().ok())
        .filter(|&ms| ms > 0)
        .map_or(REVISION_INTERVAL, Duration::from_millis)
}
/// The periodic mode samples this many times per window.
const SAMPLES_PER_WINDOW: u32 = 10;
/// The longest step of the periodic mode (etcd's).
const MAX_PERIODIC_STEP: Duration = Duration::from_secs(60 * 60);

/// The periodic mode's plan: fed the current revision at every sample, it says when and
/// to which revision to compact.
#[derive(Debug)]
pub struct Periodic {
    window: Duration,
    /// Revisions sampled, oldest first; the first is a window old once full.
    samples: VecDeque<i64>,
    /// The number of samples that span a window.
    keep: usize,
    /// When the last compaction was asked for (or the plan began).
    last: Instant,
    /// The first compaction waits a whole window, later ones the compaction step.
    waited: Duration,
    last_revision: i64,
}

impl Periodic {
    /// A plan for a `window` of history, starting at `now`.
    pub fn new(window: Duration, now: Instant) -> Self {
        let keep = (window.as_nanos() / Self::sample_step(window).as_nanos().max(1)) as usize + 1;
        Periodic {
            window,
            samples: VecDeque::with_capacity(keep + 1),
            keep,
            last: now,
            waited: window,
            last_revision: 0,
        }
    }

    /// How often the current revision is sampled.
    pub fn sample_step(window: Duration) -> Duration {
        window.min(MAX_PERIODIC_STEP) / SAMPLES_PER_WINDOW
    }

    /// One sample: the current revision at `now`. Returns the revision to compact to, if
    /// it is time.
    pub fn sample(&mut self, now: Instant, current: i64) -> Option<i64> {
        self.samples.push_back(current);
        if self.samples.len() > self.keep {
            self.samples.pop_front();
        }
        if now.duration_since(self.last) < self.waited {
            return None;
        }
        let rev = *self.samples.front()?;
        self.last = now;
        self.waited = self.window.min(MAX_PERIODIC_STEP);
        if rev <= self.last_revision {
            return None;
        }
        self.last_revision = rev;
        Some(rev)
    }
}

/// The revision mode's plan.
#[derive(Debug)]
pub struct Revisions {
    retention: i64,
    last_revision: i64,
}

impl Revisions {
    /// A plan that keeps `retention` revisions.
    pub fn new(retention: i64) -> Self {
        Revisions {
            retention,
            last_revision: 0,
        }
    }

    /// One look at the current revision: the revision to compact to, if any.
    pub fn check(&mut self, current: i64) -> Option<i64> {
        let rev = current - self.retention;
        if rev <= 0 || rev <= self.last_revision {
            return None;
        }
        self.last_revision = rev;
        Some(rev)
    }
}

/// The plan of either mode.
enum Plan {
    Periodic(Periodic),
    Revisions(Revisions),
}

/// Runs `mode` on `member` until the member stops: only the leader proposes compactions.
pub fn spawn(member: Arc<Member>, mode: AutoCompaction) -> JoinHandle<()> {
    tokio::spawn(async move {
        let (step, mut plan) = match mode {
            AutoCompaction::Periodic(window) => (
                Periodic::sample_step(window),
                Plan::Periodic(Periodic::new(window, Instant::now())),
            ),
            AutoCompaction::Revision(n) => {
                (revision_interval(), Plan::Revisions(Revisions::new(n)))
            }
        };
        // The periodic mode's first sample is now, as etcd's: its first compaction, a
        // window from now, goes to the revision of now (a whole window old), not to the
        // one a step later.
        if let Plan::Periodic(p) = &mut plan {
            p.sample(Instant::now(), member.store.current_revision());
        }
        tracing::info!(?mode, ?step, "automatic compaction on");
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + step, step);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let status = member.raft().status();
            if status.stopped {
                return;
            }
            let current = member.store.current_revision();
            let due = match &mut plan {
                Plan::Periodic(p) => p.sample(Instant::now(), current),
                Plan::Revisions(r) => r.check(current),
            };
            let Some(rev) = due else { continue };
            if status.role != Role::Leader {
                continue;
            }
            compact(&member, rev).await;
        }
    })
}

async fn compact(member: &Member, revision: i64) {
    let started = Instant::now();
    let req = CompactionRequest {
        revision,
        physical: false,
    };
    match member.propose(Request::Compaction(req)).await {
        Ok(_) => {
            metrics::counter!(crate::metrics::AUTO_COMPACTIONS_TOTAL).increment(1);
            tracing::info!(
                revision,
                took = ?started.elapsed(),
                "automatic compaction done"
            );
        }
        // Someone compacted further already: nothing to do.
        Err(EtcdError::Compacted) => {}
        Err(e) => tracing::warn!(revision, error = %e, "automatic compaction failed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periodic_keeps_a_window_then_compacts_every_window() {
        let t0 = Instant::now();
        let window = Duration::from_secs(100);
        let step = Periodic::sample_step(window);
        assert_eq!(step, Duration::from_secs(10));
        let mut plan = Periodic::new(window, t0);
        assert_eq!(plan.sample(t0, 5), None);
        let mut compacted = Vec::new();
        // The revision grows by 10 every 10 s: revision 10 * (k + 1) at sample k.
        for k in 0..40u32 {
            let now = t0 + step * (k + 1);
            if let Some(rev) = plan.sample(now, 10 * (i64::from(k) + 1)) {
                compacted.push((k + 1, rev));
            }
        }
        // After 100 s, to the revision of 100 s before (the first sample's); then every
        // 100 s.
        assert_eq!(compacted, vec![(10, 5), (20, 100), (30, 200), (40, 300)]);
    }

    #[test]
    fn periodic_steps_an_hour_at_most_and_skips_an_idle_store() {
        let window = Duration::from_secs(10 * 3600);
        assert_eq!(Periodic::sample_step(window), Duration::from_secs(360));
        let t0 = Instant::now();
        let mut plan = Periodic::new(Duration::from_secs(10), t0);
        assert_eq!(plan.sample(t0, 1), None);
        let step = Duration::from_secs(1);
        let mut compacted = Vec::new();
        for k in 0..40u32 {
            // Nothing is written after the fifth sample.
            if let Some(rev) = plan.sample(t0 + step * (k + 1), i64::from(k.min(5)) + 1) {
                compacted.push(rev);
            }
        }
        assert_eq!(compacted, vec![1, 6]);
    }

    #[test]
    fn revision_mode_keeps_the_last_n() {
        let mut plan = Revisions::new(1000);
        assert_eq!(plan.check(500), None);
        assert_eq!(plan.check(1500), Some(500));
        assert_eq!(plan.check(1500), None);
        assert_eq!(plan.check(4000), Some(3000));
    }
}
