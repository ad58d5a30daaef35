//! Three members under faults while concurrent clients read, write and compare-and-swap
//! a handful of keys: kill -9 and restart, SIGSTOP/SIGCONT, and inbound isolation of a
//! member's peer traffic by its proxy — one fault at a time, each followed by recovery.
//! Every operation is recorded and the history must be linearizable; no acknowledged
//! write may be lost; a watcher from revision 1 that hops members on failure must see
//! every revision exactly once, in order, up to the final one.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cairn_tests::etcd_client::{self, Compare, CompareOp, ConnectOptions, EventType, Txn, TxnOp};
use cairn_tests::linearizability::{CheckResult, History, Op, Outcome};
use cairn_tests::{watch_all_from, Cluster};
use rand::Rng;

/// Concurrent clients.
const CLIENTS: usize = 8;
/// Keys they share.
const KEYS: usize = 4;
/// How long faults are injected while the clients run.
const FAULT_PHASE: Duration = Duration::from_secs(26);
/// Per-operation deadline: no answer by then is an Unknown outcome.
const OP_TIMEOUT: Duration = Duration::from_secs(3);
/// How long the watcher may take to reach the final revision after the run.
const WATCH_DEADLINE: Duration = Duration::from_secs(30);
/// Checker budget.
const CHECK_BUDGET: Duration = Duration::from_secs(120);

fn key(i: usize) -> String {
    format!("fault/k{i}")
}

fn parse(value: &[u8]) -> u64 {
    std::str::from_utf8(value)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("unexpected value {value:?}"))
}

async fn connect(endpoint: &str) -> Option<etcd_client::Client> {
    let options = ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(1))
        .with_timeout(OP_TIMEOUT);
    tokio::time::timeout(
        OP_TIMEOUT,
        etcd_client::Client::connect([endpoint], Some(options)),
    )
    .await
    .ok()?
    .ok()
}

/// An acknowledged write: key, value and the revision the server gave it.
type Ack = (String, u64, i64);

#[derive(Default)]
struct Counts {
    ok: usize,
    failed_cas: usize,
    unknown: usize,
}

/// One client: random reads, puts and CASes against one member at a time, moving to the
/// next member after a failed or timed-out request.
async fn client_loop(
    id: usize,
    endpoints: Vec<String>,
    history: History,
    stop: Arc<AtomicBool>,
    acks: Arc<Mutex<Vec<Ack>>>,
    counts: Arc<Mutex<Counts>>,
) {
    let mut member = id % endpoints.len();
    let mut client: Option<etcd_client::Client> = None;
    let mut seq: u64 = 0;
    let mut last_seen: HashMap<usize, Option<u64>> = HashMap::new();
    while !stop.load(Ordering::SeqCst) {
        if client.is_none() {
            client = connect(&endpoints[member]).await;
            if client.is_none() {
                member = (member + 1) % endpoints.len();
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        }
        let c = client.as_mut().expect("connected");
        let (k, kind) = {
            let mut rng = rand::rng();
            (rng.random_range(0..KEYS), rng.random_range(0..3))
        };
        let name = key(k);
        let mut failed = false;
        match kind {
            0 => {
                let pending = history.begin(id, &name, Op::Read);
                match tokio::time::timeout(OP_TIMEOUT, c.get(name.as_str(), None)).await {
                    Ok(Ok(resp)) => {
                        let value = resp.kvs().first().map(|kv| parse(kv.value()));
                        history.end(pending, Outcome::Read(value));
                        last_seen.insert(k, value);
                        counts.lock().unwrap().ok += 1;
                    }
                    _ => {
                        history.end(pending, Outcome::Unknown);
                        counts.lock().unwrap().unknown += 1;
                        failed = true;
                    }
                }
            }
            1 => {
                seq += 1;
                let value = (id as u64 + 1) * 1_000_000 + seq;
                let pending = history.begin(id, &name, Op::Write(value));
                match tokio::time::timeout(
                    OP_TIMEOUT,
                    c.put(name.as_str(), value.to_string(), None),
                )
                .await
                {
                    Ok(Ok(resp)) => {
                        history.end(pending, Outcome::Written);
                        let rev = resp.header().expect("put header").revision();
                        acks.lock().unwrap().push((name.clone(), value, rev));
                        counts.lock().unwrap().ok += 1;
                    }
                    _ => {
                        history.end(pending, Outcome::Unknown);
                        counts.lock().unwrap().unknown += 1;
                        failed = true;
                    }
                }
            }
            _ => {
                seq += 1;
                let new = (id as u64 + 1) * 1_000_000 + seq;
                let expect = last_seen.get(&k).copied().flatten();
                let compare = match expect {
                    Some(v) => Compare::value(name.as_str(), CompareOp::Equal, v.to_string()),
                    None => Compare::create_revision(name.as_str(), CompareOp::Equal, 0),
                };
                let txn = Txn::new().when([compare]).and_then([TxnOp::put(
                    name.as_str(),
                    new.to_string(),
                    None,
                )]);
                let pending = history.begin(id, &name, Op::Cas { expect, new });
                match tokio::time::timeout(OP_TIMEOUT, c.txn(txn)).await {
                    Ok(Ok(resp)) => {
                        let swapped = resp.succeeded();
                        history.end(pending, Outcome::Cas(swapped));
                        let mut counts = counts.lock().unwrap();
                        if swapped {
                            let rev = resp.header().expect("txn header").revision();
                            acks.lock().unwrap().push((name.clone(), new, rev));
                            last_seen.insert(k, Some(new));
                            counts.ok += 1;
                        } else {
                            // A failed compare is definite: nothing was written.
                            counts.failed_cas += 1;
                        }
                    }
                    _ => {
                        history.end(pending, Outcome::Unknown);
                        counts.lock().unwrap().unknown += 1;
                        failed = true;
                    }
                }
            }
        }
        if failed {
            client = None;
            member = (member + 1) % endpoints.len();
        }
    }
}

/// What the watcher saw: (revision, key, value or None for a delete), and how often it
/// had to move to another member.
#[derive(Default)]
struct Watched {
    events: Vec<(i64, String, Option<u64>)>,
    reconnects: usize,
}

/// Watches every key from revision 1 on member 0, moving to the next member (resuming
/// after the last revision seen) when the stream fails or stays silent.
async fn watch_loop(endpoints: Vec<String>, watched: Arc<Mutex<Watched>>, done: Arc<AtomicBool>) {
    let mut member = 0;
    let mut next_rev: i64 = 1;
    while !done.load(Ordering::SeqCst) {
        let attempt = async { watch_all_from(&endpoints[member], next_rev).await.ok() };
        let stream = tokio::time::timeout(OP_TIMEOUT, attempt)
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
                        let mut w = watched.lock().unwrap();
                        for ev in resp.events() {
                            let kv = ev.kv().expect("event kv");
                            let value = match ev.event_type() {
                                EventType::Put => Some(parse(kv.value())),
                                EventType::Delete => None,
                            };
                            let rev = kv.mod_revision();
                            w.events.push((
                                rev,
                                String::from_utf8_lossy(kv.key()).into_owned(),
                                value,
                            ));
                            next_rev = next_rev.max(rev + 1);
                        }
                    }
                    _ => break,
                }
            }
        }
        watched.lock().unwrap().reconnects += 1;
        member = (member + 1) % endpoints.len();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Fault {
    Kill,
    Pause,
    Isolate,
}

fn median(mut xs: Vec<Duration>) -> Option<Duration> {
    xs.sort();
    xs.get(xs.len() / 2).copied()
}

#[test]
fn linearizable_and_no_lost_writes_under_kill_pause_and_partition() {
    let mut cluster = Cluster::start_with_proxies(3, |o| o);
    let main_rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let client_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    main_rt.block_on(cluster.wait_leader(None));
    let endpoints: Vec<String> = cluster.members.iter().map(|m| m.client_url()).collect();

    let history = History::new();
    let stop = Arc::new(AtomicBool::new(false));
    let watch_done = Arc::new(AtomicBool::new(false));
    let acks: Arc<Mutex<Vec<Ack>>> = Arc::default();
    let counts: Arc<Mutex<Counts>> = Arc::default();
    let watched: Arc<Mutex<Watched>> = Arc::default();

    let watcher = client_rt.spawn(watch_loop(
        endpoints.clone(),
        Arc::clone(&watched),
        Arc::clone(&watch_done),
    ));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|id| {
            client_rt.spawn(client_loop(
                id,
                endpoints.clone(),
                history.clone(),
                Arc::clone(&stop),
                Arc::clone(&acks),
                Arc::clone(&counts),
            ))
        })
        .collect();

    // The fault schedule: one fault at a time, each undone and recovered from (every
    // member healthy, all agreeing on a leader) before the next.
    let mut rng = rand::rng();
    let mut faults: BTreeMap<Fault, usize> = BTreeMap::new();
    let mut leader_kill_elections: Vec<Duration> = Vec::new();
    let kinds = [Fault::Kill, Fault::Pause, Fault::Isolate];
    let started = Instant::now();
    let mut round = 0;
    std::thread::sleep(Duration::from_secs(1));
    while started.elapsed() < FAULT_PHASE {
        let kind = kinds[round % kinds.len()];
        round += 1;
        let (leader, _) = main_rt.block_on(cluster.wait_leader(None));
        // Most kills and half the other faults hit the leader, the rest a random member.
        let at_leader = if kind == Fault::Kill { 0.75 } else { 0.5 };
        let target = if rng.random_bool(at_leader) {
            leader
        } else {
            rng.random_range(0..cluster.members.len())
        };
        eprintln!(
            "[{:>5.1}s] fault {kind:?} on m{target} (leader m{leader})",
            started.elapsed().as_secs_f64()
        );
        *faults.entry(kind).or_default() += 1;
        match kind {
            Fault::Kill => {
                cluster.members[target].kill9();
                if target == leader {
                    let (_, took) = main_rt.block_on(cluster.wait_leader(Some(target)));
                    eprintln!("    new leader {took:?} after killing leader m{target}");
                    leader_kill_elections.push(took);
                }
                std::thread::sleep(Duration::from_millis(1000));
                cluster.members[target].respawn();
                cluster.members[target].wait_ready();
            }
            Fault::Pause => {
                cluster.members[target].signal(libc::SIGSTOP);
                std::thread::sleep(Duration::from_millis(2000));
                cluster.members[target].signal(libc::SIGCONT);
                cluster.members[target].wait_ready();
            }
            Fault::Isolate => {
                cluster.isolate(target);
                std::thread::sleep(Duration::from_millis(2500));
                cluster.heal(target);
            }
        }
        let (_, recovered) = main_rt.block_on(cluster.wait_leader(None));
        eprintln!("    recovered {recovered:?} after the fault was undone");
        std::thread::sleep(Duration::from_millis(400));
    }
    stop.store(true, Ordering::SeqCst);
    client_rt.block_on(async {
        for c in clients {
            c.await.expect("client task");
        }
    });

    // Everything healed: a final linearizable read of every key, part of the history.
    main_rt.block_on(cluster.wait_leader(None));
    let mut final_values: HashMap<String, Option<u64>> = HashMap::new();
    let mut final_rev = 0;
    main_rt.block_on(async {
        let mut client = cluster.members[0].client().await;
        for k in 0..KEYS {
            let name = key(k);
            let pending = history.begin(CLIENTS, &name, Op::Read);
            let resp = client.get(name.as_str(), None).await.expect("final read");
            let value = resp.kvs().first().map(|kv| parse(kv.value()));
            history.end(pending, Outcome::Read(value));
            final_values.insert(name, value);
            final_rev = final_rev.max(resp.header().expect("header").revision());
        }
    });

    // The watcher reaches the final revision.
    let deadline = Instant::now() + WATCH_DEADLINE;
    loop {
        let last = watched.lock().unwrap().events.last().map_or(0, |e| e.0);
        if last >= final_rev {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "watcher at revision {last}, final revision {final_rev}, after {WATCH_DEADLINE:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    watch_done.store(true, Ordering::SeqCst);
    client_rt.block_on(async {
        let _ = tokio::time::timeout(Duration::from_secs(10), watcher).await;
    });

    // Figures.
    let ops = history.operations();
    let counts = counts.lock().unwrap();
    let acks = acks.lock().unwrap();
    let watched = watched.lock().unwrap();
    eprintln!("---- figures ----");
    eprintln!(
        "total ops {} (ok {}, failed CAS {}, unknown {}, final reads {KEYS})",
        ops.len(),
        counts.ok,
        counts.failed_cas,
        counts.unknown
    );
    let mut by_kind: BTreeMap<&str, BTreeMap<&str, usize>> = BTreeMap::new();
    for op in &ops {
        let kind = match op.op {
            Op::Read => "read",
            Op::Write(_) => "put",
            Op::Cas { .. } => "cas",
        };
        let outcome = match op.outcome {
            Outcome::Read(_) | Outcome::Written => "ok",
            Outcome::Cas(true) => "ok",
            Outcome::Cas(false) => "compare-failed",
            Outcome::Unknown => "unknown",
        };
        *by_kind.entry(kind).or_default().entry(outcome).or_default() += 1;
    }
    eprintln!("ops by kind and outcome: {by_kind:?}");
    eprintln!("faults injected: {faults:?}");
    eprintln!(
        "leader kills: {}, time to elect a new leader: median {:?}, all {:?}",
        leader_kill_elections.len(),
        median(leader_kill_elections.clone()),
        leader_kill_elections
    );
    eprintln!(
        "acknowledged writes {}, final revision {final_rev}, watcher events {}, watcher reconnects {}",
        acks.len(),
        watched.events.len(),
        watched.reconnects
    );

    // (a) Linearizable.
    let checked = Instant::now();
    let verdict = history.check(CHECK_BUDGET);
    eprintln!("checker took {:?}: {verdict:?}", checked.elapsed());
    match &verdict {
        CheckResult::Linearizable => eprintln!("violations: 0"),
        CheckResult::Violation { explanation, .. } => {
            panic!("history is not linearizable:\n{explanation}")
        }
        CheckResult::Inconclusive => panic!("checker ran out of its {CHECK_BUDGET:?} budget"),
    }

    // (c) The watcher saw every revision from 2 (the first write) to the final one, once each.
    let revs: Vec<i64> = watched.events.iter().map(|e| e.0).collect();
    for pair in revs.windows(2) {
        assert!(
            pair[1] == pair[0] + 1,
            "watcher revisions not consecutive: {} then {}",
            pair[0],
            pair[1]
        );
    }
    assert_eq!(revs.first().copied(), Some(2), "watcher's first revision");
    assert_eq!(
        revs.last().copied(),
        Some(final_rev),
        "watcher's last revision"
    );
    let by_rev: HashMap<i64, (&str, Option<u64>)> = watched
        .events
        .iter()
        .map(|(r, k, v)| (*r, (k.as_str(), *v)))
        .collect();

    // (b) No acknowledged write lost: each one is in the watched history at its revision,
    // and the final value of every key is its last watched value.
    for (k, value, rev) in acks.iter() {
        assert!(
            *rev <= final_rev,
            "write {k}={value} acknowledged at revision {rev} > final {final_rev}"
        );
        assert_eq!(
            by_rev.get(rev).copied(),
            Some((k.as_str(), Some(*value))),
            "acknowledged write {k}={value} at revision {rev} not in the watched history"
        );
    }
    let mut last_watched: HashMap<&str, Option<u64>> = HashMap::new();
    for (_, k, v) in &watched.events {
        last_watched.insert(k.as_str(), *v);
    }
    for (k, v) in &final_values {
        assert_eq!(
            last_watched.get(k.as_str()).copied().flatten(),
            *v,
            "final value of {k} differs from the last watched one"
        );
    }
}
