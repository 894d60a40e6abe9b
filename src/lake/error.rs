//! Typed storage errors. Every message is one line that says what is wrong and what to do; the
//! underlying error is kept as the source. Callers branch on the variant (the hourly service
//! retries [`LakeError::is_permanent`] failures never, and everything else with backoff).

use super::MANIFEST_KEY;

/// The boxed cause of an error, kept for `-v` diagnostics and `source()` chains.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A failure of a lake operation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LakeError {
    /// The endpoint did not answer (connection refused, DNS, TLS, reset).
    #[error("cannot reach the S3 endpoint {endpoint}: is it running and is --endpoint-url right?")]
    Unreachable {
        /// The endpoint that was tried.
        endpoint: String,
        /// What the HTTP client reported.
        #[source]
        source: BoxError,
    },
    /// The endpoint answered too slowly, every attempt.
    #[error("the S3 endpoint {endpoint} timed out; check the network or retry later")]
    Timeout {
        /// The endpoint that was tried.
        endpoint: String,
    },
    /// The default credential chain found nothing.
    #[error("no AWS credentials found: set AWS_PROFILE, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or run with an instance/task role")]
    NoCredentials,
    /// Credentials exist but the service rejected them.
    #[error("the AWS credentials were rejected (unknown key or wrong secret): check AWS_PROFILE / AWS_ACCESS_KEY_ID")]
    BadCredentials,
    /// No region in the environment or profile.
    #[error("no AWS region set: set AWS_REGION (or a profile's region), e.g. AWS_REGION=us-east-1")]
    NoRegion,
    /// The lake's bucket does not exist.
    #[error("bucket {bucket:?} does not exist at {endpoint}; create it with `tickerlake init`")]
    BucketMissing {
        /// The bucket named by `--lake`.
        bucket: String,
        /// Where it was looked for.
        endpoint: String,
    },
    /// The credentials lack a permission.
    #[error("access denied for {action} on {resource}: grant the credentials {action} on that resource (and check the bucket policy)")]
    AccessDenied {
        /// The IAM action that was refused, e.g. `s3:PutObject`.
        action: String,
        /// The ARN it was refused on.
        resource: String,
    },
    /// The bucket lives in another region than the client's.
    #[error("bucket {bucket:?} is in {}: set AWS_REGION{}", region.as_deref().unwrap_or("another region"), region.as_deref().map(|r| format!("={r}")).unwrap_or_else(|| " to the bucket's region".into()))]
    WrongRegion {
        /// The bucket.
        bucket: String,
        /// Its region, when the service said.
        region: Option<String>,
    },
    /// A conditional write found the object changed since it was read (another writer won).
    #[error("{key} was changed by another writer since this run read it")]
    Conflict {
        /// The key whose precondition failed.
        key: String,
    },
    /// The object does not exist (a copy's source, a file a reader was told to read).
    #[error("{key} does not exist in the lake")]
    NotFound {
        /// The missing key.
        key: String,
    },
    /// Another run holds the writer lease.
    #[error("another tickerlake run is writing to {lake} ({holder}); wait for it to finish, then re-run")]
    Locked {
        /// The lake.
        lake: String,
        /// Who holds it, and until when for leases.
        holder: String,
    },
    /// The location given as `--lake` cannot be a lake.
    #[error("{0}")]
    Location(String),
    /// A local filesystem operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done, with the path.
        context: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Any other service answer, with its code and message.
    #[error("S3 {action} on {resource} failed ({code}{status}): {detail}")]
    Service {
        /// The IAM action of the request.
        action: String,
        /// The object or bucket.
        resource: String,
        /// The service's error code, or "no error code".
        code: String,
        /// ", HTTP nnn" when known.
        status: String,
        /// The service's message.
        detail: String,
    },
}

impl LakeError {
    /// Failures that retrying cannot fix: a person must change configuration or permissions.
    pub fn is_permanent(&self) -> bool {
        matches!(
            self,
            Self::NoCredentials
                | Self::BadCredentials
                | Self::NoRegion
                | Self::BucketMissing { .. }
                | Self::AccessDenied { .. }
                | Self::WrongRegion { .. }
                | Self::Location(_)
        )
    }

    /// An I/O error with what was being done.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io { context: context.into(), source }
    }
}

/// Shorthand for lake results.
pub type LakeResult<T> = Result<T, LakeError>;

/// Attach "what was being done" to an `io::Result`.
pub(crate) trait IoContext<T> {
    fn io_context(self, context: impl FnOnce() -> String) -> LakeResult<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn io_context(self, context: impl FnOnce() -> String) -> LakeResult<T> {
        self.map_err(|e| LakeError::io(context(), e))
    }
}

/// A failure of the commit protocol (`lake::commit`) or of reading the committed state
/// (`lake::manifest`). Whatever the variant, nothing was committed unless it says otherwise.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CommitError {
    /// The lake could not be read or written.
    #[error("{0}")]
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
    /// The lease expired and was taken over (or could not be renewed for its whole term) before
    /// this run could commit.
    #[error("this run lost its lease on {lake} (another run took it over, or it could not be renewed); it committed nothing — re-run")]
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
    /// A committed partition's file is gone (deleted by a lifecycle rule, a person, or a sweep
    /// on a host whose clock is off). Readers stop here rather than answer without its rows.
    #[error("the committed partition of {date} is missing from the lake ({key} is gone); `{repair}` rebuilds it from raw")]
    MissingPartition {
        /// Its date.
        date: String,
        /// The key the manifest names.
        key: String,
        /// The command that repairs it.
        repair: &'static str,
    },
}

impl CommitError {
    /// Whether retrying cannot help: a person must change a setting or repair the lake.
    pub fn is_permanent(&self) -> bool {
        match self {
            Self::Lake(e) => e.is_permanent(),
            Self::CorruptManifest { .. } | Self::ManifestFormat { .. } | Self::MissingPartition { .. } => true,
            Self::Conflict { .. } | Self::LeaseLost { .. } => false,
        }
    }
}

/// Shorthand for commit results.
pub type CommitResult<T> = Result<T, CommitError>;
