//! A query bound once. [`super::engine::check`] parses and binds every query on a connection of
//! its own to judge it; the run then executes that same prepared statement instead of binding
//! the SQL again. Binding is most of a dashboard query's cost over a long history: it lists the
//! committed files of every view the query names and prunes them by date (a year of daily
//! partitions: about 10 ms of a 30–40 ms panel, see README). Parameters are bound and rows
//! streamed as Arrow record batches through DuckDB's C API, because duckdb-rs runs only the
//! statements it prepared itself.

use std::ffi::CStr;
use std::os::raw::c_char;
use std::sync::{Arc, Mutex};

use duckdb::arrow::array::StructArray;
use duckdb::arrow::datatypes::{Schema, SchemaRef};
use duckdb::arrow::ffi::{FFI_ArrowArray, FFI_ArrowSchema, from_ffi};
use duckdb::arrow::record_batch::RecordBatch;
use duckdb::ffi;
use duckdb::types::{TimeUnit, Value};

use super::session::Interrupter;

/// A DuckDB error message, trimmed as the handler reports it.
pub(super) fn c_text(p: *const c_char) -> String {
    if p.is_null() { String::new() } else { unsafe { CStr::from_ptr(p) }.to_string_lossy().trim_end().replace("\n\n", "\n") }
}

/// A raw connection, disconnected on drop.
pub(super) struct RawConn(pub(super) ffi::duckdb_connection);
// A connection runs one query at a time on the thread that owns its `Bound`; other threads only
// call `duckdb_interrupt`, which DuckDB makes safe to call from anywhere.
unsafe impl Send for RawConn {}
unsafe impl Sync for RawConn {}
impl Drop for RawConn {
    fn drop(&mut self) {
        unsafe { ffi::duckdb_disconnect(&mut self.0) };
    }
}

/// A prepared statement, destroyed on drop.
pub(super) struct Prepared(pub(super) ffi::duckdb_prepared_statement);
impl Drop for Prepared {
    fn drop(&mut self) {
        unsafe { ffi::duckdb_destroy_prepare(&mut self.0) };
    }
}

/// A statement prepared on a connection of its own, for one snapshot: run it once.
pub struct Bound {
    // Drop order: the statement, then its connection, then the database they belong to.
    pub(super) st: Prepared,
    pub(super) con: Arc<RawConn>,
    pub(super) _db: Arc<dyn std::any::Any + Send + Sync>,
    /// The snapshot it was bound on ([`super::engine::Snapshot::generation`]).
    pub(super) generation: u64,
}
// Used by one thread at a time (the check's, then the run's); see RawConn.
unsafe impl Send for Bound {}

/// Where a checked query keeps its bound statement until the run takes it; clones share it, and
/// a run that finds it empty binds again.
#[derive(Clone, Default)]
pub struct Slot(Arc<Mutex<Option<Bound>>>);

impl std::fmt::Debug for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let held = self.0.lock().map(|b| b.as_ref().map(|b| b.generation)).unwrap_or(None);
        f.debug_tuple("Slot").field(&held).finish()
    }
}

impl Slot {
    /// A slot holding `bound`.
    pub fn holding(bound: Bound) -> Self {
        Self(Arc::new(Mutex::new(Some(bound))))
    }

    /// Let the bound statement go: a statement kept for later (the extended protocol's Parse)
    /// must not hold its snapshot's database open after the lake moves on.
    pub fn release(&self) {
        self.0.lock().expect("bound statement lock").take();
    }

    /// The bound statement, if it was bound on snapshot `generation` and nobody took it yet.
    pub fn take(&self, generation: u64) -> Option<Bound> {
        // Taken either way: bound on another snapshot, it can never run now.
        let bound = self.0.lock().expect("bound statement lock").take()?;
        (bound.generation == generation).then_some(bound)
    }
}

impl Bound {
    /// What interrupts the statement while it runs (from any thread).
    pub fn interrupter(&self) -> Interrupter {
        let con = self.con.clone();
        Arc::new(move || unsafe { ffi::duckdb_interrupt(con.0) })
    }

    /// Bind the `$n` parameters; DuckDB casts each to the type the query needs there.
    pub fn bind(&mut self, params: &[Value]) -> Result<(), String> {
        let st = self.st.0;
        unsafe { ffi::duckdb_clear_bindings(st) };
        for (i, value) in params.iter().enumerate() {
            let idx = (i + 1) as ffi::idx_t;
            let rc = unsafe {
                match value {
                    Value::Null => ffi::duckdb_bind_null(st, idx),
                    Value::Boolean(b) => ffi::duckdb_bind_boolean(st, idx, *b),
                    Value::SmallInt(v) => ffi::duckdb_bind_int16(st, idx, *v),
                    Value::Int(v) => ffi::duckdb_bind_int32(st, idx, *v),
                    Value::BigInt(v) => ffi::duckdb_bind_int64(st, idx, *v),
                    Value::Float(v) => ffi::duckdb_bind_float(st, idx, *v),
                    Value::Double(v) => ffi::duckdb_bind_double(st, idx, *v),
                    Value::Text(s) => ffi::duckdb_bind_varchar_length(st, idx, s.as_ptr().cast(), s.len() as ffi::idx_t),
                    Value::Date32(days) => ffi::duckdb_bind_date(st, idx, ffi::duckdb_date { days: *days }),
                    Value::Timestamp(TimeUnit::Microsecond, micros) => {
                        ffi::duckdb_bind_timestamp(st, idx, ffi::duckdb_timestamp { micros: *micros })
                    }
                    other => return Err(format!("parameter ${} has a type tickerlake serve cannot pass to DuckDB ({other:?})", i + 1)),
                }
            };
            if rc != ffi::DuckDBSuccess {
                return Err(format!("cannot bind parameter ${}: {}", i + 1, c_text(unsafe { ffi::duckdb_prepare_error(st) })));
            }
        }
        Ok(())
    }

    /// Start the query; its rows stream from [`Rows::next_batch`].
    pub fn execute(self) -> Result<Rows, String> {
        let mut rows = Rows {
            result: unsafe { std::mem::zeroed() },
            options: std::ptr::null_mut(),
            ffi_schema: FFI_ArrowSchema::empty(),
            schema: Arc::new(Schema::empty()),
            done: false,
            _bound: self,
        };
        // `rows` owns the result from here: dropped on any error below, it destroys it.
        if unsafe { ffi::duckdb_execute_prepared_streaming(rows._bound.st.0, &mut rows.result) } != ffi::DuckDBSuccess {
            return Err(rows.error().unwrap_or_else(|| "DuckDB could not run the query".into()));
        }
        unsafe {
            rows.options = ffi::duckdb_result_get_arrow_options(&mut rows.result);
            let n = ffi::duckdb_column_count(&mut rows.result);
            let mut types: Vec<ffi::duckdb_logical_type> = (0..n).map(|i| ffi::duckdb_column_logical_type(&mut rows.result, i)).collect();
            let mut names: Vec<*const c_char> = (0..n).map(|i| ffi::duckdb_column_name(&mut rows.result, i)).collect();
            let converted = ffi::duckdb_to_arrow_schema(
                rows.options,
                types.as_mut_ptr(),
                names.as_mut_ptr(),
                n,
                &mut rows.ffi_schema as *mut FFI_ArrowSchema as *mut ffi::ArrowSchema,
            );
            for t in &mut types {
                ffi::duckdb_destroy_logical_type(t);
            }
            error_data(converted)?;
        }
        rows.schema = Arc::new(Schema::try_from(&rows.ffi_schema).map_err(|e| format!("cannot read DuckDB's result schema: {e}"))?);
        Ok(rows)
    }
}

/// A running query's rows, as Arrow record batches; dropping it ends the query.
pub struct Rows {
    result: ffi::duckdb_result,
    options: ffi::duckdb_arrow_options,
    ffi_schema: FFI_ArrowSchema,
    schema: SchemaRef,
    done: bool,
    _bound: Bound,
}
// Moved to the thread that reads it, used there only.
unsafe impl Send for Rows {}

impl Rows {
    /// The result's columns.
    pub fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    /// The next batch of rows, or None once all were read.
    pub fn next_batch(&mut self) -> Result<Option<RecordBatch>, String> {
        if self.done {
            return Ok(None);
        }
        let mut chunk = unsafe { ffi::duckdb_fetch_chunk(self.result) };
        if chunk.is_null() || unsafe { ffi::duckdb_data_chunk_get_size(chunk) } == 0 {
            if !chunk.is_null() {
                unsafe { ffi::duckdb_destroy_data_chunk(&mut chunk) };
            }
            self.done = true;
            return self.error().map_or(Ok(None), Err);
        }
        let mut array = FFI_ArrowArray::empty();
        let converted =
            unsafe { ffi::duckdb_data_chunk_to_arrow(self.options, chunk, &mut array as *mut FFI_ArrowArray as *mut ffi::ArrowArray) };
        unsafe { ffi::duckdb_destroy_data_chunk(&mut chunk) };
        unsafe { error_data(converted) }?;
        let data = unsafe { from_ffi(array, &self.ffi_schema) }.map_err(|e| format!("cannot read DuckDB's result rows: {e}"))?;
        Ok(Some(RecordBatch::from(StructArray::from(data))))
    }

    fn error(&mut self) -> Option<String> {
        let p = unsafe { ffi::duckdb_result_error(&mut self.result) };
        (!p.is_null()).then(|| c_text(p))
    }
}

impl Drop for Rows {
    fn drop(&mut self) {
        unsafe {
            ffi::duckdb_destroy_result(&mut self.result);
            if !self.options.is_null() {
                ffi::duckdb_destroy_arrow_options(&mut self.options);
            }
        }
    }
}

/// An error DuckDB returned as error data (destroyed here), as a message.
unsafe fn error_data(mut data: ffi::duckdb_error_data) -> Result<(), String> {
    if data.is_null() {
        return Ok(());
    }
    let failed = unsafe { ffi::duckdb_error_data_has_error(data) };
    let message = if failed { c_text(unsafe { ffi::duckdb_error_data_message(data) }) } else { String::new() };
    unsafe { ffi::duckdb_destroy_error_data(&mut data) };
    if failed { Err(message) } else { Ok(()) }
}
