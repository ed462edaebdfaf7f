//! Entente's persistence.
//!
//! One code path for SQLite (the embedded default) and PostgreSQL (clusters): the store talks to
//! sqlx's `Any` driver and keeps to SQL both engines accept: `TEXT` and `BIGINT` columns only
//! (binary keys are stored as hex), `$n` placeholders in order, `ON CONFLICT … DO UPDATE`, and no
//! auto-increment (sequence numbers come from the application). Migrations are numbered SQL
//! statements applied in order and recorded in `entente_schema`.
//!
//! What differs between the engines is handled here, not in SQL dialects: lists are sorted in
//! Rust (byte order), because `ORDER BY` on text follows the database's collation, which on
//! PostgreSQL is usually linguistic; and writes that compute a key from existing rows tolerate
//! the concurrent writers PostgreSQL allows (SQLite serializes writers).
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
    "CREATE TABLE IF NOT EXISTS federation_domains (
        domain TEXT PRIMARY KEY, protocol TEXT NOT NULL, settings TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS federation_policy (
        id BIGINT PRIMARY KEY, mode TEXT NOT NULL, domains TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS federation_version (
        id BIGINT PRIMARY KEY, version BIGINT NOT NULL)",
    "INSERT INTO federation_version (id, version) VALUES (1, 0) ON CONFLICT (id) DO NOTHING",
    "CREATE TABLE IF NOT EXISTS shared_secrets (
        name TEXT PRIMARY KEY, value TEXT NOT NULL)",
    // The cluster node that holds a SIP dialog ('' on a single node, and for rows from before).
    "ALTER TABLE sip_dialogs ADD COLUMN owner TEXT NOT NULL DEFAULT ''",
    "CREATE TABLE IF NOT EXISTS change_counters (
        name TEXT PRIMARY KEY, version BIGINT NOT NULL)",
];

/// The change counter of the block lists ([`Store::change_counter`]).
pub const BLOCKLIST_COUNTER: &str = "blocklist";
/// The change counter of the presence policy rules.
pub const POLICY_RULES_COUNTER: &str = "policy_rules";

/// The PostgreSQL advisory lock key held while migrating (any fixed number the application
/// uses for nothing else: "entente" in ASCII).
const MIGRATION_LOCK: i64 = 0x0065_6e74_656e_7465;

/// The `protocol` of a `federation_domains` row that hides a domain the configuration file
/// lists.
const REMOVED: &str = "removed";

/// An override of one federated domain, made through the admin API: it replaces what the
/// configuration file says about the domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FederationOverride {
    /// The domain federates over `protocol` (`xmpp` or `sip`) with `settings` (JSON; the
    /// server's, opaque here).
    Set { protocol: String, settings: String },
    /// The domain is not federated, whatever the file says.
    Removed,
}

/// The federation policy set through the admin API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FederationPolicyRow {
    /// `open`, `allowlist` or `denylist` (the server's; opaque here).
    pub mode: String,
    pub domains: Vec<String>,
}

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
    /// The cluster node that holds the dialog (`node_id`); empty on a single node.
    pub owner: String,
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
            // Switching to WAL needs the database to itself for a moment, and SQLite answers
            // "database is locked" at once (no busy handler) while another process opening the
            // same fresh file holds it: try again for as long as the busy timeout.
            let mut tries = 0;
            loop {
                match sqlx::query("PRAGMA journal_mode = WAL")
                    .execute(&pool)
                    .await
                {
                    Ok(_) => break,
                    Err(sqlx::Error::Database(e))
                        if e.message().contains("locked") && tries < 200 =>
                    {
                        tries += 1;
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        }
        let store = Store { pool };
        store.migrate(is_sqlite).await?;
        Ok(store)
    }

    /// Applies the pending migrations, safely when several processes open one fresh database
    /// at once (cluster nodes starting together): the version is read and the migrations
    /// applied in one transaction that holds a lock the other processes wait for. On
    /// PostgreSQL that is a transaction-scoped advisory lock (`CREATE TABLE IF NOT EXISTS`
    /// alone is not safe there: two sessions creating one table can collide on `pg_type`); on
    /// SQLite the transaction is `BEGIN IMMEDIATE`, which takes the database's write lock at
    /// once (others wait up to `busy_timeout`). DDL is transactional on both engines, so a
    /// failed migration leaves nothing half-applied.
    async fn migrate(&self, is_sqlite: bool) -> Result<()> {
        let mut tx = if is_sqlite {
            self.pool.begin_with("BEGIN IMMEDIATE").await?
        } else {
            let mut tx = self.pool.begin().await?;
            sqlx::query("SELECT pg_advisory_xact_lock($1)")
                .bind(MIGRATION_LOCK)
                .execute(&mut *tx)
                .await?;
            tx
        };
        sqlx::query("CREATE TABLE IF NOT EXISTS entente_schema (version BIGINT NOT NULL)")
            .execute(&mut *tx)
            .await?;
        let row = sqlx::query("SELECT MAX(version) AS v FROM entente_schema")
            .fetch_one(&mut *tx)
            .await?;
        let current: i64 = row.try_get::<Option<i64>, _>("v")?.unwrap_or(0);
        let mut applied = Vec::new();
        for (i, sql) in MIGRATIONS.iter().enumerate() {
            let version = i as i64 + 1;
            if version <= current {
                continue;
            }
            sqlx::query(*sql).execute(&mut *tx).await?;
            sqlx::query("INSERT INTO entente_schema (version) VALUES ($1)")
                .bind(version)
                .execute(&mut *tx)
                .await?;
            applied.push(version);
        }
        tx.commit().await?;
        for version in applied {
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
        let rows = sqlx::query("SELECT jid FROM users")
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
        out.sort();
        Ok(out)
    }

    // ---- roster ----

    /// A user's roster, sorted by contact.
    pub async fn roster_all(&self, owner: &str) -> Result<Vec<RosterRow>> {
        let rows = sqlx::query("SELECT * FROM roster WHERE owner = $1")
            .bind(owner)
            .fetch_all(&self.pool)
            .await?;
        let mut out = rows
            .iter()
            .map(roster_from_row)
            .collect::<Result<Vec<_>>>()?;
        out.sort_by(|a, b| a.contact.cmp(&b.contact));
        Ok(out)
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
    ///
    /// On PostgreSQL, concurrent pushes for one owner can read the same `MAX(seq)`: the later one
    /// then waits for the first to commit and inserts nothing (`ON CONFLICT … DO NOTHING`), and
    /// is retried after a count tells it from a full store. Each retry follows another push's
    /// success, so the loop ends; SQLite never gets there (its writers are serialized).
    pub async fn offline_push(&self, owner: &str, stanza: &str, limit: u64) -> Result<bool> {
        let max = i64::try_from(limit).unwrap_or(i64::MAX);
        loop {
            let res = sqlx::query(
                "INSERT INTO offline (owner, seq, stanza)
                 SELECT $1, COALESCE(MAX(seq), 0) + 1, $2 FROM offline WHERE owner = $1
                 HAVING COUNT(*) < $3
                 ON CONFLICT (owner, seq) DO NOTHING",
            )
            .bind(owner)
            .bind(stanza)
            .bind(max)
            .execute(&self.pool)
            .await?;
            if res.rows_affected() > 0 {
                return Ok(true);
            }
            if self.offline_count(owner).await? >= limit {
                return Ok(false);
            }
            tokio::task::yield_now().await;
        }
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
        let rows = sqlx::query("SELECT target, rule FROM policy_rules WHERE owner = $1")
            .bind(owner)
            .fetch_all(&self.pool)
            .await?;
        let mut out = rows
            .iter()
            .map(|r| {
                Ok((
                    r.try_get::<String, _>("target")?,
                    r.try_get::<String, _>("rule")?,
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        out.sort();
        Ok(out)
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
        self.bump(POLICY_RULES_COUNTER).await
    }

    /// Removes one rule; returns whether it existed.
    pub async fn policy_remove(&self, owner: &str, target: &str) -> Result<bool> {
        let r = sqlx::query("DELETE FROM policy_rules WHERE owner = $1 AND target = $2")
            .bind(owner)
            .bind(target)
            .execute(&self.pool)
            .await?;
        self.bump(POLICY_RULES_COUNTER).await?;
        Ok(r.rows_affected() > 0)
    }

    // ---- secrets shared by the nodes of a cluster ----

    /// The secret called `name`: the stored one, or `candidate` if none was stored yet. Several
    /// nodes calling this at once all get the same value: the first insert wins and the others'
    /// inserts do nothing (`ON CONFLICT DO NOTHING`), then everyone reads the winner.
    pub async fn shared_secret(&self, name: &str, candidate: &str) -> Result<String> {
        sqlx::query(
            "INSERT INTO shared_secrets (name, value) VALUES ($1, $2)
             ON CONFLICT (name) DO NOTHING",
        )
        .bind(name)
        .bind(candidate)
        .execute(&self.pool)
        .await?;
        let row = sqlx::query("SELECT value FROM shared_secrets WHERE name = $1")
            .bind(name)
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get::<String, _>("value")?)
    }

    // ---- SIP federation dialogs ----

    /// Inserts or replaces a SIP dialog row (with its owner).
    pub async fn sip_dialog_put(&self, r: &SipDialogRow) -> Result<()> {
        sqlx::query(
            "INSERT INTO sip_dialogs (id, kind, local_jid, remote_jid, data, expires, owner)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (id) DO UPDATE SET kind = excluded.kind, local_jid = excluded.local_jid,
             remote_jid = excluded.remote_jid, data = excluded.data, expires = excluded.expires,
             owner = excluded.owner",
        )
        .bind(&r.id)
        .bind(&r.kind)
        .bind(&r.local_jid)
        .bind(&r.remote_jid)
        .bind(&r.data)
        .bind(r.expires)
        .bind(&r.owner)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Like [`Store::sip_dialog_put`], but an existing row is replaced only if `r.owner` owns
    /// it: returns false (and writes nothing) when another node owns the row (it adopted the
    /// dialog).
    pub async fn sip_dialog_put_owned(&self, r: &SipDialogRow) -> Result<bool> {
        let res = sqlx::query(
            "INSERT INTO sip_dialogs (id, kind, local_jid, remote_jid, data, expires, owner)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (id) DO UPDATE SET kind = excluded.kind, local_jid = excluded.local_jid,
             remote_jid = excluded.remote_jid, data = excluded.data, expires = excluded.expires
             WHERE sip_dialogs.owner = excluded.owner",
        )
        .bind(&r.id)
        .bind(&r.kind)
        .bind(&r.local_jid)
        .bind(&r.remote_jid)
        .bind(&r.data)
        .bind(r.expires)
        .bind(&r.owner)
        .execute(&self.pool)
        .await?;
        Ok(res.rows_affected() > 0)
    }

    /// Makes `owner` the owner of the row `id`, whoever owned it (a node replacing a dialog
    /// with a new one for the same usage). Returns whether the row exists.
    pub async fn sip_dialog_take(&self, id: &str, owner: &str) -> Result<bool> {
        let r = sqlx::query("UPDATE sip_dialogs SET owner = $1 WHERE id = $2")
            .bind(owner)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() > 0)
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
            "SELECT id, kind, local_jid, remote_jid, data, expires, owner FROM sip_dialogs",
        )
        .fetch_all(&self.pool)
        .await?;
        let mut out = rows
            .iter()
            .map(sip_dialog_from_row)
            .collect::<Result<Vec<_>>>()?;
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }

    /// One SIP dialog row.
    pub async fn sip_dialog(&self, id: &str) -> Result<Option<SipDialogRow>> {
        let row = sqlx::query(
            "SELECT id, kind, local_jid, remote_jid, data, expires, owner FROM sip_dialogs
             WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(sip_dialog_from_row).transpose()
    }

    /// Makes `new_owner` the owner of the row `id` if `old_owner` still owns it (compare and
    /// swap: of several nodes adopting one row at once, exactly one succeeds). Returns whether
    /// this call changed the owner.
    pub async fn sip_dialog_claim(
        &self,
        id: &str,
        old_owner: &str,
        new_owner: &str,
    ) -> Result<bool> {
        let r = sqlx::query("UPDATE sip_dialogs SET owner = $1 WHERE id = $2 AND owner = $3")
            .bind(new_owner)
            .bind(id)
            .bind(old_owner)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() > 0)
    }

    // ---- federation overrides (admin API) ----

    /// The federation version: a counter every change below increments, so a server notices
    /// changes another process (or node) made.
    pub async fn federation_version(&self) -> Result<i64> {
        let row = sqlx::query("SELECT version FROM federation_version WHERE id = 1")
            .fetch_optional(&self.pool)
            .await?;
        match row {
            Some(r) => Ok(r.try_get::<i64, _>("version")?),
            None => Ok(0),
        }
    }

    /// Every domain override, sorted by domain.
    pub async fn federation_domains(&self) -> Result<Vec<(String, FederationOverride)>> {
        let rows = sqlx::query("SELECT domain, protocol, settings FROM federation_domains")
            .fetch_all(&self.pool)
            .await?;
        let mut out = rows
            .iter()
            .map(|r| {
                let domain: String = r.try_get("domain")?;
                let protocol: String = r.try_get("protocol")?;
                let settings: String = r.try_get("settings")?;
                let o = if protocol == REMOVED {
                    FederationOverride::Removed
                } else {
                    FederationOverride::Set { protocol, settings }
                };
                Ok((domain, o))
            })
            .collect::<Result<Vec<_>>>()?;
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    /// Sets (inserts or replaces) the override of `domain`, and bumps the version.
    pub async fn federation_domain_set(&self, domain: &str, o: &FederationOverride) -> Result<()> {
        let (protocol, settings) = match o {
            FederationOverride::Set { protocol, settings } => {
                if protocol == REMOVED {
                    return Err(StoreError::Corrupt(format!(
                        "{REMOVED:?} is not a protocol"
                    )));
                }
                (protocol.as_str(), settings.as_str())
            }
            FederationOverride::Removed => (REMOVED, ""),
        };
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO federation_domains (domain, protocol, settings) VALUES ($1, $2, $3)
             ON CONFLICT (domain) DO UPDATE SET protocol = excluded.protocol,
             settings = excluded.settings",
        )
        .bind(domain)
        .bind(protocol)
        .bind(settings)
        .execute(&mut *tx)
        .await?;
        bump_federation_version(&mut tx).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Deletes the override of `domain` (the file's settings apply again); returns whether
    /// there was one.
    pub async fn federation_domain_clear(&self, domain: &str) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        let r = sqlx::query("DELETE FROM federation_domains WHERE domain = $1")
            .bind(domain)
            .execute(&mut *tx)
            .await?;
        let found = r.rows_affected() > 0;
        if found {
            bump_federation_version(&mut tx).await?;
        }
        tx.commit().await?;
        Ok(found)
    }

    /// The federation policy set through the API, if any.
    pub async fn federation_policy(&self) -> Result<Option<FederationPolicyRow>> {
        let row = sqlx::query("SELECT mode, domains FROM federation_policy WHERE id = 1")
            .fetch_optional(&self.pool)
            .await?;
        let Some(r) = row else { return Ok(None) };
        let domains: String = r.try_get("domains")?;
        Ok(Some(FederationPolicyRow {
            mode: r.try_get("mode")?,
            domains: domains
                .split('\n')
                .filter(|d| !d.is_empty())
                .map(str::to_string)
                .collect(),
        }))
    }

    /// Sets the federation policy (replacing the file's), and bumps the version. Domains must
    /// not contain a newline.
    pub async fn federation_policy_set(&self, p: &FederationPolicyRow) -> Result<()> {
        if p.domains.iter().any(|d| d.contains('\n')) {
            return Err(StoreError::Corrupt("a domain contains a newline".into()));
        }
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO federation_policy (id, mode, domains) VALUES (1, $1, $2)
             ON CONFLICT (id) DO UPDATE SET mode = excluded.mode, domains = excluded.domains",
        )
        .bind(&p.mode)
        .bind(p.domains.join("\n"))
        .execute(&mut *tx)
        .await?;
        bump_federation_version(&mut tx).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Deletes the policy set through the API (the file's applies again); returns whether
    /// there was one.
    pub async fn federation_policy_clear(&self) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        let r = sqlx::query("DELETE FROM federation_policy WHERE id = 1")
            .execute(&mut *tx)
            .await?;
        let found = r.rows_affected() > 0;
        if found {
            bump_federation_version(&mut tx).await?;
        }
        tx.commit().await?;
        Ok(found)
    }

    // ---- block list (XEP-0191) ----

    /// A user's blocked JIDs, sorted.
    pub async fn block_list(&self, owner: &str) -> Result<Vec<String>> {
        let rows = sqlx::query("SELECT jid FROM blocklist WHERE owner = $1")
            .bind(owner)
            .fetch_all(&self.pool)
            .await?;
        let mut out = rows
            .iter()
            .map(|r| r.try_get::<String, _>("jid").map_err(StoreError::from))
            .collect::<Result<Vec<_>>>()?;
        out.sort();
        Ok(out)
    }

    pub async fn block_add(&self, owner: &str, jid: &str) -> Result<()> {
        sqlx::query("INSERT INTO blocklist (owner, jid) VALUES ($1, $2) ON CONFLICT (owner, jid) DO NOTHING")
            .bind(owner)
            .bind(jid)
            .execute(&self.pool)
            .await?;
        self.bump(BLOCKLIST_COUNTER).await
    }

    pub async fn block_remove(&self, owner: &str, jid: &str) -> Result<()> {
        sqlx::query("DELETE FROM blocklist WHERE owner = $1 AND jid = $2")
            .bind(owner)
            .bind(jid)
            .execute(&self.pool)
            .await?;
        self.bump(BLOCKLIST_COUNTER).await
    }

    pub async fn block_clear(&self, owner: &str) -> Result<()> {
        sqlx::query("DELETE FROM blocklist WHERE owner = $1")
            .bind(owner)
            .execute(&self.pool)
            .await?;
        self.bump(BLOCKLIST_COUNTER).await
    }

    // ---- change counters ----

    /// How many changes the data called `name` has seen ([`BLOCKLIST_COUNTER`],
    /// [`POLICY_RULES_COUNTER`]; 0 before the first). Servers cache such data and poll this to
    /// notice changes another process or cluster node made.
    pub async fn change_counter(&self, name: &str) -> Result<i64> {
        let row = sqlx::query("SELECT version FROM change_counters WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        match row {
            Some(r) => Ok(r.try_get::<i64, _>("version")?),
            None => Ok(0),
        }
    }

    async fn bump(&self, name: &str) -> Result<()> {
        sqlx::query(
            "INSERT INTO change_counters (name, version) VALUES ($1, 1)
             ON CONFLICT (name) DO UPDATE SET version = change_counters.version + 1",
        )
        .bind(name)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// Increments the federation version inside a write's transaction (on PostgreSQL the row lock
/// orders concurrent writers, so no increment is lost).
async fn bump_federation_version(tx: &mut sqlx::Transaction<'_, sqlx::Any>) -> Result<()> {
    sqlx::query("UPDATE federation_version SET version = version + 1 WHERE id = 1")
        .execute(&mut **tx)
        .await?;
    Ok(())
}

fn sip_dialog_from_row(r: &AnyRow) -> Result<SipDialogRow> {
    Ok(SipDialogRow {
        id: r.try_get("id")?,
        kind: r.try_get("kind")?,
        local_jid: r.try_get("local_jid")?,
        remote_jid: r.try_get("remote_jid")?,
        data: r.try_get("data")?,
        expires: r.try_get("expires")?,
        owner: r.try_get("owner")?,
    })
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
    //! Every test runs twice: against a fresh SQLite file, and against a fresh database on the
    //! PostgreSQL server named by `ENTENTE_TEST_PG_URL` (`./scripts/test` starts a private one,
    //! see scripts/pg-test-instance). Without the variable the PostgreSQL half is skipped, with
    //! a note on stderr.
    use super::*;
    // Database names in SQL text below are ours: `entente_t_` and digits.
    use sqlx::{AssertSqlSafe, Connection};
    use std::sync::atomic::{AtomicU32, Ordering};

    /// A fresh, empty database for one test, and the URL to (re)open it with.
    struct TestDb {
        url: String,
        cleanup: Cleanup,
    }

    enum Cleanup {
        Dir(std::path::PathBuf),
        /// The server's URL (to drop the database from) and the database's name.
        PgDatabase(String, String),
    }

    fn unique_name() -> String {
        static N: AtomicU32 = AtomicU32::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        format!(
            "{}_{}_{nanos}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        )
    }

    /// `url` with its database (the path) replaced by `db`, keeping any `?parameters`.
    fn with_database(url: &str, db: &str) -> String {
        let (head, query) = match url.split_once('?') {
            Some((h, q)) => (h, format!("?{q}")),
            None => (url, String::new()),
        };
        let authority = head.find("://").map_or(0, |i| i + 3);
        let base = match head[authority..].find('/') {
            Some(i) => &head[..authority + i],
            None => head,
        };
        format!("{base}/{db}{query}")
    }

    impl TestDb {
        fn sqlite() -> TestDb {
            let dir = std::env::temp_dir().join(format!("entente-store-test-{}", unique_name()));
            std::fs::create_dir_all(&dir).unwrap();
            TestDb {
                url: format!("sqlite://{}", dir.join("t.db").display()),
                cleanup: Cleanup::Dir(dir),
            }
        }

        /// A new database on the `ENTENTE_TEST_PG_URL` server, or `None` when it is unset.
        async fn postgres() -> Option<TestDb> {
            let server = std::env::var("ENTENTE_TEST_PG_URL")
                .ok()
                .filter(|u| !u.is_empty())?;
            sqlx::any::install_default_drivers();
            let name = format!("entente_t_{}", unique_name());
            let mut conn = sqlx::AnyConnection::connect(&server)
                .await
                .unwrap_or_else(|e| panic!("connecting to ENTENTE_TEST_PG_URL={server}: {e}"));
            // A linguistic (ICU) collation where the server has one (PostgreSQL 15+), as a
            // production database in a non-C locale would have: code that leaned on ORDER BY
            // sorting like SQLite's byte order would fail here.
            let icu = format!(
                "CREATE DATABASE {name} TEMPLATE template0 ENCODING 'UTF8' LOCALE 'C.UTF-8' \
                 LOCALE_PROVIDER icu ICU_LOCALE 'en-US'"
            );
            if sqlx::query(AssertSqlSafe(icu))
                .execute(&mut conn)
                .await
                .is_err()
            {
                sqlx::query(AssertSqlSafe(format!("CREATE DATABASE {name}")))
                    .execute(&mut conn)
                    .await
                    .unwrap();
            }
            conn.close().await.unwrap();
            Some(TestDb {
                url: with_database(&server, &name),
                cleanup: Cleanup::PgDatabase(server, name),
            })
        }

        async fn open(&self) -> Store {
            Store::open(&self.url).await.unwrap()
        }

        fn is_postgres(&self) -> bool {
            matches!(self.cleanup, Cleanup::PgDatabase(..))
        }

        /// Deletes the database (a failed test leaves it behind, for a look).
        async fn remove(self) {
            match self.cleanup {
                Cleanup::Dir(dir) => {
                    let _ = std::fs::remove_dir_all(dir);
                }
                Cleanup::PgDatabase(server, name) => {
                    let mut conn = sqlx::AnyConnection::connect(&server).await.unwrap();
                    sqlx::query(AssertSqlSafe(format!(
                        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                    )))
                    .execute(&mut conn)
                    .await
                    .unwrap();
                    conn.close().await.unwrap();
                }
            }
        }
    }

    /// Defines each listed `async fn(&TestDb)` as two tests, `sqlite::NAME` and `postgres::NAME`.
    macro_rules! on_both_backends {
        ($($name:ident),* $(,)?) => {
            mod sqlite {
                $(
                    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                    async fn $name() {
                        let db = super::TestDb::sqlite();
                        super::$name(&db).await;
                        db.remove().await;
                    }
                )*
            }
            mod postgres {
                $(
                    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                    async fn $name() {
                        let Some(db) = super::TestDb::postgres().await else {
                            eprintln!(
                                "note: skipping the PostgreSQL half of {}: ENTENTE_TEST_PG_URL \
                                 is not set (./scripts/test sets it)",
                                stringify!($name)
                            );
                            return;
                        };
                        super::$name(&db).await;
                        db.remove().await;
                    }
                )*
            }
        };
    }

    on_both_backends!(
        concurrent_offline_writes,
        users_roster_offline_blocks_survive_reopen,
        sip_dialogs_survive_reopening,
        every_query_round_trips,
        lists_sort_in_byte_order,
        migrations_run_once,
        concurrent_opens_migrate_once,
        federation_overrides,
        shared_secret_first_writer_wins,
        change_counters_move,
    );

    /// Every block-list and policy-rule write moves its counter, seen from another store on the
    /// same database; the counters start at 0.
    async fn change_counters_move(db: &TestDb) {
        let s = db.open().await;
        let other = db.open().await;
        let counter = |st: &Store, n: &'static str| {
            let st = st.clone();
            async move { st.change_counter(n).await.unwrap() }
        };
        assert_eq!(counter(&other, BLOCKLIST_COUNTER).await, 0);
        assert_eq!(counter(&other, POLICY_RULES_COUNTER).await, 0);
        s.block_add("a@x", "b@y").await.unwrap();
        assert_eq!(counter(&other, BLOCKLIST_COUNTER).await, 1);
        s.block_remove("a@x", "b@y").await.unwrap();
        s.block_clear("a@x").await.unwrap();
        assert_eq!(counter(&other, BLOCKLIST_COUNTER).await, 3);
        assert_eq!(counter(&other, POLICY_RULES_COUNTER).await, 0);
        s.policy_set("a@x", "b@y", "deny").await.unwrap();
        s.policy_remove("a@x", "b@y").await.unwrap();
        assert_eq!(counter(&other, POLICY_RULES_COUNTER).await, 2);
        assert_eq!(counter(&other, BLOCKLIST_COUNTER).await, 3);
        other.close().await;
        s.close().await;
    }

    /// Domain overrides and the policy round-trip, survive reopening, and every change (and
    /// only a change) bumps the version.
    async fn federation_overrides(db: &TestDb) {
        let s = db.open().await;
        assert_eq!(s.federation_version().await.unwrap(), 0);
        assert!(s.federation_domains().await.unwrap().is_empty());
        assert_eq!(s.federation_policy().await.unwrap(), None);
        let set = FederationOverride::Set {
            protocol: "xmpp".into(),
            settings: "{\"tls\":\"never\"}".into(),
        };
        s.federation_domain_set("b.test", &set).await.unwrap();
        s.federation_domain_set("a.test", &FederationOverride::Removed)
            .await
            .unwrap();
        assert_eq!(s.federation_version().await.unwrap(), 2);
        let bad = FederationOverride::Set {
            protocol: "removed".into(),
            settings: String::new(),
        };
        assert!(s.federation_domain_set("c.test", &bad).await.is_err());
        let p = FederationPolicyRow {
            mode: "allowlist".into(),
            domains: vec!["b.test".into(), "z.test".into()],
        };
        s.federation_policy_set(&p).await.unwrap();
        assert_eq!(s.federation_version().await.unwrap(), 3);
        s.close().await;
        let s = db.open().await;
        assert_eq!(
            s.federation_domains().await.unwrap(),
            vec![
                ("a.test".to_string(), FederationOverride::Removed),
                ("b.test".to_string(), set.clone())
            ]
        );
        assert_eq!(s.federation_policy().await.unwrap(), Some(p));
        // Replacing keeps one row.
        s.federation_domain_set("a.test", &set).await.unwrap();
        assert_eq!(s.federation_domains().await.unwrap().len(), 2);
        assert!(s.federation_domain_clear("a.test").await.unwrap());
        assert!(!s.federation_domain_clear("a.test").await.unwrap());
        assert!(s.federation_policy_clear().await.unwrap());
        assert!(!s.federation_policy_clear().await.unwrap());
        assert_eq!(s.federation_policy().await.unwrap(), None);
        // 3 + set + clear + policy clear; the two no-op clears bump nothing.
        assert_eq!(s.federation_version().await.unwrap(), 6);
        s.close().await;
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

    #[test]
    fn database_urls() {
        assert_eq!(
            with_database("postgres://u@127.0.0.1:5432/entente", "t1"),
            "postgres://u@127.0.0.1:5432/t1"
        );
        assert_eq!(
            with_database("postgres://u:p@h/db?sslmode=disable", "t1"),
            "postgres://u:p@h/t1?sslmode=disable"
        );
        assert_eq!(with_database("postgres://h", "t1"), "postgres://h/t1");
    }

    /// Concurrent offline pushes and takes never fail (on SQLite: "database is locked"; on
    /// PostgreSQL: two pushes picking the same sequence number), nothing is lost, and the limit
    /// holds.
    async fn concurrent_offline_writes(db: &TestDb) {
        let s = db.open().await;
        let mut tasks = Vec::new();
        for i in 0..40 {
            let s = s.clone();
            tasks.push(tokio::spawn(async move {
                let owner = format!("u{}@x", i % 4);
                let stored = s.offline_push(&owner, "<message/>", 8).await?;
                let taken = if i % 10 == 9 {
                    s.offline_take(&owner).await?.len() as u64
                } else {
                    0
                };
                Ok::<(bool, u64), StoreError>((stored, taken))
            }));
        }
        let (mut stored, mut taken) = (0, 0);
        for t in tasks {
            let (s, t) = t.await.unwrap().unwrap();
            stored += s as u64;
            taken += t;
        }
        let mut left = 0;
        for i in 0..4 {
            let n = s.offline_count(&format!("u{i}@x")).await.unwrap();
            assert!(n <= 8, "{n} > 8");
            left += n;
        }
        assert_eq!(stored, taken + left);
        assert_eq!(s.offline_total().await.unwrap(), left);
        // Many writers on one owner: exactly `limit` get in.
        let mut tasks = Vec::new();
        for _ in 0..20 {
            let s = s.clone();
            tasks.push(tokio::spawn(async move {
                s.offline_push("one@x", "<message/>", 5).await
            }));
        }
        let mut stored = 0;
        for t in tasks {
            stored += t.await.unwrap().unwrap() as u64;
        }
        assert_eq!(stored, 5);
        assert_eq!(s.offline_count("one@x").await.unwrap(), 5);
        s.close().await;
    }

    async fn users_roster_offline_blocks_survive_reopen(db: &TestDb) {
        let s = db.open().await;
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

        let s = db.open().await;
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
        s.close().await;
    }

    async fn sip_dialogs_survive_reopening(db: &TestDb) {
        let s = db.open().await;
        let mut row = SipDialogRow {
            id: "in-sub:bob@a.test:alice@b.test".into(),
            kind: "in-sub".into(),
            local_jid: "bob@a.test".into(),
            remote_jid: "alice@b.test".into(),
            data: "{}".into(),
            expires: 1_900_000_000,
            owner: "n1".into(),
        };
        s.sip_dialog_put(&row).await.unwrap();
        row.data = "{\"cseq\":2}".into();
        s.sip_dialog_put(&row).await.unwrap();
        s.close().await;
        let s = db.open().await;
        assert_eq!(s.sip_dialogs().await.unwrap(), vec![row.clone()]);
        assert_eq!(s.sip_dialog(&row.id).await.unwrap(), Some(row.clone()));
        assert_eq!(s.sip_dialog("nothing").await.unwrap(), None);
        // Ownership moves by compare and swap: only from the owner named.
        assert!(!s.sip_dialog_claim(&row.id, "n3", "n2").await.unwrap());
        assert!(s.sip_dialog_claim(&row.id, "n1", "n2").await.unwrap());
        assert!(!s.sip_dialog_claim(&row.id, "n1", "n3").await.unwrap());
        row.owner = "n2".into();
        assert_eq!(s.sip_dialog(&row.id).await.unwrap(), Some(row.clone()));
        // The former owner's writes no longer land; the owner's do.
        let mut stale = row.clone();
        stale.owner = "n1".into();
        stale.data = "{\"cseq\":3}".into();
        assert!(!s.sip_dialog_put_owned(&stale).await.unwrap());
        assert_eq!(s.sip_dialog(&row.id).await.unwrap(), Some(row.clone()));
        row.data = "{\"cseq\":4}".into();
        assert!(s.sip_dialog_put_owned(&row).await.unwrap());
        assert_eq!(s.sip_dialog(&row.id).await.unwrap(), Some(row.clone()));
        // A new row is written whoever writes it; taking moves it unconditionally.
        let mut other = row.clone();
        other.id = "im:bob@a.test:alice@b.test".into();
        assert!(s.sip_dialog_put_owned(&other).await.unwrap());
        assert!(s.sip_dialog_take(&other.id, "n3").await.unwrap());
        assert!(!s.sip_dialog_take("nothing", "n3").await.unwrap());
        other.owner = "n3".into();
        assert_eq!(s.sip_dialog(&other.id).await.unwrap(), Some(other.clone()));
        assert!(s.sip_dialog_delete(&other.id).await.unwrap());
        assert!(s.sip_dialog_delete(&row.id).await.unwrap());
        assert!(!s.sip_dialog_delete(&row.id).await.unwrap());
        assert!(s.sip_dialogs().await.unwrap().is_empty());
        s.close().await;
    }

    /// Every query, with the values that differ between the engines: NULLs, every boolean
    /// column, 64-bit numbers, counts, upserts, non-ASCII text.
    async fn every_query_round_trips(db: &TestDb) {
        let s = db.open().await;
        // users
        let mut u = rec("ü@x");
        u.sha256.iterations = u32::MAX;
        u.sha256.salt = (0..=255).collect();
        s.user_create(&u).await.unwrap();
        assert!(s.user_exists("ü@x").await.unwrap());
        assert!(!s.user_exists("nobody@x").await.unwrap());
        assert_eq!(s.user("ü@x").await.unwrap(), Some(u.clone()));
        u.sha1.salt = vec![9; 16];
        u.sha1.iterations = 10_000;
        s.user_set_credentials(&u).await.unwrap();
        assert_eq!(s.user("ü@x").await.unwrap(), Some(u.clone()));
        assert!(matches!(
            s.user_set_credentials(&rec("nobody@x")).await,
            Err(StoreError::NotFound(_))
        ));
        assert!(matches!(
            s.user_delete("nobody@x").await,
            Err(StoreError::NotFound(_))
        ));

        // roster: NULL and non-NULL text, each boolean alone, an upsert changing everything.
        let base = RosterRow {
            owner: "ü@x".into(),
            contact: "c0@z".into(),
            ..Default::default()
        };
        assert_eq!(base.name, None);
        s.roster_put(&base).await.unwrap();
        assert_eq!(
            s.roster_get("ü@x", "c0@z").await.unwrap(),
            Some(base.clone())
        );
        let mut rows = vec![base.clone()];
        for i in 0..6 {
            let mut r = RosterRow {
                contact: format!("c{}@z", i + 1),
                ..base.clone()
            };
            match i {
                0 => r.sub.to = true,
                1 => r.sub.from = true,
                2 => r.sub.pending_out = true,
                3 => {
                    r.sub.pending_in = true;
                    r.pending_in_stanza = Some("<presence type='subscribe'/>".into());
                }
                4 => r.sub.preapproved = true,
                _ => r.in_roster = true,
            }
            s.roster_put(&r).await.unwrap();
            rows.push(r);
        }
        assert_eq!(s.roster_all("ü@x").await.unwrap(), rows);
        let mut changed = rows[4].clone();
        changed.name = Some("Ĉarlie".into());
        changed.groups = vec!["Friends".into(), "Work".into()];
        changed.sub.pending_in = false;
        changed.pending_in_stanza = None;
        changed.sub.to = true;
        changed.sub.from = true;
        s.roster_put(&changed).await.unwrap();
        assert_eq!(s.roster_get("ü@x", "c4@z").await.unwrap(), Some(changed));
        s.roster_delete("ü@x", "c4@z").await.unwrap();
        assert_eq!(s.roster_get("ü@x", "c4@z").await.unwrap(), None);
        assert_eq!(s.roster_all("ü@x").await.unwrap().len(), 6);

        // offline: counts and order.
        assert_eq!(s.offline_total().await.unwrap(), 0);
        assert_eq!(s.offline_count("ü@x").await.unwrap(), 0);
        for i in 0..12 {
            assert!(s
                .offline_push("ü@x", &format!("<message id='{i}'/>"), u64::MAX)
                .await
                .unwrap());
        }
        assert!(s.offline_push("o@x", "<message/>", 1).await.unwrap());
        assert!(!s.offline_push("o@x", "<message/>", 1).await.unwrap());
        assert!(!s.offline_push("z@x", "<message/>", 0).await.unwrap());
        assert_eq!(s.offline_count("ü@x").await.unwrap(), 12);
        assert_eq!(s.offline_total().await.unwrap(), 13);
        let taken = s.offline_take("ü@x").await.unwrap();
        let want: Vec<String> = (0..12).map(|i| format!("<message id='{i}'/>")).collect();
        assert_eq!(taken, want);

        // policy rules: set, replace, remove.
        s.policy_set("ü@x", "bob@y", "deny").await.unwrap();
        s.policy_set("ü@x", "*.y", "block").await.unwrap();
        s.policy_set("ü@x", "bob@y", "allow").await.unwrap();
        assert_eq!(
            s.policy_rules("ü@x").await.unwrap(),
            vec![
                ("*.y".to_string(), "block".to_string()),
                ("bob@y".to_string(), "allow".to_string())
            ]
        );
        assert!(s.policy_remove("ü@x", "*.y").await.unwrap());
        assert!(!s.policy_remove("ü@x", "*.y").await.unwrap());

        // block list
        s.block_add("ü@x", "b@z").await.unwrap();
        s.block_add("ü@x", "a@z").await.unwrap();
        s.block_add("o@x", "a@z").await.unwrap();
        assert_eq!(s.block_list("ü@x").await.unwrap(), vec!["a@z", "b@z"]);
        s.block_remove("ü@x", "a@z").await.unwrap();
        assert_eq!(s.block_list("ü@x").await.unwrap(), vec!["b@z"]);
        s.block_clear("ü@x").await.unwrap();
        assert!(s.block_list("ü@x").await.unwrap().is_empty());
        assert_eq!(s.block_list("o@x").await.unwrap(), vec!["a@z"]);

        // SIP dialogs: a 64-bit expiry, negative too.
        for (id, expires) in [("b", i64::MAX), ("a", -1)] {
            let r = SipDialogRow {
                id: id.into(),
                kind: "im".into(),
                local_jid: "ü@x".into(),
                remote_jid: "r@y".into(),
                data: "{\"ü\":1}".into(),
                expires,
                owner: String::new(),
            };
            s.sip_dialog_put(&r).await.unwrap();
        }
        let d = s.sip_dialogs().await.unwrap();
        assert_eq!(
            d.iter()
                .map(|r| (r.id.as_str(), r.expires))
                .collect::<Vec<_>>(),
            vec![("a", -1), ("b", i64::MAX)]
        );

        // Deleting the user takes everything of theirs, and nobody else's.
        s.policy_set("ü@x", "c@y", "deny").await.unwrap();
        s.block_add("ü@x", "b@z").await.unwrap();
        s.offline_push("ü@x", "<message/>", 10).await.unwrap();
        s.user_delete("ü@x").await.unwrap();
        assert!(!s.user_exists("ü@x").await.unwrap());
        assert!(s.roster_all("ü@x").await.unwrap().is_empty());
        assert!(s.policy_rules("ü@x").await.unwrap().is_empty());
        assert!(s.block_list("ü@x").await.unwrap().is_empty());
        assert_eq!(s.offline_count("ü@x").await.unwrap(), 0);
        assert_eq!(s.offline_count("o@x").await.unwrap(), 1);
        assert_eq!(s.block_list("o@x").await.unwrap(), vec!["a@z"]);
        s.close().await;
    }

    /// Lists come sorted by bytes (as SQLite's default collation sorts), whatever the database's
    /// collation: a linguistic one puts `alice@x` before `alice2@x`, `B@x` after `a@x`, and
    /// `a_b@x` before `a-b@x`.
    async fn lists_sort_in_byte_order(db: &TestDb) {
        let s = db.open().await;
        let mut jids = vec!["alice@x", "alice2@x", "B@x", "a@x", "a-b@x", "a_b@x", "ä@x"];
        for j in &jids {
            s.user_create(&rec(j)).await.unwrap();
            s.block_add("o@x", j).await.unwrap();
            s.policy_set("o@x", j, "deny").await.unwrap();
            s.roster_put(&RosterRow {
                owner: "o@x".into(),
                contact: j.to_string(),
                ..Default::default()
            })
            .await
            .unwrap();
            s.sip_dialog_put(&SipDialogRow {
                id: j.to_string(),
                kind: "im".into(),
                local_jid: "o@x".into(),
                remote_jid: j.to_string(),
                data: "{}".into(),
                expires: 0,
                owner: "n1".into(),
            })
            .await
            .unwrap();
        }
        jids.sort();
        assert_eq!(s.user_list("x").await.unwrap(), jids);
        assert_eq!(s.block_list("o@x").await.unwrap(), jids);
        let rules: Vec<String> = s
            .policy_rules("o@x")
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.0)
            .collect();
        assert_eq!(rules, jids);
        let contacts: Vec<String> = s
            .roster_all("o@x")
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.contact)
            .collect();
        assert_eq!(contacts, jids);
        let ids: Vec<String> = s
            .sip_dialogs()
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.id)
            .collect();
        assert_eq!(ids, jids);
        s.close().await;
    }

    /// Reopening applies nothing twice; the schema table records each migration once; two
    /// stores can be open on one database at once.
    /// Nodes racing to create the same secret all end up with the one that was stored first.
    async fn shared_secret_first_writer_wins(db: &TestDb) {
        let s = db.open().await;
        let mut tasks = Vec::new();
        for i in 0..8 {
            let s = s.clone();
            tasks.push(tokio::spawn(async move {
                s.shared_secret("dialback", &format!("candidate-{i}"))
                    .await
                    .unwrap()
            }));
        }
        let mut got = Vec::new();
        for t in tasks {
            got.push(t.await.unwrap());
        }
        assert!(got[0].starts_with("candidate-"), "{got:?}");
        assert!(got.iter().all(|g| *g == got[0]), "{got:?}");
        assert_eq!(s.shared_secret("dialback", "other").await.unwrap(), got[0]);
        assert_eq!(s.shared_secret("else", "x").await.unwrap(), "x");
        s.close().await;
    }

    async fn migrations_run_once(db: &TestDb) {
        let s = db.open().await;
        s.user_create(&rec("a@x")).await.unwrap();
        let again = db.open().await;
        assert!(again.user_exists("a@x").await.unwrap());
        again.close().await;
        s.close().await;
        let s = db.open().await;
        let rows = sqlx::query("SELECT version FROM entente_schema ORDER BY version")
            .fetch_all(&s.pool)
            .await
            .unwrap();
        let versions: Vec<i64> = rows.iter().map(|r| r.try_get("version").unwrap()).collect();
        let want: Vec<i64> = (1..=MIGRATIONS.len() as i64).collect();
        assert_eq!(versions, want);
        if db.is_postgres() {
            // The tables really are PostgreSQL's, in this database.
            let row = sqlx::query(
                "SELECT COUNT(*) AS n FROM information_schema.tables \
                 WHERE table_catalog = current_database() AND table_name = 'users'",
            )
            .fetch_one(&s.pool)
            .await
            .unwrap();
            assert_eq!(row.try_get::<i64, _>("n").unwrap(), 1);
        }
        s.close().await;
    }

    /// Eight processes' worth of stores opening one fresh database at once (cluster nodes
    /// starting together) all succeed, and every migration is applied and recorded once.
    async fn concurrent_opens_migrate_once(db: &TestDb) {
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let url = db.url.clone();
            tasks.push(tokio::spawn(async move { Store::open(&url).await }));
        }
        let mut stores = Vec::new();
        for (i, t) in tasks.into_iter().enumerate() {
            match t.await.unwrap() {
                Ok(s) => stores.push(s),
                Err(e) => panic!("store {i} failed to open: {e}"),
            }
        }
        let rows = sqlx::query("SELECT version FROM entente_schema")
            .fetch_all(&stores[0].pool)
            .await
            .unwrap();
        let mut versions: Vec<i64> = rows.iter().map(|r| r.try_get("version").unwrap()).collect();
        versions.sort_unstable();
        let want: Vec<i64> = (1..=MIGRATIONS.len() as i64).collect();
        assert_eq!(versions, want, "each migration recorded exactly once");
        // Every store works on the migrated schema.
        for (i, s) in stores.iter().enumerate() {
            s.user_create(&rec(&format!("u{i}@x"))).await.unwrap();
        }
        assert!(stores[7].user_exists("u0@x").await.unwrap());
        assert_eq!(stores[3].federation_version().await.unwrap(), 0);
        for s in stores {
            s.close().await;
        }
    }
}
