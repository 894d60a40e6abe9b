//! Binance's public data archive (`https://data.binance.vision`, `--archive-url`): the client that
//! fetches one symbol's hourly klines for a month or a day, checked before use.
//!
//! Layout (binance/binance-public-data): `data/spot/monthly/klines/<SYM>/1h/<SYM>-1h-YYYY-MM.zip`
//! for complete months, `data/spot/daily/klines/<SYM>/1h/<SYM>-1h-YYYY-MM-DD.zip` for days, each
//! beside a `.CHECKSUM` file holding `<sha256 hex>  <zip name>`. A zip holds one CSV of Binance's
//! 12 kline columns, normally without a header; open and close times are in milliseconds up to
//! 2024 and in microseconds from 2025-01-01 on, told apart here by magnitude.
//!
//! Policy: a missing checksum or zip (404) is `None`, for the caller to fall back on; a zip whose
//! SHA-256 does not match, or whose download broke off, is downloaded again (bounded, with
//! backoff), then fails with one line naming the file; 429 waits out `Retry-After` as the REST
//! client does; 5xx, timeouts and connection errors are retried; other answers fail at once.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use chrono::NaiveDate;
use reqwest::StatusCode;
use sha2::{Digest, Sha256};

use super::binance::{Kline, RetryPolicy, retry_after_secs};

/// Binance's archive.
pub const DEFAULT_ARCHIVE_URL: &str = "https://data.binance.vision";
/// Archive downloads in flight at once: the archive is static files behind a CDN, with no
/// request weight, so more than the REST API gets.
pub const ARCHIVE_CONCURRENCY: usize = 32;
/// Largest CSV accepted inside a zip: a month of 1h klines is about 100 KB; anything far larger
/// is not a file of this layout (and not inflated into memory).
const MAX_CSV_BYTES: u64 = 64 << 20;
const HOUR_MS: i64 = 3_600_000;
/// Open times at or above this are microseconds (2025 on); milliseconds stay below it until 5138.
const MICROS_THRESHOLD: i64 = 100_000_000_000_000;

/// The period one archive file covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ArchivePeriod {
    /// A calendar month, named by its first day.
    Month(NaiveDate),
    /// One UTC day.
    Day(NaiveDate),
}

impl ArchivePeriod {
    /// The zip's path under the archive's root, e.g. `data/spot/monthly/klines/BTCUSDT/1h/BTCUSDT-1h-2024-03.zip`.
    pub fn path(self, symbol: &str) -> String {
        match self {
            Self::Month(first) => format!("data/spot/monthly/klines/{symbol}/1h/{symbol}-1h-{}.zip", first.format("%Y-%m")),
            Self::Day(day) => format!("data/spot/daily/klines/{symbol}/1h/{symbol}-1h-{}.zip", day.format("%Y-%m-%d")),
        }
    }
}

/// A failed archive download; each message names the file and says what to do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
#[allow(missing_docs)] // the fields are the message's values
pub enum ArchiveError {
    #[error("--archive-url {0:?} must start with http:// or https:// (or be `none` for the REST API only)")]
    BadUrl(String),
    #[error(
        "{file} failed its SHA-256 check {attempts} times (the .CHECKSUM says {expected}, the download hashes to {got}); \
         the archive may be rewriting it: run the backfill again later, or with --archive-url none"
    )]
    Checksum { file: String, attempts: u32, expected: String, got: String },
    #[error("the download of {file} broke off {attempts} times (check the network, then run the backfill again: it resumes)")]
    Broken { file: String, attempts: u32, source: reqwest::Error },
    #[error(
        "cannot reach Binance's archive for {file} after {attempts} attempts (check --archive-url and the network, or use --archive-url none)"
    )]
    Unreachable { file: String, attempts: u32, source: reqwest::Error },
    #[error("Binance's archive answered HTTP {status} for {file} after {attempts} attempt(s): {body}")]
    Status { file: String, status: u16, attempts: u32, body: String },
    #[error(
        "Binance's archive rate limit (HTTP 429) asks to wait {retry_after} s for {file}, longer than the {max} s this run waits; try again later"
    )]
    RateLimitedTooLong { file: String, retry_after: u64, max: u64 },
    #[error("{file} is not a 1h kline file of Binance's archive ({detail}); nothing of it was used")]
    Malformed { file: String, detail: String },
    #[error("cannot set up the HTTP client for the archive: {0}")]
    HttpSetup(#[source] reqwest::Error),
}

impl ArchiveError {
    /// Failures that running again cannot fix (a person must change --archive-url).
    pub fn is_permanent(&self) -> bool {
        matches!(self, Self::BadUrl(_))
    }
}

/// An archive client; clones share its counters.
#[derive(Debug, Clone)]
pub struct ArchiveClient {
    http: reqwest::Client,
    base_url: String,
    policy: RetryPolicy,
    requests: Arc<AtomicU64>,
    bytes: Arc<AtomicU64>,
}

/// One verified archive file's klines.
#[derive(Debug)]
pub struct ArchiveFile {
    /// Its klines, in file order, open times normalised to milliseconds.
    pub klines: Vec<Kline>,
}

impl ArchiveClient {
    /// A client for the archive at `base_url` (`http://` or `https://`).
    pub fn new(base_url: &str, policy: RetryPolicy) -> Result<Self, ArchiveError> {
        let base_url = base_url.trim_end_matches('/').to_owned();
        if !(base_url.starts_with("http://") || base_url.starts_with("https://")) {
            return Err(ArchiveError::BadUrl(base_url));
        }
        let http = reqwest::Client::builder()
            .timeout(policy.timeout)
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("tickerlake/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(ArchiveError::HttpSetup)?;
        Ok(Self { http, base_url, policy, requests: Arc::new(AtomicU64::new(0)), bytes: Arc::new(AtomicU64::new(0)) })
    }

    /// The archive's base URL.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// HTTP requests sent so far (retries and 404s included).
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Bytes of answers received so far.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// `symbol`'s hourly klines for `period`, checked against the `.CHECKSUM`; `None` when the
    /// archive does not have the file (not published, or never: no trading then).
    pub async fn fetch(&self, symbol: &str, period: ArchivePeriod) -> Result<Option<ArchiveFile>, ArchiveError> {
        let path = period.path(symbol);
        let url = format!("{}/{path}", self.base_url);
        let name = path.rsplit('/').next().expect("a path has a file name").to_owned();
        let Some(sum) = self.get(&format!("{url}.CHECKSUM"), &format!("{path}.CHECKSUM")).await? else {
            return Ok(None);
        };
        let expected = parse_checksum(&String::from_utf8_lossy(&sum), &name)
            .map_err(|detail| ArchiveError::Malformed { file: format!("{path}.CHECKSUM"), detail })?;
        let mut attempt = 0;
        let zip = loop {
            attempt += 1;
            let Some(zip) = self.get(&url, &path).await? else {
                tracing::debug!("{path}: the .CHECKSUM is published but the zip is not (yet); treated as missing");
                return Ok(None);
            };
            let got = format!("{:x}", Sha256::digest(&zip));
            if got == expected {
                break zip;
            }
            if attempt >= self.policy.max_attempts {
                return Err(ArchiveError::Checksum { file: path, attempts: attempt, expected, got });
            }
            let delay = self.policy.backoff(attempt);
            tracing::warn!(attempt, ?delay, "{path} does not match its .CHECKSUM; downloading it again");
            tokio::time::sleep(delay).await;
        };
        // Inflating and parsing is CPU work: on the blocking pool, not the runtime's workers.
        let klines = tokio::task::spawn_blocking(move || unzip_klines(&zip))
            .await
            .expect("parsing a zip does not panic")
            .map_err(|detail| ArchiveError::Malformed { file: path, detail })?;
        Ok(Some(ArchiveFile { klines }))
    }

    /// GET `url` (naming it `file` in errors) with the retry policy: `None` on 404.
    async fn get(&self, url: &str, file: &str) -> Result<Option<Bytes>, ArchiveError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let last = attempt >= self.policy.max_attempts;
            self.requests.fetch_add(1, Ordering::Relaxed);
            let response = match self.http.get(url).send().await {
                Ok(r) => r,
                Err(e) if last => return Err(ArchiveError::Unreachable { file: file.into(), attempts: attempt, source: e }),
                Err(e) => {
                    let delay = self.policy.backoff(attempt);
                    tracing::warn!(attempt, ?delay, "archive request for {file} failed ({e}); retrying");
                    tokio::time::sleep(delay).await;
                    continue;
                }
            };
            let status = response.status();
            if status.is_success() {
                match response.bytes().await {
                    Ok(b) => {
                        self.bytes.fetch_add(b.len() as u64, Ordering::Relaxed);
                        return Ok(Some(b));
                    }
                    Err(e) if last => return Err(ArchiveError::Broken { file: file.into(), attempts: attempt, source: e }),
                    Err(e) => {
                        let delay = self.policy.backoff(attempt);
                        tracing::warn!(attempt, ?delay, "the download of {file} broke off ({e}); downloading it again");
                        tokio::time::sleep(delay).await;
                        continue;
                    }
                }
            }
            if status == StatusCode::NOT_FOUND {
                return Ok(None);
            }
            let retry_after = retry_after_secs(&response);
            let body = snippet(response.text().await.unwrap_or_default());
            match status {
                StatusCode::TOO_MANY_REQUESTS => {
                    let wait = retry_after.unwrap_or(self.policy.base_delay.as_secs().max(1));
                    if wait > self.policy.max_retry_after.as_secs() {
                        return Err(ArchiveError::RateLimitedTooLong {
                            file: file.into(),
                            retry_after: wait,
                            max: self.policy.max_retry_after.as_secs(),
                        });
                    }
                    if last {
                        return Err(ArchiveError::Status { file: file.into(), status: 429, attempts: attempt, body });
                    }
                    tracing::warn!(attempt, wait_secs = wait, "Binance's archive is rate limiting (HTTP 429); waiting as Retry-After asks");
                    tokio::time::sleep(Duration::from_secs(wait)).await;
                }
                s if s.is_server_error() && !last => {
                    let delay = self.policy.backoff(attempt);
                    tracing::warn!(attempt, status = s.as_u16(), ?delay, "Binance's archive failed for {file}; retrying");
                    tokio::time::sleep(delay).await;
                }
                s => return Err(ArchiveError::Status { file: file.into(), status: s.as_u16(), attempts: attempt, body }),
            }
        }
    }
}

fn snippet(body: String) -> String {
    let body = body.trim();
    match body.char_indices().nth(200) {
        Some((cut, _)) => format!("{}…", &body[..cut]),
        None => body.to_owned(),
    }
}

/// The hex SHA-256 a `.CHECKSUM` gives for `name` (`<hex>  <name>`, as `sha256sum` writes it).
pub fn parse_checksum(text: &str, name: &str) -> Result<String, String> {
    let mut parts = text.split_whitespace();
    let (Some(hex), Some(named)) = (parts.next(), parts.next()) else {
        return Err(format!("expected `<sha256>  {name}`, found {:?}", snippet(text.to_owned())));
    };
    // sha256sum marks binary mode with a `*` before the name.
    if named.trim_start_matches('*') != name {
        return Err(format!("it is the checksum of {named}, not of {name}"));
    }
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!("{hex:?} is not a SHA-256 in hex"));
    }
    Ok(hex.to_ascii_lowercase())
}

/// The klines of the one CSV inside an archive zip.
pub fn unzip_klines(zip: &[u8]) -> Result<Vec<Kline>, String> {
    use std::io::Read;
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(zip)).map_err(|e| format!("not a readable zip: {e}"))?;
    let index = (0..archive.len())
        .find(|&i| archive.name_for_index(i).and_then(Result::ok).is_some_and(|n| n.to_ascii_lowercase().ends_with(".csv")))
        .ok_or_else(|| "the zip holds no .csv file".to_owned())?;
    let entry = archive.by_index(index).map_err(|e| format!("cannot open its CSV: {e}"))?;
    if entry.size() > MAX_CSV_BYTES {
        return Err(format!("its CSV would inflate to {} bytes", entry.size()));
    }
    let mut text = String::with_capacity(entry.size() as usize);
    entry.take(MAX_CSV_BYTES).read_to_string(&mut text).map_err(|e| format!("cannot inflate its CSV: {e}"))?;
    parse_klines(&text)
}

/// Klines from the archive's CSV: 12 columns, an optional header line, times in ms or µs.
pub fn parse_klines(text: &str) -> Result<Vec<Kline>, String> {
    let mut out = Vec::with_capacity(text.len() / 120);
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let mut fields = [""; 12];
        let mut count = 0;
        for f in line.split(',') {
            if count < 12 {
                fields[count] = f.trim();
            }
            count += 1;
        }
        if count != 12 {
            return Err(format!("line {} has {count} columns, not 12", n + 1));
        }
        let open: i64 = match fields[0].parse() {
            Ok(t) => t,
            Err(_) if n == 0 => continue, // a header line
            Err(_) => return Err(format!("line {}: open time {:?} is not a number", n + 1, fields[0])),
        };
        let open_ms = if open >= MICROS_THRESHOLD { open / 1000 } else { open };
        if open_ms.rem_euclid(HOUR_MS) != 0 {
            return Err(format!("line {}: open time {open} is not on the hour", n + 1));
        }
        let close = fields[4];
        if close.is_empty() || !close.parse::<f64>().is_ok_and(f64::is_finite) {
            return Err(format!("line {}: close {close:?} is not a price", n + 1));
        }
        out.push(Kline { open_ms, close: close.into() });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn milliseconds_and_microseconds_both_become_milliseconds() {
        let csv = "1735686000000,1.0,1.1,0.9,1.05000000,10,1735689599999,10,1,5,5,0\n\
                   1735689600000000,1.05,1.1,0.9,1.06000000,10,1735693199999999,10,1,5,5,0\r\n";
        let k = parse_klines(csv).unwrap();
        assert_eq!(k.iter().map(|k| k.open_ms).collect::<Vec<_>>(), [1_735_686_000_000, 1_735_689_600_000]);
        assert_eq!(&*k[0].close, "1.05000000", "the close text is kept as written");
    }

    #[test]
    fn a_header_line_is_skipped_and_bad_lines_are_named() {
        let csv = "open_time,open,high,low,close,volume,close_time,quote_volume,count,taker_buy_volume,taker_buy_quote_volume,ignore\n\
                   1735686000000,1.0,1.1,0.9,1.05,10,1735689599999,10,1,5,5,0\n";
        assert_eq!(parse_klines(csv).unwrap().len(), 1);
        assert_eq!(parse_klines("1735686000000,1.0,1.1\n").unwrap_err(), "line 1 has 3 columns, not 12");
        assert!(parse_klines("1735686000001,1,1,1,1,1,1,1,1,1,1,0\n").unwrap_err().contains("not on the hour"));
        assert!(parse_klines("1735686000000,1,1,1,x,1,1,1,1,1,1,0\n").unwrap_err().contains("close \"x\""));
        let late_header = "1735686000000,1,1,1,1,1,1,1,1,1,1,0\nopen_time,o,h,l,c,v,ct,q,n,tb,tq,i\n";
        assert!(parse_klines(late_header).unwrap_err().starts_with("line 2: open time"));
    }

    #[test]
    fn checksums_must_name_the_file_and_be_sha256() {
        let hex = "a".repeat(64);
        assert_eq!(parse_checksum(&format!("{hex}  X-1h-2024-01.zip\n"), "X-1h-2024-01.zip").unwrap(), hex);
        assert_eq!(parse_checksum(&format!("{}  *X.zip", "A".repeat(64)), "X.zip").unwrap(), hex);
        assert!(parse_checksum(&format!("{hex}  Y.zip"), "X.zip").unwrap_err().contains("not of X.zip"));
        assert!(parse_checksum("abc  X.zip", "X.zip").unwrap_err().contains("not a SHA-256"));
        assert!(parse_checksum("", "X.zip").is_err());
    }

    #[test]
    fn paths_follow_the_archive_layout() {
        let m = ArchivePeriod::Month(NaiveDate::from_ymd_opt(2024, 3, 1).unwrap());
        assert_eq!(m.path("BTCUSDT"), "data/spot/monthly/klines/BTCUSDT/1h/BTCUSDT-1h-2024-03.zip");
        let d = ArchivePeriod::Day(NaiveDate::from_ymd_opt(2025, 1, 2).unwrap());
        assert_eq!(d.path("ETHUSDT"), "data/spot/daily/klines/ETHUSDT/1h/ETHUSDT-1h-2025-01-02.zip");
    }
}
