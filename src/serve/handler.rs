//! The PostgreSQL protocol side of `serve` (pgwire): authentication, the simple protocol (Grafana's
//! pgx, psql) and the extended one (tokio-postgres, psycopg, JDBC), the statement check before
//! anything runs, the per-query timeout, and results typed with OIDs every client knows.

use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use duckdb::arrow::array::{Array, AsArray, RecordBatch};
use duckdb::arrow::datatypes::{self as adt, DataType, TimeUnit};
use duckdb::ffi;
use duckdb::types::Value;
use futures::{Sink, stream};
use pgwire::api::auth::noop::NoopStartupHandler;
use pgwire::api::auth::sasl::SASLAuthStartupHandler;
use pgwire::api::auth::sasl::scram::{ScramAuth, gen_salted_password};
use pgwire::api::auth::{AuthSource, DefaultServerParameterProvider, LoginInfo, Password, StartupHandler};
use pgwire::api::portal::{Format, Portal};
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use pgwire::api::results::{
    DataRowEncoder, DescribePortalResponse, DescribeStatementResponse, FieldFormat, FieldInfo, QueryResponse, Response, Tag,
};
use pgwire::api::stmt::{QueryParser, StoredStatement};
use pgwire::api::store::PortalStore;
use pgwire::api::{ClientInfo, ClientPortalStore, PgWireServerHandlers, Type};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::data::DataRow;
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};

use super::LakeState;
use super::engine::{self, Checked, Kind, Refusal, Snapshot};

/// SCRAM iteration count (PostgreSQL's default).
const SCRAM_ITERATIONS: usize = 4096;

fn user_error(code: &str, message: impl Into<String>) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new("ERROR".to_owned(), code.to_owned(), message.into())))
}

/// A DuckDB error as a PostgreSQL error: file access outside the lake is a privilege error.
fn duck_error(message: &str) -> PgWireError {
    let message = message.trim_end().replace("\n\n", "\n");
    if message.contains("Permission Error") || message.contains("disabled by configuration") {
        user_error("42501", format!("tickerlake serve only reads the lake's own files; this is refused: {message}"))
    } else if message.contains("INTERRUPT") || message.contains("Interrupted") {
        user_error("57014", "canceling statement due to user request")
    } else if ["Parser Error", "Binder Error", "Catalog Error", "Syntax Error"].iter().any(|p| message.starts_with(p)) {
        user_error("42000", message)
    } else {
        user_error("XX000", message)
    }
}

fn refusal(r: Refusal) -> PgWireError {
    match r {
        Refusal::NotReading(_) => user_error("25006", r.to_string()),
        Refusal::Multiple(_) => user_error("0A000", r.to_string()),
        Refusal::Invalid(m) => duck_error(&m),
    }
}

/// Whether the query holds no statement: only whitespace, `;` and comments (Grafana's
/// `-- ping` health check, lib/pq's `;`).
pub fn is_blank(sql: &str) -> bool {
    let mut rest = sql;
    loop {
        rest = rest.trim_start_matches(|c: char| c.is_whitespace() || c == ';');
        if let Some(r) = rest.strip_prefix("--") {
            rest = r.split_once('\n').map_or("", |(_, after)| after);
        } else if let Some(r) = rest.strip_prefix("/*") {
            match r.split_once("*/") {
                Some((_, after)) => rest = after,
                None => return false,
            }
        } else {
            return rest.is_empty();
        }
    }
}

/// The PostgreSQL type of a DuckDB column type.
pub fn pg_type_of_duckdb(t: ffi::duckdb_type) -> Type {
    match t {
        ffi::DUCKDB_TYPE_DUCKDB_TYPE_BOOLEAN => Type::BOOL,
        ffi::DUCKDB_TYPE_DUCKDB_TYPE_TINYINT | ffi::DUCKDB_TYPE_DUCKDB_TYPE_SMALLINT | ffi::DUCKDB_TYPE_DUCKDB_TYPE_UTINYINT => Type::INT2,
        ffi::DUCKDB_TYPE_DUCKDB_TYPE_INTEGER | ffi::DUCKDB_TYPE_DUCKDB_TYPE_USMALLINT => Type::INT4,
        ffi::DUCKDB_TYPE_DUCKDB_TYPE_BIGINT | ffi::DUCKDB_TYPE_DUCKDB_TYPE_UINTEGER => Type::INT8,
        ffi::DUCKDB_TYPE_DUCKDB_TYPE_UBIGINT
        | ffi::DUCKDB_TYPE_DUCKDB_TYPE_HUGEINT
        | ffi::DUCKDB_TYPE_DUCKDB_TYPE_UHUGEINT
        | ffi::DUCKDB_TYPE_DUCKDB_TYPE_DECIMAL => Type::NUMERIC,
        ffi::DUCKDB_TYPE_DUCKDB_TYPE_FLOAT => Type::FLOAT4,
        ffi::DUCKDB_TYPE_DUCKDB_TYPE_DOUBLE => Type::FLOAT8,
        ffi::DUCKDB_TYPE_DUCKDB_TYPE_DATE => Type::DATE,
        ffi::DUCKDB_TYPE_DUCKDB_TYPE_TIMESTAMP
        | ffi::DUCKDB_TYPE_DUCKDB_TYPE_TIMESTAMP_S
        | ffi::DUCKDB_TYPE_DUCKDB_TYPE_TIMESTAMP_MS
        | ffi::DUCKDB_TYPE_DUCKDB_TYPE_TIMESTAMP_NS => Type::TIMESTAMP,
        ffi::DUCKDB_TYPE_DUCKDB_TYPE_TIMESTAMP_TZ | ffi::DUCKDB_TYPE_DUCKDB_TYPE_TIMESTAMP_TZ_NS => Type::TIMESTAMPTZ,
        ffi::DUCKDB_TYPE_DUCKDB_TYPE_VARCHAR | ffi::DUCKDB_TYPE_DUCKDB_TYPE_UUID => Type::VARCHAR,
        // Everything else travels as its text form: one unknown OID fails a whole Grafana panel.
        _ => Type::TEXT,
    }
}

/// The PostgreSQL type of an Arrow column as DuckDB exports it (consistent with
/// [`pg_type_of_duckdb`]).
pub fn pg_type_of_arrow(t: &DataType) -> Type {
    match t {
        DataType::Boolean => Type::BOOL,
        DataType::Int8 | DataType::Int16 | DataType::UInt8 => Type::INT2,
        DataType::Int32 | DataType::UInt16 => Type::INT4,
        DataType::Int64 | DataType::UInt32 => Type::INT8,
        DataType::UInt64 | DataType::Decimal128(..) => Type::NUMERIC,
        DataType::Float16 | DataType::Float32 => Type::FLOAT4,
        DataType::Float64 => Type::FLOAT8,
        DataType::Date32 | DataType::Date64 => Type::DATE,
        DataType::Timestamp(_, None) => Type::TIMESTAMP,
        DataType::Timestamp(_, Some(_)) => Type::TIMESTAMPTZ,
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => Type::VARCHAR,
        _ => Type::TEXT,
    }
}

fn micros(unit: &TimeUnit, v: i64) -> i64 {
    match unit {
        TimeUnit::Second => v.saturating_mul(1_000_000),
        TimeUnit::Millisecond => v.saturating_mul(1_000),
        TimeUnit::Microsecond => v,
        TimeUnit::Nanosecond => v.div_euclid(1_000),
    }
}

fn encode_err(e: impl std::fmt::Display) -> PgWireError {
    user_error("XX000", format!("cannot encode a result value: {e}"))
}

/// Encode one cell of `col` at `row` with the field's type and format.
fn encode_cell(enc: &mut DataRowEncoder, col: &dyn Array, row: usize, text: &dyn Fn(usize) -> PgWireResult<String>) -> PgWireResult<()> {
    if col.is_null(row) {
        return enc.encode_field(&None::<i64>);
    }
    match col.data_type() {
        DataType::Boolean => enc.encode_field(&col.as_boolean().value(row)),
        DataType::Int8 => enc.encode_field(&i16::from(col.as_primitive::<adt::Int8Type>().value(row))),
        DataType::Int16 => enc.encode_field(&col.as_primitive::<adt::Int16Type>().value(row)),
        DataType::UInt8 => enc.encode_field(&i16::from(col.as_primitive::<adt::UInt8Type>().value(row))),
        DataType::Int32 => enc.encode_field(&col.as_primitive::<adt::Int32Type>().value(row)),
        DataType::UInt16 => enc.encode_field(&i32::from(col.as_primitive::<adt::UInt16Type>().value(row))),
        DataType::Int64 => enc.encode_field(&col.as_primitive::<adt::Int64Type>().value(row)),
        DataType::UInt32 => enc.encode_field(&i64::from(col.as_primitive::<adt::UInt32Type>().value(row))),
        DataType::UInt64 => enc.encode_field(&rust_decimal::Decimal::from(col.as_primitive::<adt::UInt64Type>().value(row))),
        DataType::Decimal128(_, scale) => {
            let v = col.as_primitive::<adt::Decimal128Type>().value(row);
            let d = rust_decimal::Decimal::try_from_i128_with_scale(v, u32::try_from(*scale).unwrap_or(0)).map_err(encode_err)?;
            enc.encode_field(&d)
        }
        DataType::Float16 => enc.encode_field(&f32::from(col.as_primitive::<adt::Float16Type>().value(row))),
        DataType::Float32 => enc.encode_field(&col.as_primitive::<adt::Float32Type>().value(row)),
        DataType::Float64 => enc.encode_field(&col.as_primitive::<adt::Float64Type>().value(row)),
        DataType::Date32 => {
            let days = col.as_primitive::<adt::Date32Type>().value(row);
            let d = NaiveDate::from_ymd_opt(1970, 1, 1).expect("epoch") + chrono::TimeDelta::days(i64::from(days));
            enc.encode_field(&d)
        }
        DataType::Timestamp(unit, tz) => {
            let v = match unit {
                TimeUnit::Second => col.as_primitive::<adt::TimestampSecondType>().value(row),
                TimeUnit::Millisecond => col.as_primitive::<adt::TimestampMillisecondType>().value(row),
                TimeUnit::Microsecond => col.as_primitive::<adt::TimestampMicrosecondType>().value(row),
                TimeUnit::Nanosecond => col.as_primitive::<adt::TimestampNanosecondType>().value(row),
            };
            let t: DateTime<Utc> = DateTime::from_timestamp_micros(micros(unit, v)).ok_or_else(|| encode_err("timestamp out of range"))?;
            if tz.is_some() { enc.encode_field(&t) } else { enc.encode_field(&t.naive_utc()) }
        }
        DataType::Utf8 => enc.encode_field(&col.as_string::<i32>().value(row)),
        DataType::LargeUtf8 => enc.encode_field(&col.as_string::<i64>().value(row)),
        DataType::Utf8View => enc.encode_field(&col.as_string_view().value(row)),
        _ => enc.encode_field(&text(row)?),
    }
}

/// Arrow batches → the row description and the encoded rows.
fn encode(batches: &[RecordBatch], schema: &adt::Schema, format: &Format) -> PgWireResult<(Arc<Vec<FieldInfo>>, Vec<DataRow>)> {
    let fields: Arc<Vec<FieldInfo>> = Arc::new(
        schema
            .fields()
            .iter()
            .enumerate()
            .map(|(i, f)| FieldInfo::new(f.name().clone(), None, None, pg_type_of_arrow(f.data_type()), format.format_for(i)))
            .collect(),
    );
    let mut rows = Vec::with_capacity(batches.iter().map(RecordBatch::num_rows).sum());
    let mut enc = DataRowEncoder::new(fields.clone());
    let opts = duckdb::arrow::util::display::FormatOptions::default();
    for batch in batches {
        let formatters: Vec<Option<duckdb::arrow::util::display::ArrayFormatter<'_>>> = batch
            .columns()
            .iter()
            .map(|c| {
                if pg_type_of_arrow(c.data_type()) == Type::TEXT {
                    duckdb::arrow::util::display::ArrayFormatter::try_new(c.as_ref(), &opts).ok()
                } else {
                    None
                }
            })
            .collect();
        for row in 0..batch.num_rows() {
            for (ci, col) in batch.columns().iter().enumerate() {
                let text = |r: usize| -> PgWireResult<String> {
                    formatters[ci]
                        .as_ref()
                        .map(|f| f.value(r).to_string())
                        .ok_or_else(|| encode_err(format!("no text form for {}", col.data_type())))
                };
                encode_cell(&mut enc, col.as_ref(), row, &text)?;
            }
            rows.push(enc.take_row());
        }
    }
    Ok((fields, rows))
}

/// Interrupts the DuckDB query if the future running it is dropped (client cancel, disconnect,
/// server stop) before it finished.
struct InterruptOnDrop(Option<Arc<duckdb::InterruptHandle>>);
impl Drop for InterruptOnDrop {
    fn drop(&mut self) {
        if let Some(h) = self.0.take() {
            h.interrupt();
        }
    }
}

/// The query side: shared by every connection.
pub struct Backend {
    state: Arc<LakeState>,
    timeout: Duration,
    parser: Arc<Parser>,
}

impl Backend {
    async fn check(&self, sql: &str) -> PgWireResult<(Arc<Snapshot>, Checked)> {
        let snap = self.state.snapshot().await;
        let s2 = snap.clone();
        let sql = sql.to_owned();
        let checked = tokio::task::spawn_blocking(move || engine::check(&s2, &sql)).await.map_err(encode_err)?.map_err(refusal)?;
        Ok((snap, checked))
    }

    /// Run a checked SELECT with parameters, within the timeout; interrupts DuckDB on timeout.
    async fn run(&self, snap: Arc<Snapshot>, sql: String, params: Vec<Value>, format: Format) -> PgWireResult<Response> {
        let conn = snap.connect().map_err(|e| user_error("XX000", e.to_string()))?;
        let handle = conn.conn.interrupt_handle();
        let mut guard = InterruptOnDrop(Some(handle.clone()));
        let task = tokio::task::spawn_blocking(move || -> PgWireResult<(Arc<Vec<FieldInfo>>, Vec<DataRow>)> {
            let _snap = snap;
            let mut stmt = conn.conn.prepare(&sql).map_err(|e| duck_error(&e.to_string()))?;
            let arrow = stmt.query_arrow(duckdb::params_from_iter(params)).map_err(|e| duck_error(&e.to_string()))?;
            let schema = arrow.get_schema();
            let batches: Vec<RecordBatch> = arrow.collect();
            encode(&batches, &schema, &format)
        });
        let outcome = tokio::time::timeout(self.timeout, task).await;
        guard.0 = None;
        match outcome {
            Ok(Ok(Ok((fields, rows)))) => Ok(Response::Query(QueryResponse::new(fields, stream::iter(rows.into_iter().map(Ok))))),
            Ok(Ok(Err(e))) => Err(e),
            Ok(Err(join)) => Err(encode_err(join)),
            Err(_) => {
                handle.interrupt();
                Err(user_error(
                    "57014",
                    format!(
                        "canceling statement due to statement timeout: it ran longer than --query-timeout ({} s)",
                        self.timeout.as_secs_f64()
                    ),
                ))
            }
        }
    }
}

/// Whether a failure means a file of the snapshot went away (published and cleaned up since):
/// worth one retry on a fresh snapshot.
fn vanished(e: &PgWireError) -> bool {
    match e {
        PgWireError::UserError(info) => {
            info.message.contains("/_tickerlake/runs/") || info.message.contains("No files found") || info.message.contains("No such file")
        }
        _ => false,
    }
}

fn transaction_response(sql: &str) -> Response {
    let word = sql.trim_start().split(|c: char| !c.is_ascii_alphabetic()).next().unwrap_or("").to_ascii_uppercase();
    match word.as_str() {
        "BEGIN" | "START" => Response::TransactionStart(Tag::new("BEGIN")),
        "ROLLBACK" | "ABORT" => Response::TransactionEnd(Tag::new("ROLLBACK")),
        _ => Response::TransactionEnd(Tag::new("COMMIT")),
    }
}

#[async_trait]
impl SimpleQueryHandler for Backend {
    async fn do_query<C>(&self, _client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        if is_blank(query) {
            return Ok(vec![Response::EmptyQuery]);
        }
        let mut retried = false;
        loop {
            let outcome = match self.check(query).await {
                Ok((_, checked)) if checked.kind == Kind::Transaction => return Ok(vec![transaction_response(query)]),
                Ok((snap, checked)) => self.run(snap, checked.sql, Vec::new(), Format::UnifiedText).await,
                Err(e) => Err(e),
            };
            match outcome {
                Err(e) if !retried && vanished(&e) => {
                    retried = true;
                    self.state.refresh_now().await;
                }
                other => return other.map(|r| vec![r]),
            }
        }
    }
}

/// Parses (and checks) statements of the extended protocol.
pub struct Parser {
    backend: std::sync::OnceLock<std::sync::Weak<Backend>>,
}

#[async_trait]
impl QueryParser for Parser {
    type Statement = Checked;

    async fn parse_sql<C>(&self, _client: &C, sql: &str, _types: &[Option<Type>]) -> PgWireResult<Option<Checked>>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        if is_blank(sql) {
            return Ok(None);
        }
        let backend = self.backend.get().and_then(std::sync::Weak::upgrade).ok_or_else(|| encode_err("server stopping"))?;
        match backend.check(sql).await {
            Err(e) if vanished(&e) => {
                backend.state.refresh_now().await;
                Ok(Some(backend.check(sql).await?.1))
            }
            other => Ok(Some(other?.1)),
        }
    }

    fn get_parameter_types(&self, stmt: &Checked) -> PgWireResult<Vec<Type>> {
        Ok(stmt.params.iter().map(|t| param_type(*t)).collect())
    }

    fn get_result_schema(&self, stmt: &Checked, format: Option<&Format>) -> PgWireResult<Vec<FieldInfo>> {
        Ok(stmt
            .columns
            .iter()
            .enumerate()
            .map(|(i, (name, t))| {
                FieldInfo::new(name.clone(), None, None, pg_type_of_duckdb(*t), format.map_or(FieldFormat::Text, |f| f.format_for(i)))
            })
            .collect())
    }
}

/// A parameter's type as announced to the client: what DuckDB inferred, else text.
fn param_type(t: ffi::duckdb_type) -> Type {
    match pg_type_of_duckdb(t) {
        Type::VARCHAR => Type::TEXT,
        other => other,
    }
}

/// Decode the bound parameters into DuckDB values.
fn parameters(portal: &Portal<Checked>) -> PgWireResult<Vec<Value>> {
    let stmt = &portal.statement;
    (0..portal.parameter_len())
        .map(|i| {
            let t = stmt
                .parameter_types
                .get(i)
                .cloned()
                .flatten()
                .filter(|t| *t != Type::UNKNOWN)
                .unwrap_or_else(|| stmt.statement.params.get(i).map_or(Type::TEXT, |t| param_type(*t)));
            let v = match t {
                Type::BOOL => portal.parameter::<bool>(i, &t)?.map(Value::Boolean),
                Type::INT2 => portal.parameter::<i16>(i, &t)?.map(Value::SmallInt),
                Type::INT4 => portal.parameter::<i32>(i, &t)?.map(Value::Int),
                Type::INT8 => portal.parameter::<i64>(i, &t)?.map(Value::BigInt),
                Type::FLOAT4 => portal.parameter::<f32>(i, &t)?.map(Value::Float),
                Type::FLOAT8 => portal.parameter::<f64>(i, &t)?.map(Value::Double),
                Type::NUMERIC => portal.parameter::<rust_decimal::Decimal>(i, &t)?.map(|d| Value::Text(d.to_string())),
                Type::DATE => portal.parameter::<NaiveDate>(i, &t)?.map(|d| {
                    Value::Date32(i32::try_from((d - NaiveDate::from_ymd_opt(1970, 1, 1).expect("epoch")).num_days()).unwrap_or(i32::MAX))
                }),
                Type::TIMESTAMP => portal
                    .parameter::<NaiveDateTime>(i, &t)?
                    .map(|d| Value::Timestamp(duckdb::types::TimeUnit::Microsecond, d.and_utc().timestamp_micros())),
                Type::TIMESTAMPTZ => portal
                    .parameter::<DateTime<chrono::FixedOffset>>(i, &t)?
                    .map(|d| Value::Timestamp(duckdb::types::TimeUnit::Microsecond, d.timestamp_micros())),
                Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME => portal.parameter::<String>(i, &t)?.map(Value::Text),
                other => {
                    return Err(user_error(
                        "0A000",
                        format!("parameter ${} has type {other}, which tickerlake serve does not take; cast it in SQL", i + 1),
                    ));
                }
            };
            Ok(v.unwrap_or(Value::Null))
        })
        .collect()
}

#[async_trait]
impl ExtendedQueryHandler for Backend {
    type Statement = Checked;
    type QueryParser = Parser;

    fn query_parser(&self) -> Arc<Parser> {
        self.parser.clone()
    }

    async fn do_query<C>(&self, _client: &mut C, portal: &Portal<Checked>, _max_rows: usize) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let checked = &portal.statement.statement;
        match checked.kind {
            Kind::Transaction => Ok(transaction_response(&checked.sql)),
            Kind::Select => {
                let params = parameters(portal)?;
                let snap = self.state.snapshot().await;
                match self.run(snap, checked.sql.clone(), params.clone(), portal.result_column_format.clone()).await {
                    Err(e) if vanished(&e) => {
                        self.state.refresh_now().await;
                        let snap = self.state.snapshot().await;
                        self.run(snap, checked.sql.clone(), params, portal.result_column_format.clone()).await
                    }
                    other => other,
                }
            }
        }
    }

    async fn do_describe_statement<C>(&self, _client: &mut C, target: &StoredStatement<Checked>) -> PgWireResult<DescribeStatementResponse>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let stmt = &target.statement;
        let params = (0..stmt.params.len().max(target.parameter_types.len()))
            .map(|i| {
                target
                    .parameter_types
                    .get(i)
                    .cloned()
                    .flatten()
                    .unwrap_or_else(|| stmt.params.get(i).map_or(Type::TEXT, |t| param_type(*t)))
            })
            .collect();
        let fields = if stmt.kind == Kind::Select { self.parser.get_result_schema(stmt, None)? } else { Vec::new() };
        Ok(DescribeStatementResponse::new(params, fields))
    }

    async fn do_describe_portal<C>(&self, _client: &mut C, portal: &Portal<Checked>) -> PgWireResult<DescribePortalResponse>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let stmt = &portal.statement.statement;
        let fields =
            if stmt.kind == Kind::Select { self.parser.get_result_schema(stmt, Some(&portal.result_column_format))? } else { Vec::new() };
        Ok(DescribePortalResponse::new(fields))
    }
}

/// Trust (no password): loopback only, enforced when `serve` starts.
pub struct Trust;
impl NoopStartupHandler for Trust {}

/// Checks the one password, whatever the user name.
#[derive(Debug)]
struct OnePassword(String);

#[async_trait]
impl AuthSource for OnePassword {
    async fn get_password(&self, _login: &LoginInfo) -> PgWireResult<Password> {
        let salt: Vec<u8> = rand::random::<[u8; 16]>().to_vec();
        let hashed = gen_salted_password(&self.0, &salt, SCRAM_ITERATIONS);
        Ok(Password::new(Some(salt), hashed))
    }
}

/// How clients authenticate.
pub enum Startup {
    /// Anyone (loopback).
    Trust(Trust),
    /// SCRAM-SHA-256 with TICKERLAKE_SERVE_PASSWORD.
    Scram(SASLAuthStartupHandler<DefaultServerParameterProvider>),
}

#[async_trait]
impl StartupHandler for Startup {
    async fn on_startup<C>(&self, client: &mut C, message: PgWireFrontendMessage) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        match self {
            Self::Trust(t) => t.on_startup(client, message).await,
            Self::Scram(s) => s.on_startup(client, message).await,
        }
    }
}

/// Everything pgwire needs per connection.
pub struct Handlers {
    backend: Arc<Backend>,
    startup: Arc<Startup>,
}

impl Handlers {
    /// Handlers over the served lake.
    pub fn new(state: Arc<LakeState>, timeout: Duration, password: Option<String>) -> Self {
        let parser = Arc::new(Parser { backend: std::sync::OnceLock::new() });
        let backend = Arc::new(Backend { state, timeout, parser: parser.clone() });
        let _ = parser.backend.set(Arc::downgrade(&backend));
        let startup = match password {
            None => Startup::Trust(Trust),
            Some(p) => {
                let mut scram = ScramAuth::new(Arc::new(OnePassword(p)));
                scram.set_iterations(SCRAM_ITERATIONS);
                Startup::Scram(SASLAuthStartupHandler::new(Arc::new(DefaultServerParameterProvider::default())).with_scram(scram))
            }
        };
        Self { backend, startup: Arc::new(startup) }
    }
}

impl PgWireServerHandlers for Handlers {
    fn simple_query_handler(&self) -> Arc<impl SimpleQueryHandler> {
        self.backend.clone()
    }
    fn extended_query_handler(&self) -> Arc<impl ExtendedQueryHandler> {
        self.backend.clone()
    }
    fn startup_handler(&self) -> Arc<impl StartupHandler> {
        self.startup.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_checks_and_comments_are_blank() {
        for q in ["", ";", " ; ;", "-- ping", "-- ping\n", "/* x */ ;", "--a\n--b\n;"] {
            assert!(is_blank(q), "{q:?}");
        }
        for q in ["SELECT 1", "-- ping\nSELECT 1", "/* x */ SELECT 1", "/* unterminated"] {
            assert!(!is_blank(q), "{q:?}");
        }
    }
}
