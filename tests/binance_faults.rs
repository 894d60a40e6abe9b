//! Every Binance failure mode, injected into the simulator, against the real `collect` command:
//! the right retries (or none), a clear error, and nothing written on failure.

mod common;

use std::time::Duration;

use common::{Out, tickerlake};
use tickerlake::simulator::{Fault, SimConfig, Simulator};

struct Case {
    sim: Simulator,
    _dir: tempfile::TempDir,
    lake: String,
}

async fn case(fault: Fault, times: usize) -> Case {
    let sim = Simulator::start(SimConfig { symbols: 10, seed: 1 }, 0).await.unwrap();
    sim.inject(fault, times);
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake").to_string_lossy().into_owned();
    Case { sim, _dir: dir, lake }
}

impl Case {
    async fn collect(&self, extra: &[&str]) -> Out {
        let url = self.sim.url();
        let mut args = vec!["collect", "--binance-url", url.as_str(), "--retry-ms", "50"];
        args.extend_from_slice(extra);
        tickerlake(&self.lake, &args, &[]).await
    }
    fn snapshots(&self) -> usize {
        std::fs::read_dir(format!("{}/raw", self.lake)).map(|d| d.count()).unwrap_or(0)
    }
}

fn status(code: u16, retry_after: Option<u64>) -> Fault {
    Fault::Status { code, retry_after }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_429_waits_retry_after_then_succeeds() {
    let c = case(status(429, Some(1)), 2).await;
    let started = std::time::Instant::now();
    let out = c.collect(&[]).await;
    out.ok();
    assert!(started.elapsed() >= Duration::from_secs(2), "Retry-After (1 s, twice) was not honoured");
    assert_eq!(c.sim.requests(), 3);
    assert!(out.stderr.contains("HTTP 429"), "{}", out.stderr);
    assert_eq!(c.snapshots(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_429_with_a_long_retry_after_fails_instead_of_blocking() {
    let c = case(status(429, Some(3600)), 1).await;
    let out = c.collect(&[]).await;
    out.failed();
    assert!(out.stderr.contains("asks to wait 3600 s"), "{}", out.stderr);
    assert_eq!(c.sim.requests(), 1);
    assert_eq!(c.snapshots(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ban_418_is_never_retried() {
    let c = case(status(418, Some(120)), 5).await;
    let out = c.collect(&[]).await;
    out.failed();
    assert!(out.stderr.contains("banned this IP (HTTP 418) for 120 s") && out.stderr.contains("not retrying"), "{}", out.stderr);
    assert_eq!(c.sim.requests(), 1, "retrying into a ban extends it");
    assert_eq!(c.snapshots(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restricted_location_451_names_the_endpoints_to_use() {
    let c = case(status(451, None), 5).await;
    let out = c.collect(&[]).await;
    out.failed();
    assert!(out.stderr.contains("https://data-api.binance.vision") && out.stderr.contains("https://api.binance.us"), "{}", out.stderr);
    assert_eq!(c.sim.requests(), 1);
    assert_eq!(c.snapshots(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_are_retried_with_backoff_then_succeed() {
    let c = case(status(500, None), 2).await;
    let out = c.collect(&[]).await;
    out.ok();
    assert_eq!(c.sim.requests(), 3);
    assert_eq!(c.snapshots(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persistent_server_errors_give_up_after_bounded_attempts() {
    let c = case(status(503, None), 10).await;
    let out = c.collect(&["--max-attempts", "3"]).await;
    out.failed();
    assert!(out.stderr.contains("HTTP 503") && out.stderr.contains("after 3 attempts"), "{}", out.stderr);
    assert_eq!(c.sim.requests(), 3);
    assert_eq!(c.snapshots(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_answers_time_out_and_are_retried() {
    let c = case(Fault::Slow(Duration::from_secs(3)), 1).await;
    let out = c.collect(&["--timeout-secs", "1"]).await;
    out.ok();
    assert_eq!(c.sim.requests(), 2);
    assert!(out.stderr.contains("retrying"), "{}", out.stderr);
    assert_eq!(c.snapshots(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_json_writes_nothing() {
    let c = case(Fault::Malformed, 1).await;
    let out = c.collect(&[]).await;
    out.failed();
    assert!(out.stderr.contains("malformed answer") && out.stderr.contains("nothing was written"), "{}", out.stderr);
    assert_eq!(c.snapshots(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_price_list_writes_nothing() {
    let c = case(Fault::Empty, 1).await;
    let out = c.collect(&[]).await;
    out.failed();
    assert!(out.stderr.contains("empty price list"), "{}", out.stderr);
    assert_eq!(c.snapshots(), 0);
}
