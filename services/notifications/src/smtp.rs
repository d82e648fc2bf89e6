//! The SMTP hand-off: a pool of lettre SMTP connections, and what their
//! errors mean for a retry.
//!
//! Why not lettre's own pooled `AsyncSmtpTransport`: lettre 0.11.23 opens
//! its sockets with Nagle's algorithm on, and writes a message's body and its
//! final `CRLF.CRLF` as two writes; the second waits for the server's delayed
//! ACK, 40 ms on Linux, so one connection hands over about 23 messages a
//! second whatever the server (measured here; lettre PR #1159 fixes it
//! upstream, unreleased at 0.11.23). This pool opens the TCP connection
//! itself with `TCP_NODELAY` and hands it to lettre's `AsyncSmtpConnection`
//! (greeting, EHLO, STARTTLS, AUTH, the SMTP exchange stay lettre's). Implicit
//! TLS (`smtps://`) still goes through lettre's own connect until then: a
//! TLS stream of our own would need a TLS set-up of our own.
//!
//! A connection is reused while it works: any failure drops it (lettre sends
//! QUIT), a connection idle for long is checked with NOOP first, and a send
//! that fails on a reused connection for a network reason (the server closed
//! it meanwhile) is tried once more on a fresh one before it counts.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use lettre::Address;
use lettre::address::Envelope;
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{AsyncSmtpConnection, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use secrecy::ExposeSecret;
use tokio::sync::Semaphore;

use crate::config::{ConfigError, SmtpConfig, redacted_smtp_url};

/// A pooled connection idle for longer is checked with NOOP before use.
const CHECK_AFTER_IDLE: Duration = Duration::from_secs(30);
/// A pooled connection idle for longer is dropped (servers close idle
/// sessions after a few minutes; RFC 5321 asks them to wait at least 5).
const MAX_IDLE: Duration = Duration::from_secs(120);

/// Why a message was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// Might work later: a 4xx reply, no connection, a timeout, TLS trouble.
    #[error("{0}")]
    Transient(String),
    /// Will not work: a 5xx reply (no such mailbox, refused), a bad address.
    #[error("{0}")]
    Permanent(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Security {
    /// Plain text (only allowed to a loopback host, see `config`).
    None,
    /// STARTTLS, required (`?tls=required`), or used if offered
    /// (`?tls=opportunistic`).
    StartTls { required: bool },
    /// TLS from the first byte (`smtps://`).
    Implicit,
}

/// Where and how to connect, from the URL.
#[derive(Debug, Clone)]
struct Target {
    host: String,
    port: u16,
    security: Security,
    hello: ClientId,
    credentials: Option<Credentials>,
}

impl Target {
    fn parse(config: &SmtpConfig) -> Result<Target, ConfigError> {
        let invalid = || ConfigError::Invalid {
            var: "SKILEEZ_SMTP_URL",
            value: redacted_smtp_url(config),
            expected: "smtp://host[:port], smtp://host[:port]?tls=required or smtps://host[:port]",
        };
        let url = url::Url::parse(config.url.expose_secret()).map_err(|_| invalid())?;
        let tls = url
            .query_pairs()
            .find(|(key, _)| key == "tls")
            .map(|(_, v)| v.into_owned());
        let (security, default_port) = match (url.scheme(), tls.as_deref()) {
            ("smtp", None) => (Security::None, 25),
            ("smtp", Some("required")) => (Security::StartTls { required: true }, 587),
            ("smtp", Some("opportunistic")) => (Security::StartTls { required: false }, 587),
            ("smtps", _) => (Security::Implicit, 465),
            _ => return Err(invalid()),
        };
        let host = url
            .host_str()
            .map(|h| h.trim_start_matches('[').trim_end_matches(']').to_owned())
            .filter(|h| !h.is_empty())
            .ok_or_else(invalid)?;
        let path = url.path().trim_matches('/');
        let hello = if path.is_empty() {
            ClientId::default()
        } else {
            ClientId::Domain(path.to_owned())
        };
        let credentials = match url.password() {
            Some(password) => Some(Credentials::new(
                percent_decode(url.username()),
                percent_decode(password),
            )),
            None if !url.username().is_empty() => Some(Credentials::new(
                percent_decode(url.username()),
                String::new(),
            )),
            None => None,
        };
        Ok(Target {
            host,
            port: url.port().unwrap_or(default_port),
            security,
            hello,
            credentials,
        })
    }

    fn tls(&self) -> Result<TlsParameters, lettre::transport::smtp::Error> {
        TlsParameters::new(self.host.clone())
    }
}

/// `%XX` escapes of a URL's user or password, decoded.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(byte) = text
                .get(i + 1..i + 3)
                .and_then(|hex| u8::from_str_radix(hex, 16).ok())
        {
            out.push(byte);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Sends formatted messages over a bounded pool of SMTP connections.
pub struct Mailer {
    target: Target,
    sender: Address,
    timeout: Duration,
    /// At most `pool_size` connections in use or idle.
    slots: Semaphore,
    idle: Mutex<Vec<(AsyncSmtpConnection, Instant)>>,
}

impl Mailer {
    /// Checks the URL; connects lazily, on the first send.
    pub fn new(config: &SmtpConfig) -> Result<Mailer, ConfigError> {
        Ok(Mailer {
            target: Target::parse(config)?,
            sender: config.from.email.clone(),
            timeout: config.timeout,
            slots: Semaphore::new(usize::try_from(config.pool_size).unwrap_or(1).max(1)),
            idle: Mutex::new(Vec::new()),
        })
    }

    /// Hands `message` (formatted, RFC 5322) for `to` to the SMTP server.
    /// Takes at most about twice the SMTP timeout (a stale connection, then
    /// a fresh one).
    pub async fn send(&self, to: &str, message: &[u8]) -> Result<(), SendError> {
        let to: Address = to
            .parse()
            .map_err(|_| SendError::Permanent(format!("not a valid address: {to:?}")))?;
        let envelope = Envelope::new(Some(self.sender.clone()), vec![to])
            .map_err(|e| SendError::Permanent(format!("bad envelope: {e}")))?;
        let _slot = self
            .slots
            .acquire()
            .await
            .map_err(|_| SendError::Transient("the mailer is closed".to_owned()))?;
        let started = Instant::now();
        let result = self.send_on_pool(&envelope, message).await;
        metrics::histogram!("skileez_smtp_send_seconds").record(started.elapsed().as_secs_f64());
        result
    }

    async fn send_on_pool(&self, envelope: &Envelope, message: &[u8]) -> Result<(), SendError> {
        if let Some(mut conn) = self.take_idle().await {
            match self.send_on(&mut conn, envelope, message).await {
                Ok(()) => {
                    self.put_idle(conn);
                    return Ok(());
                }
                // The server answered: that is the answer.
                Err(Failure::Smtp(error)) => return Err(classify(&error)),
                // The connection let us down: one more go on a fresh one.
                Err(Failure::Connection(error)) => {
                    tracing::debug!(error = %one_line(&error), "pooled SMTP connection failed; reconnecting");
                }
                Err(Failure::TimedOut) => return Err(timed_out(self.timeout)),
            }
        }
        let mut conn = tokio::time::timeout(self.timeout, self.connect())
            .await
            .map_err(|_| timed_out(self.timeout))??;
        match self.send_on(&mut conn, envelope, message).await {
            Ok(()) => {
                self.put_idle(conn);
                Ok(())
            }
            Err(Failure::Smtp(error) | Failure::Connection(error)) => Err(classify(&error)),
            Err(Failure::TimedOut) => Err(timed_out(self.timeout)),
        }
    }

    async fn send_on(
        &self,
        conn: &mut AsyncSmtpConnection,
        envelope: &Envelope,
        message: &[u8],
    ) -> Result<(), Failure> {
        match tokio::time::timeout(self.timeout, conn.send(envelope, message)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(error)) if error.status().is_some() => Err(Failure::Smtp(error)),
            Ok(Err(error)) => Err(Failure::Connection(error)),
            Err(_) => {
                // Mid-exchange: the connection is in no state to reuse.
                conn.abort().await;
                Err(Failure::TimedOut)
            }
        }
    }

    /// A connection, greeted, secured and authenticated as configured.
    async fn connect(&self) -> Result<AsyncSmtpConnection, SendError> {
        self.connect_smtp().await.map_err(|error| match error {
            Connect::Io(error) => SendError::Transient(format!(
                "cannot connect to {}:{}: {error}",
                self.target.host, self.target.port
            )),
            Connect::Smtp(error) => classify(&error),
        })
    }

    async fn connect_smtp(&self) -> Result<AsyncSmtpConnection, Connect> {
        let target = &self.target;
        let mut conn = match target.security {
            Security::Implicit => {
                AsyncSmtpConnection::connect_tokio1(
                    (target.host.as_str(), target.port),
                    Some(self.timeout),
                    &target.hello,
                    Some(target.tls()?),
                    None,
                )
                .await?
            }
            Security::None | Security::StartTls { .. } => {
                let stream = tokio::net::TcpStream::connect((target.host.as_str(), target.port))
                    .await
                    .map_err(Connect::Io)?;
                // The point of this pool: see the module docs.
                stream.set_nodelay(true).map_err(Connect::Io)?;
                AsyncSmtpConnection::connect_with_transport(Box::new(stream), &target.hello).await?
            }
        };
        if let Security::StartTls { required } = target.security
            && (required || conn.can_starttls())
        {
            conn.starttls(target.tls()?, &target.hello).await?;
        }
        if let Some(credentials) = &target.credentials {
            conn.auth(&[Mechanism::Plain, Mechanism::Login], credentials)
                .await?;
        }
        Ok(conn)
    }

    /// An idle connection that still answers, if there is one.
    async fn take_idle(&self) -> Option<AsyncSmtpConnection> {
        loop {
            let (mut conn, since) = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop()?;
            let idle = since.elapsed();
            if idle > MAX_IDLE || conn.has_broken() {
                conn.abort().await;
                continue;
            }
            if idle > CHECK_AFTER_IDLE
                && !tokio::time::timeout(self.timeout, conn.test_connected())
                    .await
                    .unwrap_or(false)
            {
                conn.abort().await;
                continue;
            }
            return Some(conn);
        }
    }

    fn put_idle(&self, conn: AsyncSmtpConnection) {
        if !conn.has_broken() {
            self.idle
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push((conn, Instant::now()));
        }
    }
}

enum Failure {
    /// The server answered with an error code.
    Smtp(lettre::transport::smtp::Error),
    /// No answer: network, TLS, protocol.
    Connection(lettre::transport::smtp::Error),
    TimedOut,
}

enum Connect {
    Io(std::io::Error),
    Smtp(lettre::transport::smtp::Error),
}

impl From<lettre::transport::smtp::Error> for Connect {
    fn from(error: lettre::transport::smtp::Error) -> Self {
        Connect::Smtp(error)
    }
}

fn timed_out(timeout: Duration) -> SendError {
    SendError::Transient(format!("the SMTP server did not answer within {timeout:?}"))
}

fn classify(error: &lettre::transport::smtp::Error) -> SendError {
    let text = one_line(error);
    if error.is_permanent() {
        SendError::Permanent(text)
    } else {
        SendError::Transient(text)
    }
}

/// The error and its causes on one line.
fn one_line(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text.replace(['\r', '\n'], " ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::smtp_url;

    fn target(url: &str) -> Target {
        let config = SmtpConfig {
            url: smtp_url(url, None).unwrap(),
            from: "noreply@skileez.test".parse().unwrap(),
            pool_size: 1,
            timeout: Duration::from_secs(1),
        };
        Target::parse(&config).unwrap()
    }

    #[test]
    fn the_url_says_how_to_connect() {
        let plain = target("smtp://127.0.0.1:1025");
        assert_eq!((plain.host.as_str(), plain.port), ("127.0.0.1", 1025));
        assert_eq!(plain.security, Security::None);
        assert!(plain.credentials.is_none());
        let starttls = target("smtp://mailer:p%40ss@mail.example.com?tls=required");
        assert_eq!(starttls.port, 587);
        assert_eq!(starttls.security, Security::StartTls { required: true });
        assert_eq!(
            starttls.credentials,
            Some(Credentials::new("mailer".into(), "p@ss".into()))
        );
        let implicit = target("smtps://mail.example.com/ehlo.example.com");
        assert_eq!(
            (implicit.port, implicit.security),
            (465, Security::Implicit)
        );
        assert_eq!(implicit.hello, ClientId::Domain("ehlo.example.com".into()));
        assert_eq!(target("smtp://[::1]:25").host, "::1");
    }

    #[test]
    fn percent_escapes_decode_and_stray_percents_stay() {
        assert_eq!(percent_decode("a%3Ab%2Fc"), "a:b/c");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz"), "%zz");
    }
}
