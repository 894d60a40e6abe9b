//! The PostgreSQL protocol side of `serve` (pgwire): authentication and the connection cap, the
//! simple protocol (Grafana's pgx, psql) and the extended one (JDBC, psycopg, asyncpg,
//! tokio-postgres), session statements answered per connection, the statement check before
//! anything runs, results streamed in batches with back-pressure, and the query timeout and
//! CancelRequests interrupting DuckDB.

use std::collections::VecDeque;
use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, NaiveDateTime};
use duckdb::types::Value;
use futures::{Sink, SinkExt};
use pgwire::api::auth::sasl::SASLAuthStartupHandler;
use pgwire::api::auth::sasl::scram::{ScramAuth, ScramSecret, gen_salted_password};
use pgwire::api::auth::{AuthSource, LoginInfo, Password, ServerParameterProvider, StartupHandler};
use pgwire::api::cancel::CancelHandler;
use pgwire::api::portal::{Format, Portal, PortalExecutionState};
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use pgwire::api::results::{DescribePortalResponse, DescribeStatementResponse, FieldFormat, FieldInfo, QueryResponse, Response, Tag};
use pgwire::api::stmt::{QueryParser, StoredStatement};
use pgwire::api::store::{Entry, PortalStore};
use pgwire::api::{ClientInfo, ClientPortalStore, PgWireConnectionState, PgWireServerHandlers, PidSecretKeyGenerator, Type};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::cancel::CancelRequest;
use pgwire::messages::data::DataRow;
use pgwire::messages::extendedquery::Execute;
use pgwire::messages::startup::ParameterStatus;
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};
use tokio::sync::mpsc;

use super::ServeError;
use super::compat::{self, Local, SettingError, Settings};
use super::encode::{self, encode_err, pg_type_of_duckdb};
use super::engine::{self, Checked, Refusal};
use super::session::{QueryControl, Session, Sessions, Stop};
use super::state::{LakeState, Served};

/// SCRAM iteration count (PostgreSQL's default).
const SCRAM_ITERATIONS: usize = 4096;

/// Result batches buffered between DuckDB and the client: DuckDB waits while the client reads.
const BATCHES_IN_FLIGHT: usize = 2;

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
    } else if message.contains("Out of Memory") {
        user_error("53200", format!("{message} (the server's --memory-limit; retry, or narrow the query)"))
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

/// How long a query may run: `--query-timeout`, or the session's shorter statement_timeout.
#[derive(Debug, Clone, Copy)]
struct Limit {
    after: Duration,
    session: bool,
}

fn stopped_error(why: Stop, limit: Limit) -> PgWireError {
    match why {
        Stop::Cancel => user_error("57014", "canceling statement due to user request"),
        Stop::Timeout => user_error(
            "57014",
            format!(
                "canceling statement due to statement timeout: it ran longer than {} ({} s)",
                if limit.session { "the session's statement_timeout" } else { "--query-timeout" },
                limit.after.as_secs_f64()
            ),
        ),
    }
}

/// Whether the query holds no statement: only whitespace, `;` and comments (Grafana's
/// `-- ping` health check, lib/pq's `;`).
pub fn is_blank(sql: &str) -> bool {
    super::sqltext::tokenize(sql).iter().all(|t| {
        let unterminated = t.text.starts_with("/*") && !t.text.ends_with("*/");
        (t.kind == super::sqltext::Tok::Space && !unterminated) || t.text == ";"
    })
}

/// A parsed statement: one the handler answers itself, or a checked query for DuckDB.
#[derive(Debug, Clone)]
pub enum Statement {
    /// A session statement (SET, SHOW, BEGIN…).
    Local(Local),
    /// A query, rewritten for the snapshot and checked.
    Query(Checked),
}

/// The query side: shared by every connection.
pub struct Backend {
    state: Arc<LakeState>,
    timeout: Duration,
    parser: Arc<Parser>,
}

/// One item from the thread running a query.
enum Batch {
    /// The row description and the first rows (sent together, so a failure before any row can
    /// still be retried).
    Start(Arc<Vec<FieldInfo>>, Vec<DataRow>),
    /// More rows.
    Rows(Vec<DataRow>),
    /// The query failed.
    Failed(PgWireError),
}

/// Interrupts the query when dropped before it finished (the client went away, the server stops).
struct InterruptOnDrop(Option<Arc<QueryControl>>);
impl Drop for InterruptOnDrop {
    fn drop(&mut self) {
        if let Some(c) = self.0.take() {
            c.interrupt_quietly();
        }
    }
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);
impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// What a streamed result keeps alive until its last row is sent.
struct Streaming {
    rx: mpsc::Receiver<Batch>,
    rows: VecDeque<DataRow>,
    _running: super::session::RunningGuard,
    _watchdog: AbortOnDrop,
    _pins: Option<super::cache::Pins>,
    interrupt: InterruptOnDrop,
}

impl Backend {
    fn session<C: ClientInfo>(client: &C) -> Arc<Session> {
        client.session_extensions().get_or_insert_with(Session::default)
    }

    /// Parse a statement: a session statement, or a query rewritten and checked on a snapshot.
    async fn parse(&self, sql: &str) -> PgWireResult<Statement> {
        let n = super::sqltext::statement_count(&super::sqltext::tokenize(sql));
        if n > 1 {
            return Err(refusal(Refusal::Multiple(n)));
        }
        if let Some(local) = compat::classify(sql) {
            return Ok(Statement::Local(local));
        }
        let rewritten = compat::rewrite(sql);
        let snap = self.state.snapshot().await;
        let checked =
            tokio::task::spawn_blocking(move || engine::check(&snap.db, &rewritten)).await.map_err(encode_err)?.map_err(refusal)?;
        Ok(Statement::Query(checked))
    }

    /// Answer a session statement.
    async fn local<C>(&self, client: &mut C, local: &Local, format: &Format) -> PgWireResult<Response>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let session = Self::session(client);
        let setting_error = |e: SettingError| match e {
            SettingError::Unknown(name) => user_error(
                "25006",
                format!(
                    "tickerlake serve is read-only: SET {name} is refused; only PostgreSQL session settings (DateStyle, TimeZone, extra_float_digits, application_name, search_path, statement_timeout…) are accepted, per connection"
                ),
            ),
            other => user_error(other.sqlstate(), other.to_string()),
        };
        match local {
            Local::Set { name, value } => {
                let (display, now) = session.settings.lock().expect("settings lock").set(name, value.as_deref()).map_err(setting_error)?;
                if compat::is_reported(&name.to_ascii_lowercase()) {
                    client.feed(PgWireBackendMessage::ParameterStatus(ParameterStatus::new(display, now))).await?;
                }
                Ok(Response::Execution(Tag::new("SET")))
            }
            Local::Reset(name) => {
                match name {
                    Some(n) => {
                        session.settings.lock().expect("settings lock").set(n, None).map_err(setting_error)?;
                    }
                    None => session.settings.lock().expect("settings lock").reset_all(),
                }
                Ok(Response::Execution(Tag::new("RESET")))
            }
            Local::Show(name) => {
                let settings = session.settings.lock().expect("settings lock").clone();
                let (fields, rows) = match name {
                    Some(n) => {
                        let v = settings.get(n).map_err(|e| user_error(e.sqlstate(), e.to_string()))?;
                        encode::text_rows(&[&compat::show_column(n)], &[vec![v]], format)?
                    }
                    None => {
                        let rows: Vec<Vec<String>> = settings.all().into_iter().map(|(n, v, d)| vec![n, v, d]).collect();
                        encode::text_rows(&["name", "setting", "description"], &rows, format)?
                    }
                };
                let mut response = QueryResponse::new(fields, futures::stream::iter(rows.into_iter().map(Ok)));
                response.set_command_tag("SHOW");
                Ok(Response::Query(response))
            }
            Local::NoOp(tag) => Ok(Response::Execution(Tag::new(tag))),
            Local::Begin => Ok(Response::TransactionStart(Tag::new("BEGIN"))),
            Local::End { rollback } => Ok(Response::TransactionEnd(Tag::new(if *rollback { "ROLLBACK" } else { "COMMIT" }))),
            Local::Refused(what) => Err(refusal(Refusal::NotReading(what.clone()))),
        }
    }

    /// Run a checked query, retrying once on a fresh snapshot if a file of this one went away,
    /// or with every file of its views if it opened one a remote lake's probe did not foresee.
    async fn query(&self, session: &Arc<Session>, checked: &Checked, params: Vec<Value>, format: Format) -> PgWireResult<Response> {
        let snap = self.state.snapshot().await;
        match self.run(session, snap.clone(), checked, params.clone(), format.clone(), false).await {
            Err(e) if vanished(&e) => {
                self.state.refresh_now().await;
                let snap = self.state.snapshot().await;
                self.run(session, snap, checked, params, format, false).await
            }
            Err(e) if unfetched(&e) => self.run(session, snap, checked, params, format, true).await,
            other => other,
        }
    }

    /// Run a checked SELECT: DuckDB streams it from a blocking thread in batches; the client's
    /// reading paces it. Interrupted by a CancelRequest, the timeout, or the client going away.
    async fn run(
        &self,
        session: &Arc<Session>,
        snap: Arc<Served>,
        checked: &Checked,
        params: Vec<Value>,
        format: Format,
        everything: bool,
    ) -> PgWireResult<Response> {
        let timeout = match session.settings.lock().expect("settings lock").statement_timeout() {
            Some(t) if t < self.timeout => Limit { after: t, session: true },
            _ => Limit { after: self.timeout, session: false },
        };
        let control = QueryControl::new();
        let running = session.running(control.clone());
        let watchdog = {
            let control = control.clone();
            AbortOnDrop(tokio::spawn(async move {
                tokio::time::sleep(timeout.after).await;
                control.stop(Stop::Timeout);
            }))
        };
        let pins = self.state.readable(&snap, &checked.sql, &params, everything, &control).await.map_err(ServeError::into_pg)?;
        if let Some(why) = control.stopped() {
            return Err(stopped_error(why, timeout));
        }
        // The statement as the check bound it, if that was on this snapshot (a simple query's
        // usual case); otherwise (a later snapshot, a statement run again) it is bound anew.
        let bound = checked.bound.take(snap.db.generation);
        let (tx, mut rx) = mpsc::channel::<Batch>(BATCHES_IN_FLIGHT);
        let sql = checked.sql.clone();
        let producer_control = control.clone();
        tokio::task::spawn_blocking(move || {
            let control = producer_control;
            let fail = |message: &str| match control.stopped() {
                Some(why) => stopped_error(why, timeout),
                None => duck_error(message),
            };
            let outcome = (|| -> Result<(), PgWireError> {
                let mut bound = match bound {
                    Some(bound) => bound,
                    None => engine::prepare(&snap.db, &sql).map_err(|r| match r {
                        Refusal::Invalid(message) => fail(&message),
                        other => refusal(other),
                    })?,
                };
                control.attach(bound.interrupter());
                if let Some(why) = control.stopped() {
                    return Err(stopped_error(why, timeout));
                }
                bound.bind(&params).map_err(|m| fail(&m))?;
                let mut results = bound.execute().map_err(|m| fail(&m))?;
                let fields = encode::fields(&results.schema(), &format);
                let mut started = false;
                loop {
                    if let Some(why) = control.stopped() {
                        return Err(stopped_error(why, timeout));
                    }
                    let rows = match results.next_batch().map_err(|m| fail(&m))? {
                        Some(batch) => encode::encode_batch(&batch, &fields)?,
                        None if started => return Ok(()),
                        None => Vec::new(),
                    };
                    let last = rows.is_empty() && !started;
                    let item = if started { Batch::Rows(rows) } else { Batch::Start(fields.clone(), rows) };
                    started = true;
                    if tx.blocking_send(item).is_err() {
                        // The client is gone: dropping the rows ends the query.
                        return Ok(());
                    }
                    if last {
                        return Ok(());
                    }
                }
            })();
            if let Err(e) = outcome {
                let _ = tx.blocking_send(Batch::Failed(e));
            }
            drop(snap);
        });
        let interrupt = InterruptOnDrop(Some(control));
        match rx.recv().await {
            Some(Batch::Start(fields, rows)) => {
                let state = Streaming { rx, rows: rows.into(), _running: running, _watchdog: watchdog, _pins: pins, interrupt };
                let stream = futures::stream::unfold(state, |mut s| async move {
                    loop {
                        if let Some(row) = s.rows.pop_front() {
                            return Some((Ok(row), s));
                        }
                        match s.rx.recv().await {
                            Some(Batch::Rows(rows)) => s.rows = rows.into(),
                            Some(Batch::Failed(e)) => {
                                s.interrupt.0.take();
                                return Some((Err(e), s));
                            }
                            Some(Batch::Start(..)) => return Some((Err(encode_err("result started twice")), s)),
                            None => {
                                // Done: nothing left to interrupt.
                                s.interrupt.0.take();
                                return None;
                            }
                        }
                    }
                });
                Ok(Response::Query(QueryResponse::new(fields, stream)))
            }
            Some(Batch::Failed(e)) => Err(e),
            Some(Batch::Rows(_)) | None => Err(encode_err("the query thread ended without a result")),
        }
    }
}

/// Whether a query opened a remote lake's file that was not fetched (an empty placeholder).
fn unfetched(e: &PgWireError) -> bool {
    matches!(e, PgWireError::UserError(info) if info.message.contains("too small to be a Parquet file"))
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

#[async_trait]
impl SimpleQueryHandler for Backend {
    async fn do_query<C>(&self, client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        if is_blank(query) {
            return Ok(vec![Response::EmptyQuery]);
        }
        let parsed = match self.parse(query).await {
            Err(e) if vanished(&e) => {
                self.state.refresh_now().await;
                self.parse(query).await
            }
            other => other,
        }?;
        let response = match parsed {
            Statement::Local(local) => self.local(client, &local, &Format::UnifiedText).await?,
            Statement::Query(checked) => self.query(&Self::session(client), &checked, Vec::new(), Format::UnifiedText).await?,
        };
        Ok(vec![response])
    }
}

/// Parses (and checks) statements of the extended protocol.
pub struct Parser {
    backend: std::sync::OnceLock<std::sync::Weak<Backend>>,
}

#[async_trait]
impl QueryParser for Parser {
    type Statement = Statement;

    async fn parse_sql<C>(&self, _client: &C, sql: &str, _types: &[Option<Type>]) -> PgWireResult<Option<Statement>>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        if is_blank(sql) {
            return Ok(None);
        }
        let backend = self.backend.get().and_then(std::sync::Weak::upgrade).ok_or_else(|| encode_err("server stopping"))?;
        let parsed = match backend.parse(sql).await {
            Err(e) if vanished(&e) => {
                backend.state.refresh_now().await;
                backend.parse(sql).await?
            }
            other => other?,
        };
        // A client keeps a parsed statement as long as it likes: it runs bound anew each time.
        if let Statement::Query(checked) = &parsed {
            checked.bound.release();
        }
        Ok(Some(parsed))
    }

    fn get_parameter_types(&self, stmt: &Statement) -> PgWireResult<Vec<Type>> {
        Ok(match stmt {
            Statement::Query(q) => q.params.iter().map(|t| param_type(*t)).collect(),
            Statement::Local(_) => Vec::new(),
        })
    }

    fn get_result_schema(&self, stmt: &Statement, format: Option<&Format>) -> PgWireResult<Vec<FieldInfo>> {
        let format_for = |i: usize| format.map_or(FieldFormat::Text, |f| f.format_for(i));
        Ok(match stmt {
            Statement::Query(q) => q
                .columns
                .iter()
                .enumerate()
                .map(|(i, (name, t))| FieldInfo::new(name.clone(), None, None, pg_type_of_duckdb(*t), format_for(i)))
                .collect(),
            Statement::Local(Local::Show(Some(name))) => {
                vec![FieldInfo::new(compat::show_column(name), None, None, Type::TEXT, format_for(0))]
            }
            Statement::Local(Local::Show(None)) => ["name", "setting", "description"]
                .iter()
                .enumerate()
                .map(|(i, n)| FieldInfo::new((*n).to_owned(), None, None, Type::TEXT, format_for(i)))
                .collect(),
            Statement::Local(_) => Vec::new(),
        })
    }
}

/// A parameter's type as announced to the client: what DuckDB inferred, else text.
fn param_type(t: duckdb::ffi::duckdb_type) -> Type {
    match pg_type_of_duckdb(t) {
        Type::VARCHAR => Type::TEXT,
        other => other,
    }
}

/// Decode the bound parameters into DuckDB values.
fn parameters(portal: &Portal<Statement>, checked: &Checked) -> PgWireResult<Vec<Value>> {
    let stmt = &portal.statement;
    (0..portal.parameter_len())
        .map(|i| {
            let t = stmt
                .parameter_types
                .get(i)
                .cloned()
                .flatten()
                .filter(|t| *t != Type::UNKNOWN)
                .unwrap_or_else(|| checked.params.get(i).map_or(Type::TEXT, |t| param_type(*t)));
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
                Type::OID => portal.parameter::<u32>(i, &t)?.map(|v| Value::BigInt(i64::from(v))),
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
    type Statement = Statement;
    type QueryParser = Parser;

    fn query_parser(&self) -> Arc<Parser> {
        self.parser.clone()
    }

    async fn do_query<C>(&self, client: &mut C, portal: &Portal<Statement>, _max_rows: usize) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        match &portal.statement.statement {
            Statement::Local(local) => self.local(client, local, &portal.result_column_format).await,
            Statement::Query(checked) => {
                let params = parameters(portal, checked)?;
                self.query(&Self::session(client), checked, params, portal.result_column_format.clone()).await
            }
        }
    }

    /// Execute a portal. pgwire's own collects a whole result into memory before sending it when
    /// the client asks for all rows (max_rows 0, what nearly every driver does); a query's rows
    /// are streamed to the client here instead, paced by its reading.
    async fn on_execute<C>(&self, client: &mut C, message: Execute) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let name = message.name.as_deref().unwrap_or(pgwire::api::DEFAULT_NAME).to_owned();
        let portal = match client.portal_store().get_portal(&name) {
            Some(Entry::Value(p))
                if message.max_rows == 0
                    && matches!(client.state(), PgWireConnectionState::ReadyForQuery)
                    && matches!(p.statement.statement, Statement::Query(_))
                    && matches!(*p.state().lock().await, PortalExecutionState::Initial) =>
            {
                p
            }
            // Session statements, row-limited fetches (at most max_rows are held), resumed portals.
            _ => return self._on_execute(client, message).await,
        };
        client.set_state(PgWireConnectionState::QueryInProgress);
        let transaction_status = client.transaction_status();
        match ExtendedQueryHandler::do_query(self, client, portal.as_ref(), 0).await? {
            Response::Query(results) => {
                *portal.state().lock().await = PortalExecutionState::Finished;
                pgwire::api::query::send_query_response(client, results, false).await?;
            }
            _ => return Err(encode_err("a query answered without rows")),
        }
        client.set_state(PgWireConnectionState::ReadyForQuery);
        client.set_transaction_status(transaction_status);
        Ok(())
    }

    async fn do_describe_statement<C>(
        &self,
        _client: &mut C,
        target: &StoredStatement<Statement>,
    ) -> PgWireResult<DescribeStatementResponse>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let inferred = self.parser.get_parameter_types(&target.statement)?;
        let params = (0..inferred.len().max(target.parameter_types.len()))
            .map(|i| target.parameter_types.get(i).cloned().flatten().unwrap_or_else(|| inferred.get(i).cloned().unwrap_or(Type::TEXT)))
            .collect();
        Ok(DescribeStatementResponse::new(params, self.parser.get_result_schema(&target.statement, None)?))
    }

    async fn do_describe_portal<C>(&self, _client: &mut C, portal: &Portal<Statement>) -> PgWireResult<DescribePortalResponse>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        Ok(DescribePortalResponse::new(self.parser.get_result_schema(&portal.statement.statement, Some(&portal.result_column_format))?))
    }
}

/// The one password, salted and hashed once at start (PBKDF2 is deliberately slow: per login it
/// would cost every connection attempt, before authentication, on the async runtime). Only the
/// derived SCRAM keys are kept, as PostgreSQL keeps a verifier, not the password.
#[derive(Debug)]
struct OnePassword {
    salt: Vec<u8>,
    stored_key: Vec<u8>,
    server_key: Vec<u8>,
}

impl OnePassword {
    fn new(password: &str) -> Self {
        let salt: Vec<u8> = rand::random::<[u8; 16]>().to_vec();
        let salted = gen_salted_password(password, &salt, SCRAM_ITERATIONS);
        match ScramSecret::verifier_from_salted_password(salt, salted, SCRAM_ITERATIONS) {
            ScramSecret::Verifier { salt, stored_key, server_key, .. } => Self { salt, stored_key, server_key },
            ScramSecret::SaltedPassword { .. } => unreachable!("verifier_from_salted_password returns a verifier"),
        }
    }
}

#[async_trait]
impl AuthSource for OnePassword {
    async fn get_password(&self, _login: &LoginInfo) -> PgWireResult<Password> {
        // Only SCRAM is offered; there is no clear-text password to compare with.
        Err(PgWireError::UnsupportedSASLAuthMethod("password".into()))
    }

    async fn get_scram_secret(&self, _login: &LoginInfo) -> PgWireResult<(ScramSecret, Option<()>)> {
        Ok((
            ScramSecret::Verifier {
                salt: self.salt.clone(),
                iterations: SCRAM_ITERATIONS,
                stored_key: self.stored_key.clone(),
                server_key: self.server_key.clone(),
            },
            None,
        ))
    }
}

/// The parameters reported at connect, as PostgreSQL reports them (a driver reads these before
/// its first query: pgJDBC insists on UTF8 and ISO dates).
struct ServerParameters;

impl ServerParameterProvider for ServerParameters {
    fn server_parameters<C>(&self, client: &C) -> Option<std::collections::HashMap<String, String>>
    where
        C: ClientInfo,
    {
        let settings = Settings::from_startup(client.metadata());
        let get = |n: &str| settings.get(n).unwrap_or_default();
        let mut params = std::collections::HashMap::new();
        for (name, value) in [
            ("server_version", get("server_version")),
            ("server_encoding", get("server_encoding")),
            ("client_encoding", get("client_encoding")),
            ("DateStyle", get("datestyle")),
            ("IntervalStyle", get("intervalstyle")),
            ("TimeZone", get("timezone")),
            ("integer_datetimes", get("integer_datetimes")),
            ("standard_conforming_strings", get("standard_conforming_strings")),
            ("is_superuser", get("is_superuser")),
            ("default_transaction_read_only", get("default_transaction_read_only")),
            ("in_hot_standby", "off".to_owned()),
            ("application_name", get("application_name")),
            ("scram_iterations", SCRAM_ITERATIONS.to_string()),
        ] {
            params.insert(name.to_owned(), value);
        }
        if let Some(user) = client.metadata().get(pgwire::api::METADATA_USER) {
            params.insert("session_authorization".to_owned(), user.clone());
        }
        Some(params)
    }
}

/// How clients authenticate.
enum Auth {
    /// Anyone (loopback only, enforced when `serve` starts).
    Trust(pgwire::api::RandomPidSecretKeyGenerator),
    /// SCRAM-SHA-256 with TICKERLAKE_SERVE_PASSWORD.
    Scram(SASLAuthStartupHandler<ServerParameters>),
}

/// Startup of one connection: the connection cap, authentication, then its session.
pub struct Startup {
    shared: Arc<Shared>,
    over_capacity: bool,
}

#[async_trait]
impl StartupHandler for Startup {
    async fn on_startup<C>(&self, client: &mut C, message: PgWireFrontendMessage) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        if self.over_capacity && matches!(message, PgWireFrontendMessage::Startup(_)) {
            return Err(PgWireError::UserError(Box::new(ErrorInfo::new(
                "FATAL".into(),
                "53300".into(),
                format!(
                    "sorry, too many clients already: tickerlake serve allows {} connections at once (--max-connections); close idle ones or raise it",
                    self.shared.max_connections
                ),
            ))));
        }
        match &self.shared.auth {
            Auth::Trust(pids) => {
                if let PgWireFrontendMessage::Startup(ref startup) = message {
                    pgwire::api::auth::protocol_negotiation(client, startup).await?;
                    pgwire::api::auth::save_startup_parameters_to_metadata(client, startup);
                    let (pid, key) = pids.generate(client);
                    client.set_pid_and_secret_key(pid, key);
                    pgwire::api::auth::finish_authentication(client, &ServerParameters).await?;
                }
            }
            Auth::Scram(scram) => scram.on_startup(client, message).await?,
        }
        if matches!(client.state(), PgWireConnectionState::ReadyForQuery) && client.session_extensions().get::<Session>().is_none() {
            let session = client.session_extensions().get_or_insert_with(|| Session::new(Settings::from_startup(client.metadata())));
            let (pid, key) = client.pid_and_secret_key();
            let registration = self.shared.sessions.register(pid, &key, &session);
            client.session_extensions().insert(registration);
        }
        Ok(())
    }
}

/// CancelRequests: stop the named connection's running query.
pub struct Cancels(Arc<Sessions>);

#[async_trait]
impl CancelHandler for Cancels {
    async fn on_cancel_request(&self, request: CancelRequest) {
        self.0.cancel(request.pid, &request.secret_key);
    }
}

/// What every connection shares.
pub struct Shared {
    backend: Arc<Backend>,
    auth: Auth,
    sessions: Arc<Sessions>,
    cancels: Arc<Cancels>,
    max_connections: usize,
}

impl Shared {
    /// The handlers over the served lake (the password, if any, is salted and hashed here, once).
    pub fn new(state: Arc<LakeState>, timeout: Duration, password: Option<String>, max_connections: usize) -> Arc<Self> {
        let parser = Arc::new(Parser { backend: std::sync::OnceLock::new() });
        let backend = Arc::new(Backend { state, timeout, parser: parser.clone() });
        let _ = parser.backend.set(Arc::downgrade(&backend));
        let auth = match password {
            None => Auth::Trust(pgwire::api::RandomPidSecretKeyGenerator::default()),
            Some(p) => {
                let mut scram = ScramAuth::new(Arc::new(OnePassword::new(&p)));
                scram.set_iterations(SCRAM_ITERATIONS);
                Auth::Scram(SASLAuthStartupHandler::new(Arc::new(ServerParameters)).with_scram(scram))
            }
        };
        let sessions = Arc::new(Sessions::default());
        Arc::new(Self { backend, auth, cancels: Arc::new(Cancels(sessions.clone())), sessions, max_connections })
    }

    /// The handlers of one new connection (`over_capacity`: it gets SQLSTATE 53300 at startup).
    pub fn connection(self: &Arc<Self>, over_capacity: bool) -> Connection {
        Connection { shared: self.clone(), startup: Arc::new(Startup { shared: self.clone(), over_capacity }) }
    }
}

/// Everything pgwire needs for one connection.
pub struct Connection {
    shared: Arc<Shared>,
    startup: Arc<Startup>,
}

impl PgWireServerHandlers for Connection {
    fn simple_query_handler(&self) -> Arc<impl SimpleQueryHandler> {
        self.shared.backend.clone()
    }
    fn extended_query_handler(&self) -> Arc<impl ExtendedQueryHandler> {
        self.shared.backend.clone()
    }
    fn startup_handler(&self) -> Arc<impl StartupHandler> {
        self.startup.clone()
    }
    fn cancel_handler(&self) -> Arc<impl CancelHandler> {
        self.shared.cancels.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_salted_password_is_derived_once_not_per_login() {
        let p = OnePassword::new("s3cret");
        let login = LoginInfo::new(Some("a"), None, "127.0.0.1".into());
        let keys = |s: ScramSecret| match s {
            ScramSecret::Verifier { salt, iterations, stored_key, server_key } => (salt, iterations, stored_key, server_key),
            ScramSecret::SaltedPassword { .. } => panic!("a verifier, not the salted password, is kept"),
        };
        let (first, _) = p.get_scram_secret(&login).await.unwrap();
        let (second, _) = p.get_scram_secret(&login).await.unwrap();
        let (first, second) = (keys(first), keys(second));
        assert_eq!(first, second, "every login gets the keys derived at start");
        assert_eq!(first.1, SCRAM_ITERATIONS);
        // They are the password's: the keys of a fresh derivation with the same salt match.
        let salted = gen_salted_password("s3cret", &first.0, SCRAM_ITERATIONS);
        assert_eq!(keys(ScramSecret::verifier_from_salted_password(first.0.clone(), salted, SCRAM_ITERATIONS)), first);
        assert!(p.get_password(&login).await.is_err(), "no clear-text password to hand out");
    }

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
