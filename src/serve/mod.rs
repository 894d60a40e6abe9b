//! `serve`: a read-only PostgreSQL wire-protocol endpoint over the lake, so Grafana's built-in
//! PostgreSQL datasource, psql, DBeaver, Metabase or any Postgres client query `processed`, `raw`
//! and `quarantine` with no plugin.
//!
//! - [`state`]: the committed state served (from the manifest) and its freshness;
//!   [`cache`]: a remote lake's files, fetched as queries need them.
//! - [`engine`]: one contained DuckDB database per committed state, the statement check;
//!   [`bound`]: a checked statement run as bound, with no second bind.
//! - [`compat`] (with [`sqltext`]): what PostgreSQL clients expect that DuckDB lacks: the
//!   `pg_catalog` they read, session statements, no host paths in answers.
//! - [`handler`] (with [`session`], [`encode`]): the pgwire handlers: authentication, the
//!   connection cap, simple and extended protocols, streamed results, cancel and timeout.
//! - [`tls`]: the certificate a client verifies; [`grafana`]: the provisioned dashboards.

pub mod bound;
pub mod cache;
pub mod compat;
pub mod encode;
pub mod engine;
pub mod grafana;
pub mod handler;
pub mod session;
pub mod sqltext;
pub mod state;
pub mod tls;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use pgwire::error::{ErrorInfo, PgWireError};
use tokio::net::TcpListener;

use crate::lake::{CommitError, Lake, LakeError};
pub use state::LakeState;

/// Default address: loopback only.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:5433";
/// Default DuckDB memory limit of a snapshot (`--memory-limit`).
pub const DEFAULT_MEMORY_LIMIT: &str = "1GB";
/// Default connection cap (PostgreSQL's `max_connections` default).
pub const DEFAULT_MAX_CONNECTIONS: usize = 100;
/// Default size of a remote lake's local cache.
pub const DEFAULT_CACHE_SIZE: &str = "4GB";
/// Default DuckDB threads per query (`--query-threads`; 0: one per core).
pub const DEFAULT_QUERY_THREADS: usize = 0;

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
    /// Only one of the certificate and its key was given.
    #[error("TLS needs both --tls-cert and --tls-key (TICKERLAKE_SERVE_TLS_CERT, TICKERLAKE_SERVE_TLS_KEY); {0} is missing")]
    TlsHalf(&'static str),
    /// The certificate or key cannot be used.
    #[error("TLS: {0}")]
    Tls(String),
    /// DuckDB does not understand the memory limit.
    #[error("--memory-limit {value:?} is not a size DuckDB understands (e.g. 512MB, 2GB): {reason}")]
    MemoryLimit {
        /// The value given.
        value: String,
        /// DuckDB's words.
        reason: String,
    },
    /// `--cache-size` is not a size.
    #[error("--cache-size {0:?} is not a size such as 512MB or 4GB")]
    CacheSize(String),
    /// One query needs more of a remote lake than the cache may hold.
    #[error(
        "this query reads {needed} bytes of the lake, more than --cache-size ({budget} bytes) allows; narrow its time range or raise --cache-size"
    )]
    CacheTooSmall {
        /// Bytes the query's files take.
        needed: u64,
        /// The cache's size.
        budget: u64,
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
            Self::OpenWithoutPassword(_)
            | Self::BadListen(_)
            | Self::Bind { .. }
            | Self::TlsHalf(_)
            | Self::Tls(_)
            | Self::MemoryLimit { .. }
            | Self::CacheSize(_) => true,
            Self::Lake(l) => l.is_permanent(),
            Self::Committed(c) => c.is_permanent(),
            _ => false,
        }
    }

    /// As a query's error: SQLSTATE 53000 (insufficient resources) for the cache, 58030 (I/O) for
    /// the lake, XX000 otherwise.
    pub fn into_pg(self) -> PgWireError {
        let code = match &self {
            Self::CacheTooSmall { .. } => "53000",
            Self::Lake(_) => "58030",
            _ => "XX000",
        };
        PgWireError::UserError(Box::new(ErrorInfo::new("ERROR".into(), code.into(), crate::report::one_line(&self))))
    }
}

/// Settings of `serve`.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Where to listen.
    pub listen: String,
    /// The password every client must give (SCRAM-SHA-256); none: any user connects.
    pub password: Option<String>,
    /// TLS certificate chain and key (PEM files).
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Longest a query may run before it is interrupted.
    pub query_timeout: Duration,
    /// How stale the served state may be: the lake is looked at again at most this often.
    pub refresh: Duration,
    /// DuckDB threads per snapshot (None: DuckDB's default, the core count).
    pub threads: Option<usize>,
    /// DuckDB memory limit per snapshot (DuckDB's syntax).
    pub memory_limit: String,
    /// Connections at once; more get SQLSTATE 53300.
    pub max_connections: usize,
    /// Bytes of a remote lake kept locally.
    pub cache_size: String,
}

/// The TLS paths from the two options, both or neither.
pub fn tls_paths(cert: Option<PathBuf>, key: Option<PathBuf>) -> Result<Option<(PathBuf, PathBuf)>, ServeError> {
    match (cert, key) {
        (Some(c), Some(k)) => Ok(Some((c, k))),
        (None, None) => Ok(None),
        (Some(_), None) => Err(ServeError::TlsHalf("--tls-key")),
        (None, Some(_)) => Err(ServeError::TlsHalf("--tls-cert")),
    }
}

/// A size such as `4GB`, `512MB`, `1.5GiB` or bytes, in bytes.
pub fn parse_size(s: &str) -> Option<u64> {
    let t = s.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (n, unit) = t.split_at(split);
    let n: f64 = n.parse().ok()?;
    let mult = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "kb" | "kib" | "k" => 1024.0,
        "mb" | "mib" | "m" => 1024.0 * 1024.0,
        "gb" | "gib" | "g" => 1024.0 * 1024.0 * 1024.0,
        "tb" | "tib" | "t" => 1024.0_f64.powi(4),
        _ => return None,
    };
    Some((n * mult) as u64)
}

/// Resolve and vet the listen address: non-loopback needs a password.
pub fn listen_addr(listen: &str, password: Option<&str>) -> Result<SocketAddr, ServeError> {
    let addr: SocketAddr = listen.parse().map_err(|_| ServeError::BadListen(listen.to_owned()))?;
    if !addr.ip().is_loopback() && password.is_none_or(str::is_empty) {
        return Err(ServeError::OpenWithoutPassword(addr));
    }
    Ok(addr)
}

/// The start-up warning for an address off the loopback without TLS (None: nothing to warn).
pub fn cleartext_warning(addr: SocketAddr, tls: bool) -> Option<String> {
    (!addr.ip().is_loopback() && !tls).then(|| {
        format!(
            "listening on {addr} without TLS: query results and the SCRAM exchange (enough for an offline guess at the password) cross the network in clear text; give --tls-cert and --tls-key (TICKERLAKE_SERVE_TLS_CERT, TICKERLAKE_SERVE_TLS_KEY) so clients can use sslmode=verify-full"
        )
    })
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
    let tls = opts.tls.as_ref().map(|(cert, key)| tls::acceptor(cert, key)).transpose()?;
    let cache_bytes = parse_size(&opts.cache_size).ok_or_else(|| ServeError::CacheSize(opts.cache_size.clone()))?;
    let state_opts =
        state::StateOptions { refresh: opts.refresh, threads: opts.threads, memory_limit: opts.memory_limit.clone(), cache_bytes };
    let state = Arc::new(LakeState::open(lake, &state_opts).await?);
    let listener = TcpListener::bind(addr).await.map_err(|source| ServeError::Bind { addr, source })?;
    let bound = listener.local_addr().map_err(|source| ServeError::Bind { addr, source })?;
    let shared = handler::Shared::new(state, opts.query_timeout, password.clone(), opts.max_connections);
    on_listening(bound);
    if let Some(w) = cleartext_warning(bound, tls.is_some()) {
        tracing::warn!("{w}");
    }
    tracing::info!(
        "PostgreSQL endpoint on {bound} ({}, {}); Ctrl-C stops it",
        if password.is_some() { "password required" } else { "no password: loopback clients only" },
        if tls.is_some() { "TLS offered" } else { "no TLS" }
    );
    // The cap: a connection past it is still answered, with SQLSTATE 53300 at its startup.
    let permits = Arc::new(tokio::sync::Semaphore::new(opts.max_connections));
    let mut connections = tokio::task::JoinSet::new();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((socket, peer)) => {
                    let _ = socket.set_nodelay(true);
                    let permit = permits.clone().try_acquire_owned().ok();
                    let handlers = shared.connection(permit.is_none());
                    let tls = tls.clone();
                    connections.spawn(async move {
                        let _permit = permit;
                        if let Err(e) = pgwire::tokio::process_socket(socket, tls, handlers).await {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_tls_pairs_and_the_cleartext_warning() {
        assert_eq!(parse_size("4GB"), Some(4 << 30));
        assert_eq!(parse_size("512 MB"), Some(512 << 20));
        assert_eq!(parse_size("1000"), Some(1000));
        assert_eq!(parse_size("lots"), None);
        assert!(matches!(tls_paths(Some("c".into()), None), Err(ServeError::TlsHalf("--tls-key"))));
        assert!(tls_paths(None, None).unwrap().is_none());
        assert!(cleartext_warning("127.0.0.1:5433".parse().unwrap(), false).is_none());
        assert!(cleartext_warning("0.0.0.0:5433".parse().unwrap(), true).is_none());
        let w = cleartext_warning("0.0.0.0:5433".parse().unwrap(), false).unwrap();
        assert!(w.contains("clear text") && w.contains("--tls-cert"), "{w}");
    }
}
