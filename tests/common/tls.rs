//! A throw-away certificate authority and a server certificate it signed, for TLS tests on loopback.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// The names the server certificate is valid for. Clients that check host names connect to 127.0.0.1 (IP SAN);
/// fetchmail compares names only, so it is told to expect `localhost` (DNS SAN and CN).
pub const SERVER_NAMES: &[&str] = &["localhost", "127.0.0.1"];

/// PEM files of a test CA and of a server certificate for [`SERVER_NAMES`] signed by it. Clients trust
/// `ca_file`; servers use `cert_file` + `key_file`.
#[derive(Clone, Debug)]
pub struct TestCa {
    pub ca_file: PathBuf,
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

impl TestCa {
    /// Generates a fresh CA and server certificate (ECDSA P-256, a few milliseconds) and writes `ca.pem`,
    /// `cert.pem` and `key.pem` into `dir`.
    pub fn create(dir: &Path) -> TestCa {
        let fail =
            |what: &str, e: &dyn std::fmt::Display| -> ! { panic!("test CA: cannot {what}: {e}") };

        let mut ca_params = CertificateParams::new(Vec::<String>::new())
            .unwrap_or_else(|e| fail("make CA params", &e));
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "popguard test CA");
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

        let names: Vec<String> = SERVER_NAMES.iter().map(|s| s.to_string()).collect();
        let mut params =
            CertificateParams::new(names).unwrap_or_else(|e| fail("make server params", &e));
        params
            .distinguished_name
            .push(DnType::CommonName, "localhost");
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
}
