//! Who is calling: bearer JWTs verified with the configured key, issuer and
//! audience — the rules every Skileez service applies to its callers.
//!
//! - [`JwtConfig::from_lookup`] reads the key (`SKILEEZ_JWT_SECRET`, or
//!   `SKILEEZ_JWT_SECRET_FILE`, or `SKILEEZ_JWT_PUBLIC_KEY_FILE`), the issuer
//!   (`SKILEEZ_JWT_ISSUER`, default `skileez`) and the audience
//!   (`SKILEEZ_JWT_AUDIENCE`, default `skileez-scheduling`), so that one
//!   token is good for every service of the platform.
//! - [`Authenticator::authenticate`] verifies the value of an
//!   `authorization: Bearer <jwt>` header (gRPC metadata, an HTTP header or a
//!   WebSocket handshake alike) and returns the [`Principal`].
//!
//! The rules are the scheduling service's (`services/scheduling/src/auth.rs`,
//! which predates this crate): HS256 with a secret of at least 32 bytes, or
//! RS256 / EdDSA against a PEM public key, and never both, so an HS256 token
//! keyed with the public key is refused; `exp`, `iss`, `aud` and `sub`
//! required; 30 s of clock leeway; the role one of `student`, `coach`,
//! `admin`, `service`; the subject a well-formed user id.
//!
//! **Crate invariant:** no transport. It knows tokens, not gRPC or HTTP, so
//! that every edge (gRPC, gRPC-Web, WebSocket) shares it.

use std::{
    path::PathBuf,
    time::{SystemTime, UNIX_EPOCH},
};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
pub use skileez_config::ConfigError;
use skileez_config::Env;
use skileez_domain::ActorRole;

pub const DEFAULT_JWT_ISSUER: &str = "skileez";
pub const DEFAULT_JWT_AUDIENCE: &str = "skileez-scheduling";

/// User ids are at most this long (the directory's limit).
pub const MAX_USER_ID_LEN: usize = 128;

/// How tokens are verified.
#[derive(Debug, Clone)]
pub struct JwtConfig {
    pub key: JwtKey,
    pub issuer: String,
    pub audience: String,
}

#[derive(Debug, Clone)]
pub enum JwtKey {
    /// HS256 shared secret.
    Secret(SecretString),
    /// PEM public key for RS256 or EdDSA (Ed25519) tokens.
    PublicKeyPem { pem: String, path: PathBuf },
}

impl JwtConfig {
    /// Reads the JWT settings through `lookup` (the process environment in
    /// `main`, a map in tests).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        Self::from_env(&Env::new(&lookup))
    }

    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let key = if let Some(secret) = hs256_secret(env)? {
            JwtKey::Secret(secret)
        } else if let Some(path) = env.string("SKILEEZ_JWT_PUBLIC_KEY_FILE") {
            let pem = skileez_config::read_file("SKILEEZ_JWT_PUBLIC_KEY_FILE", &path)?;
            JwtKey::PublicKeyPem {
                pem,
                path: PathBuf::from(path),
            }
        } else {
            return Err(ConfigError::Missing {
                var: "SKILEEZ_JWT_SECRET",
                hint: "set SKILEEZ_JWT_SECRET (HS256), SKILEEZ_JWT_SECRET_FILE, or SKILEEZ_JWT_PUBLIC_KEY_FILE (RS256/EdDSA PEM)",
            });
        };
        Ok(JwtConfig {
            key,
            issuer: env.string_or("SKILEEZ_JWT_ISSUER", DEFAULT_JWT_ISSUER),
            audience: env.string_or("SKILEEZ_JWT_AUDIENCE", DEFAULT_JWT_AUDIENCE),
        })
    }
}

/// The HS256 secret from `SKILEEZ_JWT_SECRET` or the file named by
/// `SKILEEZ_JWT_SECRET_FILE`, if either is set; refused when shorter than
/// 32 bytes. Services that mint tokens (timers, the CLI) read it here too.
pub fn hs256_secret(env: &Env) -> Result<Option<SecretString>, ConfigError> {
    let Some((var, secret)) = env.secret("SKILEEZ_JWT_SECRET", "SKILEEZ_JWT_SECRET_FILE")? else {
        return Ok(None);
    };
    // HS256 with a short key is brute-forceable; RFC 7518 §3.2 asks for at
    // least the hash size (32 bytes).
    if secret.expose_secret().len() < 32 {
        return Err(ConfigError::Invalid {
            var,
            value: skileez_config::REDACTED.to_owned(),
            expected: "an HS256 secret of at least 32 bytes",
        });
    }
    Ok(Some(secret))
}

/// What a caller may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    Student,
    Coach,
    Admin,
    /// Another platform service acting for the system.
    Service,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Student => "student",
            Role::Coach => "coach",
            Role::Admin => "admin",
            Role::Service => "service",
        }
    }

    pub fn parse(role: &str) -> Option<Role> {
        match role {
            "student" => Some(Role::Student),
            "coach" => Some(Role::Coach),
            "admin" => Some(Role::Admin),
            "service" => Some(Role::Service),
            _ => None,
        }
    }
}

impl From<ActorRole> for Role {
    fn from(role: ActorRole) -> Role {
        match role {
            ActorRole::Student => Role::Student,
            ActorRole::Coach => Role::Coach,
            ActorRole::Admin => Role::Admin,
            ActorRole::Service => Role::Service,
        }
    }
}

impl From<Role> for ActorRole {
    fn from(role: Role) -> ActorRole {
        match role {
            Role::Student => ActorRole::Student,
            Role::Coach => ActorRole::Coach,
            Role::Admin => ActorRole::Admin,
            Role::Service => ActorRole::Service,
        }
    }
}

/// The authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub user_id: String,
    pub role: Role,
}

impl Principal {
    pub fn is_privileged(&self) -> bool {
        matches!(self.role, Role::Admin | Role::Service)
    }
}

/// Why a caller is not authenticated; the text is safe to send back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Unauthenticated(pub String);

/// The claims we issue and accept.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub role: String,
    pub exp: u64,
    pub iat: u64,
    pub iss: String,
    pub aud: String,
}

/// Verifies bearer tokens. Cheap to clone.
#[derive(Clone)]
pub struct Authenticator {
    key: DecodingKey,
    validation: Validation,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("algorithms", &self.validation.algorithms)
            .finish_non_exhaustive()
    }
}

impl Authenticator {
    pub fn new(config: &JwtConfig) -> Result<Self, ConfigError> {
        let (key, algorithm) = match &config.key {
            JwtKey::Secret(secret) => (
                DecodingKey::from_secret(secret.expose_secret().as_bytes()),
                Algorithm::HS256,
            ),
            JwtKey::PublicKeyPem { pem, path } => {
                if let Ok(key) = DecodingKey::from_rsa_pem(pem.as_bytes()) {
                    (key, Algorithm::RS256)
                } else {
                    let key = DecodingKey::from_ed_pem(pem.as_bytes()).map_err(|_| {
                        ConfigError::Invalid {
                            var: "SKILEEZ_JWT_PUBLIC_KEY_FILE",
                            value: path.display().to_string(),
                            expected: "a PEM RSA or Ed25519 public key",
                        }
                    })?;
                    (key, Algorithm::EdDSA)
                }
            }
        };
        let mut validation = Validation::new(algorithm);
        validation.set_issuer(&[&config.issuer]);
        validation.set_audience(&[&config.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.leeway = 30;
        Ok(Self { key, validation })
    }

    /// Verifies the value of an `authorization` header (`Bearer <jwt>`);
    /// `None` when the header is absent.
    pub fn authenticate(&self, authorization: Option<&str>) -> Result<Principal, Unauthenticated> {
        let header = authorization.ok_or_else(|| {
            unauthenticated("no authorization metadata: send `authorization: Bearer <token>`")
        })?;
        let token = header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))
            .ok_or_else(|| unauthenticated("the authorization metadata must be `Bearer <token>`"))?
            .trim();
        self.verify(token)
    }

    /// Verifies a bare token (for edges that carry it elsewhere than in a
    /// header, such as a WebSocket subprotocol).
    pub fn verify(&self, token: &str) -> Result<Principal, Unauthenticated> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation)
            .map_err(|e| Unauthenticated(describe_jwt_error(&e)))?;
        let role = Role::parse(&data.claims.role).ok_or_else(|| {
            unauthenticated("the token's role must be one of student, coach, admin, service")
        })?;
        if !valid_user_id(&data.claims.sub) {
            return Err(unauthenticated("the token's sub is not a valid user id"));
        }
        Ok(Principal {
            user_id: data.claims.sub,
            role,
        })
    }
}

/// Mints HS256 tokens: development tokens (`skileez token`), the timer
/// service's own, and tests.
pub struct TokenIssuer {
    key: EncodingKey,
    issuer: String,
    audience: String,
}

impl TokenIssuer {
    pub fn new(secret: &str, issuer: &str, audience: &str) -> Self {
        Self {
            key: EncodingKey::from_secret(secret.as_bytes()),
            issuer: issuer.to_owned(),
            audience: audience.to_owned(),
        }
    }

    /// `None` when tokens are verified with a public key: we cannot mint those.
    pub fn from_config(config: &JwtConfig) -> Option<Self> {
        match &config.key {
            JwtKey::Secret(secret) => Some(Self::new(
                secret.expose_secret(),
                &config.issuer,
                &config.audience,
            )),
            JwtKey::PublicKeyPem { .. } => None,
        }
    }

    pub fn mint(&self, sub: &str, role: impl Into<Role>, ttl: std::time::Duration) -> String {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default();
        self.mint_claims(&Claims {
            sub: sub.to_owned(),
            role: role.into().as_str().to_owned(),
            iat: now,
            exp: now + ttl.as_secs(),
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
        })
    }

    pub fn mint_claims(&self, claims: &Claims) -> String {
        // Encoding HS256 claims cannot fail: the key and claims are always
        // serialisable.
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &self.key).unwrap_or_default()
    }

    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    pub fn audience(&self) -> &str {
        &self.audience
    }
}

/// The directory's rule for user ids: 1–128 of letters, digits and `_ . : @ -`.
pub fn valid_user_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_USER_ID_LEN
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '@' | '-'))
}

fn unauthenticated(message: &str) -> Unauthenticated {
    Unauthenticated(message.to_owned())
}

fn describe_jwt_error(error: &jsonwebtoken::errors::Error) -> String {
    use jsonwebtoken::errors::ErrorKind;
    match error.kind() {
        ErrorKind::ExpiredSignature => "the token has expired: get a new one".to_owned(),
        ErrorKind::InvalidAudience => "the token is for another audience".to_owned(),
        ErrorKind::InvalidIssuer => "the token is from an unknown issuer".to_owned(),
        ErrorKind::InvalidSignature => "the token's signature does not verify".to_owned(),
        ErrorKind::ImmatureSignature => "the token is not valid yet".to_owned(),
        ErrorKind::MissingRequiredClaim(claim) => format!("the token has no `{claim}` claim"),
        ErrorKind::InvalidAlgorithm => {
            "the token is signed with an algorithm we do not accept".to_owned()
        }
        _ => "the token is malformed".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::time::{SystemTime, UNIX_EPOCH};

    use jsonwebtoken::{EncodingKey, Header};
    use serde::Serialize;

    use super::*;

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    #[derive(Serialize)]
    struct Minted<'a> {
        sub: &'a str,
        role: &'a str,
        exp: u64,
        iat: u64,
        iss: &'a str,
        aud: &'a str,
    }

    fn now() -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    fn mint(secret: &str, sub: &str, role: &str, aud: &str, exp: u64) -> String {
        let claims = Minted {
            sub,
            role,
            exp,
            iat: now(),
            iss: "skileez",
            aud,
        };
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap()
    }

    fn config(vars: &[(&str, &str)]) -> Result<JwtConfig, ConfigError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        JwtConfig::from_lookup(|name| map.get(name).cloned())
    }

    #[test]
    fn a_token_of_the_shared_secret_authenticates() {
        let auth = Authenticator::new(&config(&[("SKILEEZ_JWT_SECRET", SECRET)]).unwrap()).unwrap();
        let token = mint(SECRET, "stu-1", "student", DEFAULT_JWT_AUDIENCE, now() + 60);
        let principal = auth.authenticate(Some(&format!("Bearer {token}"))).unwrap();
        assert_eq!(
            principal,
            Principal {
                user_id: "stu-1".into(),
                role: Role::Student
            }
        );
        assert!(!principal.is_privileged());
    }

    #[test]
    fn bad_tokens_are_refused_with_a_reason() {
        let auth = Authenticator::new(&config(&[("SKILEEZ_JWT_SECRET", SECRET)]).unwrap()).unwrap();
        let bearer = |t: String| format!("Bearer {t}");
        let cases = [
            (None, "no authorization"),
            (Some("Basic abc".to_owned()), "Bearer"),
            (Some("Bearer not.a.jwt".to_owned()), "malformed"),
            (
                Some(bearer(mint(
                    SECRET,
                    "u",
                    "student",
                    DEFAULT_JWT_AUDIENCE,
                    now() - 3600,
                ))),
                "expired",
            ),
            (
                Some(bearer(mint(SECRET, "u", "student", "other", now() + 60))),
                "audience",
            ),
            (
                Some(bearer(mint(
                    SECRET,
                    "u",
                    "root",
                    DEFAULT_JWT_AUDIENCE,
                    now() + 60,
                ))),
                "role",
            ),
            (
                Some(bearer(mint(
                    SECRET,
                    "a b",
                    "student",
                    DEFAULT_JWT_AUDIENCE,
                    now() + 60,
                ))),
                "sub",
            ),
            (
                Some(bearer(mint(
                    "another-secret-another-secret-xx",
                    "u",
                    "admin",
                    DEFAULT_JWT_AUDIENCE,
                    now() + 60,
                ))),
                "signature",
            ),
        ];
        for (header, expected) in cases {
            let Unauthenticated(message) = auth.authenticate(header.as_deref()).unwrap_err();
            assert!(
                message.contains(expected),
                "{message:?} should mention {expected:?}"
            );
        }
    }

    #[test]
    fn configuration_errors_name_the_variable_and_hide_the_secret() {
        let err = config(&[]).unwrap_err();
        assert!(err.to_string().contains("SKILEEZ_JWT_SECRET"), "{err}");
        let err = config(&[("SKILEEZ_JWT_SECRET", "short-secret")]).unwrap_err();
        assert!(!err.to_string().contains("short-secret"), "{err}");
        let err = config(&[("SKILEEZ_JWT_SECRET_FILE", "/nonexistent/secret")]).unwrap_err();
        assert!(err.to_string().contains("SKILEEZ_JWT_SECRET_FILE"), "{err}");
        let not_pem = JwtConfig {
            key: JwtKey::PublicKeyPem {
                pem: "not a key".into(),
                path: "bad.pem".into(),
            },
            issuer: DEFAULT_JWT_ISSUER.into(),
            audience: DEFAULT_JWT_AUDIENCE.into(),
        };
        let err = Authenticator::new(&not_pem).unwrap_err();
        assert!(
            err.to_string().contains("SKILEEZ_JWT_PUBLIC_KEY_FILE"),
            "{err}"
        );
        let cfg = config(&[("SKILEEZ_JWT_SECRET", SECRET)]).unwrap();
        assert!(!format!("{cfg:?}").contains(SECRET));
    }

    #[test]
    fn user_ids_follow_the_directory_rule() {
        for ok in ["u1", "user_42", "a.b:c@d-e"] {
            assert!(valid_user_id(ok), "{ok}");
        }
        for bad in ["", "a b", "a/b", &"x".repeat(129)] {
            assert!(!valid_user_id(bad), "{bad}");
        }
    }
}
