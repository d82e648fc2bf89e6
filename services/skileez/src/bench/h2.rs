//! The benches' gRPC client connection: hyper's HTTP/2 client on one TCP
//! connection, with nothing between the caller and it.
//!
//! The load generator shares the machine's two cores with the service,
//! PostgreSQL and NATS, so every cycle it spends is taken from what it
//! measures. tonic's `Channel` puts a `tower::buffer::Buffer` in front of
//! its connection: each request is queued to a worker task of its own before
//! it reaches the HTTP/2 connection task, one more task hop per request on
//! the client side. Here a request goes from the caller's task straight into
//! the connection (`SendRequest`), as in a client on its own machine that
//! keeps one connection per caller. The service sees the same requests.

use std::{
    future::Future,
    net::SocketAddr,
    pin::Pin,
    task::{Context, Poll},
};

use anyhow::Context as _;
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};
use skileez_proto::scheduling::scheduling_service_client::SchedulingServiceClient;

/// One HTTP/2 connection to a gRPC server, for tonic's generated clients
/// (made with the connection's origin: HTTP/2 requests carry the scheme and
/// authority, which tonic takes from it).
#[derive(Clone, Debug)]
pub struct Http2Connection {
    send: SendRequest<tonic::body::Body>,
    origin: http::Uri,
}

impl Http2Connection {
    /// Connects (`TCP_NODELAY`, as tonic's `Channel` does) and drives the
    /// connection on a task of its own until every clone is dropped.
    async fn connect(addr: SocketAddr) -> anyhow::Result<Self> {
        let tcp = tokio::net::TcpStream::connect(addr)
            .await
            .with_context(|| format!("connecting to {addr}"))?;
        tcp.set_nodelay(true)?;
        let (send, connection) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
            .handshake(TokioIo::new(tcp))
            .await
            .with_context(|| format!("HTTP/2 handshake with {addr}"))?;
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "bench HTTP/2 connection ended");
            }
        });
        Ok(Self {
            send,
            origin: format!("http://{addr}").parse()?,
        })
    }

    /// One connection per client: `clients` of them to `addr`, as that many
    /// separate callers would have.
    pub async fn each(addr: SocketAddr, clients: usize) -> anyhow::Result<Vec<Self>> {
        let mut connections = Vec::with_capacity(clients);
        for _ in 0..clients {
            connections.push(Self::connect(addr).await?);
        }
        Ok(connections)
    }

    /// A scheduling service client on this connection.
    pub fn scheduling(self) -> SchedulingServiceClient<Self> {
        let origin = self.origin.clone();
        SchedulingServiceClient::with_origin(self, origin)
    }
}

impl tower::Service<http::Request<tonic::body::Body>> for Http2Connection {
    type Response = http::Response<hyper::body::Incoming>;
    type Error = hyper::Error;
    type Future =
        Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send + 'static>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.send.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        Box::pin(self.send.send_request(request))
    }
}
