//! Table and JSON output shared by the listing commands.

use clap::ValueEnum;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Table,
    Json,
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

/// "3 minutes ago" for a protobuf timestamp.
pub fn age(ts: Option<&prost_types::Timestamp>) -> String {
    let Some(ts) = ts else { return "-".into() };
    let secs = chrono::Utc::now().timestamp() - ts.seconds;
    match secs {
        s if s < 2 => "just now".into(),
        s if s < 120 => format!("{s} seconds ago"),
        s if s < 7200 => format!("{} minutes ago", s / 60),
        s if s < 172_800 => format!("{} hours ago", s / 3600),
        s => format!("{} days ago", s / 86400),
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
