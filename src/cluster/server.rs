//! The serving side of the node-to-node transport: the `[cluster] listen`
//! socket, one task per connection, requests answered in order.
//!
//! A connection carries one call at a time (the client never pipelines), so
//! a connection holds at most one request in memory and the in-flight work of
//! the whole listener is bounded by `connections_max`. A frame that is
//! oversized, of another version or does not decode closes that connection
//! with a logged reason; nothing a peer sends can stop the listener or the
//! node. A handler that does not answer within `handler_timeout` closes the
//! connection too, so a stuck handler cannot hold a connection forever.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};

use super::frame::{encode, read_frame, write_frame, FrameError, FRAME_BYTES_MAX};
use super::message::{Request, Response};

/// Serves the requests of the node-to-node transport. Implementations answer
/// every request with its matching [`Response`] variant, or
/// [`Response::Unsupported`].
pub trait Dispatch: Send + Sync + 'static {
    fn dispatch(&self, request: Request) -> BoxFuture<'static, Response>;
}

/// How the listener serves.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// Connections beyond this are refused at accept.
    pub connections_max: usize,
    /// A connection with no request for this long is closed.
    pub idle_timeout: Duration,
    /// A request not answered within this long closes its connection.
    pub handler_timeout: Duration,
    /// The largest request frame accepted.
    pub frame_bytes_max: usize,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            connections_max: 256,
            idle_timeout: Duration::from_secs(60),
            handler_timeout: Duration::from_secs(30),
            frame_bytes_max: FRAME_BYTES_MAX,
        }
    }
}

/// Why a connection ended early.
#[derive(Debug, thiserror::Error)]
enum ConnectionError {
    #[error("no request for {0:?}")]
    Idle(Duration),
    #[error("the {request} handler did not answer within {timeout:?}")]
    HandlerTimeout { request: &'static str, timeout: Duration },
    #[error(transparent)]
    Frame(#[from] FrameError),
}

/// Resolves once `shutdown` turns true or its sender is gone. (A helper, so no
/// `watch::Ref` guard is part of a caller's future: that would make it `!Send`.)
pub async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// Accepts connections until `shutdown` turns true (or its sender is dropped),
/// then closes every connection it opened.
pub async fn serve(listener: TcpListener, dispatch: Arc<dyn Dispatch>, options: ServerOptions, mut shutdown: watch::Receiver<bool>) {
    let connections = Arc::new(Semaphore::new(options.connections_max));
    let local = listener.local_addr().map(|a| a.to_string()).unwrap_or_default();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stopped(&mut shutdown) => break,
        };
        let (stream, peer) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                // Out of file descriptors and similar: back off instead of spinning.
                tracing::warn!(listener = %local, cause = %e, "cluster listener: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            tracing::warn!(%peer, max = options.connections_max, "cluster listener: refusing a connection over the limit");
            continue;
        };
        let (dispatch, options, mut stop) = (dispatch.clone(), options.clone(), shutdown.clone());
        tokio::spawn(async move {
            let _ = stream.set_nodelay(true);
            let served = tokio::select! {
                served = connection(stream, &*dispatch, &options) => served,
                _ = stopped(&mut stop) => Ok(()),
            };
            match served {
                Ok(()) | Err(ConnectionError::Frame(FrameError::Closed)) => {}
                Err(e) => tracing::warn!(%peer, cause = %e, "cluster connection closed"),
            }
            drop(permit);
        });
    }
}

async fn connection(mut stream: TcpStream, dispatch: &dyn Dispatch, options: &ServerOptions) -> Result<(), ConnectionError> {
    loop {
        let request: Request = tokio::time::timeout(options.idle_timeout, read_frame(&mut stream, options.frame_bytes_max))
            .await
            .map_err(|_| ConnectionError::Idle(options.idle_timeout))??;
        let kind = request.kind();
        let response = tokio::time::timeout(options.handler_timeout, dispatch.dispatch(request))
            .await
            .map_err(|_| ConnectionError::HandlerTimeout { request: kind, timeout: options.handler_timeout })?;
        let frame = encode(&response)?;
        write_frame(&mut stream, &frame).await?;
    }
}

#[cfg(test)]
mod tests {
    use futures::FutureExt;
    use silt_actors::metadata::quorum::{MetadataBatch, MetadataResponse};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;
    use crate::cluster::client::{ClientOptions, PeerClient};
    use crate::cluster::frame::FRAME_VERSION;
    use crate::cluster::message::ForwardedCommit;

    /// Answers every forwarded proposal as applied; nothing else.
    struct Echo;

    impl Dispatch for Echo {
        fn dispatch(&self, request: Request) -> BoxFuture<'static, Response> {
            let response = match request {
                Request::ForwardProposal(_) => Response::ForwardProposal(Ok(ForwardedCommit { response: MetadataResponse::Empty, log_index: 1 })),
                other => Response::Unsupported(format!("{} is not served here", other.kind())),
            };
            async move { response }.boxed()
        }
    }

    async fn start(frame_bytes_max: usize) -> (String, watch::Sender<bool>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let (stop, shutdown) = watch::channel(false);
        let options = ServerOptions { frame_bytes_max, ..ServerOptions::default() };
        tokio::spawn(serve(listener, Arc::new(Echo), options, shutdown));
        (address, stop)
    }

    async fn bad_frame_is_closed(address: &str, bytes: &[u8]) {
        let mut stream = TcpStream::connect(address).await.unwrap();
        stream.write_all(bytes).await.unwrap();
        let mut rest = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut rest)).await.expect("the server closes the connection");
        assert!(read.is_err() || rest.is_empty(), "no answer to a bad frame: {rest:?}");
    }

    #[tokio::test]
    async fn malformed_and_oversized_frames_close_only_their_connection() {
        let (address, _stop) = start(1024).await;
        let client = PeerClient::new(address.clone(), ClientOptions::default());
        let proposal = Request::ForwardProposal(MetadataBatch { records: vec![] });
        assert!(matches!(
            client.call(&proposal, None).await.unwrap(),
            Response::ForwardProposal(Ok(ForwardedCommit { response: MetadataResponse::Empty, .. }))
        ));

        bad_frame_is_closed(&address, &[0, 0, 0, 4, FRAME_VERSION, b'n', b'o', b'!']).await;
        bad_frame_is_closed(&address, &[0, 0, 0, 3, 42, b'{', b'}']).await;
        bad_frame_is_closed(&address, &[0, 0, 0, 0]).await;
        bad_frame_is_closed(&address, &[0x7f, 0xff, 0xff, 0xff, FRAME_VERSION]).await;
        let mut huge = vec![0u8; 2048];
        huge[..4].copy_from_slice(&2044u32.to_be_bytes());
        huge[4] = FRAME_VERSION;
        bad_frame_is_closed(&address, &huge).await;

        // The listener and the pooled connection still serve.
        assert!(matches!(
            client.call(&proposal, None).await.unwrap(),
            Response::ForwardProposal(Ok(ForwardedCommit { response: MetadataResponse::Empty, .. }))
        ));
        let fresh = PeerClient::new(address, ClientOptions::default());
        assert!(matches!(fresh.call(&proposal, None).await.unwrap(), Response::ForwardProposal(Ok(ForwardedCommit { response: MetadataResponse::Empty, .. }))));
        let unsupported = fresh.call(&Request::Vote(openraft::raft::VoteRequest::new(openraft::Vote::new(1, 1), None)), None).await;
        assert!(matches!(unsupported, Err(crate::cluster::client::CallError::Unsupported { .. })), "{unsupported:?}");
    }

    #[tokio::test]
    async fn an_unreachable_peer_fails_fast_and_backs_off() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        drop(listener);
        let client = PeerClient::new(address, ClientOptions { backoff_min: Duration::from_secs(60), ..ClientOptions::default() });
        let proposal = Request::ForwardProposal(MetadataBatch { records: vec![] });
        let first = client.call(&proposal, None).await.unwrap_err();
        assert!(matches!(first, crate::cluster::client::CallError::Unreachable { .. }), "{first:?}");
        let second = client.call(&proposal, None).await.unwrap_err();
        assert!(matches!(second, crate::cluster::client::CallError::BackingOff { .. }), "{second:?}");
        assert!(second.is_unreachable());
    }
}
