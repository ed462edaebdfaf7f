//! Entente's persistence.
//!
//! One code path for SQLite (the embedded default) and PostgreSQL (clusters): the store talks to
//! sqlx's `Any` driver and keeps to SQL both engines accept: `TEXT` and `BIGINT` columns only
//! (binary keys are stored as hex), `$n` placeholders in order, `ON CONFLICT … DO UPDATE`, and no
//! auto-increment (sequence numbers come from the application). Migrations are numbered SQL
//! statements applied in order and recorded in `entente_schema`.
//!
//! Nothing here knows about XML: stanzas are stored as the serialized text the server hands in.

use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Row};

/// Storage errors.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
    #[error("{0} already exists")]
    Exists(String),
    #[error("{0} not found")]
    NotFound(String),
    #[error("corrupt record: {0}")]
    Corrupt(String),
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// One SCRAM key set as stored (see `entente_xmpp_proto::scram`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScramRecord {
    pub salt: Vec<u8>,
    pub iterations: u32,
    pub stored_key: Vec<u8>,
    pub server_key: Vec<u8>,
}

/// An account's stored credentials: SCRAM-SHA-1 and SCRAM-SHA-256 keys, never a password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRecord {
    pub jid: String,
    pub sha1: ScramRecord,
    pub sha256: ScramRecord,
}

/// One roster row: what a user's server knows about one contact.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RosterRow {
    pub owner: String,
    pub contact: String,
    pub name: Option<String>,
    pub groups: Vec<String>,
    pub sub: entente_model::subscription::SubState,
    /// The item is in the user's roster (a pending inbound request alone does not put it there).
    pub in_roster: bool,
    /// The subscription request stanza (serialized) kept while `sub.pending_in`.
    pub pending_in_stanza: Option<String>,
}

const MIGRATIONS: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS users (
        jid TEXT PRIMARY KEY,
        sha1_salt TEXT NOT NULL, sha1_iter BIGINT NOT NULL, sha1_stored TEXT NOT NULL, sha1_server TEXT NOT NULL,
        sha256_salt TEXT NOT NULL, sha256_iter BIGINT NOT NULL, sha256_stored TEXT NOT NULL, sha256_server TEXT NOT NULL,
        created BIGINT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS roster (
        owner TEXT NOT NULL, contact TEXT NOT NULL, name TEXT, groups_ TEXT NOT NULL,
        sub_to BIGINT NOT NULL, sub_from BIGINT NOT NULL, pending_out BIGINT NOT NULL,
        pending_in BIGINT NOT NULL, preapproved BIGINT NOT NULL, in_roster BIGINT NOT NULL,
        pending_in_stanza TEXT,
        PRIMARY KEY (owner, contact))",
    "CREATE TABLE IF NOT EXISTS offline (
        owner TEXT NOT NULL, seq BIGINT NOT NULL, stanza TEXT NOT NULL,
        PRIMARY KEY (owner, seq))",
    "CREATE TABLE IF NOT EXISTS blocklist (
        owner TEXT NOT NULL, jid TEXT NOT NULL,
        PRIMARY KEY (owner, jid))",
    "CREATE TABLE IF NOT EXISTS policy_rules (
        owner TEXT NOT NULL, target TEXT NOT NULL, rule TEXT NOT NULL,
        PRIMARY KEY (owner, target))",
    "CREATE TABLE IF NOT EXISTS sip_dialogs (
        id TEXT PRIMARY KEY, kind TEXT NOT NULL, local_jid TEXT NOT NULL,
        remote_jid TEXT NOT NULL, data TEXT NOT NULL, expires BIGINT NOT NULL)",
];

/// A persisted SIP dialog usage (a subscription either way, or an IM session): the SIP
/// federation gateway's state that must survive a restart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SipDialogRow {
    /// The gateway's key for the row (stable across refreshes).
    pub id: String,
    /// What the dialog is used for, e.g. `in-sub`, `out-sub`, `im`.
    pub kind: String,
    /// The local user's bare JID.
    pub local_jid: String,
    /// The foreign contact's bare JID.
    pub remote_jid: String,
    /// The gateway's serialized state (JSON).
    pub data: String,
    /// Unix seconds after which the row is stale.
    pub expires: i64,
}

/// The store: a connection pool and the queries.
#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
}

impl Store {
    /// Opens (creating if needed) the database at `url` (`sqlite://path` or `postgres://…`) and
    /// applies pending migrations.
    pub async fn open(url: &str) -> Result<Store> {
        sqlx::any::install_default_drivers();
        let is_sqlite = url.starts_with("sqlite:");
        let url = if is_sqlite && !url.contains('?') && !url.contains(":memory:") {
            format!("{url}?mode=rwc")
        } else {
            url.to_string()
        };
        let pool = AnyPoolOptions::new()
            .max_connections(if is_sqlite { 4 } else { 16 })
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if is_sqlite {
                        sqlx::query("PRAGMA busy_timeout = 10000")
                            .execute(&mut *conn)
                            .await?;
                        sqlx::query("PRAGMA foreign_keys = ON")
                            .execute(&mut *conn)
                            .await?;
                    }
                    Ok(())
                })
            })
            .connect(&url)
            .await?;
        if is_sqlite {
            sqlx::query("PRAGMA journal_mode = WAL")
                .execute(&pool)
                .await?;
        }
        let store = Store { pool };
        store.migrate().await?;
        Ok(store)
    }

    async fn migrate(&self) -> Result<()> {
        sqlx::query("CREATE TABLE IF NOT EXISTS entente_schema (version BIGINT NOT NULL)")
            .execute(&self.pool)
            .await?;
        let row = sqlx::query("SELECT MAX(version) AS v FROM entente_schema")
            .fetch_one(&self.pool)
            .await?;
        let current: i64 = row.try_get::<Option<i64>, _>("v")?.unwrap_or(0);
        for (i, sql) in MIGRATIONS.iter().enumerate() {
            let version = i as i64 + 1;
            if version <= current {
                continue;
            }
            let mut tx = self.pool.begin().await?;
            sqlx::query(*sql).execute(&mut *tx).await?;
            sqlx::query("INSERT INTO entente_schema (version) VALUES ($1)")
                .bind(version)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            tracing::debug!(version, "applied migration");
        }
        Ok(())
    }

    // ---- users ----

    pub async fn user_create(&self, rec: &UserRecord) -> Result<()> {
        let res = sqlx::query(
            "INSERT INTO users (jid, sha1_salt, sha1_iter, sha1_stored, sha1_server, sha256_salt, sha256_iter, sha256_stored, sha256_server, created)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT (jid) DO NOTHING",
        )
        .bind(&rec.jid)
        .bind(hex(&rec.sha1.salt))
        .bind(rec.sha1.iterations as i64)
        .bind(hex(&rec.sha1.stored_key))
        .bind(hex(&rec.sha1.server_key))
        .bind(hex(&rec.sha256.salt))
        .bind(rec.sha256.iterations as i64)
        .bind(hex(&rec.sha256.stored_key))
        .bind(hex(&rec.sha256.server_key))
        .bind(now_secs())
        .execute(&self.pool)
        .await?;
        if res.rows_affected() == 0 {
            return Err(StoreError::Exists(format!("user {}", rec.jid)));
        }
        Ok(())
    }

    pub async fn user_set_credentials(&self, rec: &UserRecord) -> Result<()> {
        let res = sqlx::query(
            "UPDATE users SET sha1_salt = $1, sha1_iter = $2, sha1_stored = $3, sha1_server = $4,
             sha256_salt = $5, sha256_iter = $6, sha256_stored = $7, sha256_server = $8 WHERE jid = $9",
        )
        .bind(hex(&rec.sha1.salt))
        .bind(rec.sha1.iterations as i64)
        .bind(hex(&rec.sha1.stored_key))
        .bind(hex(&rec.sha1.server_key))
        .bind(hex(&rec.sha256.salt))
        .bind(rec.sha256.iterations as i64)
        .bind(hex(&rec.sha256.stored_key))
        .bind(hex(&rec.sha256.server_key))
        .bind(&rec.jid)
        .execute(&self.pool)
        .await?;
        if res.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("user {}", rec.jid)));
        }
        Ok(())
    }

    pub async fn user(&self, jid: &str) -> Result<Option<UserRecord>> {
        let row = sqlx::query("SELECT * FROM users WHERE jid = $1")
            .bind(jid)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| user_from_row(&r)).transpose()
    }

    pub async fn user_exists(&self, jid: &str) -> Result<bool> {
        let row = sqlx::query("SELECT jid FROM users WHERE jid = $1")
            .bind(jid)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.is_some())
    }

    /// Deletes the account and everything stored for it.
    pub async fn user_delete(&self, jid: &str) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        let res = sqlx::query("DELETE FROM users WHERE jid = $1")
            .bind(jid)
            .execute(&mut *tx)
            .await?;
        if res.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("user {jid}")));
        }
        for q in [
            "DELETE FROM roster WHERE owner = $1",
            "DELETE FROM offline WHERE owner = $1",
            "DELETE FROM blocklist WHERE owner = $1",
            "DELETE FROM policy_rules WHERE owner = $1",
        ] {
            sqlx::query(q).bind(jid).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Accounts whose JID ends in `@domain`, sorted.
    pub async fn user_list(&self, domain: &str) -> Result<Vec<String>> {
        let rows = sqlx::query("SELECT jid FROM users ORDER BY jid")
            .fetch_all(&self.pool)
            .await?;
        let suffix = format!("@{domain}");
        let mut out = Vec::new();
        for r in rows {
            let j: String = r.try_get("jid")?;
            if j.ends_with(&suffix) {
                out.push(j);
            }
        }
        Ok(out)
    }

    // ---- roster ----

    pub async fn roster_all(&self, owner: &str) -> Result<Vec<RosterRow>> {
        let rows = sqlx::query("SELECT * FROM roster WHERE owner = $1 ORDER BY contact")
            .bind(owner)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(roster_from_row).collect()
    }

    pub async fn roster_get(&self, owner: &str, contact: &str) -> Result<Option<RosterRow>> {
        let row = sqlx::query("SELECT * FROM roster WHERE owner = $1 AND contact = $2")
            .bind(owner)
            .bind(contact)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| roster_from_row(&r)).transpose()
    }

    /// Inserts or replaces a roster row.
    pub async fn roster_put(&self, r: &RosterRow) -> Result<()> {
        sqlx::query(
            "INSERT INTO roster (owner, contact, name, groups_, sub_to, sub_from, pending_out, pending_in, preapproved, in_roster, pending_in_stanza)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
             ON CONFLICT (owner, contact) DO UPDATE SET name = excluded.name, groups_ = excluded.groups_,
               sub_to = excluded.sub_to, sub_from = excluded.sub_from, pending_out = excluded.pending_out,
               pending_in = excluded.pending_in, preapproved = excluded.preapproved, in_roster = excluded.in_roster,
               pending_in_stanza = excluded.pending_in_stanza",
        )
        .bind(&r.owner)
        .bind(&r.contact)
        .bind(r.name.clone())
        .bind(r.groups.join("\n"))
        .bind(r.sub.to as i64)
        .bind(r.sub.from as i64)
        .bind(r.sub.pending_out as i64)
        .bind(r.sub.pending_in as i64)
        .bind(r.sub.preapproved as i64)
        .bind(r.in_roster as i64)
        .bind(r.pending_in_stanza.clone())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn roster_delete(&self, owner: &str, contact: &str) -> Result<()> {
        sqlx::query("DELETE FROM roster WHERE owner = $1 AND contact = $2")
            .bind(owner)
            .bind(contact)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    // ---- offline messages ----

    /// Stores a stanza for `owner`, unless they already have `limit` waiting; returns whether it
    /// was stored.
    ///
    /// One statement, so the count and the insert are atomic without a read-then-write
    /// transaction: on SQLite such a transaction fails at once with "database is locked" when
    /// another connection wrote in between (the busy timeout does not apply to the upgrade).
    pub async fn offline_push(&self, owner: &str, stanza: &str, limit: u64) -> Result<bool> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let res = sqlx::query(
            "INSERT INTO offline (owner, seq, stanza)
             SELECT $1, COALESCE(MAX(seq), 0) + 1, $2 FROM offline WHERE owner = $1
             HAVING COUNT(*) < $3",
        )
        .bind(owner)
        .bind(stanza)
        .bind(limit)
        .execute(&self.pool)
        .await?;
        Ok(res.rows_affected() > 0)
    }

    /// Removes and returns every stored stanza for `owner`, oldest first.
    pub async fn offline_take(&self, owner: &str) -> Result<Vec<String>> {
        // One write statement (see `offline_push` for why not SELECT then DELETE).
        let rows = sqlx::query("DELETE FROM offline WHERE owner = $1 RETURNING seq, stanza")
            .bind(owner)
            .fetch_all(&self.pool)
            .await?;
        let mut out = rows
            .iter()
            .map(|r| {
                Ok((
                    r.try_get::<i64, _>("seq")?,
                    r.try_get::<String, _>("stanza")?,
                ))
            })
            .collect::<Result<Vec<(i64, String)>>>()?;
        out.sort_by_key(|(seq, _)| *seq);
        Ok(out.into_iter().map(|(_, s)| s).collect())
    }

    /// Messages stored for every user together.
    pub async fn offline_total(&self) -> Result<u64> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM offline")
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get::<i64, _>("n")? as u64)
    }

    pub async fn offline_count(&self, owner: &str) -> Result<u64> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM offline WHERE owner = $1")
            .bind(owner)
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get::<i64, _>("n")? as u64)
    }

    // ---- presence policy rules (allow / deny / block with subdomains) ----

    /// A user's presence rules as (target, rule) text pairs, sorted by target.
    pub async fn policy_rules(&self, owner: &str) -> Result<Vec<(String, String)>> {
        let rows =
            sqlx::query("SELECT target, rule FROM policy_rules WHERE owner = $1 ORDER BY target")
                .bind(owner)
                .fetch_all(&self.pool)
                .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get::<String, _>("target")?,
                    r.try_get::<String, _>("rule")?,
                ))
            })
            .collect()
    }

    /// Sets (inserts or replaces) one rule.
    pub async fn policy_set(&self, owner: &str, target: &str, rule: &str) -> Result<()> {
        sqlx::query(
            "INSERT INTO policy_rules (owner, target, rule) VALUES ($1, $2, $3)
             ON CONFLICT (owner, target) DO UPDATE SET rule = excluded.rule",
        )
        .bind(owner)
        .bind(target)
        .bind(rule)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Removes one rule; returns whether it existed.
    pub async fn policy_remove(&self, owner: &str, target: &str) -> Result<bool> {
        let r = sqlx::query("DELETE FROM policy_rules WHERE owner = $1 AND target = $2")
            .bind(owner)
            .bind(target)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() > 0)
    }

    // ---- SIP federation dialogs ----

    /// Inserts or replaces a SIP dialog row.
    pub async fn sip_dialog_put(&self, r: &SipDialogRow) -> Result<()> {
        sqlx::query(
            "INSERT INTO sip_dialogs (id, kind, local_jid, remote_jid, data, expires)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (id) DO UPDATE SET kind = excluded.kind, local_jid = excluded.local_jid,
             remote_jid = excluded.remote_jid, data = excluded.data, expires = excluded.expires",
        )
        .bind(&r.id)
        .bind(&r.kind)
        .bind(&r.local_jid)
        .bind(&r.remote_jid)
        .bind(&r.data)
        .bind(r.expires)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Removes a SIP dialog row; returns whether it existed.
    pub async fn sip_dialog_delete(&self, id: &str) -> Result<bool> {
        let r = sqlx::query("DELETE FROM sip_dialogs WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() > 0)
    }

    /// Every SIP dialog row, ordered by id.
    pub async fn sip_dialogs(&self) -> Result<Vec<SipDialogRow>> {
        let rows = sqlx::query(
            "SELECT id, kind, local_jid, remote_jid, data, expires FROM sip_dialogs ORDER BY id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(SipDialogRow {
                    id: r.try_get("id")?,
                    kind: r.try_get("kind")?,
                    local_jid: r.try_get("local_jid")?,
                    remote_jid: r.try_get("remote_jid")?,
                    data: r.try_get("data")?,
                    expires: r.try_get("expires")?,
                })
            })
            .collect()
    }

    // ---- block list (XEP-0191) ----

    pub async fn block_list(&self, owner: &str) -> Result<Vec<String>> {
        let rows = sqlx::query("SELECT jid FROM blocklist WHERE owner = $1 ORDER BY jid")
            .bind(owner)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| r.try_get::<String, _>("jid").map_err(StoreError::from))
            .collect()
    }

    pub async fn block_add(&self, owner: &str, jid: &str) -> Result<()> {
        sqlx::query("INSERT INTO blocklist (owner, jid) VALUES ($1, $2) ON CONFLICT (owner, jid) DO NOTHING")
            .bind(owner)
            .bind(jid)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn block_remove(&self, owner: &str, jid: &str) -> Result<()> {
        sqlx::query("DELETE FROM blocklist WHERE owner = $1 AND jid = $2")
            .bind(owner)
            .bind(jid)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn block_clear(&self, owner: &str) -> Result<()> {
        sqlx::query("DELETE FROM blocklist WHERE owner = $1")
            .bind(owner)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

fn user_from_row(r: &AnyRow) -> Result<UserRecord> {
    let rec = |p: &str| -> Result<ScramRecord> {
        Ok(ScramRecord {
            salt: unhex(&r.try_get::<String, _>(format!("{p}_salt").as_str())?)?,
            iterations: u32::try_from(r.try_get::<i64, _>(format!("{p}_iter").as_str())?)
                .map_err(|_| StoreError::Corrupt("iteration count".into()))?,
            stored_key: unhex(&r.try_get::<String, _>(format!("{p}_stored").as_str())?)?,
            server_key: unhex(&r.try_get::<String, _>(format!("{p}_server").as_str())?)?,
        })
    };
    Ok(UserRecord {
        jid: r.try_get("jid")?,
        sha1: rec("sha1")?,
        sha256: rec("sha256")?,
    })
}

fn roster_from_row(r: &AnyRow) -> Result<RosterRow> {
    let b = |c: &str| -> Result<bool> { Ok(r.try_get::<i64, _>(c)? != 0) };
    let groups: String = r.try_get("groups_")?;
    Ok(RosterRow {
        owner: r.try_get("owner")?,
        contact: r.try_get("contact")?,
        name: r.try_get("name")?,
        groups: groups
            .split('\n')
            .filter(|g| !g.is_empty())
            .map(str::to_string)
            .collect(),
        sub: entente_model::subscription::SubState {
            to: b("sub_to")?,
            from: b("sub_from")?,
            pending_out: b("pending_out")?,
            pending_in: b("pending_in")?,
            preapproved: b("preapproved")?,
        },
        in_roster: b("in_roster")?,
        pending_in_stanza: r.try_get("pending_in_stanza")?,
    })
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Result<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return Err(StoreError::Corrupt("odd hex length".into()));
    }
    (0..s.len())
        .step_by(2)
        .map(|i| {
            s.get(i..i + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| StoreError::Corrupt("bad hex".into()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn temp_store() -> (Store, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!(
            "entente-store-test-{}-{}",
            std::process::id(),
            rand_suffix()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let url = format!("sqlite://{}", dir.join("t.db").display());
        (Store::open(&url).await.unwrap(), dir)
    }

    fn rand_suffix() -> u128 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    }

    fn rec(jid: &str) -> UserRecord {
        let k = ScramRecord {
            salt: vec![1, 2, 3],
            iterations: 4096,
            stored_key: vec![0xaa; 20],
            server_key: vec![0xbb; 20],
        };
        UserRecord {
            jid: jid.into(),
            sha1: k.clone(),
            sha256: k,
        }
    }

    /// Concurrent offline pushes and takes on one SQLite file never fail with "database is
    /// locked", and the limit holds.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_offline_writes() {
        let (s, _dir) = temp_store().await;
        let mut tasks = Vec::new();
        for i in 0..40 {
            let s = s.clone();
            tasks.push(tokio::spawn(async move {
                let owner = format!("u{}@x", i % 4);
                let stored = s.offline_push(&owner, "<message/>", 8).await?;
                if i % 10 == 9 {
                    s.offline_take(&owner).await?;
                }
                Ok::<bool, StoreError>(stored)
            }));
        }
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        for i in 0..4 {
            assert!(s.offline_count(&format!("u{i}@x")).await.unwrap() <= 8);
        }
    }

    #[tokio::test]
    async fn users_roster_offline_blocks_survive_reopen() {
        let (s, dir) = temp_store().await;
        s.user_create(&rec("a@x")).await.unwrap();
        assert!(matches!(
            s.user_create(&rec("a@x")).await,
            Err(StoreError::Exists(_))
        ));
        s.user_create(&rec("b@y")).await.unwrap();
        assert_eq!(s.user_list("x").await.unwrap(), vec!["a@x".to_string()]);
        let mut row = RosterRow {
            owner: "a@x".into(),
            contact: "c@z".into(),
            name: Some("C".into()),
            groups: vec!["g1".into(), "g2".into()],
            in_roster: true,
            ..Default::default()
        };
        row.sub.pending_out = true;
        s.roster_put(&row).await.unwrap();
        assert!(s.offline_push("a@x", "<message/>", 2).await.unwrap());
        assert!(s.offline_push("a@x", "<message id='2'/>", 2).await.unwrap());
        assert!(!s.offline_push("a@x", "<message id='3'/>", 2).await.unwrap());
        s.block_add("a@x", "evil@z").await.unwrap();
        s.block_add("a@x", "evil@z").await.unwrap();
        s.close().await;

        let url = format!("sqlite://{}", dir.join("t.db").display());
        let s = Store::open(&url).await.unwrap();
        assert_eq!(s.user("a@x").await.unwrap(), Some(rec("a@x")));
        assert_eq!(s.roster_all("a@x").await.unwrap(), vec![row]);
        assert_eq!(
            s.block_list("a@x").await.unwrap(),
            vec!["evil@z".to_string()]
        );
        assert_eq!(
            s.offline_take("a@x").await.unwrap(),
            vec!["<message/>".to_string(), "<message id='2'/>".to_string()]
        );
        assert!(s.offline_take("a@x").await.unwrap().is_empty());
        s.user_delete("a@x").await.unwrap();
        assert!(s.user("a@x").await.unwrap().is_none());
        assert!(s.roster_all("a@x").await.unwrap().is_empty());
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test]
    async fn sip_dialogs_survive_reopening() {
        let (s, dir) = temp_store().await;
        let mut row = SipDialogRow {
            id: "in-sub:bob@a.test:alice@b.test".into(),
            kind: "in-sub".into(),
            local_jid: "bob@a.test".into(),
            remote_jid: "alice@b.test".into(),
            data: "{}".into(),
            expires: 1_900_000_000,
        };
        s.sip_dialog_put(&row).await.unwrap();
        row.data = "{\"cseq\":2}".into();
        s.sip_dialog_put(&row).await.unwrap();
        s.close().await;
        let url = format!("sqlite://{}", dir.join("t.db").display());
        let s = Store::open(&url).await.unwrap();
        assert_eq!(s.sip_dialogs().await.unwrap(), vec![row.clone()]);
        assert!(s.sip_dialog_delete(&row.id).await.unwrap());
        assert!(!s.sip_dialog_delete(&row.id).await.unwrap());
        assert!(s.sip_dialogs().await.unwrap().is_empty());
        let _ = std::fs::remove_dir_all(dir);
    }
}
