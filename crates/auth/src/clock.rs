//! Time, injected: simple tokens expire on a monotonic clock, JWT `exp` claims are
//! Unix seconds, and tests move both without sleeping.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;

/// A source of both monotonic and wall-clock time.
pub trait Clock: Send + Sync + 'static {
    /// Monotonic now, for simple-token expiry.
    fn now(&self) -> Instant;
    /// Time since the Unix epoch, for JWT `exp` claims.
    fn unix_now(&self) -> Duration;
}

/// The real clocks.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }

    fn unix_now(&self) -> Duration {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO)
    }
}

/// A clock that moves only when told to, for tests.
#[derive(Debug)]
pub struct ManualClock {
    state: Mutex<(Instant, Duration)>,
}

impl ManualClock {
    /// A clock at the real current time, frozen there.
    pub fn new() -> Arc<Self> {
        Arc::new(ManualClock {
            state: Mutex::new((Instant::now(), SystemClock.unix_now())),
        })
    }

    /// Moves both clocks forward by `by`.
    pub fn advance(&self, by: Duration) {
        let mut state = self.state.lock();
        state.0 += by;
        state.1 += by;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Instant {
        self.state.lock().0
    }

    fn unix_now(&self) -> Duration {
        self.state.lock().1
    }
}
