//! The S3 lake: real AWS, LocalStack, or any S3-compatible store (MinIO, SeaweedFS, Garage, RustFS).
//!
//! Credentials and region always come from the standard AWS default chain (env vars, profiles,
//! SSO, instance roles); tickerlake never takes secrets as flags. The endpoint comes from
//! `--endpoint-url`, else `AWS_ENDPOINT_URL_S3` / `AWS_ENDPOINT_URL` (read by the SDK), else the
//! target's default. Emulators and S3-compatible stores get path-style addressing.
//!
//! Concurrency: writers take a lease object (`_tickerlake/lock`, created with `If-None-Match: *`)
//! that expires, so a crashed run cannot block the lake forever; every partition also records the
//! run that wrote it, so a stray write is detected and recomputed by the next run.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use async_trait::async_trait;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::interceptors::BeforeTransmitInterceptorContextRef;
use aws_sdk_s3::config::{ConfigBag, Intercept, RuntimeComponents, SharedCredentialsProvider};
use aws_sdk_s3::error::BoxError;
use aws_sdk_s3::types::{BucketLocationConstraint, CreateBucketConfiguration};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::{ByteStream, Length};
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;

use super::{LOCK_KEY, LockGuard, ObjectMeta, ObjectStore, PutOutcome};

/// Above this size uploads go multipart, so a large partition is streamed in parts from disk.
const MULTIPART_THRESHOLD: u64 = 16 * 1024 * 1024;
const PART_SIZE: u64 = 8 * 1024 * 1024;

/// Which kind of S3 endpoint the lake lives on; picks sensible defaults for each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Target {
    /// Real AWS S3: virtual-hosted addressing, endpoint from the SDK (or AWS_ENDPOINT_URL*).
    #[default]
    Aws,
    /// LocalStack: default endpoint http://localhost:4566, path-style, region us-east-1,
    /// LocalStack's dummy credentials when the default chain has none.
    Localstack,
    /// MinIO, SeaweedFS, Garage, RustFS, ministack…: path-style; set --endpoint-url.
    S3Compatible,
}

#[derive(Debug, Clone, Default)]
pub struct S3Options {
    pub target: Target,
    pub endpoint_url: Option<String>,
    /// `None` = automatic: path-style for any non-AWS target or custom endpoint.
    pub path_style: Option<bool>,
    /// How long a writer's lease lasts if the writer dies without releasing it.
    pub lock_ttl: Option<Duration>,
    /// Limit for one attempt of one request (the SDK then retries); a hung endpoint fails, not blocks.
    pub attempt_timeout: Option<Duration>,
}

/// Counts every request the SDK transmits (retries included), for run summaries and benchmarks.
#[derive(Debug, Default, Clone)]
struct RequestCounter(Arc<AtomicU64>);

impl Intercept for RequestCounter {
    fn name(&self) -> &'static str {
        "tickerlake-request-counter"
    }

    fn read_before_transmit(&self, _: &BeforeTransmitInterceptorContextRef<'_>, _: &RuntimeComponents, _: &mut ConfigBag) -> Result<(), BoxError> {
        self.0.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

#[derive(Debug)]
pub struct S3Store {
    client: Client,
    bucket: String,
    /// Key prefix inside the bucket, empty or ending in '/'.
    prefix: String,
    endpoint: String,
    path_style: bool,
    region: Option<String>,
    credentials: Option<SharedCredentialsProvider>,
    lock_ttl: Duration,
    requests: RequestCounter,
}

#[derive(Serialize, Deserialize)]
struct Lease {
    owner: String,
    expires_at: DateTime<Utc>,
}

impl S3Store {
    pub async fn connect(bucket: &str, prefix: &str, opts: &S3Options) -> Result<Self> {
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
        // Resolved here, in the documented order, rather than left to the SDK: the SDK applies
        // AWS_ENDPOINT_URL_S3 only when building the client, too late to choose the addressing.
        let env_url = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let custom_endpoint = opts.endpoint_url.clone()
            .or_else(|| env_url("AWS_ENDPOINT_URL_S3"))
            .or_else(|| env_url("AWS_ENDPOINT_URL"))
            .or_else(|| (opts.target == Target::Localstack).then(|| "http://localhost:4566".to_owned()));
        if let Some(url) = &custom_endpoint {
            loader = loader.endpoint_url(url);
        }
        if opts.target == Target::S3Compatible && custom_endpoint.is_none() {
            bail!("--target s3-compatible needs an endpoint: pass --endpoint-url http://HOST:PORT or set AWS_ENDPOINT_URL_S3");
        }
        if opts.target == Target::Localstack {
            if std::env::var_os("AWS_REGION").is_none() && std::env::var_os("AWS_DEFAULT_REGION").is_none() {
                loader = loader.region(aws_config::Region::new("us-east-1"));
            }
            if std::env::var_os("AWS_ACCESS_KEY_ID").is_none() && std::env::var_os("AWS_PROFILE").is_none() {
                // LocalStack accepts any key; these are its documented dummy values, not secrets.
                loader = loader.credentials_provider(aws_sdk_s3::config::Credentials::new("test", "test", None, None, "localstack-default"));
            }
        }
        let timeouts = aws_config::timeout::TimeoutConfig::builder()
            .connect_timeout(Duration::from_secs(5))
            .operation_attempt_timeout(opts.attempt_timeout.unwrap_or(Duration::from_secs(60)))
            .build();
        let sdk = loader.timeout_config(timeouts).load().await;
        let path_style = opts.path_style.unwrap_or(opts.target != Target::Aws || custom_endpoint.is_some());
        let requests = RequestCounter::default();
        let conf = aws_sdk_s3::config::Builder::from(&sdk).force_path_style(path_style).interceptor(requests.clone()).build();
        let endpoint = custom_endpoint.unwrap_or_else(|| "AWS S3".to_owned());
        let prefix = match prefix.trim_matches('/') {
            "" => String::new(),
            p => format!("{p}/"),
        };
        Ok(Self {
            client: Client::from_conf(conf),
            bucket: bucket.to_owned(),
            prefix,
            endpoint,
            path_style,
            region: sdk.region().map(|r| r.to_string()),
            credentials: sdk.credentials_provider(),
            lock_ttl: opts.lock_ttl.unwrap_or(Duration::from_secs(600)),
            requests,
        })
    }

    fn full_key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    /// Turn an SDK failure into one line that says what is wrong and what to do.
    pub fn explain<E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static>(
        &self,
        err: SdkError<E>,
        action: &str,
        key: &str,
    ) -> anyhow::Error {
        explain(err, &self.bucket, &self.endpoint, action, &self.full_key(key))
    }

    async fn upload_multipart(&self, key: &str, src: &Path, size: u64) -> Result<()> {
        let full = self.full_key(key);
        let created = self.client.create_multipart_upload().bucket(&self.bucket).key(&full).send().await
            .map_err(|e| self.explain(e, "s3:PutObject", key))?;
        let upload_id = created.upload_id().ok_or_else(|| anyhow!("S3 returned no upload id for {full}"))?.to_owned();
        let result: Result<Vec<CompletedPart>> = async {
            let mut parts = Vec::new();
            let mut offset = 0;
            let mut number = 1;
            while offset < size {
                let len = PART_SIZE.min(size - offset);
                let body = ByteStream::read_from().path(src).offset(offset).length(Length::Exact(len)).build().await?;
                let out = self.client.upload_part().bucket(&self.bucket).key(&full).upload_id(&upload_id)
                    .part_number(number).body(body).send().await
                    .map_err(|e| self.explain(e, "s3:PutObject", key))?;
                parts.push(CompletedPart::builder().part_number(number).set_e_tag(out.e_tag().map(str::to_owned)).build());
                offset += len;
                number += 1;
            }
            Ok(parts)
        }.await;
        match result {
            Ok(parts) => {
                // The object becomes visible only here, whole.
                self.client.complete_multipart_upload().bucket(&self.bucket).key(&full).upload_id(&upload_id)
                    .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(parts)).build())
                    .send().await.map_err(|e| self.explain(e, "s3:PutObject", key))?;
                Ok(())
            }
            Err(e) => {
                let _ = self.client.abort_multipart_upload().bucket(&self.bucket).key(&full).upload_id(&upload_id).send().await;
                Err(e)
            }
        }
    }

    async fn read_lease(&self) -> Result<Option<Lease>> {
        Ok(self.get(LOCK_KEY).await?.map(|body| {
            serde_json::from_slice(&body).unwrap_or(Lease { owner: "unreadable lock".into(), expires_at: DateTime::<Utc>::MIN_UTC })
        }))
    }
}

/// One line per misconfiguration: unreachable endpoint, credentials, region, bucket, permissions.
fn explain<E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static>(
    err: SdkError<E>,
    bucket: &str,
    endpoint: &str,
    action: &str,
    key: &str,
) -> anyhow::Error {
    let status = err.raw_response().map(|r| r.status().as_u16());
    let code = err.code().map(str::to_owned);
    let bucket_missing = code.as_deref() == Some("NoSuchBucket") || (status == Some(404) && code.is_none() && key.is_empty());
    let line = match (&err, status, code.as_deref()) {
        (SdkError::DispatchFailure(d), _, _) if d.is_io() || d.is_timeout() => {
            format!("cannot reach the S3 endpoint {endpoint}: is it running and is --endpoint-url right?")
        }
        (SdkError::DispatchFailure(d), _, _) if d.is_user() || format!("{d:?}").contains("credentials") => {
            "no AWS credentials found: set AWS_PROFILE, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or run on a role".to_owned()
        }
        (SdkError::TimeoutError(_), _, _) => format!("the S3 endpoint {endpoint} timed out; check the network or retry later"),
        _ if bucket_missing => format!("bucket {bucket:?} does not exist at {endpoint}; create it with `tickerlake init`"),
        (_, _, Some("AccessDenied")) | (_, Some(403), _) => format!(
            "access denied for {action} on arn:aws:s3:::{bucket}/{key}: grant the credentials {action} on that resource (and check the bucket policy)"
        ),
        (_, _, Some("InvalidAccessKeyId" | "SignatureDoesNotMatch")) => {
            "the AWS credentials were rejected (unknown key or wrong secret): check AWS_PROFILE / AWS_ACCESS_KEY_ID".to_owned()
        }
        (_, _, Some("PermanentRedirect" | "AuthorizationHeaderMalformed" | "IllegalLocationConstraintException")) | (_, Some(301), _) => {
            match err.raw_response().and_then(|r| r.headers().get("x-amz-bucket-region")) {
                Some(region) => format!("bucket {bucket:?} is in region {region}: set AWS_REGION={region}"),
                None => format!("bucket {bucket:?} is in another region: set AWS_REGION to the bucket's region"),
            }
        }
        _ => {
            let detail = match &err {
                SdkError::ServiceError(s) => s.err().message().unwrap_or("").to_owned(),
                other => format!("{}", aws_sdk_s3::error::DisplayErrorContext(other)),
            };
            format!(
                "S3 {action} on s3://{bucket}/{key} failed ({}{}): {detail}",
                code.as_deref().unwrap_or("no error code"),
                status.map(|s| format!(", HTTP {s}")).unwrap_or_default()
            )
        }
    };
    anyhow!(line)
}

/// A response body that broke off or stalled mid-download. The SDK retries requests, not body
/// reads, so these are retried here (a stalled stream is usually a briefly overloaded endpoint).
#[derive(Debug, thiserror::Error)]
#[error("download interrupted: {0}")]
struct BodyError(String);

async fn with_body_retries<T, F, Fut>(key: &str, mut attempt: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    const ATTEMPTS: u32 = 3;
    let mut n = 0;
    loop {
        n += 1;
        match attempt().await {
            Err(e) if n < ATTEMPTS && e.downcast_ref::<BodyError>().is_some() => {
                tracing::warn!(key, attempt = n, "{e}; retrying");
                tokio::time::sleep(Duration::from_millis(500 * u64::from(n))).await;
            }
            other => return other.with_context(|| format!("reading {key}")),
        }
    }
}

fn is_precondition_failed<E>(err: &SdkError<E>) -> bool {
    matches!(err.raw_response().map(|r| r.status().as_u16()), Some(412 | 409))
}

#[async_trait]
impl ObjectStore for S3Store {
    fn describe(&self) -> String {
        format!("s3://{}/{}", self.bucket, self.prefix)
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        let mut pages = self.client.list_objects_v2().bucket(&self.bucket).prefix(self.full_key(prefix)).into_paginator().send();
        let mut out = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| self.explain(e, "s3:ListBucket", prefix))?;
            for obj in page.contents() {
                let Some(key) = obj.key().and_then(|k| k.strip_prefix(&self.prefix)) else { continue };
                out.push(ObjectMeta {
                    key: key.to_owned(),
                    size: obj.size().unwrap_or(0).max(0) as u64,
                    version: obj.e_tag().unwrap_or_default().to_owned(),
                });
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    async fn get(&self, key: &str) -> Result<Option<Bytes>> {
        with_body_retries(key, || async {
            match self.client.get_object().bucket(&self.bucket).key(self.full_key(key)).send().await {
                Ok(out) => Ok(Some(out.body.collect().await.map_err(|e| BodyError(e.to_string()))?.into_bytes())),
                Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => Ok(None),
                Err(e) => Err(self.explain(e, "s3:GetObject", key)),
            }
        })
        .await
    }

    async fn get_to_file(&self, key: &str, dest: &Path) -> Result<()> {
        with_body_retries(key, || async {
            let out = self.client.get_object().bucket(&self.bucket).key(self.full_key(key)).send().await
                .map_err(|e| self.explain(e, "s3:GetObject", key))?;
            let mut body = out.body;
            let mut file = tokio::fs::File::create(dest).await.with_context(|| format!("cannot create {}", dest.display()))?;
            while let Some(chunk) = body.try_next().await.map_err(|e| BodyError(e.to_string()))? {
                file.write_all(&chunk).await?;
            }
            file.flush().await?;
            Ok(())
        })
        .await
    }

    async fn put(&self, key: &str, data: Bytes) -> Result<()> {
        self.client.put_object().bucket(&self.bucket).key(self.full_key(key)).body(ByteStream::from(data)).send().await
            .map_err(|e| self.explain(e, "s3:PutObject", key))?;
        Ok(())
    }

    async fn put_file(&self, key: &str, src: &Path) -> Result<()> {
        let size = tokio::fs::metadata(src).await?.len();
        if size > MULTIPART_THRESHOLD {
            return self.upload_multipart(key, src, size).await;
        }
        let body = ByteStream::from_path(src).await.with_context(|| format!("cannot read {}", src.display()))?;
        self.client.put_object().bucket(&self.bucket).key(self.full_key(key)).body(body).send().await
            .map_err(|e| self.explain(e, "s3:PutObject", key))?;
        Ok(())
    }

    async fn put_if_absent(&self, key: &str, data: Bytes) -> Result<PutOutcome> {
        // Stores without conditional writes ignore If-None-Match; the HEAD first keeps them honest
        // in the common (non-racing) case, and the condition closes the race where supported.
        match self.client.head_object().bucket(&self.bucket).key(self.full_key(key)).send().await {
            Ok(_) => return Ok(PutOutcome::AlreadyExists),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_not_found()) => {}
            Err(e) => return Err(self.explain(e, "s3:GetObject", key)),
        }
        match self.client.put_object().bucket(&self.bucket).key(self.full_key(key)).if_none_match("*").body(ByteStream::from(data)).send().await {
            Ok(_) => Ok(PutOutcome::Created),
            Err(e) if is_precondition_failed(&e) => Ok(PutOutcome::AlreadyExists),
            Err(e) => Err(self.explain(e, "s3:PutObject", key)),
        }
    }

    async fn delete(&self, key: &str) -> Result<()> {
        self.client.delete_object().bucket(&self.bucket).key(self.full_key(key)).send().await
            .map_err(|e| self.explain(e, "s3:DeleteObject", key))?;
        Ok(())
    }

    fn requests(&self) -> Option<u64> {
        Some(self.requests.0.load(Ordering::Relaxed))
    }

    async fn check(&self, create: bool) -> Result<Vec<String>> {
        use aws_sdk_s3::config::ProvideCredentials;
        let mut found = vec![format!(
            "endpoint {} ({} addressing), region {}",
            self.endpoint,
            if self.path_style { "path-style" } else { "virtual-hosted" },
            self.region.as_deref().unwrap_or("unset")
        )];
        let Some(region) = self.region.clone() else {
            bail!("no AWS region set: set AWS_REGION (or a profile's region), e.g. AWS_REGION=us-east-1");
        };
        let provider = self.credentials.clone().ok_or_else(|| anyhow!("no AWS credentials provider configured"))?;
        match provider.provide_credentials().await {
            Ok(creds) => {
                let id = creds.access_key_id();
                let tail = &id[id.len().saturating_sub(4)..];
                found.push(format!("credentials found (access key …{tail})"));
            }
            Err(_) => bail!("no AWS credentials found: set AWS_PROFILE, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or run with an instance/task role"),
        }
        match self.client.head_bucket().bucket(&self.bucket).send().await {
            Ok(_) => found.push(format!("bucket {:?} exists", self.bucket)),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_not_found()) && create => {
                let mut req = self.client.create_bucket().bucket(&self.bucket);
                if region != "us-east-1" {
                    req = req.create_bucket_configuration(
                        CreateBucketConfiguration::builder().location_constraint(BucketLocationConstraint::from(region.as_str())).build(),
                    );
                }
                req.send().await.map_err(|e| self.explain(e, "s3:CreateBucket", ""))?;
                found.push(format!("bucket {:?} did not exist: created it in {region}", self.bucket));
            }
            Err(e) if e.as_service_error().is_some_and(|s| s.is_not_found()) => {
                bail!("bucket {:?} does not exist at {}; create it with `tickerlake init`", self.bucket, self.endpoint)
            }
            Err(e) => return Err(self.explain(e, "s3:ListBucket", "")),
        }
        // Prove the permissions a run needs, on a throwaway key under the lake's prefix.
        let probe = format!("{}probe-{}", super::STATE_PREFIX, std::process::id());
        self.put(&probe, Bytes::from_static(b"probe")).await?;
        self.get(&probe).await?;
        self.list(super::STATE_PREFIX).await?;
        self.delete(&probe).await?;
        found.push("s3:PutObject, s3:GetObject, s3:ListBucket and s3:DeleteObject work".to_owned());
        let raw = self.list(super::RAW_PREFIX).await?.len();
        let processed = self.list(super::PROCESSED_PREFIX).await?.len();
        found.push(format!("{raw} raw snapshot(s), {processed} processed partition file(s) under {}", self.describe()));
        Ok(found)
    }

    async fn lock(&self, owner: &str) -> Result<LockGuard> {
        let lease = Lease { owner: owner.to_owned(), expires_at: Utc::now() + self.lock_ttl };
        let body = Bytes::from(serde_json::to_vec(&lease)?);
        for _ in 0..2 {
            if self.put_if_absent(LOCK_KEY, body.clone()).await? == PutOutcome::Created {
                let client = self.client.clone();
                let (bucket, key) = (self.bucket.clone(), self.full_key(LOCK_KEY));
                return Ok(LockGuard::new(async move {
                    client.delete_object().bucket(bucket).key(key).send().await.context("deleting the lock object")?;
                    Ok(())
                }));
            }
            match self.read_lease().await? {
                Some(held) if held.expires_at > Utc::now() => bail!(
                    "another tickerlake run is writing to {} ({}, lease until {}); wait for it, or for the lease to expire, then re-run",
                    self.describe(), held.owner, held.expires_at.format("%Y-%m-%d %H:%M:%S UTC")
                ),
                Some(held) => {
                    tracing::warn!(owner = %held.owner, "taking over an expired lake lease (its run must have died)");
                    self.delete(LOCK_KEY).await?;
                }
                None => {}
            }
        }
        bail!("could not take the lock on {} (another run is racing for it); re-run", self.describe())
    }
}
