//! Long-running etcdctl processes (`watch`, `lock`, `elect`, `lease keep-alive`) whose
//! output lines are read with deadlines, and waits on the server's own gauges.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{channel, Receiver, TryRecvError};
use std::time::{Duration, Instant};

use crate::etcdctl::etcdctl_binary;
use crate::net::http_get;
use crate::server::Server;

/// How long one expected line, or one awaited condition, may take.
pub const BACKGROUND_DEADLINE: Duration = Duration::from_secs(20);

/// A running etcdctl; killed (by PID, through its `Child`) when dropped.
pub struct CtlProcess {
    child: Child,
    lines: Receiver<String>,
}

impl CtlProcess {
    /// Starts `etcdctl <args>` against `server` (ETCDCTL_API=3, PATH kept for `watch -- CMD`).
    pub fn start(server: &Server, args: &[&str]) -> CtlProcess {
        let mut child = Command::new(etcdctl_binary())
            .env_clear()
            .env("ETCDCTL_API", "3")
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .arg(format!("--endpoints={}", server.endpoints().join(",")))
            .arg("--dial-timeout=5s")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("run etcdctl {args:?}: {e}"));
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        CtlProcess { child, lines }
    }

    /// The next output line; panics naming `what` if none comes in time.
    pub fn line(&self, what: &str) -> String {
        self.lines
            .recv_timeout(BACKGROUND_DEADLINE)
            .unwrap_or_else(|e| {
                panic!("{what}: no output line within {BACKGROUND_DEADLINE:?}: {e}")
            })
    }

    /// The next `n` output lines, waiting at most [`BACKGROUND_DEADLINE`] in all.
    pub fn lines(&self, n: usize) -> Vec<String> {
        let end = Instant::now() + BACKGROUND_DEADLINE;
        (0..n)
            .map(|i| {
                let left = end.saturating_duration_since(Instant::now());
                self.lines
                    .recv_timeout(left)
                    .unwrap_or_else(|e| panic!("line {} of etcdctl: {e}", i + 1))
            })
            .collect()
    }

    /// Asserts that nothing has been printed (yet).
    pub fn assert_silent(&self, what: &str) {
        match self.lines.try_recv() {
            Err(TryRecvError::Empty) => {}
            other => panic!("{what} printed while it should wait: {other:?}"),
        }
    }

    /// SIGTERM by PID, then waits for the exit: etcdctl closes its session first.
    pub fn terminate(&mut self) {
        // SAFETY: kill(2) on the PID of a child we spawned and have not reaped.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let end = Instant::now() + BACKGROUND_DEADLINE;
        while Instant::now() < end {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("etcdctl did not exit after SIGTERM");
    }
}

impl Drop for CtlProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The value of gauge `name` on the server's `/metrics`, if present.
pub fn metric_gauge(server: &Server, name: &str) -> Option<f64> {
    let body = http_get(&server.client_addr(), "/metrics").ok()?.body;
    body.lines().find_map(|line| {
        line.strip_prefix(name)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

/// Waits until the server reports at least `n` watchers, so a live watch sees the next write.
pub fn wait_for_watchers(server: &Server, n: f64) {
    let end = Instant::now() + BACKGROUND_DEADLINE;
    while metric_gauge(server, "etcd_debugging_mvcc_watcher_total").is_none_or(|g| g < n) {
        assert!(Instant::now() < end, "the server never had {n} watchers");
        std::thread::yield_now();
    }
}
