//! The fault scenario behind `t81_fault` and `cargo xtask fault`: a cluster behind
//! proxies, concurrent clients doing put / compare-and-swap / linearizable get on a few
//! keys with short timeouts, one watcher hopping members, and a nemesis that injects one
//! fault at a time (kill -9, SIGSTOP, blackholes both ways or one way, the older
//! kill-style inbound isolation), chosen from a [`Mix`] with a seeded generator.
//!
//! After the run every fault is undone and the [`Report`] says what was wrong, if
//! anything:
//! - the history of every client operation is linearizable (each key a register);
//! - no acknowledged write is lost: it is in the history at the revision it was given;
//! - no write is applied twice: every written value is unique, so no value may appear
//!   at two revisions, neither in the watcher's stream nor in any member's history;
//! - the watcher saw every revision from the first write to the last exactly once, in
//!   order;
//! - every member's own history (a watch from revision 1 on its own endpoint) is the
//!   same: same revision, same key, value and version;
//! - no proposal reached any member's raft log twice: every entry's 8-byte proposal id
//!   (its context) appears at one index only. This sees a request that got into the log
//!   twice even when its second application changed nothing visible (a compare-and-swap
//!   whose compare failed the second time).
//!
//! ```no_run
//! use cairn_tests::fault::{Mix, Scenario};
//!
//! let mut scenario = Scenario::issue_10(7);
//! scenario.mix = "blackhole:follower,kill:leader".parse().expect("a mix");
//! let report = scenario.run();
//! assert!(report.problems().is_empty(), "{:#?}", report.problems());
//! ```

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use etcd_client::{Compare, CompareOp, ConnectOptions, EventType, Txn, TxnOp, WatchOptions};

use crate::cluster::{watch_all_from, Cluster, CutDirection};
use crate::linearizability::{CheckResult, History, Op, Outcome};
use crate::proxy::{utc_clock, CutMode};

/// How long the held bytes of the last cut may take to arrive: TCP's largest
/// retransmission timeout (the proxy's `--tcp-backoff` schedule caps there) and a margin.
const HELD_BYTES_DEADLINE: Duration = Duration::from_secs(130);

/// One kind of fault the nemesis injects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Fault {
    /// `kill -9`, down for the fault's length, then restarted on the same data.
    Kill,
    /// SIGSTOP for the fault's length, then SIGCONT.
    Pause,
    /// Blackhole of every link into and out of the member.
    Blackhole,
    /// Blackhole of what the others send to it.
    BlackholeIn,
    /// Blackhole of what it sends to the others.
    BlackholeOut,
    /// Blackhole of the connections open when it began, both ways; new ones pass.
    BlackholeExisting,
    /// The older inbound cut: connections to the member killed, new ones refused.
    Isolate,
}

impl Fault {
    /// Every kind, in the order of the report's columns.
    pub const ALL: [Fault; 7] = [
        Fault::Kill,
        Fault::Pause,
        Fault::Blackhole,
        Fault::BlackholeIn,
        Fault::BlackholeOut,
        Fault::BlackholeExisting,
        Fault::Isolate,
    ];

    /// The name used in mixes and reports.
    pub fn name(self) -> &'static str {
        match self {
            Fault::Kill => "kill",
            Fault::Pause => "pause",
            Fault::Blackhole => "blackhole",
            Fault::BlackholeIn => "blackhole-in",
            Fault::BlackholeOut => "blackhole-out",
            Fault::BlackholeExisting => "blackhole-existing",
            Fault::Isolate => "isolate",
        }
    }
}

/// Which member a fault hits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Target {
    /// The current leader.
    Leader,
    /// A follower, chosen at random.
    Follower,
    /// The leader or a follower, even odds.
    Either,
    /// The leader three times in four, else a follower.
    MostlyLeader,
    /// Any member, uniformly.
    Any,
}

impl Target {
    fn name(self) -> &'static str {
        match self {
            Target::Leader => "leader",
            Target::Follower => "follower",
            Target::Either => "either",
            Target::MostlyLeader => "mostly-leader",
            Target::Any => "any",
        }
    }
}

/// The faults a nemesis draws from: `kind[:target][*weight]`, comma-separated, e.g.
/// `blackhole:follower,kill:leader*2,pause`. Targets: `leader`, `follower`, `either`
/// (even odds, the default), `mostly-leader` (3 in 4), `any` (uniform over members).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mix {
    entries: Vec<(Fault, Target)>,
    /// Take the entries in turn instead of at random (so a short run sees each kind).
    pub in_turn: bool,
}

impl Mix {
    /// The faults of issue #10: blackholes of a follower.
    pub fn issue_10() -> Mix {
        Mix {
            entries: vec![(Fault::Blackhole, Target::Follower)],
            in_turn: false,
        }
    }

    /// Every kind of fault in turn; followers hit as often as the leader, except by
    /// kills, which favour the leader.
    pub fn every_kind() -> Mix {
        Mix {
            entries: vec![
                (Fault::Blackhole, Target::Either),
                (Fault::Kill, Target::MostlyLeader),
                (Fault::BlackholeIn, Target::Either),
                (Fault::Pause, Target::Either),
                (Fault::BlackholeOut, Target::Either),
                (Fault::Blackhole, Target::Either),
                (Fault::Isolate, Target::Either),
            ],
            in_turn: true,
        }
    }

    fn pick(&self, round: usize, rng: &mut SplitMix64) -> (Fault, Target) {
        if self.in_turn {
            self.entries[round % self.entries.len()]
        } else {
            self.entries[rng.below(self.entries.len())]
        }
    }
}

impl FromStr for Mix {
    type Err = String;

    fn from_str(s: &str) -> Result<Mix, String> {
        match s {
            "issue" | "issue-10" => return Ok(Mix::issue_10()),
            "all" | "every-kind" => return Ok(Mix::every_kind()),
            _ => {}
        }
        let mut entries = Vec::new();
        for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let (item, weight) = match item.split_once('*') {
                Some((item, w)) => (
                    item,
                    w.parse::<usize>()
                        .map_err(|e| format!("weight of {item:?}: {e}"))?,
                ),
                None => (item, 1),
            };
            let (kind, target) = item.split_once(':').unwrap_or((item, "either"));
            let kind = Fault::ALL
                .into_iter()
                .find(|f| f.name() == kind)
                .ok_or_else(|| format!("unknown fault {kind:?}"))?;
            let target = [
                Target::Leader,
                Target::Follower,
                Target::Either,
                Target::MostlyLeader,
                Target::Any,
            ]
            .into_iter()
            .find(|t| t.name() == target)
            .ok_or_else(|| format!("unknown target {target:?}"))?;
            entries.extend(std::iter::repeat_n((kind, target), weight));
        }
        if entries.is_empty() {
            return Err(format!("empty fault mix {s:?}"));
        }
        Ok(Mix {
            entries,
            in_turn: false,
        })
    }
}

impl fmt::Display for Mix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut counted: Vec<((Fault, Target), usize)> = Vec::new();
        for e in &self.entries {
            match counted.last_mut() {
                Some((last, n)) if last == e => *n += 1,
                _ => counted.push((*e, 1)),
            }
        }
        let items: Vec<String> = counted
            .iter()
            .map(|((kind, target), n)| {
                let w = if *n > 1 {
                    format!("*{n}")
                } else {
                    String::new()
                };
                format!("{}:{}{w}", kind.name(), target.name())
            })
            .collect();
        write!(f, "{}", items.join(","))
    }
}

/// When a run's member directories, logs and proxy events are kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Keep {
    /// Never.
    Never,
    /// In this directory, when the run found a problem.
    OnProblem(PathBuf),
    /// In this directory, always.
    Always(PathBuf),
}

/// What one fault run does. [`Scenario::issue_10`] is the shape of issue #10.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// Members of the cluster.
    pub members: usize,
    /// Concurrent clients.
    pub clients: usize,
    /// Clients stay on their member (client i on member i mod n) after a failure
    /// instead of moving to the next one, so a cut member keeps getting requests.
    pub pinned: bool,
    /// A put without an answer in time is sent again once, same key and value, to the
    /// next member, as a retrying client would: the values are then no longer unique
    /// per request, and a late original shows up as a double apply.
    pub retry_puts: bool,
    /// Keys they share.
    pub keys: usize,
    /// Per-operation deadline: no answer by then is an unknown outcome.
    pub op_timeout: Duration,
    /// How long the nemesis injects faults while the clients run.
    pub duration: Duration,
    /// The members' `--snapshot-count`.
    pub snapshot_count: u64,
    /// The members' `--experimental-snapshot-catchup-entries` (their default if `None`).
    pub catchup_entries: Option<u64>,
    /// Seed of the nemesis (fault kinds, targets, lengths, gaps) and of the clients'
    /// choices of keys and operations.
    pub seed: u64,
    /// The faults to draw from.
    pub mix: Mix,
    /// How long each fault lasts, drawn uniformly from this range.
    pub fault_length: (Duration, Duration),
    /// Blackholed bytes arrive at the sender's next TCP retransmission after the heal
    /// (see [`Proxy::set_tcp_backoff`](crate::Proxy::set_tcp_backoff)).
    pub tcp_backoff: bool,
    /// Connections opened during a cut are held until it heals instead of closed.
    pub hold_new_connections: bool,
    /// The pause after a fault is undone and the cluster agrees on a leader again.
    pub gap: (Duration, Duration),
    /// The linearizability checker's budget.
    pub check_budget: Duration,
    /// Print the nemesis's actions to stderr as they happen.
    pub verbose: bool,
    /// Whether and where to keep the evidence.
    pub keep: Keep,
}

impl Scenario {
    /// Issue #10's shape: 3 members, 10 clients with 2 s timeouts doing put / CAS /
    /// linearizable get on 5 keys, one watcher, `--snapshot-count 2000`, 60 s of
    /// blackholes of 2-4.5 s on a follower.
    pub fn issue_10(seed: u64) -> Scenario {
        Scenario {
            members: 3,
            clients: 10,
            pinned: false,
            retry_puts: false,
            keys: 5,
            op_timeout: Duration::from_secs(2),
            duration: Duration::from_secs(60),
            snapshot_count: 2000,
            catchup_entries: None,
            seed,
            mix: Mix::issue_10(),
            fault_length: (Duration::from_millis(2000), Duration::from_millis(4500)),
            gap: (Duration::from_millis(200), Duration::from_millis(1000)),
            tcp_backoff: false,
            hold_new_connections: false,
            check_budget: Duration::from_secs(60),
            verbose: false,
            keep: Keep::Never,
        }
    }

    /// Runs the scenario once and reports; panics only if the harness itself fails
    /// (a member that does not start, no leader after every fault is undone).
    pub fn run(&self) -> Report {
        run(self)
    }
}

/// A write the watcher or a member saw at more than one revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DoubleApply {
    /// The key.
    pub key: String,
    /// The value written (unique to one client request).
    pub value: u64,
    /// The revisions it appears at.
    pub revisions: Vec<i64>,
    /// The request that wrote it: client, member asked, when, and what it got.
    pub request: String,
}

/// The linearizability checker's verdict, shortened for a table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Linearizable.
    Ok,
    /// Not linearizable, with the checker's explanation.
    Violation(String),
    /// The checker ran out of budget.
    Inconclusive,
}

/// What one run saw.
#[derive(Debug, Clone)]
pub struct Report {
    /// The run's seed.
    pub seed: u64,
    /// Its fault mix.
    pub mix: String,
    /// Client operations, final reads included.
    pub ops: usize,
    /// Operations answered with success.
    pub ok: usize,
    /// Compare-and-swaps answered "compare failed" (definite: nothing written).
    pub failed: usize,
    /// Operations without an answer in time (may or may not have happened).
    pub unknown: usize,
    /// Faults injected, by kind.
    pub faults: BTreeMap<Fault, usize>,
    /// The checker's verdict.
    pub verdict: Verdict,
    /// Acknowledged writes missing from the history at their revision.
    pub lost_acks: Vec<String>,
    /// Values seen at more than one revision.
    pub double_applies: Vec<DoubleApply>,
    /// Revisions the watcher skipped, repeated or saw out of order.
    pub watch_gaps: Vec<String>,
    /// Differences between the members' histories.
    pub divergences: Vec<String>,
    /// Proposal ids found at more than one index of a member's raft log.
    pub duplicate_entries: Vec<String>,
    /// The last revision.
    pub final_revision: i64,
    /// What the nemesis did, with wall-clock times.
    pub nemesis: Vec<String>,
    /// Where the evidence was kept.
    pub kept: Option<PathBuf>,
}

impl Report {
    /// Everything wrong, one line each; empty for a clean run.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        match &self.verdict {
            Verdict::Ok => {}
            Verdict::Violation(why) => out.push(format!("not linearizable:\n{why}")),
            Verdict::Inconclusive => out.push("linearizability check inconclusive".into()),
        }
        out.extend(self.lost_acks.iter().map(|l| format!("lost ack: {l}")));
        out.extend(self.double_applies.iter().map(|d| {
            format!(
                "double apply: {}={} at revisions {:?}, written by {}",
                d.key, d.value, d.revisions, d.request
            )
        }));
        out.extend(self.watch_gaps.iter().map(|g| format!("watcher: {g}")));
        out.extend(self.divergences.iter().map(|d| format!("divergence: {d}")));
        out.extend(
            self.duplicate_entries
                .iter()
                .map(|d| format!("proposal in the log twice: {d}")),
        );
        out
    }

    /// The heading of [`Report::row`].
    pub fn header() -> String {
        format!(
            "{:>3} {:>20} {:>6} {:>6} {:>5} {:>6} {:<22} {:<12} {:>4} {:>6} {:>4} {:>4} {:>4}",
            "run",
            "seed",
            "ops",
            "ok",
            "fail",
            "unk",
            "faults",
            "lin",
            "lost",
            "double",
            "gaps",
            "div",
            "log2"
        )
    }

    /// One line of the runner's table.
    pub fn row(&self, run: usize) -> String {
        let faults: Vec<String> = self
            .faults
            .iter()
            .map(|(k, n)| format!("{}{n}", short(*k)))
            .collect();
        let lin = match self.verdict {
            Verdict::Ok => "ok",
            Verdict::Violation(_) => "VIOLATION",
            Verdict::Inconclusive => "inconclusive",
        };
        format!(
            "{:>3} {:>20} {:>6} {:>6} {:>5} {:>6} {:<22} {:<12} {:>4} {:>6} {:>4} {:>4} {:>4}",
            run,
            self.seed,
            self.ops,
            self.ok,
            self.failed,
            self.unknown,
            faults.join(" "),
            lin,
            self.lost_acks.len(),
            self.double_applies.len(),
            self.watch_gaps.len(),
            self.divergences.len(),
            self.duplicate_entries.len()
        )
    }
}

/// Column abbreviations: k kill, p pause, b blackhole, bi / bo one-way, be existing
/// connections only, i isolate.
fn short(kind: Fault) -> &'static str {
    match kind {
        Fault::Kill => "k",
        Fault::Pause => "p",
        Fault::Blackhole => "b",
        Fault::BlackholeIn => "bi",
        Fault::BlackholeOut => "bo",
        Fault::BlackholeExisting => "be",
        Fault::Isolate => "i",
    }
}

/// A small seeded generator (SplitMix64): the nemesis's choices repeat with the seed.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator from `seed`.
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// Uniform between the two durations.
    pub fn between(&mut self, (lo, hi): (Duration, Duration)) -> Duration {
        let span = hi.saturating_sub(lo).as_micros() as u64;
        lo + Duration::from_micros(if span == 0 {
            0
        } else {
            self.next_u64() % (span + 1)
        })
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64 <= p
    }
}

fn key(i: usize) -> String {
    format!("fault/k{i}")
}

fn parse(value: &[u8]) -> Option<u64> {
    std::str::from_utf8(value).ok()?.parse().ok()
}

/// A write as the client made it, for describing a double apply.
#[derive(Debug, Clone)]
struct WriteRecord {
    client: usize,
    member: usize,
    called: SystemTime,
    took: Option<Duration>,
    what: &'static str,
    /// Sent again after the timeout (`retry_puts`): to this member, answered or not.
    retried: Option<(usize, bool)>,
}

#[derive(Default)]
struct Counts {
    ok: usize,
    failed: usize,
    unknown: usize,
}

/// What the clients share.
struct Shared {
    endpoints: Vec<String>,
    history: History,
    stop: AtomicBool,
    /// Acknowledged writes: key, value, revision.
    acks: Mutex<Vec<(String, u64, i64)>>,
    counts: Mutex<Counts>,
    writes: Mutex<HashMap<u64, WriteRecord>>,
    keys: usize,
    op_timeout: Duration,
    pinned: bool,
    retry_puts: bool,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

async fn connect(endpoint: &str, timeout: Duration) -> Option<etcd_client::Client> {
    let options = ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(1))
        .with_timeout(timeout);
    tokio::time::timeout(
        timeout,
        etcd_client::Client::connect([endpoint], Some(options)),
    )
    .await
    .ok()?
    .ok()
}

/// One client: random linearizable reads, puts and CASes against one member at a time,
/// moving to the next member after a failed or timed-out request.
async fn client_loop(id: usize, shared: Arc<Shared>, seed: u64) {
    let mut rng = SplitMix64::new(seed);
    let n = shared.endpoints.len();
    let mut member = id % n;
    let mut client: Option<etcd_client::Client> = None;
    let mut seq: u64 = 0;
    let mut last_seen: HashMap<usize, Option<u64>> = HashMap::new();
    let timeout = shared.op_timeout;
    while !shared.stop.load(Ordering::SeqCst) {
        if client.is_none() {
            client = connect(&shared.endpoints[member], timeout).await;
            if client.is_none() {
                if !shared.pinned {
                    member = (member + 1) % n;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        }
        let c = client.as_mut().expect("connected");
        let k = rng.below(shared.keys);
        let name = key(k);
        let mut failed = false;
        match rng.below(3) {
            0 => {
                let pending = shared.history.begin(id, &name, Op::Read);
                match tokio::time::timeout(timeout, c.get(name.as_str(), None)).await {
                    Ok(Ok(resp)) => {
                        let value = resp.kvs().first().and_then(|kv| parse(kv.value()));
                        shared.history.end(pending, Outcome::Read(value));
                        last_seen.insert(k, value);
                        lock(&shared.counts).ok += 1;
                    }
                    _ => {
                        shared.history.end(pending, Outcome::Unknown);
                        lock(&shared.counts).unknown += 1;
                        failed = true;
                    }
                }
            }
            kind => {
                seq += 1;
                let value = (id as u64 + 1) * 1_000_000_000 + seq;
                let expect = last_seen.get(&k).copied().flatten();
                let (op, what) = if kind == 1 {
                    (Op::Write(value), "put")
                } else {
                    (Op::Cas { expect, new: value }, "cas")
                };
                let called = SystemTime::now();
                let started = Instant::now();
                let pending = shared.history.begin(id, &name, op);
                let answer = if kind == 1 {
                    tokio::time::timeout(timeout, c.put(name.as_str(), value.to_string(), None))
                        .await
                        .map(|r| r.map(|resp| (true, resp.header().map(|h| h.revision()))))
                } else {
                    let compare = match expect {
                        Some(v) => Compare::value(name.as_str(), CompareOp::Equal, v.to_string()),
                        None => Compare::create_revision(name.as_str(), CompareOp::Equal, 0),
                    };
                    let txn = Txn::new().when([compare]).and_then([TxnOp::put(
                        name.as_str(),
                        value.to_string(),
                        None,
                    )]);
                    tokio::time::timeout(timeout, c.txn(txn)).await.map(|r| {
                        r.map(|resp| (resp.succeeded(), resp.header().map(|h| h.revision())))
                    })
                };
                let took = match answer {
                    Ok(Ok((written, rev))) => {
                        let outcome = if kind == 1 {
                            Outcome::Written
                        } else {
                            Outcome::Cas(written)
                        };
                        shared.history.end(pending, outcome);
                        if written {
                            let rev = rev.unwrap_or(0);
                            lock(&shared.acks).push((name.clone(), value, rev));
                            last_seen.insert(k, Some(value));
                            lock(&shared.counts).ok += 1;
                        } else {
                            lock(&shared.counts).failed += 1;
                        }
                        Some(started.elapsed())
                    }
                    _ => {
                        shared.history.end(pending, Outcome::Unknown);
                        lock(&shared.counts).unknown += 1;
                        failed = true;
                        None
                    }
                };
                let retried = if took.is_none() && kind == 1 && shared.retry_puts {
                    let to = (member + 1) % n;
                    let pending = shared.history.begin(id, &name, Op::Write(value));
                    let again = async {
                        let mut c = connect(&shared.endpoints[to], timeout).await?;
                        c.put(name.as_str(), value.to_string(), None).await.ok()
                    };
                    let answered = match tokio::time::timeout(timeout, again).await {
                        Ok(Some(resp)) => {
                            shared.history.end(pending, Outcome::Written);
                            let rev = resp.header().map_or(0, |h| h.revision());
                            lock(&shared.acks).push((name.clone(), value, rev));
                            last_seen.insert(k, Some(value));
                            lock(&shared.counts).ok += 1;
                            true
                        }
                        _ => {
                            shared.history.end(pending, Outcome::Unknown);
                            lock(&shared.counts).unknown += 1;
                            false
                        }
                    };
                    Some((to, answered))
                } else {
                    None
                };
                lock(&shared.writes).insert(
                    value,
                    WriteRecord {
                        client: id,
                        member,
                        called,
                        took,
                        what,
                        retried,
                    },
                );
            }
        }
        if failed {
            client = None;
            if shared.pinned {
                tokio::time::sleep(Duration::from_millis(50)).await;
            } else {
                member = (member + 1) % n;
            }
        }
    }
}

/// One event of a history: revision, key, value (`None`: deleted), version.
type Event = (i64, String, Option<u64>, i64);

/// What the watcher saw, and how often it moved to another member.
#[derive(Default)]
struct Watched {
    events: Vec<Event>,
    /// When each event arrived, and from which member.
    arrived: Vec<(SystemTime, usize)>,
    reconnects: usize,
}

fn event(ev: &etcd_client::Event) -> Option<Event> {
    let kv = ev.kv()?;
    let value = match ev.event_type() {
        EventType::Put => Some(parse(kv.value()).unwrap_or(0)),
        EventType::Delete => None,
    };
    Some((
        kv.mod_revision(),
        String::from_utf8_lossy(kv.key()).into_owned(),
        value,
        kv.version(),
    ))
}

/// Watches every key from revision 1 on member 0, moving to the next member (resuming
/// after the last revision seen) when the stream fails or stays silent.
async fn watch_loop(
    endpoints: Vec<String>,
    watched: Arc<Mutex<Watched>>,
    done: Arc<AtomicBool>,
    op_timeout: Duration,
) {
    let mut member = 0;
    let mut next_rev: i64 = 1;
    while !done.load(Ordering::SeqCst) {
        let attempt = async { watch_all_from(&endpoints[member], next_rev).await.ok() };
        let stream = tokio::time::timeout(op_timeout.max(Duration::from_secs(2)), attempt)
            .await
            .ok()
            .flatten();
        if let Some(mut stream) = stream {
            loop {
                if done.load(Ordering::SeqCst) {
                    return;
                }
                // Silence while a member is paused or cut off: try another one.
                match tokio::time::timeout(Duration::from_secs(4), stream.message()).await {
                    Ok(Ok(Some(resp))) => {
                        if resp.canceled() {
                            break;
                        }
                        let mut w = lock(&watched);
                        let now = SystemTime::now();
                        for ev in resp.events() {
                            if let Some(e) = event(ev) {
                                next_rev = next_rev.max(e.0 + 1);
                                w.events.push(e);
                                w.arrived.push((now, member));
                            }
                        }
                    }
                    _ => break,
                }
            }
        }
        lock(&watched).reconnects += 1;
        member = (member + 1) % endpoints.len();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One member's own history up to `final_rev`: a watch from revision 1 on its endpoint
/// (served from its local store).
async fn member_history(endpoint: &str, final_rev: i64) -> Result<Vec<Event>, String> {
    let options = ConnectOptions::new().with_connect_timeout(Duration::from_secs(2));
    let mut client = etcd_client::Client::connect([endpoint], Some(options))
        .await
        .map_err(|e| e.to_string())?;
    let mut stream = client
        .watch(
            "",
            Some(WatchOptions::new().with_all_keys().with_start_revision(1)),
        )
        .await
        .map_err(|e| e.to_string())?;
    let mut events = Vec::new();
    while events.last().map_or(0, |e: &Event| e.0) < final_rev {
        match tokio::time::timeout(Duration::from_secs(10), stream.message()).await {
            Ok(Ok(Some(resp))) if resp.canceled() => {
                return Err(format!("watch canceled: {}", resp.cancel_reason()))
            }
            Ok(Ok(Some(resp))) => events.extend(resp.events().iter().filter_map(event)),
            Ok(Ok(None)) => return Err("watch ended".into()),
            Ok(Err(e)) => return Err(e.to_string()),
            Err(_) => {
                return Err(format!(
                    "no event for 10 s at revision {}",
                    events.last().map_or(0, |e| e.0)
                ))
            }
        }
    }
    Ok(events)
}

/// Waits until the running members agree on a leader; its index, or `None` by the
/// deadline.
async fn agreed_leader(cluster: &Cluster, deadline: Duration) -> Option<usize> {
    let until = Instant::now() + deadline;
    loop {
        let mut views = Vec::new();
        for i in 0..cluster.members.len() {
            if let Some(v) = cluster.view(i).await {
                views.push(v);
            }
        }
        let running = cluster.members.iter().filter(|m| m.is_running()).count();
        if let Some(first) = views.first() {
            let agreed = first.leader != 0
                && views.len() == running
                && views
                    .iter()
                    .all(|v| v.leader == first.leader && v.term == first.term);
            if agreed {
                if let Some(i) = cluster.index_of(first.leader) {
                    return Some(i);
                }
            }
        }
        if Instant::now() >= until {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits (at most 30 s) until every member reports the same applied index in two rounds
/// of Status 100 ms apart: what was delivered late has been applied everywhere.
async fn settled(cluster: &Cluster) {
    let until = Instant::now() + Duration::from_secs(30);
    let mut last: Option<Vec<u64>> = None;
    while Instant::now() < until {
        let mut applied = Vec::new();
        for i in 0..cluster.members.len() {
            applied.push(cluster.view(i).await.map_or(0, |v| v.applied));
        }
        let same = applied.windows(2).all(|w| w[0] == w[1]);
        if same && last.as_ref() == Some(&applied) {
            return;
        }
        last = same.then_some(applied);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn run(s: &Scenario) -> Report {
    let snapshot_count = s.snapshot_count.to_string();
    let catchup = s.catchup_entries.map(|c| c.to_string());
    let mut cluster = Cluster::start_with_proxies(s.members, |o| {
        let o = o.arg("--snapshot-count").arg(&snapshot_count);
        match &catchup {
            Some(c) => o.arg("--experimental-snapshot-catchup-entries").arg(c),
            None => o,
        }
    });
    let main_rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let client_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    cluster.set_blackhole_model(s.tcp_backoff, s.hold_new_connections);
    main_rt.block_on(cluster.wait_leader(None));
    let endpoints: Vec<String> = cluster.members.iter().map(|m| m.client_url()).collect();

    let shared = Arc::new(Shared {
        endpoints: endpoints.clone(),
        history: History::new(),
        stop: AtomicBool::new(false),
        acks: Mutex::default(),
        counts: Mutex::default(),
        writes: Mutex::default(),
        keys: s.keys,
        op_timeout: s.op_timeout,
        pinned: s.pinned,
        retry_puts: s.retry_puts,
    });
    let watch_done = Arc::new(AtomicBool::new(false));
    let watched: Arc<Mutex<Watched>> = Arc::default();
    let watcher = client_rt.spawn(watch_loop(
        endpoints.clone(),
        Arc::clone(&watched),
        Arc::clone(&watch_done),
        s.op_timeout,
    ));
    let mut rng = SplitMix64::new(s.seed);
    let clients: Vec<_> = (0..s.clients)
        .map(|id| client_rt.spawn(client_loop(id, Arc::clone(&shared), rng.next_u64())))
        .collect();

    // The nemesis: one fault at a time, each undone and recovered from (the running
    // members agree on a leader) before a gap and the next.
    let mut faults: BTreeMap<Fault, usize> = BTreeMap::new();
    let mut nemesis: Vec<String> = Vec::new();
    let mut note = |line: String| {
        let line = format!("{} {line}", utc_clock(SystemTime::now()));
        if s.verbose {
            eprintln!("{line}");
        }
        nemesis.push(line);
    };
    let started = Instant::now();
    let mut round = 0;
    std::thread::sleep(s.gap.0);
    while started.elapsed() < s.duration {
        let (kind, target) = s.mix.pick(round, &mut rng);
        round += 1;
        let Some(leader) = main_rt.block_on(agreed_leader(&cluster, crate::LEADER_DEADLINE)) else {
            panic!("no agreed leader within {:?}", crate::LEADER_DEADLINE);
        };
        let followers: Vec<usize> = (0..s.members).filter(|&i| i != leader).collect();
        let to_leader = match target {
            Target::Leader => true,
            Target::Follower => false,
            Target::Either => rng.chance(0.5),
            Target::MostlyLeader => rng.chance(0.75),
            Target::Any => rng.below(s.members) == leader,
        };
        let victim = if to_leader || followers.is_empty() {
            leader
        } else {
            followers[rng.below(followers.len())]
        };
        let length = s.fault_length_for(&mut rng);
        note(format!(
            "[{:>6.1}s] {} m{victim} ({}, leader m{leader}) for {:.2}s",
            started.elapsed().as_secs_f64(),
            kind.name(),
            if victim == leader {
                "leader"
            } else {
                "follower"
            },
            length.as_secs_f64()
        ));
        *faults.entry(kind).or_default() += 1;
        match kind {
            Fault::Kill => {
                cluster.members[victim].kill9();
                std::thread::sleep(length);
                cluster.members[victim].respawn();
                cluster.members[victim].wait_ready();
            }
            Fault::Pause => {
                cluster.members[victim].signal(libc::SIGSTOP);
                std::thread::sleep(length);
                cluster.members[victim].signal(libc::SIGCONT);
            }
            Fault::Blackhole
            | Fault::BlackholeIn
            | Fault::BlackholeOut
            | Fault::BlackholeExisting => {
                let direction = match kind {
                    Fault::BlackholeIn => CutDirection::Inbound,
                    Fault::BlackholeOut => CutDirection::Outbound,
                    _ => CutDirection::Both,
                };
                let mode = match kind {
                    Fault::BlackholeExisting => CutMode::BlackholeExisting,
                    _ => CutMode::Blackhole,
                };
                cluster.cut(victim, direction, mode);
                std::thread::sleep(length);
                cluster.heal_cuts();
            }
            Fault::Isolate => {
                cluster.isolate(victim);
                std::thread::sleep(length);
                cluster.heal(victim);
            }
        }
        note(format!(
            "[{:>6.1}s] healed m{victim}",
            started.elapsed().as_secs_f64()
        ));
        let recovered = main_rt.block_on(agreed_leader(&cluster, crate::LEADER_DEADLINE));
        assert!(
            recovered.is_some(),
            "no agreed leader within {:?} of healing m{victim}",
            crate::LEADER_DEADLINE
        );
        std::thread::sleep(rng.between(s.gap));
    }
    shared.stop.store(true, Ordering::SeqCst);
    client_rt.block_on(async {
        for c in clients {
            c.await.expect("client task");
        }
    });

    // Everything healed and delivered (bytes a blackhole held may arrive seconds after
    // the heal, at the sender's next retransmission, and still be applied): then a final
    // linearizable read of every key, part of the history. A connection cut again and
    // again before it could retransmit backs off like TCP, up to its 120 s cap.
    let deadline = Instant::now() + HELD_BYTES_DEADLINE;
    while cluster.proxies().iter().any(|p| p.holding() > 0) {
        assert!(
            Instant::now() < deadline,
            "blackholed bytes still held {HELD_BYTES_DEADLINE:?} after the last heal"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    main_rt.block_on(cluster.wait_leader(None));
    main_rt.block_on(settled(&cluster));
    let mut final_values: HashMap<String, Option<u64>> = HashMap::new();
    let mut final_rev = 0;
    main_rt.block_on(async {
        let deadline = Instant::now() + crate::LEADER_DEADLINE;
        for k in 0..s.keys {
            let name = key(k);
            let mut member = 0;
            loop {
                let pending = shared.history.begin(s.clients, &name, Op::Read);
                let read = async {
                    let mut c = connect(&endpoints[member], s.op_timeout).await?;
                    c.get(name.as_str(), None).await.ok()
                };
                match tokio::time::timeout(s.op_timeout, read)
                    .await
                    .ok()
                    .flatten()
                {
                    Some(resp) => {
                        let value = resp.kvs().first().and_then(|kv| parse(kv.value()));
                        shared.history.end(pending, Outcome::Read(value));
                        final_values.insert(name.clone(), value);
                        let rev = resp.header().map_or(0, |h| h.revision());
                        final_rev = final_rev.max(rev);
                        break;
                    }
                    None => {
                        shared.history.end(pending, Outcome::Unknown);
                        assert!(Instant::now() < deadline, "final read of {name} failed");
                        member = (member + 1) % endpoints.len();
                    }
                }
            }
        }
    });

    // Every member's own history, and the watcher's, up to the final revision.
    let mut problems_reading = Vec::new();
    let histories: Vec<Vec<Event>> = main_rt.block_on(async {
        let mut out = Vec::new();
        for (i, endpoint) in endpoints.iter().enumerate() {
            match member_history(endpoint, final_rev).await {
                Ok(h) => out.push(h),
                Err(e) => {
                    problems_reading.push(format!("m{i}: cannot read its history: {e}"));
                    out.push(Vec::new());
                }
            }
        }
        out
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    while lock(&watched).events.last().map_or(0, |e| e.0) < final_rev && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    watch_done.store(true, Ordering::SeqCst);
    client_rt.block_on(async {
        let _ = tokio::time::timeout(Duration::from_secs(10), watcher).await;
    });

    let verdict = match shared.history.check(s.check_budget) {
        CheckResult::Linearizable => Verdict::Ok,
        CheckResult::Violation { explanation, .. } => Verdict::Violation(explanation),
        CheckResult::Inconclusive => Verdict::Inconclusive,
    };
    let watched = lock(&watched);
    let watch_gaps = watch_problems(&watched.events, final_rev);
    let mut divergences = problems_reading;
    divergences.extend(divergence(&histories));
    let reference = histories
        .iter()
        .find(|h| !h.is_empty())
        .cloned()
        .unwrap_or_default();
    let acks = lock(&shared.acks).clone();
    let lost_acks = lost_acks(&reference, &acks, &final_values);
    let writes = lock(&shared.writes).clone();
    let mut sources: Vec<(String, &[Event])> = vec![("watcher".into(), &watched.events)];
    for (i, h) in histories.iter().enumerate() {
        sources.push((format!("m{i}"), h));
    }
    let double_applies = double_applies(&sources, &writes, &endpoints);
    let mut duplicate_entries = Vec::new();
    for (i, m) in cluster.members.iter().enumerate() {
        let wal = m.data_dir().join("member").join("wal");
        match wal_duplicates(&wal) {
            Ok(found) => duplicate_entries.extend(found.into_iter().map(|d| format!("m{i}: {d}"))),
            Err(e) => duplicate_entries.push(format!("m{i}: cannot read {}: {e}", wal.display())),
        }
    }
    let counts = lock(&shared.counts);
    let ops = shared.history.operations();
    let mut report = Report {
        seed: s.seed,
        mix: s.mix.to_string(),
        ops: ops.len(),
        ok: counts.ok + s.keys,
        failed: counts.failed,
        unknown: counts.unknown,
        faults,
        verdict,
        lost_acks,
        double_applies,
        watch_gaps,
        divergences,
        duplicate_entries,
        final_revision: final_rev,
        nemesis,
        kept: None,
    };
    drop(counts);
    let keep_in = match &s.keep {
        Keep::Always(dir) => Some(dir),
        Keep::OnProblem(dir) if !report.problems().is_empty() => Some(dir),
        Keep::OnProblem(_) | Keep::Never => None,
    };
    if let Some(dir) = keep_in {
        let evidence = Evidence {
            report: &report,
            watched: &watched,
            writes: &writes,
            history: &reference,
            ops: &ops,
        };
        report.kept = Some(keep_evidence(&mut cluster, dir, &evidence));
    }
    report
}

impl Scenario {
    fn fault_length_for(&self, rng: &mut SplitMix64) -> Duration {
        rng.between(self.fault_length)
    }
}

/// Proposal ids at more than one index of the raft log in `dir` (cairn's WAL: segments
/// of records `[len u32 LE][type u8][crc u32 LE][payload]`; an entry record's payload is
/// its index and term as u64 LE, then raft's `Entry` protobuf, whose field 6 is the
/// context holding the proposal id). A record at index i replaces the log from i on, as
/// on replay. Stops at the first incomplete record (the tail the member is writing).
pub fn wal_duplicates(dir: &Path) -> std::io::Result<Vec<String>> {
    const TYPE_ENTRY: u8 = 2;
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "wal"))
        .collect();
    names.sort();
    let mut log: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
    for name in names {
        let data = std::fs::read(&name)?;
        let mut at = 0;
        while let Some(header) = data.get(at..at + 9) {
            let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
            let kind = header[4];
            let Some(payload) = data.get(at + 9..at + 9 + len) else {
                break;
            };
            if kind == 0 {
                break;
            }
            at += 9 + len;
            if kind != TYPE_ENTRY || payload.len() < 16 {
                continue;
            }
            let mut index = [0u8; 8];
            index.copy_from_slice(&payload[..8]);
            let index = u64::from_le_bytes(index);
            let _ = log.split_off(&index);
            log.insert(index, entry_context(&payload[16..]).unwrap_or_default());
        }
    }
    let mut by_id: BTreeMap<Vec<u8>, Vec<u64>> = BTreeMap::new();
    for (index, id) in log {
        if id.len() == 8 {
            by_id.entry(id).or_default().push(index);
        }
    }
    Ok(by_id
        .into_iter()
        .filter(|(_, at)| at.len() > 1)
        .map(|(id, at)| {
            let hex: String = id.iter().map(|b| format!("{b:02x}")).collect();
            format!("proposal {hex} at indexes {at:?}")
        })
        .collect())
}

/// Field 6 (context) of a raft `Entry` protobuf.
fn entry_context(mut msg: &[u8]) -> Option<Vec<u8>> {
    fn varint(bytes: &mut &[u8]) -> Option<u64> {
        let mut value = 0u64;
        for i in 0..10 {
            let (&b, rest) = bytes.split_first()?;
            *bytes = rest;
            value |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Some(value);
            }
        }
        None
    }
    let mut context = None;
    while !msg.is_empty() {
        let tag = varint(&mut msg)?;
        match tag & 7 {
            0 => {
                varint(&mut msg)?;
            }
            2 => {
                let n = usize::try_from(varint(&mut msg)?).ok()?;
                let value = msg.get(..n)?;
                if tag >> 3 == 6 {
                    context = Some(value.to_vec());
                }
                msg = &msg[n..];
            }
            1 => msg = msg.get(8..)?,
            5 => msg = msg.get(4..)?,
            _ => return None,
        }
    }
    context
}

/// Gaps, repeats and disorder in the watcher's revisions (each revision holds one event
/// in this workload), and whether it reached the final revision.
fn watch_problems(events: &[Event], final_rev: i64) -> Vec<String> {
    let mut out = Vec::new();
    let mut expected = 2; // revision 1 is the empty store
    for e in events {
        if e.0 != expected {
            out.push(format!("revision {} after {}", e.0, expected - 1));
        }
        expected = e.0 + 1;
    }
    if expected - 1 != final_rev {
        out.push(format!(
            "last revision seen {}, final revision {final_rev}",
            expected - 1
        ));
    }
    out.truncate(20);
    out
}

/// Where the members' histories differ from the first one's.
fn divergence(histories: &[Vec<Event>]) -> Vec<String> {
    let mut out = Vec::new();
    let Some(first) = histories.first() else {
        return out;
    };
    for (i, h) in histories.iter().enumerate().skip(1) {
        if h.is_empty() {
            continue;
        }
        if let Some(at) = (0..first.len().max(h.len())).find(|&j| first.get(j) != h.get(j)) {
            out.push(format!(
                "m{i} differs from m0 at event #{at}: m0 {:?}, m{i} {:?}",
                first.get(at),
                h.get(at)
            ));
        }
    }
    out
}

fn lost_acks(
    history: &[Event],
    acks: &[(String, u64, i64)],
    final_values: &HashMap<String, Option<u64>>,
) -> Vec<String> {
    let by_rev: HashMap<i64, (&str, Option<u64>)> = history
        .iter()
        .map(|(r, k, v, _)| (*r, (k.as_str(), *v)))
        .collect();
    let mut out: Vec<String> = acks
        .iter()
        .filter(|(k, v, rev)| by_rev.get(rev) != Some(&(k.as_str(), Some(*v))))
        .map(|(k, v, rev)| {
            format!(
                "{k}={v} acknowledged at revision {rev}, history has {:?}",
                by_rev.get(rev)
            )
        })
        .collect();
    let mut last: HashMap<&str, Option<u64>> = HashMap::new();
    for (_, k, v, _) in history {
        last.insert(k.as_str(), *v);
    }
    for (k, v) in final_values {
        if last.get(k.as_str()).copied().flatten() != *v {
            out.push(format!(
                "final value of {k} is {v:?}, the history's last is {:?}",
                last.get(k.as_str())
            ));
        }
    }
    out
}

fn double_applies(
    sources: &[(String, &[Event])],
    writes: &HashMap<u64, WriteRecord>,
    endpoints: &[String],
) -> Vec<DoubleApply> {
    let mut found: BTreeMap<u64, DoubleApply> = BTreeMap::new();
    for (name, events) in sources {
        let mut revs: HashMap<u64, (String, Vec<i64>)> = HashMap::new();
        for (rev, k, v, _) in events.iter() {
            if let Some(v) = v {
                let entry = revs.entry(*v).or_insert_with(|| (k.clone(), Vec::new()));
                if !entry.1.contains(rev) {
                    entry.1.push(*rev);
                }
            }
        }
        for (value, (key, revisions)) in revs {
            if revisions.len() < 2 {
                continue;
            }
            let request = writes.get(&value).map_or_else(
                || "an unknown request".to_string(),
                |w| {
                    format!(
                        "client {} ({}) on m{} {} at {}, {}{}",
                        w.client,
                        w.what,
                        w.member,
                        endpoints.get(w.member).map_or("", String::as_str),
                        utc_clock(w.called),
                        match w.took {
                            Some(t) => format!("answered after {t:?}"),
                            None => "no answer in time".to_string(),
                        },
                        match w.retried {
                            Some((to, true)) => format!(", re-sent to m{to}: answered"),
                            Some((to, false)) => format!(", re-sent to m{to}: no answer"),
                            None => String::new(),
                        }
                    )
                },
            );
            found
                .entry(value)
                .and_modify(|d| {
                    for r in &revisions {
                        if !d.revisions.contains(r) {
                            d.revisions.push(*r);
                        }
                    }
                    d.request = format!("{}; seen by {name}", d.request);
                })
                .or_insert(DoubleApply {
                    key,
                    value,
                    revisions,
                    request: format!("{request}; seen by {name}"),
                });
        }
    }
    found
        .into_values()
        .map(|mut d| {
            d.revisions.sort_unstable();
            d
        })
        .collect()
}

/// What a kept run writes besides the members' directories.
struct Evidence<'a> {
    report: &'a Report,
    watched: &'a Watched,
    writes: &'a HashMap<u64, WriteRecord>,
    history: &'a [Event],
    ops: &'a [crate::linearizability::Operation],
}

/// Every write without an answer in time, with the revisions its value appears at in
/// the history and when the watcher saw them: where the stuck requests went.
fn unknown_writes(e: &Evidence<'_>, endpoints: &[String]) -> String {
    let mut seen_at: HashMap<i64, (SystemTime, usize)> = HashMap::new();
    for (ev, arrived) in e.watched.events.iter().zip(&e.watched.arrived) {
        seen_at.entry(ev.0).or_insert(*arrived);
    }
    let mut revs: HashMap<u64, Vec<i64>> = HashMap::new();
    for (rev, _, v, _) in e.history {
        if let Some(v) = v {
            revs.entry(*v).or_default().push(*rev);
        }
    }
    let mut lines = Vec::new();
    for op in e.ops {
        let value = match op.op {
            Op::Write(v) => v,
            Op::Cas { new, .. } => new,
            Op::Read => continue,
        };
        if op.outcome != Outcome::Unknown {
            continue;
        }
        let Some(w) = e.writes.get(&value) else {
            continue;
        };
        let applied: Vec<String> = revs
            .get(&value)
            .map(|rs| {
                rs.iter()
                    .map(|r| match seen_at.get(r) {
                        Some((at, m)) => {
                            format!("rev {r} (watcher on m{m} saw it {})", utc_clock(*at))
                        }
                        None => format!("rev {r}"),
                    })
                    .collect()
            })
            .unwrap_or_default();
        lines.push(format!(
            "{} client {} {} {}={value} on m{} ({}): {}",
            utc_clock(w.called),
            w.client,
            w.what,
            op.key,
            w.member,
            endpoints.get(w.member).map_or("", String::as_str),
            if applied.is_empty() {
                "never applied".to_string()
            } else {
                format!("applied at {}", applied.join(", "))
            }
        ));
    }
    lines.join("\n") + "\n"
}

/// Stops the members and copies their directories (data and logs), the proxies'
/// connection events, the nemesis's log, the writes without an answer and the report
/// into a fresh directory in `dir`.
fn keep_evidence(cluster: &mut Cluster, dir: &Path, evidence: &Evidence<'_>) -> PathBuf {
    let report = evidence.report;
    let run_dir = dir.join(format!(
        "run-{}-{}",
        report.seed,
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs()
    ));
    let _ = std::fs::create_dir_all(&run_dir);
    let names: Vec<String> = (0..cluster.members.len())
        .map(|i| format!("m{i}={:x}", cluster.member_id(i)))
        .collect();
    let mut summary = format!(
        "members: {}\nmix: {}\nseed: {}\n\n{}\n{}\n\nproblems:\n{}\n\nnemesis:\n{}\n",
        names.join(" "),
        report.mix,
        report.seed,
        Report::header(),
        report.row(0),
        report.problems().join("\n"),
        report.nemesis.join("\n"),
    );
    for (i, proxy) in cluster.proxies().iter().enumerate() {
        let lines: Vec<String> = proxy
            .events()
            .iter()
            .map(|e| {
                let text = e.to_string();
                // Name dialers by member index as well as id.
                match e.event {
                    crate::proxy::ConnEvent::Identified(Some(id)) => {
                        let who = cluster.index_of(id).map_or("?".into(), |j| format!("m{j}"));
                        format!("{text} = {who}")
                    }
                    _ => text,
                }
            })
            .collect();
        let _ = std::fs::write(
            run_dir.join(format!("proxy-of-m{i}.log")),
            lines.join("\n") + "\n",
        );
    }
    let watched: Vec<String> = evidence
        .watched
        .events
        .iter()
        .zip(&evidence.watched.arrived)
        .map(|(e, (at, m))| format!("{} from m{m} {e:?}", utc_clock(*at)))
        .collect();
    let _ = std::fs::write(run_dir.join("watched.log"), watched.join("\n") + "\n");
    let endpoints: Vec<String> = cluster.members.iter().map(|m| m.client_url()).collect();
    let _ = std::fs::write(
        run_dir.join("unknown-writes.log"),
        unknown_writes(evidence, &endpoints),
    );
    for (i, m) in cluster.members.iter_mut().enumerate() {
        m.kill9();
        if let Some(root) = m.data_dir().parent() {
            let to = run_dir.join(format!("m{i}"));
            if let Err(e) = copy_dir(root, &to) {
                summary.push_str(&format!("copying m{i}'s directory: {e}\n"));
            }
        }
    }
    let _ = std::fs::write(run_dir.join("report.txt"), summary);
    run_dir
}

fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), target)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mixes_parse_and_print() {
        let mix: Mix = "blackhole:follower,kill:leader*2,pause"
            .parse()
            .expect("mix");
        assert_eq!(
            mix.to_string(),
            "blackhole:follower,kill:leader*2,pause:either"
        );
        assert_eq!("issue".parse::<Mix>(), Ok(Mix::issue_10()));
        assert!("nap:leader".parse::<Mix>().is_err());
        assert!("kill:boss".parse::<Mix>().is_err());
    }

    #[test]
    fn a_value_at_two_revisions_is_a_double_apply() {
        let events: Vec<Event> = vec![
            (2, "k".into(), Some(7), 1),
            (3, "k".into(), Some(8), 2),
            (4, "k".into(), Some(7), 3),
        ];
        let found = double_applies(&[("m0".into(), &events)], &HashMap::new(), &[]);
        assert_eq!(found.len(), 1);
        assert_eq!(
            (found[0].value, found[0].revisions.clone()),
            (7, vec![2, 4])
        );
        assert_eq!(watch_problems(&events, 4), Vec::<String>::new());
        assert_eq!(
            watch_problems(&events[1..], 4),
            vec!["revision 3 after 1".to_string()]
        );
    }

    #[test]
    fn a_proposal_id_at_two_indexes_of_the_wal_is_found() {
        fn entry_record(index: u64, id: u64) -> Vec<u8> {
            // Entry { term: 2, index, data: "x", context: id }
            let mut entry = vec![0x10, 2, 0x18, index as u8, 0x22, 1, b'x', 0x32, 8];
            entry.extend_from_slice(&id.to_be_bytes());
            let mut payload = index.to_le_bytes().to_vec();
            payload.extend_from_slice(&2u64.to_le_bytes());
            payload.extend_from_slice(&entry);
            let mut rec = (payload.len() as u32).to_le_bytes().to_vec();
            rec.push(2);
            rec.extend_from_slice(&[0; 4]);
            rec.extend_from_slice(&payload);
            rec
        }
        let dir = tempfile::tempdir().expect("dir");
        let mut seg = Vec::new();
        for (index, id) in [(1, 10), (2, 11), (3, 12), (2, 13), (3, 14), (4, 10)] {
            seg.extend(entry_record(index, id));
        }
        seg.extend_from_slice(&[9, 0, 0]); // a torn tail
        std::fs::write(
            dir.path().join("0000000000000000-0000000000000001.wal"),
            seg,
        )
        .expect("write");
        // Index 2 and 3 were rewritten (11, 12 are gone); 10 is at 1 and 4.
        assert_eq!(
            wal_duplicates(dir.path()).expect("read"),
            vec!["proposal 000000000000000a at indexes [1, 4]".to_string()]
        );
    }

    #[test]
    fn the_generator_repeats_with_its_seed() {
        let a: Vec<u64> = (0..4).map(|_| SplitMix64::new(9).next_u64()).collect();
        assert!(a.windows(2).all(|w| w[0] == w[1]));
        let mut g = SplitMix64::new(1);
        let d = g.between((Duration::from_secs(2), Duration::from_millis(4500)));
        assert!(d >= Duration::from_secs(2) && d <= Duration::from_millis(4500));
    }
}
