//! The one test PKI: a throw-away certificate authority and a server certificate it signed, as PEM files, for TLS
//! tests on loopback (Dovecot, the built-in server, the scripted upstreams, the proxy's client side).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// The names the server certificate is valid for by default. Clients that check host names connect to 127.0.0.1
/// (IP SAN); fetchmail compares names only, so it is told to expect `localhost` (DNS SAN and CN).
pub const SERVER_NAMES: &[&str] = &["localhost", "127.0.0.1"];

/// The default CA name. Two CAs with the same name make rustls report a bad signature instead of an unknown issuer;
/// tests that want "unknown issuer" make the other CA with [`TestCa::create_with`] and another name.
pub const CA_NAME: &str = "popguard test CA";

/// PEM files of a test CA and of a server certificate signed by it. Clients trust `ca_file`; servers use
/// `cert_file` + `key_file`.
#[derive(Clone, Debug)]
pub struct TestCa {
    pub ca_file: PathBuf,
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    /// The temp dir holding the files when [`TestCa::new`] made it; removed with the last clone.
    _dir: Option<Arc<tempfile::TempDir>>,
}

impl TestCa {
    /// A fresh CA and server certificate for [`SERVER_NAMES`] in a temp dir of their own.
    pub fn new() -> TestCa {
        TestCa::new_with(CA_NAME, SERVER_NAMES)
    }

    /// [`TestCa::new`] with another CA name and server certificate names (the first is also the CN).
    pub fn new_with(ca_name: &str, server_names: &[&str]) -> TestCa {
        let dir = tempfile::Builder::new()
            .prefix("pgca")
            .tempdir()
            .unwrap_or_else(|e| panic!("test CA: cannot make a temp dir: {e}"));
        let mut ca = TestCa::create_with(dir.path(), ca_name, server_names);
        ca._dir = Some(Arc::new(dir));
        ca
    }

    /// Generates a fresh CA and server certificate for [`SERVER_NAMES`] (ECDSA P-256, a few milliseconds) and
    /// writes `ca.pem`, `cert.pem` and `key.pem` into `dir`.
    pub fn create(dir: &Path) -> TestCa {
        TestCa::create_with(dir, CA_NAME, SERVER_NAMES)
    }

    /// [`TestCa::create`] with another CA name and server certificate names (the first is also the CN).
    pub fn create_with(dir: &Path, ca_name: &str, server_names: &[&str]) -> TestCa {
        let fail =
            |what: &str, e: &dyn std::fmt::Display| -> ! { panic!("test CA: cannot {what}: {e}") };
        assert!(!server_names.is_empty(), "test CA: no server names");

        let mut ca_params = CertificateParams::new(Vec::<String>::new())
            .unwrap_or_else(|e| fail("make CA params", &e));
        ca_params
            .distinguished_name
            .push(DnType::CommonName, ca_name);
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        ca_params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        ca_params.not_after = rcgen::date_time_ymd(2099, 12, 31);
        let ca_key = KeyPair::generate().unwrap_or_else(|e| fail("generate the CA key", &e));
        let ca_cert = ca_params
            .self_signed(&ca_key)
            .unwrap_or_else(|e| fail("self-sign the CA", &e));
        let issuer = Issuer::new(ca_params, ca_key);

        let names: Vec<String> = server_names.iter().map(|s| s.to_string()).collect();
        let mut params =
            CertificateParams::new(names).unwrap_or_else(|e| fail("make server params", &e));
        params
            .distinguished_name
            .push(DnType::CommonName, server_names[0]);
        params.use_authority_key_identifier_extension = true;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(2099, 12, 31);
        let key = KeyPair::generate().unwrap_or_else(|e| fail("generate the server key", &e));
        let cert = params
            .signed_by(&key, &issuer)
            .unwrap_or_else(|e| fail("sign the server cert", &e));

        let ca = TestCa {
            ca_file: dir.join("ca.pem"),
            cert_file: dir.join("cert.pem"),
            key_file: dir.join("key.pem"),
            _dir: None,
        };
        let write = |path: &Path, pem: String| {
            std::fs::write(path, pem)
                .unwrap_or_else(|e| panic!("test CA: cannot write {}: {e}", path.display()))
        };
        write(&ca.ca_file, ca_cert.pem());
        write(&ca.cert_file, cert.pem());
        write(&ca.key_file, key.serialize_pem());
        ca
    }

    /// A rustls server configuration with the server certificate (for scripted servers in tests).
    pub fn server_config(&self) -> Arc<rustls::ServerConfig> {
        popguard::tls::server_config(&self.cert_file, &self.key_file)
            .unwrap_or_else(|e| panic!("test CA: cannot load the server certificate: {e}"))
    }

    /// A rustls client configuration that trusts this CA (and no system roots).
    pub fn client_config(&self) -> Arc<rustls::ClientConfig> {
        popguard::tls::client_config_with(Some(&self.ca_file), false)
            .unwrap_or_else(|e| panic!("test CA: cannot load {}: {e}", self.ca_file.display()))
    }

    /// TOML lines for the proxy's client-side certificate with `client_tls = MODE` ("stls" or "implicit").
    pub fn proxy_client_tls_toml(&self, mode: &str) -> String {
        format!(
            "tls_cert = {:?}\ntls_key = {:?}\nclient_tls = \"{mode}\"\n",
            path_str(&self.cert_file),
            path_str(&self.key_file)
        )
    }
}

impl Default for TestCa {
    fn default() -> Self {
        TestCa::new()
    }
}

fn path_str(p: &Path) -> &str {
    p.to_str()
        .unwrap_or_else(|| panic!("test paths are UTF-8: {}", p.display()))
}
