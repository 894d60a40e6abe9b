//! Typed errors of a `process` run. Each message is one line saying what to do; storage failures
//! stay [`LakeError`]s (so callers can tell a permanent misconfiguration from a network blip).

use crate::lake::{LakeError, MANIFEST_KEY};

/// A failed `process` run. Whatever the variant, nothing was committed unless it says otherwise.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProcessError {
    /// The lake could not be read or written.
    #[error(transparent)]
    Lake(#[from] LakeError),
    /// Another writer committed between this run's read of the manifest and its commit.
    #[error(
        "another run committed to {lake} while this one worked; this run committed nothing (its staged files are removed) — \
         the next run processes what is left"
    )]
    Conflict {
        /// The lake.
        lake: String,
    },
    /// The lease expired and was taken over before this run could commit.
    #[error("this run lost its lease on {lake} (another run took it over); it committed nothing — re-run")]
    LeaseLost {
        /// The lake.
        lake: String,
    },
    /// The manifest is not valid JSON of the expected shape.
    #[error("{MANIFEST_KEY} in {lake} is corrupt; rebuild it with `tickerlake process --full`")]
    CorruptManifest {
        /// The lake.
        lake: String,
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },
    /// The manifest was written by an incompatible tickerlake.
    #[error("{MANIFEST_KEY} has format {found} but this tickerlake reads format {expected}; rebuild with `tickerlake process --full`")]
    ManifestFormat {
        /// Format found.
        found: u32,
        /// Format this build reads.
        expected: u32,
    },
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
        /// DuckDB's error.
        #[source]
        source: duckdb::Error,
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
                Self::OutOfMemory { limit: limit.to_owned(), suggestion, source }
            }
            other => other,
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

/// Attach what DuckDB was doing to a duckdb result.
/// Whether DuckDB failed for want of memory (under its `memory_limit`).
pub(crate) fn is_out_of_memory(e: &duckdb::Error) -> bool {
    e.to_string().contains("Out of Memory")
}

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
