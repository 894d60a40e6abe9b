//! `run`: the hourly service. Each tick collects a snapshot, then processes; ticks are aligned to
//! the clock (the top of each UTC hour plus an offset). A failed tick is logged and retried with
//! backoff until the next tick is due; later ticks go on regardless. Ctrl-C or SIGTERM stops the
//! service between steps, never in the middle of a write.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Result;
use chrono::{DateTime, TimeDelta, Utc};
use tokio::sync::Notify;

use crate::errors::Report;
use crate::lake::Lake;
use crate::process::{self, ProcessOptions};
use crate::source::binance::BinanceClient;
use crate::source::snapshot::{self, CollectOutcome};

#[derive(Debug, Clone)]
pub struct ServiceOptions {
    /// Run one tick now and exit (for cron); its failure is the exit status.
    pub once: bool,
    /// Delay after the top of the hour before a tick starts.
    pub offset: Duration,
    /// First retry delay after a failed tick; doubles up to 10 minutes.
    pub retry_delay: Duration,
    pub process: ProcessOptions,
}

/// Set once a stop was requested; woken waiters re-check it.
#[derive(Clone, Default)]
pub struct Shutdown {
    requested: Arc<AtomicBool>,
    notify: Arc<Notify>,
}

impl Shutdown {
    /// Listen for Ctrl-C and SIGTERM in the background.
    pub fn on_signals() -> Self {
        let s = Self::default();
        let s2 = s.clone();
        tokio::spawn(async move {
            #[cfg(unix)]
            let term = async {
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(mut sig) => { sig.recv().await; }
                    Err(_) => std::future::pending::<()>().await,
                }
            };
            #[cfg(not(unix))]
            let term = std::future::pending::<()>();
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term => {}
            }
            tracing::info!("stop requested; finishing the current step");
            s2.request();
        });
        s
    }

    pub fn request(&self) {
        self.requested.store(true, Ordering::SeqCst);
        self.notify.notify_waiters();
    }

    pub fn is_requested(&self) -> bool {
        self.requested.load(Ordering::SeqCst)
    }

    /// Sleep, returning early (false) if a stop is requested.
    async fn sleep(&self, d: Duration) -> bool {
        if self.is_requested() {
            return false;
        }
        tokio::select! {
            _ = tokio::time::sleep(d) => !self.is_requested(),
            _ = self.notify.notified() => false,
        }
    }
}

/// The next tick time strictly after `now`.
pub fn next_tick(now: DateTime<Utc>, offset: Duration) -> DateTime<Utc> {
    let offset = TimeDelta::from_std(offset).unwrap_or_default();
    let mut t = snapshot::hour_slot(now) + offset;
    while t <= now {
        t += TimeDelta::hours(1);
    }
    t
}

/// One tick: collect this hour's snapshot, then process whatever is new.
pub async fn tick(lake: &Lake, client: &BinanceClient, process_opts: &ProcessOptions, shutdown: &Shutdown) -> Result<()> {
    match snapshot::collect(lake, client, Utc::now).await? {
        CollectOutcome::Written { key, symbols } => tracing::info!(%key, symbols, "collected"),
        CollectOutcome::AlreadyCollected { key } => tracing::info!(%key, "this hour is already collected"),
    }
    if shutdown.is_requested() {
        return Ok(());
    }
    let summary = process::process(lake, process_opts).await?;
    tracing::info!("processed: {summary}");
    Ok(())
}

pub async fn run(lake: &Lake, client: &BinanceClient, opts: &ServiceOptions, shutdown: Shutdown) -> Result<()> {
    if opts.once {
        return tick(lake, client, &opts.process, &shutdown).await;
    }
    tracing::info!(lake = %lake.describe(), binance = client.base_url(), "hourly service started; Ctrl-C stops it");
    // First tick right away (catches up the current hour), then aligned to the clock.
    loop {
        let deadline = next_tick(Utc::now(), opts.offset);
        let mut delay = opts.retry_delay;
        loop {
            match tick(lake, client, &opts.process, &shutdown).await {
                Ok(()) => break,
                Err(e) => {
                    let retry_at = Utc::now() + TimeDelta::from_std(delay).unwrap_or_default();
                    if retry_at >= deadline {
                        tracing::error!("tick failed: {}; giving up on this tick, the next one is at {deadline}", Report(&e));
                        break;
                    }
                    tracing::error!("tick failed: {}; retrying in {delay:?}", Report(&e));
                    if !shutdown.sleep(delay).await {
                        return Ok(());
                    }
                    delay = (delay * 2).min(Duration::from_secs(600));
                }
            }
        }
        if shutdown.is_requested() {
            tracing::info!("stopped");
            return Ok(());
        }
        let wait = (deadline - Utc::now()).to_std().unwrap_or_default();
        tracing::info!(next = %deadline, "waiting for the next tick");
        if !shutdown.sleep(wait).await {
            tracing::info!("stopped");
            return Ok(());
        }
    }
}
