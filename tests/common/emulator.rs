//! S3 emulators as local processes on 127.0.0.1 (ministack, LocalStack, moto), started and
//! stopped by the tests, and a TCP proxy to simulate a network outage in front of one.
//!
//! The emulators come from `./dev emulators` (virtualenvs under $TICKERLAKE_VENV). A missing one
//! fails the test with the command to run; TICKERLAKE_SKIP_EMULATORS=1 skips loudly, except in CI.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Kind {
    Ministack,
    Localstack,
    /// moto's server: S3 only here (its Glue is used by the catalog tests).
    Moto,
}

pub struct Emulator {
    pub kind: Kind,
    pub port: u16,
    data: tempfile::TempDir,
    child: Option<Child>,
}

fn venv() -> PathBuf {
    std::env::var_os("TICKERLAKE_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/tickerlake-venv"))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Plain HTTP GET status, without a client library (the emulators answer HTTP/1.1).
fn http_status(port: u16, path: &str) -> Option<u16> {
    let mut s = TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(300)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").ok()?;
    let mut buf = [0u8; 32];
    let n = s.read(&mut buf).ok()?;
    std::str::from_utf8(&buf[..n]).ok()?.split_whitespace().nth(1)?.parse().ok()
}

impl Emulator {
    /// Start the emulator, or None if it is not installed and skipping is allowed.
    pub fn start(kind: Kind) -> Option<Self> {
        let program = match kind {
            Kind::Ministack => venv().join("ministack/bin/ministack"),
            Kind::Localstack => venv().join("localstack/bin/python"),
            Kind::Moto => venv().join("moto/bin/moto_server"),
        };
        if !program.exists() {
            let msg = format!("{kind:?} is not installed at {}: run `./dev emulators` (or `./dev test`, which does)", program.display());
            let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
            if !ci && std::env::var("TICKERLAKE_SKIP_EMULATORS").is_ok_and(|v| v == "1") {
                eprintln!("\n*** SKIPPED {kind:?} end-to-end test: {msg} ***\n");
                return None;
            }
            panic!("{msg}");
        }
        let mut e = Emulator { kind, port: free_port(), data: tempfile::tempdir().unwrap(), child: None };
        e.launch();
        Some(e)
    }

    pub fn launch(&mut self) {
        let (program, health) = match self.kind {
            Kind::Ministack => (venv().join("ministack/bin/ministack"), "/_ministack/health"),
            Kind::Localstack => (venv().join("localstack/bin/python"), "/_localstack/health"),
            Kind::Moto => (venv().join("moto/bin/moto_server"), "/moto-api/"),
        };
        let mut cmd = Command::new(program);
        let port = self.port.to_string();
        let data = self.data.path().to_str().unwrap().to_owned();
        match self.kind {
            Kind::Ministack => {
                cmd.env("GATEWAY_PORT", &port)
                    .env("BIND_HOST", "127.0.0.1")
                    .env("S3_DATA_DIR", &data)
                    .env("S3_PERSIST", "1")
                    .env("ATHENA_ENGINE", "duckdb");
            }
            Kind::Localstack => {
                let listen = format!("127.0.0.1:{port}");
                cmd.args(["-m", "localstack.runtime.main"])
                    .env("GATEWAY_LISTEN", &listen)
                    .env("LOCALSTACK_HOST", &listen)
                    .env("FILESYSTEM_ROOT", &data)
                    .env("SERVICES", "s3")
                    .env("DISABLE_EVENTS", "1")
                    .env("SKIP_SSL_CERT_DOWNLOAD", "1")
                    .env("DNS_ADDRESS", "0")
                    .current_dir(self.data.path());
            }
            Kind::Moto => {
                cmd.args(["-H", "127.0.0.1", "-p", &port]);
            }
        }
        use std::os::unix::process::CommandExt;
        cmd.stdout(Stdio::null()).stderr(Stdio::null()).process_group(0);
        self.child = Some(cmd.spawn().expect("start emulator"));
        let deadline = Instant::now() + Duration::from_secs(90);
        while http_status(self.port, health) != Some(200) {
            assert!(Instant::now() < deadline, "{:?} did not become healthy on port {}", self.kind, self.port);
            std::thread::sleep(Duration::from_millis(200));
        }
        if self.kind == Kind::Localstack {
            // LocalStack outside its image has no prebuilt service catalog: its first S3 request
            // loads the specs (over 10 s on a busy machine), longer than the pipeline's S3
            // timeouts. One ListBuckets here, waited for, so that tests time what they test.
            let mut s = TcpStream::connect(("127.0.0.1", self.port)).expect("LocalStack accepts connections");
            s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
            write!(s, "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").unwrap();
            let mut buf = [0u8; 32];
            let n = s.read(&mut buf).expect("LocalStack answers its first S3 request");
            assert!(n > 0, "LocalStack closed its first S3 request unanswered");
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill").args(["-KILL", "--", &format!("-{}", c.id())]).status();
            let _ = c.wait();
        }
    }

    /// Same port, same data directory (ministack persists objects there).
    pub fn restart(&mut self) {
        self.kill();
        self.launch();
    }

    pub fn target(&self) -> &'static str {
        match self.kind {
            Kind::Ministack => "s3-compatible",
            Kind::Localstack => "localstack",
            Kind::Moto => "s3-compatible",
        }
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A TCP proxy in front of an emulator: stopping it is a network outage (listener gone, live
/// connections cut) while the emulator keeps its in-memory state; starting it again on the same
/// port ends the outage. Used where the emulator cannot persist across a restart (LocalStack).
pub struct Proxy {
    port: u16,
    upstream: u16,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Proxy {
    pub async fn start(upstream: u16) -> Self {
        let mut p = Proxy { port: free_port(), upstream, task: None };
        p.resume().await;
        p
    }

    pub async fn resume(&mut self) {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", self.port)).await.expect("bind proxy");
        let upstream = self.upstream;
        self.task = Some(tokio::spawn(async move {
            // Connections live in this set: aborting the accept task drops it and cuts them all.
            let mut conns = tokio::task::JoinSet::new();
            while let Ok((mut inbound, _)) = listener.accept().await {
                conns.spawn(async move {
                    if let Ok(mut up) = tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut up).await;
                    }
                });
            }
        }));
    }

    pub fn cut(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

/// The environment a user would set for an S3-compatible endpoint: the standard AWS variables
/// with the emulators' test credentials, no flags with secrets, and the S3 timeout a test wants.
pub fn aws_env(endpoint: &str, target: &str, s3_timeout_secs: u32) -> Vec<(&'static str, String)> {
    vec![
        ("AWS_ACCESS_KEY_ID", "test".into()),
        ("AWS_SECRET_ACCESS_KEY", "test".into()),
        ("AWS_REGION", "us-east-1".into()),
        ("TICKERLAKE_ENDPOINT_URL", endpoint.into()),
        ("TICKERLAKE_TARGET", target.into()),
        ("TICKERLAKE_S3_TIMEOUT_SECS", s3_timeout_secs.to_string()),
    ]
}

/// An S3 client with the emulators' test credentials, path-style, for a test to look at a bucket
/// beside the binary.
pub fn s3_client(endpoint: &str) -> aws_sdk_s3::Client {
    let conf = aws_sdk_s3::Config::builder()
        .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
        .region(aws_sdk_s3::config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_s3::config::Credentials::new("test", "test", None, None, "test"))
        .endpoint_url(endpoint)
        .force_path_style(true)
        .build();
    aws_sdk_s3::Client::from_conf(conf)
}
