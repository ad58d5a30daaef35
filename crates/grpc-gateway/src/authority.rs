//! Tolerance for the `:authority` some etcd clients send.
//!
//! grpc-go clients dialled with a URL as the target (etcdctl 3.4 with
//! `--endpoints=http://host:port`, several clientv3 releases) send the whole URL as the
//! HTTP/2 `:authority`, e.g. `http://127.0.0.1:2379`. grpc-go servers accept it; the `h2`
//! crate under tonic refuses the stream with `PROTOCOL_ERROR`. This wrapper sits between
//! the socket and the HTTP/2 server: it reads the client's frames, decodes every header
//! block, replaces a URL-shaped authority by its `host:port`, and re-encodes the block as
//! literals without indexing (so the server's HPACK table stays empty and in step).
//! Other frames pass through untouched; HTTP/1 connections are not looked at. A connection
//! whose first header block needs no fix is passed through from then on: decoding every
//! block costs about a fifth of the server's CPU under load.
//!
//! Every client's first header block goes through the HPACK decoder here, so a malformed
//! block must end in an error, never a panic: before anything was rewritten the block is
//! handed to the server unchanged (its own decoder refuses it and closes the connection
//! with `COMPRESSION_ERROR`); after a rewrite the server's HPACK table no longer follows
//! the client's, so the filter fails the connection itself ([`io::ErrorKind::InvalidData`]).
//! Only the client port needs this: members talk to each other with a valid authority.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, BufMut, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const FRAME_HEADER_LEN: usize = 9;
const TYPE_HEADERS: u8 = 0x1;
const TYPE_CONTINUATION: u8 = 0x9;
const FLAG_END_STREAM: u8 = 0x1;
const FLAG_END_HEADERS: u8 = 0x4;
const FLAG_PADDED: u8 = 0x8;
const FLAG_PRIORITY: u8 = 0x20;
/// The HTTP/2 default SETTINGS_MAX_FRAME_SIZE, which the server keeps.
const MAX_FRAME_PAYLOAD: usize = 16_384;
/// A header block larger than this is not buffered: the connection is passed through.
const MAX_HEADER_BLOCK: usize = 1 << 20;
/// The HPACK dynamic table size the server allows (HTTP/2's default, which tonic keeps): a
/// client's table size update above it is an error for the server too.
const MAX_HPACK_TABLE: usize = 4096;

#[derive(Debug, PartialEq, Eq)]
enum Mode {
    /// Waiting to see whether the client speaks HTTP/2 with prior knowledge.
    Preface,
    /// Rewriting HTTP/2 header blocks.
    Frames,
    /// Not HTTP/2, or something this filter does not understand: bytes pass unchanged.
    Passthrough,
}

struct PendingHeaders {
    stream_id: [u8; 4],
    flags: u8,
    priority: Option<[u8; 5]>,
    block: Vec<u8>,
}

/// An I/O stream whose incoming HTTP/2 header blocks get a well-formed `:authority`.
pub struct AuthorityFix<IO> {
    io: IO,
    mode: Mode,
    raw: BytesMut,
    out: BytesMut,
    decoder: loona_hpack::Decoder<'static>,
    pending: Option<PendingHeaders>,
    /// Whether a header block was re-encoded: from then on every block must be (the
    /// server's HPACK table no longer follows the client's).
    rewritten: bool,
    /// Why the connection cannot go on; reported once `out` is drained.
    failed: Option<String>,
    eof: bool,
}

impl<IO> AuthorityFix<IO> {
    /// Wraps a freshly accepted connection.
    pub fn new(io: IO) -> Self {
        AuthorityFix {
            io,
            mode: Mode::Preface,
            raw: BytesMut::with_capacity(8 * 1024),
            out: BytesMut::new(),
            decoder: new_decoder(),
            pending: None,
            rewritten: false,
            failed: None,
            eof: false,
        }
    }

    /// Wraps a connection whose bytes pass unchanged, nothing decoded (a member's
    /// connection on the peer port).
    pub fn passthrough(io: IO) -> Self {
        AuthorityFix {
            mode: Mode::Passthrough,
            ..AuthorityFix::new(io)
        }
    }

    /// The wrapped stream.
    pub fn get_ref(&self) -> &IO {
        &self.io
    }

    /// Hands the rest of the connection to the server unchanged; after a rewrite that
    /// would make the server read the client's blocks against a table it never had, so the
    /// connection fails instead.
    fn pass_through(&mut self) {
        if self.rewritten {
            self.fail(
                "HTTP/2 frames the filter cannot follow after a rewritten header block".into(),
            );
            return;
        }
        self.mode = Mode::Passthrough;
        if let Some(p) = self.pending.take() {
            // Cannot happen with a well-behaved client; give the server what we had.
            tracing::debug!(len = p.block.len(), "dropping an unfinished header block");
        }
        let raw = self.raw.split();
        self.out.extend_from_slice(&raw);
    }

    /// [`Self::pass_through`] starting with `frame`, already taken from `raw`.
    fn pass_through_from(&mut self, frame: &[u8]) {
        if !self.rewritten {
            self.out.extend_from_slice(frame);
        }
        self.pass_through();
    }

    /// Stops filtering: what was already produced is delivered, then the read fails.
    fn fail(&mut self, why: String) {
        self.mode = Mode::Passthrough;
        self.pending = None;
        self.raw.clear();
        self.failed = Some(why);
    }

    fn process(&mut self) {
        if self.mode == Mode::Preface {
            let n = self.raw.len().min(PREFACE.len());
            if self.raw[..n] != PREFACE[..n] {
                self.pass_through();
                return;
            }
            if n < PREFACE.len() {
                return;
            }
            let preface = self.raw.split_to(PREFACE.len());
            self.out.extend_from_slice(&preface);
            self.mode = Mode::Frames;
        }
        while self.mode == Mode::Frames && self.raw.len() >= FRAME_HEADER_LEN {
            let len = u32::from_be_bytes([0, self.raw[0], self.raw[1], self.raw[2]]) as usize;
            if self.raw.len() < FRAME_HEADER_LEN + len {
                if len > MAX_HEADER_BLOCK {
                    self.pass_through();
                }
                return;
            }
            let frame = self.raw.split_to(FRAME_HEADER_LEN + len);
            let (ty, flags) = (frame[3], frame[4]);
            let stream_id = [frame[5], frame[6], frame[7], frame[8]];
            let payload = &frame[FRAME_HEADER_LEN..];
            match ty {
                TYPE_HEADERS => {
                    if self.pending.is_some() {
                        self.pass_through_from(&frame);
                        return;
                    }
                    let Some((priority, fragment)) = split_headers_payload(flags, payload) else {
                        self.pass_through_from(&frame);
                        return;
                    };
                    self.pending = Some(PendingHeaders {
                        stream_id,
                        flags,
                        priority,
                        block: fragment.to_vec(),
                    });
                    if flags & FLAG_END_HEADERS != 0 {
                        self.finish_headers();
                    }
                }
                TYPE_CONTINUATION if self.pending.is_some() => {
                    if let Some(p) = self.pending.as_mut() {
                        p.block.extend_from_slice(payload);
                        if p.block.len() > MAX_HEADER_BLOCK {
                            self.pass_through();
                            return;
                        }
                    }
                    if flags & FLAG_END_HEADERS != 0 {
                        self.finish_headers();
                    }
                }
                _ => self.out.extend_from_slice(&frame),
            }
        }
    }

    fn finish_headers(&mut self) {
        let Some(p) = self.pending.take() else { return };
        let headers = match self.decoder.decode(&p.block) {
            Ok(h) => h,
            Err(e) if !self.rewritten => {
                // The server's decoder, in the same state as ours, refuses it too and
                // closes the connection with COMPRESSION_ERROR; let it say so.
                tracing::debug!(error = %e, "undecodable header block; passing the connection through");
                emit_headers(&mut self.out, &p, &p.block);
                self.pass_through();
                return;
            }
            Err(e) => {
                // The server's table no longer follows the client's: it would read the
                // block against the wrong entries.
                tracing::debug!(error = %e, "undecodable header block after a rewrite; closing");
                self.fail(format!("undecodable HTTP/2 header block: {e}"));
                return;
            }
        };
        let needs_fix = headers.iter().any(|(name, value)| {
            name.as_slice() == b":authority" && fix_authority(value).as_deref() != Some(value)
        });
        if !needs_fix && !self.rewritten {
            // A client that sends a well-formed authority on its first request does so on
            // every request of the connection (one authority per channel): the block and
            // all that follows pass unchanged, and HPACK decoding (costly) stops here.
            emit_headers(&mut self.out, &p, &p.block);
            self.pass_through();
            return;
        }
        self.rewritten = true;
        let mut block = Vec::with_capacity(p.block.len() + 32);
        for (name, value) in &headers {
            if name.as_slice() == b":authority" {
                match fix_authority(value) {
                    Some(v) => encode_literal(&mut block, name, &v),
                    None => continue,
                }
            } else {
                encode_literal(&mut block, name, value);
            }
        }
        emit_headers(&mut self.out, &p, &block);
    }
}

fn new_decoder() -> loona_hpack::Decoder<'static> {
    let mut decoder = loona_hpack::Decoder::new();
    decoder.set_max_allowed_table_size(MAX_HPACK_TABLE);
    decoder
}

/// Splits a HEADERS payload into its priority fields and header block fragment.
fn split_headers_payload(flags: u8, payload: &[u8]) -> Option<(Option<[u8; 5]>, &[u8])> {
    let mut p = payload;
    let mut pad = 0usize;
    if flags & FLAG_PADDED != 0 {
        pad = *p.first()? as usize;
        p = &p[1..];
    }
    let mut priority = None;
    if flags & FLAG_PRIORITY != 0 {
        if p.len() < 5 {
            return None;
        }
        priority = Some([p[0], p[1], p[2], p[3], p[4]]);
        p = &p[5..];
    }
    if pad > p.len() {
        return None;
    }
    Some((priority, &p[..p.len() - pad]))
}

/// Writes a HEADERS frame (and CONTINUATION frames if needed) carrying `block`.
fn emit_headers(out: &mut BytesMut, p: &PendingHeaders, block: &[u8]) {
    let prio_len = if p.priority.is_some() { 5 } else { 0 };
    let first_room = MAX_FRAME_PAYLOAD - prio_len;
    let (first, mut rest) = block.split_at(block.len().min(first_room));
    let mut flags = p.flags & (FLAG_END_STREAM | FLAG_PRIORITY);
    if rest.is_empty() {
        flags |= FLAG_END_HEADERS;
    }
    put_frame_header(
        out,
        prio_len + first.len(),
        TYPE_HEADERS,
        flags,
        p.stream_id,
    );
    if let Some(prio) = p.priority {
        out.put_slice(&prio);
    }
    out.put_slice(first);
    while !rest.is_empty() {
        let (chunk, tail) = rest.split_at(rest.len().min(MAX_FRAME_PAYLOAD));
        let flags = if tail.is_empty() { FLAG_END_HEADERS } else { 0 };
        put_frame_header(out, chunk.len(), TYPE_CONTINUATION, flags, p.stream_id);
        out.put_slice(chunk);
        rest = tail;
    }
}

fn put_frame_header(out: &mut BytesMut, len: usize, ty: u8, flags: u8, stream_id: [u8; 4]) {
    let len = len as u32;
    out.put_slice(&len.to_be_bytes()[1..]);
    out.put_u8(ty);
    out.put_u8(flags);
    out.put_slice(&stream_id);
}

/// HPACK integer with an `prefix_bits`-bit prefix; `first` holds the pattern bits.
fn encode_int(out: &mut Vec<u8>, mut value: usize, prefix_bits: u8, first: u8) {
    let max = (1usize << prefix_bits) - 1;
    if value < max {
        out.push(first | value as u8);
        return;
    }
    out.push(first | max as u8);
    value -= max;
    while value >= 128 {
        out.push((value % 128) as u8 | 0x80);
        value /= 128;
    }
    out.push(value as u8);
}

/// A "literal header field without indexing — new name", strings not Huffman-coded.
fn encode_literal(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.push(0x00);
    encode_int(out, name.len(), 7, 0);
    out.extend_from_slice(name);
    encode_int(out, value.len(), 7, 0);
    out.extend_from_slice(value);
}

/// `http://host:port[/...]` -> `host:port`; a valid authority is kept; `None` drops it.
fn fix_authority(value: &[u8]) -> Option<Vec<u8>> {
    let valid = |v: &[u8]| !v.is_empty() && http::uri::Authority::try_from(v).is_ok();
    if valid(value) {
        return Some(value.to_vec());
    }
    let text = std::str::from_utf8(value).ok()?;
    let after_scheme = text.rsplit("://").next()?;
    let host = after_scheme.split('/').next()?;
    valid(host.as_bytes()).then(|| host.as_bytes().to_vec())
}

impl<IO: AsyncRead + Unpin> AsyncRead for AuthorityFix<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if !this.out.is_empty() {
                let n = this.out.len().min(buf.remaining());
                buf.put_slice(&this.out[..n]);
                this.out.advance(n);
                return Poll::Ready(Ok(()));
            }
            if let Some(why) = &this.failed {
                return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, why.clone())));
            }
            if this.eof {
                return Poll::Ready(Ok(()));
            }
            if this.mode == Mode::Passthrough && this.raw.is_empty() {
                return Pin::new(&mut this.io).poll_read(cx, buf);
            }
            let mut chunk = [0u8; 16 * 1024];
            let mut rb = ReadBuf::new(&mut chunk);
            match Pin::new(&mut this.io).poll_read(cx, &mut rb) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(())) => {
                    let filled = rb.filled();
                    if filled.is_empty() {
                        this.eof = true;
                        let rest = this.raw.split();
                        this.out.extend_from_slice(&rest);
                        continue;
                    }
                    this.raw.extend_from_slice(filled);
                    this.process();
                }
            }
        }
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for AuthorityFix<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

impl tonic::transport::server::Connected for AuthorityFix<tokio::net::TcpStream> {
    type ConnectInfo = tonic::transport::server::TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.io.connect_info()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn headers_frame(block: &[u8], flags: u8, stream: u32) -> Vec<u8> {
        let mut out = BytesMut::new();
        put_frame_header(
            &mut out,
            block.len(),
            TYPE_HEADERS,
            flags,
            stream.to_be_bytes(),
        );
        out.put_slice(block);
        out.to_vec()
    }

    /// Pushes `input` through the filter and returns what the server would read.
    async fn filter(input: Vec<u8>) -> Vec<u8> {
        try_filter(input).await.unwrap()
    }

    async fn try_filter(input: Vec<u8>) -> io::Result<Vec<u8>> {
        let (mut client, server) = tokio::io::duplex(1 << 20);
        client.write_all(&input).await?;
        drop(client);
        let mut fixed = AuthorityFix::new(server);
        let mut out = Vec::new();
        fixed.read_to_end(&mut out).await?;
        Ok(out)
    }

    /// Header blocks a client can send that no HPACK decoder may accept.
    fn malformed_blocks() -> Vec<(&'static str, Vec<u8>)> {
        vec![
            // Literal with indexing whose name index needs a continuation byte.
            ("truncated integer", vec![0x7f]),
            ("truncated integer continuation", vec![0xff, 0xff]),
            (
                "integer of too many octets",
                vec![0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01],
            ),
            // A new-name literal announcing a name of about 2^28 bytes.
            (
                "huge string length",
                vec![0x00, 0x7f, 0xff, 0xff, 0xff, 0x7f, b'a'],
            ),
            ("string longer than the block", vec![0x00, 0x05, b'a', b'b']),
            // Huffman-coded name of one byte: eight 1-bits are padding longer than 7 bits.
            ("bad huffman padding", vec![0x00, 0x81, 0xff, 0x01, b'v']),
            // Huffman-coded name holding the EOS symbol (30 1-bits).
            (
                "huffman EOS",
                vec![0x00, 0x84, 0xff, 0xff, 0xff, 0xff, 0x01, b'v'],
            ),
            ("index past the tables", vec![0xbe]),
            ("index zero", vec![0x80]),
            // Dynamic table size update to 4097, above what the server allows.
            ("table size over the limit", vec![0x3f, 0xe2, 0x1f]),
        ]
    }

    #[test]
    fn malformed_blocks_are_decoding_errors() {
        for (what, block) in malformed_blocks() {
            assert!(
                new_decoder().decode(&block).is_err(),
                "{what}: {block:02x?}"
            );
        }
        // Every one-byte block decodes or fails, without a panic (RUSTSEC-2023-0085).
        for byte in 0..=u8::MAX {
            let _ = new_decoder().decode(&[byte]);
        }
    }

    #[tokio::test]
    async fn a_malformed_first_block_reaches_the_server_unchanged() {
        let mut blocks = malformed_blocks();
        // The one-byte blocks that do not decode (most do: indexed static entries).
        blocks.extend(
            (0..=u8::MAX)
                .map(|b| ("one byte", vec![b]))
                .filter(|(_, block)| new_decoder().decode(block).is_err()),
        );
        for (what, block) in blocks {
            let mut input = PREFACE.to_vec();
            input.extend(headers_frame(&block, FLAG_END_HEADERS, 1));
            input.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]);
            assert_eq!(filter(input.clone()).await, input, "{what}: {block:02x?}");
        }
    }

    #[tokio::test]
    async fn a_malformed_block_after_a_rewrite_fails_the_connection() {
        let mut enc = loona_hpack::Encoder::new();
        let first = enc.encode(vec![
            (&b":method"[..], &b"POST"[..]),
            (&b":authority"[..], &b"http://127.0.0.1:2379"[..]),
        ]);
        for (what, block) in malformed_blocks() {
            let mut input = PREFACE.to_vec();
            input.extend(headers_frame(&first, FLAG_END_HEADERS, 1));
            input.extend(headers_frame(&block, FLAG_END_HEADERS, 3));
            let err = try_filter(input).await.unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{what}");
        }
    }

    #[tokio::test]
    async fn the_server_closes_a_connection_whose_first_block_is_malformed() {
        for (what, block) in malformed_blocks() {
            let (mut client, server) = tokio::io::duplex(1 << 20);
            let serve = tokio::spawn(async move {
                let mut conn = h2::server::handshake(AuthorityFix::new(server)).await?;
                while let Some(request) = conn.accept().await {
                    request?;
                }
                Ok::<(), h2::Error>(())
            });
            let mut input = PREFACE.to_vec();
            input.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]);
            input.extend(headers_frame(&block, FLAG_END_HEADERS, 1));
            client.write_all(&input).await.unwrap();
            // h2 calls a block cut short a PROTOCOL_ERROR, other bad blocks COMPRESSION_ERROR.
            let err = serve.await.unwrap().unwrap_err();
            assert!(
                err.is_go_away()
                    && matches!(
                        err.reason(),
                        Some(h2::Reason::COMPRESSION_ERROR | h2::Reason::PROTOCOL_ERROR)
                    ),
                "{what}: {err:?}"
            );
        }
    }

    fn decode_blocks(mut data: &[u8]) -> Vec<Vec<(Vec<u8>, Vec<u8>)>> {
        assert!(data.starts_with(PREFACE));
        data = &data[PREFACE.len()..];
        let mut dec = loona_hpack::Decoder::new();
        let mut blocks = Vec::new();
        let mut block = Vec::new();
        while !data.is_empty() {
            let len = u32::from_be_bytes([0, data[0], data[1], data[2]]) as usize;
            let (ty, flags) = (data[3], data[4]);
            let payload = &data[9..9 + len];
            if ty == TYPE_HEADERS || ty == TYPE_CONTINUATION {
                block.extend_from_slice(payload);
                if flags & FLAG_END_HEADERS != 0 {
                    blocks.push(dec.decode(&block).unwrap());
                    block.clear();
                }
            }
            data = &data[9 + len..];
        }
        blocks
    }

    #[tokio::test]
    async fn url_authority_becomes_host_port_and_indexing_stays_consistent() {
        let mut enc = loona_hpack::Encoder::new();
        let req = |auth: &'static [u8]| {
            vec![
                (&b":method"[..], &b"POST"[..]),
                (&b":scheme"[..], &b"http"[..]),
                (&b":path"[..], &b"/etcdserverpb.KV/Range"[..]),
                (&b":authority"[..], auth),
                (&b"content-type"[..], &b"application/grpc"[..]),
            ]
        };
        let mut input = PREFACE.to_vec();
        // A SETTINGS frame passes unchanged.
        input.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]);
        // The encoder indexes headers, so the second block refers to the first's entries.
        input.extend(headers_frame(
            &enc.encode(req(b"http://127.0.0.1:2379")),
            FLAG_END_HEADERS,
            1,
        ));
        input.extend(headers_frame(
            &enc.encode(req(b"http://127.0.0.1:2379")),
            FLAG_END_HEADERS | FLAG_END_STREAM,
            3,
        ));
        let out = filter(input).await;
        assert_eq!(
            &out[PREFACE.len()..PREFACE.len() + 9],
            &[0, 0, 0, 4, 0, 0, 0, 0, 0]
        );
        let blocks = decode_blocks(&out);
        assert_eq!(blocks.len(), 2);
        for b in &blocks {
            let auth = b.iter().find(|(n, _)| n == b":authority").unwrap();
            assert_eq!(auth.1, b"127.0.0.1:2379");
            assert_eq!(b.len(), 5);
        }
    }

    #[tokio::test]
    async fn a_connection_with_a_valid_first_authority_passes_unchanged() {
        let mut enc = loona_hpack::Encoder::new();
        let req = |path: &'static [u8]| {
            vec![
                (&b":method"[..], &b"POST"[..]),
                (&b":path"[..], path),
                (&b":authority"[..], &b"127.0.0.1:2379"[..]),
            ]
        };
        let mut input = PREFACE.to_vec();
        input.extend(headers_frame(
            &enc.encode(req(b"/etcdserverpb.KV/Put")),
            FLAG_END_HEADERS,
            1,
        ));
        input.extend(headers_frame(
            &enc.encode(req(b"/etcdserverpb.KV/Range")),
            FLAG_END_HEADERS,
            3,
        ));
        input.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]);
        assert_eq!(filter(input.clone()).await, input);
    }

    #[tokio::test]
    async fn continuation_frames_are_joined_and_http1_passes_through() {
        let mut enc = loona_hpack::Encoder::new();
        let block = enc.encode(vec![
            (&b":method"[..], &b"POST"[..]),
            (&b":authority"[..], &b"localhost:2379"[..]),
            (&b"x-long"[..], &[b'a'; 40][..]),
        ]);
        let (a, b) = block.split_at(10);
        let mut input = PREFACE.to_vec();
        input.extend(headers_frame(a, 0, 1));
        let mut cont = BytesMut::new();
        put_frame_header(
            &mut cont,
            b.len(),
            TYPE_CONTINUATION,
            FLAG_END_HEADERS,
            1u32.to_be_bytes(),
        );
        cont.put_slice(b);
        input.extend_from_slice(&cont);
        let out = filter(input).await;
        let blocks = decode_blocks(&out);
        assert_eq!(blocks[0][1].1, b"localhost:2379");
        assert_eq!(blocks[0][2].1, vec![b'a'; 40]);

        let http1 = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n".to_vec();
        assert_eq!(filter(http1.clone()).await, http1);
    }

    #[test]
    fn authority_forms() {
        assert_eq!(fix_authority(b"127.0.0.1:2379").unwrap(), b"127.0.0.1:2379");
        assert_eq!(
            fix_authority(b"http://127.0.0.1:2379").unwrap(),
            b"127.0.0.1:2379"
        );
        assert_eq!(
            fix_authority(b"passthrough:///http://h:1/").unwrap(),
            b"h:1"
        );
        assert_eq!(fix_authority(b"#initially=[http://a:1;http://b:2]"), None);
    }
}
