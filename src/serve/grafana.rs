//! Grafana as code: the dashboards and alert rules under `grafana/provisioning/`, generated from
//! the shipped SQL in `queries/` (one file per panel, variable or alert, described by its
//! front-matter comments), one variant per datasource type; and the macro expansion each
//! datasource performs, so tests (and anyone) can run exactly what Grafana would send.
//!
//! Front matter (comment lines at the top of a file):
//! - `-- title:` the panel, variable or rule title;
//! - `-- dashboard:` the dashboard it belongs to; `-- panel:` the panel type (gauge, stat,
//!   barchart, timeseries); `-- format:` table or time_series; `-- unit:` a Grafana unit;
//! - `-- variables:` dashboard variables it uses (written `${name:sqlstring}`);
//! - `-- variable:` the variable this query defines (with `-- dashboard:`);
//! - `-- datasources:` the variants it belongs in (default: postgres, athena);
//! - `-- alert:` a rule uid; `-- threshold:` `gt|lt N`; `-- range:` seconds of data it looks at;
//!   `-- for:`; `-- no-data:` the state when there is no data; `-- summary:` its annotation.
//!
//! The SQL is written once for both engines: `$__timeFilter(col)`, `$__timeFrom()`,
//! `$__timeTo()` and `${var:sqlstring}`. The Athena variant rewrites `$__timeFilter(c)` into
//! `c BETWEEN $__timeFrom() AND $__timeTo()` (the plugin's `$__timeFilter` does not convert to
//! UTC) and `${var:sqlstring}` into `'${var}'` (the plugin inserts single values raw).

use std::collections::BTreeMap;
use std::path::Path;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

/// Fixed uid of the PostgreSQL datasource (tickerlake serve).
pub const PG_UID: &str = "tickerlake-serve";
/// Fixed uid of the Athena datasource.
pub const ATHENA_UID: &str = "tickerlake-athena";

/// A problem with the query folder or an expansion.
#[derive(Debug, thiserror::Error)]
pub enum GrafanaError {
    /// Reading or writing a file failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// Why it failed.
        source: std::io::Error,
    },
    /// A query file's front matter is wrong.
    #[error("{file}: {message}")]
    FrontMatter {
        /// The file.
        file: String,
        /// What is wrong, and what to write instead.
        message: String,
    },
    /// A macro the datasource does not know, or bad arguments (Grafana fails the query too).
    #[error("macro {0} is not one the datasource expands")]
    UnknownMacro(String),
    /// A variable without a value.
    #[error("variable ${0} has no value")]
    UnsetVariable(String),
    /// Committed provisioning differs from what the generator makes.
    #[error("grafana/provisioning is stale ({0}); regenerate it with `./dev grafana` and commit the result")]
    Stale(String),
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> GrafanaError {
    let what = what.into();
    move |source| GrafanaError::Io { what, source }
}

/// The two datasource types a dashboard variant is made for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// Grafana's built-in PostgreSQL datasource, pointed at `tickerlake serve`.
    Postgres,
    /// The Athena plugin, for the production lake on S3 + Glue.
    Athena,
}

impl Flavor {
    /// Both, in file order.
    pub const ALL: [Flavor; 2] = [Flavor::Postgres, Flavor::Athena];
    /// The plugin id.
    pub fn plugin(self) -> &'static str {
        match self {
            Self::Postgres => "grafana-postgresql-datasource",
            Self::Athena => "grafana-athena-datasource",
        }
    }
    /// The provisioned datasource's uid.
    pub fn uid(self) -> &'static str {
        match self {
            Self::Postgres => PG_UID,
            Self::Athena => ATHENA_UID,
        }
    }
    /// Short name: folder names and uid suffixes.
    pub fn short(self) -> &'static str {
        match self {
            Self::Postgres => "postgres",
            Self::Athena => "athena",
        }
    }
    fn datasource(self) -> Value {
        json!({"type": self.plugin(), "uid": self.uid()})
    }
}

/// One `.sql` file of the queries folder.
#[derive(Debug, Clone, Default)]
pub struct QueryFile {
    /// File name.
    pub name: String,
    /// Front matter, key → value (keys lower-case, as written).
    pub meta: BTreeMap<String, String>,
    /// The SQL after the front matter.
    pub sql: String,
}

impl QueryFile {
    /// A front-matter value.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.meta.get(key).map(String::as_str)
    }
    /// Variables the SQL uses.
    pub fn variables(&self) -> Vec<String> {
        self.get("variables").map(|v| v.split(',').map(|s| s.trim().to_owned()).filter(|s| !s.is_empty()).collect()).unwrap_or_default()
    }
    /// Whether the file is meant for `flavor` (`-- datasources: postgres, athena`; default both).
    pub fn is_for(&self, flavor: Flavor) -> bool {
        self.get("datasources").is_none_or(|d| d.split(',').any(|x| x.trim() == flavor.short()))
    }
    fn bad(&self, message: impl Into<String>) -> GrafanaError {
        GrafanaError::FrontMatter { file: self.name.clone(), message: message.into() }
    }
}

/// Parse one file's text.
pub fn parse(name: &str, text: &str) -> QueryFile {
    let mut meta = BTreeMap::new();
    let mut body = Vec::new();
    let mut in_header = true;
    for line in text.lines() {
        if in_header {
            if let Some((k, v)) = line.strip_prefix("--").and_then(|rest| rest.split_once(':'))
                && !k.trim().is_empty()
                && k.trim().chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                meta.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
                continue;
            }
            in_header = false;
        }
        body.push(line);
    }
    QueryFile { name: name.to_owned(), meta, sql: body.join("\n").trim().to_owned() }
}

/// Every `.sql` file of `dir`, sorted by name.
pub fn load(dir: &Path) -> Result<Vec<QueryFile>, GrafanaError> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map_err(io(format!("cannot read {}", dir.display())))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".sql"))
        .collect();
    names.sort();
    names
        .iter()
        .map(|n| {
            let path = dir.join(n);
            Ok(parse(n, &std::fs::read_to_string(&path).map_err(io(format!("cannot read {}", path.display())))?))
        })
        .collect()
}

/// The SQL as the dashboard of `flavor` holds it (before Grafana expands anything).
pub fn adapt(sql: &str, flavor: Flavor) -> String {
    if flavor == Flavor::Postgres {
        return sql.to_owned();
    }
    let mut out = String::with_capacity(sql.len());
    let mut rest = sql;
    while let Some(i) = rest.find("$__timeFilter(") {
        out.push_str(&rest[..i]);
        let after = &rest[i + "$__timeFilter(".len()..];
        let Some(close) = after.find(')') else {
            out.push_str(&rest[i..]);
            rest = "";
            break;
        };
        out.push_str(&format!("{} BETWEEN $__timeFrom() AND $__timeTo()", after[..close].trim()));
        rest = &after[close + 1..];
    }
    out.push_str(rest);
    // `${var:sqlstring}` → `'${var}'`.
    let mut result = String::with_capacity(out.len());
    let mut rest = out.as_str();
    while let Some(i) = rest.find("${") {
        result.push_str(&rest[..i]);
        let after = &rest[i + 2..];
        match after.find('}') {
            Some(close) if after[..close].ends_with(":sqlstring") => {
                let name = &after[..close - ":sqlstring".len()];
                result.push_str(&format!("'${{{name}}}'"));
                rest = &after[close + 1..];
            }
            _ => {
                result.push_str("${");
                rest = after;
            }
        }
    }
    result.push_str(rest);
    result
}

/// Grafana's RFC 3339 rendering of a time: UTC, fraction only as long as needed.
fn rfc3339(t: DateTime<Utc>) -> String {
    let base = t.format("%Y-%m-%dT%H:%M:%S").to_string();
    let nanos = t.timestamp_subsec_nanos();
    if nanos == 0 {
        return format!("{base}Z");
    }
    let frac = format!("{nanos:09}");
    format!("{base}.{}Z", frac.trim_end_matches('0'))
}

fn sqlstring(v: &str) -> String {
    format!("'{}'", v.replace('\'', "''"))
}

/// Substitute dashboard variables as Grafana's frontend does (`${v:sqlstring}`, `${v}`, `$v`).
fn substitute_variables(sql: &str, vars: &BTreeMap<String, String>) -> Result<String, GrafanaError> {
    let mut out = String::with_capacity(sql.len());
    let mut rest = sql;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if after.starts_with("__") {
            out.push('$');
            rest = after;
            continue;
        }
        if let Some(inner) = after.strip_prefix('{') {
            let close = inner.find('}').ok_or_else(|| GrafanaError::UnknownMacro(format!("${{{inner}")))?;
            let (name, fmt) = inner[..close].split_once(':').unwrap_or((&inner[..close], ""));
            let value = vars.get(name).ok_or_else(|| GrafanaError::UnsetVariable(name.to_owned()))?;
            match fmt {
                "sqlstring" => out.push_str(&sqlstring(value)),
                "" | "raw" => out.push_str(value),
                other => return Err(GrafanaError::UnknownMacro(format!("${{{name}:{other}}}"))),
            }
            rest = &inner[close + 1..];
        } else {
            let len = after.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(after.len());
            if len == 0 {
                out.push('$');
                rest = after;
                continue;
            }
            let name = &after[..len];
            out.push_str(vars.get(name).ok_or_else(|| GrafanaError::UnsetVariable(name.to_owned()))?);
            rest = &after[len..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// Expand the SQL of a `flavor` dashboard exactly as that datasource does for the time range
/// `from`..`to` and variable values `vars`: variables first, then the datasource's macros.
pub fn expand(
    sql: &str,
    flavor: Flavor,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    vars: &BTreeMap<String, String>,
) -> Result<String, GrafanaError> {
    let sql = substitute_variables(sql, vars)?;
    let mut out = String::with_capacity(sql.len());
    let mut rest = sql.as_str();
    while let Some(i) = rest.find("$__") {
        out.push_str(&rest[..i]);
        let after = &rest[i + 3..];
        let len = after.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(after.len());
        let name = &after[..len];
        let Some(args_start) = after[len..].strip_prefix('(') else {
            return Err(GrafanaError::UnknownMacro(format!("$__{name}")));
        };
        let close = args_start.find(')').ok_or_else(|| GrafanaError::UnknownMacro(format!("$__{name}(")))?;
        let args: Vec<&str> = args_start[..close].split(',').map(str::trim).collect();
        let arg = args.first().copied().unwrap_or("");
        let secs = |a: Option<&&str>| -> Result<i64, GrafanaError> {
            let s = a.map(|s| s.trim_matches('\'')).unwrap_or("");
            let (n, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
            let n: i64 = n.parse().map_err(|_| GrafanaError::UnknownMacro(format!("$__{name}({s})")))?;
            Ok(n * match unit {
                "s" | "" => 1,
                "m" => 60,
                "h" => 3600,
                "d" => 86400,
                _ => return Err(GrafanaError::UnknownMacro(format!("$__{name}({s})"))),
            })
        };
        let athena_ts = |t: DateTime<Utc>| format!("TIMESTAMP '{}'", t.format("%Y-%m-%d %H:%M:%S"));
        let text = match (flavor, name) {
            (Flavor::Postgres, "timeFilter") => format!("{arg} BETWEEN '{}' AND '{}'", rfc3339(from), rfc3339(to)),
            (Flavor::Postgres, "timeFrom") => format!("'{}'", rfc3339(from)),
            (Flavor::Postgres, "timeTo") => format!("'{}'", rfc3339(to)),
            (Flavor::Postgres, "timeGroup") => {
                let s = secs(args.get(1))?;
                format!("floor(extract(epoch from {arg})/{s})*{s}")
            }
            (Flavor::Postgres, "timeGroupAlias") => {
                let s = secs(args.get(1))?;
                format!("floor(extract(epoch from {arg})/{s})*{s} AS \"time\"")
            }
            (Flavor::Postgres, "time") => format!("{arg} AS \"time\""),
            (Flavor::Postgres, "timeEpoch") => format!("extract(epoch from {arg}) as \"time\""),
            (Flavor::Postgres, "unixEpochFilter") => format!("{arg} >= {} AND {arg} <= {}", from.timestamp(), to.timestamp()),
            (Flavor::Athena, "timeFilter") => format!("{arg} BETWEEN {} AND {}", athena_ts(from), athena_ts(to)),
            (Flavor::Athena, "timeFrom") => athena_ts(from),
            (Flavor::Athena, "timeTo") => athena_ts(to),
            (Flavor::Athena, "dateFilter") => {
                format!("{arg} BETWEEN date '{}' AND date '{}'", from.format("%Y-%m-%d"), to.format("%Y-%m-%d"))
            }
            (Flavor::Athena, "unixEpochFilter") => format!("{arg} BETWEEN {} AND {}", from.timestamp(), to.timestamp()),
            (Flavor::Athena, "timeGroup") => {
                let s = secs(args.get(1))?;
                format!("FROM_UNIXTIME(FLOOR(TO_UNIXTIME({arg})/{s})*{s})")
            }
            _ => return Err(GrafanaError::UnknownMacro(format!("$__{name}"))),
        };
        out.push_str(&text);
        rest = &args_start[close + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

fn slug(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    out.trim_matches('-').to_owned()
}

/// A query target of `flavor` for a panel or rule.
fn target(flavor: Flavor, ref_id: &str, sql: &str, time_series: bool) -> Value {
    match flavor {
        Flavor::Postgres => json!({
            "refId": ref_id, "datasource": flavor.datasource(), "editorMode": "code", "rawQuery": true,
            "format": if time_series { "time_series" } else { "table" }, "rawSql": sql,
        }),
        Flavor::Athena => json!({
            "refId": ref_id, "datasource": flavor.datasource(), "format": if time_series { 0 } else { 1 }, "rawSQL": sql,
            "connectionArgs": {"region": "__default", "catalog": "__default", "database": "__default", "resultReuseEnabled": false},
        }),
    }
}

/// Dashboard titles, in the order files name them.
pub fn dashboard_titles(files: &[QueryFile]) -> Vec<String> {
    let mut titles: Vec<String> = Vec::new();
    for f in files {
        if let Some(d) = f.get("dashboard")
            && !titles.iter().any(|t| t == d)
        {
            titles.push(d.to_owned());
        }
    }
    titles
}

/// The dashboard `title` for `flavor`: its file name and JSON.
pub fn dashboard(files: &[QueryFile], title: &str, flavor: Flavor) -> Result<(String, Value), GrafanaError> {
    let mine: Vec<&QueryFile> = files.iter().filter(|f| f.get("dashboard") == Some(title) && f.is_for(flavor)).collect();
    let mut variables = Vec::new();
    for f in mine.iter().filter(|f| f.get("variable").is_some()) {
        let name = f.get("variable").expect("filtered");
        let sql = adapt(&f.sql, flavor);
        let query = match flavor {
            Flavor::Postgres => Value::String(sql.clone()),
            Flavor::Athena => target(flavor, "symbol", &sql, false),
        };
        variables.push(json!({
            "name": name, "label": name, "type": "query", "datasource": flavor.datasource(), "query": query, "definition": sql,
            "refresh": 1, "sort": 1, "multi": false, "includeAll": false, "hide": 0, "options": [],
            "current": {"selected": true, "text": "BTCUSDT", "value": "BTCUSDT"},
        }));
    }
    let mut panels = Vec::new();
    let (mut x, mut y, mut row_h) = (0u64, 0u64, 0u64);
    for (i, f) in mine.iter().filter(|f| f.get("panel").is_some()).enumerate() {
        let kind = f.get("panel").expect("filtered");
        let time_series = match f.get("format") {
            Some("time_series") => true,
            Some("table") | None => false,
            Some(other) => return Err(f.bad(format!("-- format: {other} is not table or time_series"))),
        };
        let (w, h) = match kind {
            "gauge" | "stat" => (6, 6),
            "barchart" | "timeseries" => (12, 9),
            other => return Err(f.bad(format!("-- panel: {other} is not gauge, stat, barchart or timeseries"))),
        };
        if x + w > 24 {
            x = 0;
            y += row_h;
            row_h = 0;
        }
        let options = match kind {
            "gauge" | "stat" => json!({"reduceOptions": {"calcs": ["lastNotNull"], "fields": "/.*/", "values": false}}),
            "barchart" => {
                json!({"orientation": "auto", "showValue": "auto", "legend": {"displayMode": "list", "placement": "bottom", "showLegend": true}})
            }
            _ => json!({"legend": {"displayMode": "list", "placement": "bottom", "showLegend": true}, "tooltip": {"mode": "multi"}}),
        };
        let mut defaults = serde_json::Map::new();
        if let Some(unit) = f.get("unit") {
            defaults.insert("unit".into(), Value::String(unit.to_owned()));
        }
        panels.push(json!({
            "id": i + 1, "type": kind, "title": f.get("title").unwrap_or(&f.name), "description": format!("queries/{}", f.name),
            "datasource": flavor.datasource(), "gridPos": {"x": x, "y": y, "w": w, "h": h},
            "targets": [target(flavor, "A", &adapt(&f.sql, flavor), time_series)],
            "fieldConfig": {"defaults": Value::Object(defaults), "overrides": []}, "options": options,
        }));
        x += w;
        row_h = row_h.max(h);
    }
    let uid = format!("tickerlake-{}-{}", slug(title), flavor.short());
    let board = json!({
        "uid": uid, "title": match flavor { Flavor::Postgres => title.to_owned(), Flavor::Athena => format!("{title} (Athena)") },
        "tags": ["tickerlake", flavor.short()], "timezone": "utc", "editable": true, "schemaVersion": 39, "version": 1,
        "time": {"from": "now-7d", "to": "now"}, "refresh": "5m", "graphTooltip": 1,
        "templating": {"list": variables}, "annotations": {"list": []}, "panels": panels,
        "description": "Generated from queries/*.sql by `tickerlake grafana-provisioning`; edit the SQL, not this file.",
    });
    Ok((format!("{}/{}.json", flavor.short(), slug(title)), board))
}

/// The alert rules of both datasources, in Grafana's file-provisioning format.
pub fn alert_rules(files: &[QueryFile]) -> Result<Value, GrafanaError> {
    let mut groups = Vec::new();
    for flavor in Flavor::ALL {
        let mut rules = Vec::new();
        for f in files.iter().filter(|f| f.get("alert").is_some() && f.is_for(flavor)) {
            let (op, n) = f
                .get("threshold")
                .and_then(|t| t.split_once(' '))
                .and_then(|(op, n)| Some((op.trim().to_owned(), n.trim().parse::<f64>().ok()?)))
                .filter(|(op, _)| ["gt", "lt"].contains(&op.as_str()))
                .ok_or_else(|| f.bad("-- threshold: must be `gt N` or `lt N`"))?;
            let range: u64 = f.get("range").unwrap_or("3600").parse().map_err(|_| f.bad("-- range: must be seconds"))?;
            let expr = json!({"type": "__expr__", "uid": "__expr__"});
            let mut model = target(flavor, "A", &adapt(&f.sql, flavor), false);
            model
                .as_object_mut()
                .expect("object")
                .extend([("intervalMs".to_owned(), json!(60000)), ("maxDataPoints".to_owned(), json!(43200))]);
            // Alerting YAML expands $VAR everywhere but in the query model: `$$` keeps a `$`.
            let summary = f.get("summary").unwrap_or("").replace('$', "$$");
            rules.push(json!({
                "uid": format!("{}-{}", f.get("alert").expect("filtered"), flavor.short()),
                "title": format!("{} ({})", f.get("title").unwrap_or(&f.name), flavor.short()),
                "condition": "C",
                "data": [
                    {"refId": "A", "relativeTimeRange": {"from": range, "to": 0}, "datasourceUid": flavor.uid(), "model": model},
                    {"refId": "B", "relativeTimeRange": {"from": 0, "to": 0}, "datasourceUid": "__expr__",
                     "model": {"refId": "B", "type": "reduce", "expression": "A", "reducer": "last", "datasource": expr.clone()}},
                    {"refId": "C", "relativeTimeRange": {"from": 0, "to": 0}, "datasourceUid": "__expr__",
                     "model": {"refId": "C", "type": "threshold", "expression": "B", "datasource": expr,
                               "conditions": [{"evaluator": {"type": op, "params": [n]}}]}},
                ],
                "noDataState": f.get("no-data").unwrap_or("NoData"),
                "execErrState": "Error",
                "for": f.get("for").unwrap_or("0s"),
                "annotations": {"summary": summary, "description": format!("queries/{}", f.name)},
                "labels": {"source": "tickerlake", "datasource": flavor.short()},
            }));
        }
        groups.push(
            json!({"orgId": 1, "name": format!("tickerlake-{}", flavor.short()), "folder": "tickerlake", "interval": "1m", "rules": rules}),
        );
    }
    Ok(json!({"apiVersion": 1, "groups": groups}))
}

/// A YAML rendering of JSON (block style; every string double-quoted, so nothing is re-typed).
pub fn to_yaml(v: &Value) -> String {
    fn scalar(v: &Value) -> String {
        match v {
            Value::String(s) => serde_json::to_string(s).expect("string"),
            other => other.to_string(),
        }
    }
    fn emit(v: &Value, indent: usize, out: &mut String) {
        let pad = " ".repeat(indent);
        match v {
            Value::Object(m) if !m.is_empty() => {
                for (k, val) in m {
                    match val {
                        Value::Object(o) if !o.is_empty() => {
                            out.push_str(&format!("{pad}{k}:\n"));
                            emit(val, indent + 2, out);
                        }
                        Value::Array(a) if !a.is_empty() => {
                            out.push_str(&format!("{pad}{k}:\n"));
                            emit(val, indent, out);
                        }
                        Value::Object(_) => out.push_str(&format!("{pad}{k}: {{}}\n")),
                        Value::Array(_) => out.push_str(&format!("{pad}{k}: []\n")),
                        _ => out.push_str(&format!("{pad}{k}: {}\n", scalar(val))),
                    }
                }
            }
            Value::Array(a) if !a.is_empty() => {
                for item in a {
                    match item {
                        Value::Object(o) if !o.is_empty() => {
                            let mut inner = String::new();
                            emit(item, indent + 2, &mut inner);
                            // The first key goes on the dash line.
                            out.push_str(&format!("{pad}- {}", &inner[indent + 2..]));
                        }
                        Value::Array(_) => {
                            out.push_str(&format!("{pad}-\n"));
                            emit(item, indent + 2, out);
                        }
                        _ => out.push_str(&format!("{pad}- {}\n", scalar(item))),
                    }
                }
            }
            other => out.push_str(&format!("{pad}{}\n", scalar(other))),
        }
    }
    let mut out = String::new();
    emit(v, 0, &mut out);
    out
}

/// Every generated file under `grafana/provisioning/` (relative path → content).
pub fn generate(queries: &Path) -> Result<BTreeMap<String, String>, GrafanaError> {
    let files = load(queries)?;
    let mut out = BTreeMap::new();
    for title in dashboard_titles(&files) {
        for flavor in Flavor::ALL {
            let (name, board) = dashboard(&files, &title, flavor)?;
            out.insert(format!("dashboards/{name}"), serde_json::to_string_pretty(&board).expect("json") + "\n");
        }
    }
    let header =
        "# Generated from queries/alert_*.sql by `tickerlake grafana-provisioning` (./dev grafana); edit the SQL, not this file.\n";
    out.insert("alerting/tickerlake-rules.yaml".to_owned(), format!("{header}{}", to_yaml(&alert_rules(&files)?)));
    Ok(out)
}

/// Write the generated files under `out` (or, with `check`, fail if any differs from them).
pub fn write(queries: &Path, out: &Path, check: bool) -> Result<Vec<String>, GrafanaError> {
    let generated = generate(queries)?;
    let mut written = Vec::new();
    for (rel, content) in &generated {
        let path = out.join(rel);
        let current = std::fs::read_to_string(&path).ok();
        if current.as_deref() == Some(content.as_str()) {
            continue;
        }
        if check {
            return Err(GrafanaError::Stale(format!("{} differs from the generator's output", path.display())));
        }
        std::fs::create_dir_all(path.parent().expect("has a parent")).map_err(io(format!("cannot create {}", path.display())))?;
        std::fs::write(&path, content).map_err(io(format!("cannot write {}", path.display())))?;
        written.push(rel.clone());
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macros_expand_as_each_datasource_does() {
        let from: DateTime<Utc> = "2024-05-01T00:00:00Z".parse().unwrap();
        let to: DateTime<Utc> = "2024-05-02T00:00:00.123Z".parse().unwrap();
        let vars = BTreeMap::from([("symbol".to_owned(), "O'X".to_owned())]);
        let sql =
            "SELECT $__timeGroupAlias(ts,'1h'), $__time(ts) WHERE $__timeFilter(ts) AND s = ${symbol:sqlstring} AND $__unixEpochFilter(e)";
        assert_eq!(
            expand(sql, Flavor::Postgres, from, to, &vars).unwrap(),
            "SELECT floor(extract(epoch from ts)/3600)*3600 AS \"time\", ts AS \"time\" WHERE ts BETWEEN '2024-05-01T00:00:00Z' AND '2024-05-02T00:00:00.123Z' AND s = 'O''X' AND e >= 1714521600 AND e <= 1714608000"
        );
        let athena = adapt("WHERE $__timeFilter(\"timestamp\") AND s = ${symbol:sqlstring}", Flavor::Athena);
        assert_eq!(athena, "WHERE \"timestamp\" BETWEEN $__timeFrom() AND $__timeTo() AND s = '${symbol}'");
        let vars = BTreeMap::from([("symbol".to_owned(), "BTCUSDT".to_owned())]);
        assert_eq!(
            expand(&athena, Flavor::Athena, from, to, &vars).unwrap(),
            "WHERE \"timestamp\" BETWEEN TIMESTAMP '2024-05-01 00:00:00' AND TIMESTAMP '2024-05-02 00:00:00' AND s = 'BTCUSDT'"
        );
        assert!(matches!(expand("$__nope(x)", Flavor::Postgres, from, to, &vars), Err(GrafanaError::UnknownMacro(_))));
        assert!(matches!(expand("$other", Flavor::Postgres, from, to, &vars), Err(GrafanaError::UnsetVariable(_))));
    }

    #[test]
    fn yaml_nests_lists_of_maps() {
        let v = json!({"a": 1, "groups": [{"name": "x", "rules": [{"uid": "u", "data": []}]}]});
        assert_eq!(to_yaml(&v), "a: 1\ngroups:\n- name: \"x\"\n  rules:\n  - data: []\n    uid: \"u\"\n");
    }
}
