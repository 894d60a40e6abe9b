//! The Athena query engine: the same SQL as the local engine, run by Athena over the Glue catalog.
//! StartQueryExecution (with a ClientRequestToken, so a retried start runs the query once), poll
//! GetQueryExecution with backoff, page through GetQueryResults, and turn the rows into Arrow
//! batches typed from the result metadata, so `render` prints them exactly like local results.

use std::sync::Arc;
use std::time::Duration;

use aws_sdk_athena::Client;
use aws_sdk_athena::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_athena::types::{QueryExecutionContext, QueryExecutionState, ResultConfiguration};
use duckdb::arrow::array::{ArrayRef, BooleanArray, Float64Array, Int64Array, RecordBatch, StringArray};
use duckdb::arrow::datatypes::{DataType, Field, Schema};

/// Where and how Athena runs tickerlake's queries.
#[derive(Debug, Clone)]
pub struct AthenaOptions {
    /// The Glue database (`dbcrypto`).
    pub database: String,
    /// The workgroup (`primary`).
    pub workgroup: String,
    /// Where Athena writes results (`s3://BUCKET/PREFIX/athena-results/` by default).
    pub output_location: String,
}

/// A finished Athena query.
#[derive(Debug)]
pub struct AthenaResult {
    /// The rows, one batch per result page.
    pub batches: Vec<RecordBatch>,
    /// Athena's query id.
    pub query_id: String,
    /// Bytes scanned (what Athena bills).
    pub scanned_bytes: Option<i64>,
    /// Athena's total execution time.
    pub elapsed_ms: Option<i64>,
}

/// A failed Athena query.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AthenaError {
    /// Athena ran the query and it failed (or was cancelled by someone else).
    #[error("Athena query {query_id} {state}: {reason}")]
    Failed {
        /// The query id.
        query_id: String,
        /// FAILED or CANCELLED.
        state: String,
        /// Athena's reason.
        reason: String,
    },
    /// Stopped by Ctrl-C (the query was stopped in Athena too).
    #[error("interrupted: Athena query {query_id} was stopped")]
    Interrupted {
        /// The query id.
        query_id: String,
    },
    /// A call to Athena failed.
    #[error("Athena {action} failed: {message}")]
    Service {
        /// The IAM action of the call.
        action: &'static str,
        /// What went wrong, in one line.
        message: String,
        /// Whether retrying cannot help (access denied, credentials).
        permanent: bool,
    },
}

impl AthenaError {
    /// Whether retrying cannot fix it.
    pub fn is_permanent(&self) -> bool {
        matches!(self, Self::Service { permanent: true, .. })
    }
}

fn explain<E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static>(err: SdkError<E>, action: &'static str) -> AthenaError {
    let (message, permanent) = crate::aws::describe_failure(&err, "Athena", action);
    AthenaError::Service { action, message, permanent }
}

/// Whether Athena asked us to slow down.
fn throttled<E: ProvideErrorMetadata>(err: &SdkError<E>) -> bool {
    matches!(err.code(), Some("TooManyRequestsException" | "ThrottlingException"))
}

/// Retry `call` while Athena throttles it (bounded, with backoff).
async fn with_throttling<T, E, F, Fut>(action: &'static str, mut call: F) -> Result<T, AthenaError>
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, SdkError<E>>>,
{
    let mut delay = Duration::from_millis(200);
    for _ in 0..8 {
        match call().await {
            Err(e) if throttled(&e) => {
                tracing::debug!(action, "Athena throttled the request; retrying in {delay:?}");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
            other => return other.map_err(|e| explain(e, action)),
        }
    }
    call().await.map_err(|e| explain(e, action))
}

/// Run `sql` on Athena and wait for its rows; `interrupt` resolving stops the query.
pub async fn run(
    client: &Client,
    opts: &AthenaOptions,
    sql: &str,
    interrupt: impl std::future::Future<Output = ()>,
) -> Result<AthenaResult, AthenaError> {
    // Same token on every retry of the start: Athena then starts the query once.
    let token = format!("tickerlake-{:032x}", rand::random::<u128>());
    let context = QueryExecutionContext::builder().database(&opts.database).catalog("AwsDataCatalog").build();
    let results = ResultConfiguration::builder().output_location(&opts.output_location).build();
    let started = with_throttling("athena:StartQueryExecution", || {
        client
            .start_query_execution()
            .query_string(sql)
            .client_request_token(&token)
            .query_execution_context(context.clone())
            .work_group(&opts.workgroup)
            .result_configuration(results.clone())
            .send()
    })
    .await?;
    let query_id = started.query_execution_id().unwrap_or_default().to_owned();
    tracing::debug!(%query_id, "Athena query started");

    tokio::pin!(interrupt);
    let mut delay = Duration::from_millis(100);
    let execution = loop {
        let got = with_throttling("athena:GetQueryExecution", || client.get_query_execution().query_execution_id(&query_id).send()).await?;
        let Some(execution) = got.query_execution else {
            return Err(AthenaError::Service {
                action: "athena:GetQueryExecution",
                message: format!("no execution returned for {query_id}"),
                permanent: false,
            });
        };
        let state = execution.status().and_then(|s| s.state()).cloned();
        match state {
            Some(QueryExecutionState::Succeeded) => break execution,
            Some(s @ (QueryExecutionState::Failed | QueryExecutionState::Cancelled)) => {
                let status = execution.status();
                let reason = status
                    .and_then(|s| s.athena_error().and_then(|e| e.error_message()).or(s.state_change_reason()))
                    .unwrap_or("no reason given");
                // One line: the engine's first line says what is wrong (the rest is an excerpt).
                let reason = reason.lines().find(|l| !l.trim().is_empty()).unwrap_or("no reason given").trim().to_owned();
                return Err(AthenaError::Failed { query_id, state: s.as_str().to_owned(), reason });
            }
            _ => {}
        }
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = &mut interrupt => {
                let _ = client.stop_query_execution().query_execution_id(&query_id).send().await;
                return Err(AthenaError::Interrupted { query_id });
            }
        }
        delay = (delay * 2).min(Duration::from_secs(2));
    };

    let mut batches = Vec::new();
    let mut token: Option<String> = None;
    let mut first_page = true;
    loop {
        let page = with_throttling("athena:GetQueryResults", || {
            client.get_query_results().query_execution_id(&query_id).max_results(1000).set_next_token(token.clone()).send()
        })
        .await?;
        let Some(set) = page.result_set() else { break };
        let columns = set.result_set_metadata().map(|m| m.column_info().to_vec()).unwrap_or_default();
        let mut rows: Vec<Vec<Option<String>>> =
            set.rows().iter().map(|r| r.data().iter().map(|d| d.var_char_value().map(str::to_owned)).collect()).collect();
        // The first row of a SELECT's first page repeats the column names.
        if first_page && rows.first().is_some_and(|r| r.iter().zip(&columns).all(|(v, c)| v.as_deref() == Some(c.name()))) {
            rows.remove(0);
        }
        first_page = false;
        batches.push(to_batch(&columns, &rows));
        token = page.next_token().map(str::to_owned);
        if token.is_none() {
            break;
        }
    }
    let stats = execution.statistics();
    Ok(AthenaResult {
        batches,
        query_id,
        scanned_bytes: stats.and_then(|s| s.data_scanned_in_bytes()),
        elapsed_ms: stats.and_then(|s| s.total_execution_time_in_millis()),
    })
}

/// One page of Athena rows as an Arrow batch: numbers and booleans typed from the metadata (so
/// JSON output keeps them numbers), everything else as Athena's text.
fn to_batch(columns: &[aws_sdk_athena::types::ColumnInfo], rows: &[Vec<Option<String>>]) -> RecordBatch {
    let mut fields = Vec::new();
    let mut arrays: Vec<ArrayRef> = Vec::new();
    for (i, col) in columns.iter().enumerate() {
        let values = rows.iter().map(|r| r.get(i).cloned().flatten());
        let (dtype, array): (DataType, ArrayRef) = match col.r#type().to_ascii_lowercase().as_str() {
            "double" | "float" | "real" | "decimal" => {
                (DataType::Float64, Arc::new(values.map(|v| v.and_then(|s| s.parse::<f64>().ok())).collect::<Float64Array>()))
            }
            "bigint" | "integer" | "int" | "smallint" | "tinyint" => {
                (DataType::Int64, Arc::new(values.map(|v| v.and_then(|s| s.parse::<i64>().ok())).collect::<Int64Array>()))
            }
            "boolean" => (DataType::Boolean, Arc::new(values.map(|v| v.map(|s| s == "true")).collect::<BooleanArray>())),
            _ => (DataType::Utf8, Arc::new(values.collect::<StringArray>())),
        };
        fields.push(Field::new(col.name(), dtype, true));
        arrays.push(array);
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays).expect("columns and arrays agree")
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_athena::types::ColumnInfo;

    #[test]
    fn rows_are_typed_from_the_metadata_and_nulls_stay_null() {
        let cols = [
            ColumnInfo::builder().name("symbol").r#type("varchar").build().unwrap(),
            ColumnInfo::builder().name("price").r#type("double").build().unwrap(),
            ColumnInfo::builder().name("n").r#type("bigint").build().unwrap(),
        ];
        let rows = vec![vec![Some("BTCUSDT".into()), Some("97000.5".into()), Some("3".into())], vec![Some("ETHUSDT".into()), None, None]];
        let batch = to_batch(&cols, &rows);
        assert_eq!(batch.num_rows(), 2);
        assert_eq!(batch.schema().field(1).data_type(), &DataType::Float64);
        assert_eq!(batch.column(1).as_any().downcast_ref::<Float64Array>().unwrap().value(0), 97000.5);
        assert!(batch.column(1).is_null(1) && batch.column(2).is_null(1));
    }
}
