//! containerd's list filter syntax, parsed once and matched against any record.
//!
//! A filter is selectors joined by `,` (all must hold); a request's filter list
//! matches when any one filter does. A selector is a field path with an optional
//! operator and value:
//!
//! ```text
//! name==docker.io/library/busybox:latest
//! labels."containerd.io/gc.root"
//! labels.env!=prod,size~=^1[0-9]$
//! name~=/busy.*/
//! ```
//!
//! Path elements are identifiers (`[A-Za-z0-9_]+`) or double-quoted strings;
//! values are a run of non-space, non-comma characters, a double-quoted string,
//! or a `/`-quoted string (handy for regular expressions).

use regex::Regex;

/// Exposes a record's fields to filters by path.
pub trait Fields {
    /// The value at `path`, or `None` if the record has no such field.
    fn field(&self, path: &[String]) -> Option<String>;
}

#[derive(Debug, Clone)]
enum Op {
    Present,
    Equal(String),
    NotEqual(String),
    Matches(Regex),
}

#[derive(Debug, Clone)]
struct Selector {
    path: Vec<String>,
    op: Op,
}

/// A parsed filter list: matches when any filter matches (an empty list matches all).
#[derive(Debug, Clone, Default)]
pub struct Filter {
    any_of: Vec<Vec<Selector>>,
}

/// A filter that could not be parsed, naming the filter and what was wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid filter `{filter}`: {reason} at position {pos}")]
pub struct FilterError {
    pub filter: String,
    pub pos: usize,
    pub reason: String,
}

impl Filter {
    /// Parses each filter string of a request.
    pub fn parse_all<S: AsRef<str>>(filters: &[S]) -> Result<Filter, FilterError> {
        let mut any_of = Vec::new();
        for f in filters {
            let f = f.as_ref();
            if f.trim().is_empty() {
                continue;
            }
            any_of.push(Parser::new(f).filter()?);
        }
        Ok(Filter { any_of })
    }

    /// Whether the record passes the filter.
    pub fn matches(&self, rec: &dyn Fields) -> bool {
        if self.any_of.is_empty() {
            return true;
        }
        self.any_of.iter().any(|sels| {
            sels.iter().all(|s| {
                let v = rec.field(&s.path);
                match (&s.op, v) {
                    (Op::Present, v) => v.is_some(),
                    (Op::Equal(want), Some(v)) => &v == want,
                    (Op::NotEqual(want), Some(v)) => &v != want,
                    (Op::NotEqual(_), None) => true,
                    (Op::Matches(re), Some(v)) => re.is_match(&v),
                    _ => false,
                }
            })
        })
    }
}

/// Looks a `labels.<key>` path up in a label map; the common case for every record.
pub fn label_field<'a>(
    labels: impl IntoIterator<Item = (&'a String, &'a String)>,
    path: &[String],
) -> Option<String> {
    if path.len() < 2 {
        return None;
    }
    // A dotted key may arrive as several unquoted path elements.
    let key = path[1..].join(".");
    labels
        .into_iter()
        .find(|(k, _)| **k == key)
        .map(|(_, v)| v.clone())
}

struct Parser<'a> {
    src: &'a str,
    chars: Vec<char>,
    pos: usize,
}

impl<'a> Parser<'a> {
    fn new(src: &'a str) -> Self {
        Self {
            src,
            chars: src.chars().collect(),
            pos: 0,
        }
    }

    fn err(&self, reason: impl Into<String>) -> FilterError {
        FilterError {
            filter: self.src.to_string(),
            pos: self.pos,
            reason: reason.into(),
        }
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn skip_ws(&mut self) {
        while self.peek().is_some_and(char::is_whitespace) {
            self.pos += 1;
        }
    }

    fn filter(&mut self) -> Result<Vec<Selector>, FilterError> {
        let mut sels = vec![self.selector()?];
        loop {
            self.skip_ws();
            match self.peek() {
                None => return Ok(sels),
                Some(',') => {
                    self.pos += 1;
                    sels.push(self.selector()?);
                }
                Some(c) => return Err(self.err(format!("unexpected {c:?}, expected ',' or end"))),
            }
        }
    }

    fn selector(&mut self) -> Result<Selector, FilterError> {
        let path = self.path()?;
        self.skip_ws();
        let op = match (self.peek(), self.chars.get(self.pos + 1).copied()) {
            (Some('='), Some('=')) => "==",
            (Some('!'), Some('=')) => "!=",
            (Some('~'), Some('=')) => "~=",
            (None | Some(','), _) => {
                return Ok(Selector {
                    path,
                    op: Op::Present,
                });
            }
            (Some(c), _) => {
                return Err(self.err(format!("unexpected {c:?}, expected an operator (==, !=, ~=)")));
            }
        };
        self.pos += 2;
        self.skip_ws();
        let value = self.value()?;
        let op = match op {
            "==" => Op::Equal(value),
            "!=" => Op::NotEqual(value),
            _ => {
                Op::Matches(Regex::new(&value).map_err(|e| self.err(format!("bad regular expression: {e}")))?)
            }
        };
        Ok(Selector { path, op })
    }

    fn path(&mut self) -> Result<Vec<String>, FilterError> {
        let mut path = Vec::new();
        loop {
            self.skip_ws();
            let part = match self.peek() {
                Some('"') => self.quoted('"')?,
                Some(c) if c.is_alphanumeric() || c == '_' => {
                    let start = self.pos;
                    while self.peek().is_some_and(|c| c.is_alphanumeric() || c == '_') {
                        self.pos += 1;
                    }
                    self.chars[start..self.pos].iter().collect()
                }
                Some(c) => return Err(self.err(format!("unexpected {c:?}, expected a field name"))),
                None => return Err(self.err("expected a field name")),
            };
            path.push(part);
            if self.peek() == Some('.') {
                self.pos += 1;
            } else {
                return Ok(path);
            }
        }
    }

    fn value(&mut self) -> Result<String, FilterError> {
        match self.peek() {
            Some(q @ ('"' | '/')) => self.quoted(q),
            Some(c) if c != ',' && !c.is_whitespace() => {
                let start = self.pos;
                while self.peek().is_some_and(|c| c != ',' && !c.is_whitespace()) {
                    self.pos += 1;
                }
                Ok(self.chars[start..self.pos].iter().collect())
            }
            _ => Err(self.err("expected a value")),
        }
    }

    fn quoted(&mut self, q: char) -> Result<String, FilterError> {
        self.pos += 1;
        let mut out = String::new();
        loop {
            match self.peek() {
                None => return Err(self.err(format!("unterminated {q}-quoted string"))),
                Some(c) if c == q => {
                    self.pos += 1;
                    return Ok(out);
                }
                Some('\\') if q == '"' => {
                    self.pos += 1;
                    let c = self.peek().ok_or_else(|| self.err("dangling escape"))?;
                    out.push(match c {
                        'n' => '\n',
                        't' => '\t',
                        other => other,
                    });
                    self.pos += 1;
                }
                Some('\\') if self.chars.get(self.pos + 1) == Some(&q) => {
                    out.push(q);
                    self.pos += 2;
                }
                Some(c) => {
                    out.push(c);
                    self.pos += 1;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    struct Rec {
        name: String,
        labels: HashMap<String, String>,
    }

    impl Fields for Rec {
        fn field(&self, path: &[String]) -> Option<String> {
            match path.first().map(String::as_str) {
                Some("name") => Some(self.name.clone()),
                Some("labels") => label_field(&self.labels, path),
                _ => None,
            }
        }
    }

    fn rec() -> Rec {
        Rec {
            name: "docker.io/library/busybox:latest".into(),
            labels: HashMap::from([
                ("containerd.io/gc.root".into(), "2024".into()),
                ("env".into(), "dev".into()),
            ]),
        }
    }

    fn m(f: &[&str]) -> bool {
        Filter::parse_all(f).unwrap().matches(&rec())
    }

    #[test]
    fn equality_inequality_presence() {
        assert!(m(&["name==docker.io/library/busybox:latest"]));
        assert!(!m(&["name==busybox"]));
        assert!(m(&["name!=busybox"]));
        assert!(m(&["labels.env"]));
        assert!(!m(&["labels.missing"]));
        assert!(m(&["labels.missing!=x"]));
    }

    #[test]
    fn quoted_label_keys_and_dotted_paths() {
        assert!(m(&[r#"labels."containerd.io/gc.root""#]));
        assert!(m(&[r#"labels."containerd.io/gc.root"==2024"#]));
        assert!(m(&["labels.env==dev"]));
    }

    #[test]
    fn regex_with_slash_quotes() {
        assert!(m(&["name~=/busy.*/"]));
        assert!(m(&["name~=^docker"]));
        assert!(!m(&["name~=^alpine"]));
    }

    #[test]
    fn comma_is_and_list_is_or() {
        assert!(m(&["labels.env==dev,name~=busybox"]));
        assert!(!m(&["labels.env==prod,name~=busybox"]));
        assert!(m(&["labels.env==prod", "name~=busybox"]));
        assert!(m(&[]));
    }

    #[test]
    fn malformed_filters_name_the_problem() {
        for bad in [
            "==x",
            "name==",
            "name=x",
            r#"labels."open"#,
            "name~=(",
            "name==a b",
        ] {
            let e = Filter::parse_all(&[bad]).unwrap_err();
            assert_eq!(e.filter, bad);
            assert!(!e.reason.is_empty());
        }
    }
}
