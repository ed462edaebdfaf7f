//! A minimal XMPP client for load generation: TCP, STARTTLS (trusting one CA file), SASL
//! SCRAM-SHA-256 or SCRAM-SHA-1, resource binding, then raw stanza I/O.
//!
//! Parsing uses our sans-IO [`XmlStream`]; stanzas are written as strings. The salted password
//! of a SCRAM exchange is cached per (hash, salt, iterations), so thousands of bench users that
//! share one fixture password cost one PBKDF2 derivation, not one per login: the load generator
//! must not be the bottleneck of a login storm.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};

use anyhow::{anyhow, bail, Context, Result};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use entente_xmpp_proto::{Element, Limits, StreamEvent, XmlStream};
use hmac::{Hmac, Mac};
use rand::RngCore;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

pub const NS_TLS: &str = "urn:ietf:params:xml:ns:xmpp-tls";
pub const NS_SASL: &str = "urn:ietf:params:xml:ns:xmpp-sasl";
pub const NS_BIND: &str = "urn:ietf:params:xml:ns:xmpp-bind";
pub const NS_STREAM: &str = "http://etherx.jabber.org/streams";

/// Where and how to connect.
#[derive(Clone)]
pub struct Target {
    pub addr: SocketAddr,
    pub domain: String,
    pub tls: TlsConnector,
}

/// Builds a TLS connector that trusts only the certificates in `ca_file` (PEM).
pub fn connector(ca_file: &std::path::Path) -> Result<TlsConnector> {
    let pem = std::fs::read(ca_file).with_context(|| format!("reading {}", ca_file.display()))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
        roots.add(cert.context("parsing the CA file")?)?;
    }
    if roots.is_empty() {
        bail!("no certificate in {}", ca_file.display());
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(TlsConnector::from(Arc::new(cfg)))
}

/// Reads stream events from a byte stream through an [`XmlStream`].
struct Reader {
    parser: XmlStream,
    queue: VecDeque<StreamEvent>,
    buf: Vec<u8>,
}

impl Reader {
    fn new() -> Reader {
        Reader {
            parser: XmlStream::new(Limits {
                max_stanza_bytes: 1 << 20,
                max_depth: 64,
            }),
            queue: VecDeque::new(),
            buf: vec![0u8; 4096],
        }
    }

    async fn next<R: AsyncRead + Unpin>(&mut self, r: &mut R) -> Result<StreamEvent> {
        loop {
            if let Some(ev) = self.queue.pop_front() {
                return Ok(ev);
            }
            let n = r.read(&mut self.buf).await?;
            if n == 0 {
                bail!("connection closed by the server");
            }
            let mut out = Vec::new();
            self.parser
                .feed(&self.buf[..n], &mut out)
                .map_err(|e| anyhow!("bad XML from the server: {e}"))?;
            self.queue.extend(out);
        }
    }

    async fn stanza<R: AsyncRead + Unpin>(&mut self, r: &mut R) -> Result<Element> {
        match self.next(r).await? {
            StreamEvent::Stanza(el) => {
                if el.is("error", NS_STREAM) {
                    bail!("stream error: {}", describe(&el));
                }
                Ok(el)
            }
            StreamEvent::Header(_) => bail!("unexpected stream header"),
            StreamEvent::End => bail!("the server closed the stream"),
        }
    }

    async fn header_and_features<R: AsyncRead + Unpin>(&mut self, r: &mut R) -> Result<Element> {
        match self.next(r).await? {
            StreamEvent::Header(_) => {}
            other => bail!("expected a stream header, got {other:?}"),
        }
        let f = self.stanza(r).await?;
        if !f.is("features", NS_STREAM) {
            bail!("expected stream features, got <{}>", f.name);
        }
        Ok(f)
    }
}

fn describe(el: &Element) -> String {
    let mut s = String::new();
    el.write_to(&mut s, "");
    s.chars().take(300).collect()
}

fn header(domain: &str) -> String {
    format!(
        "<?xml version='1.0'?><stream:stream xmlns='jabber:client' \
         xmlns:stream='http://etherx.jabber.org/streams' to='{domain}' version='1.0'>"
    )
}

/// A logged-in (bound) client connection.
pub struct Client {
    pub stream: TlsStream<TcpStream>,
    reader: Reader,
}

impl Client {
    /// Connects, negotiates TLS and SASL, binds resource `resource`.
    pub async fn login(t: &Target, user: &str, password: &str, resource: &str) -> Result<Client> {
        let tcp = TcpStream::connect(t.addr)
            .await
            .with_context(|| format!("connecting to {}", t.addr))?;
        tcp.set_nodelay(true)?;
        let mut tcp = tcp;
        // Plain stream: STARTTLS.
        let mut rd = Reader::new();
        tcp.write_all(header(&t.domain).as_bytes()).await?;
        let f = rd.header_and_features(&mut tcp).await?;
        if f.find("starttls", NS_TLS).is_none() {
            bail!("the server does not offer STARTTLS");
        }
        tcp.write_all(b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
            .await?;
        let p = rd.stanza(&mut tcp).await?;
        if !p.is("proceed", NS_TLS) {
            bail!("STARTTLS refused: {}", describe(&p));
        }
        let name = rustls::pki_types::ServerName::try_from(t.domain.clone())?;
        let mut tls = t.tls.connect(name, tcp).await.context("TLS handshake")?;

        // SASL.
        let mut rd = Reader::new();
        tls.write_all(header(&t.domain).as_bytes()).await?;
        let f = rd.header_and_features(&mut tls).await?;
        let mechs: Vec<String> = f
            .find("mechanisms", NS_SASL)
            .map(|m| m.elements().map(|e| e.text_content()).collect())
            .unwrap_or_default();
        let hash = if mechs.iter().any(|m| m == "SCRAM-SHA-256") {
            Hash::Sha256
        } else if mechs.iter().any(|m| m == "SCRAM-SHA-1") {
            Hash::Sha1
        } else {
            bail!("no SCRAM mechanism offered (offered: {mechs:?})");
        };
        let scram = Scram::new(hash, user, password);
        let first = format!(
            "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='{}'>{}</auth>",
            hash.mechanism(),
            B64.encode(scram.client_first())
        );
        tls.write_all(first.as_bytes()).await?;
        let ch = rd.stanza(&mut tls).await?;
        if !ch.is("challenge", NS_SASL) {
            bail!("SASL for {user}: {}", describe(&ch));
        }
        let server_first = B64
            .decode(ch.text_content().trim())
            .context("challenge is not base64")?;
        let (fin, expect_sig) = scram.respond(&server_first)?;
        let resp = format!(
            "<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>{}</response>",
            B64.encode(fin)
        );
        tls.write_all(resp.as_bytes()).await?;
        let ok = rd.stanza(&mut tls).await?;
        if !ok.is("success", NS_SASL) {
            bail!("SASL for {user} failed: {}", describe(&ok));
        }
        let sig = B64.decode(ok.text_content().trim()).unwrap_or_default();
        if sig != format!("v={}", B64.encode(&expect_sig)).into_bytes() {
            bail!("SASL for {user}: the server signature does not verify");
        }

        // Bind.
        let mut rd = Reader::new();
        tls.write_all(header(&t.domain).as_bytes()).await?;
        let f = rd.header_and_features(&mut tls).await?;
        if f.find("bind", NS_BIND).is_none() {
            bail!("no resource binding offered");
        }
        let bind = format!(
            "<iq type='set' id='bind1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>\
             <resource>{resource}</resource></bind></iq>"
        );
        tls.write_all(bind.as_bytes()).await?;
        loop {
            let r = rd.stanza(&mut tls).await?;
            if r.name == "iq" && r.get_attr("id") == Some("bind1") {
                if r.get_attr("type") != Some("result") {
                    bail!("bind failed: {}", describe(&r));
                }
                let jid = r
                    .find("bind", NS_BIND)
                    .and_then(|b| b.elements().find(|e| e.name == "jid"))
                    .map(|j| j.text_content())
                    .ok_or_else(|| anyhow!("bind result without a JID"))?;
                if bare(&jid) != format!("{user}@{}", t.domain) {
                    bail!("bound {jid}, not {user}@{}", t.domain);
                }
                break;
            }
        }
        Ok(Client {
            stream: tls,
            reader: rd,
        })
    }

    /// Writes raw XML.
    pub async fn send(&mut self, xml: &str) -> Result<()> {
        self.stream.write_all(xml.as_bytes()).await?;
        Ok(())
    }

    /// The next stanza from the server.
    pub async fn next(&mut self) -> Result<Element> {
        self.reader.stanza(&mut self.stream).await
    }
}

/// The bare part of a JID.
pub fn bare(jid: &str) -> &str {
    jid.split('/').next().unwrap_or(jid)
}

// ---- SCRAM client with a salted-password cache ----

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Hash {
    Sha1,
    Sha256,
}

impl Hash {
    fn mechanism(self) -> &'static str {
        match self {
            Hash::Sha1 => "SCRAM-SHA-1",
            Hash::Sha256 => "SCRAM-SHA-256",
        }
    }

    fn hmac(self, key: &[u8], data: &[u8]) -> Vec<u8> {
        match self {
            Hash::Sha1 => {
                let mut m = Hmac::<sha1::Sha1>::new_from_slice(key).expect("any key length");
                m.update(data);
                m.finalize().into_bytes().to_vec()
            }
            Hash::Sha256 => {
                let mut m = Hmac::<sha2::Sha256>::new_from_slice(key).expect("any key length");
                m.update(data);
                m.finalize().into_bytes().to_vec()
            }
        }
    }

    fn hash(self, data: &[u8]) -> Vec<u8> {
        use sha2::Digest;
        match self {
            Hash::Sha1 => sha1::Sha1::digest(data).to_vec(),
            Hash::Sha256 => sha2::Sha256::digest(data).to_vec(),
        }
    }

    fn salted_uncached(self, password: &[u8], salt: &[u8], iterations: u32) -> Vec<u8> {
        match self {
            Hash::Sha1 => {
                let mut out = [0u8; 20];
                pbkdf2::pbkdf2_hmac::<sha1::Sha1>(password, salt, iterations, &mut out);
                out.to_vec()
            }
            Hash::Sha256 => {
                let mut out = [0u8; 32];
                pbkdf2::pbkdf2_hmac::<sha2::Sha256>(password, salt, iterations, &mut out);
                out.to_vec()
            }
        }
    }

    /// PBKDF2, cached per (hash, password, salt, iterations) for the life of the process.
    fn salted(self, password: &str, salt: &[u8], iterations: u32) -> Vec<u8> {
        type Key = (Hash, String, Vec<u8>, u32);
        static CACHE: OnceLock<Mutex<HashMap<Key, Vec<u8>>>> = OnceLock::new();
        let cache = CACHE.get_or_init(Default::default);
        let key = (self, password.to_string(), salt.to_vec(), iterations);
        if let Some(v) = cache.lock().expect("cache lock").get(&key) {
            return v.clone();
        }
        let v = self.salted_uncached(password.as_bytes(), salt, iterations);
        cache.lock().expect("cache lock").insert(key, v.clone());
        v
    }
}

/// One SCRAM exchange (RFC 5802), client side, without channel binding.
pub struct Scram {
    hash: Hash,
    password: String,
    bare: String,
    nonce: String,
}

impl Scram {
    pub fn new(hash: Hash, user: &str, password: &str) -> Scram {
        let mut rnd = [0u8; 18];
        rand::thread_rng().fill_bytes(&mut rnd);
        let nonce = B64.encode(rnd);
        let bare = format!(
            "n={},r={nonce}",
            user.replace('=', "=3D").replace(',', "=2C")
        );
        Scram {
            hash,
            password: password.to_string(),
            bare,
            nonce,
        }
    }

    pub fn client_first(&self) -> Vec<u8> {
        format!("n,,{}", self.bare).into_bytes()
    }

    /// The client-final message and the server signature to expect in `<success/>`.
    pub fn respond(&self, server_first: &[u8]) -> Result<(Vec<u8>, Vec<u8>)> {
        let sf = std::str::from_utf8(server_first).context("server-first is not UTF-8")?;
        let (mut nonce, mut salt, mut iter) = (None, None, None);
        for attr in sf.split(',') {
            if let Some(v) = attr.strip_prefix("r=") {
                nonce = Some(v);
            } else if let Some(v) = attr.strip_prefix("s=") {
                salt = B64.decode(v).ok();
            } else if let Some(v) = attr.strip_prefix("i=") {
                iter = v.parse::<u32>().ok();
            }
        }
        let nonce = nonce.ok_or_else(|| anyhow!("server-first without nonce"))?;
        if !nonce.starts_with(&self.nonce) {
            bail!("SCRAM nonce mismatch");
        }
        let salt = salt.ok_or_else(|| anyhow!("server-first without salt"))?;
        let iter = iter.ok_or_else(|| anyhow!("server-first without iterations"))?;
        let h = self.hash;
        let salted = h.salted(&self.password, &salt, iter);
        let client_key = h.hmac(&salted, b"Client Key");
        let stored_key = h.hash(&client_key);
        let without_proof = format!("c={},r={nonce}", B64.encode("n,,"));
        let auth_message = format!("{},{sf},{without_proof}", self.bare);
        let sig = h.hmac(&stored_key, auth_message.as_bytes());
        let proof: Vec<u8> = client_key.iter().zip(&sig).map(|(a, b)| a ^ b).collect();
        let server_key = h.hmac(&salted, b"Server Key");
        let server_sig = h.hmac(&server_key, auth_message.as_bytes());
        Ok((
            format!("{without_proof},p={}", B64.encode(proof)).into_bytes(),
            server_sig,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use entente_xmpp_proto::scram::{ClientFirst, ScramHash, ScramKeys, ScramServer};

    /// Our cached client against the server side of entente-xmpp-proto, both hashes.
    #[test]
    fn scram_against_the_server_implementation() {
        for (h, sh) in [
            (Hash::Sha1, ScramHash::Sha1),
            (Hash::Sha256, ScramHash::Sha256),
        ] {
            let keys = ScramKeys::from_salt(sh, "pencil", b"fixed-salt".to_vec(), 4096);
            for _ in 0..2 {
                let c = Scram::new(h, "user", "pencil");
                let first = c.client_first();
                let cf = ClientFirst::parse(&first).unwrap();
                let (server, server_first) = ScramServer::start(sh, cf, keys.clone());
                let (fin, expect) = c.respond(&server_first).unwrap();
                let ok = server.finish(&fin).unwrap();
                assert_eq!(ok, format!("v={}", B64.encode(expect)).into_bytes());
            }
        }
    }
}
