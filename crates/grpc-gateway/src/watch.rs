//! etcd's bidirectional `Watch` service over a [`WatchApi`].
//!
//! Each gRPC call opens one watch stream: requests from the client go to its
//! [`crate::api::WatchSession`] in order; the responses the server produces go back in
//! order. The session lives until the client cancels the call or the connection goes,
//! even after the client half-closes its side (as in etcd, whose watchers keep running
//! then).

use cairn_proto::etcdserverpb::{watch_server::Watch, WatchRequest, WatchResponse};
use futures::StreamExt as _;
use tonic::{Request, Response, Status, Streaming};

use crate::api::WatchApi;
use crate::grpc::{service_name::WATCH, Service};
use crate::metrics::{self, RpcType};

#[tonic::async_trait]
impl<A: WatchApi + ?Sized> Watch for Service<A> {
    type WatchStream = std::pin::Pin<
        Box<dyn futures::Stream<Item = Result<WatchResponse, Status>> + Send + 'static>,
    >;

    async fn watch(
        &self,
        request: Request<Streaming<WatchRequest>>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        metrics::started(RpcType::BidiStream, WATCH, "Watch");
        let mut inbound = request.into_inner();
        let (mut session, responses) = self.api.open_stream();
        // Dropped with the response stream, i.e. when the call ends.
        let (call_alive, mut call_gone) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = &mut call_gone => break,
                    message = inbound.message() => match message {
                        Ok(Some(req)) => {
                            metrics::client_received(&req);
                            session.handle(req).await
                        }
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
            metrics::client_sent(&response);
            Ok(response)
        });
        Ok(Response::new(Box::pin(out)))
    }
}
