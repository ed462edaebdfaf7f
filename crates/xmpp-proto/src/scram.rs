//! SASL SCRAM (RFC 5802, RFC 7677) on the server side, PLAIN verification against SCRAM keys, and
//! the derivation of the keys that are stored instead of passwords.
//!
//! Channel binding is not offered (no `-PLUS` mechanisms): a client that sends `y` is accepted as
//! RFC 5802 §6 allows when the server advertises no binding; one that sends `p=` is refused.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha1::Sha1;
use sha2::{Digest, Sha256};

/// The hash a SCRAM mechanism uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScramHash {
    Sha1,
    Sha256,
}

impl ScramHash {
    pub fn mechanism(self) -> &'static str {
        match self {
            ScramHash::Sha1 => "SCRAM-SHA-1",
            ScramHash::Sha256 => "SCRAM-SHA-256",
        }
    }

    fn hmac(self, key: &[u8], data: &[u8]) -> Vec<u8> {
        match self {
            ScramHash::Sha1 => {
                let mut m =
                    <Hmac<Sha1> as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable_hmac());
                m.update(data);
                m.finalize().into_bytes().to_vec()
            }
            ScramHash::Sha256 => {
                let mut m = <Hmac<Sha256> as Mac>::new_from_slice(key)
                    .unwrap_or_else(|_| unreachable_hmac());
                m.update(data);
                m.finalize().into_bytes().to_vec()
            }
        }
    }

    fn hash(self, data: &[u8]) -> Vec<u8> {
        match self {
            ScramHash::Sha1 => Sha1::digest(data).to_vec(),
            ScramHash::Sha256 => Sha256::digest(data).to_vec(),
        }
    }

    fn salted_password(self, password: &[u8], salt: &[u8], iterations: u32) -> Vec<u8> {
        match self {
            ScramHash::Sha1 => {
                let mut out = [0u8; 20];
                pbkdf2::pbkdf2_hmac::<Sha1>(password, salt, iterations, &mut out);
                out.to_vec()
            }
            ScramHash::Sha256 => {
                let mut out = [0u8; 32];
                pbkdf2::pbkdf2_hmac::<Sha256>(password, salt, iterations, &mut out);
                out.to_vec()
            }
        }
    }
}

// HMAC accepts keys of any length; `new_from_slice` cannot fail for it.
fn unreachable_hmac<T>() -> T {
    panic!("HMAC accepts keys of any length")
}

/// The stored form of one password for one hash: never the password itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScramKeys {
    pub salt: Vec<u8>,
    pub iterations: u32,
    pub stored_key: Vec<u8>,
    pub server_key: Vec<u8>,
}

/// Both key sets of an account (SCRAM-SHA-1 and SCRAM-SHA-256).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub sha1: ScramKeys,
    pub sha256: ScramKeys,
}

pub const DEFAULT_ITERATIONS: u32 = 4096;

impl Credentials {
    /// Derives fresh keys, with a new random salt each, from a password.
    pub fn derive(password: &str, iterations: u32) -> Credentials {
        Credentials {
            sha1: ScramKeys::derive(ScramHash::Sha1, password, iterations),
            sha256: ScramKeys::derive(ScramHash::Sha256, password, iterations),
        }
    }

    pub fn keys(&self, h: ScramHash) -> &ScramKeys {
        match h {
            ScramHash::Sha1 => &self.sha1,
            ScramHash::Sha256 => &self.sha256,
        }
    }

    /// Checks a clear-text password (SASL PLAIN) against the SHA-256 keys.
    pub fn verify_password(&self, password: &str) -> bool {
        let k = &self.sha256;
        let expect =
            ScramKeys::from_salt(ScramHash::Sha256, password, k.salt.clone(), k.iterations);
        ct_eq(&expect.stored_key, &k.stored_key)
    }
}

impl ScramKeys {
    pub fn derive(h: ScramHash, password: &str, iterations: u32) -> ScramKeys {
        let mut salt = vec![0u8; 16];
        rand::thread_rng().fill_bytes(&mut salt);
        ScramKeys::from_salt(h, password, salt, iterations)
    }

    pub fn from_salt(h: ScramHash, password: &str, salt: Vec<u8>, iterations: u32) -> ScramKeys {
        let salted = h.salted_password(password.as_bytes(), &salt, iterations);
        let client_key = h.hmac(&salted, b"Client Key");
        let stored_key = h.hash(&client_key);
        let server_key = h.hmac(&salted, b"Server Key");
        ScramKeys {
            salt,
            iterations,
            stored_key,
            server_key,
        }
    }
}

fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Why a SCRAM exchange failed; maps to SASL failure conditions.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ScramError {
    #[error("malformed SCRAM message: {0}")]
    Malformed(&'static str),
    #[error("channel binding is not supported")]
    ChannelBindingUnsupported,
    #[error("authorization identity differs from the authentication identity")]
    InvalidAuthzid,
    #[error("nonce mismatch")]
    NonceMismatch,
    #[error("authentication failed")]
    BadProof,
}

/// Parsed SCRAM client-first message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientFirst {
    /// The decoded username (`n=`), `=2C`/`=3D` unescaped.
    pub username: String,
    pub authzid: Option<String>,
    gs2_header: String,
    bare: String,
    client_nonce: String,
}

impl ClientFirst {
    pub fn parse(msg: &[u8]) -> Result<ClientFirst, ScramError> {
        let msg = std::str::from_utf8(msg).map_err(|_| ScramError::Malformed("not UTF-8"))?;
        let mut it = msg.splitn(3, ',');
        let cb = it.next().ok_or(ScramError::Malformed("empty"))?;
        let authz = it.next().ok_or(ScramError::Malformed("no gs2 header"))?;
        let bare = it
            .next()
            .ok_or(ScramError::Malformed("no client-first-bare"))?;
        match cb {
            "n" | "y" => {}
            c if c.starts_with("p=") => return Err(ScramError::ChannelBindingUnsupported),
            _ => return Err(ScramError::Malformed("bad gs2 flag")),
        }
        let authzid = if authz.is_empty() {
            None
        } else {
            let a = authz
                .strip_prefix("a=")
                .ok_or(ScramError::Malformed("bad authzid"))?;
            Some(unescape_saslname(a)?)
        };
        let mut username = None;
        let mut nonce = None;
        for (i, attr) in bare.split(',').enumerate() {
            if i == 0 && attr.starts_with("m=") {
                return Err(ScramError::Malformed("mandatory extension not supported"));
            }
            if let Some(v) = attr.strip_prefix("n=") {
                username = Some(unescape_saslname(v)?);
            } else if let Some(v) = attr.strip_prefix("r=") {
                if v.is_empty() || !v.chars().all(|c| c.is_ascii_graphic() && c != ',') {
                    return Err(ScramError::Malformed("bad nonce"));
                }
                nonce = Some(v.to_string());
            }
        }
        let username = username.ok_or(ScramError::Malformed("no username"))?;
        if username.is_empty() {
            return Err(ScramError::Malformed("empty username"));
        }
        Ok(ClientFirst {
            username,
            authzid,
            gs2_header: format!("{cb},{authz},"),
            bare: bare.to_string(),
            client_nonce: nonce.ok_or(ScramError::Malformed("no nonce"))?,
        })
    }
}

fn unescape_saslname(s: &str) -> Result<String, ScramError> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('=') {
        out.push_str(&rest[..i]);
        let code = rest.get(i + 1..i + 3);
        match code {
            Some("2C") => out.push(','),
            Some("3D") => out.push('='),
            _ => return Err(ScramError::Malformed("bad escape in name")),
        }
        rest = &rest[i + 3..];
    }
    out.push_str(rest);
    Ok(out)
}

/// The server's side of one SCRAM exchange, after the client-first message and the account's keys.
pub struct ScramServer {
    hash: ScramHash,
    keys: ScramKeys,
    client_first: ClientFirst,
    server_first: String,
    nonce: String,
}

impl ScramServer {
    /// Starts the exchange; returns the state and the server-first message.
    pub fn start(
        hash: ScramHash,
        client_first: ClientFirst,
        keys: ScramKeys,
    ) -> (ScramServer, Vec<u8>) {
        let mut rnd = [0u8; 18];
        rand::thread_rng().fill_bytes(&mut rnd);
        let nonce = format!("{}{}", client_first.client_nonce, B64.encode(rnd));
        let server_first = format!(
            "r={},s={},i={}",
            nonce,
            B64.encode(&keys.salt),
            keys.iterations
        );
        let msg = server_first.clone().into_bytes();
        (
            ScramServer {
                hash,
                keys,
                client_first,
                server_first,
                nonce,
            },
            msg,
        )
    }

    /// Checks the client-final message; on success returns the server-final message.
    pub fn finish(self, client_final: &[u8]) -> Result<Vec<u8>, ScramError> {
        let msg =
            std::str::from_utf8(client_final).map_err(|_| ScramError::Malformed("not UTF-8"))?;
        let proof_at = msg.rfind(",p=").ok_or(ScramError::Malformed("no proof"))?;
        let without_proof = &msg[..proof_at];
        let proof = B64
            .decode(&msg[proof_at + 3..])
            .map_err(|_| ScramError::Malformed("bad proof encoding"))?;
        let mut cbind = None;
        let mut nonce = None;
        for attr in without_proof.split(',') {
            if let Some(v) = attr.strip_prefix("c=") {
                cbind = Some(v);
            } else if let Some(v) = attr.strip_prefix("r=") {
                nonce = Some(v);
            }
        }
        let cbind = B64
            .decode(cbind.ok_or(ScramError::Malformed("no channel binding"))?)
            .map_err(|_| ScramError::Malformed("bad channel binding encoding"))?;
        if cbind != self.client_first.gs2_header.as_bytes() {
            return Err(ScramError::Malformed("channel binding mismatch"));
        }
        if nonce != Some(self.nonce.as_str()) {
            return Err(ScramError::NonceMismatch);
        }
        let auth_message = format!(
            "{},{},{}",
            self.client_first.bare, self.server_first, without_proof
        );
        let client_signature = self
            .hash
            .hmac(&self.keys.stored_key, auth_message.as_bytes());
        if proof.len() != client_signature.len() {
            return Err(ScramError::BadProof);
        }
        let client_key: Vec<u8> = proof
            .iter()
            .zip(&client_signature)
            .map(|(a, b)| a ^ b)
            .collect();
        if !ct_eq(&self.hash.hash(&client_key), &self.keys.stored_key) {
            return Err(ScramError::BadProof);
        }
        let server_signature = self
            .hash
            .hmac(&self.keys.server_key, auth_message.as_bytes());
        Ok(format!("v={}", B64.encode(server_signature)).into_bytes())
    }
}

/// A SCRAM client, used by tests and by the load tool.
pub struct ScramClient {
    hash: ScramHash,
    password: String,
    bare: String,
    nonce: String,
}

impl ScramClient {
    pub fn new(hash: ScramHash, username: &str, password: &str) -> (ScramClient, Vec<u8>) {
        let mut rnd = [0u8; 18];
        rand::thread_rng().fill_bytes(&mut rnd);
        let nonce = B64.encode(rnd);
        let bare = format!(
            "n={},r={}",
            username.replace('=', "=3D").replace(',', "=2C"),
            nonce
        );
        let first = format!("n,,{bare}").into_bytes();
        (
            ScramClient {
                hash,
                password: password.to_string(),
                bare,
                nonce,
            },
            first,
        )
    }

    /// Answers the server-first message; returns the client-final message and the expected
    /// server signature.
    pub fn respond(&self, server_first: &[u8]) -> Result<(Vec<u8>, Vec<u8>), ScramError> {
        let sf =
            std::str::from_utf8(server_first).map_err(|_| ScramError::Malformed("not UTF-8"))?;
        let mut nonce = None;
        let mut salt = None;
        let mut iter = None;
        for attr in sf.split(',') {
            if let Some(v) = attr.strip_prefix("r=") {
                nonce = Some(v);
            } else if let Some(v) = attr.strip_prefix("s=") {
                salt = B64.decode(v).ok();
            } else if let Some(v) = attr.strip_prefix("i=") {
                iter = v.parse::<u32>().ok();
            }
        }
        let nonce = nonce.ok_or(ScramError::Malformed("no nonce"))?;
        if !nonce.starts_with(&self.nonce) {
            return Err(ScramError::NonceMismatch);
        }
        let salt = salt.ok_or(ScramError::Malformed("no salt"))?;
        let iter = iter.ok_or(ScramError::Malformed("no iterations"))?;
        let salted = self
            .hash
            .salted_password(self.password.as_bytes(), &salt, iter);
        let client_key = self.hash.hmac(&salted, b"Client Key");
        let stored_key = self.hash.hash(&client_key);
        let without_proof = format!("c={},r={}", B64.encode("n,,"), nonce);
        let auth_message = format!("{},{},{}", self.bare, sf, without_proof);
        let sig = self.hash.hmac(&stored_key, auth_message.as_bytes());
        let proof: Vec<u8> = client_key.iter().zip(&sig).map(|(a, b)| a ^ b).collect();
        let server_key = self.hash.hmac(&salted, b"Server Key");
        let server_sig = self.hash.hmac(&server_key, auth_message.as_bytes());
        Ok((
            format!("{},p={}", without_proof, B64.encode(proof)).into_bytes(),
            format!("v={}", B64.encode(server_sig)).into_bytes(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc7677_vector() {
        // RFC 7677 §3: user "user", password "pencil".
        let salt = B64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let keys = ScramKeys::from_salt(ScramHash::Sha256, "pencil", salt, 4096);
        let cf = ClientFirst::parse(b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO").unwrap();
        let (mut srv, _) = ScramServer::start(ScramHash::Sha256, cf, keys);
        // Use the RFC's server nonce so the RFC's proof verifies.
        srv.nonce = "rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0".to_string();
        srv.server_first = format!("r={},s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096", srv.nonce);
        let fin = srv
            .finish(b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")
            .unwrap();
        assert_eq!(fin, b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=");
    }

    #[test]
    fn client_and_server_agree_and_wrong_password_fails() {
        for h in [ScramHash::Sha1, ScramHash::Sha256] {
            let creds = Credentials::derive("secret", 64);
            let (client, first) = ScramClient::new(h, "al,ice", "secret");
            let cf = ClientFirst::parse(&first).unwrap();
            assert_eq!(cf.username, "al,ice");
            let (srv, sfirst) = ScramServer::start(h, cf, creds.keys(h).clone());
            let (cfinal, expect) = client.respond(&sfirst).unwrap();
            assert_eq!(srv.finish(&cfinal).unwrap(), expect);

            let (client, first) = ScramClient::new(h, "alice", "wrong");
            let (srv, sfirst) = ScramServer::start(
                h,
                ClientFirst::parse(&first).unwrap(),
                creds.keys(h).clone(),
            );
            let (cfinal, _) = client.respond(&sfirst).unwrap();
            assert_eq!(srv.finish(&cfinal), Err(ScramError::BadProof));
        }
    }

    #[test]
    fn plain_verification() {
        let c = Credentials::derive("pw", 16);
        assert!(c.verify_password("pw"));
        assert!(!c.verify_password("pw2"));
    }

    #[test]
    fn malformed_client_first() {
        assert!(ClientFirst::parse(b"").is_err());
        assert!(ClientFirst::parse(b"x,,n=a,r=b").is_err());
        assert_eq!(
            ClientFirst::parse(b"p=tls-unique,,n=a,r=b"),
            Err(ScramError::ChannelBindingUnsupported)
        );
        assert!(ClientFirst::parse(b"n,,n=a=ZZ,r=b").is_err());
        assert!(ClientFirst::parse(b"n,,n=a").is_err());
        assert!(ClientFirst::parse(&[0xff, 0xfe]).is_err());
    }
}
