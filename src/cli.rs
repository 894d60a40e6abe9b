//! The `tickerlake` command line: argument definitions and dispatch to the pipeline stages.

use std::io::Write;
use std::time::Duration;

use anyhow::Result;
use chrono::Utc;
use clap::{Args, Parser, Subcommand};

use crate::lake::{self, s3};
use crate::process::{self, ProcessOptions};
use crate::query::{self, OutputFormat};
use crate::service::{self, ServiceOptions, Shutdown};
use crate::simulator::{SimConfig, Simulator};
use crate::source::binance::{self, BinanceClient, RetryPolicy};
use crate::source::snapshot::{self, CollectOutcome};

/// Hourly Binance spot prices → raw CSV → incremental indicators → Parquet lake (local or S3).
#[derive(Debug, Parser)]
#[command(name = "tickerlake", version, about, max_term_width = 100)]
pub struct Cli {
    #[command(flatten)]
    pub lake: LakeArgs,
    /// More log detail (-v debug, -vv trace); RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct LakeArgs {
    /// Where the lake lives: a directory (the embedded default) or s3://BUCKET[/PREFIX].
    #[arg(long, global = true, hide_env_values = true, env = "TICKERLAKE_LAKE", default_value = "./lake")]
    pub lake: String,
    /// For s3:// lakes: aws (real S3), localstack (http://localhost:4566, path-style, dummy
    /// credentials if none), or s3-compatible (MinIO, SeaweedFS, Garage…: path-style, needs an endpoint).
    #[arg(long, global = true, hide_env_values = true, env = "TICKERLAKE_TARGET", value_enum, default_value_t = s3::Target::Aws)]
    pub target: s3::Target,
    /// S3 endpoint URL; otherwise AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL, else the target's default.
    #[arg(long, global = true, hide_env_values = true, env = "TICKERLAKE_ENDPOINT_URL")]
    pub endpoint_url: Option<String>,
    /// Force path-style (true) or virtual-hosted (false) S3 addressing; default: path-style for
    /// any target other than aws or whenever a custom endpoint is set.
    #[arg(long, global = true, hide_env_values = true, env = "TICKERLAKE_PATH_STYLE")]
    pub path_style: Option<bool>,
}

#[derive(Debug, Args)]
pub struct BinanceArgs {
    /// Binance REST base URL. Where api.binance.com answers 451 (restricted location), use
    /// https://data-api.binance.vision or https://api.binance.us.
    #[arg(long, hide_env_values = true, env = "TICKERLAKE_BINANCE_URL", default_value = binance::DEFAULT_BASE_URL)]
    pub binance_url: String,
    /// Attempts per request for 429s, 5xx answers and timeouts (never for 418 or 451).
    #[arg(long, hide_env_values = true, env = "TICKERLAKE_BINANCE_MAX_ATTEMPTS", default_value_t = 4)]
    pub max_attempts: u32,
    /// First retry delay in milliseconds; doubles each attempt (with jitter).
    #[arg(long, hide_env_values = true, env = "TICKERLAKE_BINANCE_RETRY_MS", default_value_t = 500)]
    pub retry_ms: u64,
    /// Per-request timeout in seconds.
    #[arg(long, hide_env_values = true, env = "TICKERLAKE_BINANCE_TIMEOUT_SECS", default_value_t = 15)]
    pub timeout_secs: u64,
}

impl BinanceArgs {
    fn client(&self) -> Result<BinanceClient> {
        BinanceClient::new(&self.binance_url, RetryPolicy {
            max_attempts: self.max_attempts.max(1),
            base_delay: Duration::from_millis(self.retry_ms),
            timeout: Duration::from_secs(self.timeout_secs.max(1)),
            ..RetryPolicy::default()
        })
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create the lake if missing (S3: the bucket), check credentials and permissions, report.
    Init,
    /// Check the lake's configuration without changing anything; one line per problem.
    Doctor,
    /// Fetch all spot prices once and store this hour's raw snapshot (at most one per hour).
    Collect(#[command(flatten)] BinanceArgs),
    /// Fill missing hourly snapshots of the last N hours from Binance's hourly klines.
    Backfill {
        /// How many complete hours back to fill (one klines page: at most 1000).
        #[arg(long, default_value_t = 48, value_parser = clap::value_parser!(u32).range(1..=1000))]
        hours: u32,
        /// Quote asset whose trading pairs to fetch.
        #[arg(long, default_value = "USDT")]
        quote: String,
        #[command(flatten)]
        binance: BinanceArgs,
    },
    /// Turn new raw snapshots into indicator partitions (processed/date=YYYY-MM-DD/).
    Process {
        /// Rebuild every partition from all raw snapshots instead of only what is new.
        #[arg(long)]
        full: bool,
        /// DuckDB memory budget; beyond it work spills to a temp directory (e.g. 256MB, 2GB).
        #[arg(long, hide_env_values = true, env = "TICKERLAKE_MEMORY_LIMIT", default_value = process::DEFAULT_MEMORY_LIMIT)]
        memory_limit: String,
    },
    /// Run SQL over the lake: views `processed` and `raw`, as the original Athena tables, and `quarantine`.
    Query {
        /// The SQL, e.g. "SELECT * FROM processed LIMIT 10".
        sql: String,
        #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
        format: OutputFormat,
    },
    /// The hourly service: collect then process at the top of every hour, until stopped.
    Run {
        /// One tick now (collect + process), then exit: for cron.
        #[arg(long)]
        once: bool,
        /// Seconds after the top of the hour at which ticks start.
        #[arg(long, default_value_t = 5)]
        offset_secs: u64,
        /// First retry delay in seconds after a failed tick (doubles, up to 10 minutes).
        #[arg(long, default_value_t = 60)]
        retry_secs: u64,
        /// DuckDB memory budget for each tick's processing (e.g. 256MB, 2GB).
        #[arg(long, hide_env_values = true, env = "TICKERLAKE_MEMORY_LIMIT", default_value = process::DEFAULT_MEMORY_LIMIT)]
        memory_limit: String,
        #[command(flatten)]
        binance: BinanceArgs,
    },
    /// Write N hours of simulated raw snapshots straight into the lake (benchmarks, demos; no server).
    SimulateHistory {
        /// Hours of history, ending at --until.
        #[arg(long, default_value_t = 72)]
        hours: u32,
        #[arg(long, default_value_t = 50)]
        symbols: usize,
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Last hour to write (RFC 3339, e.g. 2025-05-31T23:00:00Z); default: the previous hour.
        #[arg(long)]
        until: Option<chrono::DateTime<Utc>>,
    },
    /// Serve a Binance-compatible simulator on 127.0.0.1 (tests and offline demos).
    Simulator {
        /// Port to listen on (0 picks a free one; the URL is printed).
        #[arg(long, default_value_t = 8900)]
        port: u16,
        /// Number of symbols (a mix of USDT and other quotes, some priced zero).
        #[arg(long, default_value_t = 50)]
        symbols: usize,
        /// Seed of the price walks.
        #[arg(long, default_value_t = 42)]
        seed: u64,
    },
}

/// Tuning knobs kept out of --help: seconds from an environment variable.
fn env_secs(name: &str) -> Option<Duration> {
    std::env::var(name).ok().and_then(|s| s.parse().ok()).map(Duration::from_secs)
}

impl LakeArgs {
    pub fn s3_options(&self) -> s3::S3Options {
        s3::S3Options {
            target: self.target,
            endpoint_url: self.endpoint_url.clone(),
            path_style: self.path_style,
            lock_ttl: env_secs("TICKERLAKE_LOCK_TTL_SECS"),
            attempt_timeout: env_secs("TICKERLAKE_S3_TIMEOUT_SECS"),
        }
    }

    pub async fn open(&self) -> Result<lake::Lake> {
        lake::open(&self.lake, &self.s3_options()).await
    }
}

pub async fn execute(cli: Cli) -> Result<()> {
    let mut stdout = std::io::stdout().lock();
    match cli.command {
        Command::Init | Command::Doctor => {
            let create = matches!(cli.command, Command::Init);
            let lake = cli.lake.open().await?;
            for line in lake.check(create).await? {
                writeln!(stdout, "ok: {line}")?;
            }
            writeln!(stdout, "{} is ready", lake.describe())?;
        }
        Command::Collect(b) => {
            let lake = cli.lake.open().await?;
            match snapshot::collect(&lake, &b.client()?, Utc::now).await? {
                CollectOutcome::Written { key, symbols } => writeln!(stdout, "collected {symbols} prices into {key}")?,
                CollectOutcome::AlreadyCollected { key } => writeln!(stdout, "this hour is already collected ({key}); nothing fetched")?,
            }
        }
        Command::Backfill { hours, quote, binance } => {
            let lake = cli.lake.open().await?;
            let written = snapshot::backfill(&lake, &binance.client()?, Utc::now(), hours, &quote).await?;
            writeln!(stdout, "backfilled {} hourly snapshot(s) of {quote} pairs", written.len())?;
        }
        Command::Process { full, memory_limit } => {
            let lake = cli.lake.open().await?;
            let summary = process::process(&lake, &ProcessOptions { full, memory_limit }).await?;
            writeln!(stdout, "{summary}")?;
        }
        Command::Query { sql, format } => {
            let lake = cli.lake.open().await?;
            query::query(&lake, &sql, format, &mut stdout).await?;
        }
        Command::Run { once, offset_secs, retry_secs, memory_limit, binance } => {
            let lake = cli.lake.open().await?;
            let opts = ServiceOptions {
                once,
                offset: Duration::from_secs(offset_secs),
                retry_delay: Duration::from_secs(retry_secs.max(1)),
                process: ProcessOptions { full: false, memory_limit },
            };
            service::run(&lake, &binance.client()?, &opts, Shutdown::on_signals()).await?;
        }
        Command::SimulateHistory { hours, symbols, seed, until } => {
            let lake = cli.lake.open().await?;
            let config = SimConfig { symbols, seed };
            let last = snapshot::hour_slot(until.unwrap_or_else(|| Utc::now() - chrono::TimeDelta::hours(1)));
            let mut written = 0;
            for h in (0..hours).rev() {
                let hour = last - chrono::TimeDelta::hours(i64::from(h));
                let csv = crate::simulator::snapshot_for_hour(&config, hour);
                if lake.put_if_absent(&snapshot::snapshot_key(hour), csv).await? == lake::PutOutcome::Created {
                    written += 1;
                }
            }
            writeln!(stdout, "wrote {written} simulated hourly snapshot(s) of {symbols} symbols into {}", lake.describe())?;
        }
        Command::Simulator { port, symbols, seed } => {
            let sim = Simulator::start(SimConfig { symbols, seed }, port).await?;
            writeln!(stdout, "Binance simulator listening on {} ({symbols} symbols, seed {seed}); Ctrl-C stops it", sim.url())?;
            stdout.flush()?;
            drop(stdout);
            tokio::select! {
                _ = sim.serve_forever() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
    }
    Ok(())
}
