//! PostgreSQL compatibility for `serve`, so drivers and tools that assume a PostgreSQL server
//! (pgJDBC's `DatabaseMetaData`, SQLAlchemy, psycopg, asyncpg, DBeaver) work against DuckDB:
//!
//! - [`SQL`] (`compat.sql`): the `pg_compat` schema each snapshot gets, with PostgreSQL's catalog
//!   relations (`pg_class`, `pg_attribute`, `pg_type`… with PostgreSQL's type OIDs) over the lake's
//!   views, and the functions clients call (`version()`, `current_schema()`, `format_type`…), and
//!   the system views DuckDB has that would show host paths, without them.
//! - [`rewrite`]: every query is rewritten token by token (never inside a literal) so that
//!   `pg_catalog.X`, bare `pg_class`, `'pg_class'::regclass`, `x::regtype::text` and DuckDB's
//!   path-revealing functions (`duckdb_settings()`…, however qualified) name `pg_compat`'s.
//!   DuckDB cannot create objects in a schema called `pg_catalog`, hence the rewrite.
//! - [`classify`]: the session statements drivers send at connect (`SET extra_float_digits = 3`,
//!   `SET application_name`, `SET TIME ZONE 'UTC'`, `SHOW transaction isolation level`,
//!   `SAVEPOINT`…), answered per connection by the handler and never run on the shared database.
//! - [`Settings`]: a connection's PostgreSQL parameters, what `SHOW` answers.

use std::collections::BTreeMap;

use super::sqltext::{self, Tok, Token};

/// The compatibility schema, created in every snapshot before it is locked.
pub const SQL: &str = include_str!("compat.sql");

/// The schema [`SQL`] creates.
pub const SCHEMA: &str = "pg_compat";

/// [`SQL`] with its holes filled: what a snapshot runs to create the schema.
pub fn schema_sql() -> String {
    use crate::sql::lit;
    let rows: Vec<String> = PARAMS.iter().map(|p| format!("({}, {}, {})", lit(p.name), lit(p.default), lit(p.description))).collect();
    crate::sql::render(SQL, &[("settings", &rows.join(",\n    ")), ("pg_version", super::engine::PG_VERSION)])
        .expect("compat.sql has exactly these holes")
}

/// Catalog relations `pg_compat` defines (a query's `pg_catalog.X` or bare `X` becomes
/// `pg_compat.X`).
const RELATIONS: &[&str] = &[
    "pg_am",
    "pg_attrdef",
    "pg_attribute",
    "pg_class",
    "pg_collation",
    "pg_constraint",
    "pg_database",
    "pg_description",
    "pg_enum",
    "pg_extension",
    "pg_index",
    "pg_inherits",
    "pg_matviews",
    "pg_namespace",
    "pg_proc",
    "pg_range",
    "pg_roles",
    "pg_sequence",
    "pg_settings",
    "pg_tables",
    "pg_type",
    "pg_user",
    "pg_views",
];

/// Functions `pg_compat` defines: PostgreSQL's, and DuckDB system functions whose answers would
/// hold the host's paths (settings, view SQL, spill files, extension directories).
const FUNCTIONS: &[&str] = &[
    "col_description",
    "current_database",
    "current_schema",
    "current_schemas",
    "current_setting",
    "current_user",
    "duckdb_databases",
    "duckdb_extensions",
    "duckdb_external_file_cache",
    "duckdb_settings",
    "duckdb_temporary_files",
    "duckdb_views",
    "format_type",
    "has_database_privilege",
    "has_schema_privilege",
    "has_table_privilege",
    "obj_description",
    "pg_backend_pid",
    "pg_encoding_to_char",
    "pg_get_expr",
    "pg_get_serial_sequence",
    "pg_get_userbyid",
    "pg_is_in_recovery",
    "pg_table_is_visible",
    "pg_type_is_visible",
    "quote_ident",
    "session_user",
    "to_regclass",
    "to_regtype",
    "version",
];

/// Schemas a name may be qualified with and still mean a system object.
const SYSTEM_QUALIFIERS: &[&str] = &["pg_catalog", "system", "main", "memory", "temp", "information_schema", SCHEMA];

/// `information_schema` views replaced because DuckDB's would show view SQL (and so paths).
const INFORMATION_SCHEMA: &[(&str, &str)] = &[("views", "information_schema_views")];

/// PostgreSQL's object-identifier types, whose casts DuckDB does not have.
const REG_TYPES: &[&str] = &["regclass", "regtype", "regnamespace", "regproc", "regprocedure", "regrole"];

/// Rewrite a query for the snapshot's database (see the module doc).
pub fn rewrite(sql: &str) -> String {
    let tokens = sqltext::tokenize(sql);
    if !tokens.iter().any(|t| matches!(t.kind, Tok::Word | Tok::Quoted | Tok::Punct)) {
        return sql.to_owned();
    }
    let sig = sqltext::significant(&tokens);
    // The output, one piece per input token (replacements put text on the first token of a span
    // and empty the rest).
    let mut out: Vec<String> = tokens.iter().map(|t| t.text.to_owned()).collect();
    let mut s = 0;
    while s < sig.len() {
        let (i, t) = sig[s];
        // An identifier chain a.b.c starting here (not itself after a `.`).
        let after_dot = s > 0 && sig[s - 1].1.text == ".";
        if matches!(t.kind, Tok::Word | Tok::Quoted) && !after_dot {
            let mut parts = vec![(i, t)];
            let mut e = s;
            while e + 2 < sig.len() && sig[e + 1].1.text == "." && matches!(sig[e + 2].1.kind, Tok::Word | Tok::Quoted) {
                parts.push(sig[e + 2]);
                e += 2;
            }
            let names: Vec<String> = parts.iter().filter_map(|(_, p)| p.ident()).collect();
            // A catalog relation inside a column reference: pg_catalog.pg_class.relname.
            let relation_at = (0..names.len().saturating_sub(1))
                .find(|&k| RELATIONS.contains(&names[k].as_str()) && names[..k].iter().all(|q| SYSTEM_QUALIFIERS.contains(&q.as_str())));
            if let Some(k) = relation_at {
                let (first, _) = parts[0];
                let (end, _) = parts[k];
                for piece in out.iter_mut().take(end + 1).skip(first) {
                    piece.clear();
                }
                out[first] = format!("{SCHEMA}.{}", names[k]);
                s = e + 1;
                continue;
            }
            let last = names.last().cloned().unwrap_or_default();
            let qualifiers = &names[..names.len() - 1];
            let is_call = sig.get(e + 1).is_some_and(|(_, n)| n.text == "(");
            let system_qualified = qualifiers.iter().all(|q| SYSTEM_QUALIFIERS.contains(&q.as_str()));
            let replacement = if qualifiers.last().is_some_and(|q| q == "information_schema") {
                INFORMATION_SCHEMA.iter().find(|(v, _)| *v == last).map(|(_, r)| format!("{SCHEMA}.{r}"))
            } else if !system_qualified {
                None
            } else if is_call && FUNCTIONS.contains(&last.as_str()) {
                Some(format!("{SCHEMA}.{last}"))
            } else if !is_call && last.starts_with("duckdb_") && FUNCTIONS.contains(&last.as_str()) {
                // DuckDB's views of the same name (`FROM duckdb_views`) read the same functions.
                Some(format!("{SCHEMA}.{last}()"))
            } else if !is_call && RELATIONS.contains(&last.as_str()) {
                Some(format!("{SCHEMA}.{last}"))
            } else if is_call && qualifiers.iter().any(|q| q == "pg_catalog") {
                // pg_catalog.lower(x) and the like: DuckDB's own function of that name.
                Some(last.clone())
            } else {
                None
            };
            if let Some(r) = replacement {
                let (first, _) = parts[0];
                let (end, _) = parts[parts.len() - 1];
                for piece in out.iter_mut().take(end + 1).skip(first) {
                    piece.clear();
                }
                out[first] = r;
            }
            s = e + 1;
            continue;
        }
        // `operand::regclass[::text]`.
        if t.text == "::"
            && sig.get(s + 1).is_some_and(|(_, n)| n.kind == Tok::Word && REG_TYPES.contains(&n.text.to_ascii_lowercase().as_str()))
        {
            let (type_i, type_t) = sig[s + 1];
            let reg = type_t.text.to_ascii_lowercase();
            let as_text = sig.get(s + 2).is_some_and(|(_, n)| n.text == "::")
                && sig.get(s + 3).is_some_and(|(_, n)| ["text", "varchar", "name"].iter().any(|w| n.is_word(w)));
            if let Some(start) = operand_start(&sig, s) {
                let (first_i, first_t) = sig[start];
                let operand: String = out[first_i..i].concat();
                let literal = start + 1 == s && first_t.kind == Tok::Str;
                let replacement = match (literal, as_text) {
                    // '…'::regclass::text is the name itself.
                    (true, true) => operand.clone(),
                    (true, false) => format!("{SCHEMA}.{reg}_oid({operand})"),
                    (false, true) => format!("{SCHEMA}.{reg}_name({operand})"),
                    (false, false) => format!("({operand})"),
                };
                let end = if as_text { sig[s + 3].0 } else { type_i };
                for piece in out.iter_mut().take(end + 1).skip(first_i) {
                    piece.clear();
                }
                out[first_i] = replacement;
                s = if as_text { s + 4 } else { s + 2 };
                continue;
            }
        }
        s += 1;
    }
    out.concat()
}

/// Where the operand of the `::` at `sig[at]` starts: a literal, a number, an identifier chain or
/// a parenthesised expression (with the function name before it, if any).
fn operand_start(sig: &[(usize, Token<'_>)], at: usize) -> Option<usize> {
    let prev = at.checked_sub(1)?;
    let t = sig[prev].1;
    match t.kind {
        Tok::Str | Tok::Number => Some(prev),
        Tok::Word | Tok::Quoted => {
            let mut start = prev;
            while start >= 2 && sig[start - 1].1.text == "." && matches!(sig[start - 2].1.kind, Tok::Word | Tok::Quoted) {
                start -= 2;
            }
            Some(start)
        }
        Tok::Punct if t.text == ")" => {
            let mut depth = 0usize;
            let mut j = prev;
            loop {
                match sig[j].1.text {
                    ")" => depth += 1,
                    "(" => {
                        depth -= 1;
                        if depth == 0 {
                            break;
                        }
                    }
                    _ => {}
                }
                j = j.checked_sub(1)?;
            }
            // A function call's name belongs to the operand (a keyword before a parenthesis does not).
            if j >= 1 && (sig[j - 1].1.kind == Tok::Quoted || (sig[j - 1].1.kind == Tok::Word && !is_keyword(sig[j - 1].1.text))) {
                j -= 1;
                while j >= 2 && sig[j - 1].1.text == "." && matches!(sig[j - 2].1.kind, Tok::Word | Tok::Quoted) {
                    j -= 2;
                }
            }
            Some(j)
        }
        _ => None,
    }
}

/// Words that may stand before a parenthesis without naming a function.
fn is_keyword(w: &str) -> bool {
    const KEYWORDS: &[&str] = &[
        "all", "and", "any", "array", "as", "between", "by", "case", "else", "exists", "from", "having", "in", "is", "join", "not", "on",
        "or", "over", "select", "some", "then", "using", "values", "when", "where", "with",
    ];
    KEYWORDS.iter().any(|k| w.eq_ignore_ascii_case(k))
}

/// A statement the handler answers itself, per connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Local {
    /// `SET name = value` (also `SET TIME ZONE`, `SET NAMES`, `SET SCHEMA`); `value` None: DEFAULT.
    Set {
        /// The parameter, lower-case.
        name: String,
        /// The value (several values joined with ", ", as PostgreSQL shows a list).
        value: Option<String>,
    },
    /// `RESET name`; None: `RESET ALL`.
    Reset(Option<String>),
    /// `SHOW name`; None: `SHOW ALL`.
    Show(Option<String>),
    /// Accepted and without effect here, answered with this command tag (`SET TRANSACTION …`,
    /// `SAVEPOINT`, `RELEASE`, `DISCARD ALL`, `DEALLOCATE`, `UNLISTEN *`…).
    NoOp(&'static str),
    /// `BEGIN`/`START TRANSACTION`: every query reads one snapshot anyway.
    Begin,
    /// `COMMIT`/`END`, or `ROLLBACK`/`ABORT` (true).
    End {
        /// Whether it was a rollback.
        rollback: bool,
    },
    /// A `SET` of something that is not a client session setting (a DuckDB setting, `SET GLOBAL`):
    /// refused, since the database is shared and its configuration locked.
    Refused(String),
}

fn words_are(sig: &[(usize, Token<'_>)], words: &[&str]) -> bool {
    sig.len() >= words.len() && sig.iter().zip(words).all(|((_, t), w)| t.is_word(w))
}

/// The text of tokens `from..` joined as PostgreSQL shows a value list (`a, b`).
fn value_list(sig: &[(usize, Token<'_>)]) -> Option<String> {
    let mut values = Vec::new();
    let mut current = String::new();
    for (_, t) in sig {
        if t.text == "," {
            values.push(std::mem::take(&mut current));
        } else {
            current.push_str(&t.value()?);
        }
    }
    values.push(current);
    Some(values.join(", "))
}

/// Whether `sql` (one statement) is a session statement, and which.
pub fn classify(sql: &str) -> Option<Local> {
    let tokens = sqltext::tokenize(sql);
    let mut sig = sqltext::significant(&tokens);
    while sig.last().is_some_and(|(_, t)| t.text == ";") {
        sig.pop();
    }
    let first = sig.first()?.1;
    let word = |k: usize| sig.get(k).map(|(_, t)| t.text.to_ascii_lowercase()).unwrap_or_default();
    match first.text.to_ascii_lowercase().as_str() {
        "begin" | "start" if word(0) == "begin" || word(1) == "transaction" => Some(Local::Begin),
        "commit" | "end" => Some(Local::End { rollback: false }),
        "abort" => Some(Local::End { rollback: true }),
        "rollback" if word(1) == "to" || (word(1) == "transaction" && word(2) == "to") || (word(1) == "work" && word(2) == "to") => {
            Some(Local::NoOp("ROLLBACK"))
        }
        "rollback" => Some(Local::End { rollback: true }),
        "savepoint" => Some(Local::NoOp("SAVEPOINT")),
        "release" => Some(Local::NoOp("RELEASE")),
        "discard" => Some(Local::NoOp("DISCARD ALL")),
        "deallocate" => Some(Local::NoOp("DEALLOCATE")),
        "unlisten" => Some(Local::NoOp("UNLISTEN")),
        "show" => {
            let rest: Vec<String> = sig[1..].iter().map(|(_, t)| t.ident().unwrap_or_else(|| t.text.to_ascii_lowercase())).collect();
            match rest.join(" ").as_str() {
                "all" => Some(Local::Show(None)),
                "transaction isolation level" => Some(Local::Show(Some("transaction_isolation".into()))),
                "time zone" => Some(Local::Show(Some("timezone".into()))),
                // One name (`SHOW x`): anything else is DuckDB's SHOW (tables), refused later.
                name if rest.len() == 1 => Some(Local::Show(Some(name.to_owned()))),
                _ => None,
            }
        }
        "reset" => match sig.get(1).and_then(|(_, t)| t.ident()) {
            Some(n) if n == "all" && sig.len() == 2 => Some(Local::Reset(None)),
            Some(n) if sig.len() == 2 => Some(Local::Reset(Some(n))),
            _ if words_are(&sig, &["reset", "time", "zone"]) => Some(Local::Reset(Some("timezone".into()))),
            _ => Some(Local::Refused("RESET".into())),
        },
        "set" => {
            let mut k = 1;
            if sig.get(1).is_some_and(|(_, t)| t.is_word("session") || t.is_word("local")) {
                if words_are(&sig[1..], &["session", "characteristics"]) || words_are(&sig[1..], &["session", "authorization"]) {
                    return Some(Local::NoOp("SET"));
                }
                k = 2;
            }
            if sig.get(1).is_some_and(|(_, t)| t.is_word("global")) {
                return Some(Local::Refused("SET GLOBAL".into()));
            }
            let rest = &sig[k..];
            if words_are(rest, &["transaction"]) || words_are(rest, &["role"]) {
                return Some(Local::NoOp("SET"));
            }
            let (name, values) = if words_are(rest, &["time", "zone"]) {
                ("timezone".to_owned(), &rest[2..])
            } else if words_are(rest, &["names"]) {
                ("client_encoding".to_owned(), &rest[1..])
            } else if words_are(rest, &["schema"]) {
                ("search_path".to_owned(), &rest[1..])
            } else {
                let name = rest.first()?.1.ident()?;
                // `SET a.b = …` (custom option names) keep their dots.
                let mut n = 1;
                let mut full = name;
                while rest.get(n).is_some_and(|(_, t)| t.text == ".") {
                    full.push('.');
                    full.push_str(&rest.get(n + 1)?.1.ident()?);
                    n += 2;
                }
                match rest.get(n) {
                    Some((_, t)) if t.text == "=" || t.is_word("to") => (full, &rest[n + 1..]),
                    _ => return Some(Local::Refused(format!("SET {full}"))),
                }
            };
            if values.len() == 1 && (values[0].1.is_word("default") || values[0].1.is_word("local")) {
                return Some(Local::Set { name, value: None });
            }
            match value_list(values) {
                Some(v) if !values.is_empty() => Some(Local::Set { name, value: Some(v) }),
                _ => Some(Local::Refused(format!("SET {name}"))),
            }
        }
        _ => None,
    }
}

/// One PostgreSQL parameter a client may read (`SHOW`) and, if `settable`, set per connection.
struct Param {
    name: &'static str,
    default: &'static str,
    settable: bool,
    description: &'static str,
}

const fn p(name: &'static str, default: &'static str, settable: bool, description: &'static str) -> Param {
    Param { name, default, settable, description }
}

/// The parameters `serve` knows, with what it answers. Names are PostgreSQL's (lower-case here;
/// `SHOW` and `SET` are case-insensitive).
const PARAMS: &[Param] = &[
    p("application_name", "", true, "Sets the application name to be reported in statistics and logs."),
    p("bytea_output", "hex", true, "Sets the output format for bytea."),
    p("client_encoding", "UTF8", true, "Sets the client's character set encoding (UTF8 only)."),
    p("client_min_messages", "notice", true, "Sets the message levels that are sent to the client."),
    p("datestyle", "ISO, MDY", true, "Sets the display format for date and time values (ISO only)."),
    p("default_transaction_isolation", "read committed", true, "Sets the transaction isolation level of each new transaction."),
    p("default_transaction_read_only", "on", true, "Sets the default read-only status of new transactions (always on)."),
    p("extra_float_digits", "1", true, "Sets the number of digits displayed for floating-point values."),
    p("idle_in_transaction_session_timeout", "0", true, "Accepted; has no effect."),
    p("integer_datetimes", "on", false, "Shows whether datetimes are integer based."),
    p("intervalstyle", "postgres", true, "Sets the display format for interval values."),
    p("is_superuser", "off", false, "Shows whether the current user is a superuser."),
    p("jit", "off", true, "Accepted; has no effect."),
    p("lc_collate", "C", false, "Shows the collation order locale."),
    p("lc_ctype", "C", false, "Shows the character classification and case conversion locale."),
    p("lc_messages", "C", true, "Sets the language in which messages are displayed."),
    p("lc_monetary", "C", true, "Sets the locale for formatting monetary amounts."),
    p("lc_numeric", "C", true, "Sets the locale for formatting numbers."),
    p("lc_time", "C", true, "Sets the locale for formatting date and time values."),
    p("lock_timeout", "0", true, "Accepted; has no effect (nothing is locked)."),
    p("max_identifier_length", "63", false, "Shows the maximum identifier length."),
    p("search_path", "main", true, "Sets the schema search order for names that are not schema-qualified (one schema: main)."),
    p("server_encoding", "UTF8", false, "Shows the server (database) character set encoding."),
    p("server_version", super::engine::PG_VERSION, false, "Shows the server version."),
    p("server_version_num", super::engine::PG_VERSION_NUM, false, "Shows the server version as an integer."),
    p("standard_conforming_strings", "on", true, "Causes '...' strings to treat backslashes literally (always on)."),
    p("statement_timeout", "0", true, "Sets the maximum allowed duration of any statement (capped by --query-timeout)."),
    p("timezone", "UTC", true, "Sets the time zone for displaying and interpreting time stamps (values are sent in UTC)."),
    p("transaction_isolation", "read committed", true, "Sets the current transaction's isolation level."),
    p("transaction_read_only", "on", true, "Sets the current transaction's read-only status (always on)."),
    p("work_mem", "4MB", true, "Accepted; has no effect (see --memory-limit)."),
];

/// PostgreSQL's spelling of a parameter name where it is not all lower-case (what `SHOW ALL`
/// lists and ParameterStatus reports).
fn display_name(name: &str) -> &str {
    match name {
        "datestyle" => "DateStyle",
        "intervalstyle" => "IntervalStyle",
        "timezone" => "TimeZone",
        other => other,
    }
}

/// Parameters PostgreSQL reports to the client (ParameterStatus) when they change.
pub fn is_reported(name: &str) -> bool {
    matches!(name, "application_name" | "client_encoding" | "datestyle" | "intervalstyle" | "timezone" | "standard_conforming_strings")
}

/// Why a SET or SHOW is refused, as PostgreSQL words it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SettingError {
    /// No such parameter (SQLSTATE 42704).
    #[error("unrecognized configuration parameter \"{0}\"")]
    Unknown(String),
    /// A parameter only shown, never set (SQLSTATE 55P02).
    #[error("parameter \"{0}\" cannot be changed")]
    ReadOnly(String),
    /// A value `serve` cannot honour (SQLSTATE 22023).
    #[error("invalid value for parameter \"{name}\": \"{value}\" ({why})")]
    BadValue {
        /// The parameter.
        name: String,
        /// The value given.
        value: String,
        /// What `serve` accepts.
        why: &'static str,
    },
}

impl SettingError {
    /// The SQLSTATE PostgreSQL gives it.
    pub fn sqlstate(&self) -> &'static str {
        match self {
            Self::Unknown(_) => "42704",
            Self::ReadOnly(_) => "55P02",
            Self::BadValue { .. } => "22023",
        }
    }
}

/// One connection's parameters: PostgreSQL's defaults, the startup packet's values, its SETs.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    values: BTreeMap<String, String>,
}

impl Settings {
    /// The settings a connection starts with (its startup parameters applied where valid).
    pub fn from_startup(params: &std::collections::HashMap<String, String>) -> Self {
        let mut s = Self::default();
        for (k, v) in params {
            let k = k.to_ascii_lowercase();
            if PARAMS.iter().any(|p| p.name == k && p.settable) {
                // An invalid startup value keeps the default, as the client then sees in
                // ParameterStatus (only UTF8, ISO dates are honoured).
                let _ = s.set(&k, Some(v));
            }
        }
        s
    }

    /// The value `SHOW name` answers.
    pub fn get(&self, name: &str) -> Result<String, SettingError> {
        let name = name.to_ascii_lowercase();
        let param = PARAMS.iter().find(|p| p.name == name).ok_or_else(|| SettingError::Unknown(name.clone()))?;
        Ok(self.values.get(&name).cloned().unwrap_or_else(|| param.default.to_owned()))
    }

    /// Apply `SET name = value` (None: back to the default); returns the name as PostgreSQL
    /// spells it and the value now in force.
    pub fn set(&mut self, name: &str, value: Option<&str>) -> Result<(String, String), SettingError> {
        let name = name.to_ascii_lowercase();
        let param = PARAMS.iter().find(|p| p.name == name).ok_or_else(|| SettingError::Unknown(name.clone()))?;
        if !param.settable {
            return Err(SettingError::ReadOnly(name));
        }
        let Some(value) = value else {
            self.values.remove(&name);
            return Ok((display_name(&name).to_owned(), param.default.to_owned()));
        };
        let bad = |why| SettingError::BadValue { name: name.clone(), value: value.to_owned(), why };
        let normalised = match name.as_str() {
            "client_encoding" => match value.to_ascii_uppercase().replace(['-', '_'], "").as_str() {
                "UTF8" | "UNICODE" => "UTF8".to_owned(),
                _ => return Err(bad("tickerlake serve speaks UTF8 only")),
            },
            "datestyle" => {
                // Results are always written ISO-style; accept any spelling that keeps ISO.
                let v = value.to_ascii_uppercase();
                if !v.split(',').any(|p| p.trim() == "ISO") {
                    return Err(bad("tickerlake serve writes dates ISO-style only"));
                }
                if v.contains("DMY") {
                    "ISO, DMY"
                } else if v.contains("YMD") {
                    "ISO, YMD"
                } else {
                    "ISO, MDY"
                }
                .to_owned()
            }
            "standard_conforming_strings" | "default_transaction_read_only" | "transaction_read_only" => {
                if !["on", "true", "1", "yes"].contains(&value.to_ascii_lowercase().as_str()) {
                    return Err(bad("tickerlake serve only has it on"));
                }
                "on".to_owned()
            }
            "extra_float_digits" => match value.trim().parse::<i32>() {
                Ok(n) if (-15..=3).contains(&n) => n.to_string(),
                _ => return Err(bad("an integer from -15 to 3")),
            },
            "statement_timeout" => {
                statement_timeout_ms(value).ok_or_else(|| bad("a duration such as 5000, '5s' or '1min'"))?;
                value.to_owned()
            }
            _ => value.to_owned(),
        };
        self.values.insert(name.clone(), normalised.clone());
        Ok((display_name(&name).to_owned(), normalised))
    }

    /// `RESET ALL`.
    pub fn reset_all(&mut self) {
        self.values.clear();
    }

    /// The connection's `statement_timeout`, if one is set (0 means none, as in PostgreSQL).
    pub fn statement_timeout(&self) -> Option<std::time::Duration> {
        let v = self.values.get("statement_timeout")?;
        statement_timeout_ms(v).filter(|ms| *ms > 0).map(std::time::Duration::from_millis)
    }

    /// Every parameter: (name, value, description), for `SHOW ALL`.
    pub fn all(&self) -> Vec<(String, String, String)> {
        PARAMS.iter().map(|p| (display_name(p.name).to_owned(), self.get(p.name).unwrap_or_default(), p.description.to_owned())).collect()
    }
}

/// A `statement_timeout` value in milliseconds (PostgreSQL's units: ms by default, s, min, h).
fn statement_timeout_ms(v: &str) -> Option<u64> {
    let v = v.trim();
    let split = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
    let (n, unit) = v.split_at(split);
    let n: u64 = n.parse().ok()?;
    Some(match unit.trim() {
        "" | "ms" => n,
        "s" => n * 1000,
        "min" => n * 60_000,
        "h" => n * 3_600_000,
        _ => return None,
    })
}

/// The name PostgreSQL puts on a SHOW column for `name` (lower-case, as typed in PostgreSQL).
pub fn show_column(name: &str) -> String {
    name.to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalog_names_regclass_and_path_functions_are_rewritten_outside_literals() {
        assert_eq!(rewrite("select pg_catalog.version()"), "select pg_compat.version()");
        assert_eq!(rewrite("SELECT version(), current_schema()"), "SELECT pg_compat.version(), pg_compat.current_schema()");
        assert_eq!(
            rewrite("FROM pg_catalog.pg_namespace n, \"pg_catalog\".\"pg_class\" c JOIN pg_type t"),
            "FROM pg_compat.pg_namespace n, pg_compat.pg_class c JOIN pg_compat.pg_type t"
        );
        assert_eq!(
            rewrite("d.classoid = 'pg_class'::regclass AND x = 'pg_class'::regclass::text"),
            "d.classoid = pg_compat.regclass_oid('pg_class') AND x = 'pg_class'"
        );
        assert_eq!(rewrite("SELECT oid::regtype::text FROM pg_type"), "SELECT pg_compat.regtype_name(oid) FROM pg_compat.pg_type");
        assert_eq!(rewrite("SELECT (a.attrelid)::regclass"), "SELECT ((a.attrelid))");
        assert_eq!(rewrite("SELECT * FROM system.main.duckdb_settings()"), "SELECT * FROM pg_compat.duckdb_settings()");
        assert_eq!(
            rewrite("SELECT * FROM \"DUCKDB_SETTINGS\"()"),
            "SELECT * FROM \"DUCKDB_SETTINGS\"()",
            "quoted names are case-sensitive"
        );
        assert_eq!(rewrite("SELECT * FROM Duckdb_Views()"), "SELECT * FROM pg_compat.duckdb_views()");
        assert_eq!(rewrite("SELECT sql FROM system.main.duckdb_views v"), "SELECT sql FROM pg_compat.duckdb_views() v");
        assert_eq!(
            rewrite("SELECT view_definition FROM information_schema.views"),
            "SELECT view_definition FROM pg_compat.information_schema_views"
        );
        assert_eq!(rewrite("SELECT pg_catalog.lower('A')"), "SELECT lower('A')");
        assert_eq!(
            rewrite("SELECT pg_catalog.pg_class.relname FROM pg_catalog.pg_class WHERE pg_class.oid > 0"),
            "SELECT pg_compat.pg_class.relname FROM pg_compat.pg_class WHERE pg_compat.pg_class.oid > 0"
        );
        // Never inside literals, comments or as a column of another table.
        for same in [
            "SELECT 'pg_catalog.version()', \"version\" FROM t -- pg_class",
            "SELECT t.version, x.current_setting() FROM t",
            "SELECT version FROM t",
        ] {
            assert_eq!(rewrite(same), same);
        }
    }

    #[test]
    fn driver_session_statements_are_recognised() {
        let set = |n: &str, v: &str| Some(Local::Set { name: n.into(), value: Some(v.into()) });
        assert_eq!(classify("SET extra_float_digits = 3"), set("extra_float_digits", "3"));
        assert_eq!(classify("SET application_name = 'PostgreSQL JDBC Driver'"), set("application_name", "PostgreSQL JDBC Driver"));
        assert_eq!(classify("set SESSION TimeZone TO 'UTC';"), set("timezone", "UTC"));
        assert_eq!(classify("SET TIME ZONE 'Etc/UTC'"), set("timezone", "Etc/UTC"));
        assert_eq!(classify("SET DateStyle = ISO, MDY"), set("datestyle", "ISO, MDY"));
        assert_eq!(classify("SET search_path TO DEFAULT"), Some(Local::Set { name: "search_path".into(), value: None }));
        assert_eq!(classify("SET NAMES 'utf8'"), set("client_encoding", "utf8"));
        assert_eq!(classify("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY"), Some(Local::NoOp("SET")));
        assert_eq!(classify("SET TRANSACTION ISOLATION LEVEL READ COMMITTED"), Some(Local::NoOp("SET")));
        assert_eq!(classify("SET GLOBAL allowed_directories = ['/']"), Some(Local::Refused("SET GLOBAL".into())));
        assert_eq!(classify("show transaction isolation level"), Some(Local::Show(Some("transaction_isolation".into()))));
        assert_eq!(classify("SHOW standard_conforming_strings"), Some(Local::Show(Some("standard_conforming_strings".into()))));
        assert_eq!(classify("SHOW ALL"), Some(Local::Show(None)));
        assert_eq!(classify("RESET ALL"), Some(Local::Reset(None)));
        assert_eq!(classify("SAVEPOINT \"_pg3_1\""), Some(Local::NoOp("SAVEPOINT")));
        assert_eq!(classify("ROLLBACK TO SAVEPOINT x"), Some(Local::NoOp("ROLLBACK")));
        assert_eq!(classify("START TRANSACTION READ ONLY"), Some(Local::Begin));
        assert_eq!(classify("rollback"), Some(Local::End { rollback: true }));
        assert_eq!(classify("SELECT 1"), None);
        assert_eq!(classify("SHOW TABLES FROM x"), None);
    }

    #[test]
    fn the_schema_sql_is_complete() {
        let sql = schema_sql();
        assert!(sql.contains("('server_version_num', '160006', "), "{sql}");
        assert!(sql.contains("'PostgreSQL 16.6 "));
        // Every name the rewrite sends to pg_compat exists there.
        for name in RELATIONS {
            assert!(sql.contains(&format!("CREATE VIEW pg_compat.{name} AS")), "{name}");
        }
        for name in FUNCTIONS {
            assert!(sql.contains(&format!("CREATE MACRO pg_compat.{name}(")), "{name}");
        }
    }

    #[test]
    fn settings_are_per_connection_and_validated() {
        let mut s = Settings::default();
        assert_eq!(s.get("TimeZone").unwrap(), "UTC");
        assert_eq!(s.set("TimeZone", Some("Europe/Paris")).unwrap(), ("TimeZone".into(), "Europe/Paris".into()));
        assert_eq!(s.get("timezone").unwrap(), "Europe/Paris");
        assert_eq!(s.set("datestyle", Some("iso, dmy")).unwrap().1, "ISO, DMY");
        assert_eq!(s.set("datestyle", Some("German")).unwrap_err().sqlstate(), "22023");
        assert_eq!(s.set("enable_external_access", Some("true")).unwrap_err(), SettingError::Unknown("enable_external_access".into()));
        assert_eq!(s.set("server_version", Some("1")).unwrap_err().sqlstate(), "55P02");
        s.set("statement_timeout", Some("2s")).unwrap();
        assert_eq!(s.statement_timeout(), Some(std::time::Duration::from_secs(2)));
        s.reset_all();
        assert_eq!(s.statement_timeout(), None);
        assert_eq!(Settings::default().get("transaction_isolation").unwrap(), "read committed");
    }
}
