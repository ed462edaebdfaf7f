//! TLS set-up: a configured certificate, or a self-signed one generated on first start.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Where the certificate and key come from.
pub struct CertPaths {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub generated: bool,
}

/// Returns the configured certificate, or generates a self-signed one for `domain` under
/// `data_dir/tls/` if none exists there yet.
pub fn ensure_certificate(
    cert: Option<&Path>,
    key: Option<&Path>,
    data_dir: &Path,
    domain: &str,
) -> Result<CertPaths> {
    if let (Some(c), Some(k)) = (cert, key) {
        return Ok(CertPaths {
            cert: c.to_path_buf(),
            key: k.to_path_buf(),
            generated: false,
        });
    }
    let dir = data_dir.join("tls");
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    if cert.exists() && key.exists() {
        return Ok(CertPaths {
            cert,
            key,
            generated: false,
        });
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut names = vec![domain.to_string()];
    if domain != "localhost" {
        names.push("localhost".to_string());
    }
    let ck = rcgen::generate_simple_self_signed(names)
        .context("generating a self-signed certificate")?;
    std::fs::write(&cert, ck.cert.pem()).with_context(|| format!("writing {}", cert.display()))?;
    write_private(&key, ck.signing_key.serialize_pem().as_bytes())?;
    Ok(CertPaths {
        cert,
        key,
        generated: true,
    })
}

fn write_private(path: &Path, data: &[u8]) -> Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    f.write_all(data)?;
    Ok(())
}

/// Loads a PEM certificate chain.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let data = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let certs: Vec<_> = rustls_pemfile::certs(&mut data.as_slice())
        .collect::<Result<_, _>>()
        .with_context(|| format!("parsing certificates in {}", path.display()))?;
    if certs.is_empty() {
        anyhow::bail!("{}: no certificate found", path.display());
    }
    Ok(certs)
}

/// Loads a PEM private key.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>> {
    let data = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    rustls_pemfile::private_key(&mut data.as_slice())
        .with_context(|| format!("parsing the key in {}", path.display()))?
        .with_context(|| format!("{}: no private key found", path.display()))
}

/// A rustls server configuration for client connections.
pub fn server_config(paths: &CertPaths) -> Result<Arc<rustls::ServerConfig>> {
    let certs = load_certs(&paths.cert)?;
    let key = load_key(&paths.key)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("the certificate and key do not match")?;
    Ok(Arc::new(cfg))
}

// ---- server-to-server ----

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::{ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme};
use std::sync::Mutex;

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Trust anchors for peer certificates: the system's (optional) and a PEM file of extra CAs.
pub fn root_store(ca_file: Option<&Path>, system: bool) -> Result<Arc<RootCertStore>> {
    let mut roots = RootCertStore::empty();
    if system {
        let found = rustls_native_certs::load_native_certs();
        for e in &found.errors {
            tracing::debug!(error = %e, "skipping a system trust anchor");
        }
        let (_, _) = roots.add_parsable_certificates(found.certs);
    }
    if let Some(p) = ca_file {
        for c in load_certs(p)? {
            roots
                .add(c)
                .with_context(|| format!("{}: not a usable CA certificate", p.display()))?;
        }
    }
    Ok(Arc::new(roots))
}

/// Checks a peer's certificate chain against `roots` for each DNS name it carries and returns
/// the names it is valid for. The chain is checked as a TLS server certificate would be, so
/// certificates with only the serverAuth EKU (as public CAs issue them now) authenticate a
/// domain too.
pub fn valid_names(roots: &Arc<RootCertStore>, chain: &[CertificateDer<'static>]) -> Vec<String> {
    let Some((ee, intermediates)) = chain.split_first() else {
        return Vec::new();
    };
    let Ok(verifier) =
        WebPkiServerVerifier::builder_with_provider(roots.clone(), provider()).build()
    else {
        return Vec::new();
    };
    let names: Vec<String> = match webpki::EndEntityCert::try_from(ee) {
        Ok(cert) => cert.valid_dns_names().map(str::to_string).collect(),
        Err(_) => return Vec::new(),
    };
    names
        .into_iter()
        .filter(|n| {
            let probe = n
                .strip_prefix("*.")
                .map(|r| format!("wildcard-probe.{r}"))
                .unwrap_or_else(|| n.clone());
            let Ok(sn) = ServerName::try_from(probe) else {
                return false;
            };
            verifier
                .verify_server_cert(ee, intermediates, &sn, &[], UnixTime::now())
                .is_ok()
        })
        .collect()
}

/// A server-certificate verifier for outbound s2s: it records whether the peer's certificate is
/// valid for the remote domain, and fails the handshake on an invalid one only when
/// `strict` (then nothing but certificate authentication is acceptable).
#[derive(Debug)]
struct RecordingVerifier {
    /// `None` when there are no trust anchors at all: then no certificate is valid.
    inner: Option<Arc<WebPkiServerVerifier>>,
    provider: Arc<rustls::crypto::CryptoProvider>,
    strict: bool,
    result: Arc<Mutex<Option<bool>>>,
}

impl ServerCertVerifier for RecordingVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let r = match &self.inner {
            Some(v) => v.verify_server_cert(end_entity, intermediates, server_name, ocsp, now),
            None => Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::UnknownIssuer,
            )),
        };
        *self.result.lock().unwrap_or_else(|e| e.into_inner()) = Some(r.is_ok());
        match r {
            Ok(v) => Ok(v),
            Err(e) if self.strict => Err(e),
            Err(_) => Ok(ServerCertVerified::assertion()),
        }
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Our identity for server-to-server TLS.
#[derive(Clone)]
pub struct Identity {
    pub certs: Vec<CertificateDer<'static>>,
    pub key: Arc<PrivateKeyDer<'static>>,
}

impl Identity {
    pub fn load(paths: &CertPaths) -> Result<Identity> {
        Ok(Identity {
            certs: load_certs(&paths.cert)?,
            key: Arc::new(load_key(&paths.key)?),
        })
    }
}

/// The outcome of the peer certificate check: `None` before it ran, then whether it passed.
pub type CertCheckSlot = Arc<Mutex<Option<bool>>>;

/// A client configuration for one outbound s2s connection and the slot in which the
/// certificate check's outcome lands.
pub fn s2s_client_config(
    roots: &Arc<RootCertStore>,
    id: &Identity,
    strict: bool,
) -> Result<(Arc<rustls::ClientConfig>, CertCheckSlot)> {
    let inner = if roots.is_empty() {
        None
    } else {
        Some(
            WebPkiServerVerifier::builder_with_provider(roots.clone(), provider())
                .build()
                .context("building the certificate verifier")?,
        )
    };
    let result = Arc::new(Mutex::new(None));
    let verifier = Arc::new(RecordingVerifier {
        inner,
        provider: provider(),
        strict,
        result: result.clone(),
    });
    let cfg = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_auth_cert(id.certs.clone(), id.key.clone_key())
        .context("our certificate and key do not match")?;
    Ok((Arc::new(cfg), result))
}

/// Asks for a client certificate but accepts any (or none): which domains it authenticates is
/// decided after the handshake by [`valid_names`], against the domain the peer claims.
#[derive(Debug)]
struct AnyClientCert {
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ClientCertVerifier for AnyClientCert {
    fn offer_client_auth(&self) -> bool {
        true
    }
    fn client_auth_mandatory(&self) -> bool {
        false
    }
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }
    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// The server configuration for inbound s2s connections.
pub fn s2s_server_config(id: &Identity) -> Result<Arc<rustls::ServerConfig>> {
    let p = provider();
    let cfg = rustls::ServerConfig::builder_with_provider(p.clone())
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_client_cert_verifier(Arc::new(AnyClientCert { provider: p }))
        .with_single_cert(id.certs.clone(), id.key.clone_key())
        .context("the certificate and key do not match")?;
    Ok(Arc::new(cfg))
}
