//! Throw-away PKI: a CA, a kube-apiserver serving certificate for loopback, and the
//! service-account token signing key.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    PKCS_ECDSA_P256_SHA256,
};

use crate::Error;

/// Names the serving certificate covers: loopback plus the in-cluster names, so a kubeconfig
/// with either works.
const SERVING_SANS: &[&str] = &[
    "127.0.0.1",
    "::1",
    "localhost",
    "10.0.0.1",
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
];

/// Generated keys and certificates, PEM-encoded.
pub struct Pki {
    /// CA certificate (PEM).
    pub ca_pem: String,
    /// CA certificate (DER), for `kube::Config::root_cert`.
    pub ca_der: Vec<u8>,
    /// Serving certificate (PEM), signed by the CA.
    pub serving_cert_pem: String,
    /// Serving key (PKCS#8 PEM).
    pub serving_key_pem: String,
    /// Service-account signing key (ECDSA P-256, PKCS#8 PEM).
    pub sa_key_pem: String,
    /// Its public key (SPKI PEM), for `--service-account-key-file`.
    pub sa_pub_pem: String,
}

/// Where [`Pki::write_to`] put the files.
pub struct PkiPaths {
    /// CA certificate.
    pub ca: PathBuf,
    /// Serving certificate.
    pub serving_cert: PathBuf,
    /// Serving key.
    pub serving_key: PathBuf,
    /// Service-account signing key.
    pub sa_key: PathBuf,
    /// Service-account public key.
    pub sa_pub: PathBuf,
}

impl Pki {
    /// Generates a fresh CA, serving certificate and service-account key.
    pub fn generate() -> Result<Pki, Error> {
        let ca_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params.distinguished_name.push(DnType::CommonName, "kubeenv-ca");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages =
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        let ca_cert = ca_params.self_signed(&ca_key)?;
        let issuer = Issuer::new(ca_params, &ca_key);

        let serving_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let sans: Vec<String> = SERVING_SANS.iter().map(|s| s.to_string()).collect();
        let mut serving_params = CertificateParams::new(sans)?;
        serving_params.distinguished_name.push(DnType::CommonName, "kube-apiserver");
        serving_params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        serving_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let serving_cert = serving_params.signed_by(&serving_key, &issuer)?;

        let sa_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        Ok(Pki {
            ca_pem: ca_cert.pem(),
            ca_der: ca_cert.der().to_vec(),
            serving_cert_pem: serving_cert.pem(),
            serving_key_pem: serving_key.serialize_pem(),
            sa_key_pem: sa_key.serialize_pem(),
            sa_pub_pem: sa_key.public_key_pem(),
        })
    }

    /// Writes the PEM files into `dir` (created if missing).
    pub fn write_to(&self, dir: &Path) -> Result<PkiPaths, Error> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
        let paths = PkiPaths {
            ca: dir.join("ca.crt"),
            serving_cert: dir.join("apiserver.crt"),
            serving_key: dir.join("apiserver.key"),
            sa_key: dir.join("sa.key"),
            sa_pub: dir.join("sa.pub"),
        };
        for (path, pem) in [
            (&paths.ca, &self.ca_pem),
            (&paths.serving_cert, &self.serving_cert_pem),
            (&paths.serving_key, &self.serving_key_pem),
            (&paths.sa_key, &self.sa_key_pem),
            (&paths.sa_pub, &self.sa_pub_pem),
        ] {
            std::fs::write(path, pem).map_err(|e| Error::io(format!("writing {}", path.display()), e))?;
        }
        Ok(paths)
    }
}
