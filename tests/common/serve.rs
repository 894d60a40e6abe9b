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
}

impl Server {
    /// Start serving `lake` on a free loopback port with extra args and env.
    pub async fn start(lake: &Path, args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut cmd = tokio::process::Command::new(BIN);
        cmd.arg("--lake").arg(lake).args(["serve", "--listen", "127.0.0.1:0"]).args(args);
        if !args.contains(&"--refresh-secs") {
            cmd.args(["--refresh-secs", "0.2"]);
        }
        cmd.env_remove("RUST_LOG").env_remove("TICKERLAKE_SERVE_PASSWORD").env("NO_COLOR", "1");
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.stdout(Stdio::piped()).stderr(Stdio::inherit()).kill_on_drop(true);
        let mut child = cmd.spawn().expect("start tickerlake serve");
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
        Self { child, port, lake: lake.to_path_buf() }
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
