//! The workloads: closed-loop clients spread over gRPC channels, each timing its own
//! requests into a histogram merged at the end.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use bytes::Bytes;
use cairn_proto::etcdserverpb::{
    compare, kv_client::KvClient, lease_client::LeaseClient, request_op, response_op,
    watch_client::WatchClient, watch_request, CompactionRequest, Compare, LeaseGrantRequest,
    LeaseKeepAliveRequest, LeaseKeepAliveResponse, LeaseRevokeRequest, PutRequest, RangeRequest,
    RequestOp, TxnRequest, WatchCreateRequest, WatchRequest,
};
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};
use serde_json::json;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::codec::Streaming;
use tonic::transport::{Channel, Endpoint};

use super::report::{Latency, Report};

/// When a closed-loop run ends.
#[derive(Clone, Copy, Debug)]
pub enum Stop {
    /// After this many operations in all.
    Total(u64),
    /// After this long.
    Duration(Duration),
}

/// Where and how hard to push.
#[derive(Clone, Debug)]
pub struct Load {
    pub endpoints: Vec<String>,
    /// gRPC channels (HTTP/2 connections), spread over the endpoints in turn.
    pub conns: usize,
    /// Concurrent closed-loop tasks, spread over the channels in turn.
    pub clients: usize,
    pub stop: Stop,
}

/// Keys `prefix` + a zero-padded number below `space`.
#[derive(Clone, Copy, Debug)]
pub struct KeySpace {
    pub prefix: &'static str,
    pub width: usize,
    pub space: u64,
}

impl KeySpace {
    pub fn key(&self, n: u64) -> Bytes {
        Bytes::from(format!("{}{:0width$}", self.prefix, n, width = self.width))
    }

    fn random(&self, rng: &mut StdRng) -> Bytes {
        self.key(rng.random_range(0..self.space.max(1)))
    }
}

/// Opens `conns` channels, the i-th to `endpoints[i % endpoints.len()]`.
pub async fn connect(endpoints: &[String], conns: usize) -> anyhow::Result<Vec<Channel>> {
    if endpoints.is_empty() {
        bail!("no endpoints");
    }
    let mut channels = Vec::with_capacity(conns.max(1));
    for i in 0..conns.max(1) {
        let url = endpoint_url(&endpoints[i % endpoints.len()]);
        let channel = Endpoint::from_shared(url.clone())
            .with_context(|| format!("bad endpoint {url}"))?
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true)
            .connect()
            .await
            .with_context(|| format!("connecting to {url}"))?;
        channels.push(channel);
    }
    Ok(channels)
}

/// `host:port` or a URL; plain `host:port` means `http://`.
pub fn endpoint_url(endpoint: &str) -> String {
    if endpoint.contains("://") {
        endpoint.to_string()
    } else {
        format!("http://{endpoint}")
    }
}

fn random_value(rng: &mut StdRng, size: usize) -> Bytes {
    let mut value = vec![0u8; size];
    rng.fill(&mut value[..]);
    Bytes::from(value)
}

fn new_rng() -> StdRng {
    StdRng::from_rng(&mut rand::rng())
}

/// One client's request, repeated in a closed loop.
trait Op: Send + 'static {
    fn call(&mut self) -> impl Future<Output = anyhow::Result<()>> + Send;
}

struct Budget {
    stop: Stop,
    issued: AtomicU64,
    start: Instant,
}

impl Budget {
    fn take(&self) -> bool {
        match self.stop {
            Stop::Total(total) => self.issued.fetch_add(1, Ordering::Relaxed) < total,
            Stop::Duration(d) => self.start.elapsed() < d,
        }
    }
}

struct Outcome<O> {
    latency: Latency,
    ops: u64,
    errors: u64,
    first_error: Option<String>,
    elapsed: Duration,
    /// The clients' final states, for workload-specific counters.
    clients: Vec<O>,
}

impl<O> Outcome<O> {
    fn report(self, workload: &str, load: &Load) -> (Report, Vec<O>) {
        let report = Report {
            workload: workload.to_string(),
            conns: load.conns,
            clients: load.clients,
            ops: self.ops,
            errors: self.errors,
            first_error: self.first_error,
            elapsed: self.elapsed,
            latency: self.latency,
            extra: Default::default(),
        };
        (report, self.clients)
    }
}

/// Runs every client until the budget is spent and merges what they measured.
async fn drive<O: Op>(clients: Vec<O>, stop: Stop) -> anyhow::Result<Outcome<O>> {
    let budget = Arc::new(Budget {
        stop,
        issued: AtomicU64::new(0),
        start: Instant::now(),
    });
    let tasks: Vec<_> = clients
        .into_iter()
        .map(|mut op| {
            let budget = budget.clone();
            tokio::spawn(async move {
                let mut latency = Latency::default();
                let (mut ops, mut errors, mut first_error) = (0u64, 0u64, None);
                while budget.take() {
                    let started = Instant::now();
                    match op.call().await {
                        Ok(()) => {
                            latency.record(started.elapsed());
                            ops += 1;
                        }
                        Err(err) => {
                            errors += 1;
                            first_error.get_or_insert_with(|| format!("{err:#}"));
                        }
                    }
                }
                (op, latency, ops, errors, first_error)
            })
        })
        .collect();
    let mut outcome = Outcome {
        latency: Latency::default(),
        ops: 0,
        errors: 0,
        first_error: None,
        elapsed: Duration::ZERO,
        clients: Vec::with_capacity(tasks.len()),
    };
    for task in tasks {
        let (op, latency, ops, errors, first_error) = task.await.context("client task")?;
        outcome.latency.merge(&latency);
        outcome.ops += ops;
        outcome.errors += errors;
        if outcome.first_error.is_none() {
            outcome.first_error = first_error;
        }
        outcome.clients.push(op);
    }
    outcome.elapsed = budget.start.elapsed();
    Ok(outcome)
}

fn kv_clients(
    channels: &[Channel],
    clients: usize,
) -> impl Iterator<Item = KvClient<Channel>> + '_ {
    (0..clients.max(1)).map(move |i| KvClient::new(channels[i % channels.len()].clone()))
}

struct PutOp {
    kv: KvClient<Channel>,
    rng: StdRng,
    keys: KeySpace,
    value: Bytes,
}

impl Op for PutOp {
    async fn call(&mut self) -> anyhow::Result<()> {
        let key = self.keys.random(&mut self.rng);
        let put = PutRequest {
            key,
            value: self.value.clone(),
            ..Default::default()
        };
        self.kv.put(put).await?;
        Ok(())
    }
}

/// Puts `val_size`-byte values at random keys of `keys`.
pub async fn put(load: &Load, keys: KeySpace, val_size: usize) -> anyhow::Result<Report> {
    let channels = connect(&load.endpoints, load.conns).await?;
    let clients = kv_clients(&channels, load.clients)
        .map(|kv| {
            let mut rng = new_rng();
            let value = random_value(&mut rng, val_size);
            PutOp {
                kv,
                rng,
                keys,
                value,
            }
        })
        .collect();
    let (mut report, _) = drive(clients, load.stop).await?.report("put", load);
    report.extra.insert("key_space".into(), json!(keys.space));
    report.extra.insert("val_size".into(), json!(val_size));
    Ok(report)
}

struct PrefillOp {
    kv: KvClient<Channel>,
    next: Arc<AtomicU64>,
    keys: KeySpace,
    value: Bytes,
}

impl Op for PrefillOp {
    async fn call(&mut self) -> anyhow::Result<()> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let put = PutRequest {
            key: self.keys.key(n),
            value: self.value.clone(),
            ..Default::default()
        };
        self.kv.put(put).await?;
        Ok(())
    }
}

/// Puts every key of `keys` once (64 clients over 8 channels), so reads find them.
pub async fn prefill(
    endpoints: &[String],
    keys: KeySpace,
    val_size: usize,
) -> anyhow::Result<Report> {
    prefill_part(endpoints, keys, 0..keys.space, val_size).await
}

/// Puts the keys numbered `part` of `keys` once (64 clients over 8 channels).
pub async fn prefill_part(
    endpoints: &[String],
    keys: KeySpace,
    part: std::ops::Range<u64>,
    val_size: usize,
) -> anyhow::Result<Report> {
    let total = part.end.saturating_sub(part.start);
    let load = Load {
        endpoints: endpoints.to_vec(),
        conns: 8,
        clients: 64,
        stop: Stop::Total(total),
    };
    let channels = connect(&load.endpoints, load.conns).await?;
    let next = Arc::new(AtomicU64::new(part.start));
    let clients = kv_clients(&channels, load.clients)
        .map(|kv| PrefillOp {
            kv,
            next: next.clone(),
            keys,
            value: random_value(&mut new_rng(), val_size),
        })
        .collect();
    let (report, _) = drive(clients, load.stop).await?.report("prefill", &load);
    if report.errors > 0 {
        bail!(
            "prefill: {} of {total} puts failed: {}",
            report.errors,
            report.first_error.as_deref().unwrap_or("")
        );
    }
    Ok(report)
}

struct RangeOp {
    kv: KvClient<Channel>,
    rng: StdRng,
    keys: KeySpace,
    serializable: bool,
}

impl Op for RangeOp {
    async fn call(&mut self) -> anyhow::Result<()> {
        let key = self.keys.random(&mut self.rng);
        let range = RangeRequest {
            key,
            serializable: self.serializable,
            ..Default::default()
        };
        self.kv.range(range).await?;
        Ok(())
    }
}

/// Single-key Ranges at random keys of `keys` (prefilled beforehand).
pub async fn range(load: &Load, keys: KeySpace, serializable: bool) -> anyhow::Result<Report> {
    let channels = connect(&load.endpoints, load.conns).await?;
    let clients = kv_clients(&channels, load.clients)
        .map(|kv| RangeOp {
            kv,
            rng: new_rng(),
            keys,
            serializable,
        })
        .collect();
    let name = if serializable {
        "range-serializable"
    } else {
        "range-linearizable"
    };
    let (mut report, _) = drive(clients, load.stop).await?.report(name, load);
    report.extra.insert("key_space".into(), json!(keys.space));
    Ok(report)
}

struct CasOp {
    kv: KvClient<Channel>,
    rng: StdRng,
    keys: KeySpace,
    /// This client's keys are `slot + k * stride`: no two clients race on a key, so
    /// a compare fails only the first time a client touches a key.
    slot: u64,
    stride: u64,
    value: Bytes,
    /// The mod revision this client last saw per key; 0 (absent) until it learns one.
    known: HashMap<u64, i64>,
    swapped: u64,
    lost: u64,
}

impl Op for CasOp {
    async fn call(&mut self) -> anyhow::Result<()> {
        let per_client = (self.keys.space / self.stride).max(1);
        let n = self.slot + self.rng.random_range(0..per_client) * self.stride;
        let key = self.keys.key(n);
        let expected = self.known.get(&n).copied().unwrap_or(0);
        let txn = TxnRequest {
            compare: vec![Compare {
                result: compare::CompareResult::Equal as i32,
                target: compare::CompareTarget::Mod as i32,
                key: key.clone(),
                target_union: Some(compare::TargetUnion::ModRevision(expected)),
                ..Default::default()
            }],
            success: vec![RequestOp {
                request: Some(request_op::Request::RequestPut(PutRequest {
                    key: key.clone(),
                    value: self.value.clone(),
                    ..Default::default()
                })),
            }],
            failure: vec![RequestOp {
                request: Some(request_op::Request::RequestRange(RangeRequest {
                    key,
                    ..Default::default()
                })),
            }],
        };
        let resp = self.kv.txn(txn).await?.into_inner();
        let now_known = if resp.succeeded {
            self.swapped += 1;
            resp.header.map(|h| h.revision).unwrap_or(0)
        } else {
            self.lost += 1;
            resp.responses
                .into_iter()
                .find_map(|r| match r.response {
                    Some(response_op::Response::ResponseRange(range)) => {
                        Some(range.kvs.first().map(|kv| kv.mod_revision).unwrap_or(0))
                    }
                    _ => None,
                })
                .unwrap_or(0)
        };
        self.known.insert(n, now_known);
        Ok(())
    }
}

/// Compare-and-swap transactions: `mod_revision(key) == last seen` then put, else
/// read the key to learn its revision. Both outcomes count as operations. Each
/// client owns a disjoint slice of `keys`.
pub async fn txn(load: &Load, keys: KeySpace, val_size: usize) -> anyhow::Result<Report> {
    let channels = connect(&load.endpoints, load.conns).await?;
    let stride = load.clients.max(1) as u64;
    let clients = kv_clients(&channels, load.clients)
        .enumerate()
        .map(|(slot, kv)| {
            let mut rng = new_rng();
            let value = random_value(&mut rng, val_size);
            CasOp {
                kv,
                rng,
                keys,
                slot: slot as u64,
                stride,
                value,
                known: HashMap::new(),
                swapped: 0,
                lost: 0,
            }
        })
        .collect();
    let (mut report, clients) = drive(clients, load.stop).await?.report("txn-cas", load);
    let swapped: u64 = clients.iter().map(|c| c.swapped).sum();
    let lost: u64 = clients.iter().map(|c| c.lost).sum();
    report.extra.insert("key_space".into(), json!(keys.space));
    report.extra.insert("cas_swapped".into(), json!(swapped));
    report
        .extra
        .insert("cas_compare_failed".into(), json!(lost));
    Ok(report)
}

/// The `watch` workload's shape.
#[derive(Clone, Copy, Debug)]
pub struct WatchSpec {
    pub watchers: usize,
    pub streams: usize,
    pub puts: u64,
    pub val_size: usize,
    /// Give up on missing events after this long without a new one.
    pub idle_timeout: Duration,
    /// Put over the first watch channel (as one etcd client would) instead of a
    /// connection of the writer's own.
    pub writer_shares_conn: bool,
    /// Watch the prefix `bench-watch/` and put to 1,000 keys under it in turn,
    /// instead of watching and putting one key.
    pub prefix: bool,
}

const WATCH_KEY: &str = "bench-watch/key";
const WATCH_PREFIX: &str = "bench-watch/";
/// Keys the writer of a prefix watch puts to, in turn.
const WATCH_PREFIX_KEYS: u64 = 1000;

/// How long opening a stream (watch, keep-alive) may take before the run fails.
const STREAM_OPEN_TIMEOUT: Duration = Duration::from_secs(10);

/// What one watch stream saw.
#[derive(Default)]
struct StreamTally {
    latency: Latency,
    events: u64,
    last_event: Option<Instant>,
    error: Option<String>,
}

/// `watchers` watchers of one key over `streams` Watch streams (spread over `conns`
/// channels) while one client puts `puts` values carrying their send time; measures
/// event delivery rate and put-to-event latency.
pub async fn watch(endpoints: &[String], conns: usize, spec: WatchSpec) -> anyhow::Result<Report> {
    let channels = connect(endpoints, conns).await?;
    let streams = spec.streams.clamp(1, spec.watchers.max(1));
    let clock = Instant::now();
    let progress = Arc::new(AtomicU64::new(0));
    let (done_tx, done_rx) = tokio::sync::watch::channel(false);
    let mut ready = Vec::with_capacity(streams);
    let mut tasks = Vec::with_capacity(streams);
    // What every watcher watches: the prefix, or the one key.
    let (watched, watched_end) = if spec.prefix {
        (
            Bytes::from_static(WATCH_PREFIX.as_bytes()),
            prefix_end(WATCH_PREFIX.as_bytes()),
        )
    } else {
        (Bytes::from_static(WATCH_KEY.as_bytes()), Bytes::new())
    };
    for s in 0..streams {
        let watchers = spec.watchers / streams + usize::from(s < spec.watchers % streams);
        let mut client = WatchClient::new(channels[s % channels.len()].clone());
        let (req_tx, req_rx) = mpsc::channel::<WatchRequest>(watchers.max(1));
        // Queue the creates before opening: a server may send its response headers
        // only with its first message, and that needs a request.
        for _ in 0..watchers {
            let create = WatchRequest {
                request_union: Some(watch_request::RequestUnion::CreateRequest(
                    WatchCreateRequest {
                        key: watched.clone(),
                        range_end: watched_end.clone(),
                        ..Default::default()
                    },
                )),
            };
            req_tx.send(create).await.context("watch stream closed")?;
        }
        let mut events = tokio::time::timeout(
            STREAM_OPEN_TIMEOUT,
            client.watch(ReceiverStream::new(req_rx)),
        )
        .await
        .context("opening a watch stream timed out")?
        .context("opening a watch stream")?
        .into_inner();
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        ready.push(ready_rx);
        let expected = watchers as u64 * spec.puts;
        let progress = progress.clone();
        let mut done_rx = done_rx.clone();
        tasks.push(tokio::spawn(async move {
            // The request side stays open until we are done: closing it ends the stream.
            let _req_tx = req_tx;
            let mut tally = StreamTally::default();
            let mut created = 0;
            let mut ready_tx = Some(ready_tx);
            if watchers == 0 {
                let _ = ready_tx.take().map(|tx| tx.send(()));
                return tally;
            }
            while tally.events < expected {
                let msg = tokio::select! {
                    msg = events.message() => msg,
                    _ = done_rx.wait_for(|done| *done) => break,
                };
                let resp = match msg {
                    Ok(Some(resp)) => resp,
                    Ok(None) => {
                        tally.error = Some("watch stream ended".into());
                        break;
                    }
                    Err(status) => {
                        tally.error = Some(format!("watch stream: {status}"));
                        break;
                    }
                };
                if resp.created {
                    created += 1;
                    if created == watchers {
                        let _ = ready_tx.take().map(|tx| tx.send(()));
                    }
                }
                if resp.canceled {
                    tally.error = Some(format!("watch canceled: {}", resp.cancel_reason));
                    break;
                }
                for event in &resp.events {
                    let Some(kv) = &event.kv else { continue };
                    let Some(stamp) = kv.value.get(..8) else {
                        continue;
                    };
                    let sent = u64::from_le_bytes(stamp.try_into().unwrap_or_default());
                    let now = clock.elapsed();
                    tally
                        .latency
                        .record(now.saturating_sub(Duration::from_nanos(sent)));
                    tally.events += 1;
                }
                if !resp.events.is_empty() {
                    tally.last_event = Some(Instant::now());
                    progress.fetch_add(resp.events.len() as u64, Ordering::Relaxed);
                }
            }
            tally
        }));
    }
    for rx in ready {
        tokio::time::timeout(Duration::from_secs(30), rx)
            .await
            .context("watchers not created within 30 s")?
            .context("a watch stream failed before its watchers were created")?;
    }

    // The writer: one client, one put at a time, each value stamped with its send time.
    let writer_channel = if spec.writer_shares_conn {
        channels[0].clone()
    } else {
        connect(endpoints, 1).await?.remove(0)
    };
    let mut kv = KvClient::new(writer_channel);
    let mut rng = new_rng();
    let mut value = random_value(&mut rng, spec.val_size.max(8)).to_vec();
    let mut put_latency = Latency::default();
    let mut put_errors = 0u64;
    let start = Instant::now();
    for n in 0..spec.puts {
        let sent = u64::try_from(clock.elapsed().as_nanos()).unwrap_or(u64::MAX);
        value[..8].copy_from_slice(&sent.to_le_bytes());
        let key = if spec.prefix {
            Bytes::from(format!("{WATCH_PREFIX}{:04}", n % WATCH_PREFIX_KEYS))
        } else {
            Bytes::from_static(WATCH_KEY.as_bytes())
        };
        let put = PutRequest {
            key,
            value: Bytes::copy_from_slice(&value),
            ..Default::default()
        };
        let t = Instant::now();
        match kv.put(put).await {
            Ok(_) => put_latency.record(t.elapsed()),
            Err(_) => put_errors += 1,
        }
    }
    let writer_elapsed = start.elapsed();

    // Wait for delivery, giving up once nothing has arrived for `idle_timeout`.
    let expected = spec.watchers as u64 * spec.puts;
    let mut seen = progress.load(Ordering::Relaxed);
    let mut last_change = Instant::now();
    while seen < expected && !tasks.iter().all(|t| t.is_finished()) {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let now_seen = progress.load(Ordering::Relaxed);
        if now_seen != seen {
            seen = now_seen;
            last_change = Instant::now();
        } else if last_change.elapsed() > spec.idle_timeout {
            break;
        }
    }
    let _ = done_tx.send(true);

    let mut latency = Latency::default();
    let (mut events, mut last_event, mut first_error) = (0u64, start, None);
    for task in tasks {
        let tally = task.await.context("watch stream task")?;
        latency.merge(&tally.latency);
        events += tally.events;
        last_event = last_event.max(tally.last_event.unwrap_or(start));
        if first_error.is_none() {
            first_error = tally.error;
        }
    }
    let delivery = last_event.saturating_duration_since(start);
    let mut report = Report {
        workload: "watch".into(),
        conns,
        clients: spec.watchers,
        ops: events,
        errors: expected.saturating_sub(events),
        first_error,
        elapsed: delivery,
        latency,
        extra: Default::default(),
    };
    let secs = writer_elapsed.as_secs_f64().max(f64::EPSILON);
    report.extra.insert("watchers".into(), json!(spec.watchers));
    report.extra.insert("prefix".into(), json!(spec.prefix));
    report.extra.insert("streams".into(), json!(streams));
    report.extra.insert("puts".into(), json!(spec.puts));
    report.extra.insert("put_errors".into(), json!(put_errors));
    report
        .extra
        .insert("writer_shares_conn".into(), json!(spec.writer_shares_conn));
    report
        .extra
        .insert("put_qps".into(), json!((spec.puts as f64 / secs).round()));
    report
        .extra
        .insert("put_p50_us".into(), json!(put_latency.quantile_us(0.5)));
    report
        .extra
        .insert("events_expected".into(), json!(expected));
    Ok(report)
}

struct LeaseOp {
    lease: LeaseClient<Channel>,
    keep_alive_tx: mpsc::Sender<LeaseKeepAliveRequest>,
    /// Handed to the stream when it opens, with the first keep-alive queued.
    keep_alive_requests: Option<mpsc::Receiver<LeaseKeepAliveRequest>>,
    keep_alive_rx: Option<Streaming<LeaseKeepAliveResponse>>,
    ttl: i64,
    grant: Latency,
    keep_alive: Latency,
    revoke: Latency,
}

impl LeaseOp {
    fn new(channel: Channel, ttl: i64) -> Self {
        let (keep_alive_tx, rx) = mpsc::channel(1);
        Self {
            lease: LeaseClient::new(channel),
            keep_alive_tx,
            keep_alive_requests: Some(rx),
            keep_alive_rx: None,
            ttl,
            grant: Latency::default(),
            keep_alive: Latency::default(),
            revoke: Latency::default(),
        }
    }

    /// The keep-alive stream, opened on first use: a server may answer the call only
    /// once a request is queued.
    async fn keep_alive_stream(
        &mut self,
    ) -> anyhow::Result<&mut Streaming<LeaseKeepAliveResponse>> {
        if let Some(requests) = self.keep_alive_requests.take() {
            let stream = tokio::time::timeout(
                STREAM_OPEN_TIMEOUT,
                self.lease.lease_keep_alive(ReceiverStream::new(requests)),
            )
            .await
            .context("opening a keep-alive stream timed out")?
            .context("opening a keep-alive stream")?
            .into_inner();
            self.keep_alive_rx = Some(stream);
        }
        self.keep_alive_rx
            .as_mut()
            .context("keep-alive stream failed to open earlier")
    }
}

impl Op for LeaseOp {
    async fn call(&mut self) -> anyhow::Result<()> {
        let t = Instant::now();
        let granted = self
            .lease
            .lease_grant(LeaseGrantRequest {
                ttl: self.ttl,
                id: 0,
            })
            .await?
            .into_inner();
        self.grant.record(t.elapsed());
        if !granted.error.is_empty() {
            bail!("lease grant: {}", granted.error);
        }
        let t = Instant::now();
        self.keep_alive_tx
            .send(LeaseKeepAliveRequest { id: granted.id })
            .await
            .context("keep-alive stream closed")?;
        let renewed = self
            .keep_alive_stream()
            .await?
            .message()
            .await?
            .context("keep-alive stream ended")?;
        self.keep_alive.record(t.elapsed());
        if renewed.ttl <= 0 {
            bail!(
                "keep-alive of lease {:x} answered ttl {}",
                granted.id,
                renewed.ttl
            );
        }
        let t = Instant::now();
        self.lease
            .lease_revoke(LeaseRevokeRequest { id: granted.id })
            .await?;
        self.revoke.record(t.elapsed());
        Ok(())
    }
}

/// Lease life cycles: grant, one keep-alive on the client's stream, revoke. The
/// first report times whole cycles; the others time each step.
pub async fn lease(load: &Load, ttl: i64) -> anyhow::Result<Vec<Report>> {
    let channels = connect(&load.endpoints, load.conns).await?;
    let clients = (0..load.clients.max(1))
        .map(|i| LeaseOp::new(channels[i % channels.len()].clone(), ttl))
        .collect();
    let (mut cycle, clients) = drive(clients, load.stop).await?.report("lease-cycle", load);
    cycle.extra.insert("ttl".into(), json!(ttl));
    let mut reports = vec![];
    type Step = fn(&LeaseOp) -> &Latency;
    let steps: [(&str, Step); 3] = [
        ("lease-grant", |c| &c.grant),
        ("lease-keepalive", |c| &c.keep_alive),
        ("lease-revoke", |c| &c.revoke),
    ];
    for (name, step) in steps {
        let mut latency = Latency::default();
        for c in &clients {
            latency.merge(step(c));
        }
        reports.push(Report {
            workload: name.into(),
            conns: load.conns,
            clients: load.clients,
            ops: latency.count(),
            errors: 0,
            first_error: None,
            elapsed: cycle.elapsed,
            latency,
            extra: Default::default(),
        });
    }
    reports.insert(0, cycle);
    Ok(reports)
}

/// Put latency with and without a large compaction under way: `history` puts over
/// `keys` first (the revisions to compact), then `load` puts twice, the second time
/// with a Compact of the whole history sent as it starts. Two reports:
/// `put-no-compaction` and `put-during-compaction` (with the Compact call's own time).
pub async fn compaction(
    load: &Load,
    keys: KeySpace,
    val_size: usize,
    history: u64,
) -> anyhow::Result<Vec<Report>> {
    let fill = Load {
        endpoints: load.endpoints.clone(),
        conns: load.conns.max(8),
        clients: load.clients.max(64),
        stop: Stop::Total(history),
    };
    let built = put(&fill, keys, val_size).await?;
    eprintln!(
        "wrote {} revisions of history in {:.1}s",
        built.ops,
        built.elapsed.as_secs_f64()
    );
    let mut quiet = put(load, keys, val_size).await?;
    quiet.workload = "put-no-compaction".into();
    let channel = connect(&load.endpoints, 1).await?.remove(0);
    let mut kv = KvClient::new(channel);
    let revision = kv
        .range(RangeRequest {
            key: Bytes::from_static(b"\0"),
            range_end: Bytes::from_static(b"\0"),
            count_only: true,
            ..Default::default()
        })
        .await?
        .into_inner()
        .header
        .map_or(0, |h| h.revision);
    let compact = tokio::spawn(async move {
        let started = Instant::now();
        let result = kv
            .compact(CompactionRequest {
                revision,
                physical: false,
            })
            .await;
        (started.elapsed(), result.map(drop))
    });
    let mut busy = put(load, keys, val_size).await?;
    busy.workload = "put-during-compaction".into();
    let (took, result) = compact.await?;
    result?;
    busy.extra
        .insert("compacted_revision".into(), json!(revision));
    busy.extra
        .insert("compact_call_ms".into(), json!(took.as_secs_f64() * 1000.0));
    Ok(vec![quiet, busy])
}

/// How a [`list`] reads the prefix, as the Kubernetes apiserver does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ListMode {
    /// One Range of the whole prefix.
    Whole,
    /// Pages of `page` keys at the revision of the first page (`limit`, then the next
    /// key after the last one seen, at a fixed `revision`), as the apiserver pages.
    Paged { page: i64 },
    /// `count_only` over the prefix.
    Count,
    /// `keys_only` over the prefix.
    KeysOnly,
    /// One `RangeStream` (etcd 3.7) of the whole prefix, chunk by chunk.
    Stream,
}

impl ListMode {
    pub fn name(self) -> &'static str {
        match self {
            ListMode::Whole => "list-whole",
            ListMode::Paged { .. } => "list-paged",
            ListMode::Count => "list-count",
            ListMode::KeysOnly => "list-keys-only",
            ListMode::Stream => "list-stream",
        }
    }
}

/// The end of the range of keys that start with `prefix` (etcd's prefix end).
fn prefix_end(prefix: &[u8]) -> Bytes {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Bytes::from(end);
        }
    }
    Bytes::from_static(b"\0")
}

struct ListOp {
    kv: KvClient<Channel>,
    prefix: Bytes,
    mode: ListMode,
    /// Keys every whole list must see.
    expected: i64,
}

impl Op for ListOp {
    async fn call(&mut self) -> anyhow::Result<()> {
        let end = prefix_end(&self.prefix);
        let request = |key: Bytes, limit: i64, revision: i64| RangeRequest {
            key,
            range_end: end.clone(),
            limit,
            revision,
            count_only: self.mode == ListMode::Count,
            keys_only: self.mode == ListMode::KeysOnly,
            ..Default::default()
        };
        let seen = match self.mode {
            ListMode::Whole | ListMode::KeysOnly => {
                let resp = self.kv.range(request(self.prefix.clone(), 0, 0)).await?;
                resp.into_inner().kvs.len() as i64
            }
            ListMode::Stream => {
                let mut chunks = self
                    .kv
                    .range_stream(request(self.prefix.clone(), 0, 0))
                    .await?
                    .into_inner();
                let mut seen = 0i64;
                while let Some(chunk) = chunks.message().await? {
                    seen += chunk.range_response.map_or(0, |r| r.kvs.len() as i64);
                }
                seen
            }
            ListMode::Count => {
                self.kv
                    .range(request(self.prefix.clone(), 0, 0))
                    .await?
                    .into_inner()
                    .count
            }
            ListMode::Paged { page } => {
                let mut seen = 0i64;
                let mut key = self.prefix.clone();
                let mut revision = 0;
                loop {
                    let resp = self
                        .kv
                        .range(request(key, page, revision))
                        .await?
                        .into_inner();
                    if revision == 0 {
                        revision = resp.header.as_ref().map_or(0, |h| h.revision);
                    }
                    seen += resp.kvs.len() as i64;
                    let Some(last) = resp.kvs.last() else { break };
                    if !resp.more {
                        break;
                    }
                    let mut next = last.key.to_vec();
                    next.push(0);
                    key = Bytes::from(next);
                }
                seen
            }
        };
        if seen != self.expected {
            bail!(
                "{}: saw {seen} keys, expected {}",
                self.mode.name(),
                self.expected
            );
        }
        Ok(())
    }
}

/// Lists the `keys.space` keys under `keys.prefix` (put beforehand) in `mode`; every
/// operation is one full list and checks it saw every key.
pub async fn list(load: &Load, keys: KeySpace, mode: ListMode) -> anyhow::Result<Report> {
    let channels = connect(&load.endpoints, load.conns).await?;
    let clients = kv_clients(&channels, load.clients)
        .map(|kv| ListOp {
            kv: kv.max_decoding_message_size(usize::MAX),
            prefix: Bytes::from(keys.prefix),
            mode,
            expected: keys.space as i64,
        })
        .collect();
    let (mut report, _) = drive(clients, load.stop).await?.report(mode.name(), load);
    report.extra.insert("keys".into(), json!(keys.space));
    if let ListMode::Paged { page } = mode {
        report.extra.insert("page".into(), json!(page));
    }
    Ok(report)
}
