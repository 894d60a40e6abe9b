//! The lake as `serve` serves it: the committed state (from the manifest alone), the snapshot
//! database built over it, and freshness.
//!
//! Freshness: before a query, if the last look is older than `--refresh-secs`, the manifest is
//! read again with a conditional GET (one request, nothing transferred while it is unchanged); a
//! change builds a new snapshot beside the current one and swaps it in (queries already running
//! finish on the old one). Only what the manifest names as committed is ever readable.
//!
//! A local lake is read in place. A remote one is read through the [`Cache`]: nothing is
//! downloaded at start; a query fetches the files it opens (learnt on the snapshot's probe
//! database), and pins them while it runs.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use duckdb::types::Value;

use super::ServeError;
use super::cache::{Cache, Object, Pins, View, views_named};
use super::engine::{EngineConfig, Snapshot, SnapshotFiles};
use super::session::QueryControl;
use crate::lake::DateFile;
use crate::lake::manifest::Manifest;
use crate::lake::{Lake, MANIFEST_KEY};

/// The committed files of the lake, by view. The one place `serve` reads the manifest's
/// contents (its partitions and their files, its raw entries' versions and quarantine counts).
fn committed(manifest: &Manifest) -> Vec<Object> {
    let mut out = Vec::new();
    for p in manifest.committed_partitions() {
        // By date and run: the staged and the published copy of a partition are the same file.
        for (view, kind, name) in
            [(View::Processed, DateFile::Processed, "p"), (View::Daily, DateFile::Daily, "d"), (View::Snapshots, DateFile::Snapshots, "s")]
        {
            if let Some(key) = p.file(kind) {
                let file = key.rsplit('/').next().unwrap_or(&key).to_owned();
                let rel = format!("{name}/{}/date={}/{file}", super::cache::tag(&p.run_id), p.date);
                out.push(Object { view, key, rel });
            }
        }
    }
    for (key, entry) in manifest.raw() {
        let name = key.rsplit('/').next().unwrap_or(key);
        let version = super::cache::tag(&entry.version);
        out.push(Object { view: View::Raw, key: key.clone(), rel: format!("r/{version}/{name}") });
        // `process` writes a quarantine file for a raw file exactly when it rejected rows.
        if entry.quarantined > 0 {
            let q = crate::lake::quarantine_key(key);
            let qname = q.rsplit('/').next().unwrap_or(&q).to_owned();
            out.push(Object { view: View::Quarantine, key: q, rel: format!("q/{version}/{qname}") });
        }
    }
    out
}

/// A remote lake's snapshot extras: the probe database and the files of each view.
struct Remote {
    probe: Snapshot,
    /// Log truncation waits for running probes (each reads its own connection's entries).
    logs: tokio::sync::RwLock<()>,
    probes: AtomicU64,
}

/// One committed state, ready to query.
pub struct Served {
    /// The snapshot's database.
    pub db: Snapshot,
    remote: Option<Remote>,
}

/// The lake as served: the current snapshot and when the lake was last looked at.
pub struct LakeState {
    lake: Lake,
    current: std::sync::RwLock<Arc<Served>>,
    look: tokio::sync::Mutex<Look>,
    refresh: Duration,
    config: EngineConfig,
    generation: AtomicU64,
    cache: Option<Arc<Cache>>,
    /// Keeps the spill and cache directories until the state goes.
    _root: Arc<tempfile::TempDir>,
}

struct Look {
    at: Instant,
    /// The manifest version the current snapshot was built from (None: the lake had none).
    manifest_version: Option<String>,
}

/// How to open the served lake.
#[derive(Debug, Clone)]
pub struct StateOptions {
    /// How stale the served state may be.
    pub refresh: Duration,
    /// DuckDB threads per snapshot.
    pub threads: Option<usize>,
    /// DuckDB memory limit per snapshot.
    pub memory_limit: String,
    /// Bytes of a remote lake's files kept locally.
    pub cache_bytes: u64,
}

/// The probe database's memory limit: it only ever reads empty files.
const PROBE_MEMORY_LIMIT: &str = "64MB";

/// Probes between two truncations of the probe's file-system log.
const PROBES_PER_LOG: u64 = 256;

impl LakeState {
    /// Look at the lake and build the first snapshot (nothing is downloaded from a remote lake).
    pub async fn open(lake: Lake, opts: &StateOptions) -> Result<Self, ServeError> {
        let root = Arc::new(
            tempfile::Builder::new()
                .prefix("tickerlake-serve-")
                .tempdir()
                .map_err(|e| ServeError::Lake(crate::lake::LakeError::io("cannot create serve's working directory", e)))?,
        );
        let spill_root = root.path().join("spill");
        std::fs::create_dir_all(&spill_root)
            .map_err(|e| ServeError::Lake(crate::lake::LakeError::io("cannot create the spill directory", e)))?;
        let config = EngineConfig { threads: opts.threads, memory_limit: opts.memory_limit.clone(), spill_root, log_file_access: false };
        let cache = match lake.local_path(MANIFEST_KEY) {
            Some(_) => None,
            None => Some(Arc::new(Cache::new(lake.clone(), &root.path().join("cache"), opts.cache_bytes)?)),
        };
        let manifest = Manifest::load_all(&lake).await?;
        let version = manifest.read_version.clone();
        let first = Self::build(&lake, cache.as_ref(), &config, &manifest, 1).await?;
        tracing::info!(partitions = first.db.partitions, "serving {}", lake.describe());
        if let Some(c) = &cache {
            let st = c.stats();
            tracing::debug!(
                requests = lake.requests().unwrap_or(0),
                files = st.files,
                bytes = st.bytes,
                downloads = st.downloads,
                "serve stats after the start"
            );
        }
        Ok(Self {
            lake,
            current: std::sync::RwLock::new(Arc::new(first)),
            look: tokio::sync::Mutex::new(Look { at: Instant::now(), manifest_version: version }),
            refresh: opts.refresh,
            config,
            generation: AtomicU64::new(1),
            cache,
            _root: root,
        })
    }

    async fn build(
        lake: &Lake,
        cache: Option<&Arc<Cache>>,
        config: &EngineConfig,
        manifest: &Manifest,
        generation: u64,
    ) -> Result<Served, ServeError> {
        let objects = committed(manifest);
        let config = config.clone();
        match cache {
            None => {
                let local = |view: View| -> Vec<String> {
                    objects
                        .iter()
                        .filter(|o| o.view == view)
                        .filter_map(|o| lake.local_path(&o.key))
                        // A quarantine file a crashed or older run did not leave is no error.
                        .filter(|p| view != View::Quarantine || p.exists())
                        .map(|p| p.to_string_lossy().into_owned())
                        .collect()
                };
                let files = SnapshotFiles {
                    processed: local(View::Processed),
                    daily: local(View::Daily),
                    snapshots: local(View::Snapshots),
                    raw: local(View::Raw),
                    quarantine: local(View::Quarantine),
                    allowed_directories: Vec::new(),
                    load_small_tables: true,
                };
                let db = tokio::task::spawn_blocking(move || Snapshot::build(&files, generation, &config))
                    .await
                    .expect("snapshot build panicked")?;
                Ok(Served { db, remote: None })
            }
            Some(cache) => {
                let cache = cache.clone();
                tokio::task::spawn_blocking(move || {
                    let layout = cache.sync(&objects)?;
                    let mut db = Snapshot::build(&layout.real, generation, &config)?;
                    db.partitions = layout.rels.get(&View::Processed).map_or(0, Vec::len);
                    let probe_config =
                        EngineConfig { threads: Some(1), memory_limit: PROBE_MEMORY_LIMIT.into(), log_file_access: true, ..config };
                    let probe = Snapshot::build(&layout.probe, generation, &probe_config)?;
                    Ok(Served { db, remote: Some(Remote { probe, logs: tokio::sync::RwLock::new(()), probes: AtomicU64::new(0) }) })
                })
                .await
                .expect("snapshot build panicked")
            }
        }
    }

    /// The snapshot to run the next query on: the current one, rebuilt first if the lake changed
    /// and it was last looked at more than `refresh` ago. While another query is looking, this one
    /// uses the current snapshot rather than wait.
    pub async fn snapshot(&self) -> Arc<Served> {
        if let Ok(mut look) = self.look.try_lock()
            && look.at.elapsed() >= self.refresh
        {
            let looked = self.rebuild_if_changed(&mut look).await;
            self.log_stats("a look");
            match looked {
                Ok(()) => look.at = Instant::now(),
                // Keep serving the last good state; the next query tries again.
                Err(e) => {
                    tracing::warn!("cannot refresh the served lake, still serving the previous state: {}", crate::report::one_line(&e))
                }
            }
        }
        self.current.read().expect("snapshot lock").clone()
    }

    /// Look at the lake now (waiting for a look in progress), rebuilding if it changed: for a
    /// query that found a file of its snapshot gone (a partition read from a run's staging area
    /// until it was published, then cleaned up).
    pub async fn refresh_now(&self) {
        let mut look = self.look.lock().await;
        match self.rebuild_if_changed(&mut look).await {
            Ok(()) => look.at = Instant::now(),
            Err(e) => tracing::warn!("cannot refresh the served lake: {}", crate::report::one_line(&e)),
        }
    }

    async fn rebuild_if_changed(&self, look: &mut Look) -> Result<(), ServeError> {
        if let Some(version) = &look.manifest_version
            && self.lake.get_if_changed(MANIFEST_KEY, version).await? == crate::lake::IfChanged::NotModified
        {
            return Ok(());
        }
        let manifest = Manifest::load_all(&self.lake).await?;
        if manifest.read_version.is_none() && look.manifest_version.is_none() {
            return Ok(());
        }
        let generation = self.generation.fetch_add(1, Ordering::SeqCst) + 1;
        let served = Self::build(&self.lake, self.cache.as_ref(), &self.config, &manifest, generation).await?;
        tracing::info!(generation, partitions = served.db.partitions, "the lake changed; serving its new committed state");
        *self.current.write().expect("snapshot lock") = Arc::new(served);
        look.manifest_version = manifest.read_version;
        Ok(())
    }

    /// Make the files `sql` reads readable on `served` (a remote lake's are fetched and pinned
    /// until the returned pins drop; `everything`: all files of the views it names, after a
    /// query opened one the probe did not foresee). Nothing to do for a local lake.
    pub async fn readable(
        &self,
        served: &Served,
        sql: &str,
        params: &[Value],
        everything: bool,
        control: &QueryControl,
    ) -> Result<Option<Pins>, ServeError> {
        let (Some(cache), Some(remote)) = (&self.cache, &served.remote) else { return Ok(None) };
        let mut rels = Vec::new();
        for view in views_named(sql) {
            // Hive-partitioned views: only the dates left after DuckDB prunes.
            if view.is_partitioned() && !everything {
                rels.extend(self.probe(cache, remote, sql, params, control).await?);
            } else {
                rels.extend(cache.view_rels(view));
            }
        }
        let pins = cache.pin_and_fetch(rels).await;
        self.log_stats("a fetch");
        Ok(Some(pins?))
    }

    /// Run `sql` on the probe database and return the files it opened (cache-relative paths).
    async fn probe(
        &self,
        cache: &Arc<Cache>,
        remote: &Remote,
        sql: &str,
        params: &[Value],
        control: &QueryControl,
    ) -> Result<Vec<String>, ServeError> {
        let conn = remote.probe.connect()?;
        let handle = conn.conn.interrupt_handle();
        control.attach(Arc::new(move || handle.interrupt()));
        let (sql, params) = (sql.to_owned(), params.to_vec());
        let logs = remote.logs.read().await;
        let opened = tokio::task::spawn_blocking(move || -> Result<Vec<String>, duckdb::Error> {
            let id: u64 = conn.conn.query_row("SELECT current_connection_id()", [], |r| r.get(0))?;
            {
                let mut stmt = conn.conn.prepare(&sql)?;
                let stream = stmt.stream_arrow(duckdb::params_from_iter(params))?;
                for batch in stream {
                    batch?;
                }
            }
            let mut stmt = conn.conn.prepare("SELECT message FROM duckdb_logs WHERE type = 'FileSystem' AND connection_id = ?")?;
            let messages = stmt.query_map([id], |r| r.get::<_, String>(0))?.collect::<Result<Vec<_>, _>>()?;
            Ok(messages
                .iter()
                .filter_map(|m| serde_json::from_str::<serde_json::Value>(m).ok())
                .filter(|m| m["op"] == "OPEN")
                .filter_map(|m| m["path"].as_str().map(str::to_owned))
                .collect())
        })
        .await
        .expect("probe panicked")
        // The query fails on the probe as it would for real: let the real run report it.
        .unwrap_or_default();
        drop(logs);
        if remote.probes.fetch_add(1, Ordering::Relaxed) % PROBES_PER_LOG == PROBES_PER_LOG - 1 {
            let _all = remote.logs.write().await;
            if let Ok(conn) = remote.probe.connect() {
                let _ = tokio::task::spawn_blocking(move || conn.conn.execute_batch("CALL truncate_duckdb_logs()")).await;
            }
        }
        let mut rels: Vec<String> = opened.iter().filter_map(|p| cache.rel_of_stub(p)).collect();
        rels.sort();
        rels.dedup();
        Ok(rels)
    }

    /// What a remote lake's cache holds (None: a local lake).
    pub fn cache_stats(&self) -> Option<super::cache::CacheStats> {
        self.cache.as_ref().map(|c| c.stats())
    }

    /// Log the requests sent to the lake so far and what the cache holds (debug level: the
    /// figures of `./dev bench-serve-s3` and the S3 tests read these lines).
    pub fn log_stats(&self, after: &str) {
        let requests = self.lake.requests().unwrap_or(0);
        match self.cache_stats() {
            Some(c) => tracing::debug!(requests, files = c.files, bytes = c.bytes, downloads = c.downloads, "serve stats after {after}"),
            None => tracing::debug!(requests, "serve stats after {after}"),
        }
    }
}
