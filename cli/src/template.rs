//! docker's `--format` templates: Go's text/template syntax (`{{.Names}}`,
//! `{{json .}}`, `{{range .Mounts}}…{{end}}`, `table {{.ID}}\t{{.Status}}`),
//! rendered by gtmpl, the Rust implementation of that language, over the
//! same JSON objects molde's commands print. docker's extra functions
//! (json, join, split, lower, upper, title, truncate, pad) are added here.

use std::collections::HashMap;

use anyhow::{Result, anyhow};
use gtmpl::{FuncError, Value};

/// A parsed `--format` template.
#[derive(Clone)]
pub struct Template {
    /// `table …`: a header row first, cells aligned on the tabs.
    pub table: bool,
    source: String,
    inner: std::sync::Arc<gtmpl::Template>,
}

impl std::fmt::Debug for Template {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Template")
            .field("table", &self.table)
            .field("source", &self.source)
            .finish()
    }
}

impl std::str::FromStr for Template {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Template> {
        Template::parse(s)
    }
}

impl Template {
    pub fn parse(text: &str) -> Result<Template> {
        let (table, body) = match text.strip_prefix("table") {
            Some(rest) if rest.is_empty() || rest.starts_with(char::is_whitespace) => {
                (true, rest.trim_start().to_string())
            }
            _ => (false, text.to_string()),
        };
        // The shell hands over `\t` and `\n` as two characters; docker
        // reads them as the tab and newline they stand for.
        let body = body.replace("\\t", "\t").replace("\\n", "\n");
        let mut inner = gtmpl::Template::default();
        inner.add_funcs(&[
            ("json", json as gtmpl::Func),
            ("join", join as gtmpl::Func),
            ("split", split as gtmpl::Func),
            ("lower", lower as gtmpl::Func),
            ("upper", upper as gtmpl::Func),
            ("title", title as gtmpl::Func),
            ("truncate", truncate as gtmpl::Func),
            ("pad", pad as gtmpl::Func),
        ]);
        inner
            .parse(body.as_str())
            .map_err(|e| anyhow!("--format {text:?}: {e}"))?;
        Ok(Template {
            table,
            source: text.to_string(),
            inner: std::sync::Arc::new(inner),
        })
    }

    /// The template applied to one object.
    pub fn render(&self, v: &serde_json::Value) -> Result<String> {
        self.inner
            .render(&gtmpl::Context::from(to_value(v)))
            .map_err(|e| anyhow!("--format {:?}: {e}", self.source))
    }

    /// Prints `rows` through the template; for `table`, under a header made
    /// by rendering the template with each field replaced by its column
    /// name (`headers`: field → name; other fields are upper-cased).
    pub fn print(&self, headers: &[(&str, &str)], rows: &[serde_json::Value]) -> Result<()> {
        let lines: Vec<String> = rows.iter().map(|r| self.render(r)).collect::<Result<_>>()?;
        if !self.table {
            for l in lines {
                println!("{l}");
            }
            return Ok(());
        }
        let names: HashMap<&str, &str> = headers.iter().copied().collect();
        let mut header = serde_json::Map::new();
        for key in rows
            .first()
            .and_then(|r| r.as_object())
            .into_iter()
            .flat_map(|o| o.keys())
        {
            let name = names
                .get(key.as_str())
                .map_or_else(|| key.to_uppercase(), |n| n.to_string());
            header.insert(key.clone(), serde_json::Value::String(name));
        }
        for (key, name) in headers {
            header
                .entry(key.to_string())
                .or_insert_with(|| serde_json::Value::String(name.to_string()));
        }
        let head = self
            .render(&serde_json::Value::Object(header))
            .unwrap_or_default();
        let split = |l: &str| l.split('\t').map(str::to_string).collect::<Vec<_>>();
        let cells: Vec<Vec<String>> = lines.iter().map(|l| split(l)).collect();
        let head = split(&head);
        crate::output::table(&head.iter().map(String::as_str).collect::<Vec<_>>(), &cells);
        Ok(())
    }
}

/// JSON → the template's values. Objects become maps, so a missing key
/// prints `<no value>` as Go's maps do, not an error.
pub fn to_value(v: &serde_json::Value) -> Value {
    match v {
        serde_json::Value::Null => Value::Nil,
        serde_json::Value::Bool(b) => Value::Bool(*b),
        serde_json::Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                Value::from(i)
            } else if let Some(u) = n.as_u64() {
                Value::from(u)
            } else {
                Value::from(n.as_f64().unwrap_or(0.0))
            }
        }
        serde_json::Value::String(s) => Value::String(s.clone()),
        serde_json::Value::Array(a) => Value::Array(a.iter().map(to_value).collect()),
        serde_json::Value::Object(o) => Value::Map(o.iter().map(|(k, v)| (k.clone(), to_value(v))).collect()),
    }
}

fn to_json(v: &Value) -> serde_json::Value {
    match v {
        Value::NoValue | Value::Nil | Value::Function(_) => serde_json::Value::Null,
        Value::Bool(b) => serde_json::Value::Bool(*b),
        Value::String(s) => serde_json::Value::String(s.clone()),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                i.into()
            } else if let Some(u) = n.as_u64() {
                u.into()
            } else {
                serde_json::Number::from_f64(n.as_f64().unwrap_or(0.0))
                    .map_or(serde_json::Value::Null, Into::into)
            }
        }
        Value::Array(a) => serde_json::Value::Array(a.iter().map(to_json).collect()),
        Value::Map(m) | Value::Object(m) => {
            let sorted: std::collections::BTreeMap<_, _> =
                m.iter().map(|(k, v)| (k.clone(), to_json(v))).collect();
            serde_json::Value::Object(sorted.into_iter().collect())
        }
    }
}

fn arg<'a>(args: &'a [Value], i: usize, name: &str) -> Result<&'a Value, FuncError> {
    args.get(i)
        .ok_or_else(|| FuncError::Generic(format!("{name}: missing argument {}", i + 1)))
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::NoValue | Value::Nil => String::new(),
        other => other.to_string(),
    }
}

fn json(args: &[Value]) -> Result<Value, FuncError> {
    let v = to_json(arg(args, 0, "json")?);
    Ok(Value::String(serde_json::to_string(&v).unwrap_or_default()))
}

fn join(args: &[Value]) -> Result<Value, FuncError> {
    let sep = text(arg(args, 1, "join")?);
    match arg(args, 0, "join")? {
        Value::Array(a) => Ok(Value::String(a.iter().map(text).collect::<Vec<_>>().join(&sep))),
        other => Ok(Value::String(text(other))),
    }
}

fn split(args: &[Value]) -> Result<Value, FuncError> {
    let s = text(arg(args, 0, "split")?);
    let sep = text(arg(args, 1, "split")?);
    Ok(Value::Array(
        s.split(sep.as_str()).map(|p| Value::String(p.into())).collect(),
    ))
}

fn lower(args: &[Value]) -> Result<Value, FuncError> {
    Ok(Value::String(text(arg(args, 0, "lower")?).to_lowercase()))
}

fn upper(args: &[Value]) -> Result<Value, FuncError> {
    Ok(Value::String(text(arg(args, 0, "upper")?).to_uppercase()))
}

fn title(args: &[Value]) -> Result<Value, FuncError> {
    let s = text(arg(args, 0, "title")?);
    let mut c = s.chars();
    Ok(Value::String(match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => s,
    }))
}

fn count(v: &Value) -> usize {
    match v {
        Value::Number(n) => n.as_u64().unwrap_or(0) as usize,
        other => text(other).parse().unwrap_or(0),
    }
}

fn truncate(args: &[Value]) -> Result<Value, FuncError> {
    let s = text(arg(args, 0, "truncate")?);
    let n = count(arg(args, 1, "truncate")?);
    Ok(Value::String(s.chars().take(n).collect()))
}

fn pad(args: &[Value]) -> Result<Value, FuncError> {
    let s = text(arg(args, 0, "pad")?);
    let before = count(arg(args, 1, "pad")?);
    let after = count(arg(args, 2, "pad")?);
    Ok(Value::String(format!(
        "{}{s}{}",
        " ".repeat(before),
        " ".repeat(after)
    )))
}

#[cfg(test)]
mod tests {
    use super::Template;
    use serde_json::json;

    #[test]
    fn fields_functions_and_nested_values_render_as_docker_does() {
        let v =
            json!({"Names": "web", "State": {"Running": true}, "Labels": {"a": "1"}, "Ports": ["80", "443"]});
        let t = |s: &str| Template::parse(s).unwrap().render(&v).unwrap();
        assert_eq!(t("{{.Names}}"), "web");
        assert_eq!(t("{{.State.Running}}"), "true");
        assert_eq!(t("{{index .Labels \"a\"}}"), "1");
        assert_eq!(t("{{join .Ports \",\"}}"), "80,443");
        assert_eq!(t("{{json .State}}"), r#"{"Running":true}"#);
        assert_eq!(
            t("{{upper .Names}}:{{range .Ports}}[{{.}}]{{end}}"),
            "WEB:[80][443]"
        );
        assert_eq!(t("{{if .State.Running}}up{{else}}down{{end}}"), "up");
        let table = Template::parse("table {{.Names}}\\t{{.State.Running}}").unwrap();
        assert!(table.table);
        assert_eq!(table.render(&v).unwrap(), "web\ttrue");
    }

    #[test]
    fn a_broken_template_is_refused_naming_it() {
        let e = Template::parse("{{.Names").unwrap_err().to_string();
        assert!(e.contains("{{.Names"), "{e}");
    }
}
