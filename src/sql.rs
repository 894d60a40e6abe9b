//! SQL text: literal quoting and the templates in `.sql` files. A template names its holes
//! `{name}` (lower-case identifier characters only, so DuckDB struct literals such as
//! `{'symbol': 'VARCHAR'}` are not holes); [`render`] fills every hole or fails, so a template can
//! never run half-filled.

/// A template whose holes and values did not match.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum TemplateError {
    /// A hole in the template had no value.
    #[error("SQL template hole {{{0}}} was not filled")]
    Unfilled(String),
    /// A value was given for a hole the template does not have.
    #[error("SQL template has no hole {{{0}}}")]
    Unused(String),
}

/// A SQL string literal: `it's` → `'it''s'`.
pub fn lit(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// A DuckDB list literal of string literals: `['a', 'b']`.
pub fn list<'a>(items: impl IntoIterator<Item = &'a str>) -> String {
    let parts: Vec<String> = items.into_iter().map(lit).collect();
    format!("[{}]", parts.join(", "))
}

/// The hole at the start of `s` (after its `{`), if one starts there: its name and length.
fn hole_at(s: &str) -> Option<&str> {
    let end = s.find('}')?;
    let name = &s[..end];
    let valid = !name.is_empty()
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    valid.then_some(name)
}

/// Fill every `{name}` hole of `template` with its value (inserted verbatim: quote with [`lit`]).
pub fn render(template: &str, values: &[(&str, &str)]) -> Result<String, TemplateError> {
    let mut out = String::with_capacity(template.len());
    let mut used = vec![false; values.len()];
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        match hole_at(after) {
            Some(name) => {
                let i = values.iter().position(|(k, _)| *k == name).ok_or_else(|| TemplateError::Unfilled(name.to_owned()))?;
                used[i] = true;
                out.push_str(values[i].1);
                rest = &after[name.len() + 1..];
            }
            None => {
                out.push('{');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    match used.iter().position(|u| !u) {
        Some(i) => Err(TemplateError::Unused(values[i].0.to_owned())),
        None => Ok(out),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_literals() {
        assert_eq!(lit("it's"), "'it''s'");
        assert_eq!(list(["a", "b'c"]), "['a', 'b''c']");
    }

    #[test]
    fn fills_every_hole_and_leaves_struct_literals_alone() {
        let t = "SELECT * FROM read_csv({files}, columns = {'symbol': 'VARCHAR'}) AS {out}; -- {out}";
        assert_eq!(
            render(t, &[("files", "['x']"), ("out", "t")]).unwrap(),
            "SELECT * FROM read_csv(['x'], columns = {'symbol': 'VARCHAR'}) AS t; -- t"
        );
    }

    #[test]
    fn refuses_to_half_fill() {
        assert_eq!(render("SELECT {a}, {b}", &[("a", "1")]), Err(TemplateError::Unfilled("b".into())));
        assert_eq!(render("SELECT {a}", &[("a", "1"), ("c", "2")]), Err(TemplateError::Unused("c".into())));
    }
}
