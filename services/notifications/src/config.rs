//! The service's configuration, read once from the environment and validated
//! there: a bad value stops the start with a message naming the variable and
//! the form it expects.
//!
//! | variable | default | |
//! |---|---|---|
//! | `DATABASE_URL` | `postgres://postgres@127.0.0.1:5432/skileez` | the shared database |
//! | `SKILEEZ_DATABASE_MAX_CONNECTIONS` | 16 | |
//! | `NATS_URL` | `nats://127.0.0.1:4222` | |
//! | `SKILEEZ_STREAM_REPLICAS` | 1 | |
//! | `SKILEEZ_NOTIFICATIONS_GRPC_ADDR` | `127.0.0.1:50052` | port 0 picks a free one |
//! | `SKILEEZ_JWT_SECRET`, `…_FILE`, `SKILEEZ_JWT_PUBLIC_KEY_FILE`, `SKILEEZ_JWT_ISSUER`, `SKILEEZ_JWT_AUDIENCE` | | as scheduling (`skileez-auth`) |
//! | `SKILEEZ_SMTP_URL` | `smtp://127.0.0.1:1025` | lettre's form: `smtps://host[:465]`, `smtp://host[:587]?tls=required` (STARTTLS), credentials as `user:password@`; plain `smtp://` only to a loopback host |
//! | `SKILEEZ_SMTP_PASSWORD_FILE` | | the password, instead of the URL's |
//! | `SKILEEZ_MAIL_FROM` | `Skileez <noreply@skileez.localhost>` | also the domain of Message-IDs and the invites' ORGANIZER |
//! | `SKILEEZ_SMTP_POOL_SIZE` | 4 | SMTP connections kept per instance |
//! | `SKILEEZ_SMTP_TIMEOUT` | 30s | per SMTP command |
//! | `SKILEEZ_DELIVERY_CONCURRENCY` | 8 | e-mails in flight per instance |
//! | `SKILEEZ_DELIVERY_MAX_ATTEMPTS` | 10 | then a dead letter |
//! | `SKILEEZ_DELIVERY_BACKOFF` | `10s,30m` | first retry delay, then doubling up to the second |
//! | `SKILEEZ_DELIVERY_POLL` | 1s | how often the queue is looked at without a wake-up |
//! | `SKILEEZ_DELIVERY_LEASE` | 2m | how long a send may take before another instance retries it |
//! | `SKILEEZ_NOTIFICATION_RETENTION` | 30days | read in-app notifications older than this are purged |
//! | `SKILEEZ_NOTIFICATION_PURGE_AT` | 02:00 | the purge's time of day, UTC |
//! | `SKILEEZ_WATCH_POLL` | 30s | a watcher's safety net against a lost live message |
//! | `SKILEEZ_LIVE_FEED_RETENTION` | 30days | live feed items older than this are purged (with the notifications) |
//! | `SKILEEZ_CORS_ORIGINS` | none | browser origins allowed to call the gRPC port (gRPC-Web); none: no CORS headers |
//! | `SKILEEZ_WS_ADDR` | unset: off | the WebSocket for browsers (`/v1/live`); port 0 picks a free one |
//! | `SKILEEZ_WS_PING_INTERVAL` | 20s | a ping per socket; no answer by the next one drops the client |
//! | `SKILEEZ_WS_SEND_TIMEOUT` | 10s | a client that does not take a message within this is too slow: dropped |
//! | `SKILEEZ_WS_QUEUE` | 256 | items queued per socket before its watch waits (and later catches up from the store) |
//! | `SKILEEZ_WS_AUTH_TIMEOUT` | 10s | how long a socket without a token in its handshake may take to send one |
//! | `SKILEEZ_WS_MAX_CONNECTIONS` | 10000 | sockets per instance |

use std::{net::SocketAddr, time::Duration};

use chrono::NaiveTime;
use lettre::message::Mailbox;
use secrecy::{ExposeSecret, SecretString};
use skileez_auth::JwtConfig;

pub use skileez_auth::ConfigError;

#[derive(Debug, Clone)]
pub struct Config {
    /// May hold a password, hence secret.
    pub database_url: SecretString,
    pub database_max_connections: u32,
    pub nats_url: String,
    pub stream_replicas: usize,
    /// NATS authentication and TLS (`skileez_bus::NatsSecurity`).
    pub nats_security: skileez_bus::NatsSecurity,
    /// Whether this service creates the streams and bucket, or only checks
    /// them (`SKILEEZ_NATS_MANAGE_TOPOLOGY`).
    pub nats_manage_topology: bool,
    pub grpc_addr: SocketAddr,
    pub jwt: JwtConfig,
    pub smtp: SmtpConfig,
    pub delivery: DeliveryConfig,
    pub retention: RetentionConfig,
    pub watch_poll: Duration,
    /// The WebSocket for browsers; `None`: off.
    pub ws: Option<WsConfig>,
    /// Origins whose pages may call the gRPC port (gRPC-Web); empty: none.
    pub cors_origins: Vec<String>,
    /// TLS of the gRPC port (`skileez-edge`, `SKILEEZ_TLS_*`); the
    /// WebSocket is served behind the platform's TLS-terminating ingress.
    pub tls: Option<skileez_edge::ServerTls>,
    pub limits: skileez_edge::GrpcLimits,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WsConfig {
    pub addr: SocketAddr,
    pub ping_interval: Duration,
    pub send_timeout: Duration,
    pub queue: usize,
    pub auth_timeout: Duration,
    pub max_connections: usize,
}

impl WsConfig {
    /// `None` when `SKILEEZ_WS_ADDR` is unset.
    pub fn from_lookup(
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Option<Self>, ConfigError> {
        let env = skileez_config::Env::new(lookup);
        let Some(addr) = env.parse_opt(
            "SKILEEZ_WS_ADDR",
            "a socket address such as 127.0.0.1:50053",
        )?
        else {
            return Ok(None);
        };
        Ok(Some(WsConfig {
            addr,
            ping_interval: env.duration("SKILEEZ_WS_PING_INTERVAL", Duration::from_secs(20))?,
            send_timeout: env.duration("SKILEEZ_WS_SEND_TIMEOUT", Duration::from_secs(10))?,
            queue: env.positive("SKILEEZ_WS_QUEUE", 256)?,
            auth_timeout: env.duration("SKILEEZ_WS_AUTH_TIMEOUT", Duration::from_secs(10))?,
            max_connections: env.positive("SKILEEZ_WS_MAX_CONNECTIONS", 10_000)?,
        }))
    }
}

/// `SKILEEZ_CORS_ORIGINS` (see `skileez-web`).
pub fn cors_origins(lookup: &dyn Fn(&str) -> Option<String>) -> Result<Vec<String>, ConfigError> {
    let value = lookup(skileez_web::CORS_ORIGINS_VAR).unwrap_or_default();
    skileez_web::parse_origins(&value).map_err(|_| ConfigError::Invalid {
        var: skileez_web::CORS_ORIGINS_VAR,
        value,
        expected: skileez_web::ORIGINS_EXPECTED,
    })
}

#[derive(Debug, Clone)]
pub struct SmtpConfig {
    /// lettre's connection URL, the password from the file put in.
    pub url: SecretString,
    pub from: Mailbox,
    pub pool_size: u32,
    pub timeout: Duration,
}

impl SmtpConfig {
    /// Where Message-IDs live: the sender's domain.
    pub fn message_id_domain(&self) -> &str {
        self.from.email.domain()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryConfig {
    pub concurrency: usize,
    pub max_attempts: u32,
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    pub poll: Duration,
    pub lease: Duration,
}

impl DeliveryConfig {
    /// The wait after the `attempt`-th failed attempt (1-based): doubling
    /// from `backoff_min`, at most `backoff_max`, less up to a fifth at
    /// random so that a burst of failures does not come back as a burst.
    pub fn backoff(&self, attempt: u32, jitter: f64) -> Duration {
        let doublings = attempt.saturating_sub(1).min(30);
        let base = self
            .backoff_min
            .saturating_mul(1u32 << doublings)
            .min(self.backoff_max);
        base.mul_f64(1.0 - 0.2 * jitter.clamp(0.0, 1.0))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetentionConfig {
    pub read_age: Duration,
    /// Live feed items older than this are purged.
    pub feed_age: Duration,
    /// UTC.
    pub purge_at: NaiveTime,
}

pub const DEFAULT_GRPC_ADDR: &str = "127.0.0.1:50052";
pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/skileez";
pub const DEFAULT_NATS_URL: &str = "nats://127.0.0.1:4222";
pub const DEFAULT_SMTP_URL: &str = "smtp://127.0.0.1:1025";
pub const DEFAULT_MAIL_FROM: &str = "Skileez <noreply@skileez.localhost>";

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads configuration through `lookup`, so tests need not touch the
    /// process environment.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let env = skileez_config::Env::new(&lookup);
        let (backoff_min, backoff_max) = env.duration_pair(
            "SKILEEZ_DELIVERY_BACKOFF",
            (Duration::from_secs(10), Duration::from_secs(30 * 60)),
            "two durations, the first retry's delay and the longest, such as 10s,30m",
        )?;
        let smtp = SmtpConfig {
            url: smtp_url(
                &env.string("SKILEEZ_SMTP_URL")
                    .unwrap_or_else(|| DEFAULT_SMTP_URL.to_owned()),
                env.string("SKILEEZ_SMTP_PASSWORD_FILE").as_deref(),
            )?,
            from: {
                let value = env
                    .string("SKILEEZ_MAIL_FROM")
                    .unwrap_or_else(|| DEFAULT_MAIL_FROM.to_owned());
                value.parse().map_err(|_| ConfigError::Invalid {
                    var: "SKILEEZ_MAIL_FROM",
                    value,
                    expected: "a mailbox such as `Skileez <noreply@skileez.com>`",
                })?
            },
            pool_size: env.positive("SKILEEZ_SMTP_POOL_SIZE", 4)?,
            timeout: env.duration("SKILEEZ_SMTP_TIMEOUT", Duration::from_secs(30))?,
        };
        let delivery = DeliveryConfig {
            concurrency: env.positive("SKILEEZ_DELIVERY_CONCURRENCY", 8)?,
            max_attempts: env.positive("SKILEEZ_DELIVERY_MAX_ATTEMPTS", 10)?,
            backoff_min,
            backoff_max,
            poll: env.duration("SKILEEZ_DELIVERY_POLL", Duration::from_secs(1))?,
            lease: env.duration("SKILEEZ_DELIVERY_LEASE", Duration::from_secs(120))?,
        };
        // A send that is still running when its lease ends is taken by
        // another instance: the lease must outlast a slow SMTP exchange.
        if delivery.lease < smtp.timeout.saturating_mul(2) {
            return Err(ConfigError::Invalid {
                var: "SKILEEZ_DELIVERY_LEASE",
                value: humantime::format_duration(delivery.lease).to_string(),
                expected: "at least twice SKILEEZ_SMTP_TIMEOUT",
            });
        }
        Ok(Config {
            database_url: env.database_url(DEFAULT_DATABASE_URL)?,
            database_max_connections: env.positive("SKILEEZ_DATABASE_MAX_CONNECTIONS", 16)?,
            nats_url: env
                .string("NATS_URL")
                .unwrap_or_else(|| DEFAULT_NATS_URL.to_owned()),
            stream_replicas: env.positive("SKILEEZ_STREAM_REPLICAS", 1)?,
            nats_security: skileez_bus::NatsSecurity::from_env(&env)?,
            nats_manage_topology: env.flag("SKILEEZ_NATS_MANAGE_TOPOLOGY", true)?,
            grpc_addr: env.parse(
                "SKILEEZ_NOTIFICATIONS_GRPC_ADDR",
                DEFAULT_GRPC_ADDR,
                "a socket address such as 127.0.0.1:50052",
            )?,
            jwt: JwtConfig::from_lookup(&lookup)?,
            smtp,
            delivery,
            retention: RetentionConfig {
                read_age: env.duration(
                    "SKILEEZ_NOTIFICATION_RETENTION",
                    Duration::from_secs(30 * 86_400),
                )?,
                feed_age: env.duration(
                    "SKILEEZ_LIVE_FEED_RETENTION",
                    Duration::from_secs(30 * 86_400),
                )?,
                purge_at: env.time_of_day(
                    "SKILEEZ_NOTIFICATION_PURGE_AT",
                    NaiveTime::from_hms_opt(2, 0, 0).unwrap_or_default(),
                )?,
            },
            watch_poll: env.duration("SKILEEZ_WATCH_POLL", Duration::from_secs(30))?,
            ws: WsConfig::from_lookup(&lookup)?,
            cors_origins: cors_origins(&lookup)?,
            tls: skileez_edge::ServerTls::from_env(&env)?,
            limits: skileez_edge::GrpcLimits::from_env(&env)?,
        })
    }
}

/// Checks the SMTP URL (scheme, TLS, host) and puts in the password from
/// `password_file`. Plain SMTP (no TLS, or opportunistic TLS that a network
/// attacker can strip) is only for a server on this machine.
pub fn smtp_url(value: &str, password_file: Option<&str>) -> Result<SecretString, ConfigError> {
    const VAR: &str = "SKILEEZ_SMTP_URL";
    const EXPECTED: &str = "smtps://[user:password@]host[:port], smtp://[user:password@]host[:port]?tls=required, or plain smtp:// to a loopback host";
    let invalid = |expected: &'static str| ConfigError::Invalid {
        var: VAR,
        // The URL may hold a password: never echo it.
        value: redact(value),
        expected,
    };
    let mut url = url::Url::parse(value.trim()).map_err(|_| invalid(EXPECTED))?;
    let tls = url
        .query_pairs()
        .find(|(key, _)| key == "tls")
        .map(|(_, v)| v.into_owned());
    let encrypted = match (url.scheme(), tls.as_deref()) {
        ("smtps", _) => true,
        ("smtp", Some("required")) => true,
        ("smtp", None | Some("opportunistic")) => false,
        _ => return Err(invalid(EXPECTED)),
    };
    // `smtp` is no special scheme to the URL standard, so the host comes
    // back as text, IP addresses included.
    let host = url
        .host_str()
        .filter(|h| !h.is_empty())
        .ok_or_else(|| invalid(EXPECTED))?;
    let loopback = host.eq_ignore_ascii_case("localhost")
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if !encrypted && !loopback {
        return Err(invalid(
            "TLS to a remote SMTP server: smtps://host or smtp://host?tls=required (plain SMTP only to 127.0.0.1 or localhost)",
        ));
    }
    if let Some(path) = password_file {
        let password = std::fs::read_to_string(path).map_err(|e| ConfigError::File {
            var: "SKILEEZ_SMTP_PASSWORD_FILE",
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
        if url.username().is_empty() {
            return Err(invalid(
                "a user name in the URL (smtps://user@host) to go with SKILEEZ_SMTP_PASSWORD_FILE",
            ));
        }
        url.set_password(Some(password.trim_end_matches(['\r', '\n'])))
            .map_err(|()| invalid(EXPECTED))?;
    }
    Ok(SecretString::from(url.to_string()))
}

/// The URL without its password, for messages.
pub fn redact(value: &str) -> String {
    match url::Url::parse(value.trim()) {
        Ok(mut url) if url.password().is_some() => {
            let _ = url.set_password(Some("***"));
            url.to_string()
        }
        Ok(url) => url.to_string(),
        Err(_) => "(unparsable)".to_owned(),
    }
}

/// `SmtpConfig::url` without the password, for logs.
pub fn redacted_smtp_url(config: &SmtpConfig) -> String {
    redact(config.url.expose_secret())
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    fn config(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let mut map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        map.entry("SKILEEZ_JWT_SECRET".into())
            .or_insert_with(|| SECRET.into());
        Config::from_lookup(|name| map.get(name).cloned())
    }

    #[test]
    fn defaults_are_sane() {
        let config = config(&[]).unwrap();
        assert_eq!(config.grpc_addr.to_string(), DEFAULT_GRPC_ADDR);
        assert_eq!(config.smtp.message_id_domain(), "skileez.localhost");
        assert_eq!(
            config.retention.purge_at,
            NaiveTime::from_hms_opt(2, 0, 0).unwrap()
        );
        assert_eq!(config.delivery.max_attempts, 10);
        assert_eq!(config.jwt.audience, "skileez-scheduling");
        assert_eq!(config.ws, None, "the WebSocket is off unless asked for");
        assert!(config.cors_origins.is_empty());
    }

    #[test]
    fn the_websocket_is_configured_by_its_address() {
        let config = config(&[
            ("SKILEEZ_WS_ADDR", "127.0.0.1:0"),
            ("SKILEEZ_WS_PING_INTERVAL", "500ms"),
            (
                "SKILEEZ_CORS_ORIGINS",
                "https://app.test, http://localhost:5173",
            ),
        ])
        .unwrap();
        let ws = config.ws.unwrap();
        assert_eq!(ws.addr.to_string(), "127.0.0.1:0");
        assert_eq!(ws.ping_interval, Duration::from_millis(500));
        assert_eq!(ws.send_timeout, Duration::from_secs(10));
        assert_eq!(ws.queue, 256);
        assert_eq!(
            config.cors_origins,
            ["https://app.test", "http://localhost:5173"]
        );
    }

    #[test]
    fn plain_smtp_is_for_loopback_only() {
        for ok in [
            "smtp://127.0.0.1:1025",
            "smtp://localhost:25",
            "smtp://[::1]:25",
            "smtps://mail.example.com",
            "smtp://mail.example.com:587?tls=required",
        ] {
            assert!(smtp_url(ok, None).is_ok(), "{ok}");
        }
        for bad in [
            "smtp://mail.example.com:25",
            "smtp://mail.example.com:587?tls=opportunistic",
            "http://mail.example.com",
            "smtp://u:hunter2@mail.example.com",
            "not a url",
        ] {
            let err = smtp_url(bad, None).unwrap_err();
            assert!(err.to_string().contains("SKILEEZ_SMTP_URL"), "{err}");
            assert!(!err.to_string().contains("hunter2"), "{err}");
        }
    }

    #[test]
    fn the_password_file_goes_into_the_url_and_not_into_messages() {
        let dir = std::env::temp_dir().join(format!("skileez-smtp-{}", std::process::id()));
        std::fs::write(&dir, "s3cr:et/pw\n").unwrap();
        let url = smtp_url("smtps://mailer@mail.example.com", dir.to_str()).unwrap();
        let _ = std::fs::remove_file(&dir);
        let parsed = url::Url::parse(url.expose_secret()).unwrap();
        assert_eq!(parsed.username(), "mailer");
        assert_eq!(parsed.password(), Some("s3cr%3Aet%2Fpw"));
        assert!(!redact(url.expose_secret()).contains("s3cr"));
        let err = smtp_url("smtps://mail.example.com", Some("/nonexistent")).unwrap_err();
        assert!(
            err.to_string().contains("SKILEEZ_SMTP_PASSWORD_FILE"),
            "{err}"
        );
    }

    #[test]
    fn bad_values_name_their_variable() {
        for (var, value) in [
            ("SKILEEZ_MAIL_FROM", "nobody"),
            ("SKILEEZ_DELIVERY_BACKOFF", "10s"),
            ("SKILEEZ_DELIVERY_BACKOFF", "1m,10s"),
            ("SKILEEZ_DELIVERY_MAX_ATTEMPTS", "0"),
            ("SKILEEZ_NOTIFICATION_PURGE_AT", "2am"),
            ("SKILEEZ_NOTIFICATION_RETENTION", "a while"),
            ("SKILEEZ_DELIVERY_LEASE", "10s"),
            ("SKILEEZ_NOTIFICATIONS_GRPC_ADDR", "localhost"),
            ("SKILEEZ_WS_ADDR", "localhost"),
            ("SKILEEZ_CORS_ORIGINS", "https://app.test/path"),
            ("SKILEEZ_LIVE_FEED_RETENTION", "soon"),
        ] {
            let err = config(&[(var, value)]).unwrap_err();
            assert!(err.to_string().contains(var), "{var}: {err}");
        }
    }

    #[test]
    fn backoff_doubles_up_to_its_ceiling_with_some_jitter() {
        let delivery = config(&[("SKILEEZ_DELIVERY_BACKOFF", "1s,10s")])
            .unwrap()
            .delivery;
        assert_eq!(delivery.backoff(1, 0.0), Duration::from_secs(1));
        assert_eq!(delivery.backoff(2, 0.0), Duration::from_secs(2));
        assert_eq!(delivery.backoff(4, 0.0), Duration::from_secs(8));
        assert_eq!(delivery.backoff(5, 0.0), Duration::from_secs(10));
        assert_eq!(delivery.backoff(60, 0.0), Duration::from_secs(10));
        assert_eq!(delivery.backoff(1, 1.0), Duration::from_millis(800));
    }
}
