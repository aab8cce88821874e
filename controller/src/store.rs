//! Persistent state: embedded SQLite by default, PostgreSQL when a `postgres://` URL is given
//! (several controller replicas can then share one database).
//!
//! SQLite runs in WAL mode with `synchronous=FULL`: a result is acknowledged only after its
//! transaction is durable, so killing the controller mid-write loses nothing it reported as
//! committed. Attestation results go through one writer task that groups them into
//! transactions ([`Store::record`]); everything else is written directly.

use std::{borrow::Cow, time::Duration};

use serde::{Deserialize, Serialize};
use sqlx::{
    AnyPool, Row, SqlSafeStr,
    any::{AnyPoolOptions, AnyRow},
    migrate::{Migration, MigrationType, Migrator},
};
use tokio::sync::{mpsc, oneshot};

/// Storage errors.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database refused or failed.
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    /// A migration failed.
    #[error("migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The URL names no supported database.
    #[error("unsupported database URL {0:?} (use sqlite://PATH or postgres://...)")]
    Url(String),
    /// A stored value is corrupt.
    #[error("stored {0} is corrupt")]
    Corrupt(&'static str),
    /// The writer task is gone (the controller is shutting down).
    #[error("the result writer has stopped")]
    WriterGone,
}

/// Result type of this module.
pub type StoreResult<T> = Result<T, StoreError>;

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Which database is behind the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// Embedded SQLite file.
    Sqlite,
    /// PostgreSQL server.
    Postgres,
}

/// A vendor key as the operator API lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VendorRow {
    /// Ed25519 public key (hex).
    pub key: String,
    /// Operator's name for the vendor.
    pub name: String,
    /// When it was added (ms).
    pub added_at: i64,
    /// When its endorsements were revoked (ms), if they were.
    pub revoked_at: Option<i64>,
    /// Why.
    pub revoked_reason: Option<String>,
}

/// A gateway as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GatewayRow {
    /// Gateway id.
    pub id: String,
    /// Attestation public key (hex).
    pub attestation_key: String,
    /// Agent public key (hex).
    pub agent_key: String,
    /// `pending`, `accepted` or `revoked`.
    pub enrollment: String,
    /// Why the operator revoked it (only when `enrollment` is `revoked`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_reason: Option<String>,
    /// Vendor key that endorsed it (hex), if any.
    pub endorsed_by: Option<String>,
    /// `hypervisor` or `insecure-software-monitor`.
    pub monitor: String,
    /// `none`, `affirming`, `warning`, `contraindicated` or `unreachable`.
    pub status: String,
    /// Since when (ms).
    pub status_since: i64,
    /// Time of the last result (ms).
    pub last_result_at: Option<i64>,
    /// Counters of the last accepted quote.
    pub last_counters: Option<(u64, u64)>,
    /// Agent build last seen.
    pub agent_version: Option<String>,
    /// Enrolled at (ms).
    pub enrolled_at: i64,
    /// Allowed manifest ids (`None`: every allowed manifest).
    pub manifests: Option<Vec<i64>>,
}

/// A stored reference manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestRow {
    /// Id.
    pub id: i64,
    /// SHA-256 of the signed payload (hex).
    pub digest: String,
    /// Name.
    pub name: String,
    /// Version.
    pub version: String,
    /// Board.
    pub board: String,
    /// The signed envelope as imported.
    pub envelope: String,
    /// Imported at (ms).
    pub imported_at: i64,
    /// Whether gateways may match it.
    pub allowed: bool,
}

/// One attestation result in history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResultRow {
    /// Id (grows).
    pub id: i64,
    /// Gateway.
    pub gateway_id: String,
    /// When (ms).
    pub at: i64,
    /// Overall status.
    pub status: String,
    /// The EAR-shaped result.
    pub ear: serde_json::Value,
}

/// A stored signed policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyRow {
    /// Version.
    pub version: u64,
    /// Document bytes.
    pub body: Vec<u8>,
    /// Controller signature.
    pub signature: [u8; 64],
    /// When the gateway reported it applied (ms).
    pub applied_at: Option<i64>,
    /// Error the gateway reported, if any.
    pub error: Option<String>,
}

/// What the writer persists for one attestation.
#[derive(Debug, Clone)]
pub struct NewResult {
    /// Gateway.
    pub gateway_id: String,
    /// When (ms).
    pub at: i64,
    /// Overall status.
    pub status: String,
    /// Counters to remember as the last accepted (only for verified quotes).
    pub counters: Option<(u64, u64)>,
    /// Raw DEFLATE of the EAR JSON (compressed by the session, so the one writer only writes).
    ear_deflate: Vec<u8>,
}

/// Longest EAR JSON a stored result may inflate to (a 1,024-component gateway's is ~160 KB).
const EAR_MAX: u64 = 1 << 20;

impl NewResult {
    /// A result whose EAR is `ear`, stored as compressed JSON.
    pub fn new(
        gateway_id: &str,
        at: i64,
        status: &str,
        ear: &impl serde::Serialize,
        counters: Option<(u64, u64)>,
    ) -> Self {
        use std::io::Write as _;
        // Level 1: most of the gain (7.8 KB → 0.6 KB) for a fraction of the time.
        let json = serde_json::to_vec(ear).expect("EARs serialise");
        let mut z = flate2::write::DeflateEncoder::new(
            Vec::with_capacity(json.len() / 8),
            flate2::Compression::fast(),
        );
        z.write_all(&json).expect("writing to a Vec");
        Self {
            gateway_id: gateway_id.into(),
            at,
            status: status.into(),
            counters,
            ear_deflate: z.finish().expect("writing to a Vec"),
        }
    }
}

struct Job {
    result: NewResult,
    ack: oneshot::Sender<StoreResult<bool>>,
}

/// PostgreSQL notification channel for changed gateway records (payload: the gateway id).
pub const CHANGES_CHANNEL: &str = "gatewarden_gateway_changed";

/// The database handle.
#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    /// The database URL, for the PostgreSQL listener connection.
    url: String,
    writer: mpsc::Sender<Job>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("backend", &self.backend)
            .finish()
    }
}

fn migrator(backend: Backend) -> Migrator {
    // (version, description, SQLite, PostgreSQL): applied in order, each once.
    const MIGRATIONS: &[(i64, &str, &str, &str)] = &[
        (
            1,
            "init",
            include_str!("../migrations/sqlite/0001_init.sql"),
            include_str!("../migrations/postgres/0001_init.sql"),
        ),
        (
            2,
            "datapath",
            include_str!("../migrations/sqlite/0002_datapath.sql"),
            include_str!("../migrations/postgres/0002_datapath.sql"),
        ),
        (
            3,
            "ear deflate",
            include_str!("../migrations/sqlite/0003_ear_deflate.sql"),
            include_str!("../migrations/postgres/0003_ear_deflate.sql"),
        ),
        (
            4,
            "revocation",
            include_str!("../migrations/sqlite/0004_revocation.sql"),
            include_str!("../migrations/postgres/0004_revocation.sql"),
        ),
    ];
    Migrator::with_migrations(
        MIGRATIONS
            .iter()
            .map(|&(version, name, sqlite, postgres)| {
                let sql = match backend {
                    Backend::Sqlite => sqlite,
                    Backend::Postgres => postgres,
                };
                Migration::new(
                    version,
                    Cow::Borrowed(name),
                    MigrationType::Simple,
                    sql.into_sql_str(),
                    false,
                )
            })
            .collect(),
    )
}

fn hex_key(b: Vec<u8>) -> String {
    hex::encode(b)
}

fn gateway_from(row: &AnyRow) -> StoreResult<GatewayRow> {
    let boot: Option<i64> = row.try_get("last_boot")?;
    let quote: Option<i64> = row.try_get("last_quote")?;
    let manifests: Option<String> = row.try_get("manifests")?;
    Ok(GatewayRow {
        id: row.try_get("id")?,
        attestation_key: hex_key(row.try_get("attestation_key")?),
        agent_key: hex_key(row.try_get("agent_key")?),
        enrollment: row.try_get("enrollment")?,
        revoked_reason: row.try_get("revoked_reason")?,
        endorsed_by: row
            .try_get::<Option<Vec<u8>>, _>("endorsed_by")?
            .map(hex_key),
        monitor: row.try_get("monitor")?,
        status: row.try_get("status")?,
        status_since: row.try_get("status_since")?,
        last_result_at: row.try_get("last_result_at")?,
        last_counters: boot.zip(quote).map(|(b, q)| (b as u64, q as u64)),
        agent_version: row.try_get("agent_version")?,
        enrolled_at: row.try_get("enrolled_at")?,
        manifests: manifests
            .map(|m| serde_json::from_str(&m).map_err(|_| StoreError::Corrupt("manifest list")))
            .transpose()?,
    })
}

const GATEWAY_COLUMNS: &str = "id, attestation_key, agent_key, enrollment, revoked_reason, endorsed_by, monitor, status, status_since, last_result_at, last_boot, last_quote, agent_version, enrolled_at, manifests";

impl Store {
    /// Open (and migrate) the database at `url`: `sqlite://PATH` (created if missing) or
    /// `postgres://USER@HOST/DB`.
    pub async fn open(url: &str) -> StoreResult<Self> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Backend::Postgres
        } else {
            return Err(StoreError::Url(url.into()));
        };
        let url = match backend {
            Backend::Sqlite if !url.contains('?') => format!("{url}?mode=rwc"),
            _ => url.to_owned(),
        };
        let options = AnyPoolOptions::new()
            .max_connections(match backend {
                Backend::Sqlite => 4,
                Backend::Postgres => 8,
            })
            .acquire_timeout(Duration::from_secs(30))
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        use sqlx::Executor;
                        // WAL: readers never block the writer; FULL: a committed transaction
                        // survives the process being killed (and power loss).
                        conn.execute("PRAGMA journal_mode=WAL").await?;
                        conn.execute("PRAGMA synchronous=FULL").await?;
                        conn.execute("PRAGMA busy_timeout=10000").await?;
                        conn.execute("PRAGMA foreign_keys=ON").await?;
                    }
                    Ok(())
                })
            });
        let pool = options.connect(&url).await?;
        migrator(backend).run(&pool).await?;
        let (tx, rx) = mpsc::channel(4096);
        tokio::spawn(writer(pool.clone(), backend, rx));
        Ok(Self {
            pool,
            backend,
            url,
            writer: tx,
        })
    }

    /// Tell every controller replica sharing this database that gateway `id`'s record changed
    /// (a new policy, other manifest pins), so the one holding its session acts on it:
    /// PostgreSQL `NOTIFY` on [`CHANGES_CHANNEL`]. SQLite serves one replica; nothing to tell.
    pub async fn announce(&self, id: &str) -> StoreResult<()> {
        if self.backend == Backend::Postgres {
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind(CHANGES_CHANNEL)
                .bind(id.to_owned())
                .execute(&self.pool)
                .await?;
        }
        Ok(())
    }

    /// Listen for [`Store::announce`]ments of every replica (this one's too): `None` on SQLite.
    pub async fn listen(&self) -> StoreResult<Option<sqlx::postgres::PgListener>> {
        if self.backend != Backend::Postgres {
            return Ok(None);
        }
        let mut l = sqlx::postgres::PgListener::connect(&self.url).await?;
        l.listen(CHANGES_CHANNEL).await?;
        Ok(Some(l))
    }

    /// The backend in use.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Trust a vendor key for endorsements. A revoked key stays revoked: returns false and
    /// changes nothing.
    pub async fn add_vendor(&self, key: &[u8; 32], name: &str) -> StoreResult<bool> {
        let r = sqlx::query("INSERT INTO vendors (key, name, added_at) VALUES ($1, $2, $3) ON CONFLICT (key) DO UPDATE SET name = excluded.name WHERE vendors.revoked_at IS NULL")
            .bind(key.to_vec())
            .bind(name.to_owned())
            .bind(now_ms())
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() == 1)
    }

    /// Every vendor key known, trusted or revoked.
    pub async fn vendor_list(&self) -> StoreResult<Vec<VendorRow>> {
        let rows = sqlx::query(
            "SELECT key, name, added_at, revoked_at, revoked_reason FROM vendors ORDER BY name",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(VendorRow {
                    key: hex::encode(r.try_get::<Vec<u8>, _>("key")?),
                    name: r.try_get("name")?,
                    added_at: r.try_get("added_at")?,
                    revoked_at: r.try_get("revoked_at")?,
                    revoked_reason: r.try_get("revoked_reason")?,
                })
            })
            .collect()
    }

    /// Revoke every endorsement by vendor `key`: the key is no longer trusted, and every gateway
    /// it endorsed is revoked with `reason`. Returns the gateways revoked now, or `None` if the
    /// key is unknown.
    pub async fn revoke_vendor(
        &self,
        key: &[u8; 32],
        reason: &str,
    ) -> StoreResult<Option<Vec<String>>> {
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        let r = sqlx::query(
            "UPDATE vendors SET revoked_at = COALESCE(revoked_at, $1), revoked_reason = COALESCE(revoked_reason, $2) WHERE key = $3",
        )
        .bind(now)
        .bind(reason.to_owned())
        .bind(key.to_vec())
        .execute(&mut *tx)
        .await?;
        if r.rows_affected() == 0 {
            return Ok(None);
        }
        let why = format!("its vendor's endorsements were revoked: {reason}");
        let rows = sqlx::query(
            "UPDATE gateways SET enrollment = 'revoked', cert_fp = NULL, revoked_at = $1, revoked_reason = $2 WHERE endorsed_by = $3 AND enrollment <> 'revoked' RETURNING id",
        )
        .bind(now)
        .bind(why)
        .bind(key.to_vec())
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        let mut ids: Vec<String> = rows
            .iter()
            .map(|r| r.try_get("id"))
            .collect::<Result<_, _>>()?;
        ids.sort();
        Ok(Some(ids))
    }

    /// Revoke gateway `id` with `reason`: its client certificate is forgotten and it is never
    /// accepted again under its keys. Returns false if there is no such gateway or it already
    /// is revoked.
    pub async fn revoke_gateway(&self, id: &str, reason: &str) -> StoreResult<bool> {
        let r = sqlx::query("UPDATE gateways SET enrollment = 'revoked', cert_fp = NULL, revoked_at = $1, revoked_reason = $2 WHERE id = $3 AND enrollment <> 'revoked'")
            .bind(now_ms())
            .bind(reason.to_owned())
            .bind(id.to_owned())
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() == 1)
    }

    /// The revocation reason of a vendor key, if it is revoked.
    pub async fn vendor_revoked(&self, key: &[u8; 32]) -> StoreResult<Option<String>> {
        let row = sqlx::query(
            "SELECT revoked_reason FROM vendors WHERE key = $1 AND revoked_at IS NOT NULL",
        )
        .bind(key.to_vec())
        .fetch_optional(&self.pool)
        .await?;
        Ok(match row {
            Some(r) => Some(
                r.try_get::<Option<String>, _>("revoked_reason")?
                    .unwrap_or_default(),
            ),
            None => None,
        })
    }

    /// Trusted (not revoked) vendor keys with their names.
    pub async fn vendors(&self) -> StoreResult<Vec<([u8; 32], String)>> {
        let rows =
            sqlx::query("SELECT key, name FROM vendors WHERE revoked_at IS NULL ORDER BY name")
                .fetch_all(&self.pool)
                .await?;
        rows.iter()
            .map(|r| {
                let k: Vec<u8> = r.try_get("key")?;
                let k: [u8; 32] = k
                    .try_into()
                    .map_err(|_| StoreError::Corrupt("vendor key"))?;
                Ok((k, r.try_get("name")?))
            })
            .collect()
    }

    /// One gateway.
    pub async fn gateway(&self, id: &str) -> StoreResult<Option<GatewayRow>> {
        let q = format!("SELECT {GATEWAY_COLUMNS} FROM gateways WHERE id = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(q))
            .bind(id.to_owned())
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(gateway_from).transpose()
    }

    /// The gateway whose client certificate has this fingerprint.
    pub async fn gateway_by_cert(&self, fp: &[u8; 32]) -> StoreResult<Option<GatewayRow>> {
        let q = format!("SELECT {GATEWAY_COLUMNS} FROM gateways WHERE cert_fp = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(q))
            .bind(fp.to_vec())
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(gateway_from).transpose()
    }

    /// Every gateway, by id.
    pub async fn gateways(&self) -> StoreResult<Vec<GatewayRow>> {
        let q = format!("SELECT {GATEWAY_COLUMNS} FROM gateways ORDER BY id");
        let rows = sqlx::query(sqlx::AssertSqlSafe(q))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(gateway_from).collect()
    }

    /// Record a new gateway. Fails if the id or the attestation key is already known.
    pub async fn insert_gateway(
        &self,
        id: &str,
        attestation_key: &[u8; 32],
        agent_key: &[u8; 32],
        endorsed_by: Option<&[u8; 32]>,
        monitor: &str,
    ) -> StoreResult<()> {
        let now = now_ms();
        let enrollment = if endorsed_by.is_some() {
            "accepted"
        } else {
            "pending"
        };
        sqlx::query("INSERT INTO gateways (id, attestation_key, agent_key, enrollment, endorsed_by, monitor, enrolled_at, approved_at, status, status_since) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'none', $9)")
            .bind(id.to_owned())
            .bind(attestation_key.to_vec())
            .bind(agent_key.to_vec())
            .bind(enrollment)
            .bind(endorsed_by.map(|k| k.to_vec()))
            .bind(monitor.to_owned())
            .bind(now)
            .bind(endorsed_by.map(|_| now))
            .bind(now)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// An operator approves a pending gateway. Returns false if there is no such pending one.
    pub async fn approve(&self, id: &str) -> StoreResult<bool> {
        // The unreachable clock starts at approval, not at the enrollment request.
        let now = now_ms();
        let r = sqlx::query("UPDATE gateways SET enrollment = 'accepted', approved_at = $1, status_since = $2 WHERE id = $3 AND enrollment = 'pending'")
            .bind(now)
            .bind(now)
            .bind(id.to_owned())
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() == 1)
    }

    /// Remember the client certificate issued to a gateway (replacing an earlier one).
    pub async fn set_cert(&self, id: &str, fp: &[u8; 32]) -> StoreResult<()> {
        sqlx::query("UPDATE gateways SET cert_fp = $1 WHERE id = $2")
            .bind(fp.to_vec())
            .bind(id.to_owned())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Note the agent build a gateway runs.
    pub async fn set_agent_version(&self, id: &str, version: &str) -> StoreResult<()> {
        sqlx::query("UPDATE gateways SET agent_version = $1 WHERE id = $2")
            .bind(version.to_owned())
            .bind(id.to_owned())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Restrict a gateway to some manifest ids (`None`: any allowed manifest).
    pub async fn set_gateway_manifests(&self, id: &str, ids: Option<&[i64]>) -> StoreResult<bool> {
        let r = sqlx::query("UPDATE gateways SET manifests = $1 WHERE id = $2")
            .bind(ids.map(|i| serde_json::to_string(i).expect("ids serialise")))
            .bind(id.to_owned())
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() == 1)
    }

    /// Mark a gateway unreachable (no result for too long); returns true if its state changed.
    pub async fn mark_unreachable(&self, id: &str, at: i64) -> StoreResult<bool> {
        let r = sqlx::query("UPDATE gateways SET status = 'unreachable', status_since = $1 WHERE id = $2 AND status <> 'unreachable'")
            .bind(at)
            .bind(id.to_owned())
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() == 1)
    }

    /// Import a verified manifest envelope. Returns its id; importing the same payload again
    /// returns the existing id (manifests are immutable).
    pub async fn import_manifest(
        &self,
        digest: &[u8; 32],
        name: &str,
        version: &str,
        board: &str,
        envelope: &str,
        signer: &[u8; 32],
    ) -> StoreResult<i64> {
        if let Some(row) = sqlx::query("SELECT id FROM manifests WHERE digest = $1")
            .bind(digest.to_vec())
            .fetch_optional(&self.pool)
            .await?
        {
            return Ok(row.try_get("id")?);
        }
        let row = sqlx::query("INSERT INTO manifests (digest, name, version, board, envelope, signer, imported_at, allowed) VALUES ($1, $2, $3, $4, $5, $6, $7, 1) RETURNING id")
            .bind(digest.to_vec())
            .bind(name.to_owned())
            .bind(version.to_owned())
            .bind(board.to_owned())
            .bind(envelope.to_owned())
            .bind(signer.to_vec())
            .bind(now_ms())
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get("id")?)
    }

    /// Allow or retire a manifest.
    pub async fn set_manifest_allowed(&self, id: i64, allowed: bool) -> StoreResult<bool> {
        let r = sqlx::query("UPDATE manifests SET allowed = $1 WHERE id = $2")
            .bind(i64::from(allowed))
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() == 1)
    }

    /// Every manifest, newest first.
    pub async fn manifests(&self) -> StoreResult<Vec<ManifestRow>> {
        let rows = sqlx::query("SELECT id, digest, name, version, board, envelope, imported_at, allowed FROM manifests ORDER BY id DESC")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(ManifestRow {
                    id: r.try_get("id")?,
                    digest: hex_key(r.try_get("digest")?),
                    name: r.try_get("name")?,
                    version: r.try_get("version")?,
                    board: r.try_get("board")?,
                    envelope: r.try_get("envelope")?,
                    imported_at: r.try_get("imported_at")?,
                    allowed: r.try_get::<i64, _>("allowed")? != 0,
                })
            })
            .collect()
    }

    /// Persist an attestation result through the writer; resolves once it is committed.
    /// Returns true when the gateway's status changed.
    pub async fn record(&self, result: NewResult) -> StoreResult<bool> {
        let (ack, rx) = oneshot::channel();
        self.writer
            .send(Job { result, ack })
            .await
            .map_err(|_| StoreError::WriterGone)?;
        rx.await.map_err(|_| StoreError::WriterGone)?
    }

    /// A gateway's results, newest first.
    pub async fn history(&self, id: &str, limit: i64) -> StoreResult<Vec<ResultRow>> {
        let rows = sqlx::query("SELECT id, gateway_id, at, status, ear, ear_deflate FROM results WHERE gateway_id = $1 ORDER BY id DESC LIMIT $2")
            .bind(id.to_owned())
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(result_from).collect()
    }

    /// Number of results stored (all gateways).
    pub async fn result_count(&self) -> StoreResult<i64> {
        Ok(sqlx::query("SELECT COUNT(*) AS n FROM results")
            .fetch_one(&self.pool)
            .await?
            .try_get("n")?)
    }

    /// Set an operator's policy for one device behind a gateway.
    pub async fn put_device_policy(&self, id: &str, mac: &str, spec: &str) -> StoreResult<()> {
        sqlx::query("INSERT INTO device_policies (gateway_id, mac, spec, updated_at) VALUES ($1, $2, $3, $4) ON CONFLICT (gateway_id, mac) DO UPDATE SET spec = excluded.spec, updated_at = excluded.updated_at")
            .bind(id.to_owned())
            .bind(mac.to_owned())
            .bind(spec.to_owned())
            .bind(now_ms())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// A gateway's data-path settings (JSON), `None` when never set (the defaults apply).
    pub async fn datapath_settings(&self, id: &str) -> StoreResult<Option<String>> {
        let row = sqlx::query("SELECT datapath_settings FROM gateways WHERE id = $1")
            .bind(id.to_owned())
            .fetch_optional(&self.pool)
            .await?;
        Ok(match row {
            Some(r) => r.try_get::<Option<String>, _>("datapath_settings")?,
            None => None,
        })
    }

    /// Set a gateway's data-path settings (JSON). False when there is no such gateway.
    pub async fn set_datapath_settings(&self, id: &str, json: &str) -> StoreResult<bool> {
        let r = sqlx::query("UPDATE gateways SET datapath_settings = $2 WHERE id = $1")
            .bind(id.to_owned())
            .bind(json.to_owned())
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() > 0)
    }

    /// Device policies of a gateway: `(mac, spec JSON)`.
    pub async fn device_policies(&self, id: &str) -> StoreResult<Vec<(String, String)>> {
        let rows =
            sqlx::query("SELECT mac, spec FROM device_policies WHERE gateway_id = $1 ORDER BY mac")
                .bind(id.to_owned())
                .fetch_all(&self.pool)
                .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("mac")?, r.try_get("spec")?)))
            .collect()
    }

    /// Store a signed policy. Returns false, storing nothing, when the gateway already has a
    /// policy `version` (another replica, or another request, published it first).
    pub async fn put_policy(
        &self,
        id: &str,
        version: u64,
        body: &[u8],
        signature: &[u8; 64],
    ) -> StoreResult<bool> {
        let inserted = sqlx::query("INSERT INTO policies (gateway_id, version, body, signature, created_at) VALUES ($1, $2, $3, $4, $5)")
            .bind(id.to_owned())
            .bind(version as i64)
            .bind(body.to_vec())
            .bind(signature.to_vec())
            .bind(now_ms())
            .execute(&self.pool)
            .await;
        match inserted {
            Ok(_) => Ok(true),
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// The newest policy of a gateway.
    pub async fn latest_policy(&self, id: &str) -> StoreResult<Option<PolicyRow>> {
        let row = sqlx::query("SELECT version, body, signature, applied_at, error FROM policies WHERE gateway_id = $1 ORDER BY version DESC LIMIT 1")
            .bind(id.to_owned())
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(policy_from).transpose()
    }

    /// One version of a gateway's policy.
    pub async fn policy(&self, id: &str, version: u64) -> StoreResult<Option<PolicyRow>> {
        let row = sqlx::query("SELECT version, body, signature, applied_at, error FROM policies WHERE gateway_id = $1 AND version = $2")
            .bind(id.to_owned())
            .bind(version as i64)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(policy_from).transpose()
    }

    /// Record what the gateway said about applying a policy.
    pub async fn policy_outcome(
        &self,
        id: &str,
        version: u64,
        error: Option<&str>,
    ) -> StoreResult<()> {
        sqlx::query(
            "UPDATE policies SET applied_at = $1, error = $2 WHERE gateway_id = $3 AND version = $4",
        )
        .bind(error.is_none().then(now_ms))
        .bind(error.map(str::to_owned))
        .bind(id.to_owned())
        .bind(version as i64)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Store a gateway's report: devices (upserted) and data-path counters.
    pub async fn put_report(
        &self,
        id: &str,
        report: &gw_proto::wire::GatewayReport,
    ) -> StoreResult<()> {
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        for d in &report.devices {
            sqlx::query("INSERT INTO devices (gateway_id, mac, ip, hostname, last_seen) VALUES ($1, $2, $3, $4, $5) ON CONFLICT (gateway_id, mac) DO UPDATE SET ip = excluded.ip, hostname = excluded.hostname, last_seen = excluded.last_seen")
                .bind(id.to_owned())
                .bind(d.mac.clone())
                .bind(d.ip.clone())
                .bind(d.hostname.clone())
                .bind(now)
                .execute(&mut *tx)
                .await?;
        }
        if let Some(dp) = report.datapath {
            sqlx::query("INSERT INTO datapath (gateway_id, hop_drops, hop_passes, at) VALUES ($1, $2, $3, $4) ON CONFLICT (gateway_id) DO UPDATE SET hop_drops = excluded.hop_drops, hop_passes = excluded.hop_passes, at = excluded.at")
                .bind(id.to_owned())
                .bind(dp.hop_drops as i64)
                .bind(dp.hop_passes as i64)
                .bind(now)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Devices behind a gateway: `(mac, ip, hostname, last_seen)`.
    pub async fn devices(&self, id: &str) -> StoreResult<Vec<gw_proto::wire::Device>> {
        let rows =
            sqlx::query("SELECT mac, ip, hostname FROM devices WHERE gateway_id = $1 ORDER BY mac")
                .bind(id.to_owned())
                .fetch_all(&self.pool)
                .await?;
        rows.iter()
            .map(|r| {
                Ok(gw_proto::wire::Device {
                    mac: r.try_get("mac")?,
                    ip: r.try_get("ip")?,
                    hostname: r.try_get("hostname")?,
                })
            })
            .collect()
    }

    /// Data-path counters last reported: `(drops, passes)`.
    pub async fn datapath(&self, id: &str) -> StoreResult<Option<(u64, u64)>> {
        let row = sqlx::query("SELECT hop_drops, hop_passes FROM datapath WHERE gateway_id = $1")
            .bind(id.to_owned())
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| {
            Ok((
                r.try_get::<i64, _>("hop_drops")? as u64,
                r.try_get::<i64, _>("hop_passes")? as u64,
            ))
        })
        .transpose()
    }
}

fn result_from(r: &AnyRow) -> StoreResult<ResultRow> {
    let json: Option<String> = r.try_get("ear")?;
    let deflated: Option<Vec<u8>> = r.try_get("ear_deflate")?;
    let json = match (json, deflated) {
        (Some(j), _) => j,
        (None, Some(z)) => {
            use std::io::Read as _;
            let mut j = String::new();
            flate2::read::DeflateDecoder::new(z.as_slice())
                .take(EAR_MAX)
                .read_to_string(&mut j)
                .map_err(|_| StoreError::Corrupt("result EAR does not inflate"))?;
            j
        }
        (None, None) => return Err(StoreError::Corrupt("result without an EAR")),
    };
    Ok(ResultRow {
        id: r.try_get("id")?,
        gateway_id: r.try_get("gateway_id")?,
        at: r.try_get("at")?,
        status: r.try_get("status")?,
        ear: serde_json::from_str(&json).map_err(|_| StoreError::Corrupt("result"))?,
    })
}

fn policy_from(r: &AnyRow) -> StoreResult<PolicyRow> {
    let sig: Vec<u8> = r.try_get("signature")?;
    Ok(PolicyRow {
        version: r.try_get::<i64, _>("version")? as u64,
        body: r.try_get("body")?,
        signature: sig
            .try_into()
            .map_err(|_| StoreError::Corrupt("policy signature"))?,
        applied_at: r.try_get("applied_at")?,
        error: r.try_get("error")?,
    })
}

/// The one writer: takes whatever results are queued (up to 512), writes them in one
/// transaction, then acknowledges each.
async fn writer(pool: AnyPool, backend: Backend, mut rx: mpsc::Receiver<Job>) {
    let mut batch = Vec::with_capacity(512);
    while rx.recv_many(&mut batch, 512).await > 0 {
        let outcome = write_batch(&pool, backend, &batch).await;
        match outcome {
            Ok(changed) => {
                for (job, c) in batch.drain(..).zip(changed) {
                    let _ = job.ack.send(Ok(c));
                }
            }
            Err(e) => {
                tracing::error!("writing {} results failed: {e}", batch.len());
                let msg = e.to_string();
                for job in batch.drain(..) {
                    let _ = job
                        .ack
                        .send(Err(StoreError::Db(sqlx::Error::Protocol(msg.clone()))));
                }
            }
        }
    }
}

/// Rows per multi-row statement: few statements per batch (each is a round trip to the database
/// thread), but few parameters per statement: SQLite looks a parameter's name up by a linear
/// scan, and sqlx does so for every parameter, so a statement's binding cost grows with the
/// square of its parameters. Full chunks share their SQL text, so sqlx prepares each shape once.
const CHUNK_PARAMS: usize = 192;

/// `($1, $2, ...), (...)`: `rows` tuples of `cols` parameters.
fn placeholders(rows: usize, cols: usize) -> String {
    use std::fmt::Write as _;
    let mut sql = String::new();
    for i in 0..rows {
        sql.push_str(if i == 0 { "(" } else { ", (" });
        for c in 0..cols {
            let sep = if c == 0 { "" } else { ", " };
            let _ = write!(sql, "{sep}${}", cols * i + c + 1);
        }
        sql.push(')');
    }
    sql
}

/// A gateway's record as the batch leaves it.
struct Next {
    status: String,
    since: i64,
    at: i64,
    counters: Option<(u64, u64)>,
}

async fn write_batch(pool: &AnyPool, backend: Backend, batch: &[Job]) -> StoreResult<Vec<bool>> {
    use std::collections::HashMap;
    let mut tx = pool.begin().await?;
    for chunk in batch.chunks(CHUNK_PARAMS / 4) {
        let sql = format!(
            "INSERT INTO results (gateway_id, at, status, ear_deflate) VALUES {}",
            placeholders(chunk.len(), 4)
        );
        let mut insert = sqlx::query(sqlx::AssertSqlSafe(sql));
        for job in chunk {
            let r = &job.result;
            insert = insert
                .bind(r.gateway_id.as_str())
                .bind(r.at)
                .bind(r.status.as_str())
                .bind(r.ear_deflate.as_slice());
        }
        insert.execute(&mut *tx).await?;
    }

    // The gateways' statuses before this batch. The INSERT above already holds SQLite's write
    // lock; on PostgreSQL, FOR UPDATE keeps another replica from changing them under us (in id
    // order, so two replicas locking overlapping sets cannot deadlock).
    let mut ids: Vec<&str> = batch.iter().map(|j| j.result.gateway_id.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    let lock = match backend {
        Backend::Postgres => " ORDER BY id FOR UPDATE",
        Backend::Sqlite => "",
    };
    let mut next: HashMap<String, Next> = HashMap::with_capacity(ids.len());
    for chunk in ids.chunks(CHUNK_PARAMS) {
        let sql = format!(
            "SELECT id, status, status_since FROM gateways WHERE id IN {}{lock}",
            placeholders(1, chunk.len()),
        );
        let mut select = sqlx::query(sqlx::AssertSqlSafe(sql));
        for id in chunk {
            select = select.bind(*id);
        }
        for row in select.fetch_all(&mut *tx).await? {
            next.insert(
                row.try_get("id")?,
                Next {
                    status: row.try_get("status")?,
                    since: row.try_get("status_since")?,
                    at: 0,
                    counters: None,
                },
            );
        }
    }
    // Apply the batch in order: a result changes its gateway's status when it differs from
    // the one before it (stored, or earlier in this batch).
    let mut changed = Vec::with_capacity(batch.len());
    for job in batch {
        let r = &job.result;
        changed.push(match next.get_mut(&r.gateway_id) {
            Some(n) => {
                let c = n.status != r.status;
                if c {
                    n.status.clone_from(&r.status);
                    n.since = r.at;
                }
                n.at = r.at;
                n.counters = r.counters.or(n.counters);
                c
            }
            // Unreachable: results reference their gateway (the INSERT would have failed),
            // and gateways are never deleted.
            None => false,
        });
    }
    let next: Vec<(String, Next)> = next.into_iter().collect();
    for chunk in next.chunks(CHUNK_PARAMS / 6) {
        let sql = format!(
            "UPDATE gateways SET status = v.column2, status_since = v.column3, last_result_at = v.column4, \
             last_boot = COALESCE(v.column5, gateways.last_boot), last_quote = COALESCE(v.column6, gateways.last_quote) \
             FROM (VALUES {}) AS v WHERE gateways.id = v.column1",
            placeholders(chunk.len(), 6)
        );
        let mut update = sqlx::query(sqlx::AssertSqlSafe(sql));
        for (id, n) in chunk {
            update = update
                .bind(id.as_str())
                .bind(n.status.as_str())
                .bind(n.since)
                .bind(n.at)
                .bind(n.counters.map(|c| c.0 as i64))
                .bind(n.counters.map(|c| c.1 as i64));
        }
        update.execute(&mut *tx).await?;
    }
    tx.commit().await?;
    Ok(changed)
}
