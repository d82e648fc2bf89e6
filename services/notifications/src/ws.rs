//! The WebSocket for browsers: `GET /v1/live` on `SKILEEZ_WS_ADDR` streams
//! the caller's live feed (`feed`) as JSON text messages, each with its
//! `position`, resuming after the last position the client saw.
//!
//! A browser cannot set `authorization` on a WebSocket, so the token (the
//! same JWT as the gRPC API, verified by `skileez-auth`) comes either
//!
//! - in the handshake, as a subprotocol: `new WebSocket(url, ["skileez.v1",
//!   "bearer." + token])`; the server answers `skileez.v1`; or
//! - as the first message: `{"token": "<jwt>", "after": <position>}`
//!   (within `auth_timeout`).
//!
//! Nothing but a close frame is sent before the token is verified: a
//! missing or bad one closes with 1008 (policy violation) and the reason.
//! Then come `{"type": "welcome", "userId", "after", "reset"}`, every item
//! after `after` (`?after=<position>` or the first message's `after`; none:
//! only new ones), then live items, in position order, nothing twice.
//!
//! Bounded everywhere: at most `max_connections` sockets; per socket, a
//! queue of `queue` items between the watch and the socket (the watch
//! waits while it is full and catches up from the store after, so a slow
//! client costs no memory); a write that the client does not take within
//! `send_timeout` drops it (1013: it may reconnect with its last position);
//! a ping every `ping_interval`, and a client that has not answered the
//! previous one by the next is dropped; client messages of at most 16 KiB.
//! A socket ends when its token expires (1008): the client reconnects with
//! a fresh token and its last position. Close codes: 1008 token missing,
//! bad or expired, 1013 too slow or too many connections, 1001 server
//! shutting down or no answer to ping, 1011 the store failed.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade, close_code};
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures::SinkExt as _;
use serde::Deserialize;
use skileez_auth::{Authenticator, Principal};
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::WsConfig;
use crate::feed::{self, FeedItem};
use crate::live::{self, Live, LiveHub};

/// The subprotocol a client offers, and the server answers with.
pub const PROTOCOL: &str = "skileez.v1";
/// The prefix of the subprotocol that carries the token.
pub const BEARER_PREFIX: &str = "bearer.";
/// The path of the endpoint.
pub const PATH: &str = "/v1/live";
/// The largest message a client may send (the first one holds a token).
const MAX_CLIENT_MESSAGE: usize = 16 * 1024;
/// How long a closing socket waits for the client's close frame.
const CLOSE_GRACE: Duration = Duration::from_secs(2);
/// A close frame's reason is at most 123 bytes (RFC 6455 §5.5).
const MAX_REASON: usize = 123;

/// What every socket shares.
pub struct WsState {
    pub pool: PgPool,
    pub auth: Authenticator,
    pub hub: Arc<LiveHub<FeedItem>>,
    pub tasks: TaskTracker,
    pub shutdown: CancellationToken,
    pub watch_poll: Duration,
    pub config: WsConfig,
    pub connections: Arc<Semaphore>,
}

/// Serves the endpoint on `listener` until `shutdown`; open sockets are
/// closed (1001) and awaited by the task tracker.
pub async fn serve(listener: TcpListener, state: Arc<WsState>) -> std::io::Result<()> {
    use axum::serve::ListenerExt as _;
    let shutdown = state.shutdown.clone();
    let router = axum::Router::new()
        .route(PATH, get(upgrade))
        .with_state(state);
    // Pushes are small writes the client waits for: no Nagle delay.
    let listener = listener.tap_io(|stream| {
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%error, "cannot set TCP_NODELAY");
        }
    });
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
}

/// Why a socket is closed, as the client reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Close {
    pub code: u16,
    pub reason: String,
}

impl Close {
    fn new(code: u16, reason: impl Into<String>) -> Self {
        Close {
            code,
            reason: reason.into(),
        }
    }

    fn unauthenticated(why: impl std::fmt::Display) -> Self {
        Close::new(close_code::POLICY, format!("unauthenticated: {why}"))
    }

    fn frame(&self) -> Message {
        Message::Close(Some(CloseFrame {
            code: self.code,
            reason: Utf8Bytes::from(truncate(&self.reason, MAX_REASON)),
        }))
    }
}

/// At most `max` bytes of `text`, cut at a character boundary.
fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

/// The subprotocols a handshake offers, in order.
fn offered_protocols(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(|p| p.trim().to_owned())
        .filter(|p| !p.is_empty())
        .collect()
}

/// `?after=<position>` (any other parameter is ignored).
fn after_of_query(query: Option<&str>) -> Result<Option<u64>, Close> {
    let Some(query) = query else {
        return Ok(None);
    };
    for (key, value) in url::form_urlencoded::parse(query.as_bytes()) {
        if key == "after" {
            return value.trim().parse::<u64>().map(Some).map_err(|_| {
                Close::new(
                    close_code::POLICY,
                    "after must be a whole number (the last position seen)",
                )
            });
        }
    }
    Ok(None)
}

/// Who is on the socket, and until when.
struct Caller {
    principal: Principal,
    expires_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// The `exp` of a token that `Authenticator::verify` accepted (so its
/// payload is known to be genuine): read here because the verifier keeps
/// it to itself.
fn token_expiry(token: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    use base64::Engine as _;
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    let exp = claims.get("exp")?.as_i64()?;
    chrono::DateTime::from_timestamp(exp, 0)
}

/// The first message, when the token did not come in the handshake.
#[derive(Debug, Deserialize)]
struct Hello {
    token: Option<String>,
    /// A number, or a string of digits (as proto3 JSON writes 64-bit ones).
    after: Option<serde_json::Value>,
}

fn after_of_hello(after: Option<&serde_json::Value>) -> Result<Option<u64>, Close> {
    let bad = || {
        Close::new(
            close_code::POLICY,
            "after must be a whole number (the last position seen)",
        )
    };
    match after {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::Number(n)) => n.as_u64().map(Some).ok_or_else(bad),
        Some(serde_json::Value::String(s)) => s.trim().parse().map(Some).map_err(|_| bad()),
        Some(_) => Err(bad()),
    }
}

const NO_TOKEN: &str =
    "no token: offer subprotocols skileez.v1 and bearer.<jwt>, or send {\"token\":\"<jwt>\"} first";

async fn upgrade(
    State(state): State<Arc<WsState>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    let offered = offered_protocols(&headers);
    let bearer = offered
        .iter()
        .find_map(|p| p.strip_prefix(BEARER_PREFIX))
        .map(str::to_owned);
    // A browser fails a handshake whose answer names no protocol it
    // offered, and it must not be answered with its token: whoever offers
    // protocols offers ours.
    if !offered.is_empty() && !offered.iter().any(|p| p == PROTOCOL) {
        return (
            StatusCode::BAD_REQUEST,
            format!("offer the subprotocol {PROTOCOL} (with {BEARER_PREFIX}<jwt> for the token)\n"),
        )
            .into_response();
    }
    let ws = ws
        .protocols([PROTOCOL])
        .max_message_size(MAX_CLIENT_MESSAGE)
        .max_frame_size(MAX_CLIENT_MESSAGE);
    let permit = state.connections.clone().try_acquire_owned().ok();
    let after = after_of_query(query.as_deref());
    let tasks = state.tasks.clone();
    ws.on_upgrade(move |socket| {
        tasks.track_future(async move {
            let session = Session {
                socket,
                state: &state,
            };
            session.run(bearer, after, permit).await;
        })
    })
}

struct Session<'a> {
    socket: WebSocket,
    state: &'a WsState,
}

impl Session<'_> {
    async fn run(
        mut self,
        bearer: Option<String>,
        after: Result<Option<u64>, Close>,
        permit: Option<OwnedSemaphorePermit>,
    ) {
        let Some(_permit) = permit else {
            metrics::counter!("skileez_ws_closed_total", "reason" => "busy").increment(1);
            return self
                .close(&Close::new(
                    close_code::AGAIN,
                    "too many connections; retry later",
                ))
                .await;
        };
        let authenticated = match after {
            Ok(after) => self.authenticate(bearer, after).await,
            Err(close) => Err(close),
        };
        let (caller, after) = match authenticated {
            Ok(ok) => ok,
            Err(close) => {
                metrics::counter!("skileez_ws_closed_total", "reason" => "unauthenticated")
                    .increment(1);
                return self.close(&close).await;
            }
        };
        metrics::gauge!("skileez_ws_connections").increment(1.0);
        let close = self.stream(&caller, after).await;
        metrics::gauge!("skileez_ws_connections").decrement(1.0);
        match close {
            Some(close) => self.close(&close).await,
            // The client closed: the reply tungstenite queued goes out, so
            // that the client sees a clean close.
            None => {
                let _ = tokio::time::timeout(CLOSE_GRACE, self.socket.flush()).await;
            }
        }
    }

    /// The caller and where to resume, or why not.
    async fn authenticate(
        &mut self,
        bearer: Option<String>,
        after: Option<u64>,
    ) -> Result<(Caller, Option<u64>), Close> {
        if let Some(token) = bearer {
            return Ok((self.verify(&token)?, after));
        }
        let timeout = self.state.config.auth_timeout;
        let deadline = Instant::now() + timeout;
        loop {
            let message = tokio::select! {
                () = self.state.shutdown.cancelled() => {
                    return Err(Close::new(close_code::AWAY, "the server is shutting down"));
                }
                message = tokio::time::timeout_at(deadline, self.socket.recv()) => message,
            };
            let text = match message {
                Err(_) => {
                    return Err(Close::unauthenticated(format!(
                        "no token within {}",
                        humantime::format_duration(timeout)
                    )));
                }
                // The client left before saying anything: nothing to close.
                Ok(None | Some(Err(_)) | Some(Ok(Message::Close(_)))) => {
                    return Err(Close::new(close_code::NORMAL, "closed by the client"));
                }
                Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
                Ok(Some(Ok(Message::Binary(_)))) => {
                    return Err(Close::unauthenticated(
                        "the first message must be text: {\"token\":\"<jwt>\",\"after\":<position>}",
                    ));
                }
                Ok(Some(Ok(Message::Text(text)))) => text,
            };
            let hello: Hello = serde_json::from_str(text.as_str()).map_err(|_| {
                Close::unauthenticated(
                    "the first message must be {\"token\":\"<jwt>\",\"after\":<position>}",
                )
            })?;
            let token = hello
                .token
                .filter(|t| !t.trim().is_empty())
                .ok_or_else(|| Close::new(close_code::POLICY, NO_TOKEN))?;
            let caller = self.verify(token.trim())?;
            let after = match after_of_hello(hello.after.as_ref())? {
                Some(after) => Some(after),
                None => after,
            };
            return Ok((caller, after));
        }
    }

    fn verify(&self, token: &str) -> Result<Caller, Close> {
        let principal = self
            .state
            .auth
            .verify(token)
            .map_err(Close::unauthenticated)?;
        Ok(Caller {
            principal,
            expires_at: token_expiry(token),
        })
    }

    /// Streams the feed until the client leaves (`None`) or must be closed.
    async fn stream(&mut self, caller: &Caller, after: Option<u64>) -> Option<Close> {
        let state = self.state;
        let user_id = caller.principal.user_id.clone();
        let last = match FeedItem::last_position(&state.pool, &user_id).await {
            Ok(last) => last,
            Err(error) => {
                tracing::warn!(%error, "cannot read the feed's position");
                return Some(Close::new(
                    close_code::ERROR,
                    "the feed is unavailable; retry shortly",
                ));
            }
        };
        let requested = after.map(|a| i64::try_from(a).unwrap_or(i64::MAX));
        let (after, reset) = feed::resume_point(requested, last);
        let welcome = feed::welcome_message(&user_id, after, reset);
        if let Err(close) = self.send(Message::Text(welcome.into())).await {
            return close;
        }
        // The session's own token stops its watch when the socket ends for
        // any reason; the service's shutdown stops both.
        let stop = state.shutdown.child_token();
        let _stop_watch = stop.clone().drop_guard();
        let (sender, mut items) = mpsc::channel(state.config.queue);
        state.tasks.spawn(live::watch(
            state.pool.clone(),
            state.hub.clone(),
            user_id,
            Some(u64::try_from(after).unwrap_or(0)),
            state.watch_poll,
            sender,
            stop,
        ));
        let ping_every = state.config.ping_interval;
        let mut ping = tokio::time::interval_at(Instant::now() + ping_every, ping_every);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut heard_since_ping = true;
        // A socket lives no longer than its token.
        let expired = async {
            match caller.expires_at {
                Some(at) => {
                    let left = (at - chrono::Utc::now()).to_std().unwrap_or_default();
                    tokio::time::sleep(left).await;
                }
                None => std::future::pending().await,
            }
        };
        tokio::pin!(expired);
        loop {
            tokio::select! {
                biased;
                () = state.shutdown.cancelled() => {
                    return Some(Close::new(
                        close_code::AWAY,
                        "the server is shutting down; reconnect with your last position",
                    ));
                }
                () = &mut expired => {
                    metrics::counter!("skileez_ws_closed_total", "reason" => "expired").increment(1);
                    return Some(Close::new(
                        close_code::POLICY,
                        "the token has expired: reconnect with a new one and your last position",
                    ));
                }
                incoming = self.socket.recv() => match incoming {
                    Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return None,
                    // Pongs answer our pings; anything else from the client
                    // is ignored, but shows it is alive too.
                    Some(Ok(_)) => heard_since_ping = true,
                },
                _ = ping.tick() => {
                    if !heard_since_ping {
                        metrics::counter!("skileez_ws_closed_total", "reason" => "no_pong").increment(1);
                        return Some(Close::new(
                            close_code::AWAY,
                            format!("no answer to ping within {}", humantime::format_duration(ping_every)),
                        ));
                    }
                    heard_since_ping = false;
                    if let Err(close) = self.send(Message::Ping(Bytes::new())).await {
                        return close;
                    }
                }
                item = items.recv() => match item {
                    Some(Ok(item)) => {
                        if let Err(close) = self.send(Message::Text(item.to_message().into())).await {
                            return close;
                        }
                    }
                    Some(Err(error)) => {
                        tracing::warn!(%error, "the live feed failed");
                        return Some(Close::new(close_code::ERROR, "the feed is unavailable; reconnect with your last position"));
                    }
                    None => {
                        return Some(Close::new(close_code::ERROR, "the feed ended; reconnect with your last position"));
                    }
                },
            }
        }
    }

    /// Sends one message; a client that does not take it within
    /// `send_timeout` is too slow (`Err(Some(close))`); one that went away
    /// needs no close (`Err(None)`).
    async fn send(&mut self, message: Message) -> Result<(), Option<Close>> {
        let timeout = self.state.config.send_timeout;
        match tokio::time::timeout(timeout, self.socket.send(message)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(None),
            Err(_) => {
                metrics::counter!("skileez_ws_closed_total", "reason" => "slow").increment(1);
                Err(Some(Close::new(
                    close_code::AGAIN,
                    format!(
                        "too slow: a message waited over {}; reconnect with your last position",
                        humantime::format_duration(timeout)
                    ),
                )))
            }
        }
    }

    /// Sends the close frame and waits a moment for the client's, so that
    /// the browser reads the code and the reason. A client gone or stuck
    /// is just dropped.
    async fn close(mut self, close: &Close) {
        if close.code == close_code::NORMAL {
            return;
        }
        let sent = tokio::time::timeout(CLOSE_GRACE, self.socket.send(close.frame())).await;
        if !matches!(sent, Ok(Ok(()))) {
            return;
        }
        let _ = tokio::time::timeout(CLOSE_GRACE, async {
            while let Some(Ok(message)) = self.socket.recv().await {
                if matches!(message, Message::Close(_)) {
                    break;
                }
            }
        })
        .await;
    }
}

/// The address a WebSocket client connects to, for logs.
pub fn url(addr: SocketAddr) -> String {
    format!("ws://{addr}{PATH}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reason_fits_a_close_frame_and_stays_utf8() {
        assert_eq!(truncate("short", MAX_REASON), "short");
        let long = "é".repeat(100);
        let cut = truncate(&long, MAX_REASON);
        assert!(cut.len() <= MAX_REASON && cut.chars().all(|c| c == 'é'));
        assert!(NO_TOKEN.len() <= MAX_REASON, "{}", NO_TOKEN.len());
    }

    #[test]
    fn a_tokens_expiry_is_read_from_its_payload() {
        use base64::Engine as _;
        let encode = |json: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json);
        let token = format!(
            "{}.{}.sig",
            encode(r#"{"alg":"HS256"}"#),
            encode(r#"{"sub":"a","exp":1800000000}"#)
        );
        assert_eq!(
            token_expiry(&token),
            chrono::DateTime::from_timestamp(1_800_000_000, 0)
        );
        assert_eq!(token_expiry("garbage"), None);
        let no_exp = format!("x.{}.y", encode(r#"{"sub":"a"}"#));
        assert_eq!(token_expiry(&no_exp), None);
    }

    #[test]
    fn the_token_and_the_position_are_read_from_the_handshake() {
        let mut headers = HeaderMap::new();
        headers.append(
            header::SEC_WEBSOCKET_PROTOCOL,
            "skileez.v1, bearer.a.b.c".parse().unwrap(),
        );
        assert_eq!(offered_protocols(&headers), ["skileez.v1", "bearer.a.b.c"]);
        assert_eq!(after_of_query(Some("after=42")), Ok(Some(42)));
        assert_eq!(after_of_query(Some("x=1")), Ok(None));
        assert_eq!(after_of_query(None), Ok(None));
        assert_eq!(after_of_query(Some("after=-1")).unwrap_err().code, 1008);
        let json = |s: &str| serde_json::from_str::<serde_json::Value>(s).unwrap();
        assert_eq!(after_of_hello(Some(&json("7"))), Ok(Some(7)));
        assert_eq!(after_of_hello(Some(&json("\"7\""))), Ok(Some(7)));
        assert_eq!(after_of_hello(Some(&json("null"))), Ok(None));
        assert!(after_of_hello(Some(&json("1.5"))).is_err());
    }
}
