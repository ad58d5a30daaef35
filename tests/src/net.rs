//! Loopback ports and a minimal HTTP/1.1 client, enough for `/health` and the debug
//! endpoints.

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Mutex;
use std::time::Duration;

/// Ports already handed out by this process: tests of one binary run in
/// parallel threads, and the OS may return a just-released port again.
static HANDED_OUT: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

/// Where [`free_port`] looks: below Linux's default ephemeral range (32768–60999), so
/// no outgoing connection of any process (a member dialing a peer, a client) can take a
/// port between the moment it is handed out and the moment its server binds it. A port
/// the kernel chooses for `bind(0)` lies inside that range and can be stolen that way:
/// a CI run failed on exactly that (`bind proxy port 35355: Address already in use`).
const PORT_RANGE: std::ops::Range<u16> = 20000..32768;

/// A loopback TCP port that was free a moment ago, outside the ephemeral range, and that
/// no other test of this process has been given.
pub fn free_port() -> u16 {
    let span = u32::from(PORT_RANGE.end - PORT_RANGE.start);
    // A per-process starting point (the pid and the clock), then a walk with a stride
    // coprime to the span: parallel test processes start far apart.
    let seed = std::process::id()
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
    let mut guard = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
    let handed = guard.get_or_insert_with(HashSet::new);
    for i in 0..span {
        let offset = (seed.wrapping_add(i.wrapping_mul(7919))) % span;
        let port = PORT_RANGE.start + offset as u16;
        if handed.contains(&port) {
            continue;
        }
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            handed.insert(port);
            return port;
        }
    }
    panic!("no free loopback port in {PORT_RANGE:?}");
}

/// The answer to [`http_get`].
#[derive(Debug, Clone)]
pub struct HttpResponse {
    /// The status code, e.g. 200.
    pub status: u16,
    /// The body, after the blank line (chunked encoding is not decoded).
    pub body: String,
}

/// `GET http://<addr><path>` with `Connection: close` and a short timeout.
pub fn http_get(addr: &str, path: &str) -> std::io::Result<HttpResponse> {
    http_request(addr, "GET", path, "")
}

/// `<method> http://<addr><path>` with `body`, `Connection: close` and a short timeout.
pub fn http_request(
    addr: &str,
    method: &str,
    path: &str,
    body: &str,
) -> std::io::Result<HttpResponse> {
    let timeout = Duration::from_secs(2);
    let sock_addr = addr
        .parse()
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let mut stream = TcpStream::connect_timeout(&sock_addr, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )?;

    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("not an HTTP response: {head:?}"),
            )
        })?;
    Ok(HttpResponse {
        status,
        body: body.to_string(),
    })
}
