//! Binance spot REST client: `GET /api/v3/ticker/price` (all symbols, request weight 4), plus
//! `exchangeInfo` and `klines` (paged, any length back) for backfills.
//!
//! Every request spends weight from a shared [`WeightBudget`] (paced by Binance's
//! `X-MBX-USED-WEIGHT-*` header) and holds one of a few permits, so concurrent callers are
//! bounded however many of them there are.
//!
//! Failure policy, from Binance's rules for the REST API:
//! - 429 (rate limit): wait `Retry-After`, then retry, a bounded number of times; a wait longer
//!   than the configured maximum fails instead of blocking the run.
//! - 418 (IP auto-banned for ignoring 429s): never retried; retrying extends the ban.
//! - 451 (restricted location): never retried; the error names the endpoints that serve it.
//! - 5xx, timeouts, connection errors: bounded retries with exponential backoff and jitter.
//! - malformed JSON or an empty list: an error, so nothing gets written.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rand::Rng;
use reqwest::StatusCode;
use serde::Deserialize;
use serde::de::IgnoredAny;

use super::weight::WeightBudget;

/// Binance's main REST endpoint.
pub const DEFAULT_BASE_URL: &str = "https://api.binance.com";

/// One entry of `/api/v3/ticker/price`. The price stays the exact string Binance sent.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct TickerPrice {
    /// The trading pair, e.g. `BTCUSDT`.
    pub symbol: String,
    /// The last price, as sent.
    pub price: String,
}

/// One hourly kline as a backfill needs it: when it opened, and its close as Binance wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kline {
    /// Open time, milliseconds since the epoch (on the hour).
    pub open_ms: i64,
    /// The close price, as sent (text unchanged).
    pub close: Box<str>,
}

/// A pair listed in `exchangeInfo`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SymbolInfo {
    /// The pair, e.g. `BTCUSDT`.
    pub symbol: String,
    /// Its trading status: `TRADING`, `BREAK` (halted or delisted), …
    pub status: String,
}

/// REST requests in flight at once per client: enough to hide latency, few enough to be polite.
pub const REST_CONCURRENCY: usize = 8;
/// Most klines Binance returns per request.
const KLINES_PAGE: usize = 1000;
const HOUR_MS: i64 = 3_600_000;

/// How the client retries.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Attempts in total for 5xx / timeouts / connection errors (and for 429s).
    pub max_attempts: u32,
    /// First backoff delay; doubles every attempt, with up to 50% jitter.
    pub base_delay: Duration,
    /// Longest `Retry-After` the client agrees to sleep through.
    pub max_retry_after: Duration,
    /// Per-request timeout.
    pub timeout: Duration,
}

impl RetryPolicy {
    /// The wait before attempt `attempt + 1`: `base_delay` doubled per attempt, up to 50 % jitter
    /// (the REST client and the archive client both back off so).
    pub(crate) fn backoff(&self, attempt: u32) -> Duration {
        let base = self.base_delay.saturating_mul(1 << (attempt - 1).min(10));
        let jitter = rand::rng().random_range(0.0..0.5);
        base.mul_f64(1.0 + jitter)
    }
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 4,
            base_delay: Duration::from_millis(500),
            max_retry_after: Duration::from_secs(120),
            timeout: Duration::from_secs(15),
        }
    }
}

/// A failed Binance request; each message says what to do. Fields are what the message names.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
#[allow(missing_docs)] // the fields are the message's values (URL, HTTP status, attempts, body)
pub enum BinanceError {
    #[error(
        "Binance refused the request from this location (HTTP 451, restricted location) at {url}; \
         use --binance-url https://data-api.binance.vision (market data mirror) or https://api.binance.us"
    )]
    RestrictedLocation { url: String },
    #[error(
        "Binance has banned this IP (HTTP 418) for {retry_after} s after rate-limit violations; \
         not retrying (that extends the ban). Wait, then run again less often"
    )]
    Banned { retry_after: u64 },
    #[error("Binance rate limit (HTTP 429) asks to wait {retry_after} s, longer than the {max} s this run waits; try again later")]
    RateLimitedTooLong { retry_after: u64, max: u64 },
    #[error("Binance still rate-limited (HTTP 429) after {attempts} attempts; try again later")]
    RateLimited { attempts: u32 },
    #[error("Binance answered HTTP {status} at {url} after {attempts} attempts: {body}")]
    Server { status: u16, url: String, attempts: u32, body: String },
    #[error("Binance answered HTTP {status} at {url}: {body}")]
    Client { status: u16, url: String, body: String },
    #[error("cannot reach Binance at {url} after {attempts} attempts: {source}; check --binance-url and the network")]
    Unreachable { url: String, attempts: u32, source: reqwest::Error },
    #[error("Binance sent a malformed answer at {url} ({detail}); nothing was written from it")]
    Malformed { url: String, detail: String },
    #[error("--binance-url {0:?} must start with http:// or https://")]
    BadUrl(String),
    #[error("cannot set up the HTTP client: {0}")]
    HttpSetup(#[source] reqwest::Error),
}

impl BinanceError {
    /// Failures that retrying within the hour cannot fix (a person must change the URL or wait out a ban).
    pub fn is_permanent(&self) -> bool {
        matches!(self, Self::RestrictedLocation { .. } | Self::Banned { .. } | Self::BadUrl(_))
    }
}

/// A Binance REST client with the retry policy, the weight budget and bounded concurrency built
/// in; clones share all three.
#[derive(Debug, Clone)]
pub struct BinanceClient {
    http: reqwest::Client,
    base_url: String,
    policy: RetryPolicy,
    budget: Arc<WeightBudget>,
    permits: Arc<tokio::sync::Semaphore>,
    requests: Arc<AtomicU64>,
    bytes: Arc<AtomicU64>,
}

impl BinanceClient {
    /// A client for `base_url` (`http://` or `https://`).
    pub fn new(base_url: &str, policy: RetryPolicy) -> Result<Self, BinanceError> {
        let base_url = base_url.trim_end_matches('/').to_owned();
        if !(base_url.starts_with("http://") || base_url.starts_with("https://")) {
            return Err(BinanceError::BadUrl(base_url));
        }
        let http = reqwest::Client::builder()
            .timeout(policy.timeout)
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("tickerlake/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(BinanceError::HttpSetup)?;
        Ok(Self {
            http,
            base_url,
            policy,
            budget: Arc::new(WeightBudget::default()),
            permits: Arc::new(tokio::sync::Semaphore::new(REST_CONCURRENCY)),
            requests: Arc::new(AtomicU64::new(0)),
            bytes: Arc::new(AtomicU64::new(0)),
        })
    }

    /// HTTP requests sent so far (retries included).
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Bytes of successful answers received so far.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// The base URL requests go to.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// All symbols' latest prices. Errors if the answer is malformed or empty.
    pub async fn ticker_prices(&self) -> Result<Vec<TickerPrice>, BinanceError> {
        let url = format!("{}/api/v3/ticker/price", self.base_url);
        let body = self.get_with_retries(&url, &[], 4).await?;
        let prices: Vec<TickerPrice> = serde_json::from_slice(&body)
            .map_err(|e| BinanceError::Malformed { url: url.clone(), detail: format!("not a list of {{symbol, price}}: {e}") })?;
        if prices.is_empty() {
            return Err(BinanceError::Malformed { url, detail: "empty price list".into() });
        }
        if let Some(bad) = prices.iter().find(|p| p.symbol.is_empty()) {
            return Err(BinanceError::Malformed { url, detail: format!("entry with an empty symbol (price {:?})", bad.price) });
        }
        Ok(prices)
    }

    /// Every pair quoted in `quote` that `exchangeInfo` lists, in any status (a halted or delisted
    /// pair keeps its history). Also adopts the request-weight limit it announces.
    pub async fn symbols(&self, quote: &str) -> Result<Vec<SymbolInfo>, BinanceError> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Info {
            #[serde(default)]
            rate_limits: Vec<RateLimit>,
            symbols: Vec<Sym>,
        }
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct RateLimit {
            rate_limit_type: String,
            interval: String,
            interval_num: u32,
            limit: u32,
        }
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Sym {
            symbol: String,
            status: String,
            quote_asset: String,
        }
        let url = format!("{}/api/v3/exchangeInfo", self.base_url);
        let body = self.get_with_retries(&url, &[], 20).await?;
        let info: Info = serde_json::from_slice(&body).map_err(|e| BinanceError::Malformed { url, detail: e.to_string() })?;
        let unit = |interval: &str| match interval {
            "SECOND" => Some(1),
            "MINUTE" => Some(60),
            "HOUR" => Some(3600),
            "DAY" => Some(86_400),
            _ => None,
        };
        // The shortest weight window is the one a burst runs into.
        let weight = info
            .rate_limits
            .iter()
            .filter(|r| r.rate_limit_type == "REQUEST_WEIGHT")
            .filter_map(|r| Some((unit(&r.interval)? * r.interval_num, r.limit)))
            .min();
        if let Some((window_secs, limit)) = weight {
            self.budget.configure(limit, window_secs, chrono::Utc::now().timestamp_millis());
        }
        Ok(info.symbols.into_iter().filter(|s| s.quote_asset == quote).map(|s| SymbolInfo { symbol: s.symbol, status: s.status }).collect())
    }

    /// Hourly klines of `symbol` opening from `first_open_ms` to `last_open_ms` (both included),
    /// paged by `startTime` however long the span; also the number of requests it took.
    ///
    /// A page ends the span when it is empty or reaches `last_open_ms`, not when it is shorter
    /// than asked: a server that pages fewer than 1,000 klines loses nothing.
    pub async fn klines(&self, symbol: &str, first_open_ms: i64, last_open_ms: i64) -> Result<(Vec<Kline>, u64), BinanceError> {
        let mut out: Vec<Kline> = Vec::new();
        let mut start = first_open_ms;
        let mut pages = 0;
        while start <= last_open_ms {
            let page = self.klines_page(symbol, Some(start), Some(last_open_ms), KLINES_PAGE).await?;
            pages += 1;
            let Some(last) = page.last().map(|k| k.open_ms) else { break };
            if last < start {
                return Err(BinanceError::Malformed {
                    url: format!("{}/api/v3/klines?symbol={symbol}", self.base_url),
                    detail: format!("asked for klines from {start} ms, got one opening at {last} ms"),
                });
            }
            out.extend(page);
            start = last + HOUR_MS;
        }
        Ok((out, pages))
    }

    /// Open time of the first kline of `symbol` opening at or after `from_ms`, if any.
    pub async fn first_kline(&self, symbol: &str, from_ms: i64) -> Result<Option<i64>, BinanceError> {
        Ok(self.klines_page(symbol, Some(from_ms), None, 1).await?.first().map(|k| k.open_ms))
    }

    /// Open time of the last kline of `symbol` opening at or before `until_ms`, if any.
    pub async fn last_kline(&self, symbol: &str, until_ms: i64) -> Result<Option<i64>, BinanceError> {
        Ok(self.klines_page(symbol, None, Some(until_ms), 1).await?.last().map(|k| k.open_ms))
    }

    /// One `/api/v3/klines` request (weight 2): at most `limit` klines, the first ones from
    /// `start` when given, else the last ones up to `end`.
    async fn klines_page(&self, symbol: &str, start: Option<i64>, end: Option<i64>, limit: usize) -> Result<Vec<Kline>, BinanceError> {
        // Binance's 12 fields; only the open time and the close are kept.
        type Row = (
            i64,
            IgnoredAny,
            IgnoredAny,
            IgnoredAny,
            String,
            IgnoredAny,
            IgnoredAny,
            IgnoredAny,
            IgnoredAny,
            IgnoredAny,
            IgnoredAny,
            IgnoredAny,
        );
        let url = format!("{}/api/v3/klines", self.base_url);
        let mut query = vec![("symbol", symbol.to_owned()), ("interval", "1h".to_owned()), ("limit", limit.to_string())];
        if let Some(s) = start {
            query.push(("startTime", s.to_string()));
        }
        if let Some(e) = end {
            query.push(("endTime", e.to_string()));
        }
        let body = self.get_with_retries(&url, &query, 2).await?;
        let malformed = |detail: String| BinanceError::Malformed { url: format!("{url}?symbol={symbol}"), detail };
        let rows: Vec<Row> = serde_json::from_slice(&body).map_err(|e| malformed(format!("not a list of klines: {e}")))?;
        rows.into_iter()
            .map(|r| {
                if r.0.rem_euclid(HOUR_MS) != 0 || r.4.is_empty() {
                    return Err(malformed(format!("kline opening at {} ms with close {:?} is not an hourly kline", r.0, r.4)));
                }
                Ok(Kline { open_ms: r.0, close: r.4.into_boxed_str() })
            })
            .collect()
    }

    async fn get_with_retries(&self, url: &str, query: &[(&str, String)], weight: u32) -> Result<bytes::Bytes, BinanceError> {
        // Errors name the request whole (which pair, which hours): the query holds no secret.
        let shown = match query.is_empty() {
            true => url.to_owned(),
            false => format!("{url}?{}", query.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("&")),
        };
        let mut attempt = 0;
        loop {
            attempt += 1;
            let last = attempt >= self.policy.max_attempts;
            // Held through the body, so at most REST_CONCURRENCY answers are in flight.
            let permit = self.permits.acquire().await.expect("the semaphore is never closed");
            self.budget.reserve(weight).await;
            self.requests.fetch_add(1, Ordering::Relaxed);
            let response = match self.http.get(url).query(query).send().await {
                Ok(r) => r,
                Err(e) if last => return Err(BinanceError::Unreachable { url: shown.clone(), attempts: attempt, source: e }),
                Err(e) => {
                    drop(permit);
                    let delay = self.policy.backoff(attempt);
                    tracing::warn!(attempt, ?delay, "Binance request failed ({e}); retrying");
                    tokio::time::sleep(delay).await;
                    continue;
                }
            };
            let status = response.status();
            let retry_after = retry_after_secs(&response);
            let now_ms = chrono::Utc::now().timestamp_millis();
            if let Some(used) = response.headers().get(self.budget.header()).and_then(|v| v.to_str().ok()?.trim().parse().ok()) {
                self.budget.observe(used, now_ms);
            }
            if status.is_success() {
                return match response.bytes().await {
                    Ok(b) => {
                        self.bytes.fetch_add(b.len() as u64, Ordering::Relaxed);
                        Ok(b)
                    }
                    Err(e) if last => Err(BinanceError::Unreachable { url: shown.clone(), attempts: attempt, source: e }),
                    Err(e) => {
                        drop(permit);
                        tracing::warn!(attempt, "reading Binance's answer failed ({e}); retrying");
                        tokio::time::sleep(self.policy.backoff(attempt)).await;
                        continue;
                    }
                };
            }
            let body = snippet(response.text().await.unwrap_or_default());
            drop(permit);
            match status {
                StatusCode::UNAVAILABLE_FOR_LEGAL_REASONS => return Err(BinanceError::RestrictedLocation { url: shown.clone() }),
                StatusCode::IM_A_TEAPOT => return Err(BinanceError::Banned { retry_after: retry_after.unwrap_or(0) }),
                StatusCode::TOO_MANY_REQUESTS => {
                    let wait = retry_after.unwrap_or(self.policy.base_delay.as_secs().max(1));
                    if wait > self.policy.max_retry_after.as_secs() {
                        return Err(BinanceError::RateLimitedTooLong { retry_after: wait, max: self.policy.max_retry_after.as_secs() });
                    }
                    // Every request of this client waits as asked, not only this one.
                    self.budget.pause_until(now_ms + (wait as i64) * 1000);
                    if last {
                        return Err(BinanceError::RateLimited { attempts: attempt });
                    }
                    tracing::warn!(attempt, wait_secs = wait, "Binance rate limit (HTTP 429); waiting as Retry-After asks");
                    tokio::time::sleep(Duration::from_secs(wait)).await;
                }
                s if s.is_server_error() => {
                    if last {
                        return Err(BinanceError::Server { status: s.as_u16(), url: shown.clone(), attempts: attempt, body });
                    }
                    let delay = self.policy.backoff(attempt);
                    tracing::warn!(attempt, status = s.as_u16(), ?delay, "Binance server error; retrying");
                    tokio::time::sleep(delay).await;
                }
                s => return Err(BinanceError::Client { status: s.as_u16(), url: shown.clone(), body }),
            }
        }
    }
}

/// A `Retry-After` header's seconds, if it has any.
pub(crate) fn retry_after_secs(response: &reqwest::Response) -> Option<u64> {
    response.headers().get(reqwest::header::RETRY_AFTER)?.to_str().ok()?.trim().parse().ok()
}

fn snippet(mut body: String) -> String {
    if body.len() > 200 {
        let cut = (0..=200).rev().find(|&i| body.is_char_boundary(i)).unwrap_or(0);
        body.truncate(cut);
        body.push('…');
    }
    body
}
