//! The benchmark fixture: the same users and rosters written into Entente's store or into
//! Prosody's `mod_storage_internal` files, before the servers start.
//!
//! Side A: senders `s0..`, the fan-out publisher `f0`, idle users `i0..`, and for the SIP
//! scenarios the users `u0..` that a foreign SIP domain (sipp) messages and watches.
//! Side B: recipients `r0..`, watchers `w0..`.
//! Rosters: `f0@A` has every `wN@B` with subscription `from`; every `wN@B` has `f0@A` with
//! subscription `to`, exactly the state a completed subscription handshake leaves.
//!
//! Every account has the same password and the same SCRAM salt (4096 iterations, as `entente
//! user add` uses): a benchmark fixture, derived once. Servers verify each login in full.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};
use entente_model::subscription::SubState;
use entente_store::{RosterRow, ScramRecord, Store, UserRecord};
use entente_xmpp_proto::scram::{ScramHash, ScramKeys};

pub const SALT: &[u8] = b"entente-bench-fixture-salt";
pub const ITERATIONS: u32 = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Side {
    A,
    B,
}

#[derive(Debug, Clone)]
pub struct Fixture {
    pub side: Side,
    pub domain: String,
    pub peer: String,
    pub pairs: usize,
    pub watchers: usize,
    pub idle: usize,
    /// Users `u0..` on side A for the SIP scenarios.
    pub sip_users: usize,
    pub password: String,
}

impl Fixture {
    /// Local user names of this side.
    pub fn users(&self) -> Vec<String> {
        let mut v = Vec::new();
        match self.side {
            Side::A => {
                v.extend((0..self.pairs).map(|i| format!("s{i}")));
                v.push("f0".to_string());
                v.extend((0..self.idle).map(|i| format!("i{i}")));
                v.extend((0..self.sip_users).map(|i| format!("u{i}")));
            }
            Side::B => {
                v.extend((0..self.pairs).map(|i| format!("r{i}")));
                v.extend((0..self.watchers).map(|i| format!("w{i}")));
            }
        }
        v
    }

    /// Roster items: (owner local name, contact JID, subscription "to" or "from").
    pub fn roster(&self) -> Vec<(String, String, &'static str)> {
        match self.side {
            Side::A => (0..self.watchers)
                .map(|i| ("f0".to_string(), format!("w{i}@{}", self.peer), "from"))
                .collect(),
            Side::B => (0..self.watchers)
                .map(|i| (format!("w{i}"), format!("f0@{}", self.peer), "to"))
                .collect(),
        }
    }
}

fn record(k: &ScramKeys) -> ScramRecord {
    ScramRecord {
        salt: k.salt.clone(),
        iterations: k.iterations,
        stored_key: k.stored_key.clone(),
        server_key: k.server_key.clone(),
    }
}

/// Writes the fixture into an Entente database (`sqlite://…`).
pub async fn entente(db: &str, fx: &Fixture) -> Result<(usize, usize)> {
    let store = Store::open(db)
        .await
        .with_context(|| format!("opening {db}"))?;
    let sha1 = record(&ScramKeys::from_salt(
        ScramHash::Sha1,
        &fx.password,
        SALT.to_vec(),
        ITERATIONS,
    ));
    let sha256 = record(&ScramKeys::from_salt(
        ScramHash::Sha256,
        &fx.password,
        SALT.to_vec(),
        ITERATIONS,
    ));
    let users = fx.users();
    let mut created = 0;
    // A few writers at once: SQLite serialises them, but the pool overlaps the round trips.
    let mut set = tokio::task::JoinSet::new();
    for chunk in users.chunks(users.len().div_ceil(4).max(1)) {
        let store = store.clone();
        let (sha1, sha256, domain) = (sha1.clone(), sha256.clone(), fx.domain.clone());
        let chunk = chunk.to_vec();
        set.spawn(async move {
            let mut n = 0usize;
            for u in chunk {
                let jid = format!("{u}@{domain}");
                if store.user_exists(&jid).await? {
                    continue;
                }
                store
                    .user_create(&UserRecord {
                        jid,
                        sha1: sha1.clone(),
                        sha256: sha256.clone(),
                    })
                    .await?;
                n += 1;
            }
            anyhow::Ok(n)
        });
    }
    while let Some(r) = set.join_next().await {
        created += r??;
    }
    let items = fx.roster();
    let mut set = tokio::task::JoinSet::new();
    for chunk in items.chunks(items.len().div_ceil(4).max(1)) {
        let store = store.clone();
        let domain = fx.domain.clone();
        let chunk = chunk.to_vec();
        set.spawn(async move {
            for (owner, contact, sub) in chunk {
                store
                    .roster_put(&RosterRow {
                        owner: format!("{owner}@{domain}"),
                        contact,
                        name: None,
                        groups: Vec::new(),
                        sub: SubState {
                            to: sub == "to",
                            from: sub == "from",
                            ..SubState::default()
                        },
                        in_roster: true,
                        pending_in_stanza: None,
                    })
                    .await?;
            }
            anyhow::Ok(())
        });
    }
    while let Some(r) = set.join_next().await {
        r??;
    }
    store.close().await;
    Ok((created, items.len()))
}

/// Prosody's `util.datamanager` path encoding: every non-alphanumeric byte as `%xx`.
pub fn prosody_encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02x}");
        }
    }
    out
}

fn hex(b: &[u8]) -> String {
    b.iter().fold(String::new(), |mut s, x| {
        let _ = write!(s, "{x:02x}");
        s
    })
}

fn lua_str(s: &str) -> String {
    format!("{s:?}")
}

/// Prosody's account record (mod_auth_internal_hashed with `password_hash = "SHA-256"`).
pub fn prosody_account(password: &str) -> String {
    let k = ScramKeys::from_salt(ScramHash::Sha256, password, SALT.to_vec(), ITERATIONS);
    format!(
        "return {{\n\t[\"iteration_count\"] = {ITERATIONS};\n\t[\"salt\"] = {};\n\
         \t[\"stored_key\"] = \"{}\";\n\t[\"server_key\"] = \"{}\";\n}};\n",
        lua_str(std::str::from_utf8(SALT).expect("ASCII salt")),
        hex(&k.stored_key),
        hex(&k.server_key)
    )
}

/// Prosody's roster record (core.rostermanager: `[false]` holds the metadata).
pub fn prosody_roster(items: &[(String, &str)]) -> String {
    let mut s = String::from(
        "return {\n\t[false] = {\n\t\t[\"version\"] = 1;\n\t\t[\"pending\"] = {};\n\t};\n",
    );
    for (contact, sub) in items {
        let _ = writeln!(
            s,
            "\t[{}] = {{\n\t\t[\"subscription\"] = \"{sub}\";\n\t\t[\"groups\"] = {{}};\n\t}};",
            lua_str(contact)
        );
    }
    s.push_str("};\n");
    s
}

/// Writes the fixture into a Prosody `data_path` (mod_storage_internal).
pub fn prosody(data_path: &Path, fx: &Fixture) -> Result<(usize, usize)> {
    let host = data_path.join(prosody_encode(&fx.domain));
    let accounts = host.join("accounts");
    let roster = host.join("roster");
    std::fs::create_dir_all(&accounts)?;
    std::fs::create_dir_all(&roster)?;
    let account = prosody_account(&fx.password);
    let users = fx.users();
    for u in &users {
        std::fs::write(
            accounts.join(format!("{}.dat", prosody_encode(u))),
            &account,
        )?;
    }
    let mut by_owner: std::collections::BTreeMap<String, Vec<(String, &str)>> = Default::default();
    let items = fx.roster();
    for (owner, contact, sub) in &items {
        by_owner
            .entry(owner.clone())
            .or_default()
            .push((contact.clone(), sub));
    }
    for (owner, items) in by_owner {
        std::fs::write(
            roster.join(format!("{}.dat", prosody_encode(&owner))),
            prosody_roster(&items),
        )?;
    }
    Ok((users.len(), items.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fx(side: Side) -> Fixture {
        Fixture {
            side,
            domain: "a.bench".into(),
            peer: "b.bench".into(),
            pairs: 2,
            watchers: 3,
            idle: 1,
            sip_users: 1,
            password: "pw".into(),
        }
    }

    #[test]
    fn fixture_layout() {
        assert_eq!(fx(Side::A).users(), ["s0", "s1", "f0", "i0", "u0"]);
        assert_eq!(fx(Side::B).users(), ["r0", "r1", "w0", "w1", "w2"]);
        let r = fx(Side::B).roster();
        assert_eq!(r[2], ("w2".to_string(), "f0@b.bench".to_string(), "to"));
        assert_eq!(fx(Side::A).roster().len(), 3);
    }

    #[test]
    fn prosody_files() {
        assert_eq!(prosody_encode("a.bench"), "a%2ebench");
        let acc = prosody_account("pw");
        assert!(acc.contains("[\"iteration_count\"] = 4096;"));
        assert!(acc.contains("\"entente-bench-fixture-salt\""));
        let r = prosody_roster(&[("w0@b.bench".to_string(), "from")]);
        assert!(r.contains("[\"w0@b.bench\"] = {\n\t\t[\"subscription\"] = \"from\";"));
        assert!(r.starts_with("return {\n\t[false] = {"));
    }

    #[tokio::test]
    async fn entente_store_seed() {
        let dir = std::env::temp_dir().join(format!("entente-bench-seed-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let db = format!("sqlite://{}/t.db", dir.display());
        let (u, r) = entente(&db, &fx(Side::A)).await.unwrap();
        assert_eq!((u, r), (5, 3));
        let store = Store::open(&db).await.unwrap();
        let rec = store.user("i0@a.bench").await.unwrap().unwrap();
        assert_eq!(rec.sha256.iterations, ITERATIONS);
        let row = store
            .roster_get("f0@a.bench", "w1@b.bench")
            .await
            .unwrap()
            .unwrap();
        assert!(row.sub.from && !row.sub.to && row.in_roster);
        store.close().await;
        let _ = std::fs::remove_dir_all(&dir);
    }
}
