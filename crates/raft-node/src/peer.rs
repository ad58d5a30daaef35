//! The peer transport over tonic: one long-lived `cairnpb.Peer/Messages` stream per peer
//! with a bounded queue in front, reconnection with backoff, and a separate
//! `cairnpb.Peer/Snapshot` stream (in chunks) for snapshots. The receiving side,
//! [`PeerService`], checks the cluster id and hands messages to the local raft node.

use std::collections::HashMap;
use std::io::Read as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use cairn_proto::cairnpb::peer_client::PeerClient;
use cairn_proto::cairnpb::peer_server::{Peer, PeerServer};
use cairn_proto::cairnpb::{PeerAck, RaftMessages, SnapshotChunk};
use crossbeam_channel::{Receiver, Sender};
use parking_lot::{Mutex, RwLock};
use protobuf::Message as _;
use raft::eraftpb::{Message, MessageType};
use tokio::io::AsyncWriteExt as _;
use tokio::runtime::Handle;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Response, Status, Streaming};

use crate::error::RaftError;
use crate::handle::RaftHandle;
use crate::transport::{PeerEvent, SnapshotData, Transport};
use crate::wire;

/// Messages queued for one peer before new ones are dropped (raft retransmits).
const QUEUE_LEN: usize = 4096;
/// Largest batch of raft messages in one stream item.
const MAX_BATCH_BYTES: usize = 4 * 1024 * 1024;
/// Snapshot chunk size.
const SNAPSHOT_CHUNK: usize = 256 * 1024;
/// Largest message a peer stream accepts.
pub const MAX_PEER_MESSAGE: usize = 512 * 1024 * 1024;
const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(1);
/// How a receiver words its refusal of a stream older than one it has seen; the newest
/// stream id follows, so that a sender whose clock went back (a restart) can move past it.
const SUPERSEDED: &str = "stream superseded by stream ";

/// The last stream id this process gave out.
static LAST_STREAM_ID: AtomicU64 = AtomicU64::new(0);

/// A stream id greater than every one this process gave out before, and (taken from the
/// wall clock in nanoseconds) normally greater than those of its earlier lives.
fn next_stream_id() -> u64 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let mut last = LAST_STREAM_ID.load(Ordering::Acquire);
    loop {
        let next = now.max(last + 1);
        match LAST_STREAM_ID.compare_exchange(last, next, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => return next,
            Err(seen) => last = seen,
        }
    }
}

/// Makes every later stream id greater than `id` (a peer has seen one that high).
fn advance_stream_ids(id: u64) {
    LAST_STREAM_ID.fetch_max(id, Ordering::AcqRel);
}

/// Where each peer is reached, shared by the application (which follows membership) and
/// the transport. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct PeerUrls(Arc<RwLock<HashMap<u64, Vec<String>>>>);

impl PeerUrls {
    /// Sets (or replaces) the URLs of member `id`.
    pub fn set(&self, id: u64, urls: Vec<String>) {
        self.0.write().insert(id, urls);
    }

    /// Forgets member `id`.
    pub fn remove(&self, id: u64) {
        self.0.write().remove(&id);
    }

    /// The URLs of member `id`.
    pub fn get(&self, id: u64) -> Option<Vec<String>> {
        self.0.read().get(&id).cloned()
    }
}

struct PeerQueue {
    urls: Vec<String>,
    tx: mpsc::Sender<Message>,
    unreachable_reported: bool,
}

/// The [`Transport`] of a member with peers.
pub struct PeerTransport {
    cluster_id: u64,
    member_id: u64,
    runtime: Handle,
    urls: PeerUrls,
    tls: Option<Arc<rustls::ClientConfig>>,
    queues: HashMap<u64, PeerQueue>,
    events_tx: Sender<PeerEvent>,
    events_rx: Receiver<PeerEvent>,
}

impl PeerTransport {
    /// A transport for member `member_id` of cluster `cluster_id`, running its streams on
    /// `runtime`, reaching peers at `urls`.
    pub fn new(cluster_id: u64, member_id: u64, runtime: Handle, urls: PeerUrls) -> Self {
        let (events_tx, events_rx) = crossbeam_channel::unbounded();
        PeerTransport {
            cluster_id,
            member_id,
            runtime,
            urls,
            tls: None,
            queues: HashMap::new(),
            events_tx,
            events_rx,
        }
    }

    /// The queue to member `to`, (re)starting its stream when its URLs changed or the
    /// stream ended; `None` without URLs. The URLs are cloned only to start a stream.
    fn queue(&mut self, to: u64) -> Option<&mut PeerQueue> {
        let restart = {
            let urls = self.urls.0.read();
            let Some(current) = urls.get(&to).filter(|u| !u.is_empty()) else {
                drop(urls);
                self.queues.remove(&to);
                return None;
            };
            self.queues
                .get(&to)
                .is_none_or(|q| q.urls != *current || q.tx.is_closed())
                .then(|| current.clone())
        };
        if let Some(urls) = restart {
            let (tx, rx) = mpsc::channel(QUEUE_LEN);
            let stream = PeerStream {
                cluster_id: self.cluster_id,
                from: self.member_id,
                to,
                urls: urls.clone(),
                events: self.events_tx.clone(),
                tls: self.tls.clone(),
            };
            self.runtime.spawn(stream.run(rx));
            self.queues.insert(
                to,
                PeerQueue {
                    urls,
                    tx,
                    unreachable_reported: false,
                },
            );
        }
        self.queues.get_mut(&to)
    }
}

impl Transport for PeerTransport {
    fn send(&mut self, msgs: Vec<Message>) {
        for msg in msgs {
            let to = msg.to;
            let Some(queue) = self.queue(to) else {
                tracing::debug!(to = %format!("{to:x}"), "no URL for a peer; message dropped");
                continue;
            };
            match queue.tx.try_send(msg) {
                Ok(()) => queue.unreachable_reported = false,
                Err(_) if !queue.unreachable_reported => {
                    queue.unreachable_reported = true;
                    tracing::warn!(to = %format!("{to:x}"), "peer queue full; dropping raft messages");
                    let _ = self.events_tx.send(PeerEvent::Unreachable(to));
                }
                Err(_) => {}
            }
        }
    }

    fn send_snapshot(&mut self, msg: Message, data: SnapshotData) -> bool {
        let to = msg.to;
        let Some(urls) = self.urls.get(to).filter(|u| !u.is_empty()) else {
            return false;
        };
        let sender = SnapshotSender {
            cluster_id: self.cluster_id,
            from: self.member_id,
            to,
            url: urls[0].clone(),
            events: self.events_tx.clone(),
            tls: self.tls.clone(),
        };
        self.runtime.spawn(sender.run(msg, data));
        true
    }

    fn poll_events(&mut self) -> Vec<PeerEvent> {
        self.events_rx.try_iter().collect()
    }
}

impl PeerTransport {
    /// Dials `https://` peers with this TLS configuration (the peer CA as roots, this
    /// member's peer certificate as its client certificate).
    pub fn with_tls(mut self, config: Arc<rustls::ClientConfig>) -> Self {
        self.tls = Some(config);
        self
    }
}

/// A channel to `url`: over TLS with `tls` when the URL is `https://`.
pub async fn connect(
    url: &str,
    tls: Option<&Arc<rustls::ClientConfig>>,
) -> Result<Channel, String> {
    let ep = endpoint(url).map_err(|e| e.to_string())?;
    match tls_connector(url, tls)? {
        None => ep.connect().await.map_err(|e| e.to_string()),
        Some(connector) => ep
            .connect_with_connector(connector)
            .await
            .map_err(|e| e.to_string()),
    }
}

/// Like [`connect`], connecting at the first call (for channels kept for later).
pub fn connect_lazy(url: &str, tls: Option<&Arc<rustls::ClientConfig>>) -> Result<Channel, String> {
    let ep = endpoint(url).map_err(|e| e.to_string())?;
    Ok(match tls_connector(url, tls)? {
        None => ep.connect_lazy(),
        Some(connector) => ep.connect_with_connector_lazy(connector),
    })
}

/// A TLS connector for an `https://` URL (none for plain `http://`).
#[allow(clippy::type_complexity)]
fn tls_connector(
    url: &str,
    tls: Option<&Arc<rustls::ClientConfig>>,
) -> Result<
    Option<
        impl tower::Service<
                tonic::codegen::http::Uri,
                Response = hyper_util::rt::TokioIo<
                    tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
                >,
                Error = std::io::Error,
                Future = impl Send,
            > + Clone
            + Send
            + 'static,
    >,
    String,
> {
    if !url.starts_with("https://") {
        return Ok(None);
    }
    let Some(config) = tls.cloned() else {
        return Err(format!("{url}: https:// URL without a TLS configuration"));
    };
    Ok(Some(tower::service_fn(
        move |uri: tonic::codegen::http::Uri| {
            let config = config.clone();
            async move {
                let host = uri
                    .host()
                    .ok_or_else(|| std::io::Error::other("URL without a host"))?
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .to_string();
                let port = uri.port_u16().unwrap_or(443);
                let tcp = tokio::net::TcpStream::connect((host.as_str(), port)).await?;
                tcp.set_nodelay(true)?;
                let name = rustls::pki_types::ServerName::try_from(host)
                    .map_err(|e| std::io::Error::other(e.to_string()))?;
                let stream = tokio_rustls::TlsConnector::from(config)
                    .connect(name, tcp)
                    .await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
            }
        },
    )))
}

fn endpoint(url: &str) -> Result<Endpoint, tonic::transport::Error> {
    Ok(Endpoint::from_shared(url.to_string())?
        .connect_timeout(Duration::from_secs(1))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(1))
        .keep_alive_timeout(Duration::from_secs(3))
        .keep_alive_while_idle(true))
}

fn client(channel: Channel) -> PeerClient<Channel> {
    PeerClient::new(channel)
        .max_decoding_message_size(MAX_PEER_MESSAGE)
        .max_encoding_message_size(MAX_PEER_MESSAGE)
}

struct PeerStream {
    cluster_id: u64,
    from: u64,
    to: u64,
    urls: Vec<String>,
    events: Sender<PeerEvent>,
    tls: Option<Arc<rustls::ClientConfig>>,
}

impl PeerStream {
    async fn run(self, mut rx: mpsc::Receiver<Message>) {
        let mut backoff = BACKOFF_MIN;
        let mut attempt = 0usize;
        loop {
            let url = &self.urls[attempt % self.urls.len()];
            attempt += 1;
            match self.stream_to(url, &mut rx).await {
                StreamEnd::Closed => return,
                StreamEnd::Failed(why) => {
                    metrics::counter!(
                        crate::metrics::PEER_SENT_FAILURES_TOTAL,
                        "To" => crate::metrics::peer_label(self.to)
                    )
                    .increment(1);
                    tracing::debug!(to = %format!("{:x}", self.to), %url, %why, "peer stream failed");
                    let _ = self.events.send(PeerEvent::Unreachable(self.to));
                }
                StreamEnd::Superseded(newest) => {
                    // Only an earlier life of this process can have opened that stream:
                    // move past it and reconnect at once.
                    tracing::warn!(to = %format!("{:x}", self.to), newest, "peer has seen a newer stream from this member; renumbering");
                    advance_stream_ids(newest);
                    continue;
                }
                StreamEnd::Refused(why) => {
                    metrics::counter!(
                        crate::metrics::PEER_SENT_FAILURES_TOTAL,
                        "To" => crate::metrics::peer_label(self.to)
                    )
                    .increment(1);
                    tracing::error!(to = %format!("{:x}", self.to), %url, %why, "peer refused our stream");
                    let _ = self.events.send(PeerEvent::Unreachable(self.to));
                    backoff = BACKOFF_MAX;
                }
            }
            // Messages queued while disconnected are stale; raft sends what is needed again.
            while rx.try_recv().is_ok() {}
            if rx.is_closed() {
                return;
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }

    async fn stream_to(&self, url: &str, rx: &mut mpsc::Receiver<Message>) -> StreamEnd {
        if let Err(e) = endpoint(url) {
            return StreamEnd::Refused(format!("bad peer URL: {e}"));
        }
        let channel = match connect(url, self.tls.as_ref()).await {
            Ok(c) => c,
            Err(e) => return StreamEnd::Failed(e),
        };
        let stream_id = next_stream_id();
        let sent_bytes = metrics::counter!(
            crate::metrics::PEER_SENT_BYTES_TOTAL,
            "To" => crate::metrics::peer_label(self.to)
        );
        let (batch_tx, batch_rx) = mpsc::channel::<RaftMessages>(16);
        let mut client = client(channel);
        let mut call = tokio::spawn(async move {
            client
                .messages(Request::new(ReceiverStream::new(batch_rx)))
                .await
        });
        loop {
            tokio::select! {
                biased;
                ended = &mut call => {
                    return match ended {
                        Ok(Ok(_)) => StreamEnd::Failed("stream closed by the peer".into()),
                        Ok(Err(status)) if status.code() == tonic::Code::FailedPrecondition => {
                            match status.message().strip_prefix(SUPERSEDED).map(str::parse) {
                                Some(Ok(newest)) => StreamEnd::Superseded(newest),
                                _ => StreamEnd::Refused(status.message().to_string()),
                            }
                        }
                        Ok(Err(status)) => StreamEnd::Failed(status.to_string()),
                        Err(e) => StreamEnd::Failed(e.to_string()),
                    };
                }
                first = rx.recv() => {
                    let Some(first) = first else {
                        call.abort();
                        return StreamEnd::Closed;
                    };
                    let mut size = 0;
                    let mut messages = Vec::new();
                    let mut next = Some(first);
                    while let Some(msg) = next.take() {
                        match msg.write_to_bytes() {
                            Ok(b) => {
                                size += b.len();
                                messages.push(Bytes::from(b));
                            }
                            Err(e) => tracing::error!(error = %e, "cannot encode a raft message"),
                        }
                        if size < MAX_BATCH_BYTES {
                            next = rx.try_recv().ok();
                        }
                    }
                    let batch = RaftMessages {
                        cluster_id: self.cluster_id,
                        from: self.from,
                        to: self.to,
                        messages,
                        stream_id,
                    };
                    if batch_tx.send(batch).await.is_err() {
                        // The call ended; its result says why.
                        continue;
                    }
                    sent_bytes.increment(size as u64);
                }
            }
        }
    }
}

enum StreamEnd {
    /// The transport was dropped: stop.
    Closed,
    /// Connection or stream failure: retry with backoff.
    Failed(String),
    /// The peer refused us (e.g. another cluster): retry slowly.
    Refused(String),
    /// The peer has seen a newer stream from this member (the id given).
    Superseded(u64),
}

struct SnapshotSender {
    cluster_id: u64,
    from: u64,
    to: u64,
    url: String,
    events: Sender<PeerEvent>,
    tls: Option<Arc<rustls::ClientConfig>>,
}

impl SnapshotSender {
    async fn run(self, msg: Message, data: SnapshotData) {
        let to = self.to;
        let index = msg.get_snapshot().get_metadata().index;
        let result = self.send(msg, data).await;
        let ok = match result {
            Ok(bytes) => {
                tracing::info!(to = %format!("{to:x}"), index, bytes, "snapshot sent");
                true
            }
            Err(e) => {
                tracing::warn!(to = %format!("{to:x}"), index, error = %e, "sending a snapshot failed");
                false
            }
        };
        let _ = self.events.send(PeerEvent::SnapshotSent { to, ok });
    }

    async fn send(&self, msg: Message, mut data: SnapshotData) -> Result<u64, String> {
        let message = msg.write_to_bytes().map_err(|e| e.to_string())?;
        let channel = connect(&self.url, self.tls.as_ref()).await?;
        let (tx, rx) = mpsc::channel::<SnapshotChunk>(4);
        let header = SnapshotChunk {
            cluster_id: self.cluster_id,
            from: self.from,
            to: self.to,
            message: message.into(),
            data: Bytes::new(),
        };
        tx.send(header).await.map_err(|e| e.to_string())?;
        // The snapshot is read on a blocking thread, one chunk at a time.
        let reader = tokio::task::spawn_blocking(move || -> Result<u64, String> {
            let mut total = 0u64;
            loop {
                let mut buf = vec![0u8; SNAPSHOT_CHUNK];
                let mut filled = 0;
                while filled < buf.len() {
                    let n = data
                        .read(&mut buf[filled..])
                        .map_err(|e| format!("reading the snapshot: {e}"))?;
                    if n == 0 {
                        break;
                    }
                    filled += n;
                }
                if filled == 0 {
                    return Ok(total);
                }
                buf.truncate(filled);
                total += filled as u64;
                let chunk = SnapshotChunk {
                    data: buf.into(),
                    ..Default::default()
                };
                if tx.blocking_send(chunk).is_err() {
                    return Err("the snapshot stream closed early".into());
                }
            }
        });
        let mut client = client(channel);
        let call = client.snapshot(Request::new(ReceiverStream::new(rx)));
        let (sent, answer) = tokio::join!(reader, call);
        let total = sent.map_err(|e| e.to_string())??;
        answer.map_err(|s| s.to_string())?;
        Ok(total)
    }
}

/// The receiving side of the peer transport for the raft node `raft`.
///
/// Only the newest stream of each sender is heard: once a batch of a newer stream arrives,
/// whatever still arrives on older ones is refused. A sender opens a new stream only after
/// giving up on the previous one, but the bytes it wrote there may still be in the network
/// (a blackholed connection delivers them when it heals) and would reach raft long after
/// the sender moved on — a proposal among them could be appended to the log again.
pub struct PeerService<O> {
    raft: RaftHandle<O>,
    cluster_id: u64,
    member_id: u64,
    snapshot_dir: PathBuf,
    /// The newest stream id seen from each member.
    newest: Arc<Mutex<HashMap<u64, u64>>>,
}

impl<O: Send + 'static> PeerService<O> {
    /// Serves member `member_id` of cluster `cluster_id`; incoming snapshots are staged in
    /// `snapshot_dir`.
    pub fn new(
        raft: RaftHandle<O>,
        cluster_id: u64,
        member_id: u64,
        snapshot_dir: PathBuf,
    ) -> Self {
        PeerService {
            raft,
            cluster_id,
            member_id,
            snapshot_dir,
            newest: Arc::default(),
        }
    }

    /// The tonic service, with limits sized for raft traffic.
    pub fn into_server(self) -> PeerServer<Self> {
        PeerServer::new(self)
            .max_decoding_message_size(MAX_PEER_MESSAGE)
            .max_encoding_message_size(MAX_PEER_MESSAGE)
    }

    fn check(&self, cluster_id: u64, to: u64) -> Result<(), Status> {
        if cluster_id != self.cluster_id {
            return Err(Status::failed_precondition(format!(
                "request cluster ID mismatch (got {cluster_id:x}, want {:x})",
                self.cluster_id
            )));
        }
        if to != self.member_id {
            return Err(Status::failed_precondition(format!(
                "request is for member {to:x}, this is member {:x}",
                self.member_id
            )));
        }
        Ok(())
    }
}

#[tonic::async_trait]
impl<O: Send + 'static> Peer for PeerService<O> {
    async fn messages(
        &self,
        request: Request<Streaming<RaftMessages>>,
    ) -> Result<Response<PeerAck>, Status> {
        let mut stream = request.into_inner();
        let mut received: Option<(u64, metrics::Counter)> = None;
        loop {
            let batch = match stream.message().await {
                Ok(Some(batch)) => batch,
                Ok(None) => break,
                Err(status) => {
                    if let Some((from, _)) = &received {
                        metrics::counter!(
                            crate::metrics::PEER_RECEIVED_FAILURES_TOTAL,
                            "From" => crate::metrics::peer_label(*from)
                        )
                        .increment(1);
                    }
                    return Err(status);
                }
            };
            self.check(batch.cluster_id, batch.to)?;
            let bytes: usize = batch.messages.iter().map(|m| m.len()).sum();
            match &received {
                Some((from, counter)) if *from == batch.from => counter.increment(bytes as u64),
                _ => {
                    let counter = metrics::counter!(
                        crate::metrics::PEER_RECEIVED_BYTES_TOTAL,
                        "From" => crate::metrics::peer_label(batch.from)
                    );
                    counter.increment(bytes as u64);
                    received = Some((batch.from, counter));
                }
            }
            // Held while the batch is handed to raft, so that no batch of an older stream
            // slips in after one of a newer stream.
            let mut newest = self.newest.lock();
            let seen = newest.entry(batch.from).or_insert(0);
            if batch.stream_id < *seen {
                metrics::counter!(crate::metrics::PEER_STALE_BATCHES_TOTAL).increment(1);
                tracing::info!(
                    from = %format!("{:x}", batch.from),
                    stream = batch.stream_id,
                    newest = *seen,
                    "dropping raft messages of a stream the sender replaced"
                );
                return Err(Status::failed_precondition(format!("{SUPERSEDED}{seen}")));
            }
            *seen = batch.stream_id;
            for bytes in &batch.messages {
                let msg = wire::parse_message(bytes)
                    .map_err(|e| Status::invalid_argument(format!("bad raft message: {e}")))?;
                if msg.get_msg_type() == MessageType::MsgSnapshot {
                    // Snapshots come with their data on the snapshot stream only.
                    continue;
                }
                match self.raft.step(msg) {
                    Ok(()) => {}
                    // raft retransmits what a full queue drops.
                    Err(RaftError::TooManyRequests) => {
                        metrics::counter!(crate::metrics::PEER_DROPPED_MESSAGES_TOTAL).increment(1);
                    }
                    Err(_) => return Err(Status::unavailable("raft node stopped")),
                }
            }
        }
        Ok(Response::new(PeerAck {}))
    }

    async fn snapshot(
        &self,
        request: Request<Streaming<SnapshotChunk>>,
    ) -> Result<Response<PeerAck>, Status> {
        let mut stream = request.into_inner();
        let Some(first) = stream.message().await? else {
            return Err(Status::invalid_argument("empty snapshot stream"));
        };
        self.check(first.cluster_id, first.to)?;
        let msg = wire::parse_message(&first.message)
            .map_err(|e| Status::invalid_argument(format!("bad snapshot message: {e}")))?;
        let meta = msg.get_snapshot().get_metadata();
        let internal = |e: std::io::Error| Status::internal(format!("staging a snapshot: {e}"));
        tokio::fs::create_dir_all(&self.snapshot_dir)
            .await
            .map_err(internal)?;
        let name = format!("{:016x}-{:016x}.snap", meta.term, meta.index);
        let part = self.snapshot_dir.join(format!("{name}.part"));
        let path = self.snapshot_dir.join(name);
        let mut file = tokio::fs::File::create(&part).await.map_err(internal)?;
        let mut received = 0u64;
        let written: Result<(), Status> = async {
            file.write_all(&first.data).await.map_err(internal)?;
            while let Some(chunk) = stream.message().await? {
                received += chunk.data.len() as u64;
                file.write_all(&chunk.data).await.map_err(internal)?;
            }
            file.sync_all().await.map_err(internal)?;
            Ok(())
        }
        .await;
        drop(file);
        if let Err(e) = written {
            let _ = tokio::fs::remove_file(&part).await;
            return Err(e);
        }
        tokio::fs::rename(&part, &path).await.map_err(internal)?;
        tracing::info!(
            from = %format!("{:x}", first.from),
            index = meta.index,
            bytes = received,
            "received a snapshot"
        );
        self.raft
            .step_snapshot(msg, path)
            .map_err(|_| Status::unavailable("raft node stopped"))?;
        Ok(Response::new(PeerAck {}))
    }
}
