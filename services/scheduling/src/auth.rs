//! Who is calling: a bearer JWT in the `authorization` metadata, verified with
//! the configured key, issuer and audience. Authorisation of a particular call
//! (is the caller its student or coach?) is decided by the handlers and the
//! domain; this module only establishes identity and role.

use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use skileez_domain::{Actor, ActorRole, UserId};
use tonic::metadata::MetadataMap;

use crate::{
    config::{ConfigError, JwtConfig, JwtKey},
    error::ApiError,
};

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

/// The authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub user_id: UserId,
    pub role: ActorRole,
}

impl Principal {
    pub fn actor(&self) -> Actor {
        Actor {
            user_id: self.user_id.clone(),
            role: self.role,
        }
    }

    pub fn is_privileged(&self) -> bool {
        matches!(self.role, ActorRole::Admin | ActorRole::Service)
    }

    /// Fails unless the caller has one of `roles`.
    pub fn require(&self, roles: &[ActorRole], what: &str) -> Result<(), ApiError> {
        if roles.contains(&self.role) {
            Ok(())
        } else {
            Err(ApiError::PermissionDenied(format!(
                "{what} needs role {}; the token's role is {}",
                roles
                    .iter()
                    .map(|r| role_name(*r))
                    .collect::<Vec<_>>()
                    .join(" or "),
                role_name(self.role)
            )))
        }
    }
}

pub fn role_name(role: ActorRole) -> &'static str {
    match role {
        ActorRole::Student => "student",
        ActorRole::Coach => "coach",
        ActorRole::Admin => "admin",
        ActorRole::Service => "service",
    }
}

pub fn parse_role(role: &str) -> Option<ActorRole> {
    match role {
        "student" => Some(ActorRole::Student),
        "coach" => Some(ActorRole::Coach),
        "admin" => Some(ActorRole::Admin),
        "service" => Some(ActorRole::Service),
        _ => None,
    }
}

/// Verifies bearer tokens.
#[derive(Clone)]
pub struct Authenticator {
    key: DecodingKey,
    validation: Validation,
}

impl Authenticator {
    pub fn new(config: &JwtConfig) -> Result<Self, ConfigError> {
        let (key, algorithms) = match &config.key {
            JwtKey::Secret(secret) => (
                DecodingKey::from_secret(secret.expose_secret().as_bytes()),
                vec![Algorithm::HS256],
            ),
            JwtKey::PublicKeyPem { pem, path } => {
                let invalid = || ConfigError::Invalid {
                    var: "SKILEEZ_JWT_PUBLIC_KEY_FILE",
                    value: path.display().to_string(),
                    expected: "a PEM RSA or Ed25519 public key",
                };
                if let Ok(key) = DecodingKey::from_rsa_pem(pem.as_bytes()) {
                    (key, vec![Algorithm::RS256])
                } else {
                    let key = DecodingKey::from_ed_pem(pem.as_bytes()).map_err(|_| invalid())?;
                    (key, vec![Algorithm::EdDSA])
                }
            }
        };
        let mut validation = Validation::new(algorithms[0]);
        validation.algorithms = algorithms;
        validation.set_issuer(&[&config.issuer]);
        validation.set_audience(&[&config.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.leeway = 30;
        Ok(Self { key, validation })
    }

    /// Reads and verifies the `authorization: Bearer <jwt>` metadata.
    pub fn authenticate(&self, metadata: &MetadataMap) -> Result<Principal, ApiError> {
        let header = metadata
            .get("authorization")
            .ok_or_else(|| {
                unauthenticated("no authorization metadata: send `authorization: Bearer <token>`")
            })?
            .to_str()
            .map_err(|_| unauthenticated("the authorization metadata is not valid ASCII"))?;
        let token = header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))
            .ok_or_else(|| unauthenticated("the authorization metadata must be `Bearer <token>`"))?
            .trim();
        let data = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation)
            .map_err(|e| unauthenticated(&describe_jwt_error(&e)))?;
        let role = parse_role(&data.claims.role).ok_or_else(|| {
            unauthenticated("the token's role must be one of student, coach, admin, service")
        })?;
        let user_id = UserId::parse(&data.claims.sub)
            .map_err(|_| unauthenticated("the token's sub is not a valid user id"))?;
        Ok(Principal { user_id, role })
    }
}

fn unauthenticated(message: &str) -> ApiError {
    ApiError::Unauthenticated(message.to_owned())
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

/// Mints HS256 tokens: for `skileez token` in development and for tests.
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

    pub fn mint(&self, sub: &str, role: ActorRole, ttl: std::time::Duration) -> String {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default();
        self.mint_claims(&Claims {
            sub: sub.to_owned(),
            role: role_name(role).to_owned(),
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

#[cfg(test)]
mod tests {
    use secrecy::SecretString;
    use tonic::metadata::MetadataValue;

    use super::*;

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    fn setup() -> (Authenticator, TokenIssuer) {
        let config = JwtConfig {
            key: JwtKey::Secret(SecretString::from(SECRET)),
            issuer: "skileez".into(),
            audience: "skileez-scheduling".into(),
        };
        (
            Authenticator::new(&config).unwrap(),
            TokenIssuer::from_config(&config).unwrap(),
        )
    }

    fn metadata(value: &str) -> MetadataMap {
        let mut map = MetadataMap::new();
        map.insert("authorization", MetadataValue::try_from(value).unwrap());
        map
    }

    #[test]
    fn a_minted_token_authenticates() {
        let (auth, issuer) = setup();
        let token = issuer.mint(
            "stu-1",
            ActorRole::Student,
            std::time::Duration::from_secs(60),
        );
        let principal = auth
            .authenticate(&metadata(&format!("Bearer {token}")))
            .unwrap();
        assert_eq!(principal.user_id.as_str(), "stu-1");
        assert_eq!(principal.role, ActorRole::Student);
    }

    #[test]
    fn bad_tokens_are_unauthenticated_with_a_reason() {
        let (auth, issuer) = setup();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let claims = |aud: &str, exp: u64, role: &str| Claims {
            sub: "stu-1".into(),
            role: role.into(),
            iat: now,
            exp,
            iss: "skileez".into(),
            aud: aud.into(),
        };
        let cases = [
            (MetadataMap::new(), "no authorization"),
            (metadata("Basic abc"), "Bearer"),
            (metadata("Bearer not.a.jwt"), "malformed"),
            (
                metadata(&format!(
                    "Bearer {}",
                    issuer.mint_claims(&claims("skileez-scheduling", now - 3600, "student"))
                )),
                "expired",
            ),
            (
                metadata(&format!(
                    "Bearer {}",
                    issuer.mint_claims(&claims("other", now + 3600, "student"))
                )),
                "audience",
            ),
            (
                metadata(&format!(
                    "Bearer {}",
                    issuer.mint_claims(&claims("skileez-scheduling", now + 3600, "root"))
                )),
                "role",
            ),
            (
                metadata(&format!(
                    "Bearer {}",
                    TokenIssuer::new(
                        "another-secret-another-secret-xx",
                        "skileez",
                        "skileez-scheduling"
                    )
                    .mint(
                        "stu-1",
                        ActorRole::Admin,
                        std::time::Duration::from_secs(60)
                    )
                )),
                "signature",
            ),
        ];
        for (metadata, expected) in cases {
            match auth.authenticate(&metadata) {
                Err(ApiError::Unauthenticated(message)) => {
                    assert!(
                        message.contains(expected),
                        "{message:?} should mention {expected:?}"
                    )
                }
                other => panic!("expected UNAUTHENTICATED mentioning {expected:?}, got {other:?}"),
            }
        }
    }

    /// A throwaway Ed25519 key pair made for this test only.
    const ED25519_PRIVATE: &str = "-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VwBCIEIN4JD7Dcc2PhuDQ1yijmuO06MdUE12+EGxGshmYllIbX
-----END PRIVATE KEY-----
";
    const ED25519_PUBLIC: &str = "-----BEGIN PUBLIC KEY-----
MCowBQYDK2VwAyEAtKzNLOAND6y1FrNB2QDZz5ptz03aSzJ+2aGHNVOmHlU=
-----END PUBLIC KEY-----
";

    #[test]
    fn eddsa_tokens_verify_against_the_public_key_and_hs256_forgeries_do_not() {
        let config = JwtConfig {
            key: JwtKey::PublicKeyPem {
                pem: ED25519_PUBLIC.to_owned(),
                path: "test.pem".into(),
            },
            issuer: "skileez".into(),
            audience: "skileez-scheduling".into(),
        };
        let auth = Authenticator::new(&config).unwrap();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let claims = Claims {
            sub: "coach-1".into(),
            role: "coach".into(),
            iat: now,
            exp: now + 60,
            iss: "skileez".into(),
            aud: "skileez-scheduling".into(),
        };
        let signed = jsonwebtoken::encode(
            &Header::new(Algorithm::EdDSA),
            &claims,
            &EncodingKey::from_ed_pem(ED25519_PRIVATE.as_bytes()).unwrap(),
        )
        .unwrap();
        let principal = auth
            .authenticate(&metadata(&format!("Bearer {signed}")))
            .unwrap();
        assert_eq!(principal.role, ActorRole::Coach);

        // The classic confusion attack: an HS256 token keyed with the public key.
        let forged =
            TokenIssuer::new(ED25519_PUBLIC, "skileez", "skileez-scheduling").mint_claims(&claims);
        assert!(matches!(
            auth.authenticate(&metadata(&format!("Bearer {forged}"))),
            Err(ApiError::Unauthenticated(_))
        ));
    }

    #[test]
    fn a_public_key_that_is_not_pem_is_a_config_error_naming_the_variable() {
        let config = JwtConfig {
            key: JwtKey::PublicKeyPem {
                pem: "not a key".into(),
                path: "bad.pem".into(),
            },
            issuer: "skileez".into(),
            audience: "skileez-scheduling".into(),
        };
        let err = Authenticator::new(&config).err().unwrap();
        assert!(
            err.to_string().contains("SKILEEZ_JWT_PUBLIC_KEY_FILE"),
            "{err}"
        );
    }
}
