//! `serve`: a read-only PostgreSQL wire-protocol endpoint over the lake, so Grafana's built-in
//! PostgreSQL datasource, psql, DBeaver, Metabase or any Postgres client query `processed`, `raw`
//! and `quarantine` with no plugin.
//!
//! - [`engine`]: one contained DuckDB database per committed state of the lake, the statement
//!   check, PostgreSQL compatibility macros.
//! - [`grafana`]: the provisioned dashboards and alert rules, generated from `queries/`, and the
//!   datasources' macro expansion.
//! - [`handler`]: the pgwire handlers (simple and extended protocols, authentication) and the
//!   Arrow → PostgreSQL type mapping.
//!
//! Freshness: before a query, if the last look is older than `refresh`, the manifest and the raw
//! and quarantine listings are read again; a change builds a new snapshot beside the current one
//! and swaps it in (queries already running finish on the old one). Only what the manifest names
//! as committed is ever readable.

pub mod engine;
pub mod grafana;
pub mod handler;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::net::TcpListener;

use crate::lake::CommitError;
use crate::lake::manifest::Manifest;
use crate::lake::{Lake, LakeError, MANIFEST_KEY, QUARANTINE_PREFIX, RAW_PREFIX};
use engine::{Snapshot, SnapshotFiles};

/// Default address: loopback only.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:5433";

/// Why `serve` could not start or build a snapshot.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// A non-loopback address without a password.
    #[error(
        "refusing to listen on {0} without a password: anyone who can reach it could read the lake; set TICKERLAKE_SERVE_PASSWORD, or listen on 127.0.0.1"
    )]
    OpenWithoutPassword(SocketAddr),
    /// The address is not host:port.
    #[error("--listen {0:?} is not an address such as 127.0.0.1:5433")]
    BadListen(String),
    /// The port is taken or not ours.
    #[error("cannot listen on {addr}: {source}; pick another with --listen")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// Reading the lake failed.
    #[error("{0}")]
    Lake(#[from] LakeError),
    /// Reading the committed state failed (the manifest, or a file it names is gone).
    #[error("{0}")]
    Committed(#[from] CommitError),
    /// DuckDB failed while building a snapshot.
    #[error("DuckDB failed while preparing the lake for serving: {0}")]
    Engine(String),
}

impl ServeError {
    /// Whether a person must change a setting (exit status 3).
    pub fn is_permanent(&self) -> bool {
        match self {
            Self::OpenWithoutPassword(_) | Self::BadListen(_) | Self::Bind { .. } => true,
            Self::Lake(l) => l.is_permanent(),
            Self::Committed(c) => c.is_permanent(),
            _ => false,
        }
    }
}

/// Settings of `serve`.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Where to listen.
    pub listen: String,
    /// The password every client must give (SCRAM-SHA-256); none: any user connects.
    pub password: Option<String>,
    /// Longest a query may run before it is interrupted.
    pub query_timeout: Duration,
    /// How stale the served state may be: the lake is looked at again at most this often.
    pub refresh: Duration,
    /// DuckDB threads per snapshot (None: DuckDB's default, the core count).
    pub threads: Option<usize>,
}

/// The lake as served: the current snapshot and when the lake was last looked at.
pub struct LakeState {
    lake: Lake,
    current: std::sync::RwLock<Arc<Snapshot>>,
    look: tokio::sync::Mutex<Look>,
    refresh: Duration,
    threads: Option<usize>,
    generation: AtomicU64,
    /// Downloads of a remote lake's files, kept across snapshots (keyed by object version).
    cache: Option<tempfile::TempDir>,
}

struct Look {
    at: Instant,
    fingerprint: String,
}

/// What the lake holds now: the files of a snapshot and a fingerprint of them.
async fn survey(lake: &Lake) -> Result<(Vec<(String, String)>, Vec<(String, String)>, Vec<(String, String)>, String), ServeError> {
    let manifest_version = lake.get_versioned(MANIFEST_KEY).await?.map(|v| v.version).unwrap_or_default();
    let manifest = Manifest::load_all(lake).await?;
    let processed: Vec<(String, String)> = manifest.committed_partitions().into_iter().map(|p| (p.key, p.run_id)).collect();
    let listing = |prefix: &'static str, ext: &'static str| async move {
        Ok::<_, LakeError>(
            lake.list(prefix).await?.into_iter().filter(|o| o.key.ends_with(ext)).map(|o| (o.key, o.version)).collect::<Vec<_>>(),
        )
    };
    let raw = listing(RAW_PREFIX, ".csv").await?;
    // Quarantine files of committed raw files only (a crashed run may have left others).
    let committed_raw = manifest.quarantine_keys();
    let quarantine = listing(QUARANTINE_PREFIX, ".csv").await?.into_iter().filter(|(k, _)| committed_raw.contains(k)).collect::<Vec<_>>();
    let mut fp = format!("manifest={manifest_version};");
    for (k, v) in raw.iter().chain(&quarantine) {
        fp.push_str(k);
        fp.push('@');
        fp.push_str(v);
        fp.push(';');
    }
    Ok((processed, raw, quarantine, fp))
}

impl LakeState {
    /// Look at the lake and build the first snapshot.
    pub async fn open(lake: Lake, refresh: Duration, threads: Option<usize>) -> Result<Self, ServeError> {
        let cache = if lake.local_path(MANIFEST_KEY).is_none() {
            Some(
                tempfile::Builder::new()
                    .prefix("tickerlake-serve-")
                    .tempdir()
                    .map_err(|e| LakeError::io("cannot create a download directory", e))?,
            )
        } else {
            None
        };
        let (files, fingerprint) = Self::files(&lake, cache.as_ref()).await?;
        let threads_ = threads;
        let first = tokio::task::spawn_blocking(move || Snapshot::build(&files, 1, threads_)).await.expect("snapshot build panicked")?;
        tracing::info!(partitions = first.partitions, "serving {}", lake.describe());
        Ok(Self {
            lake,
            current: std::sync::RwLock::new(Arc::new(first)),
            look: tokio::sync::Mutex::new(Look { at: Instant::now(), fingerprint }),
            refresh,
            threads,
            generation: AtomicU64::new(1),
            cache,
        })
    }

    /// Local paths of everything a snapshot reads (remote objects downloaded once per version).
    async fn files(lake: &Lake, cache: Option<&tempfile::TempDir>) -> Result<(SnapshotFiles, String), ServeError> {
        let (processed, raw, quarantine, fingerprint) = survey(lake).await?;
        let mut files = SnapshotFiles::default();
        let local = |key: &str| lake.local_path(key).map(|p| p.to_string_lossy().into_owned());
        match cache {
            None => {
                files.processed = processed.iter().filter_map(|(k, _)| local(k)).collect();
                files.raw = raw.iter().filter_map(|(k, _)| local(k)).collect();
                files.quarantine = quarantine.iter().filter_map(|(k, _)| local(k)).collect();
            }
            Some(dir) => {
                let fetch = |list: Vec<(String, String)>| async move {
                    use futures::{StreamExt, TryStreamExt};
                    futures::stream::iter(list.into_iter().map(|(key, version)| async move {
                        // One directory per object version keeps hive `date=` paths and never
                        // overwrites a file an older snapshot may still be reading.
                        let tag: String = version.chars().filter(char::is_ascii_alphanumeric).take(40).collect();
                        let path: PathBuf = dir.path().join(format!("v{tag}")).join(&key);
                        if !path.exists() {
                            std::fs::create_dir_all(path.parent().expect("keys have a parent"))
                                .map_err(|e| LakeError::io(format!("cannot create {}", path.display()), e))?;
                            let part = path.with_extension("partial");
                            lake.get_to_file(&key, &part).await?;
                            std::fs::rename(&part, &path).map_err(|e| LakeError::io(format!("cannot write {}", path.display()), e))?;
                        }
                        Ok::<_, LakeError>(path.to_string_lossy().into_owned())
                    }))
                    .buffered(crate::lake::IO_CONCURRENCY)
                    .try_collect::<Vec<_>>()
                    .await
                };
                files.processed = fetch(processed).await?;
                files.raw = fetch(raw).await?;
                files.quarantine = fetch(quarantine).await?;
            }
        }
        Ok((files, fingerprint))
    }

    /// The snapshot to run the next query on: the current one, rebuilt first if the lake changed
    /// and it was last looked at more than `refresh` ago. While another query is looking, this one
    /// uses the current snapshot rather than wait.
    pub async fn snapshot(&self) -> Arc<Snapshot> {
        if let Ok(mut look) = self.look.try_lock()
            && look.at.elapsed() >= self.refresh
        {
            match self.rebuild_if_changed(&mut look).await {
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
        let (files, fingerprint) = Self::files(&self.lake, self.cache.as_ref()).await?;
        if fingerprint == look.fingerprint {
            return Ok(());
        }
        let generation = self.generation.fetch_add(1, Ordering::SeqCst) + 1;
        let threads = self.threads;
        let snap =
            tokio::task::spawn_blocking(move || Snapshot::build(&files, generation, threads)).await.expect("snapshot build panicked")?;
        tracing::info!(generation, partitions = snap.partitions, "the lake changed; serving its new committed state");
        *self.current.write().expect("snapshot lock") = Arc::new(snap);
        look.fingerprint = fingerprint;
        Ok(())
    }
}

/// Resolve and vet the listen address: non-loopback needs a password.
pub fn listen_addr(listen: &str, password: Option<&str>) -> Result<SocketAddr, ServeError> {
    let addr: SocketAddr = listen.parse().map_err(|_| ServeError::BadListen(listen.to_owned()))?;
    if !addr.ip().is_loopback() && password.is_none_or(str::is_empty) {
        return Err(ServeError::OpenWithoutPassword(addr));
    }
    Ok(addr)
}

/// Run the endpoint until `stop` resolves; `on_listening` is told the bound address.
pub async fn serve(
    lake: Lake,
    opts: &ServeOptions,
    stop: impl std::future::Future<Output = ()>,
    on_listening: impl FnOnce(SocketAddr),
) -> Result<(), ServeError> {
    let password = opts.password.clone().filter(|p| !p.is_empty());
    let addr = listen_addr(&opts.listen, password.as_deref())?;
    let state = Arc::new(LakeState::open(lake, opts.refresh, opts.threads).await?);
    let listener = TcpListener::bind(addr).await.map_err(|source| ServeError::Bind { addr, source })?;
    let bound = listener.local_addr().map_err(|source| ServeError::Bind { addr, source })?;
    let handlers = Arc::new(handler::Handlers::new(state, opts.query_timeout, password.clone()));
    on_listening(bound);
    tracing::info!(
        "PostgreSQL endpoint on {bound} ({}); Ctrl-C stops it",
        if password.is_some() { "password required" } else { "no password: loopback clients only" }
    );
    let mut connections = tokio::task::JoinSet::new();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((socket, peer)) => {
                    let _ = socket.set_nodelay(true);
                    let h = handlers.clone();
                    connections.spawn(async move {
                        if let Err(e) = pgwire::tokio::process_socket(socket, None, h).await {
                            tracing::debug!(%peer, "connection ended: {e}");
                        }
                    });
                }
                Err(e) => tracing::warn!("accept failed: {e}"),
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            () = &mut stop => break,
        }
    }
    // Stop: no new clients; open connections are closed and running queries interrupted.
    let open = connections.len();
    connections.shutdown().await;
    tracing::info!(closed = open, "stopped");
    Ok(())
}
