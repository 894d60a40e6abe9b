//! A Binance-compatible simulator for tests and the offline demo: `/api/v3/ticker/price`,
//! `/api/v3/exchangeInfo` and `/api/v3/klines` in Binance's shapes, over deterministic random
//! walks (same seed, same prices), with faults to inject on demand.
//!
//! Control endpoints (not Binance's): `POST /_sim/fault?kind=K[&times=N][&retry_after=S][&delay_ms=D]`
//! queues a fault for the next N API requests, K one of `429`, `418`, `451`, `500`, `503`, `slow`,
//! `malformed`, `empty`; `GET /_sim/stats` answers `{"requests": N}`.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::json;

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
}

struct Symbol {
    name: String,
    base: String,
    quote: &'static str,
    start_price: f64,
    /// Delisted-like symbols answer "0.00000000", as Binance does for some pairs.
    zero: bool,
}

struct Shared {
    config: SimConfig,
    symbols: Vec<Symbol>,
    faults: Mutex<VecDeque<Fault>>,
    requests: Mutex<u64>,
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

const BASES: &[&str] =
    &["BTC", "ETH", "BNB", "SOL", "XRP", "ADA", "DOGE", "TRX", "DOT", "LINK", "LTC", "AVAX", "ATOM", "UNI", "XLM", "NEAR"];
const OTHER_QUOTES: &[&str] = &["BTC", "ETH", "FDUSD"];

/// splitmix64: a tiny, stable hash, so the walks never change with a dependency upgrade.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

fn unit(x: u64) -> f64 {
    (mix(x) >> 11) as f64 / (1u64 << 53) as f64
}

/// Even indices are USDT pairs, odd ones the same base against another quote; every 13th
/// symbol is priced zero.
fn universe(config: &SimConfig) -> Vec<Symbol> {
    (0..config.symbols)
        .map(|i| {
            let base = match BASES.get(i / 2) {
                Some(b) => (*b).to_owned(),
                None => format!("C{:04}", i / 2),
            };
            let quote = match (i % 2, OTHER_QUOTES[(i / 2) % OTHER_QUOTES.len()]) {
                (0, _) => "USDT",
                (_, q) if q == base => "FDUSD",
                (_, q) => q,
            };
            let h = config.seed ^ (i as u64).wrapping_mul(0x2545_F491_4F6C_DD1D);
            Symbol {
                name: format!("{base}{quote}"),
                base,
                quote,
                start_price: 10f64.powf(unit(h) * 8.0 - 3.0), // 0.001 .. 100k
                zero: i % 13 == 12,
            }
        })
        .collect()
}

impl Shared {
    fn new(config: SimConfig) -> Self {
        Self { symbols: universe(&config), config, faults: Mutex::new(VecDeque::new()), requests: Mutex::new(0) }
    }

    /// Price of symbol `i` at the start of hour `hour` (hours since the Unix epoch): a log-walk of
    /// ±1% hourly steps. Each 64-hour block starts from its own hashed level, so any hour costs at
    /// most 64 steps with no cache; neighbouring hours differ by one step (except at block edges).
    fn price_at_hour(&self, i: usize, hour: i64) -> f64 {
        let s = &self.symbols[i];
        let key = self.config.seed ^ ((i as u64) << 40);
        let block = hour.div_euclid(64);
        let block_level = (unit(key ^ (block as u64).wrapping_mul(0x9E37)) - 0.5) * 0.4;
        let mut level = block_level;
        let start = block * 64;
        for h in start..hour {
            level += (unit(key ^ (h as u64).wrapping_mul(0xD1B5_4A32_D192_ED03)) - 0.5) * 0.02;
        }
        s.start_price * level.exp()
    }

    fn price_now(&self, i: usize, now: DateTime<Utc>) -> Option<f64> {
        if self.symbols[i].zero {
            return None;
        }
        let hour = now.timestamp().div_euclid(3600);
        let minute = now.timestamp().div_euclid(60) as u64;
        let wiggle = 1.0 + (unit(self.config.seed ^ minute ^ ((i as u64) << 32)) - 0.5) * 0.002;
        Some(self.price_at_hour(i, hour) * wiggle)
    }
}

fn fmt_price(p: Option<f64>) -> String {
    format!("{:.8}", p.unwrap_or(0.0))
}

impl Simulator {
    /// Start on 127.0.0.1 (`port` 0 picks a free port).
    pub async fn start(config: SimConfig, port: u16) -> std::io::Result<Self> {
        let shared = Arc::new(Shared::new(config));
        let app = Router::new()
            .route("/api/v3/ticker/price", get(ticker_price))
            .route("/api/v3/exchangeInfo", get(exchange_info))
            .route("/api/v3/klines", get(klines))
            .route("/api/v3/ping", get(|| async { Json(json!({})) }))
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

    /// The base URL to pass as `--binance-url`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Queue `fault` for the next `times` API requests.
    pub fn inject(&self, fault: Fault, times: usize) {
        let mut q = self.shared.faults.lock().unwrap();
        q.extend(std::iter::repeat_n(fault, times));
    }

    /// API requests served so far (faulted ones included).
    pub fn requests(&self) -> u64 {
        *self.shared.requests.lock().unwrap()
    }

    /// Wait until the task ends (for the `simulator` command).
    pub async fn serve_forever(mut self) {
        let _ = (&mut self.task).await;
    }
}

/// Count the request and apply the next queued fault, if any.
async fn intercept(shared: &Shared) -> Option<Response> {
    *shared.requests.lock().unwrap() += 1;
    let fault = shared.faults.lock().unwrap().pop_front()?;
    Some(match fault {
        Fault::Status { code, retry_after } => {
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
        Fault::Slow(d) => {
            tokio::time::sleep(d).await;
            return None;
        }
        Fault::Malformed => (StatusCode::OK, [("content-type", "application/json")], "[{\"symbol\":\"BTCUSDT\",\"price\":").into_response(),
        Fault::Empty => Json(json!([])).into_response(),
    })
}

#[derive(Deserialize)]
struct TickerQuery {
    symbol: Option<String>,
}

async fn ticker_price(State(shared): State<Arc<Shared>>, Query(q): Query<TickerQuery>) -> Response {
    if let Some(r) = intercept(&shared).await {
        return r;
    }
    let now = Utc::now();
    let all = shared.symbols.iter().enumerate().map(|(i, s)| json!({"symbol": s.name, "price": fmt_price(shared.price_now(i, now))}));
    match q.symbol {
        Some(sym) => match shared.symbols.iter().position(|s| s.name == sym) {
            Some(i) => Json(json!({"symbol": sym, "price": fmt_price(shared.price_now(i, now))})).into_response(),
            None => (StatusCode::BAD_REQUEST, Json(json!({"code": -1121, "msg": "Invalid symbol."}))).into_response(),
        },
        None => Json(all.collect::<Vec<_>>()).into_response(),
    }
}

async fn exchange_info(State(shared): State<Arc<Shared>>) -> Response {
    if let Some(r) = intercept(&shared).await {
        return r;
    }
    let symbols: Vec<_> = shared
        .symbols
        .iter()
        .map(|s| {
            json!({
                "symbol": s.name, "status": if s.zero { "BREAK" } else { "TRADING" },
                "baseAsset": s.base, "baseAssetPrecision": 8, "quoteAsset": s.quote, "quotePrecision": 8,
                "quoteAssetPrecision": 8, "orderTypes": ["LIMIT", "MARKET"], "isSpotTradingAllowed": true,
                "isMarginTradingAllowed": false, "filters": [], "permissions": [], "permissionSets": [["SPOT"]],
            })
        })
        .collect();
    Json(json!({
        "timezone": "UTC", "serverTime": Utc::now().timestamp_millis(),
        "rateLimits": [
            {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": 6000},
            {"rateLimitType": "RAW_REQUESTS", "interval": "MINUTE", "intervalNum": 5, "limit": 61000}
        ],
        "exchangeFilters": [], "symbols": symbols,
    }))
    .into_response()
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
    if let Some(r) = intercept(&shared).await {
        return r;
    }
    if q.interval != "1h" {
        return (StatusCode::BAD_REQUEST, Json(json!({"code": -1120, "msg": "Invalid interval (the simulator serves 1h)."})))
            .into_response();
    }
    let Some(i) = shared.symbols.iter().position(|s| s.name == q.symbol) else {
        return (StatusCode::BAD_REQUEST, Json(json!({"code": -1121, "msg": "Invalid symbol."}))).into_response();
    };
    let now_h = Utc::now().timestamp().div_euclid(3600);
    let limit = q.limit.unwrap_or(500).min(1000) as i64;
    let end_h = q.end_time.map(|t| t.div_euclid(3_600_000)).unwrap_or(now_h).min(now_h);
    let start_h = q.start_time.map(|t| (t + 3_599_999).div_euclid(3_600_000)).unwrap_or(end_h - limit + 1);
    let rows: Vec<_> = (start_h..=end_h)
        .take(limit as usize)
        .map(|h| {
            let (open, close) =
                if shared.symbols[i].zero { (0.0, 0.0) } else { (shared.price_at_hour(i, h), shared.price_at_hour(i, h + 1)) };
            let volume = 1000.0 + unit(h as u64 ^ i as u64) * 9000.0;
            json!([
                h * 3_600_000,
                fmt_price(Some(open)),
                fmt_price(Some(open.max(close) * 1.002)),
                fmt_price(Some(open.min(close) * 0.998)),
                fmt_price(Some(close)),
                format!("{volume:.8}"),
                h * 3_600_000 + 3_599_999,
                format!("{:.8}", volume * close),
                100,
                format!("{:.8}", volume / 2.0),
                format!("{:.8}", volume * close / 2.0),
                "0"
            ])
        })
        .collect();
    Json(rows).into_response()
}

async fn add_fault(State(shared): State<Arc<Shared>>, Query(q): Query<HashMap<String, String>>) -> Response {
    let times: usize = q.get("times").and_then(|t| t.parse().ok()).unwrap_or(1);
    let retry_after = q.get("retry_after").and_then(|t| t.parse().ok());
    let fault = match q.get("kind").map(String::as_str) {
        Some("slow") => Fault::Slow(Duration::from_millis(q.get("delay_ms").and_then(|t| t.parse().ok()).unwrap_or(30_000))),
        Some("malformed") => Fault::Malformed,
        Some("empty") => Fault::Empty,
        Some(code) => match code.parse::<u16>() {
            Ok(code) if (400..600).contains(&code) => Fault::Status { code, retry_after },
            _ => return (StatusCode::BAD_REQUEST, format!("unknown fault kind {code:?}")).into_response(),
        },
        None => return (StatusCode::BAD_REQUEST, "kind= is required").into_response(),
    };
    shared.faults.lock().unwrap().extend(std::iter::repeat_n(fault, times));
    StatusCode::NO_CONTENT.into_response()
}

async fn stats(State(shared): State<Arc<Shared>>) -> Response {
    Json(json!({"requests": *shared.requests.lock().unwrap()})).into_response()
}

/// Raw snapshot CSV for the given hour as the collector would have stored it, without a server:
/// used to build large histories quickly (benchmarks, demos). Fetch time is 16.8 s past the hour.
pub fn snapshot_for_hour(config: &SimConfig, hour: DateTime<Utc>) -> bytes::Bytes {
    snapshot_with_malformed_rows(config, hour, 0)
}

/// [`snapshot_for_hour`] with about one row in `one_in` malformed (none for 0), as real months
/// have them: in turn a wrong field count, a non-numeric price, an empty field and a truncated
/// timestamp. Which rows are malformed depends only on the seed, the hour and the row.
pub fn snapshot_with_malformed_rows(config: &SimConfig, hour: DateTime<Utc>, one_in: u64) -> bytes::Bytes {
    let shared = Shared::new(config.clone());
    let at = hour + chrono::TimeDelta::milliseconds(16_801);
    let prices: Vec<crate::source::binance::TickerPrice> = (0..shared.symbols.len())
        .map(|i| crate::source::binance::TickerPrice { symbol: shared.symbols[i].name.clone(), price: fmt_price(shared.price_now(i, at)) })
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
        if i == 0 || !mix(key).is_multiple_of(one_in) {
            out.push_str(line);
        } else {
            out.push_str(&match mix(key ^ 1) % 4 {
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
