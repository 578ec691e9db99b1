//! Words of a Dockerfile: splitting on unquoted whitespace, and expanding
//! `$v`, `${v}`, `${v:-w}`, `${v-w}`, `${v:+w}`, `${v+w}` against build args
//! and the environment. Single quotes keep their contents literal, double
//! quotes group and still expand, the escape character (`\` or the one the
//! `escape` directive names) makes the next character literal. Quotes are
//! removed from the result, as the Dockerfile reference describes for ENV,
//! LABEL, ARG, COPY, WORKDIR and the rest (RUN is left to the shell).

/// Why a word could not be expanded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExpandError {
    #[error("unterminated {0} quote")]
    Unterminated(char),
    #[error("missing '}}' in {0:?}")]
    MissingBrace(String),
    #[error("bad substitution {0:?}: expected ${{name}}, ${{name:-word}} or ${{name:+word}}")]
    BadSubstitution(String),
}

/// Splits on whitespace outside quotes; quotes and escapes stay in the words
/// for `expand` to interpret.
pub fn split(s: &str, escape: char) -> Result<Vec<String>, ExpandError> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut quote: Option<char> = None;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match quote {
            Some(q) => {
                cur.push(c);
                if c == escape && q == '"' {
                    if let Some(n) = chars.next() {
                        cur.push(n);
                    }
                } else if c == q {
                    quote = None;
                }
            }
            None if c.is_whitespace() => {
                if !cur.is_empty() {
                    words.push(std::mem::take(&mut cur));
                }
            }
            None => {
                cur.push(c);
                if c == escape {
                    if let Some(n) = chars.next() {
                        cur.push(n);
                    }
                } else if c == '\'' || c == '"' {
                    quote = Some(c);
                }
            }
        }
    }
    if let Some(q) = quote {
        return Err(ExpandError::Unterminated(q));
    }
    if !cur.is_empty() {
        words.push(cur);
    }
    Ok(words)
}

/// Expands one word: variables replaced, quotes removed, escapes resolved.
pub fn expand(
    word: &str,
    escape: char,
    vars: &dyn Fn(&str) -> Option<String>,
) -> Result<String, ExpandError> {
    let chars: Vec<char> = word.chars().collect();
    let mut out = String::new();
    let mut i = 0;
    let mut in_double = false;
    while i < chars.len() {
        let c = chars[i];
        if c == escape {
            match chars.get(i + 1) {
                // Inside double quotes only `$`, `"` and the escape itself are escaped.
                Some(&n) if !in_double || n == '$' || n == '"' || n == escape => {
                    out.push(n);
                    i += 2;
                }
                _ => {
                    out.push(c);
                    i += 1;
                }
            }
            continue;
        }
        match c {
            '\'' if !in_double => {
                let end = chars[i + 1..]
                    .iter()
                    .position(|&x| x == '\'')
                    .ok_or(ExpandError::Unterminated('\''))?;
                out.extend(&chars[i + 1..i + 1 + end]);
                i += end + 2;
            }
            '"' => {
                in_double = !in_double;
                i += 1;
            }
            '$' => {
                let (value, used) = variable(&chars[i..], escape, vars)?;
                out.push_str(&value);
                i += used;
            }
            _ => {
                out.push(c);
                i += 1;
            }
        }
    }
    if in_double {
        return Err(ExpandError::Unterminated('"'));
    }
    Ok(out)
}

/// Expands every word of `s` (see `split`).
pub fn expand_all(
    s: &str,
    escape: char,
    vars: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<String>, ExpandError> {
    split(s, escape)?
        .iter()
        .map(|w| expand(w, escape, vars))
        .collect()
}

fn is_name(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// `chars` starts at a `$`; returns the value and how many chars it took.
fn variable(
    chars: &[char],
    escape: char,
    vars: &dyn Fn(&str) -> Option<String>,
) -> Result<(String, usize), ExpandError> {
    match chars.get(1) {
        Some('{') => {
            let mut depth = 1;
            let mut end = None;
            for (k, &c) in chars.iter().enumerate().skip(2) {
                match c {
                    '{' => depth += 1,
                    '}' => {
                        depth -= 1;
                        if depth == 0 {
                            end = Some(k);
                            break;
                        }
                    }
                    _ => {}
                }
            }
            let end = end.ok_or_else(|| ExpandError::MissingBrace(chars.iter().collect()))?;
            let inner: String = chars[2..end].iter().collect();
            let name_len = inner.chars().take_while(|&c| is_name(c)).count();
            let (name, rest) = inner.split_at(name_len);
            if name.is_empty() {
                return Err(ExpandError::BadSubstitution(format!("${{{inner}}}")));
            }
            let value = vars(name);
            let result = if rest.is_empty() {
                value.unwrap_or_default()
            } else if let Some(word) = rest.strip_prefix(":-") {
                match value.filter(|v| !v.is_empty()) {
                    Some(v) => v,
                    None => expand(word, escape, vars)?,
                }
            } else if let Some(word) = rest.strip_prefix(":+") {
                match value.filter(|v| !v.is_empty()) {
                    Some(_) => expand(word, escape, vars)?,
                    None => String::new(),
                }
            } else if let Some(word) = rest.strip_prefix('-') {
                match value {
                    Some(v) => v,
                    None => expand(word, escape, vars)?,
                }
            } else if let Some(word) = rest.strip_prefix('+') {
                match value {
                    Some(_) => expand(word, escape, vars)?,
                    None => String::new(),
                }
            } else {
                return Err(ExpandError::BadSubstitution(format!("${{{inner}}}")));
            };
            Ok((result, end + 1))
        }
        Some(&c) if is_name(c) => {
            let n = chars[1..].iter().take_while(|&&c| is_name(c)).count();
            let name: String = chars[1..1 + n].iter().collect();
            Ok((vars(&name).unwrap_or_default(), 1 + n))
        }
        // A lone `$` is itself.
        _ => Ok(("$".into(), 1)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(name: &str) -> Option<String> {
        match name {
            "v" => Some("value".into()),
            "empty" => Some(String::new()),
            "dir" => Some("/opt/app".into()),
            _ => None,
        }
    }

    fn x(s: &str) -> String {
        expand(s, '\\', &vars).unwrap()
    }

    #[test]
    fn plain_and_braced_variables() {
        assert_eq!(x("$v"), "value");
        assert_eq!(x("${v}"), "value");
        assert_eq!(x("${dir}/bin:$v-x"), "/opt/app/bin:value-x");
        assert_eq!(x("$unset."), ".");
        assert_eq!(x("cost: 5$"), "cost: 5$");
    }

    #[test]
    fn defaults_and_alternatives() {
        assert_eq!(x("${unset:-fallback}"), "fallback");
        assert_eq!(x("${empty:-fallback}"), "fallback");
        assert_eq!(x("${empty-fallback}"), "");
        assert_eq!(x("${v:-fallback}"), "value");
        assert_eq!(x("${v:+yes}"), "yes");
        assert_eq!(x("${empty:+yes}"), "");
        assert_eq!(x("${empty+yes}"), "yes");
        assert_eq!(x("${unset:+yes}"), "");
        assert_eq!(x("${unset:-$dir/lib}"), "/opt/app/lib");
    }

    #[test]
    fn quotes_and_escapes() {
        assert_eq!(x("'$v'"), "$v");
        assert_eq!(x("\"$v and more\""), "value and more");
        assert_eq!(x("\\$v"), "$v");
        assert_eq!(x("a\\ b"), "a b");
        assert_eq!(x("\"say \\\"hi\\\"\""), "say \"hi\"");
        assert_eq!(expand("`$v", '`', &vars).unwrap(), "$v");
        assert_eq!(expand("C:\\dir", '`', &vars).unwrap(), "C:\\dir");
    }

    #[test]
    fn bad_words_are_errors() {
        assert_eq!(
            expand("${v", '\\', &vars),
            Err(ExpandError::MissingBrace("${v".into()))
        );
        assert!(matches!(
            expand("${v:?x}", '\\', &vars),
            Err(ExpandError::BadSubstitution(_))
        ));
        assert!(matches!(
            expand("${}", '\\', &vars),
            Err(ExpandError::BadSubstitution(_))
        ));
        assert_eq!(expand("'open", '\\', &vars), Err(ExpandError::Unterminated('\'')));
        assert_eq!(expand("\"open", '\\', &vars), Err(ExpandError::Unterminated('"')));
    }

    #[test]
    fn splitting_keeps_quoted_groups() {
        assert_eq!(
            split("a \"b c\" 'd e'  f\\ g", '\\').unwrap(),
            vec!["a", "\"b c\"", "'d e'", "f\\ g"]
        );
        assert_eq!(
            expand_all("x=\"1 2\" y=$v", '\\', &vars).unwrap(),
            vec!["x=1 2", "y=value"]
        );
        assert_eq!(split("'open", '\\'), Err(ExpandError::Unterminated('\'')));
    }
}
