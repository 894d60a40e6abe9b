//! `tickerlake serve` as a child process, a simulated lake to serve, and client helpers.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};

use super::{BIN, tickerlake};

/// The last hour of the simulated lake the serve tests use (72 hours of 20 symbols before it).
pub const UNTIL: &str = "2025-05-03T23:00:00Z";

/// A processed lake of `hours` simulated hours of `symbols` symbols ending at [`UNTIL`].
pub async fn lake(hours: u32, symbols: u32) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().to_str().unwrap();
    tickerlake(lake, &["simulate-history", "--hours", &hours.to_string(), "--symbols", &symbols.to_string(), "--until", UNTIL], &[])
        .await
        .ok();
    tickerlake(lake, &["process"], &[]).await.ok();
    dir
}

/// A running `tickerlake serve`.
pub struct Server {
    pub child: tokio::process::Child,
    pub port: u16,
    pub lake: PathBuf,
    /// Its stderr lines so far, when started with [`Server::start_logged`].
    pub log: Option<std::sync::Arc<std::sync::Mutex<Vec<String>>>>,
}

impl Server {
    /// Start serving `lake` on a free loopback port with extra args and env.
    pub async fn start(lake: &Path, args: &[&str], env: &[(&str, &str)]) -> Self {
        Self::spawn(lake.to_str().unwrap(), args, env, false).await
    }

    /// The same for any `--lake` (an s3:// one), keeping its stderr (RUST_LOG from `env`).
    pub async fn start_logged(lake: &str, args: &[&str], env: &[(&str, &str)]) -> Self {
        Self::spawn(lake, args, env, true).await
    }

    async fn spawn(lake: &str, args: &[&str], env: &[(&str, &str)], logged: bool) -> Self {
        let mut cmd = tokio::process::Command::new(BIN);
        cmd.arg("--lake").arg(lake).args(["serve"]).args(args);
        if !args.contains(&"--listen") {
            cmd.args(["--listen", "127.0.0.1:0"]);
        }
        if !args.contains(&"--refresh-secs") {
            cmd.args(["--refresh-secs", "0.2"]);
        }
        cmd.env_remove("RUST_LOG").env_remove("TICKERLAKE_SERVE_PASSWORD").env("NO_COLOR", "1");
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.stdout(Stdio::piped()).stderr(if logged { Stdio::piped() } else { Stdio::inherit() }).kill_on_drop(true);
        let mut child = cmd.spawn().expect("start tickerlake serve");
        let log = logged.then(|| {
            let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
            let mut reader = BufReader::new(child.stderr.take().unwrap()).lines();
            let sink = lines.clone();
            tokio::spawn(async move {
                while let Ok(Some(line)) = reader.next_line().await {
                    eprintln!("serve: {line}");
                    sink.lock().unwrap().push(line);
                }
            });
            lines
        });
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let line = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
            .await
            .expect("serve printed nothing")
            .unwrap()
            .expect("serve exited");
        let addr = line
            .strip_prefix("listening on ")
            .and_then(|r| r.split(';').next())
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
        let port = addr.rsplit(':').next().unwrap().parse().unwrap();
        Self { child, port, lake: PathBuf::from(lake), log }
    }

    /// Its peak resident memory so far (VmHWM), in bytes.
    pub fn peak_rss(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id().unwrap())).unwrap();
        let kb: u64 = status.lines().find_map(|l| l.strip_prefix("VmHWM:")).unwrap().trim().trim_end_matches("kB").trim().parse().unwrap();
        kb * 1024
    }

    /// The last `serve stats` log line's numeric field `name` (needs `start_logged` with
    /// RUST_LOG=tickerlake::serve=debug).
    pub fn stat(&self, name: &str) -> u64 {
        // stderr is read by a task of its own: give it a moment to catch up with what serve
        // wrote before it answered the last query.
        let log = self.log.as_ref().expect("started with start_logged");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !log.lock().unwrap().iter().any(|l| l.contains("serve stats")) && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        std::thread::sleep(Duration::from_millis(200));
        let lines = log.lock().unwrap();
        let line = lines.iter().rev().find(|l| l.contains("serve stats")).expect("a serve stats line");
        let field = format!("{name}=");
        let at = line.find(&field).unwrap_or_else(|| panic!("no {name} in {line}")) + field.len();
        line[at..].split(|c: char| !c.is_ascii_digit()).next().unwrap().parse().unwrap()
    }

    /// A tokio-postgres client (extended protocol; `simple_query` for the simple one).
    pub async fn client(&self) -> tokio_postgres::Client {
        self.client_as("grafana", None).await.expect("connect")
    }

    /// Connect with a user and optional password.
    pub async fn client_as(&self, user: &str, password: Option<&str>) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
        let mut config = tokio_postgres::Config::new();
        config.host("127.0.0.1").port(self.port).user(user).dbname("any_database_name").connect_timeout(Duration::from_secs(10));
        if let Some(p) = password {
            config.password(p);
        }
        let (client, conn) = config.connect(tokio_postgres::NoTls).await?;
        tokio::spawn(conn);
        Ok(client)
    }

    /// Run psql with `-c` commands; (exit code, stdout, stderr).
    pub async fn psql(&self, commands: &[&str], extra: &[&str]) -> (Option<i32>, String, String) {
        let mut cmd = tokio::process::Command::new("psql");
        cmd.args(["-X", "-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", "grafana", "-d", "whatever", "-v", "ON_ERROR_STOP=1"])
            .args(extra);
        for c in commands {
            cmd.arg("-c").arg(c);
        }
        cmd.env("PGCONNECT_TIMEOUT", "10").env_remove("PGPASSWORD");
        let out = cmd.output().await.expect("psql is installed");
        (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// The SQLSTATE and message of a failed query.
pub fn sqlstate(err: &tokio_postgres::Error) -> (String, String) {
    let db = err.as_db_error().unwrap_or_else(|| panic!("not a server error: {err:?}"));
    (db.code().code().to_owned(), db.message().to_owned())
}

/// Rows of a simple-protocol answer.
pub fn simple_rows(msgs: &[tokio_postgres::SimpleQueryMessage]) -> Vec<&tokio_postgres::SimpleQueryRow> {
    msgs.iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => Some(r),
            _ => None,
        })
        .collect()
}
