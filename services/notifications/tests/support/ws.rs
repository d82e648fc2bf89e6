//! A WebSocket client for the live feed (`/v1/live`), on tokio-tungstenite:
//! what a browser does, minus the browser (see `browser.rs` for that).

#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub struct LiveClient {
    pub socket: WebSocketStream<MaybeTlsStream<TcpStream>>,
    /// The subprotocol the server chose.
    pub protocol: Option<String>,
}

/// How the socket ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Closed {
    pub code: u16,
    pub reason: String,
}

impl LiveClient {
    /// Opens `ws://addr/v1/live<query>` offering `protocols` (none: no header).
    pub async fn connect(addr: SocketAddr, query: &str, protocols: &[&str]) -> LiveClient {
        let mut request = format!("ws://{addr}/v1/live{query}")
            .into_client_request()
            .expect("request");
        if !protocols.is_empty() {
            request.headers_mut().insert(
                "sec-websocket-protocol",
                protocols.join(", ").parse().expect("header"),
            );
        }
        let (socket, response) = tokio_tungstenite::connect_async(request)
            .await
            .expect("the WebSocket handshake succeeds");
        let protocol = response
            .headers()
            .get("sec-websocket-protocol")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        LiveClient { socket, protocol }
    }

    /// With the token as a subprotocol, as a browser does.
    pub async fn with_token(addr: SocketAddr, token: &str, after: Option<i64>) -> LiveClient {
        let query = after.map(|a| format!("?after={a}")).unwrap_or_default();
        let bearer = format!("bearer.{token}");
        LiveClient::connect(addr, &query, &["skileez.v1", &bearer]).await
    }

    /// With the token as a subprotocol, over a socket whose receive buffer
    /// is as small as the kernel allows: a client that stops reading stalls
    /// the server's writes soon.
    pub async fn with_small_buffer(addr: SocketAddr, token: &str, after: i64) -> LiveClient {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
        let stream = socket.connect(addr).await.expect("connect");
        let mut request = format!("ws://{addr}/v1/live?after={after}")
            .into_client_request()
            .expect("request");
        request.headers_mut().insert(
            "sec-websocket-protocol",
            format!("skileez.v1, bearer.{token}")
                .parse()
                .expect("header"),
        );
        let (socket, response) =
            tokio_tungstenite::client_async(request, MaybeTlsStream::Plain(stream))
                .await
                .expect("the WebSocket handshake succeeds");
        let protocol = response
            .headers()
            .get("sec-websocket-protocol")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        LiveClient { socket, protocol }
    }

    pub async fn send_text(&mut self, text: &str) {
        self.socket.send(Message::text(text)).await.expect("sent");
    }

    /// The next data message as JSON (pings are answered on the way), or
    /// how the socket closed.
    pub async fn next(&mut self, timeout: Duration) -> Result<Value, Closed> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let message = tokio::time::timeout_at(deadline, self.socket.next())
                .await
                .unwrap_or_else(|_| panic!("nothing from the server within {timeout:?}"));
            match message {
                Some(Ok(Message::Text(text))) => {
                    return Ok(serde_json::from_str(text.as_str()).expect("JSON"));
                }
                Some(Ok(Message::Close(frame))) => return Err(closed(frame)),
                Some(Ok(Message::Binary(_))) => panic!("a binary message"),
                Some(Ok(_)) => continue,
                Some(Err(error)) => {
                    return Err(Closed {
                        code: 1006,
                        reason: error.to_string(),
                    });
                }
                None => {
                    return Err(Closed {
                        code: 1006,
                        reason: "the connection ended".into(),
                    });
                }
            }
        }
    }

    /// The next data message; panics if the socket closes.
    pub async fn message(&mut self) -> Value {
        match self.next(Duration::from_secs(20)).await {
            Ok(value) => value,
            Err(closed) => panic!("closed: {closed:?}"),
        }
    }

    /// The `welcome` message that opens every authenticated socket.
    pub async fn welcome(&mut self) -> Value {
        let welcome = self.message().await;
        assert_eq!(welcome["type"], "welcome", "{welcome}");
        welcome
    }

    /// Feed items until `done` holds for those received so far.
    pub async fn items_until(
        &mut self,
        timeout: Duration,
        done: impl Fn(&[Value]) -> bool,
    ) -> Vec<Value> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut items = Vec::new();
        while !done(&items) {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next(left).await {
                Ok(item) => items.push(item),
                Err(closed) => panic!("closed after {items:#?}: {closed:?}"),
            }
        }
        items
    }

    /// Expects the socket to close with no data message before.
    pub async fn closed_without_data(&mut self) -> Closed {
        match self.next(Duration::from_secs(20)).await {
            Ok(data) => panic!("data before the close: {data}"),
            Err(closed) => closed,
        }
    }

    /// Sends no more and waits a moment for nothing: the socket must stay
    /// quiet (no data) for `quiet`.
    /// (Pings are answered meanwhile.)
    pub async fn assert_quiet(&mut self, quiet: Duration) {
        let until = tokio::time::Instant::now() + quiet;
        loop {
            match tokio::time::timeout_at(until, self.socket.next()).await {
                Err(_) => return,
                Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => {}
                Ok(other) => panic!("expected nothing, got {other:?}"),
            }
        }
    }

    pub async fn close(mut self) {
        let _ = self.socket.close(None).await;
    }
}

fn closed(frame: Option<CloseFrame>) -> Closed {
    match frame {
        Some(frame) => Closed {
            code: u16::from(frame.code),
            reason: frame.reason.to_string(),
        },
        None => Closed {
            code: 1005,
            reason: String::new(),
        },
    }
}

/// The feed item types of `items`, in order.
pub fn types(items: &[Value]) -> Vec<String> {
    items
        .iter()
        .map(|item| {
            let kind = item["type"].as_str().unwrap_or_default();
            match kind {
                "notification" => format!(
                    "notification:{}",
                    item["notification"]["kind"].as_str().unwrap_or_default()
                ),
                _ => kind.to_owned(),
            }
        })
        .collect()
}

/// The positions of `items`.
pub fn positions(items: &[Value]) -> Vec<i64> {
    items
        .iter()
        .map(|item| item["position"].as_i64().expect("a position"))
        .collect()
}

pub type WsError = tungstenite::Error;
