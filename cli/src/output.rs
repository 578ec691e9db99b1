//! Table and JSON output shared by the listing commands.

use crate::template::Template;

/// `--format`: `table` (the default columns), `json`, or a docker template
/// (`{{.Names}}`, `table {{.ID}}\t{{.Status}}`).
#[derive(Debug, Clone)]
pub enum Format {
    Table,
    Json,
    Template(Template),
}

impl std::str::FromStr for Format {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> anyhow::Result<Format> {
        match s {
            "table" => Ok(Format::Table),
            "json" => Ok(Format::Json),
            t if t.contains("{{") => Ok(Format::Template(Template::parse(t)?)),
            other => anyhow::bail!(
                "--format {other:?}: give table, json or a template such as '{{{{.ID}}}}' or 'table {{{{.Names}}}}\\t{{{{.Status}}}}'"
            ),
        }
    }
}

/// Prints docker-shaped `rows` as `format` asks: the `columns` (field,
/// header) as a table, the objects as JSON lines, or through a template.
pub fn print(format: &Format, columns: &[(&str, &str)], rows: &[serde_json::Value]) -> anyhow::Result<()> {
    match format {
        Format::Table => {
            let cells: Vec<Vec<String>> = rows
                .iter()
                .map(|r| columns.iter().map(|(k, _)| cell(&r[k])).collect())
                .collect();
            table(&columns.iter().map(|(_, h)| *h).collect::<Vec<_>>(), &cells);
        }
        Format::Json => {
            for r in rows {
                println!("{r}");
            }
        }
        Format::Template(t) => t.print(columns, rows)?,
    }
    Ok(())
}

fn cell(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// `inspect`'s output: a JSON array, or each object through `-f`'s template.
pub fn print_inspect(format: Option<&Template>, objects: &[serde_json::Value]) -> anyhow::Result<()> {
    match format {
        None => println!("{}", serde_json::to_string_pretty(objects)?),
        Some(t) => {
            for o in objects {
                println!("{}", t.render(o)?);
            }
        }
    }
    Ok(())
}

/// Prints rows under a header, each column as wide as its widest cell.
/// Whatever the daemon returns (a cell of any length, a row of any width) is
/// printed, never a reason to fail.
pub fn table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if i >= widths.len() {
                widths.push(0);
            }
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let n = cells.len();
        let mut s = String::new();
        for (i, c) in cells.into_iter().enumerate() {
            s.push_str(c);
            if i + 1 < n {
                // Padded by hand: format!'s width is limited to u16.
                let pad = widths[i].saturating_sub(c.chars().count()) + 3;
                s.extend(std::iter::repeat_n(' ', pad));
            }
        }
        println!("{}", s.trim_end());
    };
    line(header.to_vec());
    for r in rows {
        line(r.iter().map(String::as_str).collect());
    }
}

/// 1234567 → "1.2 MB".
pub fn human_size(n: i64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1000.0 && u + 1 < UNITS.len() {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// "3 minutes ago" for a protobuf timestamp, as docker words it.
pub fn age(ts: Option<&prost_types::Timestamp>) -> String {
    let Some(ts) = ts else { return "-".into() };
    let secs = chrono::Utc::now().timestamp() - ts.seconds;
    format!("{} ago", human_duration(secs))
}

/// docker's human durations: `Less than a second`, `5 minutes`, `About an hour`.
pub fn human_duration(secs: i64) -> String {
    match secs {
        s if s < 1 => "Less than a second".into(),
        1 => "1 second".into(),
        s if s < 60 => format!("{s} seconds"),
        s if s < 120 => "About a minute".into(),
        s if s < 3600 => format!("{} minutes", s / 60),
        s if s < 7200 => "About an hour".into(),
        s if s < 48 * 3600 => format!("{} hours", s / 3600),
        s if s < 14 * 86400 => format!("{} days", s / 86400),
        s if s < 60 * 86400 => format!("{} weeks", s / (7 * 86400)),
        s if s < 730 * 86400 => format!("{} months", s / (30 * 86400)),
        s => format!("{} years", s / (365 * 86400)),
    }
}

pub fn rfc3339(ts: Option<&prost_types::Timestamp>) -> String {
    ts.and_then(|t| chrono::DateTime::from_timestamp(t.seconds, t.nanos as u32))
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default()
}

pub fn labels(l: &std::collections::HashMap<String, String>) -> String {
    if l.is_empty() {
        return "-".into();
    }
    let mut v: Vec<_> = l.iter().map(|(k, v)| format!("{k}={v}")).collect();
    v.sort();
    v.join(",")
}

/// Asks `question` on the terminal, as docker's prune commands do; false
/// unless the user answers y. Without a terminal, refuses: give -f.
pub fn confirm(question: &str) -> anyhow::Result<bool> {
    use std::io::{BufRead, IsTerminal, Write};
    if !std::io::stdin().is_terminal() {
        anyhow::bail!("{question} Not asking without a terminal: give -f to go ahead");
    }
    print!("WARNING! {question}\nAre you sure you want to continue? [y/N] ");
    std::io::stdout().flush()?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes"))
}

/// `--label KEY=VALUE` flags as docker reads them (`KEY` alone: an empty value).
pub fn label_flags(flags: &[String]) -> std::collections::HashMap<String, String> {
    flags
        .iter()
        .map(|l| {
            let (k, v) = l.split_once('=').unwrap_or((l, ""));
            (k.to_string(), v.to_string())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn tables_take_cells_of_any_length() {
        let long = "a".repeat(100_000);
        super::table(
            &["NAME", "SIZE"],
            &[
                vec![long, "1 B".into()],
                vec!["x".into(), "2 B".into(), "extra".into()],
            ],
        );
    }
}
