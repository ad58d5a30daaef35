//! Handing responses to a stream without ever blocking the apply loop, and
//! the stream's receiving end.

use std::pin::Pin;
use std::task::{Context, Poll};

use cairn_proto::etcdserverpb::WatchResponse;
use tokio::sync::mpsc;

use crate::metrics::{EVENTS_TOTAL, PENDING_EVENTS_TOTAL};

/// What became of responses handed to a stream.
pub(crate) enum Delivery {
    /// Queued, all of them.
    Sent,
    /// Not queued: the stream's buffer has no room for all of them.
    Full,
    /// Not queued: the stream is gone.
    Closed,
}

/// Queues `responses` on a stream, all or none.
pub(crate) fn deliver(tx: &mpsc::Sender<WatchResponse>, responses: Vec<WatchResponse>) -> Delivery {
    if tx.is_closed() {
        return Delivery::Closed;
    }
    if tx.capacity() < responses.len() {
        return Delivery::Full;
    }
    for response in responses {
        let events = response.events.len();
        if let Err(e) = tx.try_send(response) {
            return match e {
                mpsc::error::TrySendError::Full(_) => Delivery::Full,
                mpsc::error::TrySendError::Closed(_) => Delivery::Closed,
            };
        }
        metrics::gauge!(PENDING_EVENTS_TOTAL).increment(events as f64);
    }
    Delivery::Sent
}

/// The responses of one [`WatchStream`](crate::WatchStream), in order.
#[derive(Debug)]
pub struct WatchReceiver {
    rx: mpsc::Receiver<WatchResponse>,
}

impl WatchReceiver {
    pub(crate) fn new(rx: mpsc::Receiver<WatchResponse>) -> Self {
        WatchReceiver { rx }
    }
}

fn sent(response: &WatchResponse) {
    let events = response.events.len() as f64;
    metrics::gauge!(PENDING_EVENTS_TOTAL).decrement(events);
    metrics::counter!(EVENTS_TOTAL).increment(response.events.len() as u64);
}

impl WatchReceiver {
    /// The next response; `None` once the stream is dropped and drained.
    pub async fn recv(&mut self) -> Option<WatchResponse> {
        let r = self.rx.recv().await;
        r.inspect(sent)
    }

    /// The next response if one is queued.
    pub fn try_recv(&mut self) -> Option<WatchResponse> {
        self.rx.try_recv().ok().inspect(sent)
    }
}

impl futures::Stream for WatchReceiver {
    type Item = WatchResponse;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<WatchResponse>> {
        let polled = self.rx.poll_recv(cx);
        if let Poll::Ready(Some(r)) = &polled {
            sent(r);
        }
        polled
    }
}
