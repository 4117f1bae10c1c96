//! Transport security of the servers: TLS from a certificate and key file,
//! mutual TLS when a client CA is given, and the rule that plaintext is
//! served only on loopback addresses unless explicitly allowed. Also the
//! development CA that `orderctl certs` writes (rcgen).

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use tonic::transport::{Certificate, Identity, ServerTlsConfig};

use crate::config::TlsSettings;

/// Why the transport settings cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    /// A certificate or key file could not be read or written.
    #[error("{path}: {source}")]
    File {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// Only one of the certificate and the key was given.
    #[error("TLS needs both ORDERS_TLS_CERT_FILE and ORDERS_TLS_KEY_FILE")]
    Incomplete,
    /// A client CA without a server certificate: mTLS needs TLS.
    #[error(
        "ORDERS_TLS_CLIENT_CA_FILE needs TLS: set ORDERS_TLS_CERT_FILE and ORDERS_TLS_KEY_FILE"
    )]
    ClientCaWithoutTls,
    /// Plaintext on an address other hosts can reach.
    #[error(
        "refusing to serve plaintext gRPC on {0}, which is not a loopback address: configure TLS (ORDERS_TLS_CERT_FILE, ORDERS_TLS_KEY_FILE) or pass --allow-plaintext"
    )]
    PlaintextOffLoopback(SocketAddr),
    /// Generating the development certificates failed.
    #[error("certificate generation: {0}")]
    Generate(#[from] rcgen::Error),
}

fn read(path: &Path) -> Result<Vec<u8>, TlsSetupError> {
    std::fs::read(path).map_err(|source| TlsSetupError::File {
        path: path.display().to_string(),
        source,
    })
}

/// The TLS configuration a server bound to `addr` serves with, or `None` for
/// plaintext, which only a loopback address (or `allow_plaintext`) permits.
pub fn server_config(
    settings: &TlsSettings,
    addr: SocketAddr,
) -> Result<Option<ServerTlsConfig>, TlsSetupError> {
    let (cert, key) = match (&settings.cert_file, &settings.key_file) {
        (Some(cert), Some(key)) => (cert, key),
        (None, None) => {
            if settings.client_ca_file.is_some() {
                return Err(TlsSetupError::ClientCaWithoutTls);
            }
            if !addr.ip().is_loopback() && !settings.allow_plaintext {
                return Err(TlsSetupError::PlaintextOffLoopback(addr));
            }
            if !addr.ip().is_loopback() {
                tracing::warn!(%addr, "serving PLAINTEXT gRPC off loopback (--allow-plaintext)");
            }
            return Ok(None);
        }
        _ => return Err(TlsSetupError::Incomplete),
    };
    let mut config = ServerTlsConfig::new().identity(Identity::from_pem(read(cert)?, read(key)?));
    if let Some(ca) = &settings.client_ca_file {
        // Clients must present a certificate this CA signed (mTLS).
        config = config.client_ca_root(Certificate::from_pem(read(ca)?));
    }
    tracing::info!(
        cert = %cert.display(),
        mutual = settings.client_ca_file.is_some(),
        "serving TLS"
    );
    Ok(Some(config))
}

/// Files written by [`generate_dev_certificates`].
#[derive(Debug, Clone)]
pub struct DevCertificates {
    /// The CA certificate clients trust (`ca.pem`).
    pub ca: PathBuf,
    /// The servers' certificate and key (`server.pem`, `server-key.pem`).
    pub server: (PathBuf, PathBuf),
    /// A client certificate and key for mTLS (`client.pem`, `client-key.pem`).
    pub client: (PathBuf, PathBuf),
}

/// Writes a new development CA (its key is not kept), a server certificate
/// for `hosts` (names or IP addresses) and a client certificate for
/// `client_name`, all signed by it, into `dir`.
pub fn generate_dev_certificates(
    dir: &Path,
    hosts: &[String],
    client_name: &str,
) -> Result<DevCertificates, TlsSetupError> {
    let write = |name: &str, contents: &str, private: bool| -> Result<PathBuf, TlsSetupError> {
        let path = dir.join(name);
        write_file(&path, contents.as_bytes(), private).map_err(|source| TlsSetupError::File {
            path: path.display().to_string(),
            source,
        })?;
        Ok(path)
    };
    std::fs::create_dir_all(dir).map_err(|source| TlsSetupError::File {
        path: dir.display().to_string(),
        source,
    })?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "orders development CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate()?)?;

    let mut server_params = CertificateParams::new(hosts.to_vec())?;
    server_params
        .distinguished_name
        .push(DnType::CommonName, "orders server");
    server_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let server_key = KeyPair::generate()?;
    let server_cert = server_params.signed_by(&server_key, &ca)?;

    let mut client_params = CertificateParams::new(Vec::<String>::new())?;
    client_params
        .distinguished_name
        .push(DnType::CommonName, client_name);
    client_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let client_key = KeyPair::generate()?;
    let client_cert = client_params.signed_by(&client_key, &ca)?;

    Ok(DevCertificates {
        ca: write("ca.pem", &ca.pem(), false)?,
        server: (
            write("server.pem", &server_cert.pem(), false)?,
            write("server-key.pem", &server_key.serialize_pem(), true)?,
        ),
        client: (
            write("client.pem", &client_cert.pem(), false)?,
            write("client-key.pem", &client_key.serialize_pem(), true)?,
        ),
    })
}

fn write_file(path: &Path, bytes: &[u8], private: bool) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if private {
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    }
    #[cfg(not(unix))]
    let _ = private;
    options.open(path)?.write_all(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn plaintext_is_allowed_on_loopback_only_unless_allowed() {
        let plain = TlsSettings::default();
        assert!(
            server_config(&plain, addr("127.0.0.1:0"))
                .unwrap()
                .is_none()
        );
        assert!(server_config(&plain, addr("[::1]:0")).unwrap().is_none());
        assert!(matches!(
            server_config(&plain, addr("0.0.0.0:50051")),
            Err(TlsSetupError::PlaintextOffLoopback(_))
        ));
        let allowed = TlsSettings {
            allow_plaintext: true,
            ..TlsSettings::default()
        };
        assert!(
            server_config(&allowed, addr("0.0.0.0:50051"))
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn a_client_ca_or_half_a_key_pair_alone_is_refused() {
        let ca_only = TlsSettings {
            client_ca_file: Some("ca.pem".into()),
            ..TlsSettings::default()
        };
        assert!(matches!(
            server_config(&ca_only, addr("127.0.0.1:0")),
            Err(TlsSetupError::ClientCaWithoutTls)
        ));
        let cert_only = TlsSettings {
            cert_file: Some("server.pem".into()),
            ..TlsSettings::default()
        };
        assert!(matches!(
            server_config(&cert_only, addr("127.0.0.1:0")),
            Err(TlsSetupError::Incomplete)
        ));
    }
}
