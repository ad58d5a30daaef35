//! A TCP proxy in front of one member's peer port, so that a test can cut the raft
//! traffic *to* that member without privileges (no iptables, no network namespaces).
//!
//! Members of a [`Cluster`](crate::Cluster) started with
//! [`Cluster::start_with_proxies`](crate::Cluster::start_with_proxies) advertise their
//! proxy's URL as their peer URL, so every peer dials a member through its proxy.
//! [`Proxy::isolate`] kills the connections the proxy carries and closes every new one
//! as soon as it is accepted: that is an **inbound** cut. The member's own outgoing
//! streams go through the *other* members' proxies and keep flowing, so the partition
//! is asymmetric: an isolated leader still reaches its followers but hears nothing
//! back, and steps down by check-quorum after an election timeout; an isolated
//! follower's (pre-)votes reach the others but their answers never come back.
//!
//! That holds for cairn, whose peer streams are dialed by the sender. The real etcd's
//! rafthttp streams are dialed by the *receiver* (a member pulls its messages from
//! each peer's URL), so against etcd the same cut mostly stops the isolated member's
//! *outgoing* stream traffic (and the pipeline/snapshot posts to it) instead.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::net::free_port;

/// How long the proxy waits to connect to the member behind it.
const UPSTREAM_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// A loopback TCP proxy forwarding to one address, which can be told to cut.
pub struct Proxy {
    port: u16,
    target: SocketAddr,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

#[derive(Default)]
struct Shared {
    /// Guarded together with the connections so that a connection is either
    /// registered before an isolation (and killed by it) or sees the flag.
    state: Mutex<State>,
    stopped: AtomicBool,
    next_id: AtomicU64,
}

#[derive(Default)]
struct State {
    isolated: bool,
    /// Both sockets of every live connection, by id.
    conns: HashMap<u64, (TcpStream, TcpStream)>,
}

impl Proxy {
    /// Starts a proxy on a free loopback port forwarding to `target`.
    pub fn start(target: SocketAddr) -> Proxy {
        let port = free_port();
        let listener = TcpListener::bind(("127.0.0.1", port))
            .unwrap_or_else(|e| panic!("bind proxy port {port}: {e}"));
        let shared = Arc::new(Shared::default());
        let acceptor = {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name(format!("proxy-{port}"))
                .spawn(move || accept_loop(listener, target, shared))
                .expect("spawn proxy thread")
        };
        Proxy {
            port,
            target,
            shared,
            acceptor: Some(acceptor),
        }
    }

    /// `http://127.0.0.1:<proxy port>`: the URL to advertise for the member behind it.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The port the proxy listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Where it forwards to.
    pub fn target(&self) -> SocketAddr {
        self.target
    }

    /// Whether the proxy currently cuts.
    pub fn is_isolated(&self) -> bool {
        self.shared.lock().isolated
    }

    /// Kills every connection it carries and closes new ones at once (an inbound cut).
    pub fn isolate(&self) {
        let conns = {
            let mut state = self.shared.lock();
            state.isolated = true;
            std::mem::take(&mut state.conns)
        };
        for (a, b) in conns.into_values() {
            let _ = a.shutdown(Shutdown::Both);
            let _ = b.shutdown(Shutdown::Both);
        }
    }

    /// Forwards new connections again.
    pub fn heal(&self) {
        self.shared.lock().isolated = false;
    }

    /// Stops accepting, kills every connection and joins the accept thread.
    pub fn stop(&mut self) {
        let Some(acceptor) = self.acceptor.take() else {
            return;
        };
        self.shared.stopped.store(true, Ordering::SeqCst);
        self.isolate();
        // Wake the blocking accept.
        let _ = TcpStream::connect_timeout(
            &SocketAddr::from(([127, 0, 0, 1], self.port)),
            Duration::from_secs(1),
        );
        let _ = acceptor.join();
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn accept_loop(listener: TcpListener, target: SocketAddr, shared: Arc<Shared>) {
    for incoming in listener.incoming() {
        if shared.stopped.load(Ordering::SeqCst) {
            return;
        }
        let Ok(inbound) = incoming else {
            continue;
        };
        if shared.lock().isolated {
            let _ = inbound.shutdown(Shutdown::Both);
            continue;
        }
        let Ok(upstream) = TcpStream::connect_timeout(&target, UPSTREAM_CONNECT_TIMEOUT) else {
            let _ = inbound.shutdown(Shutdown::Both);
            continue;
        };
        let _ = inbound.set_nodelay(true);
        let _ = upstream.set_nodelay(true);
        let id = shared.next_id.fetch_add(1, Ordering::SeqCst);
        let clones = (|| {
            Ok::<_, std::io::Error>((
                inbound.try_clone()?,
                upstream.try_clone()?,
                inbound.try_clone()?,
                upstream.try_clone()?,
            ))
        })();
        let Ok((in_reg, up_reg, in_copy, up_copy)) = clones else {
            continue;
        };
        {
            let mut state = shared.lock();
            if state.isolated {
                let _ = inbound.shutdown(Shutdown::Both);
                let _ = upstream.shutdown(Shutdown::Both);
                continue;
            }
            state.conns.insert(id, (in_reg, up_reg));
        }
        spawn_pipe(Arc::clone(&shared), id, inbound, up_copy);
        spawn_pipe(Arc::clone(&shared), id, upstream, in_copy);
    }
}

/// Copies `from` into `to` until either side ends, then tears the whole connection down.
fn spawn_pipe(shared: Arc<Shared>, id: u64, mut from: TcpStream, mut to: TcpStream) {
    let registry = Arc::clone(&shared);
    let spawned = std::thread::Builder::new()
        .name(format!("proxy-pipe-{id}"))
        .spawn(move || {
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let n = match from.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            let _ = from.shutdown(Shutdown::Both);
            let _ = to.shutdown(Shutdown::Both);
            shared.lock().conns.remove(&id);
        });
    if spawned.is_err() {
        registry.lock().conns.remove(&id);
    }
}
