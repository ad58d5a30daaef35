//! etcd's bidirectional `Watch` service, written against [`WatchApi`].
//!
//! Each gRPC call opens one watch stream: requests from the client go to its
//! [`WatchSession`] in order; the responses the server produces go back in order. The
//! session lives until the client cancels the call or the connection goes, even after the
//! client half-closes its side (as in etcd, whose watchers keep running then).

use std::pin::Pin;
use std::sync::Arc;

use async_trait::async_trait;
use cairn_proto::etcdserverpb::{watch_server::Watch, WatchRequest, WatchResponse};
use futures::{Stream, StreamExt as _};
use tonic::{Request, Response, Status, Streaming};

/// The responses of one watch stream, in the order they must reach the client.
pub type WatchResponses = Pin<Box<dyn Stream<Item = WatchResponse> + Send + 'static>>;

/// One client's watch stream on the server side.
#[async_trait]
pub trait WatchSession: Send + 'static {
    /// Handles one request (create, cancel, progress). May wait while the stream's
    /// response buffer is full.
    async fn handle(&mut self, request: WatchRequest);
}

/// What the Watch service needs from a server.
pub trait WatchApi: Send + Sync + 'static {
    /// Opens a stream: the session takes requests, the stream yields responses. Dropping
    /// the session ends the stream's watchers.
    fn open_stream(&self) -> (Box<dyn WatchSession>, WatchResponses);
}

/// The tonic service of etcd's `Watch`.
#[derive(Debug)]
pub struct WatchService<A> {
    api: Arc<A>,
}

impl<A> WatchService<A> {
    /// A service over `api`.
    pub fn new(api: Arc<A>) -> Self {
        WatchService { api }
    }
}

type ResponseStream = Pin<Box<dyn Stream<Item = Result<WatchResponse, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl<A: WatchApi> Watch for WatchService<A> {
    type WatchStream = ResponseStream;

    async fn watch(
        &self,
        request: Request<Streaming<WatchRequest>>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let mut inbound = request.into_inner();
        let (mut session, responses) = self.api.open_stream();
        // Dropped with the response stream, i.e. when the call ends.
        let (call_alive, mut call_gone) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = &mut call_gone => break,
                    message = inbound.message() => match message {
                        Ok(Some(req)) => session.handle(req).await,
                        Ok(None) => {
                            let _ = (&mut call_gone).await;
                            break;
                        }
                        Err(status) => {
                            tracing::debug!(%status, "watch stream closed by the client");
                            break;
                        }
                    },
                }
            }
            drop(session);
        });
        let out = responses.map(move |response| {
            let _alive = &call_alive;
            Ok(response)
        });
        Ok(Response::new(Box::pin(out)))
    }
}

/// The Watch service ready for `Routes::add_service`, with the client port's message
/// size limits.
pub fn watch_server<A: WatchApi>(
    api: Arc<A>,
    limits: crate::grpc::Limits,
) -> cairn_proto::etcdserverpb::watch_server::WatchServer<WatchService<A>> {
    cairn_proto::etcdserverpb::watch_server::WatchServer::new(WatchService::new(api))
        .max_decoding_message_size(limits.transport_limit())
        .max_encoding_message_size(usize::MAX)
}
