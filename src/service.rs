//! `run`: the hourly service. Each tick collects a snapshot, then processes; ticks are aligned to
//! the clock (the top of each UTC hour plus an offset). A tick that failed for a transient reason
//! (network, throttling, a lost commit race) is retried with backoff until the next tick is due; one
//! that failed for a permanent reason (credentials, permissions, a missing bucket, a Binance ban) is
//! not retried: it is logged once and the service waits for the next tick. Later ticks go on
//! regardless. Ctrl-C or SIGTERM stops the service between steps, never in the middle of a write.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use tokio::sync::Notify;

use crate::catalog::{Catalog, CatalogError};
use crate::lake::Lake;
use crate::process::{self, ProcessError, ProcessOptions};
use crate::source::binance::BinanceClient;
use crate::source::snapshot::{self, CollectError, CollectOutcome};

/// A failed tick.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TickError {
    /// Collecting the hour's snapshot failed.
    #[error("{0}")]
    Collect(#[from] CollectError),
    /// Processing failed.
    #[error("{0}")]
    Process(#[from] ProcessError),
    /// The run committed, but the catalog could not be brought in step (the next tick catches up).
    #[error("the run is committed, but the catalog update failed: {0}")]
    Catalog(#[from] CatalogError),
}

impl TickError {
    /// Whether retrying cannot help (configuration, permissions, a ban): fail the tick at once.
    pub fn is_permanent(&self) -> bool {
        match self {
            Self::Collect(e) => e.is_permanent(),
            Self::Process(e) => e.is_permanent(),
            Self::Catalog(e) => e.is_permanent(),
        }
    }
}

/// How to run the service.
#[derive(Debug, Clone)]
pub struct ServiceOptions {
    /// Run one tick now and exit (for cron); its failure is the exit status.
    pub once: bool,
    /// Delay after the top of the hour before a tick starts.
    pub offset: Duration,
    /// First retry delay after a failed tick; doubles up to 10 minutes.
    pub retry_delay: Duration,
    /// Options of each tick's processing.
    pub process: ProcessOptions,
    /// The catalog to keep in step after each committed run, if any.
    pub catalog: Option<Catalog>,
}

/// Wait for Ctrl-C or SIGTERM.
pub async fn stop_signal() {
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut sig) => {
                sig.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
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
            stop_signal().await;
            tracing::info!("stop requested; finishing the current step");
            s2.request();
        });
        s
    }

    /// Ask the service to stop.
    pub fn request(&self) {
        self.requested.store(true, Ordering::SeqCst);
        self.notify.notify_waiters();
    }

    /// Whether a stop was asked for.
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

/// One tick: collect this hour's snapshot, process whatever is new, then bring the catalog (if
/// any) in step: the dates this run wrote or removed, or everything when the lake notes that an
/// earlier update failed or was interrupted (see `catalog::BEHIND_KEY`), in either mode.
pub async fn tick(lake: &Lake, client: &BinanceClient, opts: &ServiceOptions, shutdown: &Shutdown) -> Result<(), TickError> {
    match snapshot::collect(lake, client, Utc::now).await? {
        CollectOutcome::Written { key, symbols } => tracing::info!(%key, symbols, "collected"),
        CollectOutcome::AlreadyCollected { key } => tracing::info!(%key, "this hour is already collected"),
    }
    if shutdown.is_requested() {
        return Ok(());
    }
    let behind = match &opts.catalog {
        Some(catalog) => catalog.mark_behind(lake).await?,
        None => false,
    };
    let summary = process::process(lake, &opts.process).await?;
    tracing::info!("processed: {summary}");
    if let Some(catalog) = &opts.catalog {
        // Rollups added to earlier dates: their partitions are registered by a full reconciliation.
        let behind = behind || summary.rollups_added > 0;
        let report = catalog.update(lake, behind, &summary.partitions_written, &summary.dates_removed).await?;
        tracing::info!("{report}");
    }
    Ok(())
}

/// Run ticks until stopped (or one, with `once`, whose failure is returned).
pub async fn run(lake: &Lake, client: &BinanceClient, opts: &ServiceOptions, shutdown: Shutdown) -> Result<(), TickError> {
    if opts.once {
        return tick(lake, client, opts, &shutdown).await;
    }
    tracing::info!(lake = %lake.describe(), binance = client.base_url(), "hourly service started; Ctrl-C stops it");
    // First tick right away (catches up the current hour), then aligned to the clock.
    loop {
        let deadline = next_tick(Utc::now(), opts.offset);
        let mut delay = opts.retry_delay;
        loop {
            match tick(lake, client, opts, &shutdown).await {
                Ok(()) => break,
                Err(e) if e.is_permanent() => {
                    tracing::error!(
                        "tick failed: {}; not retrying (this needs a fix, not a retry), the next tick is at {deadline}",
                        crate::report::one_line(&e)
                    );
                    break;
                }
                Err(e) => {
                    let retry_at = Utc::now() + TimeDelta::from_std(delay).unwrap_or_default();
                    if retry_at >= deadline {
                        tracing::error!(
                            "tick failed: {}; giving up on this tick, the next one is at {deadline}",
                            crate::report::one_line(&e)
                        );
                        break;
                    }
                    tracing::error!("tick failed: {}; retrying in {delay:?}", crate::report::one_line(&e));
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
