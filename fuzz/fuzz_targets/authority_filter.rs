//! The client port's first bytes as they arrive: the `:authority` filter
//! (`cairn_grpc_gateway::authority::AuthorityFix`) reading an HTTP/2 connection in
//! chunks of sizes the input picks. It never panics and never stalls, and a connection
//! that is not HTTP/2 passes unchanged.
//!
//! Input: a byte of chunk size (1 to 256; 0 means all at once), a byte of flags (bit 0:
//! prepend the HTTP/2 preface, so that the fuzzer starts inside the frame layer), then
//! the connection's bytes.
#![no_main]

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use cairn_grpc_gateway::authority::AuthorityFix;
use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncRead, ReadBuf};

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Hands out `data` at most `chunk` bytes per read.
struct Chunked<'a> {
    data: &'a [u8],
    chunk: usize,
}

impl AsyncRead for Chunked<'_> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let n = self.data.len().min(self.chunk).min(buf.remaining());
        let (head, tail) = self.data.split_at(n);
        buf.put_slice(head);
        self.data = tail;
        Poll::Ready(Ok(()))
    }
}

fuzz_target!(|data: &[u8]| {
    let [chunk, flags, rest @ ..] = data else {
        return;
    };
    let mut input = Vec::with_capacity(rest.len() + PREFACE.len());
    if flags & 1 == 1 {
        input.extend_from_slice(PREFACE);
    }
    input.extend_from_slice(rest);
    let chunk = if *chunk == 0 {
        usize::MAX
    } else {
        usize::from(*chunk)
    };
    let mut filter = AuthorityFix::new(Chunked {
        data: &input,
        chunk,
    });
    let mut cx = Context::from_waker(Waker::noop());
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    // A read that neither yields output nor ends the stream would spin here: libFuzzer's
    // -timeout reports it.
    loop {
        let mut rb = ReadBuf::new(&mut buf);
        match Pin::new(&mut filter).poll_read(&mut cx, &mut rb) {
            Poll::Ready(Ok(())) if rb.filled().is_empty() => {
                if !input.starts_with(&PREFACE[..input.len().min(PREFACE.len())]) {
                    assert_eq!(
                        out, input,
                        "a connection that is not HTTP/2 passes unchanged"
                    );
                }
                return;
            }
            Poll::Ready(Ok(())) => out.extend_from_slice(rb.filled()),
            Poll::Ready(Err(_)) => return,
            Poll::Pending => panic!("an in-memory connection never waits"),
        }
    }
});
