//! A throwaway public-key infrastructure for TLS tests: a CA, a server
//! certificate for `localhost` and `127.0.0.1`, client certificates signed
//! by the CA, and a client certificate of another CA that must be refused.
//! Everything is written as PEM files into a temporary folder, since the
//! services read certificates from files named in configuration.

use std::path::PathBuf;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

/// A certificate and its key, as files and as PEM.
pub struct Pair {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    pub cert_pem: String,
    pub key_pem: String,
}

pub struct TestPki {
    _dir: tempfile::TempDir,
    pub ca_file: PathBuf,
    pub ca_pem: String,
    pub server: Pair,
    pub client: Pair,
    /// Signed by a CA the services do not trust.
    pub rogue_client: Pair,
}

fn ca(name: &str) -> (CertificateParams, KeyPair, String) {
    let key = KeyPair::generate().expect("a CA key");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let pem = params.self_signed(&key).expect("CA certificate").pem();
    (params, key, pem)
}

fn leaf(
    dir: &tempfile::TempDir,
    name: &str,
    issuer: &Issuer<'_, KeyPair>,
    names: &[&str],
    usage: ExtendedKeyUsagePurpose,
) -> Pair {
    let key = KeyPair::generate().expect("a key");
    let mut params =
        CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())
            .expect("params");
    if names.contains(&"localhost") {
        params
            .subject_alt_names
            .push(SanType::IpAddress(std::net::Ipv4Addr::LOCALHOST.into()));
    }
    params.distinguished_name.push(DnType::CommonName, name);
    params.extended_key_usages = vec![usage];
    let cert_pem = params
        .signed_by(&key, issuer)
        .expect("a signed certificate")
        .pem();
    let key_pem = key.serialize_pem();
    let cert_file = dir.path().join(format!("{name}.crt"));
    let key_file = dir.path().join(format!("{name}.key"));
    std::fs::write(&cert_file, &cert_pem).expect("write cert");
    std::fs::write(&key_file, &key_pem).expect("write key");
    Pair {
        cert_file,
        key_file,
        cert_pem,
        key_pem,
    }
}

impl TestPki {
    pub fn new() -> TestPki {
        let dir = tempfile::tempdir().expect("a temp dir");
        let (params, key, ca_pem) = ca("skileez test CA");
        let issuer = Issuer::new(params, key);
        let (rogue_params, rogue_key, _) = ca("somebody else's CA");
        let rogue = Issuer::new(rogue_params, rogue_key);
        let ca_file = dir.path().join("ca.crt");
        std::fs::write(&ca_file, &ca_pem).expect("write CA");
        let server = leaf(
            &dir,
            "server",
            &issuer,
            &["localhost"],
            ExtendedKeyUsagePurpose::ServerAuth,
        );
        let client = leaf(
            &dir,
            "timers",
            &issuer,
            &["timers.skileez.internal"],
            ExtendedKeyUsagePurpose::ClientAuth,
        );
        let rogue_client = leaf(
            &dir,
            "rogue",
            &rogue,
            &["timers.skileez.internal"],
            ExtendedKeyUsagePurpose::ClientAuth,
        );
        TestPki {
            _dir: dir,
            ca_file,
            ca_pem,
            server,
            client,
            rogue_client,
        }
    }
}

impl Default for TestPki {
    fn default() -> Self {
        TestPki::new()
    }
}
