//! Who is calling: a bearer JWT in the `authorization` metadata, verified by
//! `skileez_auth` (the rules every service shares) and turned into the
//! domain's actor. Authorisation of a particular call (is the caller its
//! student or coach?) is decided by the handlers and the domain; this module
//! only establishes identity and role.

use skileez_auth::Role;
pub use skileez_auth::{Claims, TokenIssuer};
use skileez_domain::{Actor, ActorRole, UserId};
use tonic::metadata::MetadataMap;

use crate::{
    config::{ConfigError, JwtConfig},
    error::ApiError,
};

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
    Role::from(role).as_str()
}

pub fn parse_role(role: &str) -> Option<ActorRole> {
    Role::parse(role).map(ActorRole::from)
}

/// Verifies bearer tokens.
#[derive(Clone)]
pub struct Authenticator(skileez_auth::Authenticator);

impl Authenticator {
    pub fn new(config: &JwtConfig) -> Result<Self, ConfigError> {
        skileez_auth::Authenticator::new(config).map(Self)
    }

    /// Reads and verifies the `authorization: Bearer <jwt>` metadata.
    pub fn authenticate(&self, metadata: &MetadataMap) -> Result<Principal, ApiError> {
        let header = metadata
            .get("authorization")
            .map(|value| value.to_str())
            .transpose()
            .map_err(|_| {
                ApiError::Unauthenticated("the authorization metadata is not valid ASCII".into())
            })?;
        let principal = self
            .0
            .authenticate(header)
            .map_err(|e| ApiError::Unauthenticated(e.0))?;
        let user_id = UserId::parse(&principal.user_id).map_err(|_| {
            ApiError::Unauthenticated("the token's sub is not a valid user id".into())
        })?;
        Ok(Principal {
            user_id,
            role: principal.role.into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use secrecy::SecretString;
    use tonic::metadata::MetadataValue;

    use std::time::{SystemTime, UNIX_EPOCH};

    use jsonwebtoken::{Algorithm, EncodingKey, Header};

    use super::*;
    use crate::config::JwtKey;

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
