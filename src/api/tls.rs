//! Mutual TLS for the admin API: TLS 1.3 only, client certificates required and chained to the
//! admin CA. `wardenctl tls init` makes a demo PKI with rcgen; production deployments use their
//! own CA and point `admin.client_ca` at it.

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// What went wrong with certificates or keys.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read or written.
    #[error("{path}: {detail}")]
    File {
        /// The file.
        path: PathBuf,
        /// What failed.
        detail: String,
    },
    /// A PEM file held no usable certificate or key.
    #[error("{path}: {detail}. Create the admin PKI with `wardenctl tls init DIR`, or point the setting at a PEM file")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What is missing.
        detail: String,
    },
    /// rustls rejected the configuration.
    #[error("TLS configuration rejected: {0}")]
    Config(String),
    /// Certificate generation failed.
    #[error("certificate generation failed: {0}")]
    Generate(String),
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|e| TlsError::File {
        path: path.into(),
        detail: e.to_string(),
    })
}

/// Certificates from a PEM file.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(path)?;
    let certs: Vec<_> = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::Pem {
            path: path.into(),
            detail: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Pem {
            path: path.into(),
            detail: "no certificate in the file".into(),
        });
    }
    Ok(certs)
}

/// The private key from a PEM file. The PEM buffer is zeroized after parsing.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = zeroize::Zeroizing::new(read(path)?);
    rustls_pemfile::private_key(&mut pem.as_slice())
        .map_err(|e| TlsError::Pem {
            path: path.into(),
            detail: e.to_string(),
        })?
        .ok_or_else(|| TlsError::Pem {
            path: path.into(),
            detail: "no private key in the file".into(),
        })
}

/// The server side: TLS 1.3 only, a client certificate chained to `client_ca` required,
/// ALPN h2 (gRPC).
pub fn server_config(
    cert: &Path,
    key: &Path,
    client_ca: &Path,
) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    for ca in load_certs(client_ca)? {
        roots
            .add(ca)
            .map_err(|e| TlsError::Config(format!("admin CA {}: {e}", client_ca.display())))?;
    }
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let mut cfg = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(load_certs(cert)?, load_key(key)?)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(cfg))
}

/// Files written by [`init_pki`].
#[derive(Debug, Clone)]
pub struct Pki {
    /// The CA certificate (give to clients and to `admin.client_ca`).
    pub ca_cert: PathBuf,
    /// The server certificate and key.
    pub server_cert: PathBuf,
    /// The server key (0600).
    pub server_key: PathBuf,
    /// One (certificate, key) pair per admin.
    pub clients: Vec<(String, PathBuf, PathBuf)>,
}

/// The admin CA's certificate parameters. With the CA key (`ca.key`), they rebuild an issuer
/// whose certificates chain to the `ca.pem` `init_pki` wrote: for issuing more certificates.
pub fn admin_ca_params() -> Result<CertificateParams, rcgen::Error> {
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.distinguished_name
        .push(DnType::CommonName, "Warden admin CA");
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    Ok(ca)
}

/// Create a demo PKI in `dir`: a CA, a server certificate for localhost/127.0.0.1, and one client
/// certificate per admin (CN = admin name). Private keys are written 0600. Refuses to overwrite.
pub fn init_pki(dir: &Path, admins: &[String]) -> Result<Pki, TlsError> {
    let gen = |e: rcgen::Error| TlsError::Generate(e.to_string());
    std::fs::create_dir_all(dir).map_err(|e| TlsError::File {
        path: dir.into(),
        detail: e.to_string(),
    })?;
    let write = |name: &str, pem: &[u8]| -> Result<PathBuf, TlsError> {
        let p = dir.join(name);
        crate::fsutil::write_atomic(&p, pem, false).map_err(|e| TlsError::File {
            path: p.clone(),
            detail: e.to_string(),
        })?;
        Ok(p)
    };
    let write_cert = |name: &str, pem: String| write(name, pem.as_bytes());
    let write_key = |name: &str, key: &KeyPair| {
        let pem = zeroize::Zeroizing::new(key.serialize_pem());
        write(name, pem.as_bytes())
    };
    let ca_key = KeyPair::generate().map_err(gen)?;
    let ca_cert = admin_ca_params()
        .map_err(gen)?
        .self_signed(&ca_key)
        .map_err(gen)?;

    let server_key = KeyPair::generate().map_err(gen)?;
    let mut sp = CertificateParams::new(vec!["localhost".to_string()]).map_err(gen)?;
    sp.subject_alt_names
        .push(SanType::IpAddress(std::net::IpAddr::V4(
            std::net::Ipv4Addr::LOCALHOST,
        )));
    sp.distinguished_name.push(DnType::CommonName, "wardend");
    sp.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let server_cert = sp.signed_by(&server_key, &ca_cert, &ca_key).map_err(gen)?;

    let mut clients = Vec::new();
    let mut client_material = Vec::new();
    for admin in admins {
        let key = KeyPair::generate().map_err(gen)?;
        let mut cp = CertificateParams::new(Vec::<String>::new()).map_err(gen)?;
        cp.distinguished_name
            .push(DnType::CommonName, admin.clone());
        cp.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let cert = cp.signed_by(&key, &ca_cert, &ca_key).map_err(gen)?;
        client_material.push((admin.clone(), cert, key));
    }
    let pki = Pki {
        ca_cert: write_cert("ca.pem", ca_cert.pem())?,
        server_cert: write_cert("server.pem", server_cert.pem())?,
        server_key: write_key("server.key", &server_key)?,
        clients: {
            for (admin, cert, key) in &client_material {
                clients.push((
                    admin.clone(),
                    write_cert(&format!("{admin}.pem"), cert.pem())?,
                    write_key(&format!("{admin}.key"), key)?,
                ));
            }
            clients
        },
    };
    // The CA key signs nothing else in the demo; keep it, private, for issuing more admins.
    write_key("ca.key", &ca_key)?;
    Ok(pki)
}
