//! One logical line of a Dockerfile as an instruction: its keyword, flags,
//! arguments in shell or exec form, key=value lists and heredocs.

use super::*;
use molde_common::errdefs::Error;

/// Parses one logical line; `after` are the physical lines that follow, for
/// heredocs. Returns the instruction and how many of `after` it consumed.
pub(super) fn instruction(
    logical: &str,
    line: usize,
    escape: char,
    after: &[&str],
) -> Result<(Instruction, usize), Error> {
    let text = logical.trim();
    let (word, rest) = text.split_once(char::is_whitespace).unwrap_or((text, ""));
    let kw = word.to_ascii_uppercase();
    if !KEYWORDS.contains(&kw.as_str()) {
        return Err(Error::InvalidArgument(format!("unknown instruction: {word}")));
    }
    let mut rest = rest.trim_start();
    let mut flags = Vec::new();
    let allowed = FLAGS
        .iter()
        .find(|(k, _)| *k == kw)
        .map(|(_, f)| *f)
        .unwrap_or(&[]);
    while let Some(f) = rest.strip_prefix("--") {
        let end = f.find(char::is_whitespace).unwrap_or(f.len());
        let (flag, tail) = f.split_at(end);
        let (name, value) = match flag.split_once('=') {
            Some((n, v)) => (n, Some(v.to_string())),
            None => (flag, None),
        };
        if !allowed.contains(&name) {
            return Err(Error::InvalidArgument(format!("{kw} has no --{name} flag")));
        }
        flags.push((name.to_string(), value));
        rest = tail.trim_start();
    }
    let args = rest;
    let needs = |what: &str| -> Result<(), Error> {
        if args.is_empty() {
            Err(Error::InvalidArgument(format!("{kw} needs {what}")))
        } else {
            Ok(())
        }
    };
    let words = |s: &str| {
        expand::split(s, escape).map_err(|e: ExpandError| Error::InvalidArgument(format!("{kw}: {e}")))
    };
    let mut used = 0;
    let command = match kw.as_str() {
        "FROM" => {
            needs("an image")?;
            let w = words(args)?;
            match w.as_slice() {
                [image] => Command::From {
                    image: image.clone(),
                    alias: None,
                },
                [image, as_, name] if as_.eq_ignore_ascii_case("as") => Command::From {
                    image: image.clone(),
                    alias: Some(name.to_ascii_lowercase()),
                },
                _ => {
                    return Err(Error::InvalidArgument(format!(
                        "FROM takes an image and an optional AS name, not {args:?}"
                    )));
                }
            }
        }
        "RUN" => {
            needs("a command")?;
            let (heredocs, n) = heredocs(args, after)?;
            used = n;
            Command::Run {
                form: form(args),
                heredocs,
            }
        }
        "CMD" => {
            needs("a command")?;
            Command::Cmd(form(args))
        }
        "ENTRYPOINT" => {
            needs("a command")?;
            Command::Entrypoint(form(args))
        }
        "SHELL" => match form(args) {
            Form::Exec(v) if !v.is_empty() => Command::Shell(v),
            _ => {
                return Err(Error::InvalidArgument(
                    "SHELL needs a JSON array, e.g. [\"/bin/sh\", \"-c\"]".into(),
                ));
            }
        },
        "ENV" | "LABEL" => {
            needs("a key and a value")?;
            let pairs = key_values(&kw, args, escape)?;
            if kw == "ENV" {
                Command::Env(pairs)
            } else {
                Command::Label(pairs)
            }
        }
        "ARG" => {
            needs("a name")?;
            let mut out = Vec::new();
            for w in words(args)? {
                let (name, default) = match w.split_once('=') {
                    Some((n, d)) => (n.to_string(), Some(d.to_string())),
                    None => (w.clone(), None),
                };
                if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                    return Err(Error::InvalidArgument(format!(
                        "ARG name {name:?} is not a valid name"
                    )));
                }
                out.push((name, default));
            }
            Command::Arg(out)
        }
        "EXPOSE" => {
            needs("a port")?;
            Command::Expose(words(args)?)
        }
        "VOLUME" => {
            needs("a path")?;
            match form(args) {
                Form::Exec(v) => Command::Volume(v),
                Form::Shell(s) => Command::Volume(words(&s)?),
            }
        }
        "COPY" | "ADD" => {
            needs("sources and a destination")?;
            let (docs, n) = heredocs(args, after)?;
            used = n;
            let mut w = match form(args) {
                Form::Exec(v) => v,
                Form::Shell(s) => words(&s)?,
            };
            if w.len() < 2 {
                return Err(Error::InvalidArgument(format!(
                    "{kw} needs at least one source and a destination"
                )));
            }
            let dest = w.pop().unwrap_or_default();
            if kw == "COPY" {
                Command::Copy {
                    srcs: w,
                    dest,
                    heredocs: docs,
                }
            } else {
                Command::Add {
                    srcs: w,
                    dest,
                    heredocs: docs,
                }
            }
        }
        "USER" => {
            needs("a user")?;
            Command::User(args.to_string())
        }
        "WORKDIR" => {
            needs("a path")?;
            Command::Workdir(args.to_string())
        }
        "STOPSIGNAL" => {
            needs("a signal")?;
            Command::Stopsignal(args.to_string())
        }
        "MAINTAINER" => {
            needs("a name")?;
            Command::Maintainer(args.to_string())
        }
        "HEALTHCHECK" => {
            needs("NONE or CMD")?;
            let (head, tail) = args.split_once(char::is_whitespace).unwrap_or((args, ""));
            match head.to_ascii_uppercase().as_str() {
                "NONE" if tail.trim().is_empty() && flags.is_empty() => Command::Healthcheck(None),
                "NONE" => {
                    return Err(Error::InvalidArgument(
                        "HEALTHCHECK NONE takes no arguments or flags".into(),
                    ));
                }
                "CMD" if !tail.trim().is_empty() => Command::Healthcheck(Some(form(tail.trim()))),
                _ => {
                    return Err(Error::InvalidArgument(format!(
                        "HEALTHCHECK takes NONE or CMD <command>, not {args:?}"
                    )));
                }
            }
        }
        "ONBUILD" => {
            needs("an instruction")?;
            let (inner, n) = instruction(args, line, escape, after)?;
            used = n;
            match keyword(&inner.original).as_str() {
                k @ ("ONBUILD" | "FROM" | "MAINTAINER") => {
                    return Err(Error::InvalidArgument(format!("ONBUILD cannot trigger {k}")));
                }
                _ => Command::Onbuild(Box::new(inner)),
            }
        }
        _ => unreachable!("every keyword is handled"),
    };
    Ok((
        Instruction {
            line,
            flags,
            command,
            original: text.to_string(),
        },
        used,
    ))
}

/// A JSON array of strings is the exec form; anything else is a shell command.
fn form(args: &str) -> Form {
    let t = args.trim();
    if t.starts_with('[')
        && let Ok(v) = serde_json::from_str::<Vec<String>>(t)
    {
        return Form::Exec(v);
    }
    Form::Shell(t.to_string())
}

/// ENV/LABEL: `key=value ...`, or the older `key value` (one pair, the rest of the line).
fn key_values(kw: &str, args: &str, escape: char) -> Result<Vec<(String, String)>, Error> {
    let words = expand::split(args, escape).map_err(|e| Error::InvalidArgument(format!("{kw}: {e}")))?;
    let first_has_eq = words.first().is_some_and(|w| {
        let unquoted = w.trim_start_matches(['"', '\'']);
        unquoted.contains('=') && !unquoted.starts_with('=')
    });
    if !first_has_eq {
        let (key, value) = args
            .trim()
            .split_once(char::is_whitespace)
            .ok_or_else(|| Error::InvalidArgument(format!("{kw} {args} needs a value")))?;
        return Ok(vec![(key.to_string(), value.trim().to_string())]);
    }
    words
        .into_iter()
        .map(|w| {
            let (k, v) = w
                .split_once('=')
                .ok_or_else(|| Error::InvalidArgument(format!("{kw}: {w:?} is not key=value")))?;
            if k.is_empty() {
                return Err(Error::InvalidArgument(format!("{kw}: {w:?} has an empty key")));
            }
            Ok((k.to_string(), v.to_string()))
        })
        .collect()
}

/// The heredocs a line opens (`<<EOF`, `<<-EOF`, `<<"EOF"`), with their
/// bodies from the lines after it; how many lines they took.
fn heredocs(args: &str, after: &[&str]) -> Result<(Vec<Heredoc>, usize), Error> {
    if args.trim_start().starts_with('[') {
        return Ok((Vec::new(), 0));
    }
    let mut out = Vec::new();
    let mut used = 0;
    let b = args.as_bytes();
    let mut k = 0;
    while let Some(pos) = args[k..].find("<<") {
        let mut j = k + pos + 2;
        k = j;
        if b.get(j) == Some(&b'<') {
            // `<<<` is a here-string, left to the shell.
            k = j + 1;
            continue;
        }
        let strip_tabs = b.get(j) == Some(&b'-');
        if strip_tabs {
            j += 1;
        }
        let quote = match b.get(j) {
            Some(&q @ (b'"' | b'\'')) => {
                j += 1;
                Some(q)
            }
            _ => None,
        };
        let name_len = args[j..]
            .bytes()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == b'_')
            .count();
        if name_len == 0 {
            continue;
        }
        let name = &args[j..j + name_len];
        j += name_len;
        if let Some(q) = quote {
            if b.get(j) != Some(&q) {
                return Err(Error::InvalidArgument(format!(
                    "heredoc <<{}{name} has no closing quote",
                    q as char
                )));
            }
            j += 1;
        }
        k = j;
        let mut body = String::new();
        let mut closed = false;
        while used < after.len() {
            let mut l = after[used];
            used += 1;
            if strip_tabs {
                l = l.trim_start_matches('\t');
            }
            if l == name {
                closed = true;
                break;
            }
            body.push_str(l);
            body.push('\n');
        }
        if !closed {
            return Err(Error::InvalidArgument(format!(
                "heredoc {name} is not terminated: no line reads {name:?}"
            )));
        }
        out.push(Heredoc {
            name: name.to_string(),
            body,
            expand: quote.is_none(),
        });
    }
    Ok((out, used))
}
