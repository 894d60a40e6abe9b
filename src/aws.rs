//! One AWS configuration for every service tickerlake calls (S3, Glue, Athena): the target kind,
//! the default credential chain and region, timeouts, and an endpoint per service. Resolved once
//! at start-up (`config::aws_options`); clients are built from it here and nowhere else.

use std::time::Duration;

/// Which kind of AWS endpoint the lake lives on; picks sensible defaults for each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Target {
    /// Real AWS: virtual-hosted S3 addressing, endpoints from the SDK (or AWS_ENDPOINT_URL*).
    #[default]
    Aws,
    /// LocalStack: default endpoint http://localhost:4566, path-style, region us-east-1,
    /// LocalStack's dummy credentials when the default chain has none.
    Localstack,
    /// MinIO, SeaweedFS, Garage, RustFS, ministack…: path-style; set --endpoint-url.
    S3Compatible,
}

/// How to reach AWS (or an emulator), resolved once at start-up.
#[derive(Debug, Clone, Default)]
pub struct AwsOptions {
    /// Which kind of endpoint.
    pub target: Target,
    /// The S3 endpoint, if not AWS's own (AWS_ENDPOINT_URL_S3, --endpoint-url, AWS_ENDPOINT_URL, target default).
    pub endpoint_url: Option<String>,
    /// The Glue endpoint, if not AWS's own (AWS_ENDPOINT_URL_GLUE, --endpoint-url, AWS_ENDPOINT_URL, target default).
    pub glue_endpoint: Option<String>,
    /// The Athena endpoint, if not AWS's own (AWS_ENDPOINT_URL_ATHENA, --endpoint-url, AWS_ENDPOINT_URL, target default).
    pub athena_endpoint: Option<String>,
    /// Path-style (true) or virtual-hosted (false) S3 addressing.
    pub path_style: bool,
    /// A region to use when the environment names none (LocalStack's us-east-1).
    pub default_region: Option<String>,
    /// Use LocalStack's documented dummy credentials (the environment has none).
    pub dummy_credentials: bool,
    /// How long a writer's lease lasts if the writer dies without releasing it.
    pub lock_ttl: Option<Duration>,
    /// Limit for one attempt of one request (the SDK then retries); a hung endpoint fails, not blocks.
    pub attempt_timeout: Option<Duration>,
}

/// The shared SDK configuration: credentials and region from the default chain (or the target's
/// defaults), timeouts. Endpoints are set per service client.
pub async fn sdk_config(opts: &AwsOptions) -> aws_config::SdkConfig {
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
    if let Some(region) = &opts.default_region {
        loader = loader.region(aws_config::Region::new(region.clone()));
    }
    if opts.dummy_credentials {
        // LocalStack accepts any key; these are its documented dummy values, not secrets.
        loader = loader.credentials_provider(aws_sdk_s3::config::Credentials::new("test", "test", None, None, "localstack-default"));
    }
    let timeouts = aws_config::timeout::TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(5))
        .operation_attempt_timeout(opts.attempt_timeout.unwrap_or(Duration::from_secs(60)))
        .build();
    loader.timeout_config(timeouts).load().await
}

/// A Glue client on the resolved configuration.
pub fn glue_client(sdk: &aws_config::SdkConfig, opts: &AwsOptions) -> aws_sdk_glue::Client {
    let mut conf = aws_sdk_glue::config::Builder::from(sdk);
    if let Some(url) = &opts.glue_endpoint {
        conf = conf.endpoint_url(url);
    }
    aws_sdk_glue::Client::from_conf(conf.build())
}

/// An Athena client on the resolved configuration.
pub fn athena_client(sdk: &aws_config::SdkConfig, opts: &AwsOptions) -> aws_sdk_athena::Client {
    let mut conf = aws_sdk_athena::config::Builder::from(sdk);
    if let Some(url) = &opts.athena_endpoint {
        conf = conf.endpoint_url(url);
    }
    aws_sdk_athena::Client::from_conf(conf.build())
}

/// One line for a failed Glue or Athena call, and whether retrying cannot help: the endpoint
/// unreachable, no credentials, a timeout, access denied (naming the action to grant), or the
/// service's own code and message. (S3's mapping is richer: `lake::s3` has its own.)
pub(crate) fn describe_failure<E: aws_sdk_s3::error::ProvideErrorMetadata>(
    err: &aws_sdk_s3::error::SdkError<E>,
    service: &str,
    action: &str,
) -> (String, bool) {
    use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
    let status = err.raw_response().map(|r| r.status().as_u16());
    let code = err.code().unwrap_or("");
    match err {
        SdkError::DispatchFailure(d) if d.is_io() || d.is_timeout() => (
            format!(
                "cannot reach the {service} endpoint: is it running, and is --endpoint-url (or AWS_ENDPOINT_URL_{}) right?",
                service.to_ascii_uppercase()
            ),
            false,
        ),
        SdkError::DispatchFailure(_) => (
            "no AWS credentials found: set AWS_PROFILE, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or run with a role".to_owned(),
            true,
        ),
        SdkError::TimeoutError(_) => (format!("the {service} endpoint timed out; retry later"), false),
        _ if code == "AccessDeniedException" || status == Some(403) => {
            (format!("access denied: grant the credentials {action} (see aws/iam-policy.json)"), true)
        }
        _ => (
            format!(
                "{}{}: {}",
                if code.is_empty() { "error" } else { code },
                status.map(|s| format!(" (HTTP {s})")).unwrap_or_default(),
                err.message().unwrap_or("no message")
            ),
            false,
        ),
    }
}
