//! The bearer token the timers service sends to scheduling (role `service`).
//!
//! Either a token handed over by the environment (static, or a file re-read
//! now and then so that a rotated secret mount is picked up), or one minted
//! here with the shared HS256 secret and minted again well before it expires.

use std::{
    sync::Mutex,
    time::{Duration, Instant},
};

use secrecy::ExposeSecret;
use skileez_auth::{Role, TokenIssuer};
use tonic::metadata::{Ascii, MetadataValue};

use crate::config::TokenConfig;

/// The `sub` of minted tokens.
pub const SERVICE_SUBJECT: &str = "timers";
/// Lifetime of a minted token.
const MINTED_TTL: Duration = Duration::from_secs(3600);
/// A minted token is replaced once this much of its life is left.
const REFRESH_BEFORE: Duration = Duration::from_secs(600);
/// A token file is read again after this long.
const FILE_REREAD: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("cannot read the service token file {path}: {reason}")]
    File { path: String, reason: String },
    #[error("the service token is not valid ASCII header text")]
    NotAscii,
}

/// Hands out the current `authorization` value, renewing it as needed.
pub struct TokenSource {
    config: TokenConfig,
    current: Mutex<Option<(MetadataValue<Ascii>, Instant)>>,
}

impl TokenSource {
    pub fn new(config: TokenConfig) -> Self {
        Self {
            config,
            current: Mutex::new(None),
        }
    }

    /// `Bearer <token>`, valid for a while yet.
    pub fn authorization(&self) -> Result<MetadataValue<Ascii>, TokenError> {
        let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((value, renew_at)) = current.as_ref()
            && Instant::now() < *renew_at
        {
            return Ok(value.clone());
        }
        let (token, renew_in) = self.fresh()?;
        let value: MetadataValue<Ascii> = format!("Bearer {token}")
            .parse()
            .map_err(|_| TokenError::NotAscii)?;
        *current = Some((value.clone(), Instant::now() + renew_in));
        Ok(value)
    }

    /// A token and how long to use it before asking again.
    fn fresh(&self) -> Result<(String, Duration), TokenError> {
        match &self.config {
            TokenConfig::Static(token) => {
                Ok((token.expose_secret().to_owned(), Duration::from_secs(3600)))
            }
            TokenConfig::File(path) => std::fs::read_to_string(path)
                .map(|token| (token.trim().to_owned(), FILE_REREAD))
                .map_err(|e| TokenError::File {
                    path: path.display().to_string(),
                    reason: e.to_string(),
                }),
            TokenConfig::Mint {
                secret,
                issuer,
                audience,
            } => {
                let token = TokenIssuer::new(secret.expose_secret(), issuer, audience).mint(
                    SERVICE_SUBJECT,
                    Role::Service,
                    MINTED_TTL,
                );
                Ok((token, MINTED_TTL - REFRESH_BEFORE))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use secrecy::SecretString;

    use super::*;

    #[test]
    fn a_minted_token_is_a_service_token_for_scheduling() {
        let source = TokenSource::new(TokenConfig::Mint {
            secret: SecretString::from("0123456789abcdef0123456789abcdef"),
            issuer: "skileez".into(),
            audience: "skileez-scheduling".into(),
        });
        let value = source.authorization().unwrap();
        let text = value.to_str().unwrap();
        let auth = skileez_auth::Authenticator::new(&skileez_auth::JwtConfig {
            key: skileez_auth::JwtKey::Secret(SecretString::from(
                "0123456789abcdef0123456789abcdef",
            )),
            issuer: "skileez".into(),
            audience: "skileez-scheduling".into(),
        })
        .unwrap();
        let principal = auth.authenticate(Some(text)).unwrap();
        assert_eq!(principal.user_id, "timers");
        assert_eq!(principal.role, Role::Service);
        // Cached until renewal.
        assert_eq!(source.authorization().unwrap(), value);
    }
}
