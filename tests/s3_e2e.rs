//! End to end against real S3 emulators started as local processes (ministack, LocalStack) on
//! 127.0.0.1: the whole pipeline, the endpoint going down mid-run, concurrent writers, and the
//! request count of an incremental run. The LocalStack scenarios also run through testcontainers
//! against the locally built image (docker/images.sh); without a Docker engine they skip loudly.
//!
//! The emulators come from `./dev emulators` (virtualenvs under $TICKERLAKE_VENV). A missing one
//! fails the test with the command to run; TICKERLAKE_SKIP_EMULATORS=1 skips loudly, except in CI.

mod common;

use std::time::Duration;

use common::emulator::{Emulator, Kind, Proxy, s3_client};
use common::{Out, PausedRun, ROWS_SQL, tickerlake};
use tickerlake::simulator::{SimConfig, Simulator};

/// Environment a user would set for this emulator: the standard AWS variables, no flags with secrets.
fn aws_env(endpoint: &str, target: &str) -> Vec<(&'static str, String)> {
    let mut env = common::emulator::aws_env(endpoint, target, 3);
    env.push(("TICKERLAKE_LOCK_TTL_SECS", "4".into()));
    env
}

fn str_env<'a>(env: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    env.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

async fn tl(lake: &str, args: &[&str], env: &[(&'static str, String)]) -> Out {
    tickerlake(lake, args, &str_env(env)).await
}

async fn keys(client: &aws_sdk_s3::Client, bucket: &str, prefix: &str) -> Vec<String> {
    let out = client.list_objects_v2().bucket(bucket).prefix(prefix).send().await.unwrap();
    out.contents().iter().filter_map(|o| o.key().map(str::to_owned)).collect()
}

/// simulator → collect → S3 → process → query, plus a migrated bucket's raw files.
async fn pipeline(endpoint: &str, target: &str) {
    let env = aws_env(endpoint, target);
    let sim = Simulator::start(SimConfig { symbols: 20, seed: 3 }, 0).await.unwrap();
    let lake = "s3://tickerlake-e2e/prices";
    let init = tl(lake, &["init"], &env).await;
    init.ok();
    assert!(init.stdout.contains("created it"), "{}", init.stdout);

    tl(lake, &["collect", "--binance-url", &sim.url()], &env).await.ok();
    tl(lake, &["backfill", "--hours", "6", "--binance-url", &sim.url(), "--archive-url", &sim.url()], &env).await.ok();
    // A bucket migrated from the original pipeline: its file naming and timestamp format.
    let client = s3_client(endpoint);
    let seed = common::csv(&[
        ("BTCUSDT", "97000.50000000", "2025-05-08 03:16:32.801588+00:00"),
        ("ETHBTC", "0.019", "2025-05-08 03:16:32.801588+00:00"),
        ("SOLUSDT", "150.00000000", "2025-05-08 03:16:"),
    ]);
    client
        .put_object()
        .bucket("tickerlake-e2e")
        .key("prices/raw/raw_crypto_prices_20250508T0316.csv")
        .body(seed.into_bytes().into())
        .send()
        .await
        .unwrap();

    let out = tl(lake, &["process"], &env).await;
    out.ok();
    assert!(out.stdout.contains("S3 requests"), "{}", out.stdout);
    let again = tl(lake, &["process"], &env).await;
    again.ok();
    assert!(again.stdout.contains("nothing new"), "{}", again.stdout);

    let processed = keys(&client, "tickerlake-e2e", "prices/processed/").await;
    assert!(processed.contains(&"prices/processed/date=2025-05-08/part-00000.parquet".to_owned()), "{processed:?}");
    assert!(processed.iter().all(|k| k.ends_with("/part-00000.parquet")), "one file per partition: {processed:?}");
    assert!(keys(&client, "tickerlake-e2e", "prices/_tickerlake/lock").await.is_empty(), "the lease is released");

    let out =
        tl(lake, &["query", "--format", "csv", "SELECT symbol, price, previous_price FROM processed WHERE date = DATE '2025-05-08'"], &env)
            .await;
    out.ok();
    assert_eq!(out.stdout.trim(), "symbol,price,previous_price\nBTCUSDT,97000.5,");
    let out = tl(
        lake,
        &[
            "query",
            "--format",
            "json",
            "SELECT symbol, STDDEV(price_change_pct) AS volatility FROM processed GROUP BY symbol ORDER BY volatility DESC LIMIT 10",
        ],
        &env,
    )
    .await;
    out.ok();
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 9, "10 USDT pairs, one priced zero: {}", out.stdout);
    // Quarantined rows are downloaded for the quarantine view like the others.
    let out = tl(lake, &["query", "--format", "csv", "SELECT source_file, line, reason, record FROM quarantine"], &env).await;
    out.ok();
    assert_eq!(
        out.stdout,
        "source_file,line,reason,record\nraw/raw_crypto_prices_20250508T0316.csv,4,unparsable timestamp,\"SOLUSDT,150.00000000,2025-05-08 03:16:\"\n"
    );

    // Read-only commands on a bucket that does not exist: one line, and no bucket is created.
    for args in [&["query", "SELECT count(*) FROM processed"][..], &["doctor"]] {
        let out = tl("s3://tickerlake-e2e-typo/prices", args, &env).await;
        out.failed();
        assert!(
            out.stderr.contains("bucket \"tickerlake-e2e-typo\" does not exist") && out.stderr.lines().count() == 1,
            "{args:?}: {}",
            out.stderr
        );
    }
    assert!(client.head_bucket().bucket("tickerlake-e2e-typo").send().await.is_err(), "a read-only command created a bucket");
}

/// How a test takes the endpoint down and brings it back.
enum Outage<'a> {
    /// Cut the network through a proxy; the emulator keeps its state.
    Proxy(&'a mut Proxy),
    /// kill -9 the emulator and restart it on its persisted data (ministack).
    Restart(&'a mut Emulator),
}

impl Outage<'_> {
    fn cut(&mut self) {
        match self {
            Outage::Proxy(p) => p.cut(),
            Outage::Restart(e) => e.kill(),
        }
    }

    async fn restore(&mut self) {
        match self {
            Outage::Proxy(p) => p.resume().await,
            Outage::Restart(e) => e.restart(),
        }
    }
}

/// The endpoint goes down while a run publishes; the run fails cleanly, and the next run after
/// recovery yields exactly what an uninterrupted run yields, with nothing left half-done.
/// ministack: kill -9 and restart on its persisted data. LocalStack (no persistence in the
/// community edition): a network outage through a proxy, the emulator keeping its state.
async fn endpoint_down_mid_run(emu: &mut Emulator) {
    let target = emu.target();
    match emu.kind {
        Kind::Localstack | Kind::Moto => {
            let mut proxy = Proxy::start(emu.port).await;
            let env = aws_env(&proxy.endpoint(), target);
            outage_then_rerun(&env, Outage::Proxy(&mut proxy)).await;
        }
        Kind::Ministack => {
            let env = aws_env(&emu.endpoint(), target);
            outage_then_rerun(&env, Outage::Restart(emu)).await;
        }
    }
}

/// The scenario of `endpoint_down_mid_run`, on an endpoint reached through `env`.
async fn outage_then_rerun(env: &[(&'static str, String)], mut outage: Outage<'_>) {
    let (lake, reference) = ("s3://tickerlake-fault/a", "s3://tickerlake-fault/b");
    tl(lake, &["init"], env).await.ok();
    for l in [lake, reference] {
        tl(l, &["simulate-history", "--hours", "30", "--symbols", "16", "--until", "2025-05-09T05:00:00Z"], env).await.ok();
        tl(l, &["process"], env).await.ok();
        // A late day and new hours, then the interrupted run.
        tl(l, &["simulate-history", "--hours", "40", "--symbols", "16", "--until", "2025-05-09T15:00:00Z"], env).await.ok();
    }
    tl(reference, &["process"], env).await.ok();
    let want = tl(reference, &["query", "--format", "csv", ROWS_SQL], env).await;
    want.ok();

    let run = PausedRun::start(lake, &str_env(env)).await;
    // Take the endpoint down while the run is paused between two uploads.
    outage.cut();
    let (status, stderr) = run.finish().await;
    assert!(!status.success(), "the run should fail: {stderr}");
    let last = stderr.lines().last().unwrap_or("");
    assert!(
        last.starts_with("error: ") && (last.contains("cannot reach the S3 endpoint") || last.contains("timed out")),
        "one clear line: {stderr}"
    );

    outage.restore().await;
    // The dead run could not release its lease; it expires (TTL 4 s here), then the re-run goes.
    tokio::time::sleep(Duration::from_secs(5)).await;
    tl(lake, &["process"], env).await.ok();
    let got = tl(lake, &["query", "--format", "csv", ROWS_SQL], env).await;
    got.ok();
    assert!(got.stdout == want.stdout, "after recovery the lake differs from an uninterrupted run");
    let again = tl(lake, &["process"], env).await;
    assert!(again.stdout.contains("nothing new"), "{}", again.stdout);
}

/// Two writers at once: one holds the lease, the other is refused with a clear message.
async fn concurrent_writers(endpoint: &str, target: &str) {
    let env = aws_env(endpoint, target);
    let lake = "s3://tickerlake-lock/x";
    tl(lake, &["init"], &env).await.ok();
    tl(lake, &["simulate-history", "--hours", "6", "--symbols", "8", "--until", "2025-05-09T05:00:00Z"], &env).await.ok();
    let first = PausedRun::start(lake, &str_env(&env)).await;
    let second = tl(lake, &["process"], &env).await;
    second.failed();
    assert!(second.stderr.contains("another tickerlake run is writing"), "{}", second.stderr);
    let (status, stderr) = first.finish().await;
    assert!(status.success(), "{stderr}");
    let after = tl(lake, &["process"], &env).await;
    after.ok();
    assert!(after.stdout.contains("nothing new"), "{}", after.stdout);
}

/// A run that works longer than its lease's TTL keeps renewing it: a second writer is still
/// refused after several TTLs.
async fn lease_is_renewed_during_a_long_run(endpoint: &str, target: &str) {
    let env = aws_env(endpoint, target);
    let lake = "s3://tickerlake-renew/x";
    tl(lake, &["init"], &env).await.ok();
    tl(lake, &["simulate-history", "--hours", "6", "--symbols", "8", "--until", "2025-05-09T05:00:00Z"], &env).await.ok();
    // TTL 4 s (aws_env); the run pauses 12 s.
    let first = PausedRun::start_at(lake, &str_env(&env), "mid-stage", 12).await;
    tokio::time::sleep(Duration::from_secs(9)).await;
    let second = tl(lake, &["process"], &env).await;
    second.failed();
    assert!(second.stderr.contains("another tickerlake run is writing"), "the lease was renewed: {}", second.stderr);
    let (status, stderr) = first.finish().await;
    assert!(status.success(), "{stderr}");
    assert!(tl(lake, &["process"], &env).await.stdout.contains("nothing new"));
}

/// Writers forced past the lease: the conditional manifest commit alone keeps the lake exact.
async fn writers_past_the_lease(endpoint: &str, target: &str) {
    let env = aws_env(endpoint, target);
    tl("s3://tickerlake-cas/a", &["init"], &env).await.ok();
    common::two_writers_past_the_lock("s3://tickerlake-cas/a", "s3://tickerlake-cas/b", &str_env(&env)).await;
}

/// A missing bucket is a configuration problem: `run --once` fails at once with exit status 3.
async fn missing_bucket_is_permanent(endpoint: &str, target: &str) {
    let env = aws_env(endpoint, target);
    let out = tl("s3://tickerlake-no-such-bucket/x", &["process"], &env).await;
    assert_eq!(out.code, Some(3), "{}", out.stderr);
    assert!(out.stderr.contains("does not exist") && out.stderr.contains("tickerlake init"), "{}", out.stderr);
}

/// An hourly run's S3 request count does not grow with the history it sits on.
async fn incremental_requests_are_constant(endpoint: &str, target: &str) {
    // A lease long enough that no renewal falls inside a run (their count follows the run's
    // duration on a busy machine, not the history).
    let env: Vec<(&'static str, String)> = aws_env(endpoint, target)
        .into_iter()
        .map(|(k, v)| if k == "TICKERLAKE_LOCK_TTL_SECS" { (k, "600".into()) } else { (k, v) })
        .collect();
    let mut counts = Vec::new();
    for (lake, hours) in [("s3://tickerlake-req/day", 24), ("s3://tickerlake-req/week", 168)] {
        tl(lake, &["init"], &env).await.ok();
        tl(lake, &["simulate-history", "--hours", &hours.to_string(), "--symbols", "8", "--until", "2025-05-20T22:00:00Z"], &env)
            .await
            .ok();
        tl(lake, &["process"], &env).await.ok();
        tl(lake, &["simulate-history", "--hours", "1", "--symbols", "8", "--until", "2025-05-20T23:00:00Z"], &env).await.ok();
        let out = tl(lake, &["process"], &env).await;
        out.ok();
        let n: u64 = out.stdout.rsplit(", ").next().unwrap().split_whitespace().next().unwrap().parse().unwrap();
        counts.push(n);
    }
    assert_eq!(counts[0], counts[1], "requests for one new snapshot on 24 h vs 168 h of history");
}

/// The endpoint from the standard AWS variables alone (no tickerlake flag or variable): the
/// service-specific one with an explicit target, and the global one with the default target.
async fn endpoint_from_aws_env_vars(endpoint: &str) {
    let base: Vec<(&'static str, String)> = aws_env(endpoint, "aws").into_iter().filter(|(k, _)| !k.starts_with("TICKERLAKE_")).collect();
    for (var, target) in [("AWS_ENDPOINT_URL_S3", "s3-compatible"), ("AWS_ENDPOINT_URL", "aws")] {
        let mut env = base.clone();
        env.push((var, endpoint.to_owned()));
        env.push(("TICKERLAKE_TARGET", target.to_owned()));
        let out = tl("s3://tickerlake-envvars/x", &["init"], &env).await;
        out.ok();
        assert!(out.stdout.contains(&format!("endpoint {endpoint} (path-style addressing)")), "{var}: {}", out.stdout);
    }
}

/// The commit protocol's hardening scenarios (tests/common) on an S3 lake.
async fn lost_staging(endpoint: &str, target: &str) {
    let env = aws_env(endpoint, target);
    let (lake, reference) = ("s3://tl-lost/lake", "s3://tl-lost/reference");
    tl(lake, &["init"], &env).await.ok();
    let client = s3_client(endpoint);
    common::lost_staged_files_are_rebuilt(lake, reference, &str_env(&env), async || {
        let staged = keys(&client, "tl-lost", "lake/_tickerlake/runs/").await;
        assert!(!staged.is_empty(), "the crashed run staged files");
        for key in staged {
            client.delete_object().bucket("tl-lost").key(key).send().await.unwrap();
        }
    })
    .await;
}

async fn ambiguous_commit(endpoint: &str, target: &str) {
    let env = aws_env(endpoint, target);
    let (lake, reference) = ("s3://tl-ambiguous/lake", "s3://tl-ambiguous/reference");
    tl(lake, &["init"], &env).await.ok();
    common::an_ambiguous_commit_keeps_its_staged_files(lake, reference, &str_env(&env)).await;
}

async fn stalled_writer(endpoint: &str, target: &str) {
    let env = aws_env(endpoint, target);
    let (lake, reference) = ("s3://tl-stalled/lake", "s3://tl-stalled/reference");
    tl(lake, &["init"], &env).await.ok();
    common::a_stalled_writer_is_fenced_after_its_commit(lake, reference, &str_env(&env)).await;
}

/// A lake prefix with characters S3's copy header must have encoded: publishing (a server-side
/// copy) still finds its source.
async fn reserved_characters_in_the_prefix(endpoint: &str, target: &str) {
    let env = aws_env(endpoint, target);
    let lake = "s3://tl-odd/odd prefix+100%/é lake";
    tl(lake, &["init"], &env).await.ok();
    tl(lake, &["simulate-history", "--hours", "30", "--symbols", "5", "--until", "2025-05-09T05:00:00Z"], &env).await.ok();
    let out = tl(lake, &["process"], &env).await;
    assert!(out.ok().stdout.contains("2 partitions written"), "{}", out.stdout);
    assert!(!out.stderr.contains("WARN"), "published without a warning: {}", out.stderr);
    let client = s3_client(endpoint);
    let published = keys(&client, "tl-odd", "odd prefix+100%/é lake/processed/").await;
    assert_eq!(published.len(), 2, "{published:?}");
    let kept = out.stdout.split(" kept").next().and_then(|s| s.rsplit(' ').next()).unwrap().to_owned();
    let n = tl(lake, &["query", "--format", "csv", "SELECT count(*) AS n FROM processed"], &env).await;
    assert_eq!(n.ok().stdout, format!("n\n{kept}\n"), "every kept row readable");
}

macro_rules! emulator_tests {
    ($modname:ident, $kind:expr) => {
        mod $modname {
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn pipeline_end_to_end() {
                let Some(emu) = Emulator::start($kind) else { return };
                pipeline(&emu.endpoint(), emu.target()).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn endpoint_down_mid_run_then_rerun_equals_uninterrupted() {
                let Some(mut emu) = Emulator::start($kind) else { return };
                endpoint_down_mid_run(&mut emu).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn concurrent_writers_are_serialised_by_the_lease() {
                let Some(emu) = Emulator::start($kind) else { return };
                concurrent_writers(&emu.endpoint(), emu.target()).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn the_lease_is_renewed_during_a_long_run() {
                let Some(emu) = Emulator::start($kind) else { return };
                lease_is_renewed_during_a_long_run(&emu.endpoint(), emu.target()).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn writers_forced_past_the_lease_process_each_raw_file_once() {
                let Some(emu) = Emulator::start($kind) else { return };
                writers_past_the_lease(&emu.endpoint(), emu.target()).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn a_missing_bucket_fails_at_once_with_status_3() {
                let Some(emu) = Emulator::start($kind) else { return };
                missing_bucket_is_permanent(&emu.endpoint(), emu.target()).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn endpoint_from_standard_aws_env_vars() {
                let Some(emu) = Emulator::start($kind) else { return };
                endpoint_from_aws_env_vars(&emu.endpoint()).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn a_committed_staged_file_that_is_gone_is_rebuilt_and_readers_say_so() {
                let Some(emu) = Emulator::start($kind) else { return };
                lost_staging(&emu.endpoint(), emu.target()).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn an_ambiguous_commit_keeps_its_staged_files() {
                let Some(emu) = Emulator::start($kind) else { return };
                ambiguous_commit(&emu.endpoint(), emu.target()).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn a_stalled_writer_is_fenced_after_its_commit() {
                let Some(emu) = Emulator::start($kind) else { return };
                stalled_writer(&emu.endpoint(), emu.target()).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn a_prefix_with_reserved_characters_publishes() {
                let Some(emu) = Emulator::start($kind) else { return };
                reserved_characters_in_the_prefix(&emu.endpoint(), emu.target()).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn incremental_run_request_count_is_constant() {
                let Some(emu) = Emulator::start($kind) else { return };
                incremental_requests_are_constant(&emu.endpoint(), emu.target()).await;
            }
        }
    };
}

emulator_tests!(ministack, Kind::Ministack);
emulator_tests!(localstack, Kind::Localstack);

/// The LocalStack scenarios through testcontainers, against the image docker/images.sh builds
/// from Debian packages (tagged localstack/localstack:4.13.1, so nothing is pulled). Where no
/// Docker engine answers they skip loudly; in CI (CI=true) a missing engine fails them.
mod testcontainers_localstack {
    use super::*;
    use testcontainers_modules::localstack::LocalStack;
    use testcontainers_modules::testcontainers::runners::AsyncRunner;
    use testcontainers_modules::testcontainers::{ContainerAsync, ImageExt};

    const IMAGE: &str = "localstack/localstack:4.13.1";

    fn docker(args: &[&str]) -> bool {
        std::process::Command::new("docker").args(args).output().is_ok_and(|o| o.status.success())
    }

    /// A LocalStack container and its S3 port on 127.0.0.1, or None where no Docker engine answers.
    async fn localstack() -> Option<(ContainerAsync<LocalStack>, u16)> {
        if !docker(&["info", "--format", "{{.ServerVersion}}"]) {
            let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
            assert!(
                !ci,
                "no Docker engine answers (`docker info` failed) and CI is set: CI must run the testcontainers tests; start the Docker engine"
            );
            // Straight to stderr, past the test harness's capture: a skip must be seen.
            use std::io::Write;
            let _ = writeln!(
                std::io::stderr(),
                "\n*** SKIPPED testcontainers LocalStack test: no Docker engine answers (`docker info` failed); start one to run it ***\n"
            );
            return None;
        }
        assert!(
            docker(&["image", "inspect", IMAGE]),
            "the image {IMAGE} is missing (no registry to pull it from): run `docker/images.sh localstack` (./dev test does)"
        );
        // 4.13.1 is the last LocalStack that starts without an auth token; a token, if set, is passed on.
        let mut image = LocalStack::default().with_tag("4.13.1").with_env_var("SERVICES", "s3");
        if let Ok(token) = std::env::var("LOCALSTACK_AUTH_TOKEN") {
            image = image.with_env_var("LOCALSTACK_AUTH_TOKEN", token);
        }
        let container = image.start().await.expect("start LocalStack in Docker");
        let port = container.get_host_port_ipv4(4566).await.expect("LocalStack's mapped port");
        // "Ready." comes before S3 is loaded (lazily, on the first request, which can take longer
        // than the tests' 3 s S3 timeout on a busy machine): one request without that timeout first.
        let client = s3_client(&format!("http://127.0.0.1:{port}"));
        tokio::time::timeout(Duration::from_secs(60), client.list_buckets().send())
            .await
            .expect("LocalStack's S3 answers within 60 s")
            .expect("LocalStack's S3 lists buckets");
        Some((container, port))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn pipeline_end_to_end() {
        let Some((_c, port)) = localstack().await else { return };
        pipeline(&format!("http://127.0.0.1:{port}"), "localstack").await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_writers_are_serialised_by_the_lease() {
        let Some((_c, port)) = localstack().await else { return };
        concurrent_writers(&format!("http://127.0.0.1:{port}"), "localstack").await;
    }

    /// The outage scenario of `endpoint_down_mid_run`, the network cut by a proxy in front of the
    /// container's port while the container keeps its state.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn endpoint_down_mid_run_then_rerun_equals_uninterrupted() {
        let Some((_c, port)) = localstack().await else { return };
        let mut proxy = Proxy::start(port).await;
        let env = aws_env(&proxy.endpoint(), "localstack");
        outage_then_rerun(&env, Outage::Proxy(&mut proxy)).await;
    }
}
