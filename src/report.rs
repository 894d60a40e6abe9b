//! How failures read: one line per error, its contexts then its causes, down to the first
//! storage error. Whether an error is permanent is each error type's own say (an
//! `is_permanent` method beside the type, delegating to the errors it wraps); this module knows
//! only the storage error, so every module can report through it.

use std::error::Error;

use crate::lake::LakeError;

/// The error as one line: each context, then its cause, down to the first storage error (whose
/// message is complete; the SDK's transport details below it are noise to a user). Wrappers
/// that show their source's message (`#[error("{0}")]`) are not repeated.
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
        if !parts.last().is_some_and(|last| last.ends_with(&text)) {
            parts.push(text);
        }
        if e.is::<LakeError>() {
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
    fn wrapped_storage_errors_read_once() {
        #[derive(Debug, thiserror::Error)]
        enum Wrapper {
            #[error("{0}")]
            Lake(#[from] LakeError),
        }
        let denied = Wrapper::Lake(LakeError::AccessDenied { action: "s3:PutObject".into(), resource: "arn:aws:s3:::b/k".into() });
        assert_eq!(
            one_line(&denied),
            "access denied for s3:PutObject on arn:aws:s3:::b/k: grant the credentials s3:PutObject on that resource (and check the bucket policy)"
        );
    }

    #[test]
    fn duckdb_failures_keep_their_message_and_lose_the_code_noise() {
        #[derive(Debug, thiserror::Error)]
        #[error("DuckDB failed while running the query")]
        struct Engine(#[source] duckdb::Error);
        let conn = duckdb::Connection::open_in_memory().unwrap();
        let err = conn.prepare("SELEC 1").map(|_| ()).unwrap_err();
        assert!(err.source().is_some_and(|s| s.to_string() == "Error code 1: Unknown error code"), "duckdb-rs changed: {err:?}");
        assert_eq!(
            one_line(&Engine(err)),
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
