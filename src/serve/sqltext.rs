//! A PostgreSQL-dialect tokenizer for `serve`: just enough to tell string literals, quoted
//! identifiers and comments from the rest, so the compatibility layer ([`super::compat`]) can
//! rewrite names and recognise the session statements drivers send without ever touching text
//! inside a literal.

/// What a token is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tok {
    /// A bare word: keyword or unquoted identifier (compared case-insensitively).
    Word,
    /// `"a quoted identifier"`.
    Quoted,
    /// A string literal in any of PostgreSQL's forms (`'…'`, `E'…'`, `$tag$…$tag$`).
    Str,
    /// A number.
    Number,
    /// Whitespace or a comment.
    Space,
    /// Punctuation or an operator (one or more characters, e.g. `::`, `(`, `.`, `;`, `>=`).
    Punct,
}

/// One token: its kind and its text in the query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Token<'a> {
    /// The kind.
    pub kind: Tok,
    /// The exact text (quotes included).
    pub text: &'a str,
}

impl Token<'_> {
    /// Whether this is the bare word `w` (case-insensitive).
    pub fn is_word(&self, w: &str) -> bool {
        self.kind == Tok::Word && self.text.eq_ignore_ascii_case(w)
    }

    /// The identifier this token names (lower-cased if bare, unquoted if quoted), if it is one.
    pub fn ident(&self) -> Option<String> {
        match self.kind {
            Tok::Word => Some(self.text.to_ascii_lowercase()),
            Tok::Quoted => Some(self.text[1..self.text.len() - 1].replace("\"\"", "\"")),
            _ => None,
        }
    }

    /// The value of a string literal (for the forms session statements use), or of a word or
    /// number (`SET x TO on`, `SET x = 3`).
    pub fn value(&self) -> Option<String> {
        match self.kind {
            Tok::Str if self.text.starts_with('\'') => Some(self.text[1..self.text.len() - 1].replace("''", "'")),
            Tok::Str if self.text.starts_with(['E', 'e']) => Some(self.text[2..self.text.len() - 1].replace("''", "'").replace("\\'", "'")),
            Tok::Str => {
                // $tag$…$tag$
                let tag_end = self.text[1..].find('$').map(|i| i + 2)?;
                Some(self.text[tag_end..self.text.len() - tag_end].to_owned())
            }
            Tok::Word | Tok::Number => Some(self.text.to_owned()),
            Tok::Quoted => self.ident(),
            _ => None,
        }
    }
}

fn is_ident_start(c: char) -> bool {
    c.is_alphabetic() || c == '_'
}

fn is_ident_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_' || c == '$'
}

/// Split `sql` into tokens; concatenating their texts gives `sql` back. An unterminated literal,
/// identifier or comment runs to the end (DuckDB reports the syntax error later).
pub fn tokenize(sql: &str) -> Vec<Token<'_>> {
    let mut out = Vec::new();
    let bytes = sql.as_bytes();
    let mut i = 0;
    while i < sql.len() {
        let rest = &sql[i..];
        let c = rest.chars().next().expect("not at the end");
        let (kind, len) = if c.is_whitespace() {
            (Tok::Space, rest.find(|ch: char| !ch.is_whitespace()).unwrap_or(rest.len()))
        } else if rest.starts_with("--") {
            (Tok::Space, rest.find('\n').map_or(rest.len(), |n| n + 1))
        } else if rest.starts_with("/*") {
            // PostgreSQL's block comments nest.
            let mut depth = 0usize;
            let mut j = 0;
            let b = rest.as_bytes();
            let mut end = rest.len();
            while j + 1 < b.len() {
                if b[j] == b'/' && b[j + 1] == b'*' {
                    depth += 1;
                    j += 2;
                } else if b[j] == b'*' && b[j + 1] == b'/' {
                    depth -= 1;
                    j += 2;
                    if depth == 0 {
                        end = j;
                        break;
                    }
                } else {
                    j += 1;
                }
            }
            (Tok::Space, end)
        } else if c == '\'' || ((c == 'E' || c == 'e') && rest[1..].starts_with('\'')) {
            let start = if c == '\'' { 1 } else { 2 };
            let escapes = c != '\'';
            let b = rest.as_bytes();
            let mut j = start;
            let mut end = rest.len();
            while j < b.len() {
                if escapes && b[j] == b'\\' {
                    j += 2;
                } else if b[j] == b'\'' {
                    if b.get(j + 1) == Some(&b'\'') {
                        j += 2;
                    } else {
                        end = j + 1;
                        break;
                    }
                } else {
                    j += 1;
                }
            }
            (Tok::Str, end.min(rest.len()))
        } else if c == '"' {
            let b = rest.as_bytes();
            let mut j = 1;
            let mut end = rest.len();
            while j < b.len() {
                if b[j] == b'"' {
                    if b.get(j + 1) == Some(&b'"') {
                        j += 2;
                    } else {
                        end = j + 1;
                        break;
                    }
                } else {
                    j += 1;
                }
            }
            (Tok::Quoted, end)
        } else if c == '$' && dollar_tag(rest).is_some() {
            let tag = dollar_tag(rest).expect("checked");
            let body = &rest[tag.len()..];
            (Tok::Str, body.find(tag).map_or(rest.len(), |e| tag.len() + e + tag.len()))
        } else if is_ident_start(c) {
            (Tok::Word, rest.find(|ch: char| !is_ident_char(ch)).unwrap_or(rest.len()))
        } else if c.is_ascii_digit() || (c == '.' && bytes.get(i + 1).is_some_and(u8::is_ascii_digit)) {
            (Tok::Number, rest.find(|ch: char| !(ch.is_ascii_alphanumeric() || ch == '.' || ch == '_')).unwrap_or(rest.len()))
        } else if rest.starts_with("::") {
            (Tok::Punct, 2)
        } else if "()[],;.".contains(c) {
            (Tok::Punct, 1)
        } else {
            // An operator: a run of operator characters.
            let len = rest.find(|ch: char| !"+-*/<>=~!@#%^&|`?:".contains(ch)).unwrap_or(rest.len()).max(c.len_utf8());
            (Tok::Punct, len)
        };
        out.push(Token { kind, text: &sql[i..i + len] });
        i += len;
    }
    out
}

/// The `$tag$` opening a dollar-quoted string at the start of `s`, if one does.
fn dollar_tag(s: &str) -> Option<&str> {
    let inner = &s[1..];
    let end = inner.find('$')?;
    let tag = &inner[..end];
    (tag.is_empty() || (tag.starts_with(is_ident_start) && tag.chars().all(|c| c.is_alphanumeric() || c == '_'))).then(|| &s[..end + 2])
}

/// The tokens that are not space, with their indices in `tokens`.
pub fn significant<'a>(tokens: &[Token<'a>]) -> Vec<(usize, Token<'a>)> {
    tokens.iter().copied().enumerate().filter(|(_, t)| t.kind != Tok::Space).collect()
}

/// How many statements `sql` holds (`;`-separated, ignoring empty ones).
pub fn statement_count(tokens: &[Token<'_>]) -> usize {
    let mut count = 0;
    let mut in_statement = false;
    for t in tokens.iter().filter(|t| t.kind != Tok::Space) {
        if t.kind == Tok::Punct && t.text == ";" {
            in_statement = false;
        } else if !in_statement {
            in_statement = true;
            count += 1;
        }
    }
    count
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_keep_literals_whole() {
        let sql = "SELECT 'it''s pg_catalog.x', E'a\\'b', $q$pg_catalog.y$q$, \"pg_catalog\".\"pg_class\" -- pg_catalog.z\n/* a /* nested */ b */ FROM t WHERE x::regclass >= 1.5;";
        let tokens = tokenize(sql);
        assert_eq!(tokens.iter().map(|t| t.text).collect::<String>(), sql);
        let strs: Vec<&str> = tokens.iter().filter(|t| t.kind == Tok::Str).map(|t| t.text).collect();
        assert_eq!(strs, ["'it''s pg_catalog.x'", "E'a\\'b'", "$q$pg_catalog.y$q$"]);
        assert_eq!(
            tokens.iter().filter(|t| t.kind == Tok::Str).map(|t| t.value().unwrap()).collect::<Vec<_>>(),
            ["it's pg_catalog.x", "a'b", "pg_catalog.y"]
        );
        let quoted: Vec<String> = tokens.iter().filter(|t| t.kind == Tok::Quoted).map(|t| t.ident().unwrap()).collect();
        assert_eq!(quoted, ["pg_catalog", "pg_class"]);
        assert!(tokens.iter().any(|t| t.kind == Tok::Punct && t.text == "::"));
        assert!(tokens.iter().any(|t| t.kind == Tok::Punct && t.text == ">="));
        assert!(tokens.iter().any(|t| t.kind == Tok::Number && t.text == "1.5"));
        assert_eq!(statement_count(&tokens), 1);
        assert_eq!(statement_count(&tokenize("SET a = 1; DROP VIEW x")), 2);
        assert_eq!(statement_count(&tokenize(";; -- c\n")), 0);
    }
}
