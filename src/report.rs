//! How failures read and what they mean for the caller: one line per error, and whether
//! retrying can help. The one place that knows which error types wrap which.

use std::error::Error;

use crate::config::ConfigError;
use crate::lake::LakeError;
use crate::process::ProcessError;
use crate::service::TickError;
use crate::source::binance::BinanceError;
use crate::source::snapshot::CollectError;

/// The storage error an error is, or wraps transparently.
fn as_lake_error<'a>(e: &'a (dyn Error + 'static)) -> Option<&'a LakeError> {
    if let Some(l) = e.downcast_ref::<LakeError>() {
        return Some(l);
    }
    match (e.downcast_ref::<ProcessError>(), e.downcast_ref::<CollectError>(), e.downcast_ref::<TickError>()) {
        (Some(ProcessError::Lake(l)), _, _)
        | (_, Some(CollectError::Lake(l)), _)
        | (_, _, Some(TickError::Process(ProcessError::Lake(l)) | TickError::Collect(CollectError::Lake(l)))) => Some(l),
        _ => None,
    }
}

/// Whether this error, or one it wraps, is one that retrying cannot fix: credentials,
/// permissions, a missing bucket, a bad setting, a Binance ban or restriction.
pub fn is_permanent(err: &(dyn Error + 'static)) -> bool {
    let mut next = Some(err);
    while let Some(e) = next {
        let permanent = as_lake_error(e).is_some_and(LakeError::is_permanent)
            || e.downcast_ref::<ConfigError>().is_some()
            || e.downcast_ref::<BinanceError>().is_some_and(BinanceError::is_permanent)
            || e.downcast_ref::<CollectError>().is_some_and(|c| matches!(c, CollectError::Binance(b) if b.is_permanent()))
            || e.downcast_ref::<TickError>().is_some_and(TickError::is_permanent)
            || e.downcast_ref::<crate::catalog::CatalogError>().is_some_and(crate::catalog::CatalogError::is_permanent)
            || e.downcast_ref::<crate::query::athena::AthenaError>().is_some_and(crate::query::athena::AthenaError::is_permanent);
        if permanent {
            return true;
        }
        next = e.source();
    }
    false
}

/// The error as one line: each context, then its cause, down to the first storage error (whose
/// message is complete; the SDK's transport details below it are noise to a user).
pub fn one_line(err: &(dyn Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next = Some(err);
    while let Some(e) = next {
        // duckdb-rs gives every DuckDB failure, as its source, an `ffi::Error` whose text is always
        // "Error code 1: Unknown error code" (libduckdb-sys maps no codes): noise, left out.
        if e.is::<duckdb::ffi::Error>() {
            break;
        }
        let mut text = e.to_string();
        if e.is::<duckdb::Error>() || e.is::<Box<duckdb::Error>>() {
            // DuckDB's own message keeps its `LINE n:` excerpt and caret, without the blank line.
            text = text.trim_end().replace("\n\n", "\n");
        }
        // Transparent wrappers repeat their source's text.
        if !parts.last().is_some_and(|last| last.ends_with(&text)) {
            parts.push(text);
        }
        // Complete in themselves: a storage error (below it, transport details) and DuckDB running
        // out of memory (below it, DuckDB's multi-line tuning advice, which the message replaces).
        if as_lake_error(e).is_some() || matches!(e.downcast_ref::<ProcessError>(), Some(ProcessError::OutOfMemory { .. })) {
            break;
        }
        next = e.source();
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permanent_storage_errors_are_found_through_wrappers() {
        let denied = LakeError::AccessDenied { action: "s3:PutObject".into(), resource: "arn:aws:s3:::b/k".into() };
        let tick = TickError::Process(ProcessError::Lake(denied));
        assert!(is_permanent(&tick));
        assert!(one_line(&tick).starts_with("access denied for s3:PutObject"), "{}", one_line(&tick));
        let blip = TickError::Process(ProcessError::Lake(LakeError::Timeout { endpoint: "http://x".into() }));
        assert!(!is_permanent(&blip));
        assert!(!is_permanent(&ProcessError::Conflict { lake: "l".into() }));
    }

    #[test]
    fn duckdb_failures_keep_their_message_and_lose_the_code_noise() {
        let conn = duckdb::Connection::open_in_memory().unwrap();
        let err = conn.prepare("SELEC 1").map(|_| ()).unwrap_err();
        assert!(err.source().is_some_and(|s| s.to_string() == "Error code 1: Unknown error code"), "duckdb-rs changed: {err:?}");
        let wrapped = ProcessError::Engine { doing: "running the query".into(), source: err };
        assert_eq!(
            one_line(&wrapped),
            "DuckDB failed while running the query: Parser Error: syntax error at or near \"SELEC\"\nLINE 1: SELEC 1\n        ^^^^^"
        );
    }

    #[test]
    fn one_line_keeps_causes_but_not_transport_noise() {
        let io = std::io::Error::other("connection refused (os error 111)");
        let unreachable = LakeError::Unreachable { endpoint: "http://127.0.0.1:9".into(), source: Box::new(io) };
        assert_eq!(one_line(&unreachable), "cannot reach the S3 endpoint http://127.0.0.1:9: is it running and is --endpoint-url right?");
        let local = LakeError::io("cannot read /x", std::io::Error::other("permission denied"));
        assert_eq!(one_line(&local), "cannot read /x: permission denied");
    }
}
