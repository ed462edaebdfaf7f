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
