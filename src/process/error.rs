//! Typed errors of a `process` run. Each message is one line saying what to do; storage failures
//! stay [`LakeError`]s and commit failures [`CommitError`]s, as sources (so callers can tell a
//! permanent misconfiguration from a network blip).

use crate::lake::{CommitError, LakeError};

/// A failed `process` run. Whatever the variant, nothing was committed unless it says otherwise.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProcessError {
    /// The lake could not be read or written.
    #[error("{0}")]
    Lake(#[from] LakeError),
    /// The commit protocol failed (a lost race, a lost lease, an unreadable manifest).
    #[error("{0}")]
    Commit(#[from] CommitError),
    /// `--memory-limit` is not a size DuckDB accepts.
    #[error("--memory-limit {value:?} is not a size DuckDB accepts; use e.g. 256MB or 2GB")]
    MemoryLimit {
        /// The value given.
        value: String,
        /// DuckDB's complaint.
        #[source]
        source: duckdb::Error,
    },
    /// DuckDB failed.
    #[error("DuckDB failed while {doing}")]
    Engine {
        /// What the run was doing.
        doing: String,
        /// DuckDB's error.
        #[source]
        source: duckdb::Error,
    },
    /// A local file of the run's stage directory could not be read or written.
    #[error("{context}")]
    Io {
        /// What was being done.
        context: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// One chunk of raw files needs more memory than `--memory-limit` allows.
    #[error(
        "--memory-limit {limit} is too small for this lake's raw files (DuckDB ran out of memory); re-run with --memory-limit {suggestion}"
    )]
    OutOfMemory {
        /// The limit given.
        limit: String,
        /// A limit that should work.
        suggestion: String,
        /// DuckDB's error: kept for debugging, not a `source`, since this message replaces
        /// DuckDB's multi-line tuning advice in what a user reads.
        engine: duckdb::Error,
    },
    /// DuckDB wrote something the publish step cannot handle.
    #[error("{0}")]
    Layout(String),
}

impl ProcessError {
    /// An out-of-memory failure of DuckDB becomes [`ProcessError::OutOfMemory`] with a limit to try.
    pub(crate) fn with_memory_hint(self, limit: &str) -> Self {
        match self {
            Self::Engine { source, .. } if is_out_of_memory(&source) => {
                // Four times the limit, and never below the default, which holds a month of 3,000 symbols.
                let bytes = super::parse_size(limit).unwrap_or(256 << 20).saturating_mul(4).max(256 << 20);
                let suggestion =
                    if bytes >= 1 << 30 { format!("{}GB", bytes.div_ceil(1 << 30)) } else { format!("{}MB", bytes.div_ceil(1 << 20)) };
                Self::OutOfMemory { limit: limit.to_owned(), suggestion, engine: source }
            }
            other => other,
        }
    }
}

impl ProcessError {
    /// Whether retrying cannot help: a setting, a permission or the lake must be fixed first.
    pub fn is_permanent(&self) -> bool {
        match self {
            Self::Lake(e) => e.is_permanent(),
            Self::Commit(e) => e.is_permanent(),
            Self::MemoryLimit { .. } | Self::OutOfMemory { .. } => true,
            _ => false,
        }
    }
}

impl From<duckdb::Error> for ProcessError {
    fn from(source: duckdb::Error) -> Self {
        Self::Engine { doing: "running SQL".into(), source }
    }
}

impl From<std::io::Error> for ProcessError {
    fn from(source: std::io::Error) -> Self {
        Self::Io { context: "cannot use the run's stage directory".into(), source }
    }
}

/// Whether DuckDB failed for want of memory (under its `memory_limit`).
pub(crate) fn is_out_of_memory(e: &duckdb::Error) -> bool {
    e.to_string().contains("Out of Memory")
}

/// Attach what DuckDB was doing to a duckdb result.
pub(crate) trait EngineContext<T> {
    fn doing(self, what: impl Into<String>) -> Result<T, ProcessError>;
}

impl<T> EngineContext<T> for Result<T, duckdb::Error> {
    fn doing(self, what: impl Into<String>) -> Result<T, ProcessError> {
        self.map_err(|source| ProcessError::Engine { doing: what.into(), source })
    }
}

/// Shorthand for process results.
pub type ProcessResult<T> = Result<T, ProcessError>;
