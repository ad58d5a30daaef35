//! Fresh server clusters for `bench compare`: members on free loopback ports in a
//! temporary directory, readiness by polling, resource figures from `/proc`, and
//! stopping by PID on every path out (the directory goes after the processes).

use std::fmt;
use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use cairn_proto::etcdserverpb::{kv_client::KvClient, RangeRequest};
use tempfile::TempDir;

use super::workload::endpoint_url;

/// Which server a cluster runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Cairn,
    Etcd,
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Cairn => "cairn",
            Kind::Etcd => "etcd",
        })
    }
}

/// How long a stopped server gets between SIGTERM and SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(5);

struct Member {
    name: String,
    client_port: u16,
    peer_port: u16,
    data_dir: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

/// A running cluster of one kind. Dropping it stops every member and removes its
/// data directories.
pub struct Cluster {
    pub kind: Kind,
    bin: PathBuf,
    /// Flags given to every member after the common ones.
    extra_args: Vec<String>,
    members: Vec<Member>,
    /// Declared last so it is removed after `Drop` has stopped the members.
    _dir: TempDir,
}

/// Free loopback ports, never etcd's well-known 2379/2380 and never the same twice.
fn free_ports(n: usize) -> anyhow::Result<Vec<u16>> {
    let mut held = Vec::with_capacity(n);
    while held.len() < n {
        let listener = TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
        let port = listener.local_addr()?.port();
        if port != 2379 && port != 2380 {
            held.push(listener);
        }
    }
    held.iter()
        .map(|l| Ok(l.local_addr()?.port()))
        .collect::<std::io::Result<Vec<u16>>>()
        .context("reading a bound port")
}

impl Cluster {
    /// Starts `size` members of `kind` from `bin` with the same settings whatever
    /// the kind, and `extra_args` given to every member (and again on every
    /// restart); returns at once (see [`Cluster::wait_ready`]).
    pub fn start_with(
        kind: Kind,
        bin: &Path,
        size: usize,
        extra_args: Vec<String>,
    ) -> anyhow::Result<Cluster> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("cairn-bench-{kind}-"))
            .tempdir()
            .context("creating a temporary directory")?;
        let ports = free_ports(2 * size)?;
        let members = (0..size)
            .map(|i| Member {
                name: format!("m{i}"),
                client_port: ports[2 * i],
                peer_port: ports[2 * i + 1],
                data_dir: dir.path().join(format!("m{i}.data")),
                log: dir.path().join(format!("m{i}.log")),
                child: None,
            })
            .collect();
        let mut cluster = Cluster {
            kind,
            bin: bin.to_path_buf(),
            extra_args,
            members,
            _dir: dir,
        };
        cluster.spawn_all()?;
        Ok(cluster)
    }

    fn spawn_all(&mut self) -> anyhow::Result<()> {
        let initial_cluster = self
            .members
            .iter()
            .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer_port))
            .collect::<Vec<_>>()
            .join(",");
        for i in 0..self.members.len() {
            let m = &self.members[i];
            let client_url = format!("http://127.0.0.1:{}", m.client_port);
            let peer_url = format!("http://127.0.0.1:{}", m.peer_port);
            let log = fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&m.log)
                .with_context(|| format!("opening {}", m.log.display()))?;
            let mut cmd = Command::new(&self.bin);
            cmd.args(["--name", &m.name])
                .arg("--data-dir")
                .arg(&m.data_dir)
                .args(["--listen-client-urls", &client_url])
                .args(["--advertise-client-urls", &client_url])
                .args(["--listen-peer-urls", &peer_url])
                .args(["--initial-advertise-peer-urls", &peer_url])
                .args(["--initial-cluster", &initial_cluster])
                .args(["--initial-cluster-token", &format!("bench-{}", self.kind)])
                .args(["--initial-cluster-state", "new"])
                .args(["--heartbeat-interval", "100"])
                .args(["--election-timeout", "1000"])
                .args(&self.extra_args)
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log);
            // Our own environment must not configure the servers behind our back.
            for (key, _) in std::env::vars_os() {
                if key.to_string_lossy().starts_with("ETCD_") {
                    cmd.env_remove(key);
                }
            }
            let child = cmd
                .spawn()
                .with_context(|| format!("starting {}", self.bin.display()))?;
            self.members[i].child = Some(child);
        }
        Ok(())
    }

    /// Client endpoints, one per member.
    pub fn endpoints(&self) -> Vec<String> {
        self.members
            .iter()
            .map(|m| format!("127.0.0.1:{}", m.client_port))
            .collect()
    }

    /// The first member's data directory.
    pub fn data_dir(&self) -> &Path {
        &self.members[0].data_dir
    }

    pub fn size(&self) -> usize {
        self.members.len()
    }

    fn pids(&self) -> Vec<u32> {
        self.members
            .iter()
            .filter_map(|m| m.child.as_ref().map(Child::id))
            .collect()
    }

    /// The first member that is no longer running, with the end of its log.
    pub fn exited_member(&mut self) -> Option<String> {
        for m in &mut self.members {
            let Some(child) = m.child.as_mut() else {
                return Some(format!("{} is not running", m.name));
            };
            if let Ok(Some(status)) = child.try_wait() {
                let log = fs::read_to_string(&m.log).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(5).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                return Some(format!(
                    "{} exited ({status}); log ends:\n  {}",
                    m.name,
                    tail.join("\n  ")
                ));
            }
        }
        None
    }

    /// Polls every member with a linearizable Range until all answer (so the
    /// cluster has a leader); fails at `deadline` or as soon as a member exits.
    /// Returns how long it took.
    pub async fn wait_ready(&mut self, deadline: Duration) -> anyhow::Result<Duration> {
        let started = Instant::now();
        for endpoint in self.endpoints() {
            loop {
                if let Some(exited) = self.exited_member() {
                    bail!("{exited}");
                }
                let Err(err) = probe(&endpoint).await else {
                    break;
                };
                if started.elapsed() > deadline {
                    bail!("{endpoint} not serving after {deadline:?}: {err:#}");
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        Ok(started.elapsed())
    }

    /// Kills every member with SIGKILL, as a crash would, and reaps it.
    pub fn kill(&mut self) {
        for m in &mut self.members {
            if let Some(mut child) = m.child.take() {
                signal(&child, libc::SIGKILL);
                let _ = child.wait();
            }
        }
    }

    /// Starts every member again on its data directory.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.kill();
        self.spawn_all()
    }

    /// SIGTERM to every member, SIGKILL to those still running after the grace.
    pub fn stop(&mut self) {
        let mut children: Vec<Child> = self
            .members
            .iter_mut()
            .filter_map(|m| m.child.take())
            .collect();
        for child in &children {
            signal(child, libc::SIGTERM);
        }
        let deadline = Instant::now() + STOP_GRACE;
        while Instant::now() < deadline
            && children
                .iter_mut()
                .any(|c| matches!(c.try_wait(), Ok(None)))
        {
            std::thread::sleep(Duration::from_millis(20));
        }
        for mut child in children {
            if matches!(child.try_wait(), Ok(None)) {
                signal(&child, libc::SIGKILL);
            }
            let _ = child.wait();
        }
    }

    /// User plus system CPU time of all members so far.
    pub fn cpu_time(&self) -> Duration {
        self.pids().into_iter().filter_map(cpu_time).sum()
    }

    /// Starts peak-RSS tracking afresh (Linux `clear_refs` 5).
    pub fn reset_peak_rss(&self) {
        for pid in self.pids() {
            let _ = fs::write(format!("/proc/{pid}/clear_refs"), "5");
        }
    }

    /// The largest member's peak RSS since [`Cluster::reset_peak_rss`], in bytes.
    pub fn peak_rss(&self) -> u64 {
        self.pids()
            .into_iter()
            .filter_map(|pid| status_kib(pid, "VmHWM:"))
            .max()
            .unwrap_or(0)
            * 1024
    }

    /// The largest member's current RSS, in bytes.
    pub fn rss(&self) -> u64 {
        self.pids()
            .into_iter()
            .filter_map(|pid| status_kib(pid, "VmRSS:"))
            .max()
            .unwrap_or(0)
            * 1024
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop();
    }
}

fn signal(child: &Child, signal: libc::c_int) {
    if let Ok(pid) = libc::pid_t::try_from(child.id()) {
        // SAFETY: kill(2) on the PID of a child we have not reaped yet, so it
        // cannot have been reused by another process.
        unsafe {
            libc::kill(pid, signal);
        }
    }
}

/// One linearizable Range, answered within a second.
async fn probe(endpoint: &str) -> anyhow::Result<()> {
    let attempt = async {
        let channel = tonic::transport::Endpoint::from_shared(endpoint_url(endpoint))?
            .connect_timeout(Duration::from_secs(1))
            .connect()
            .await?;
        KvClient::new(channel)
            .range(RangeRequest {
                key: "bench-ready".into(),
                ..Default::default()
            })
            .await?;
        anyhow::Ok(())
    };
    tokio::time::timeout(Duration::from_secs(1), attempt)
        .await
        .context("no answer within 1 s")?
}

fn cpu_time(pid: u32) -> Option<Duration> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which may contain spaces: state is field 3,
    // utime 14 and stime 15.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let ticks = u64::try_from(ticks).ok().filter(|t| *t > 0)?;
    Some(Duration::from_micros((utime + stime) * 1_000_000 / ticks))
}

fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line[field.len()..].split_whitespace().next()?.parse().ok()
}
