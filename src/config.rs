//! The resolved configuration: every setting that does not come through clap (tuning variables,
//! the AWS SDK's endpoint variables) read and validated once, at start-up, into plain values that
//! are passed down. Nothing below this module reads the environment.

use std::time::Duration;

use crate::aws::{AwsOptions, Target};

/// A setting from the environment that cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigError {
    /// The variable is set to something that is not a valid value.
    #[error("{name}={value:?} is not valid ({expected}); fix or unset it")]
    Invalid {
        /// The variable.
        name: &'static str,
        /// Its value.
        value: String,
        /// What it should look like.
        expected: &'static str,
    },
}

/// Reads one environment variable; the real environment or a test's map.
pub type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

/// The process environment, with empty values treated as unset (as the AWS SDK does).
pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn seconds(env: Env<'_>, name: &'static str) -> Result<Option<Duration>, ConfigError> {
    let Some(value) = env(name) else { return Ok(None) };
    match value.trim().parse::<u64>() {
        Ok(s) if s > 0 => Ok(Some(Duration::from_secs(s))),
        _ => Err(ConfigError::Invalid { name, value, expected: "a whole number of seconds, at least 1" }),
    }
}

/// The AWS options for `target` and `--endpoint-url` / `--path-style`, completed from the environment.
///
/// Endpoints are resolved here, per service, in the documented order: the SDK's per-service
/// variable (`AWS_ENDPOINT_URL_S3`, `_GLUE`, `_ATHENA`), then `--endpoint-url` (one emulator such as
/// ministack serves every service on one port), then `AWS_ENDPOINT_URL`, then the target's default.
/// Resolving them here rather than in the SDK is what lets the S3 addressing style follow them.
pub fn aws_options(target: Target, endpoint_url: Option<&str>, path_style: Option<bool>, env: Env<'_>) -> Result<AwsOptions, ConfigError> {
    let endpoint = |service_var: &str| {
        env(service_var)
            .or_else(|| endpoint_url.map(str::to_owned))
            .or_else(|| env("AWS_ENDPOINT_URL"))
            .or_else(|| (target == Target::Localstack).then(|| "http://localhost:4566".to_owned()))
    };
    let s3 = endpoint("AWS_ENDPOINT_URL_S3");
    let localstack = target == Target::Localstack;
    Ok(AwsOptions {
        target,
        path_style: path_style.unwrap_or(target != Target::Aws || s3.is_some()),
        endpoint_url: s3,
        glue_endpoint: endpoint("AWS_ENDPOINT_URL_GLUE"),
        athena_endpoint: endpoint("AWS_ENDPOINT_URL_ATHENA"),
        default_region: (localstack && env("AWS_REGION").is_none() && env("AWS_DEFAULT_REGION").is_none()).then(|| "us-east-1".into()),
        dummy_credentials: localstack && env("AWS_ACCESS_KEY_ID").is_none() && env("AWS_PROFILE").is_none(),
        lock_ttl: seconds(env, "TICKERLAKE_LOCK_TTL_SECS")?,
        attempt_timeout: seconds(env, "TICKERLAKE_S3_TIMEOUT_SECS")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_of(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |name| pairs.iter().find(|(k, _)| *k == name).map(|(_, v)| (*v).to_owned())
    }

    #[test]
    fn a_malformed_tuning_variable_is_an_error_naming_it() {
        let env = env_of(&[("TICKERLAKE_LOCK_TTL_SECS", "ten")]);
        let err = aws_options(Target::Aws, None, None, &env).unwrap_err();
        assert_eq!(err.to_string(), "TICKERLAKE_LOCK_TTL_SECS=\"ten\" is not valid (a whole number of seconds, at least 1); fix or unset it");
        let env = env_of(&[("TICKERLAKE_S3_TIMEOUT_SECS", "0")]);
        assert!(aws_options(Target::Aws, None, None, &env).unwrap_err().to_string().starts_with("TICKERLAKE_S3_TIMEOUT_SECS"));
        let env = env_of(&[("TICKERLAKE_LOCK_TTL_SECS", "30")]);
        assert_eq!(aws_options(Target::Aws, None, None, &env).unwrap().lock_ttl, Some(Duration::from_secs(30)));
    }

    #[test]
    fn endpoint_order_is_service_variable_then_flag_then_generic_then_target_default() {
        let env = env_of(&[("AWS_ENDPOINT_URL_GLUE", "http://glue"), ("AWS_ENDPOINT_URL", "http://generic")]);
        let o = aws_options(Target::Aws, Some("http://flag"), None, &env).unwrap();
        assert_eq!(o.endpoint_url.as_deref(), Some("http://flag"));
        assert_eq!(o.glue_endpoint.as_deref(), Some("http://glue"), "the per-service variable overrides the flag");
        assert_eq!(o.athena_endpoint.as_deref(), Some("http://flag"));
        let o = aws_options(Target::Aws, None, None, &env).unwrap();
        assert_eq!(o.endpoint_url.as_deref(), Some("http://generic"));
        assert!(o.path_style, "a custom endpoint means path-style");
        let env = env_of(&[("AWS_ENDPOINT_URL_S3", "http://s3only")]);
        assert_eq!(aws_options(Target::Aws, Some("http://flag"), None, &env).unwrap().endpoint_url.as_deref(), Some("http://s3only"));
        let env = env_of(&[]);
        let o = aws_options(Target::Localstack, None, None, &env).unwrap();
        assert_eq!((o.endpoint_url.as_deref(), o.default_region.as_deref(), o.dummy_credentials), (Some("http://localhost:4566"), Some("us-east-1"), true));
        assert_eq!(o.glue_endpoint.as_deref(), Some("http://localhost:4566"));
        let o = aws_options(Target::Aws, None, None, &env).unwrap();
        assert_eq!((o.endpoint_url, o.glue_endpoint, o.path_style), (None, None, false));
    }
}
