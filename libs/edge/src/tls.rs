//! TLS for the services' gRPC ports and for the clients between services,
//! read from PEM files named in configuration (rustls on ring, through
//! tonic).
//!
//! A server (`SKILEEZ_TLS_*`):
//!
//! | variable | meaning |
//! |---|---|
//! | `SKILEEZ_TLS_CERT_FILE`, `SKILEEZ_TLS_KEY_FILE` | the port's certificate chain and key; both or neither (plaintext) |
//! | `SKILEEZ_TLS_CLIENT_CA_FILE` | CA whose client certificates are verified (mTLS) |
//! | `SKILEEZ_TLS_CLIENT_AUTH` | `required` (default with a client CA): no certificate, no connection; `optional`: anyone may connect, and a `service` token is honoured only with a verified certificate ([`ServerTls::service_needs_certificate`]) |
//!
//! `optional` is what a platform network wants: web apps and platform
//! services call with their JWT alone, while the powerful service role
//! (timers firing commands) needs both the token and the certificate.
//!
//! A client (`<PREFIX>_CA_FILE`, `<PREFIX>_CERT_FILE`, `<PREFIX>_KEY_FILE`,
//! `<PREFIX>_DOMAIN`): the CA that signed the server's certificate, the
//! client's own certificate and key for mTLS, and the name to verify when it
//! differs from the URL's host.

use skileez_config::{ConfigError, Env, read_file};
use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

/// How a server with a client CA treats clients without a certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    Required,
    Optional,
}

/// A gRPC port's TLS.
#[derive(Clone)]
pub struct ServerTls {
    cert: String,
    key: String,
    client_ca: Option<String>,
    client_auth: ClientAuth,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The key never reaches a log.
        f.debug_struct("ServerTls")
            .field("client_ca", &self.client_ca.is_some())
            .field("client_auth", &self.client_auth)
            .finish_non_exhaustive()
    }
}

impl ServerTls {
    /// The server's TLS from `SKILEEZ_TLS_*`; `None`: plaintext.
    pub fn from_env(env: &Env) -> Result<Option<ServerTls>, ConfigError> {
        let cert = pem_file(env, "SKILEEZ_TLS_CERT_FILE", "CERTIFICATE")?;
        let key = pem_file(env, "SKILEEZ_TLS_KEY_FILE", "PRIVATE KEY")?;
        let client_ca = pem_file(env, "SKILEEZ_TLS_CLIENT_CA_FILE", "CERTIFICATE")?;
        let client_auth = match env.string("SKILEEZ_TLS_CLIENT_AUTH") {
            None => ClientAuth::Required,
            Some(value) => match value.trim().to_ascii_lowercase().as_str() {
                "required" => ClientAuth::Required,
                "optional" => ClientAuth::Optional,
                _ => {
                    return Err(ConfigError::Invalid {
                        var: "SKILEEZ_TLS_CLIENT_AUTH",
                        value,
                        expected: "required or optional",
                    });
                }
            },
        };
        match (cert, key) {
            (None, None) => {
                if client_ca.is_some() {
                    return Err(ConfigError::Missing {
                        var: "SKILEEZ_TLS_CERT_FILE",
                        hint: "a client CA (SKILEEZ_TLS_CLIENT_CA_FILE) needs the server's own certificate and key",
                    });
                }
                Ok(None)
            }
            (Some(_), None) => Err(ConfigError::Missing {
                var: "SKILEEZ_TLS_KEY_FILE",
                hint: "SKILEEZ_TLS_CERT_FILE is set: name the key of that certificate too",
            }),
            (None, Some(_)) => Err(ConfigError::Missing {
                var: "SKILEEZ_TLS_CERT_FILE",
                hint: "SKILEEZ_TLS_KEY_FILE is set: name its certificate too",
            }),
            (Some(cert), Some(key)) => Ok(Some(ServerTls {
                cert,
                key,
                client_ca,
                client_auth,
            })),
        }
    }

    /// For `tonic::transport::Server::tls_config`.
    pub fn tonic(&self) -> ServerTlsConfig {
        let mut config = ServerTlsConfig::new().identity(Identity::from_pem(&self.cert, &self.key));
        if let Some(ca) = &self.client_ca {
            config = config
                .client_ca_root(Certificate::from_pem(ca))
                .client_auth_optional(self.client_auth == ClientAuth::Optional);
        }
        config
    }

    /// Whether client certificates are verified at all.
    pub fn verifies_clients(&self) -> bool {
        self.client_ca.is_some()
    }

    /// Whether a `service` token must come with a verified client
    /// certificate: whenever clients are verified.
    pub fn service_needs_certificate(&self) -> bool {
        self.verifies_clients()
    }
}

/// A client's TLS towards another service.
#[derive(Clone)]
pub struct ClientTls {
    ca: Option<String>,
    identity: Option<(String, String)>,
    domain: Option<String>,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls")
            .field("ca", &self.ca.is_some())
            .field("identity", &self.identity.is_some())
            .field("domain", &self.domain)
            .finish()
    }
}

impl ClientTls {
    /// From `<prefix>_CA_FILE`, `<prefix>_CERT_FILE`, `<prefix>_KEY_FILE` and
    /// `<prefix>_DOMAIN`, e.g. prefix `SKILEEZ_SCHEDULING_TLS`. `None` when
    /// none is set (plaintext, or the system's roots for an `https` URL).
    pub fn from_env(env: &Env, vars: &ClientTlsVars) -> Result<Option<ClientTls>, ConfigError> {
        let ca = pem_file(env, vars.ca, "CERTIFICATE")?;
        let cert = pem_file(env, vars.cert, "CERTIFICATE")?;
        let key = pem_file(env, vars.key, "PRIVATE KEY")?;
        let domain = env.string(vars.domain);
        let identity = match (cert, key) {
            (None, None) => None,
            (Some(cert), Some(key)) => Some((cert, key)),
            (Some(_), None) => {
                return Err(ConfigError::Missing {
                    var: vars.key,
                    hint: "a client certificate needs its key",
                });
            }
            (None, Some(_)) => {
                return Err(ConfigError::Missing {
                    var: vars.cert,
                    hint: "a client key needs its certificate",
                });
            }
        };
        if ca.is_none() && identity.is_none() && domain.is_none() {
            return Ok(None);
        }
        Ok(Some(ClientTls {
            ca,
            identity,
            domain,
        }))
    }

    /// For `tonic::transport::Endpoint::tls_config`.
    pub fn tonic(&self) -> ClientTlsConfig {
        let mut config = ClientTlsConfig::new();
        if let Some(ca) = &self.ca {
            config = config.ca_certificate(Certificate::from_pem(ca));
        }
        if let Some((cert, key)) = &self.identity {
            config = config.identity(Identity::from_pem(cert, key));
        }
        if let Some(domain) = &self.domain {
            config = config.domain_name(domain.clone());
        }
        config
    }
}

/// The variables of one client's TLS.
#[derive(Debug, Clone, Copy)]
pub struct ClientTlsVars {
    pub ca: &'static str,
    pub cert: &'static str,
    pub key: &'static str,
    pub domain: &'static str,
}

/// Whether the request came over TLS with a client certificate that the
/// server verified against its client CA.
pub fn has_client_certificate<T>(request: &tonic::Request<T>) -> bool {
    request.peer_certs().is_some_and(|certs| !certs.is_empty())
}

/// The PEM file `var` names, read now so that a wrong path or a file that
/// is not PEM stops the start with the variable's name.
fn pem_file(
    env: &Env,
    var: &'static str,
    label: &'static str,
) -> Result<Option<String>, ConfigError> {
    let Some(path) = env.string(var) else {
        return Ok(None);
    };
    let pem = read_file(var, &path)?;
    if !pem.contains("-----BEGIN ") || !pem.contains(label) {
        return Err(ConfigError::File {
            var,
            path,
            reason: format!("no PEM block with {label} in it"),
        });
    }
    Ok(Some(pem))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &tempfile::TempDir, name: &str, content: &str) -> String {
        let path = dir.path().join(name);
        std::fs::write(&path, content).unwrap();
        path.to_str().unwrap().to_owned()
    }

    fn env_of(vars: Vec<(&'static str, String)>) -> impl Fn(&str) -> Option<String> {
        move |name| {
            vars.iter()
                .find(|(var, _)| *var == name)
                .map(|(_, value)| value.clone())
        }
    }

    #[test]
    fn server_tls_needs_both_halves_and_readable_pem() {
        let dir = tempfile::tempdir().unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let cert_file = write(&dir, "cert.pem", &cert.pem());
        let key_file = write(&dir, "key.pem", &key.serialize_pem());
        let junk = write(&dir, "junk.pem", "not pem");

        let none = env_of(vec![]);
        assert!(ServerTls::from_env(&Env::new(&none)).unwrap().is_none());

        let both = env_of(vec![
            ("SKILEEZ_TLS_CERT_FILE", cert_file.clone()),
            ("SKILEEZ_TLS_KEY_FILE", key_file.clone()),
        ]);
        let tls = ServerTls::from_env(&Env::new(&both)).unwrap().unwrap();
        assert!(!tls.verifies_clients());
        assert!(
            !format!("{tls:?}").contains("PRIVATE"),
            "the key is not shown"
        );

        let half = env_of(vec![("SKILEEZ_TLS_CERT_FILE", cert_file.clone())]);
        let error = ServerTls::from_env(&Env::new(&half)).unwrap_err();
        assert!(
            error.to_string().contains("SKILEEZ_TLS_KEY_FILE"),
            "{error}"
        );

        let bad = env_of(vec![
            ("SKILEEZ_TLS_CERT_FILE", junk),
            ("SKILEEZ_TLS_KEY_FILE", key_file.clone()),
        ]);
        let error = ServerTls::from_env(&Env::new(&bad)).unwrap_err();
        assert!(
            error.to_string().contains("SKILEEZ_TLS_CERT_FILE"),
            "{error}"
        );

        let ca_alone = env_of(vec![("SKILEEZ_TLS_CLIENT_CA_FILE", cert_file.clone())]);
        assert!(ServerTls::from_env(&Env::new(&ca_alone)).is_err());

        let optional = env_of(vec![
            ("SKILEEZ_TLS_CERT_FILE", cert_file.clone()),
            ("SKILEEZ_TLS_KEY_FILE", key_file),
            ("SKILEEZ_TLS_CLIENT_CA_FILE", cert_file),
            ("SKILEEZ_TLS_CLIENT_AUTH", "optional".into()),
        ]);
        let tls = ServerTls::from_env(&Env::new(&optional)).unwrap().unwrap();
        assert_eq!(tls.client_auth, ClientAuth::Optional);
        assert!(tls.service_needs_certificate());
    }
}
