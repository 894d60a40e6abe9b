//! A Binance-compatible simulator for tests, benchmarks and the offline demo: the REST endpoints
//! `/api/v3/ticker/price`, `/api/v3/exchangeInfo` and `/api/v3/klines`, and the public data
//! archive (`/data/spot/{monthly,daily}/klines/…`, see [`archive`]), in Binance's shapes, over
//! deterministic random walks (same seed, same prices) shaped by a [`Scenario`] of irregularities
//! ([`market`]), with request weight accounted as Binance does and faults to inject on demand.
//!
//! Control endpoints (not Binance's): `POST /_sim/fault?kind=K[&times=N][&retry_after=S][&delay_ms=D][&on=archive]`
//! queues a fault for the next N API requests (or, `on=archive`, the next N archive zip
//! downloads), K one of `429`, `418`, `451`, `500`, `503`, `slow`, `malformed`, `empty`,
//! `truncated` (the connection drops halfway through the body) or `corrupt` (one byte changed);
//! `GET /_sim/stats` answers the request counts.

pub mod archive;
pub mod market;

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::json;

pub use market::Scenario;
use market::{HOUR_MS, Market, fmt_price};

/// What the simulator serves.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// How many symbols (a mix of USDT and other quotes, some priced zero).
    pub symbols: usize,
    /// Seed of the price walks (the same seed gives the same prices).
    pub seed: u64,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self { symbols: 50, seed: 42 }
    }
}

/// A fault the simulator injects into its next answers.
#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    /// Answer with this HTTP status (and `Retry-After`, if given).
    Status {
        /// The HTTP status.
        code: u16,
        /// Seconds for the `Retry-After` header.
        retry_after: Option<u64>,
    },
    /// Answer only after this long.
    Slow(Duration),
    /// Answer with JSON that is not a price list.
    Malformed,
    /// Answer with an empty price list.
    Empty,
    /// Archive downloads: announce the whole length, send half, drop the connection (on the
    /// REST API: as `Malformed`).
    Truncated,
    /// Archive downloads: the whole file with one byte changed, so its checksum fails (on the
    /// REST API: as `Malformed`).
    Corrupt,
}

/// Which requests a queued fault applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultTarget {
    /// The REST API (`/api/v3/…`).
    Api,
    /// Archive zip downloads (not their `.CHECKSUM` siblings).
    Archive,
}

struct Shared {
    market: Market,
    faults: Mutex<VecDeque<Fault>>,
    archive_faults: Mutex<VecDeque<Fault>>,
    requests: AtomicU64,
    archive_requests: AtomicU64,
    archive_bytes: AtomicU64,
    throttled: AtomicU64,
    /// The current weight window (its index since the epoch) and the weight used in it.
    weight: Mutex<(i64, u32)>,
    weight_header: HeaderName,
    cache: archive::Cache,
}

/// A running simulator; stops when dropped.
pub struct Simulator {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Simulator {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Shared {
    fn new(config: &SimConfig, scenario: Scenario) -> Self {
        let window = scenario.weight_window_secs.max(1);
        let interval = if window.is_multiple_of(60) { format!("{}m", window / 60) } else { format!("{window}s") };
        Self {
            market: Market::new(config.symbols, config.seed, scenario),
            faults: Mutex::new(VecDeque::new()),
            archive_faults: Mutex::new(VecDeque::new()),
            requests: AtomicU64::new(0),
            archive_requests: AtomicU64::new(0),
            archive_bytes: AtomicU64::new(0),
            throttled: AtomicU64::new(0),
            weight: Mutex::new((0, 0)),
            weight_header: HeaderName::try_from(format!("x-mbx-used-weight-{interval}")).expect("a valid header name"),
            cache: archive::Cache::new(),
        }
    }

    /// Spend `weight` in the current window: the weight used so far, or the seconds until the
    /// window ends when the limit would be exceeded (Binance then answers 429).
    fn charge(&self, weight: u32) -> Result<u32, u64> {
        let window = i64::from(self.market.scenario.weight_window_secs.max(1));
        let now = Utc::now().timestamp_millis();
        let index = now.div_euclid(window * 1000);
        let mut w = self.weight.lock().unwrap();
        if w.0 != index {
            *w = (index, 0);
        }
        if w.1 + weight > self.market.scenario.weight_limit {
            let left_ms = (index + 1) * window * 1000 - now;
            return Err(((left_ms + 999) / 1000).max(1) as u64);
        }
        w.1 += weight;
        Ok(w.1)
    }
}

impl Simulator {
    /// Start on 127.0.0.1 (`port` 0 picks a free port) with a clean history.
    pub async fn start(config: SimConfig, port: u16) -> std::io::Result<Self> {
        Self::start_with(config, Scenario::default(), port).await
    }

    /// Start on 127.0.0.1 (`port` 0 picks a free port) with the history shaped by `scenario`.
    pub async fn start_with(config: SimConfig, scenario: Scenario, port: u16) -> std::io::Result<Self> {
        let shared = Arc::new(Shared::new(&config, scenario));
        let app = Router::new()
            .route("/api/v3/ticker/price", get(ticker_price))
            .route("/api/v3/exchangeInfo", get(exchange_info))
            .route("/api/v3/klines", get(klines))
            .route("/api/v3/ping", get(ping))
            .route("/data/spot/{period}/klines/{symbol}/{interval}/{file}", get(archive_file))
            .route("/_sim/fault", post(add_fault))
            .route("/_sim/stats", get(stats))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .map_err(|e| std::io::Error::new(e.kind(), format!("cannot listen on 127.0.0.1:{port}: {e}")))?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self { addr, shared, task })
    }

    /// The base URL to pass as `--binance-url` (and `--archive-url`: the archive is served too).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Queue `fault` for the next `times` API requests.
    pub fn inject(&self, fault: Fault, times: usize) {
        self.inject_at(FaultTarget::Api, fault, times);
    }

    /// Queue `fault` for the next `times` requests of `target`.
    pub fn inject_at(&self, target: FaultTarget, fault: Fault, times: usize) {
        let queue = match target {
            FaultTarget::Api => &self.shared.faults,
            FaultTarget::Archive => &self.shared.archive_faults,
        };
        queue.lock().unwrap().extend(std::iter::repeat_n(fault, times));
    }

    /// Faults still queued for `target` (a test checks its faults were all met).
    pub fn pending_faults(&self, target: FaultTarget) -> usize {
        match target {
            FaultTarget::Api => self.shared.faults.lock().unwrap().len(),
            FaultTarget::Archive => self.shared.archive_faults.lock().unwrap().len(),
        }
    }

    /// API requests served so far (faulted ones included).
    pub fn requests(&self) -> u64 {
        self.shared.requests.load(Ordering::SeqCst)
    }

    /// Archive requests served so far (zips, checksums and 404s).
    pub fn archive_requests(&self) -> u64 {
        self.shared.archive_requests.load(Ordering::SeqCst)
    }

    /// API requests refused with 429 because the weight limit was exceeded (not injected ones).
    pub fn throttled(&self) -> u64 {
        self.shared.throttled.load(Ordering::SeqCst)
    }

    /// The snapshot a backfill must write for `slot` from `quote` pairs (`None`: no pair has a
    /// kline opening an hour before): the tests' oracle, from the same model the endpoints serve.
    pub fn expected_snapshot(&self, slot: DateTime<Utc>, quote: &str) -> Option<Bytes> {
        self.shared.market.expected_snapshot(slot, quote)
    }

    /// The scenario the history follows.
    pub fn scenario(&self) -> &Scenario {
        &self.shared.market.scenario
    }

    /// Wait until the task ends (for the `simulator` command).
    pub async fn serve_forever(mut self) {
        let _ = (&mut self.task).await;
    }
}

/// Count an API request, apply the next queued fault, then charge its weight: the response to
/// send instead of the real one, if any, else the weight used so far (for the header).
async fn intercept(shared: &Shared, weight: u32) -> Result<u32, Response> {
    shared.requests.fetch_add(1, Ordering::SeqCst);
    let fault = shared.faults.lock().unwrap().pop_front();
    match fault {
        None => {}
        Some(Fault::Slow(d)) => tokio::time::sleep(d).await,
        Some(Fault::Status { code, retry_after }) => return Err(status_response(code, retry_after)),
        Some(Fault::Malformed | Fault::Truncated | Fault::Corrupt) => {
            return Err((StatusCode::OK, [("content-type", "application/json")], "[{\"symbol\":\"BTCUSDT\",\"price\":").into_response());
        }
        Some(Fault::Empty) => return Err(Json(json!([])).into_response()),
    }
    shared.charge(weight).map_err(|retry_after| {
        shared.throttled.fetch_add(1, Ordering::SeqCst);
        status_response(429, Some(retry_after))
    })
}

fn status_response(code: u16, retry_after: Option<u64>) -> Response {
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut headers = HeaderMap::new();
    if let Some(s) = retry_after {
        headers.insert("retry-after", HeaderValue::from(s));
    }
    let msg = match code {
        429 => "Too many requests; current limit of IP is 6000 request weight per 1 MINUTE.",
        418 => "Way too many requests; IP banned.",
        451 => "Service unavailable from a restricted location according to 'b. Eligibility'.",
        _ => "Internal error; unable to process your request. Please try again.",
    };
    (status, headers, Json(json!({"code": -1003, "msg": msg}))).into_response()
}

/// The response with Binance's used-weight header.
fn weighed(shared: &Shared, used: u32, response: impl IntoResponse) -> Response {
    let mut r = response.into_response();
    r.headers_mut().insert(shared.weight_header.clone(), HeaderValue::from(used));
    r
}

async fn ping(State(shared): State<Arc<Shared>>) -> Response {
    match intercept(&shared, 1).await {
        Ok(used) => weighed(&shared, used, Json(json!({}))),
        Err(r) => r,
    }
}

#[derive(Deserialize)]
struct TickerQuery {
    symbol: Option<String>,
}

async fn ticker_price(State(shared): State<Arc<Shared>>, Query(q): Query<TickerQuery>) -> Response {
    let used = match intercept(&shared, if q.symbol.is_some() { 2 } else { 4 }).await {
        Ok(used) => used,
        Err(r) => return r,
    };
    let all = shared.market.ticker(Utc::now());
    let body = match q.symbol {
        Some(sym) => match all.into_iter().find(|p| p.symbol == sym) {
            Some(p) => Json(json!({"symbol": p.symbol, "price": p.price})).into_response(),
            None => (StatusCode::BAD_REQUEST, Json(json!({"code": -1121, "msg": "Invalid symbol."}))).into_response(),
        },
        None => Json(all.iter().map(|p| json!({"symbol": p.symbol, "price": p.price})).collect::<Vec<_>>()).into_response(),
    };
    weighed(&shared, used, body)
}

async fn exchange_info(State(shared): State<Arc<Shared>>) -> Response {
    let used = match intercept(&shared, 20).await {
        Ok(used) => used,
        Err(r) => return r,
    };
    let symbols: Vec<_> = shared
        .market
        .symbols
        .iter()
        .map(|s| {
            json!({
                "symbol": s.name, "status": s.status(),
                "baseAsset": s.base, "baseAssetPrecision": 8, "quoteAsset": s.quote, "quotePrecision": 8,
                "quoteAssetPrecision": 8, "orderTypes": ["LIMIT", "MARKET"], "isSpotTradingAllowed": true,
                "isMarginTradingAllowed": false, "filters": [], "permissions": [], "permissionSets": [["SPOT"]],
            })
        })
        .collect();
    let scenario = &shared.market.scenario;
    let window = scenario.weight_window_secs.max(1);
    let (interval, num) = if window.is_multiple_of(60) { ("MINUTE", window / 60) } else { ("SECOND", window) };
    let body = Json(json!({
        "timezone": "UTC", "serverTime": Utc::now().timestamp_millis(),
        "rateLimits": [
            {"rateLimitType": "REQUEST_WEIGHT", "interval": interval, "intervalNum": num, "limit": scenario.weight_limit},
            {"rateLimitType": "RAW_REQUESTS", "interval": "MINUTE", "intervalNum": 5, "limit": 61000}
        ],
        "exchangeFilters": [], "symbols": symbols,
    }));
    weighed(&shared, used, body)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct KlineQuery {
    symbol: String,
    interval: String,
    start_time: Option<i64>,
    end_time: Option<i64>,
    limit: Option<usize>,
}

async fn klines(State(shared): State<Arc<Shared>>, Query(q): Query<KlineQuery>) -> Response {
    let used = match intercept(&shared, 2).await {
        Ok(used) => used,
        Err(r) => return r,
    };
    if q.interval != "1h" {
        return (StatusCode::BAD_REQUEST, Json(json!({"code": -1120, "msg": "Invalid interval (the simulator serves 1h)."})))
            .into_response();
    }
    let Some(i) = shared.market.symbols.iter().position(|s| s.name == q.symbol) else {
        return (StatusCode::BAD_REQUEST, Json(json!({"code": -1121, "msg": "Invalid symbol."}))).into_response();
    };
    // The kline open now is served too (still open), as Binance does.
    let now_h = Utc::now().timestamp().div_euclid(3600);
    let limit = q.limit.unwrap_or(500).clamp(1, shared.market.scenario.klines_page_limit.clamp(1, 1000));
    let end_h = q.end_time.map(|t| t.div_euclid(HOUR_MS)).unwrap_or(now_h).min(now_h);
    let start_h = q.start_time.map(|t| (t + HOUR_MS - 1).div_euclid(HOUR_MS));
    let rows: Vec<_> = shared
        .market
        .klines(i, start_h, end_h, limit)
        .into_iter()
        .map(|k| {
            json!([
                k.open_h * HOUR_MS,
                k.open,
                k.high,
                k.low,
                k.close,
                k.volume,
                (k.open_h + 1) * HOUR_MS - 1,
                k.quote_volume,
                k.trades,
                k.taker_base,
                k.taker_quote,
                "0"
            ])
        })
        .collect();
    weighed(&shared, used, Json(rows))
}

/// The archive's answer for a key it does not have (S3's, as data.binance.vision sends it).
fn no_such_key() -> Response {
    (
        StatusCode::NOT_FOUND,
        [("content-type", "application/xml")],
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>NoSuchKey</Code><Message>The specified key does not exist.</Message></Error>",
    )
        .into_response()
}

async fn archive_file(
    State(shared): State<Arc<Shared>>,
    Path((period, symbol, interval, file)): Path<(String, String, String, String)>,
) -> Response {
    shared.archive_requests.fetch_add(1, Ordering::SeqCst);
    let Some(path) = archive::parse(&period, &symbol, &interval, &file) else { return no_such_key() };
    let market = &shared.market;
    let Some(i) = market.symbols.iter().position(|s| s.name == path.symbol) else { return no_such_key() };
    let today = Utc::now().date_naive();
    if !archive::published(path.period, today, market.scenario.archive_lag_days) || market.archive_file_missing(i, path.period) {
        return no_such_key();
    }
    // Building a zip is CPU work (CSV, deflate): off the runtime's workers.
    let zip = {
        let shared = shared.clone();
        let name = path.zip_name.clone();
        tokio::task::spawn_blocking(move || {
            shared.cache.get_or_build(&name, || archive::csv(&shared.market, i, path.period).map(|csv| archive::zip(&name, &csv)))
        })
        .await
        .expect("building a zip does not panic")
    };
    let Some(zip) = zip else { return no_such_key() };
    if path.checksum {
        let text = archive::checksum(&path.zip_name, &zip);
        shared.archive_bytes.fetch_add(text.len() as u64, Ordering::SeqCst);
        return ([("content-type", "text/plain")], text).into_response();
    }
    shared.archive_bytes.fetch_add(zip.len() as u64, Ordering::SeqCst);
    let fault = shared.archive_faults.lock().unwrap().pop_front();
    let zip_type = [(header::CONTENT_TYPE, "application/zip")];
    match fault {
        None | Some(Fault::Malformed | Fault::Empty) => (zip_type, zip).into_response(),
        Some(Fault::Slow(d)) => {
            tokio::time::sleep(d).await;
            (zip_type, zip).into_response()
        }
        Some(Fault::Status { code, retry_after }) => status_response(code, retry_after),
        Some(Fault::Corrupt) => {
            let mut bad = zip.to_vec();
            let mid = bad.len() / 2;
            bad[mid] ^= 0x55;
            (zip_type, bad).into_response()
        }
        Some(Fault::Truncated) => {
            // The full length announced, half of it sent, then the stream fails: hyper drops the
            // connection, as a download broken off mid-way looks to the client.
            // The pause lets hyper send the headers and the first half before the failure.
            use futures::StreamExt as _;
            let half = zip.slice(..zip.len() / 2);
            let broken = async {
                tokio::time::sleep(Duration::from_millis(50)).await;
                Err::<Bytes, _>(std::io::Error::other("simulated broken download"))
            };
            let chunks = futures::stream::iter([Ok(half)]).chain(futures::stream::once(broken));
            let mut r = Body::from_stream(chunks).into_response();
            r.headers_mut().insert(header::CONTENT_LENGTH, HeaderValue::from(zip.len()));
            r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/zip"));
            r
        }
    }
}

async fn add_fault(State(shared): State<Arc<Shared>>, Query(q): Query<HashMap<String, String>>) -> Response {
    let times: usize = q.get("times").and_then(|t| t.parse().ok()).unwrap_or(1);
    let retry_after = q.get("retry_after").and_then(|t| t.parse().ok());
    let fault = match q.get("kind").map(String::as_str) {
        Some("slow") => Fault::Slow(Duration::from_millis(q.get("delay_ms").and_then(|t| t.parse().ok()).unwrap_or(30_000))),
        Some("malformed") => Fault::Malformed,
        Some("empty") => Fault::Empty,
        Some("truncated") => Fault::Truncated,
        Some("corrupt") => Fault::Corrupt,
        Some(code) => match code.parse::<u16>() {
            Ok(code) if (400..600).contains(&code) => Fault::Status { code, retry_after },
            _ => return (StatusCode::BAD_REQUEST, format!("unknown fault kind {code:?}")).into_response(),
        },
        None => return (StatusCode::BAD_REQUEST, "kind= is required").into_response(),
    };
    let queue = match q.get("on").map(String::as_str) {
        None | Some("api") => &shared.faults,
        Some("archive") => &shared.archive_faults,
        Some(other) => return (StatusCode::BAD_REQUEST, format!("unknown fault target {other:?} (api or archive)")).into_response(),
    };
    queue.lock().unwrap().extend(std::iter::repeat_n(fault, times));
    StatusCode::NO_CONTENT.into_response()
}

async fn stats(State(shared): State<Arc<Shared>>) -> Response {
    Json(json!({
        "requests": shared.requests.load(Ordering::SeqCst),
        "archive_requests": shared.archive_requests.load(Ordering::SeqCst),
        "archive_bytes": shared.archive_bytes.load(Ordering::SeqCst),
        "throttled": shared.throttled.load(Ordering::SeqCst),
    }))
    .into_response()
}

/// Delistings for a simulated history: about one USDT pair in `one_in` (none for 0) has its last
/// hour in `[from, to]`, at an hour that depends only on the seed and the pair, so that histories
/// written range by range (a month at a time) agree on it. Real lakes have such pairs: their rows
/// stop, and the pair stays in every range that starts before its end.
pub fn spread_delistings(config: &SimConfig, one_in: u64, from: DateTime<Utc>, to: DateTime<Utc>) -> Vec<(String, DateTime<Utc>)> {
    let (first, last) = (from.timestamp().div_euclid(3600), to.timestamp().div_euclid(3600));
    if one_in == 0 || last < first {
        return Vec::new();
    }
    let span = (last - first + 1) as u64;
    market::usdt_pairs(config.symbols)
        .filter(|(i, _)| market::mix(config.seed ^ 0xDE15 ^ (*i as u64).rotate_left(23)).is_multiple_of(one_in))
        .map(|(i, name)| {
            let hour = first + (market::mix(config.seed ^ (i as u64) ^ 0x1157) % span) as i64;
            (name, DateTime::from_timestamp(hour * 3600, 0).expect("an hour within the range"))
        })
        .collect()
}

/// Raw snapshot CSV for the given hour as the collector would have stored it, without a server:
/// used to build large histories quickly (benchmarks, demos). Fetch time is 16.8 s past the hour.
pub fn snapshot_for_hour(config: &SimConfig, hour: DateTime<Utc>) -> bytes::Bytes {
    snapshot_with_malformed_rows(config, &Scenario::default(), hour, 0)
}

/// [`snapshot_for_hour`] in a market with `scenario`'s listings and delistings (a delisted pair
/// answers a zero price, as Binance's ticker does for some), and about one row in `one_in`
/// malformed (none for 0), as real months have them: in turn a wrong field count, a non-numeric
/// price, an empty field and a truncated timestamp. Which rows are malformed depends only on the
/// seed, the hour and the row.
pub fn snapshot_with_malformed_rows(config: &SimConfig, scenario: &Scenario, hour: DateTime<Utc>, one_in: u64) -> bytes::Bytes {
    let market = Market::new(config.symbols, config.seed, scenario.clone());
    let at = hour + chrono::TimeDelta::milliseconds(16_801);
    let prices: Vec<crate::source::binance::TickerPrice> = (0..market.symbols.len())
        .map(|i| crate::source::binance::TickerPrice {
            symbol: market.symbols[i].name.clone(),
            price: fmt_price(market.price_now(i, at).ok().flatten()),
        })
        .collect();
    let csv = crate::source::snapshot::encode(&prices, at);
    if one_in == 0 {
        return csv;
    }
    let text = String::from_utf8(csv.to_vec()).expect("encode writes UTF-8");
    let mut out = String::with_capacity(text.len() + 64);
    for (i, line) in text.lines().enumerate() {
        let key = config.seed ^ (hour.timestamp() as u64).rotate_left(17) ^ (i as u64).wrapping_mul(0x9E37_79B9);
        let mut fields = line.splitn(3, ',');
        let (symbol, price, ts) = (fields.next().unwrap_or(""), fields.next().unwrap_or(""), fields.next().unwrap_or(""));
        if i == 0 || !market::mix(key).is_multiple_of(one_in) {
            out.push_str(line);
        } else {
            out.push_str(&match market::mix(key ^ 1) % 4 {
                0 => format!("{symbol},{price}"),
                1 => format!("{symbol},n/a,{ts}"),
                2 => format!("{symbol},,{ts}"),
                _ => format!("{symbol},{price},{}", &ts[..ts.len().min(17)]),
            });
        }
        out.push('\n');
    }
    bytes::Bytes::from(out)
}
