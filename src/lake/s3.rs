//! The S3 lake: real AWS, LocalStack, or any S3-compatible store (MinIO, SeaweedFS, Garage, RustFS).
//!
//! Credentials and region always come from the standard AWS default chain (env vars, profiles,
//! SSO, instance roles); tickerlake never takes secrets as flags. The endpoint comes from
//! `--endpoint-url`, else `AWS_ENDPOINT_URL_S3` / `AWS_ENDPOINT_URL` (read by the SDK), else the
//! target's default. Emulators and S3-compatible stores get path-style addressing.
//!
//! Conditional writes are S3's: `If-None-Match: *` to create, `If-Match: <ETag>` to replace or
//! delete a version; a 412 (or a 409 from a concurrent conditional write) is
//! [`LakeError::Conflict`]. Writers take a renewed lease (see `lake::lease`) built on them.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::interceptors::BeforeTransmitInterceptorContextRef;
use aws_sdk_s3::config::{ConfigBag, Intercept, RuntimeComponents, SharedCredentialsProvider};
use aws_sdk_s3::error::BoxError;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::{ByteStream, Length};
use aws_sdk_s3::types::{BucketLocationConstraint, CreateBucketConfiguration};
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use bytes::Bytes;
use tokio::io::AsyncWriteExt;

use super::error::IoContext;
use super::{IfChanged, LOCK_KEY, LakeError, LakeResult, LockGuard, ObjectMeta, ObjectStore, PutMode, PutOutcome, Versioned};

/// Above this size uploads go multipart, so a large partition is streamed in parts from disk.
const MULTIPART_THRESHOLD: u64 = 16 * 1024 * 1024;
const PART_SIZE: u64 = 8 * 1024 * 1024;

pub use crate::aws::{AwsOptions, Target};

/// Counts every request the SDK transmits (retries included), for run summaries and benchmarks.
#[derive(Debug, Default, Clone)]
struct RequestCounter(Arc<AtomicU64>);

impl Intercept for RequestCounter {
    fn name(&self) -> &'static str {
        "tickerlake-request-counter"
    }

    fn read_before_transmit(
        &self,
        _: &BeforeTransmitInterceptorContextRef<'_>,
        _: &RuntimeComponents,
        _: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        self.0.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

/// A lake in an S3 bucket, under an optional key prefix.
#[derive(Debug, Clone)]
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

impl S3Store {
    /// A client for `bucket` (nothing is sent until the first operation).
    pub async fn connect(bucket: &str, prefix: &str, opts: &AwsOptions) -> LakeResult<Self> {
        if opts.target == Target::S3Compatible && opts.endpoint_url.is_none() {
            return Err(LakeError::Location(
                "--target s3-compatible needs an endpoint: pass --endpoint-url http://HOST:PORT or set AWS_ENDPOINT_URL_S3".into(),
            ));
        }
        let sdk = crate::aws::sdk_config(opts).await;
        let custom_endpoint = opts.endpoint_url.clone();
        let path_style = opts.path_style;
        let requests = RequestCounter::default();
        let mut conf = aws_sdk_s3::config::Builder::from(&sdk).force_path_style(path_style).interceptor(requests.clone());
        if let Some(url) = &custom_endpoint {
            conf = conf.endpoint_url(url);
        }
        let conf = conf.build();
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

    /// Turn an SDK failure into the typed error that says what is wrong and what to do.
    fn explain<E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static>(
        &self,
        err: SdkError<E>,
        action: &str,
        key: &str,
    ) -> LakeError {
        explain(err, &self.bucket, &self.endpoint, action, &self.full_key(key))
    }

    /// Every object under `prefix` (after `start_after`, if given), sorted by key; all pages.
    async fn list_from(&self, prefix: &str, start_after: Option<&str>) -> LakeResult<Vec<ObjectMeta>> {
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(self.full_key(prefix))
            .set_start_after(start_after.map(|k| self.full_key(k)))
            .into_paginator()
            .send();
        let mut out = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| self.explain(e, "s3:ListBucket", prefix))?;
            for obj in page.contents() {
                let Some(key) = obj.key().and_then(|k| k.strip_prefix(&self.prefix)) else { continue };
                out.push(ObjectMeta {
                    key: key.to_owned(),
                    size: obj.size().unwrap_or(0).max(0) as u64,
                    version: obj.e_tag().unwrap_or_default().to_owned(),
                    modified: obj.last_modified().and_then(to_utc),
                });
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    async fn upload_multipart(&self, key: &str, src: &Path, size: u64) -> LakeResult<()> {
        let full = self.full_key(key);
        let created = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(&full)
            .send()
            .await
            .map_err(|e| self.explain(e, "s3:PutObject", key))?;
        let upload_id = created
            .upload_id()
            .ok_or_else(|| LakeError::Service {
                action: "s3:PutObject".into(),
                resource: full.clone(),
                code: "no upload id".into(),
                status: String::new(),
                detail: "CreateMultipartUpload returned no upload id".into(),
            })?
            .to_owned();
        let result: LakeResult<Vec<CompletedPart>> = async {
            let mut parts = Vec::new();
            let mut offset = 0;
            let mut number = 1;
            while offset < size {
                let len = PART_SIZE.min(size - offset);
                let body = ByteStream::read_from()
                    .path(src)
                    .offset(offset)
                    .length(Length::Exact(len))
                    .build()
                    .await
                    .map_err(|e| LakeError::io(format!("cannot read {}", src.display()), std::io::Error::other(e)))?;
                let out = self
                    .client
                    .upload_part()
                    .bucket(&self.bucket)
                    .key(&full)
                    .upload_id(&upload_id)
                    .part_number(number)
                    .body(body)
                    .send()
                    .await
                    .map_err(|e| self.explain(e, "s3:PutObject", key))?;
                parts.push(CompletedPart::builder().part_number(number).set_e_tag(out.e_tag().map(str::to_owned)).build());
                offset += len;
                number += 1;
            }
            Ok(parts)
        }
        .await;
        match result {
            Ok(parts) => {
                // The object becomes visible only here, whole.
                self.client
                    .complete_multipart_upload()
                    .bucket(&self.bucket)
                    .key(&full)
                    .upload_id(&upload_id)
                    .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(parts)).build())
                    .send()
                    .await
                    .map_err(|e| self.explain(e, "s3:PutObject", key))?;
                Ok(())
            }
            Err(e) => {
                let _ = self.client.abort_multipart_upload().bucket(&self.bucket).key(&full).upload_id(&upload_id).send().await;
                Err(e)
            }
        }
    }
}

/// The typed error for an SDK failure: unreachable endpoint, credentials, region, bucket,
/// permissions, a failed precondition, or the service's own message.
fn explain<E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static>(
    err: SdkError<E>,
    bucket: &str,
    endpoint: &str,
    action: &str,
    key: &str,
) -> LakeError {
    let status = err.raw_response().map(|r| r.status().as_u16());
    let code = err.code().map(str::to_owned);
    let bucket_missing = code.as_deref() == Some("NoSuchBucket") || (status == Some(404) && code.is_none() && key.is_empty());
    match (&err, status, code.as_deref()) {
        (SdkError::DispatchFailure(d), _, _) if d.is_io() || d.is_timeout() => {
            LakeError::Unreachable { endpoint: endpoint.to_owned(), source: Box::new(err) }
        }
        (SdkError::DispatchFailure(d), _, _) if d.is_user() || format!("{d:?}").contains("credentials") => LakeError::NoCredentials,
        (SdkError::TimeoutError(_), _, _) => LakeError::Timeout { endpoint: endpoint.to_owned() },
        _ if bucket_missing => LakeError::BucketMissing { bucket: bucket.to_owned(), endpoint: endpoint.to_owned() },
        (_, Some(412), _) | (_, _, Some("PreconditionFailed" | "ConditionalRequestConflict")) => {
            LakeError::Conflict { key: key.to_owned() }
        }
        (_, _, Some("AccessDenied")) | (_, Some(403), _) => {
            LakeError::AccessDenied { action: action.to_owned(), resource: format!("arn:aws:s3:::{bucket}/{key}") }
        }
        (_, _, Some("InvalidAccessKeyId" | "SignatureDoesNotMatch")) => LakeError::BadCredentials,
        (_, _, Some("PermanentRedirect" | "AuthorizationHeaderMalformed" | "IllegalLocationConstraintException")) | (_, Some(301), _) => {
            let region = err.raw_response().and_then(|r| r.headers().get("x-amz-bucket-region")).map(str::to_owned);
            LakeError::WrongRegion { bucket: bucket.to_owned(), region }
        }
        _ => {
            let detail = match &err {
                SdkError::ServiceError(s) => s.err().message().unwrap_or("").to_owned(),
                other => format!("{}", aws_sdk_s3::error::DisplayErrorContext(other)),
            };
            LakeError::Service {
                action: action.to_owned(),
                resource: format!("s3://{bucket}/{key}"),
                code: code.unwrap_or_else(|| "no error code".into()),
                status: status.map(|s| format!(", HTTP {s}")).unwrap_or_default(),
                detail,
            }
        }
    }
}

/// A response body that broke off or stalled mid-download. The SDK retries requests, not body
/// reads, so these are retried here (a stalled stream is usually a briefly overloaded endpoint).
#[derive(Debug, thiserror::Error)]
#[error("download interrupted: {0}")]
struct BodyError(String);

impl From<BodyError> for LakeError {
    fn from(e: BodyError) -> Self {
        LakeError::io("an S3 download broke off", std::io::Error::other(e))
    }
}

/// Run `attempt` again (up to 3 times) when its body download broke off; `attempt` returns the
/// body error separately from final outcomes.
async fn with_body_retries<T, F, Fut>(key: &str, mut attempt: F) -> LakeResult<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = LakeResult<Result<T, BodyError>>>,
{
    const ATTEMPTS: u32 = 3;
    let mut n = 0;
    loop {
        n += 1;
        match attempt().await? {
            Ok(v) => return Ok(v),
            Err(e) if n < ATTEMPTS => {
                tracing::warn!(key, attempt = n, "{e}; retrying");
                tokio::time::sleep(Duration::from_millis(500 * u64::from(n))).await;
            }
            Err(e) => return Err(LakeError::io(format!("reading {key}"), std::io::Error::other(e))),
        }
    }
}

/// A key as CopyObject's `x-amz-copy-source` wants it: every byte but unreserved characters
/// and `/` percent-encoded.
fn encode_key(key: &str) -> String {
    const KEEP: &percent_encoding::AsciiSet =
        &percent_encoding::NON_ALPHANUMERIC.remove(b'/').remove(b'-').remove(b'_').remove(b'.').remove(b'~');
    percent_encoding::utf8_percent_encode(key, KEEP).to_string()
}

/// An SDK timestamp as a chrono time (None if out of range).
fn to_utc(t: &aws_sdk_s3::primitives::DateTime) -> Option<chrono::DateTime<chrono::Utc>> {
    chrono::DateTime::from_timestamp(t.secs(), t.subsec_nanos())
}

fn status_of<E>(err: &SdkError<E>) -> Option<u16> {
    err.raw_response().map(|r| r.status().as_u16())
}

/// 409 is what S3 answers when two conditional writes to one key race.
fn is_precondition_failed<E>(err: &SdkError<E>) -> bool {
    matches!(status_of(err), Some(412 | 409))
}

#[async_trait]
impl ObjectStore for S3Store {
    fn describe(&self) -> String {
        format!("s3://{}/{}", self.bucket, self.prefix)
    }

    async fn list(&self, prefix: &str) -> LakeResult<Vec<ObjectMeta>> {
        self.list_from(prefix, None).await
    }

    async fn list_after(&self, prefix: &str, start_after: &str) -> LakeResult<Vec<ObjectMeta>> {
        self.list_from(prefix, Some(start_after)).await
    }

    async fn get_versioned(&self, key: &str) -> LakeResult<Option<Versioned>> {
        with_body_retries(key, || async {
            match self.client.get_object().bucket(&self.bucket).key(self.full_key(key)).send().await {
                Ok(out) => {
                    let version = out.e_tag().unwrap_or_default().to_owned();
                    let modified = out.last_modified().and_then(to_utc);
                    Ok(out
                        .body
                        .collect()
                        .await
                        .map(|b| Some(Versioned { data: b.into_bytes(), version, modified }))
                        .map_err(|e| BodyError(e.to_string())))
                }
                Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => Ok(Ok(None)),
                Err(e) => Err(self.explain(e, "s3:GetObject", key)),
            }
        })
        .await
    }

    async fn get_if_changed(&self, key: &str, version: &str) -> LakeResult<IfChanged> {
        with_body_retries(key, || async {
            match self.client.get_object().bucket(&self.bucket).key(self.full_key(key)).if_none_match(version).send().await {
                Ok(out) => {
                    let version = out.e_tag().unwrap_or_default().to_owned();
                    let modified = out.last_modified().and_then(to_utc);
                    Ok(out
                        .body
                        .collect()
                        .await
                        .map(|b| IfChanged::Changed(Versioned { data: b.into_bytes(), version, modified }))
                        .map_err(|e| BodyError(e.to_string())))
                }
                // 304: still at `version`, nothing transferred.
                Err(e) if status_of(&e) == Some(304) => Ok(Ok(IfChanged::NotModified)),
                Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => Ok(Ok(IfChanged::Missing)),
                Err(e) => Err(self.explain(e, "s3:GetObject", key)),
            }
        })
        .await
    }

    async fn get_to_file(&self, key: &str, dest: &Path) -> LakeResult<()> {
        with_body_retries(key, || async {
            let out = match self.client.get_object().bucket(&self.bucket).key(self.full_key(key)).send().await {
                Ok(out) => out,
                Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => {
                    return Err(LakeError::NotFound { key: key.to_owned() });
                }
                Err(e) => return Err(self.explain(e, "s3:GetObject", key)),
            };
            let mut body = out.body;
            let mut file = tokio::fs::File::create(dest).await.io_context(|| format!("cannot create {}", dest.display()))?;
            loop {
                match body.try_next().await {
                    Ok(Some(chunk)) => file.write_all(&chunk).await.io_context(|| format!("cannot write {}", dest.display()))?,
                    Ok(None) => break,
                    Err(e) => return Ok(Err(BodyError(e.to_string()))),
                }
            }
            file.flush().await.io_context(|| format!("cannot write {}", dest.display()))?;
            Ok(Ok(()))
        })
        .await
    }

    async fn put_opts(&self, key: &str, data: Bytes, mode: PutMode<'_>) -> LakeResult<String> {
        let mut req = self.client.put_object().bucket(&self.bucket).key(self.full_key(key)).body(ByteStream::from(data));
        req = match mode {
            PutMode::Overwrite => req,
            PutMode::Create => req.if_none_match("*"),
            PutMode::Update(version) => req.if_match(version),
        };
        match req.send().await {
            Ok(out) => Ok(out.e_tag().unwrap_or_default().to_owned()),
            Err(e) if mode != PutMode::Overwrite && is_precondition_failed(&e) => Err(LakeError::Conflict { key: key.to_owned() }),
            // If-Match on an object deleted since it was read.
            Err(e) if matches!(mode, PutMode::Update(_)) && status_of(&e) == Some(404) => Err(LakeError::Conflict { key: key.to_owned() }),
            Err(e) => Err(self.explain(e, "s3:PutObject", key)),
        }
    }

    async fn put_file(&self, key: &str, src: &Path) -> LakeResult<()> {
        let size = tokio::fs::metadata(src).await.io_context(|| format!("cannot read {}", src.display()))?.len();
        if size > MULTIPART_THRESHOLD {
            return self.upload_multipart(key, src, size).await;
        }
        let body = ByteStream::from_path(src)
            .await
            .map_err(|e| LakeError::io(format!("cannot read {}", src.display()), std::io::Error::other(e)))?;
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(self.full_key(key))
            .body(body)
            .send()
            .await
            .map_err(|e| self.explain(e, "s3:PutObject", key))?;
        Ok(())
    }

    async fn put_if_absent(&self, key: &str, data: Bytes) -> LakeResult<PutOutcome> {
        // Stores without conditional writes ignore If-None-Match; the HEAD first keeps them honest
        // in the common (non-racing) case, and the condition closes the race where supported.
        match self.client.head_object().bucket(&self.bucket).key(self.full_key(key)).send().await {
            Ok(_) => return Ok(PutOutcome::AlreadyExists),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_not_found()) => {}
            Err(e) => return Err(self.explain(e, "s3:GetObject", key)),
        }
        match self.put_opts(key, data, PutMode::Create).await {
            Ok(_) => Ok(PutOutcome::Created),
            Err(LakeError::Conflict { .. }) => Ok(PutOutcome::AlreadyExists),
            Err(e) => Err(e),
        }
    }

    async fn copy(&self, from: &str, to: &str) -> LakeResult<()> {
        // CopyObject handles objects up to 5 GB in one request; partitions are far smaller. Its
        // source header is URL-encoded (a prefix with `+`, `%`, a space or non-ASCII otherwise
        // names another object, or none).
        let source = format!("{}/{}", self.bucket, encode_key(&self.full_key(from)));
        match self.client.copy_object().bucket(&self.bucket).key(self.full_key(to)).copy_source(source).send().await {
            Ok(_) => Ok(()),
            Err(e) if e.as_service_error().is_some_and(|s| s.code() == Some("NoSuchKey")) || status_of(&e) == Some(404) => {
                Err(LakeError::NotFound { key: from.to_owned() })
            }
            Err(e) => Err(self.explain(e, "s3:PutObject", to)),
        }
    }

    async fn delete(&self, key: &str) -> LakeResult<()> {
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(self.full_key(key))
            .send()
            .await
            .map_err(|e| self.explain(e, "s3:DeleteObject", key))?;
        Ok(())
    }

    async fn delete_if(&self, key: &str, version: &str) -> LakeResult<()> {
        // Checked by reading first as well: a store that ignores If-Match on DELETE would
        // otherwise remove another writer's object.
        match self.get_versioned(key).await? {
            None => return Ok(()),
            Some(cur) if cur.version != version => return Err(LakeError::Conflict { key: key.to_owned() }),
            Some(_) => {}
        }
        match self.client.delete_object().bucket(&self.bucket).key(self.full_key(key)).if_match(version).send().await {
            Ok(_) => Ok(()),
            Err(e) if is_precondition_failed(&e) => Err(LakeError::Conflict { key: key.to_owned() }),
            // Already gone.
            Err(e) if status_of(&e) == Some(404) => Ok(()),
            // LocalStack 4.x answers 501 to a conditional DELETE; the version was checked just above.
            Err(e) if status_of(&e) == Some(501) => self.delete(key).await,
            Err(e) => Err(self.explain(e, "s3:DeleteObject", key)),
        }
    }

    fn requests(&self) -> Option<u64> {
        Some(self.requests.0.load(Ordering::Relaxed))
    }

    async fn check(&self, create: bool) -> LakeResult<Vec<String>> {
        use aws_sdk_s3::config::ProvideCredentials;
        let mut found = vec![format!(
            "endpoint {} ({} addressing), region {}",
            self.endpoint,
            if self.path_style { "path-style" } else { "virtual-hosted" },
            self.region.as_deref().unwrap_or("unset")
        )];
        let Some(region) = self.region.clone() else {
            return Err(LakeError::NoRegion);
        };
        let provider = self.credentials.clone().ok_or(LakeError::NoCredentials)?;
        match provider.provide_credentials().await {
            Ok(creds) => {
                let id = creds.access_key_id();
                let tail = &id[id.len().saturating_sub(4)..];
                found.push(format!("credentials found (access key …{tail})"));
            }
            Err(_) => return Err(LakeError::NoCredentials),
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
                return Err(LakeError::BucketMissing { bucket: self.bucket.clone(), endpoint: self.endpoint.clone() });
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

    async fn lock(&self, owner: &str) -> LakeResult<LockGuard> {
        super::lease::acquire(Arc::new(self.clone()), LOCK_KEY, owner, self.lock_ttl).await
    }
}
