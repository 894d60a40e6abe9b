//! Binance spot REST client: `GET /api/v3/ticker/price` (all symbols, request weight 4), plus
//! `exchangeInfo` and `klines` for backfills.
//!
//! Failure policy, from Binance's rules for the REST API:
//! - 429 (rate limit): wait `Retry-After`, then retry, a bounded number of times; a wait longer
//!   than the configured maximum fails instead of blocking the run.
//! - 418 (IP auto-banned for ignoring 429s): never retried; retrying extends the ban.
//! - 451 (restricted location): never retried; the error names the endpoints that serve it.
//! - 5xx, timeouts, connection errors: bounded retries with exponential backoff and jitter.
//! - malformed JSON or an empty list: an error, so nothing gets written.

use std::time::Duration;

use rand::Rng;
use reqwest::StatusCode;
use serde::Deserialize;

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
    #[error("Binance sent a malformed answer at {url} ({detail}); nothing was written")]
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

/// A Binance REST client with the retry policy built in.
#[derive(Debug, Clone)]
pub struct BinanceClient {
    http: reqwest::Client,
    base_url: String,
    policy: RetryPolicy,
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
        Ok(Self { http, base_url, policy })
    }

    /// The base URL requests go to.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// All symbols' latest prices. Errors if the answer is malformed or empty.
    pub async fn ticker_prices(&self) -> Result<Vec<TickerPrice>, BinanceError> {
        let url = format!("{}/api/v3/ticker/price", self.base_url);
        let body = self.get_with_retries(&url, &[]).await?;
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

    /// Symbols currently trading with the given quote asset (from `/api/v3/exchangeInfo`).
    pub async fn trading_symbols(&self, quote: &str) -> Result<Vec<String>, BinanceError> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Info {
            symbols: Vec<Sym>,
        }
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Sym {
            symbol: String,
            status: String,
            quote_asset: String,
        }
        let url = format!("{}/api/v3/exchangeInfo", self.base_url);
        let body = self.get_with_retries(&url, &[]).await?;
        let info: Info = serde_json::from_slice(&body).map_err(|e| BinanceError::Malformed { url, detail: e.to_string() })?;
        Ok(info.symbols.into_iter().filter(|s| s.status == "TRADING" && s.quote_asset == quote).map(|s| s.symbol).collect())
    }

    /// Hourly closes `(close_time_ms, close_price)` for `symbol` between the two times (ms).
    pub async fn hourly_closes(&self, symbol: &str, start_ms: i64, end_ms: i64) -> Result<Vec<(i64, String)>, BinanceError> {
        let url = format!("{}/api/v3/klines", self.base_url);
        let query = [
            ("symbol", symbol.to_owned()),
            ("interval", "1h".to_owned()),
            ("startTime", start_ms.to_string()),
            ("endTime", end_ms.to_string()),
            ("limit", "1000".to_owned()),
        ];
        let body = self.get_with_retries(&url, &query).await?;
        let rows: Vec<Vec<serde_json::Value>> = serde_json::from_slice(&body)
            .map_err(|e| BinanceError::Malformed { url: url.clone(), detail: e.to_string() })?;
        rows.into_iter()
            .map(|k| match (k.get(6).and_then(|v| v.as_i64()), k.get(4).and_then(|v| v.as_str())) {
                (Some(close_time), Some(close)) => Ok((close_time, close.to_owned())),
                _ => Err(BinanceError::Malformed { url: url.clone(), detail: format!("kline without close time/price: {k:?}") }),
            })
            .collect()
    }

    async fn get_with_retries(&self, url: &str, query: &[(&str, String)]) -> Result<bytes::Bytes, BinanceError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let last = attempt >= self.policy.max_attempts;
            let response = match self.http.get(url).query(query).send().await {
                Ok(r) => r,
                Err(e) if last => return Err(BinanceError::Unreachable { url: url.into(), attempts: attempt, source: e }),
                Err(e) => {
                    let delay = self.backoff(attempt);
                    tracing::warn!(attempt, ?delay, "Binance request failed ({e}); retrying");
                    tokio::time::sleep(delay).await;
                    continue;
                }
            };
            let status = response.status();
            let retry_after = retry_after_secs(&response);
            if status.is_success() {
                return match response.bytes().await {
                    Ok(b) => Ok(b),
                    Err(e) if last => Err(BinanceError::Unreachable { url: url.into(), attempts: attempt, source: e }),
                    Err(e) => {
                        tracing::warn!(attempt, "reading Binance's answer failed ({e}); retrying");
                        tokio::time::sleep(self.backoff(attempt)).await;
                        continue;
                    }
                };
            }
            let body = snippet(response.text().await.unwrap_or_default());
            match status {
                StatusCode::UNAVAILABLE_FOR_LEGAL_REASONS => return Err(BinanceError::RestrictedLocation { url: url.into() }),
                StatusCode::IM_A_TEAPOT => return Err(BinanceError::Banned { retry_after: retry_after.unwrap_or(0) }),
                StatusCode::TOO_MANY_REQUESTS => {
                    let wait = retry_after.unwrap_or(self.policy.base_delay.as_secs().max(1));
                    if wait > self.policy.max_retry_after.as_secs() {
                        return Err(BinanceError::RateLimitedTooLong { retry_after: wait, max: self.policy.max_retry_after.as_secs() });
                    }
                    if last {
                        return Err(BinanceError::RateLimited { attempts: attempt });
                    }
                    tracing::warn!(attempt, wait_secs = wait, "Binance rate limit (HTTP 429); waiting as Retry-After asks");
                    tokio::time::sleep(Duration::from_secs(wait)).await;
                }
                s if s.is_server_error() => {
                    if last {
                        return Err(BinanceError::Server { status: s.as_u16(), url: url.into(), attempts: attempt, body });
                    }
                    let delay = self.backoff(attempt);
                    tracing::warn!(attempt, status = s.as_u16(), ?delay, "Binance server error; retrying");
                    tokio::time::sleep(delay).await;
                }
                s => return Err(BinanceError::Client { status: s.as_u16(), url: url.into(), body }),
            }
        }
    }

    fn backoff(&self, attempt: u32) -> Duration {
        let base = self.policy.base_delay.saturating_mul(1 << (attempt - 1).min(10));
        let jitter = rand::rng().random_range(0.0..0.5);
        base.mul_f64(1.0 + jitter)
    }
}

fn retry_after_secs(response: &reqwest::Response) -> Option<u64> {
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
