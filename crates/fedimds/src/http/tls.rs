//! The Service Fabric listener's certificate: read from PEM files, or generated at start, and
//! its SHA-1 thumbprint, which is what Service Fabric clients pin
//! (`IDENTITY_SERVER_THUMBPRINT`, `docs/client-protocols.md#service-fabric`).

use std::path::Path;
use std::sync::Arc;

use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::{self, ServerConfig};
use tokio_rustls::TlsAcceptor;

use crate::config::{Certificate, ServiceFabric};
use crate::fsutil::{self, Private};

/// The names a generated certificate is for: what an `IDENTITY_ENDPOINT` on this host names.
const GENERATED_NAMES: [&str; 2] = ["localhost", "127.0.0.1"];

/// Files anyone may read: a certificate and its thumbprint are public.
const PUBLIC: Private = Private {
    mode: 0o644,
    group: None,
};

/// A certificate ready to serve.
pub struct ServerCert {
    /// The TLS acceptor built on it.
    pub acceptor: TlsAcceptor,
    /// The leaf certificate's SHA-1, upper-case hex, as .NET's `GetCertHashString` and the
    /// variable `IDENTITY_SERVER_THUMBPRINT` spell it.
    pub thumbprint: String,
}

impl std::fmt::Debug for ServerCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerCert")
            .field("thumbprint", &self.thumbprint)
            .finish_non_exhaustive()
    }
}

/// Why the certificate could not be set up; each names the key to look at.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// A PEM file could not be read or holds nothing usable.
    #[error("cannot read {what} {path} ({key}): {why}")]
    Read {
        /// What the file should hold.
        what: &'static str,
        /// The config key that names it.
        key: &'static str,
        /// Where.
        path: String,
        /// Why.
        why: String,
    },
    /// The certificate and key do not make a TLS identity (a key of another certificate).
    #[error("the certificate and key (service_fabric.cert_file, service_fabric.key_file) cannot serve TLS: {0}")]
    Tls(String),
    /// Generating a certificate failed.
    #[error("cannot generate the Service Fabric listener's certificate: {0}")]
    Generate(String),
    /// A file fedimds writes could not be written.
    #[error("cannot write {what} {path} ({key}): {source}")]
    Write {
        /// What it holds.
        what: &'static str,
        /// The config key that names it.
        key: &'static str,
        /// Where.
        path: String,
        /// Why.
        source: std::io::Error,
    },
}

impl ServerCert {
    /// The certificate `config` names (read, or generated), with the files it asks for
    /// written: the generated certificate, and the thumbprint.
    pub fn for_config(config: &ServiceFabric) -> Result<ServerCert, CertError> {
        let (chain, key, pem) = match &config.certificate {
            Certificate::Files { cert, key } => {
                let (chain, pem) = read_chain(cert)?;
                (chain, read_key(key)?, pem)
            }
            Certificate::Generated => generate()?,
        };
        let cert = ServerCert::new(chain, key)?;
        if let Some(path) = &config.served_cert_file {
            write_public(
                path,
                &pem,
                "the certificate served",
                "service_fabric.served_cert_file",
            )?;
        }
        if let Some(path) = &config.thumbprint_file {
            write_public(
                path,
                format!("{}\n", cert.thumbprint).as_bytes(),
                "the certificate thumbprint",
                "service_fabric.thumbprint_file",
            )?;
        }
        Ok(cert)
    }

    fn new(
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> Result<ServerCert, CertError> {
        let thumbprint = chain
            .first()
            .map(|leaf| thumbprint(leaf))
            .unwrap_or_default();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut tls = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| CertError::Tls(e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(|e| CertError::Tls(e.to_string()))?;
        // Every Service Fabric client speaks HTTP/1.1 to it.
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(ServerCert {
            acceptor: TlsAcceptor::from(Arc::new(tls)),
            thumbprint,
        })
    }
}

/// The SHA-1 of a certificate's DER, upper-case hex: what Service Fabric clients compare with
/// `IDENTITY_SERVER_THUMBPRINT` (SHA-1 is their choice, not a security margin of ours: the
/// pin only has to name this certificate among the few on a host).
pub fn thumbprint(cert: &CertificateDer<'_>) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, cert.as_ref());
    digest.as_ref().iter().map(|b| format!("{b:02X}")).collect()
}

/// A certificate chain, its key, and the chain's PEM.
type Identity = (
    Vec<CertificateDer<'static>>,
    PrivateKeyDer<'static>,
    Vec<u8>,
);

/// A self-signed certificate for [`GENERATED_NAMES`], its key, and its PEM.
fn generate() -> Result<Identity, CertError> {
    let names: Vec<String> = GENERATED_NAMES.iter().map(|n| (*n).to_owned()).collect();
    let rcgen::CertifiedKey { cert, signing_key } = rcgen::generate_simple_self_signed(names)
        .map_err(|e| CertError::Generate(e.to_string()))?;
    let pem = cert.pem();
    let key = PrivateKeyDer::Pkcs8(signing_key.serialize_der().into());
    Ok((vec![cert.der().clone()], key, pem.into_bytes()))
}

/// The chain in a PEM file, and the file's text.
fn read_chain(path: &Path) -> Result<(Vec<CertificateDer<'static>>, Vec<u8>), CertError> {
    let err = |why: String| CertError::Read {
        what: "the certificate",
        key: "service_fabric.cert_file",
        path: path.display().to_string(),
        why,
    };
    let pem = std::fs::read(path).map_err(|e| err(e.to_string()))?;
    let chain = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err(format!("not PEM certificates: {e}")))?;
    if chain.is_empty() {
        return Err(err("no CERTIFICATE block in it".to_owned()));
    }
    Ok((chain, pem))
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, CertError> {
    let err = |why: String| CertError::Read {
        what: "the private key",
        key: "service_fabric.key_file",
        path: path.display().to_string(),
        why,
    };
    let pem = std::fs::read(path).map_err(|e| err(e.to_string()))?;
    // The parser's error says what it found, never the key's bytes.
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| err(format!("no PEM private key: {e}")))
}

fn write_public(
    path: &Path,
    contents: &[u8],
    what: &'static str,
    key: &'static str,
) -> Result<(), CertError> {
    fsutil::replace(path, contents, PUBLIC).map_err(|source| CertError::Write {
        what,
        key,
        path: path.display().to_string(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_certificate_serves_and_its_thumbprint_is_its_sha1() {
        let (chain, key, pem) = generate().unwrap();
        assert!(pem.starts_with(b"-----BEGIN CERTIFICATE-----"));
        let parsed = CertificateDer::from_pem_slice(&pem).unwrap();
        assert_eq!(parsed, chain[0]);
        let cert = ServerCert::new(chain.clone(), key).unwrap();
        assert_eq!(cert.thumbprint.len(), 40);
        assert!(cert
            .thumbprint
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b)));
        assert_eq!(cert.thumbprint, thumbprint(&chain[0]));
        // Two starts, two certificates.
        let (other, _, _) = generate().unwrap();
        assert_ne!(thumbprint(&other[0]), cert.thumbprint);
    }

    #[test]
    fn the_thumbprint_is_sha1_in_upper_case_hex() {
        // SHA-1("abc"), FIPS 180-2's test vector.
        let der = CertificateDer::from(b"abc".to_vec());
        assert_eq!(thumbprint(&der), "A9993E364706816ABA3E25717850C26C9CD0D89D");
    }

    #[test]
    fn unreadable_files_are_named_by_their_key() {
        let dir = std::env::temp_dir().join(format!("fedimds-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let cert = dir.join("c.pem");
        std::fs::write(&cert, "not pem").unwrap();
        let config = ServiceFabric {
            listen: None,
            certificate: Certificate::Files {
                cert: cert.clone(),
                key: dir.join("missing.pem"),
            },
            served_cert_file: None,
            thumbprint_file: None,
        };
        let err = ServerCert::for_config(&config).unwrap_err().to_string();
        assert!(err.contains("service_fabric.cert_file"), "{err}");
        let (_, _, pem) = generate().unwrap();
        std::fs::write(&cert, pem).unwrap();
        let err = ServerCert::for_config(&config).unwrap_err().to_string();
        assert!(err.contains("service_fabric.key_file"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
