//! TLS for `https://` listeners (rustls): etcd's `--cert-file`, `--key-file`,
//! `--trusted-ca-file` and `--client-cert-auth`.
//!
//! The certificate, its key **and the CA bundle** are read again whenever one of the
//! files changes (size or modification time), so a renewed certificate or CA is used by
//! the next connection without a restart (etcd reloads certificates but not CAs). A file
//! that does not load keeps the last good configuration and says so in the log; at start
//! it is an error with a clear line. `--tls-min-version`, `--tls-max-version` and
//! `--cipher-suites` (IANA names, as etcd takes them) narrow what is offered;
//! [`self_signed`] makes `--auto-tls`'s certificate.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// What TLS needs to be set up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM certificate chain (`--cert-file`).
    pub cert: PathBuf,
    /// PEM private key (`--key-file`).
    pub key: PathBuf,
    /// PEM CA bundle clients' certificates are checked against (`--trusted-ca-file`).
    pub trusted_ca: Option<PathBuf>,
    /// Refuse clients without a certificate the CA signed (`--client-cert-auth`).
    pub client_cert_auth: bool,
    /// Accept only client certificates with this common name (`--peer-cert-allowed-cn`).
    pub allowed_cn: Option<String>,
    /// The TLS versions and cipher suites allowed.
    pub policy: TlsPolicy,
}

/// `--tls-min-version`, `--tls-max-version` and `--cipher-suites`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsPolicy {
    /// The oldest version accepted: `TLS1.2` (default) or `TLS1.3`.
    pub min_version: Option<String>,
    /// The newest version offered: `TLS1.2` or `TLS1.3` (default).
    pub max_version: Option<String>,
    /// IANA names of the cipher suites allowed (empty: rustls's defaults).
    pub cipher_suites: Vec<String>,
}

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
    /// A file is not the PEM it should be.
    #[error("{path}: {what}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        what: String,
    },
    /// rustls refused the configuration (a key that does not match, say).
    #[error("TLS configuration: {0}")]
    Config(String),
    /// A version or cipher suite name that is not one.
    #[error("{0}")]
    Policy(String),
    /// A self-signed certificate could not be made or written.
    #[error("auto TLS: {0}")]
    AutoTls(String),
}

/// The crypto provider: ring's, limited to the cipher suites `policy` names.
fn provider(policy: &TlsPolicy) -> Result<rustls::crypto::CryptoProvider, TlsError> {
    // ring rather than aws-lc-rs: no C++/cmake build on top of RocksDB's. rustls marks it
    // deprecated for lacking post-quantum key exchange, which etcd's clients do not use.
    #[allow(deprecated)]
    let mut provider = rustls::crypto::ring::default_provider();
    if !policy.cipher_suites.is_empty() {
        let known: Vec<String> = provider
            .cipher_suites
            .iter()
            .map(|s| format!("{:?}", s.suite()))
            .collect();
        for name in &policy.cipher_suites {
            if !known.contains(name) {
                return Err(TlsError::Policy(format!(
                    "--cipher-suites: unexpected TLS cipher suite {name:?} (known: {})",
                    known.join(", ")
                )));
            }
        }
        provider
            .cipher_suites
            .retain(|s| policy.cipher_suites.contains(&format!("{:?}", s.suite())));
    }
    Ok(provider)
}

/// The protocol versions `policy` allows.
fn versions(
    policy: &TlsPolicy,
) -> Result<Vec<&'static rustls::SupportedProtocolVersion>, TlsError> {
    let rank = |flag: &str, v: &Option<String>, default: u8| match v.as_deref() {
        None | Some("") => Ok(default),
        Some("TLS1.2") => Ok(2),
        Some("TLS1.3") => Ok(3),
        Some(other) => Err(TlsError::Policy(format!(
            "{flag}: unsupported TLS version {other:?} (TLS1.2 or TLS1.3)"
        ))),
    };
    let min = rank("--tls-min-version", &policy.min_version, 2)?;
    let max = rank("--tls-max-version", &policy.max_version, 3)?;
    if min > max {
        return Err(TlsError::Policy(
            "--tls-min-version is newer than --tls-max-version".into(),
        ));
    }
    Ok([(2, &rustls::version::TLS12), (3, &rustls::version::TLS13)]
        .into_iter()
        .filter(|(n, _)| (min..=max).contains(n))
        .map(|(_, v)| v)
        .collect())
}

/// Writes a self-signed certificate and its key for `hosts` (IP addresses or names) into
/// `dir` as `cert.pem` and `key.pem`, unless both are there already (etcd's
/// `--auto-tls`); the files.
pub fn self_signed(dir: &Path, hosts: &[String]) -> Result<(PathBuf, PathBuf), TlsError> {
    let cert_path = dir.join("cert.pem");
    let key_path = dir.join("key.pem");
    if cert_path.exists() && key_path.exists() {
        return Ok((cert_path, key_path));
    }
    let mut names: Vec<String> = hosts.to_vec();
    names.extend(["localhost".to_string(), "127.0.0.1".to_string()]);
    names.sort();
    names.dedup();
    let key = rcgen::KeyPair::generate().map_err(|e| TlsError::AutoTls(e.to_string()))?;
    let mut params =
        rcgen::CertificateParams::new(names).map_err(|e| TlsError::AutoTls(e.to_string()))?;
    params
        .distinguished_name
        .push(rcgen::DnType::OrganizationName, "cairn");
    params.extended_key_usages = vec![
        rcgen::ExtendedKeyUsagePurpose::ServerAuth,
        rcgen::ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let cert = params
        .self_signed(&key)
        .map_err(|e| TlsError::AutoTls(e.to_string()))?;
    std::fs::create_dir_all(dir).map_err(|source| TlsError::Read {
        path: dir.to_path_buf(),
        source,
    })?;
    for (path, text) in [(&cert_path, cert.pem()), (&key_path, key.serialize_pem())] {
        std::fs::write(path, text).map_err(|source| TlsError::Read {
            path: path.clone(),
            source,
        })?;
    }
    Ok((cert_path, key_path))
}

/// The subject common name (OID 2.5.4.3) of a DER certificate, as etcd takes a verified
/// client certificate's user name; `None` if it has none or does not parse.
pub fn common_name(certificate: &[u8]) -> Option<String> {
    use simple_asn1::ASN1Block::{
        Explicit, ObjectIdentifier, PrintableString, Sequence, Set, UTF8String,
    };
    let blocks = simple_asn1::from_der(certificate).ok()?;
    let Some(Sequence(_, cert)) = blocks.first() else {
        return None;
    };
    let Some(Sequence(_, tbs)) = cert.first() else {
        return None;
    };
    // version [0] (optional), serial, signature, issuer, validity, subject.
    let skip = usize::from(matches!(tbs.first(), Some(Explicit(..))));
    let Some(Sequence(_, subject)) = tbs.get(skip + 4) else {
        return None;
    };
    let cn = simple_asn1::oid!(2, 5, 4, 3);
    subject.iter().rev().find_map(|rdn| {
        let Set(_, attributes) = rdn else { return None };
        attributes.iter().find_map(|attribute| match attribute {
            Sequence(_, pair) => match pair.as_slice() {
                [ObjectIdentifier(_, oid), UTF8String(_, name) | PrintableString(_, name)]
                    if *oid == cn =>
                {
                    Some(name.clone())
                }
                _ => None,
            },
            _ => None,
        })
    })
}

/// The files' identities: size and modification time.
type Stamp = Vec<Option<(u64, SystemTime)>>;

/// A TLS configuration read from [`TlsFiles`], read again when they change.
pub struct ReloadingConfig {
    files: TlsFiles,
    current: Mutex<(Stamp, Arc<ServerConfig>)>,
}

impl ReloadingConfig {
    /// Loads `files` now: an error if they do not make a configuration.
    pub fn new(files: TlsFiles) -> Result<Self, TlsError> {
        let stamp = stamp(&files);
        let config = build(&files)?;
        Ok(ReloadingConfig {
            files,
            current: Mutex::new((stamp, config)),
        })
    }

    /// The configuration for a new connection: rebuilt first if a file changed (kept as
    /// it was, with a log line, if the new files do not load).
    pub fn config(&self) -> Arc<ServerConfig> {
        let now = stamp(&self.files);
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        if current.0 != now {
            match build(&self.files) {
                Ok(config) => {
                    tracing::info!(cert = %self.files.cert.display(), "TLS files changed; reloaded");
                    *current = (now, config);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "TLS files changed but do not load; keeping the previous ones");
                    current.0 = now;
                }
            }
        }
        current.1.clone()
    }
}

fn stamp(files: &TlsFiles) -> Stamp {
    [
        Some(&files.cert),
        Some(&files.key),
        files.trusted_ca.as_ref(),
    ]
    .into_iter()
    .flatten()
    .map(|p| {
        std::fs::metadata(p)
            .ok()
            .and_then(|m| Some((m.len(), m.modified().ok()?)))
    })
    .collect()
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem {
            path: path.to_path_buf(),
            what: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Pem {
            path: path.to_path_buf(),
            what: "no certificate in the file".into(),
        });
    }
    Ok(certs)
}

/// A certificate chain and its private key, from PEM files.
fn identity(
    cert: &Path,
    key: &Path,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsError> {
    let chain = certificates(cert)?;
    let pem = read(key)?;
    let key = PrivateKeyDer::from_pem_slice(&pem).map_err(|e| TlsError::Pem {
        path: key.to_path_buf(),
        what: format!("no private key: {e}"),
    })?;
    Ok((chain, key))
}

/// The certificates of a PEM CA bundle, as trust roots.
fn roots(bundle: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in certificates(bundle)? {
        roots
            .add(cert)
            .map_err(|e| TlsError::Config(format!("{}: {e}", bundle.display())))?;
    }
    Ok(roots)
}

fn build(files: &TlsFiles) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = Arc::new(provider(&files.policy)?);
    let (chain, key) = identity(&files.cert, &files.key)?;
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&versions(&files.policy)?)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let builder = match &files.trusted_ca {
        Some(ca) if files.client_cert_auth => {
            let verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots(ca)?), provider)
                    .build()
                    .map_err(|e| TlsError::Config(e.to_string()))?;
            match &files.allowed_cn {
                Some(cn) => builder.with_client_cert_verifier(Arc::new(AllowedCommonName {
                    inner: verifier,
                    cn: cn.clone(),
                })),
                None => builder.with_client_cert_verifier(verifier),
            }
        }
        _ => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A client configuration for dialing TLS servers of this cluster (the peer port): the
/// servers' certificates are checked against `trusted_ca`, and `cert` / `key` are
/// presented as this member's client certificate. Without `trusted_ca` (etcd's
/// `--peer-auto-tls`, self-signed certificates everywhere) any server certificate is
/// taken: the link is encrypted, not authenticated, as in etcd.
pub fn client_config(
    trusted_ca: Option<&Path>,
    cert: &Path,
    key: &Path,
    policy: &TlsPolicy,
) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let provider = Arc::new(provider(policy)?);
    let (chain, key) = identity(cert, key)?;
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&versions(policy)?)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let builder = match trusted_ca {
        Some(ca) => builder.with_root_certificates(roots(ca)?),
        None => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyServerCertificate(provider))),
    };
    let mut config = builder
        .with_client_auth_cert(chain, key)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// A client certificate verifier that also requires the certificate's common name
/// (`--peer-cert-allowed-cn`).
#[derive(Debug)]
struct AllowedCommonName {
    inner: Arc<dyn rustls::server::danger::ClientCertVerifier>,
    cn: String,
}

impl rustls::server::danger::ClientCertVerifier for AllowedCommonName {
    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: rustls_pki_types::UnixTime,
    ) -> Result<rustls::server::danger::ClientCertVerified, rustls::Error> {
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        match common_name(end_entity) {
            Some(cn) if cn == self.cn => Ok(verified),
            other => {
                tracing::warn!(common_name = ?other, allowed = %self.cn, "rejected a peer certificate: common name not allowed");
                Err(rustls::Error::General(format!(
                    "CommonName authentication failed (allowed: {})",
                    self.cn
                )))
            }
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Takes any server certificate whose handshake signature checks out (auto TLS between
/// peers: nobody can vouch for a self-signed certificate).
#[derive(Debug)]
struct AnyServerCertificate(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyServerCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &rustls_pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
