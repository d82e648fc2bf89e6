//! How a service proves who it is to NATS, and how the connection is
//! encrypted, from configuration (secrets from files or variables, never in
//! the URL):
//!
//! | variable | meaning |
//! |---|---|
//! | `NATS_USER` + `NATS_PASSWORD` / `NATS_PASSWORD_FILE` | user and password |
//! | `NATS_TOKEN` / `NATS_TOKEN_FILE` | a token |
//! | `NATS_NKEY_SEED_FILE` | an nkey seed (`SU…`): the server knows only the public key |
//! | `NATS_CREDS_FILE` | a decentralized-auth credentials file (JWT and seed) |
//! | `NATS_TLS_CA_FILE` | CA of the servers' certificates; TLS is then required |
//! | `NATS_TLS_CERT_FILE`, `NATS_TLS_KEY_FILE` | a client certificate, for servers that verify clients |
//! | `NATS_TLS_REQUIRED` | `true`: refuse a plaintext connection even without a CA file (the system's roots) |
//!
//! At most one way of authenticating may be set.

use std::path::PathBuf;

use secrecy::{ExposeSecret as _, SecretString};
use skileez_config::{ConfigError, Env, read_file};

/// How to authenticate.
#[derive(Clone, Debug, Default)]
pub enum NatsAuth {
    /// Anonymous: a server without authorisation (development).
    #[default]
    None,
    UserPassword {
        user: String,
        password: SecretString,
    },
    Token(SecretString),
    NkeySeed(SecretString),
    CredsFile(PathBuf),
}

/// Authentication and TLS of a NATS connection.
#[derive(Clone, Debug, Default)]
pub struct NatsSecurity {
    pub auth: NatsAuth,
    pub tls_ca: Option<PathBuf>,
    pub tls_client: Option<(PathBuf, PathBuf)>,
    pub tls_required: bool,
}

impl NatsSecurity {
    pub fn from_env(env: &Env) -> Result<NatsSecurity, ConfigError> {
        let mut ways: Vec<(&'static str, NatsAuth)> = Vec::new();
        if let Some(user) = env.string("NATS_USER") {
            let (_, password) = env
                .secret("NATS_PASSWORD", "NATS_PASSWORD_FILE")?
                .ok_or(ConfigError::Missing {
                    var: "NATS_PASSWORD_FILE",
                    hint: "NATS_USER is set: give its password (NATS_PASSWORD or NATS_PASSWORD_FILE)",
                })?;
            ways.push(("NATS_USER", NatsAuth::UserPassword { user, password }));
        }
        if let Some((var, token)) = env.secret("NATS_TOKEN", "NATS_TOKEN_FILE")? {
            ways.push((var, NatsAuth::Token(token)));
        }
        if let Some(path) = env.string("NATS_NKEY_SEED_FILE") {
            let seed = read_file("NATS_NKEY_SEED_FILE", &path)?;
            let seed = seed.trim();
            if !seed.starts_with("SU") {
                return Err(ConfigError::File {
                    var: "NATS_NKEY_SEED_FILE",
                    path,
                    reason: "not a user nkey seed (it starts with SU)".to_owned(),
                });
            }
            ways.push((
                "NATS_NKEY_SEED_FILE",
                NatsAuth::NkeySeed(SecretString::from(seed.to_owned())),
            ));
        }
        if let Some(path) = env.string("NATS_CREDS_FILE") {
            // Read now only to fail early on a wrong path.
            read_file("NATS_CREDS_FILE", &path)?;
            ways.push(("NATS_CREDS_FILE", NatsAuth::CredsFile(PathBuf::from(path))));
        }
        if ways.len() > 1 {
            return Err(ConfigError::Invalid {
                var: ways[1].0,
                value: "(set)".to_owned(),
                expected: "one way to authenticate to NATS: NATS_USER, NATS_TOKEN[_FILE], NATS_NKEY_SEED_FILE or NATS_CREDS_FILE",
            });
        }
        let auth = ways.pop().map(|(_, auth)| auth).unwrap_or_default();
        let file = |var: &'static str| -> Result<Option<PathBuf>, ConfigError> {
            env.string(var)
                .map(|path| read_file(var, &path).map(|_| PathBuf::from(path)))
                .transpose()
        };
        let tls_ca = file("NATS_TLS_CA_FILE")?;
        let tls_client = match (file("NATS_TLS_CERT_FILE")?, file("NATS_TLS_KEY_FILE")?) {
            (Some(cert), Some(key)) => Some((cert, key)),
            (None, None) => None,
            (Some(_), None) => {
                return Err(ConfigError::Missing {
                    var: "NATS_TLS_KEY_FILE",
                    hint: "NATS_TLS_CERT_FILE is set: name its key too",
                });
            }
            (None, Some(_)) => {
                return Err(ConfigError::Missing {
                    var: "NATS_TLS_CERT_FILE",
                    hint: "NATS_TLS_KEY_FILE is set: name its certificate too",
                });
            }
        };
        let tls_required =
            env.flag("NATS_TLS_REQUIRED", false)? || tls_ca.is_some() || tls_client.is_some();
        Ok(NatsSecurity {
            auth,
            tls_ca,
            tls_client,
            tls_required,
        })
    }

    /// Applies itself to async-nats' options.
    pub(crate) async fn apply(
        &self,
        mut options: async_nats::ConnectOptions,
    ) -> std::io::Result<async_nats::ConnectOptions> {
        options = match &self.auth {
            NatsAuth::None => options,
            NatsAuth::UserPassword { user, password } => {
                options.user_and_password(user.clone(), password.expose_secret().to_owned())
            }
            NatsAuth::Token(token) => options.token(token.expose_secret().to_owned()),
            NatsAuth::NkeySeed(seed) => options.nkey(seed.expose_secret().to_owned()),
            NatsAuth::CredsFile(path) => options.credentials_file(path).await?,
        };
        if let Some(ca) = &self.tls_ca {
            options = options.add_root_certificates(ca.clone());
        }
        if let Some((cert, key)) = &self.tls_client {
            options = options.add_client_certificate(cert.clone(), key.clone());
        }
        Ok(options.require_tls(self.tls_required))
    }
}

/// `url` without any user information, for logs and errors.
pub fn redact_url(url: &str) -> String {
    url.split(',')
        .map(|one| match one.split_once("://") {
            Some((scheme, rest)) => match rest.rsplit_once('@') {
                Some((_, host)) => format!("{scheme}://***@{host}"),
                None => one.to_owned(),
            },
            None => match one.rsplit_once('@') {
                Some((_, host)) => format!("***@{host}"),
                None => one.to_owned(),
            },
        })
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_of(vars: &[(&'static str, &str)]) -> impl Fn(&str) -> Option<String> {
        let vars: Vec<(&'static str, String)> =
            vars.iter().map(|(k, v)| (*k, (*v).to_owned())).collect();
        move |name| {
            vars.iter()
                .find(|(var, _)| *var == name)
                .map(|(_, value)| value.clone())
        }
    }

    #[test]
    fn one_way_to_authenticate_and_secrets_stay_out_of_debug() {
        let none = env_of(&[]);
        assert!(matches!(
            NatsSecurity::from_env(&Env::new(&none)).unwrap().auth,
            NatsAuth::None
        ));
        let user = env_of(&[("NATS_USER", "timers"), ("NATS_PASSWORD", "s3cret-pw")]);
        let security = NatsSecurity::from_env(&Env::new(&user)).unwrap();
        assert!(matches!(security.auth, NatsAuth::UserPassword { .. }));
        assert!(!format!("{security:?}").contains("s3cret-pw"));
        let no_password = env_of(&[("NATS_USER", "timers")]);
        let error = NatsSecurity::from_env(&Env::new(&no_password)).unwrap_err();
        assert!(error.to_string().contains("NATS_PASSWORD"), "{error}");
        let two = env_of(&[
            ("NATS_USER", "timers"),
            ("NATS_PASSWORD", "pw"),
            ("NATS_TOKEN", "t"),
        ]);
        let error = NatsSecurity::from_env(&Env::new(&two)).unwrap_err();
        assert!(error.to_string().contains("one way"), "{error}");
        let missing = env_of(&[("NATS_TLS_CA_FILE", "/nonexistent/ca.pem")]);
        let error = NatsSecurity::from_env(&Env::new(&missing)).unwrap_err();
        assert!(error.to_string().contains("NATS_TLS_CA_FILE"), "{error}");
    }

    #[test]
    fn urls_lose_their_user_information() {
        assert_eq!(
            redact_url("nats://a:pw@n1:4222,nats://n2:4222"),
            "nats://***@n1:4222,nats://n2:4222"
        );
        assert_eq!(redact_url("tls://n1:4222"), "tls://n1:4222");
        assert_eq!(redact_url("user:pw@n1:4222"), "***@n1:4222");
    }
}
