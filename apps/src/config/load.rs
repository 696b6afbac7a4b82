//! The JSONC loader: `jsonc-parser` reads the text (comments, trailing commas) and reports syntax
//! errors; comments and trailing commas are then blanked out in place (so every byte keeps its
//! line and column) and `serde_json` deserializes the result into the typed model, with
//! `serde_path_to_error` naming the field path of any error. Errors found after deserialization
//! (cross references, values that only make sense together) name a path too, which is located in
//! the parsed syntax tree for its line and column.

use jsonc_parser::ast::{ObjectPropName, Value};
use jsonc_parser::common::Ranged;
use jsonc_parser::tokens::Token;
use jsonc_parser::{CollectOptions, CommentCollectionStrategy, ParseOptions};
use serde::de::DeserializeOwned;
use std::fmt;
use std::path::{Path, PathBuf};

/// Where in a configuration file something is: 1-based line and column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pos {
    /// Line, from 1.
    pub line: usize,
    /// Column, from 1 (in bytes).
    pub column: usize,
}

/// A configuration error: the file, where in it, which field, and what is wrong.
#[derive(Debug, thiserror::Error)]
pub struct ConfigError {
    /// The file read.
    pub file: PathBuf,
    /// Where, when known.
    pub pos: Option<Pos>,
    /// Field path (`ports.vb.queues[1]`), empty at the top level.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(p) = self.pos {
            write!(f, ":{}:{}", p.line, p.column)?;
        }
        if !self.path.is_empty() && self.path != "." {
            write!(f, ": {}", self.path)?;
        }
        write!(f, ": {}", self.message)
    }
}

/// A checked-later problem: a field path and a message (positions are filled in by the loader).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathError {
    /// Field path, as `a.b[2].c`.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

impl PathError {
    /// A problem at `path`.
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> PathError {
        PathError {
            path: path.into(),
            message: message.into(),
        }
    }
}

/// Byte offset → line and column.
fn pos_of(text: &str, offset: usize) -> Pos {
    let offset = offset.min(text.len());
    let before = &text.as_bytes()[..offset];
    let line = before.iter().filter(|b| **b == b'\n').count() + 1;
    let line_start = before
        .iter()
        .rposition(|b| *b == b'\n')
        .map_or(0, |i| i + 1);
    Pos {
        line,
        column: offset - line_start + 1,
    }
}

/// The text as strict JSON: comments and trailing commas replaced by spaces (newlines kept), so
/// line and column numbers are those of the original. Syntax errors come from `jsonc-parser`.
fn to_json(text: &str) -> Result<String, (Option<Pos>, String)> {
    let opts = ParseOptions {
        allow_comments: true,
        allow_loose_object_property_names: false,
        allow_trailing_commas: true,
        allow_missing_commas: false,
        allow_single_quoted_strings: false,
        allow_hexadecimal_numbers: false,
        allow_unary_plus_numbers: false,
        allow_bare_decimal_point_numbers: false,
        allow_non_finite_numbers: false,
        allow_extended_string_escapes: false,
    };
    let collect = CollectOptions {
        comments: CommentCollectionStrategy::AsTokens,
        tokens: true,
    };
    let parsed = jsonc_parser::parse_to_ast(text, &collect, &opts).map_err(|e| {
        (
            Some(pos_of(text, e.range().start)),
            format!("syntax error: {}", e.kind()),
        )
    })?;
    if parsed.value.is_none() {
        return Err((None, "the file holds no JSON value".into()));
    }
    let tokens = parsed.tokens.unwrap_or_default();
    let mut bytes = text.as_bytes().to_vec();
    let mut blank = |r: jsonc_parser::common::Range| {
        for b in &mut bytes[r.start..r.end] {
            if *b != b'\n' && *b != b'\r' {
                *b = b' ';
            }
        }
    };
    for (i, t) in tokens.iter().enumerate() {
        match t.token {
            Token::CommentLine(_) | Token::CommentBlock(_) => blank(t.range),
            Token::Comma => {
                let next = tokens[i + 1..]
                    .iter()
                    .find(|n| !matches!(n.token, Token::CommentLine(_) | Token::CommentBlock(_)));
                if matches!(
                    next.map(|n| &n.token),
                    Some(Token::CloseBrace | Token::CloseBracket)
                ) {
                    blank(t.range);
                }
            }
            _ => {}
        }
    }
    // Only whole UTF-8 sequences were replaced, by ASCII spaces.
    String::from_utf8(bytes).map_err(|_| (None, "not UTF-8".into()))
}

/// Adds "did you mean" to serde's "unknown field `x`, expected one of `a`, `b`" (and unknown
/// variants alike).
fn suggest(message: &str) -> String {
    if !(message.starts_with("unknown field") || message.starts_with("unknown variant")) {
        return message.to_string();
    }
    let names: Vec<&str> = message.split('`').skip(1).step_by(2).collect();
    let Some((got, expected)) = names.split_first() else {
        return message.to_string();
    };
    let best = expected
        .iter()
        .map(|e| (strsim::jaro_winkler(got, e), *e))
        .filter(|(score, _)| *score >= 0.7)
        .max_by(|a, b| a.0.total_cmp(&b.0));
    match best {
        Some((_, e)) => format!("{message} (did you mean `{e}`?)"),
        None => message.to_string(),
    }
}

/// Finds the value at `path` (`a.b[2].c`) in the syntax tree; the deepest part found when the
/// rest is missing.
fn locate(root: &Value<'_>, path: &str) -> usize {
    let mut cur = root;
    let mut at = root.range().start;
    for part in split_path(path) {
        let next = match (cur, part) {
            (Value::Object(o), Part::Key(k)) => o.properties.iter().find(|p| {
                let n: &str = match &p.name {
                    ObjectPropName::String(s) => s.value.as_ref(),
                    ObjectPropName::Word(w) => w.value,
                };
                n == k
            }),
            (Value::Array(a), Part::Index(i)) => match a.elements.get(i) {
                Some(v) => {
                    cur = v;
                    at = v.range().start;
                    continue;
                }
                None => return at,
            },
            _ => return at,
        };
        match next {
            Some(p) => {
                at = p.range().start;
                cur = &p.value;
            }
            None => return at,
        }
    }
    at
}

enum Part<'a> {
    Key(&'a str),
    Index(usize),
}

fn split_path(path: &str) -> Vec<Part<'_>> {
    let mut out = Vec::new();
    for seg in path.split('.').filter(|s| !s.is_empty()) {
        let (key, rest) = match seg.find('[') {
            Some(i) => (&seg[..i], &seg[i..]),
            None => (seg, ""),
        };
        if !key.is_empty() {
            out.push(Part::Key(key));
        }
        for idx in rest.split('[').filter(|s| !s.is_empty()) {
            if let Ok(i) = idx.trim_end_matches(']').parse() {
                out.push(Part::Index(i));
            }
        }
    }
    out
}

/// Parses JSONC `text` (from `file`, for messages) into `T`, then runs `check` on it; every error
/// names the file, line, column and field path.
pub fn parse_str<T: DeserializeOwned>(
    file: &Path,
    text: &str,
    check: impl FnOnce(&T) -> Result<(), PathError>,
) -> Result<T, ConfigError> {
    let err = |pos, path: String, message| ConfigError {
        file: file.to_path_buf(),
        pos,
        path,
        message,
    };
    let json = to_json(text).map_err(|(pos, m)| err(pos, String::new(), m))?;
    let de = &mut serde_json::Deserializer::from_str(&json);
    let value: T = serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let pos = (inner.line() > 0).then(|| Pos {
            line: inner.line(),
            column: inner.column(),
        });
        // serde_json appends " at line L column C": the position is given in front instead.
        let mut msg = inner.to_string();
        if let Some(i) = msg.rfind(" at line ") {
            msg.truncate(i);
        }
        err(pos, path, suggest(&msg))
    })?;
    if let Err(e) = check(&value) {
        let collect = CollectOptions {
            comments: CommentCollectionStrategy::Off,
            tokens: false,
        };
        let pos = jsonc_parser::parse_to_ast(text, &collect, &ParseOptions::default())
            .ok()
            .and_then(|p| p.value)
            .map(|root| pos_of(text, locate(&root, &e.path)));
        return Err(err(pos, e.path, e.message));
    }
    Ok(value)
}

/// Reads and parses the JSONC file at `file` (see [`parse_str`]).
pub fn parse_file<T: DeserializeOwned>(
    file: &Path,
    check: impl FnOnce(&T) -> Result<(), PathError>,
) -> Result<T, ConfigError> {
    let text = std::fs::read_to_string(file).map_err(|e| ConfigError {
        file: file.to_path_buf(),
        pos: None,
        path: String::new(),
        message: format!("cannot read: {e}"),
    })?;
    parse_str(file, &text, check)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comments_and_trailing_commas_keep_positions() {
        let t = "{\n  // c\n  \"a\": 1, /* x */\n  \"b\": [1, 2,],\n}\n";
        let j = to_json(t).unwrap();
        assert_eq!(j.len(), t.len());
        let v: serde_json::Value = serde_json::from_str(&j).unwrap();
        assert_eq!(v["b"][1], 2);
        assert_eq!(
            pos_of(t, t.find("\"b\"").unwrap()),
            Pos { line: 4, column: 3 }
        );
    }

    #[test]
    fn suggestions() {
        let m = suggest("unknown field `queus`, expected one of `interface`, `queues`");
        assert!(m.ends_with("(did you mean `queues`?)"), "{m}");
        let m = suggest("unknown field `zzzzzz`, expected `interface` or `queues`");
        assert!(!m.contains("did you mean"), "{m}");
    }
}
