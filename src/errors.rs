//! How an error reaches the user: every cause, outermost first, joined by ": " (like anyhow's
//! `{:#}`), minus what only adds noise.

use std::fmt;

/// Displays an error chain for people. Use it wherever an error is printed or logged.
///
/// duckdb-rs gives every DuckDB failure DuckDB's message *and*, as the error's `source()`, an
/// `ffi::Error` whose Display is always "Error code 1: Unknown error code" (libduckdb-sys maps no
/// codes), so a plain `{:#}` ends every DuckDB error with that line. It is left out here, once for
/// every DuckDB error the binary prints. DuckDB's own message is kept, its `LINE n:` excerpt and
/// caret line included (without the blank line DuckDB puts before them).
pub struct Report<'a>(pub &'a anyhow::Error);

impl fmt::Display for Report<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for cause in self.0.chain() {
            if cause.is::<duckdb::ffi::Error>() {
                continue;
            }
            let text = cause.to_string();
            let text = match cause.is::<duckdb::Error>() {
                true => text.trim_end().replace("\n\n", "\n"),
                false => text,
            };
            if !first {
                f.write_str(": ")?;
            }
            f.write_str(&text)?;
            first = false;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::Report;
    use anyhow::Context;

    #[test]
    fn duckdb_failures_keep_their_message_and_lose_the_code_noise() {
        let conn = duckdb::Connection::open_in_memory().unwrap();
        let err = conn.prepare("SELEC 1").map(|_| ()).context("DuckDB rejected the query").unwrap_err();
        assert!(format!("{err:#}").ends_with(": Error code 1: Unknown error code"), "duckdb-rs changed: {err:#}");
        assert_eq!(
            Report(&err).to_string(),
            "DuckDB rejected the query: Parser Error: syntax error at or near \"SELEC\"\nLINE 1: SELEC 1\n        ^^^^^"
        );
        let plain = anyhow::anyhow!("no lake here").context("cannot open");
        assert_eq!(Report(&plain).to_string(), format!("{plain:#}"));
    }
}
