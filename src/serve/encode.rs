//! DuckDB results on the PostgreSQL wire: the OID each DuckDB/Arrow type travels as (one a
//! client's driver knows), and Arrow batches encoded into DataRows, text or binary per column as
//! the client asked.

use std::sync::Arc;

use chrono::{DateTime, NaiveDate, Utc};
use duckdb::arrow::array::{Array, AsArray, RecordBatch};
use duckdb::arrow::datatypes::{self as adt, DataType, TimeUnit};
use duckdb::ffi;
use pgwire::api::Type;
use pgwire::api::portal::Format;
use pgwire::api::results::{DataRowEncoder, FieldInfo};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::data::DataRow;

/// The PostgreSQL type of a DuckDB column type (`pg_compat.type_oid` in compat.sql says the same).
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

/// A failure to encode, as a PostgreSQL error.
pub fn encode_err(e: impl std::fmt::Display) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new("ERROR".into(), "XX000".into(), format!("cannot encode a result value: {e}"))))
}

fn micros(unit: &TimeUnit, v: i64) -> i64 {
    match unit {
        TimeUnit::Second => v.saturating_mul(1_000_000),
        TimeUnit::Millisecond => v.saturating_mul(1_000),
        TimeUnit::Microsecond => v,
        TimeUnit::Nanosecond => v.div_euclid(1_000),
    }
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

/// The row description of a result with `schema`, each column in the format the client asked.
pub fn fields(schema: &adt::Schema, format: &Format) -> Arc<Vec<FieldInfo>> {
    Arc::new(
        schema
            .fields()
            .iter()
            .enumerate()
            .map(|(i, f)| FieldInfo::new(f.name().clone(), None, None, pg_type_of_arrow(f.data_type()), format.format_for(i)))
            .collect(),
    )
}

/// Encode one Arrow batch into DataRows for `fields`.
pub fn encode_batch(batch: &RecordBatch, fields: &Arc<Vec<FieldInfo>>) -> PgWireResult<Vec<DataRow>> {
    let mut rows = Vec::with_capacity(batch.num_rows());
    let mut enc = DataRowEncoder::new(fields.clone());
    let opts = duckdb::arrow::util::display::FormatOptions::default();
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
    Ok(rows)
}

/// Rows of text values (SHOW, SHOW ALL) as a result: the row description and the rows.
pub fn text_rows(columns: &[&str], rows: &[Vec<String>], format: &Format) -> PgWireResult<(Arc<Vec<FieldInfo>>, Vec<DataRow>)> {
    // Text travels the same in both formats; the declared one is what the client asked.
    let fields: Arc<Vec<FieldInfo>> = Arc::new(
        columns.iter().enumerate().map(|(i, c)| FieldInfo::new((*c).to_owned(), None, None, Type::TEXT, format.format_for(i))).collect(),
    );
    let mut enc = DataRowEncoder::new(fields.clone());
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        for v in row {
            enc.encode_field(&v.as_str())?;
        }
        out.push(enc.take_row());
    }
    Ok((fields, out))
}
