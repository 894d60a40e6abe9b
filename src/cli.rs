//! The `tickerlake` command line: argument definitions, the one-time resolution of every setting
//! (`config`), dispatch to the pipeline stages, and the exit status of a failure.

use std::io::Write;
use std::time::Duration;

use anyhow::{Context, Result};
use chrono::Utc;
use clap::{Args, Parser, Subcommand};

use crate::catalog::{Catalog, CatalogKind, CatalogOptions, PartitionMode};
use crate::config;
use crate::lake::{self, Access, s3};
use crate::process::{self, ProcessError, ProcessOptions};
use crate::query::{self, EngineKind, OutputFormat};
use crate::service::{self, ServiceOptions, Shutdown};
use crate::simulator::{Scenario, SimConfig, Simulator};
use crate::source::archive::{self, ArchiveClient};
use crate::source::backfill;
use crate::source::binance::{self, BinanceClient, RetryPolicy};
use crate::source::snapshot::{self, CollectOutcome};

/// Hourly Binance spot prices → raw CSV → incremental indicators → Parquet lake (local or S3).
#[derive(Debug, Parser)]
#[command(name = "tickerlake", version, about, max_term_width = 100)]
pub struct Cli {
    #[allow(missing_docs)] // clap turns doc comments into help text; these are documented by --help
    #[command(flatten)]
    pub lake: LakeArgs,
    #[allow(missing_docs)]
    #[command(flatten)]
    pub catalog: CatalogArgs,
    /// More log detail (-v debug, -vv trace); RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    #[allow(missing_docs)]
    #[command(subcommand)]
    pub command: Command,
}

/// Where the lake is and how to reach it.
#[derive(Debug, Args)]
pub struct LakeArgs {
    /// Where the lake lives: a directory (the embedded default) or s3://BUCKET[/PREFIX].
    #[arg(long, global = true, hide_env_values = true, env = "TICKERLAKE_LAKE", default_value = "./lake")]
    pub lake: String,
    /// For s3:// lakes: aws (real S3), localstack (http://localhost:4566, path-style, dummy
    /// credentials if none), or s3-compatible (MinIO, SeaweedFS, Garage…: path-style, needs an endpoint).
    #[arg(long, global = true, hide_env_values = true, env = "TICKERLAKE_TARGET", value_enum, default_value_t = s3::Target::Aws)]
    pub target: s3::Target,
    /// Endpoint URL of every AWS service (S3, Glue, Athena: one emulator port); a service's
    /// AWS_ENDPOINT_URL_S3/_GLUE/_ATHENA overrides it, AWS_ENDPOINT_URL applies when neither is set.
    #[arg(long, global = true, hide_env_values = true, env = "TICKERLAKE_ENDPOINT_URL")]
    pub endpoint_url: Option<String>,
    /// Force path-style (true) or virtual-hosted (false) S3 addressing; default: path-style for
    /// any target other than aws or whenever a custom endpoint is set.
    #[arg(long, global = true, hide_env_values = true, env = "TICKERLAKE_PATH_STYLE")]
    pub path_style: Option<bool>,
}

/// Where the lake is registered for Athena (S3 lakes).
#[derive(Debug, Args)]
pub struct CatalogArgs {
    /// Keep a catalog in step after each committed process: none, or glue (S3 lakes).
    #[arg(long, global = true, hide_env_values = true, env = "TICKERLAKE_CATALOG", value_enum, default_value_t = CatalogKind::None)]
    pub catalog: CatalogKind,
    /// Glue database of the lake's tables.
    #[arg(long, global = true, hide_env_values = true, env = "TICKERLAKE_GLUE_DATABASE", default_value = "dbcrypto")]
    pub database: String,
    /// How partitions reach Athena: register them in Glue, or partition projection.
    #[arg(long, global = true, hide_env_values = true, env = "TICKERLAKE_PARTITIONS", value_enum, default_value_t = PartitionMode::Register)]
    pub partitions: PartitionMode,
}

impl CatalogArgs {
    /// The Glue catalog of the lake at `lake`, if `--catalog glue` (or `always`) asks for one.
    async fn open(&self, lake: &str, aws: &crate::aws::AwsOptions, always: bool) -> Result<Option<Catalog>> {
        if self.catalog == CatalogKind::None && !always {
            return Ok(None);
        }
        let options = CatalogOptions::for_lake(lake, &self.database, self.partitions)?;
        Ok(Some(Catalog::connect(aws, options).await))
    }
}

/// How to reach Binance.
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
    fn policy(&self) -> RetryPolicy {
        RetryPolicy {
            max_attempts: self.max_attempts.max(1),
            base_delay: Duration::from_millis(self.retry_ms),
            timeout: Duration::from_secs(self.timeout_secs.max(1)),
            ..RetryPolicy::default()
        }
    }

    fn client(&self) -> Result<BinanceClient> {
        Ok(BinanceClient::new(&self.binance_url, self.policy())?)
    }
}

/// `--quote`: an asset name as exchangeInfo writes it (upper case letters and digits).
fn parse_quote(s: &str) -> Result<String, String> {
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric()) {
        Ok(s.to_ascii_uppercase())
    } else {
        Err(format!("{s:?} is not an asset name (letters and digits, e.g. USDT)"))
    }
}

/// The subcommands (their doc comments are their --help).
#[derive(Debug, Subcommand)]
#[allow(missing_docs)]
pub enum Command {
    /// Create the lake if missing (S3: the bucket), check credentials and permissions, report.
    Init,
    /// Check the lake's configuration without changing anything; one line per problem.
    Doctor,
    /// Fetch all spot prices once and store this hour's raw snapshot (at most one per hour).
    Collect(#[command(flatten)] BinanceArgs),
    /// Fill missing hourly snapshots of any past range from Binance's public archive, then REST.
    ///
    /// Each slot H gets every pair of --quote (in any status: delisted pairs keep their history)
    /// with a kline opening at H-1h, at that kline's close, stamped H:00:00. Hours that have a
    /// snapshot, and hours known to have no kline (maintenance), are left alone; a killed run
    /// resumes where it stopped. History on day one: `tickerlake backfill --from 2024-01-01 && tickerlake process`.
    Backfill {
        /// First hour slot: a date (2024-01-01, midnight UTC) or an RFC 3339 time on the hour.
        #[arg(long, value_parser = backfill::parse_time, conflicts_with = "hours")]
        from: Option<chrono::DateTime<Utc>>,
        /// End of the range, excluded (a date or an RFC 3339 time on the hour); default: the
        /// current hour, which is collect's.
        #[arg(long, value_parser = backfill::parse_time)]
        to: Option<chrono::DateTime<Utc>>,
        /// The last N hours before --to (without --from or --hours: 48).
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
        hours: Option<u32>,
        /// Quote asset whose pairs go into the snapshots.
        #[arg(long, default_value = "USDT", value_parser = parse_quote)]
        quote: String,
        /// Binance's public data archive, tried first; `none`: the REST API only.
        #[arg(long, hide_env_values = true, env = "TICKERLAKE_ARCHIVE_URL", default_value = archive::DEFAULT_ARCHIVE_URL)]
        archive_url: String,
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
        /// The SQL, e.g. "SELECT * FROM processed LIMIT 10" (a leading `-- comment` is fine).
        #[arg(allow_hyphen_values = true)]
        sql: String,
        #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
        format: OutputFormat,
        /// local: embedded DuckDB over the lake; athena: Athena over the Glue catalog.
        #[arg(long, value_enum, default_value_t = EngineKind::Local)]
        engine: EngineKind,
        /// Athena workgroup.
        #[arg(long, hide_env_values = true, env = "TICKERLAKE_ATHENA_WORKGROUP", default_value = "primary")]
        workgroup: String,
        /// Where Athena writes results; default s3://BUCKET/PREFIX/athena-results/.
        #[arg(long, hide_env_values = true, env = "TICKERLAKE_ATHENA_OUTPUT")]
        output_location: Option<String>,
    },
    /// Register the S3 lake in AWS Glue (database, tables, partitions) so Athena can query it.
    Catalog,
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
        /// Make about one row in N malformed (wrong field count, non-numeric price, empty field,
        /// truncated timestamp), as real months have them; 0 for none.
        #[arg(long, default_value_t = 0)]
        malformed_one_in: u64,
        /// Delist about one USDT pair in N (its price turns zero, so its rows stop), each at an
        /// hour between --delist-from and --delist-until that depends only on the seed and the
        /// pair; 0 for none.
        #[arg(long, default_value_t = 0)]
        delisted_one_in: u64,
        /// First hour a pair may be delisted at; default: the first hour written.
        #[arg(long)]
        delist_from: Option<chrono::DateTime<Utc>>,
        /// Last hour a pair may be delisted at; default: the last hour written. Give both bounds
        /// when writing a history range by range, so every range delists the same pairs at the
        /// same hours.
        #[arg(long)]
        delist_until: Option<chrono::DateTime<Utc>>,
    },
    /// Answer PostgreSQL clients (Grafana, psql…) over the lake, read-only: processed, raw, quarantine.
    ///
    /// Any database and user name; a password (SCRAM) from TICKERLAKE_SERVE_PASSWORD, required
    /// for any address but loopback; TLS with --tls-cert/--tls-key. New commits are seen
    /// without a restart.
    Serve {
        /// Address to listen on; anything but loopback needs TICKERLAKE_SERVE_PASSWORD.
        #[arg(long, hide_env_values = true, env = "TICKERLAKE_SERVE_LISTEN", default_value = crate::serve::DEFAULT_LISTEN)]
        listen: String,
        /// TLS certificate chain (PEM, the server's certificate first): SSLRequests are answered
        /// with TLS, so clients can use sslmode=verify-full.
        #[arg(long, hide_env_values = true, env = "TICKERLAKE_SERVE_TLS_CERT")]
        tls_cert: Option<std::path::PathBuf>,
        /// The certificate's private key (PEM).
        #[arg(long, hide_env_values = true, env = "TICKERLAKE_SERVE_TLS_KEY")]
        tls_key: Option<std::path::PathBuf>,
        /// Seconds a query may run before it is cancelled.
        #[arg(long, default_value_t = 30)]
        query_timeout: u64,
        /// Seconds between looks at the lake for new commits (at most one look per query).
        #[arg(long, default_value_t = 1.0)]
        refresh_secs: f64,
        /// DuckDB memory budget of the served lake; beyond it queries spill to a temp directory.
        #[arg(long, hide_env_values = true, env = "TICKERLAKE_MEMORY_LIMIT", default_value = crate::serve::DEFAULT_MEMORY_LIMIT)]
        memory_limit: String,
        /// Client connections at once; one more is refused with SQLSTATE 53300.
        #[arg(long, default_value_t = crate::serve::DEFAULT_MAX_CONNECTIONS)]
        max_connections: usize,
        /// S3 lakes: local disk kept for the lake's files that queries fetched (e.g. 4GB).
        #[arg(long, default_value = crate::serve::DEFAULT_CACHE_SIZE)]
        cache_size: String,
        /// DuckDB threads one query may use (0: one per core). Dashboards send many small queries
        /// at once, which run side by side best one thread each; a lone heavy query is faster with more.
        #[arg(long, env = "TICKERLAKE_QUERY_THREADS", default_value_t = crate::serve::DEFAULT_QUERY_THREADS)]
        query_threads: usize,
    },
    /// Write a private CA and a server certificate for `serve --tls-cert/--tls-key` (the compose
    /// stack's), unless the directory has one already.
    #[command(hide = true)]
    ServeCert {
        /// Where to write ca.pem, server.pem and server.key.
        #[arg(long)]
        out: std::path::PathBuf,
        /// A DNS name or IP address clients connect to (repeatable).
        #[arg(long = "name", required = true)]
        names: Vec<String>,
    },
    /// Regenerate grafana/provisioning (dashboards, alert rules) from queries/*.sql (`./dev grafana`).
    #[command(hide = true)]
    GrafanaProvisioning {
        /// The shipped SQL folder.
        #[arg(long, default_value = "queries")]
        queries: std::path::PathBuf,
        /// The provisioning folder to write.
        #[arg(long, default_value = "grafana/provisioning")]
        out: std::path::PathBuf,
        /// Write nothing; fail if a committed file differs from what would be generated.
        #[arg(long)]
        check: bool,
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
        /// The history's irregularities: standard (a late listing, a delisting, a maintenance gap,
        /// zero-trade hours, missing archive files, an archive two days behind, around --anchor) or clean.
        #[arg(long, value_enum, default_value_t = SimScenario::Standard)]
        scenario: SimScenario,
        /// Where the standard scenario's irregularities fall (a date); default: 40 days ago.
        #[arg(long, value_parser = backfill::parse_time)]
        anchor: Option<chrono::DateTime<Utc>>,
    },
}

/// The simulator's history (`tickerlake simulator --scenario`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SimScenario {
    /// Every irregularity the archive tests need, once (see `Scenario::standard`).
    Standard,
    /// Uninterrupted walks, an archive with every complete day and month.
    Clean,
}

/// Exit status of a run that failed because of configuration or permissions: retrying cannot
/// help, a person must act (cron wrappers and the service tell it from a transient failure, 1).
pub const EXIT_PERMANENT: u8 = 3;

/// The error as one line (see `report::one_line`).
pub fn one_line(err: &anyhow::Error) -> String {
    crate::report::one_line(err.as_ref())
}

/// The exit status for a failed command: [`EXIT_PERMANENT`] when the error (each command's typed
/// error, under any context) says retrying cannot help.
pub fn exit_code(err: &anyhow::Error) -> u8 {
    fn permanent(e: &(dyn std::error::Error + 'static)) -> bool {
        macro_rules! any_of {
            ($($t:ty),*) => { false $(|| e.downcast_ref::<$t>().is_some_and(<$t>::is_permanent))* };
        }
        e.downcast_ref::<config::ConfigError>().is_some()
            || any_of!(
                crate::lake::LakeError,
                crate::lake::CommitError,
                crate::source::binance::BinanceError,
                crate::source::snapshot::CollectError,
                crate::source::backfill::BackfillError,
                crate::source::archive::ArchiveError,
                ProcessError,
                crate::service::TickError,
                crate::catalog::CatalogError,
                crate::query::QueryError,
                crate::query::athena::AthenaError,
                crate::serve::ServeError
            )
    }
    if err.chain().any(permanent) { EXIT_PERMANENT } else { 1 }
}

impl LakeArgs {
    /// Resolve the lake's settings (flags and environment) once, failing on any bad value.
    pub fn aws_options(&self) -> Result<crate::aws::AwsOptions, config::ConfigError> {
        config::aws_options(self.target, self.endpoint_url.as_deref(), self.path_style, &config::process_env)
    }
}

/// Run the parsed command line.
pub async fn execute(cli: Cli) -> Result<()> {
    let aws = cli.lake.aws_options()?;
    let open = |access| lake::open(&cli.lake.lake, &aws, access);
    let mut stdout = std::io::stdout().lock();
    match cli.command {
        Command::Init | Command::Doctor => {
            let create = matches!(cli.command, Command::Init);
            let lake = open(if create { Access::Create } else { Access::Existing }).await?;
            for line in lake.check(create).await? {
                writeln!(stdout, "ok: {line}")?;
            }
            if let Some(catalog) = cli.catalog.open(&cli.lake.lake, &aws, false).await? {
                writeln!(stdout, "ok: {}", catalog.check().await?)?;
            }
            writeln!(stdout, "{} is ready", lake.describe())?;
        }
        Command::Collect(b) => {
            let lake = open(Access::Create).await?;
            match snapshot::collect(&lake, &b.client()?, Utc::now).await? {
                CollectOutcome::Written { key, symbols } => writeln!(stdout, "collected {symbols} prices into {key}")?,
                CollectOutcome::AlreadyCollected { key } => writeln!(stdout, "this hour is already collected ({key}); nothing fetched")?,
            }
        }
        Command::Backfill { from, to, hours, quote, archive_url, binance } => {
            let now = Utc::now();
            let range = backfill::SlotRange::resolve(from, to, hours, now)?;
            let archive = match archive_url.as_str() {
                "none" => None,
                url => Some(ArchiveClient::new(url, binance.policy())?),
            };
            let lake = open(Access::Create).await?;
            let opts = backfill::BackfillOptions { range, quote };
            let summary = backfill::backfill(&lake, &binance.client()?, archive.as_ref(), &opts, now).await?;
            let span = |t: chrono::DateTime<Utc>| t.format("%Y-%m-%d %H:00");
            writeln!(stdout, "backfilled {} to {} UTC ({} pairs): {summary}", span(range.first), span(range.end), opts.quote)?;
        }
        Command::Process { full, memory_limit } => {
            let lake = open(Access::Create).await?;
            let catalog = cli.catalog.open(&cli.lake.lake, &aws, false).await?;
            let behind = match &catalog {
                Some(catalog) => catalog.mark_behind(&lake).await?,
                None => false,
            };
            let summary = process::process(&lake, &ProcessOptions { full, memory_limit, ..ProcessOptions::default() }).await?;
            writeln!(stdout, "{summary}")?;
            if let Some(catalog) = catalog {
                let report = catalog
                    .update(&lake, behind || summary.rollups_added > 0, &summary.partitions_written, &summary.dates_removed)
                    .await
                    .context("the run is committed, but the catalog update failed; the next run (or `tickerlake catalog`) catches up")?;
                writeln!(stdout, "{report}")?;
            }
        }
        Command::Catalog => {
            let catalog = cli.catalog.open(&cli.lake.lake, &aws, true).await?.expect("always opened");
            let lake = open(Access::Existing).await?;
            writeln!(stdout, "{}", catalog.reconcile(&lake).await?)?;
        }
        Command::Query { sql, format, engine: EngineKind::Local, .. } => {
            let lake = open(Access::Existing).await?;
            query::query(&lake, &sql, format, &mut stdout).await?;
        }
        Command::Query { sql, format, engine: EngineKind::Athena, workgroup, output_location } => {
            let options = CatalogOptions::for_lake(&cli.lake.lake, &cli.catalog.database, cli.catalog.partitions)?;
            let athena = query::athena::AthenaOptions {
                database: options.database.clone(),
                workgroup,
                output_location: output_location.unwrap_or_else(|| options.location("athena-results")),
            };
            let sdk = crate::aws::sdk_config(&aws).await;
            let client = crate::aws::athena_client(&sdk, &aws);
            let interrupt = async {
                let _ = tokio::signal::ctrl_c().await;
            };
            let result = query::athena::run(&client, &athena, &sql, interrupt).await?;
            tracing::info!(
                query_id = %result.query_id,
                "Athena scanned {} bytes in {} ms",
                result.scanned_bytes.unwrap_or(0),
                result.elapsed_ms.unwrap_or(0)
            );
            query::render(&result.batches, format, &mut stdout)?;
        }
        Command::Run { once, offset_secs, retry_secs, memory_limit, binance } => {
            let lake = open(Access::Create).await?;
            let opts = ServiceOptions {
                once,
                offset: Duration::from_secs(offset_secs),
                retry_delay: Duration::from_secs(retry_secs.max(1)),
                // The hourly run looks at the recent raw files only (every one once a day).
                process: ProcessOptions { memory_limit, listing: process::Listing::Recent, ..ProcessOptions::default() },
                catalog: cli.catalog.open(&cli.lake.lake, &aws, false).await?,
            };
            service::run(&lake, &binance.client()?, &opts, Shutdown::on_signals()).await?;
        }
        Command::SimulateHistory { hours, symbols, seed, until, malformed_one_in, delisted_one_in, delist_from, delist_until } => {
            let lake = open(Access::Create).await?;
            let config = SimConfig { symbols, seed };
            let last = snapshot::hour_slot(until.unwrap_or_else(|| Utc::now() - chrono::TimeDelta::hours(1)));
            let first = last - chrono::TimeDelta::hours(i64::from(hours.max(1)) - 1);
            let (delist_from, delist_until) = (delist_from.unwrap_or(first), delist_until.unwrap_or(last));
            let scenario = crate::simulator::Scenario {
                delistings: crate::simulator::spread_delistings(&config, delisted_one_in, delist_from, delist_until),
                ..Default::default()
            };
            let mut written = 0;
            for h in (0..hours).rev() {
                let hour = last - chrono::TimeDelta::hours(i64::from(h));
                let csv = crate::simulator::snapshot_with_malformed_rows(&config, &scenario, hour, malformed_one_in);
                if lake.put_if_absent(&snapshot::snapshot_key(hour), csv).await? == lake::PutOutcome::Created {
                    written += 1;
                }
            }
            writeln!(stdout, "wrote {written} simulated hourly snapshot(s) of {symbols} symbols into {}", lake.describe())?;
            if delisted_one_in > 0 {
                writeln!(stdout, "{} USDT pair(s) delisted between {delist_from} and {delist_until}", scenario.delistings.len())?;
            }
        }
        Command::Serve {
            listen,
            tls_cert,
            tls_key,
            query_timeout,
            refresh_secs,
            memory_limit,
            max_connections,
            cache_size,
            query_threads,
        } => {
            let tls = crate::serve::tls_paths(tls_cert, tls_key)?;
            let lake = open(Access::Existing).await?;
            // The password only ever comes from the environment (never argv, never logged).
            let password = std::env::var("TICKERLAKE_SERVE_PASSWORD").ok().filter(|p| !p.is_empty());
            let opts = crate::serve::ServeOptions {
                listen,
                password,
                tls,
                query_timeout: Duration::from_secs(query_timeout.max(1)),
                refresh: Duration::from_secs_f64(refresh_secs.max(0.0)),
                threads: (query_threads > 0).then_some(query_threads),
                memory_limit,
                max_connections: max_connections.max(1),
                cache_size,
            };
            drop(stdout);
            crate::serve::serve(lake, &opts, crate::service::stop_signal(), |addr| {
                // The first line on stdout says where to connect (tests and scripts read it).
                println!("listening on {addr}; connect with: psql -h {} -p {} -U tickerlake tickerlake", addr.ip(), addr.port());
            })
            .await?;
            return Ok(());
        }
        Command::ServeCert { out, names } => {
            let wrote = crate::serve::tls::generate(&out, &names)?;
            let what = if wrote { "wrote" } else { "kept the existing" };
            writeln!(
                stdout,
                "{what} {}/ca.pem, server.pem and server.key (clients: sslrootcert=ca.pem sslmode=verify-full)",
                out.display()
            )?;
        }
        Command::GrafanaProvisioning { queries, out, check } => {
            let written = crate::serve::grafana::write(&queries, &out, check)?;
            if check {
                writeln!(stdout, "{} matches queries/", out.display())?;
            } else {
                writeln!(stdout, "wrote {} file(s) under {}", written.len(), out.display())?;
            }
        }
        Command::Simulator { port, symbols, seed, scenario, anchor } => {
            let history = match scenario {
                SimScenario::Clean => Scenario::default(),
                SimScenario::Standard if symbols < 12 => {
                    anyhow::bail!("the standard scenario needs --symbols 12 or more (it uses 6 USDT pairs); use more, or --scenario clean")
                }
                SimScenario::Standard => {
                    let anchor = anchor.unwrap_or_else(|| snapshot::hour_slot(Utc::now() - chrono::TimeDelta::days(40)));
                    Scenario::standard(symbols, anchor)
                }
            };
            let sim = Simulator::start_with(SimConfig { symbols, seed }, history, port).await?;
            writeln!(
                stdout,
                "Binance simulator listening on {} ({symbols} symbols, seed {seed}, REST API and archive); Ctrl-C stops it",
                sim.url()
            )?;
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
