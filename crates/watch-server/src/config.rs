//! What a hub is told: its tuning, and how to fill response headers.

use std::time::Duration;

use cairn_proto::etcdserverpb::ResponseHeader;

/// Fills the header of every watch response (cluster and member ids, raft term) for a
/// store revision.
pub trait HeaderSource: Send + Sync + 'static {
    /// The header for a response at `revision`.
    fn header(&self, revision: i64) -> ResponseHeader;
}

impl<F> HeaderSource for F
where
    F: Fn(i64) -> ResponseHeader + Send + Sync + 'static,
{
    fn header(&self, revision: i64) -> ResponseHeader {
        self(revision)
    }
}

/// Tuning of the hub.
#[derive(Clone, Debug)]
pub struct WatchConfig {
    /// Responses a stream buffers before its watchers fall behind (etcd: 128).
    pub stream_buffer: usize,
    /// Size above which a response is split when its watcher asked for `fragment`, and
    /// the size catch-up batches aim under (etcd's `--max-request-bytes`).
    pub max_response_bytes: usize,
    /// Events read from history per catch-up step of one watcher.
    pub catch_up_events: usize,
    /// Watchers caught up per round of [`WatchHub::sync_unsynced`](crate::WatchHub::sync_unsynced).
    pub catch_up_watchers: usize,
    /// Interval of progress notifications for watchers that asked for them
    /// (`--experimental-watch-progress-notify-interval`, default 10 minutes).
    pub progress_notify_interval: Duration,
}

impl Default for WatchConfig {
    fn default() -> Self {
        WatchConfig {
            stream_buffer: 128,
            max_response_bytes: 1_572_864,
            catch_up_events: 1000,
            catch_up_watchers: 512,
            progress_notify_interval: Duration::from_secs(600),
        }
    }
}
