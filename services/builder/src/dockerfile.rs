//! The Dockerfile parser: parser directives, comments, line continuations,
//! heredocs, instructions with their `--flags`, shell and exec forms, and
//! stages. Words are kept as written; they are expanded at build time, when
//! the ARG and ENV values of their stage are known (`crate::expand`).
//! Every error names the file and the line.

use crate::expand::{self, ExpandError};

/// A parse error, at a line of a named file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}: {message}")]
pub struct ParseError {
    pub file: String,
    pub line: usize,
    pub message: String,
}

/// A command as the shell runs it (`RUN echo hi`) or as an argv (`RUN ["echo", "hi"]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Form {
    Shell(String),
    Exec(Vec<String>),
}

/// A here-document: the lines after `<<NAME` up to `NAME`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heredoc {
    pub name: String,
    pub body: String,
    /// False when the name was quoted (`<<"EOF"`): the body is not expanded.
    pub expand: bool,
}

/// What an instruction does, its words still unexpanded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    From {
        image: String,
        alias: Option<String>,
    },
    Run {
        form: Form,
        heredocs: Vec<Heredoc>,
    },
    Cmd(Form),
    Entrypoint(Form),
    Shell(Vec<String>),
    /// key, value pairs, as written.
    Env(Vec<(String, String)>),
    Label(Vec<(String, String)>),
    Arg(Vec<(String, Option<String>)>),
    Expose(Vec<String>),
    Volume(Vec<String>),
    Copy {
        srcs: Vec<String>,
        dest: String,
        heredocs: Vec<Heredoc>,
    },
    Add {
        srcs: Vec<String>,
        dest: String,
        heredocs: Vec<Heredoc>,
    },
    User(String),
    Workdir(String),
    Stopsignal(String),
    Maintainer(String),
    /// None: `HEALTHCHECK NONE`.
    Healthcheck(Option<Form>),
    Onbuild(Box<Instruction>),
}

/// One instruction and where it was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instruction {
    /// The line it starts on, from 1.
    pub line: usize,
    /// Its `--name=value` flags in order (`--link` alone has no value).
    pub flags: Vec<(String, Option<String>)>,
    pub command: Command,
    /// The instruction as written (continuations joined), for history.
    pub original: String,
}

impl Instruction {
    /// The value of a flag, if given.
    pub fn flag(&self, name: &str) -> Option<&str> {
        self.flags
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_deref().unwrap_or("true"))
    }

    /// Every value of a repeatable flag (`--mount`).
    pub fn flags_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.flags
            .iter()
            .filter(move |(n, _)| n == name)
            .filter_map(|(_, v)| v.as_deref())
    }
}

/// A FROM and the instructions up to the next one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stage {
    pub index: usize,
    /// The `AS` name, lowercased.
    pub name: Option<String>,
    pub from: Instruction,
    pub instructions: Vec<Instruction>,
}

/// A parsed Dockerfile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dockerfile {
    pub file: String,
    pub escape: char,
    pub syntax: Option<String>,
    pub check: Option<String>,
    /// ARGs before the first FROM.
    pub global_args: Vec<Instruction>,
    pub stages: Vec<Stage>,
}

impl Dockerfile {
    /// The stage a `--from` or `--target` names: its `AS` name or its index.
    pub fn stage(&self, name: &str) -> Option<&Stage> {
        let lower = name.to_ascii_lowercase();
        self.stages
            .iter()
            .find(|s| s.name.as_deref() == Some(lower.as_str()))
            .or_else(|| name.parse::<usize>().ok().and_then(|i| self.stages.get(i)))
    }
}

const FLAGS: &[(&str, &[&str])] = &[
    ("FROM", &["platform"]),
    ("RUN", &["mount", "network", "security"]),
    ("COPY", &["from", "chown", "chmod", "link", "parents", "exclude"]),
    (
        "ADD",
        &["chown", "chmod", "link", "checksum", "keep-git-dir", "exclude"],
    ),
    (
        "HEALTHCHECK",
        &["interval", "timeout", "start-period", "start-interval", "retries"],
    ),
];

const KEYWORDS: &[&str] = &[
    "FROM",
    "RUN",
    "CMD",
    "LABEL",
    "EXPOSE",
    "ENV",
    "ADD",
    "COPY",
    "ENTRYPOINT",
    "VOLUME",
    "USER",
    "WORKDIR",
    "ARG",
    "ONBUILD",
    "STOPSIGNAL",
    "HEALTHCHECK",
    "SHELL",
    "MAINTAINER",
];

/// Parses a Dockerfile's text; `file` names it in errors.
pub fn parse(file: &str, text: &str) -> Result<Dockerfile, ParseError> {
    let err = |line: usize, message: String| ParseError {
        file: file.to_string(),
        line,
        message,
    };
    let lines: Vec<&str> = text.lines().collect();
    let mut i = 0;

    // Parser directives: `# key=value` lines at the very top.
    let (mut escape, mut syntax, mut check) = ('\\', None, None);
    let mut seen = Vec::new();
    while i < lines.len() {
        let Some((key, value)) = directive(lines[i]) else {
            break;
        };
        if seen.contains(&key) {
            return Err(err(i + 1, format!("the {key} directive is given twice")));
        }
        match key.as_str() {
            "escape" => {
                escape = match value.as_str() {
                    "\\" => '\\',
                    "`" => '`',
                    other => return Err(err(i + 1, format!("escape must be \\ or `, not {other:?}"))),
                }
            }
            "syntax" => syntax = Some(value),
            "check" => check = Some(value),
            // An unknown directive is a comment.
            _ => break,
        }
        seen.push(key);
        i += 1;
    }

    let mut all = Vec::new();
    while i < lines.len() {
        let trimmed = lines[i].trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            i += 1;
            continue;
        }
        let start = i;
        let mut logical = String::new();
        // Continuations: a line ending in the escape character goes on.
        loop {
            let l = lines[i];
            i += 1;
            let t = l.trim_end();
            if let Some(head) = t.strip_suffix(escape) {
                logical.push_str(head);
                while i < lines.len() {
                    let next = lines[i].trim_start();
                    if next.is_empty() || next.starts_with('#') {
                        i += 1;
                    } else {
                        break;
                    }
                }
                if i >= lines.len() {
                    break;
                }
            } else {
                logical.push_str(l);
                break;
            }
        }
        let heredoc_lines = &lines[i..];
        let (ins, used) =
            instruction(&logical, start + 1, escape, heredoc_lines).map_err(|m| err(start + 1, m))?;
        i += used;
        all.push(ins);
    }

    let mut global_args = Vec::new();
    let mut stages: Vec<Stage> = Vec::new();
    for ins in all {
        match &ins.command {
            Command::From { alias, .. } => {
                if let Some(a) = alias
                    && stages.iter().any(|s| s.name.as_deref() == Some(a.as_str()))
                {
                    return Err(err(ins.line, format!("stage name {a:?} is used twice")));
                }
                stages.push(Stage {
                    index: stages.len(),
                    name: alias.clone(),
                    from: ins,
                    instructions: Vec::new(),
                });
            }
            _ => match stages.last_mut() {
                Some(s) => s.instructions.push(ins),
                None if matches!(ins.command, Command::Arg(_)) => global_args.push(ins),
                None => {
                    return Err(err(
                        ins.line,
                        format!("{} comes before the first FROM", keyword(&ins.original)),
                    ));
                }
            },
        }
    }
    if stages.is_empty() {
        return Err(err(
            lines.len().max(1),
            "no FROM: a Dockerfile needs at least one stage".into(),
        ));
    }
    Ok(Dockerfile {
        file: file.to_string(),
        escape,
        syntax,
        check,
        global_args,
        stages,
    })
}

fn keyword(original: &str) -> String {
    original
        .split_whitespace()
        .next()
        .unwrap_or("")
        .to_ascii_uppercase()
}

/// `# key=value` → (key lowercased, value).
fn directive(line: &str) -> Option<(String, String)> {
    let rest = line.trim_start().strip_prefix('#')?.trim_start();
    let (key, value) = rest.split_once('=')?;
    let key = key.trim();
    if key.is_empty()
        || !key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        return None;
    }
    Some((key.to_ascii_lowercase(), value.trim().to_string()))
}

/// Parses one logical line; `after` are the physical lines that follow, for
/// heredocs. Returns the instruction and how many of `after` it consumed.
fn instruction(
    logical: &str,
    line: usize,
    escape: char,
    after: &[&str],
) -> Result<(Instruction, usize), String> {
    let text = logical.trim();
    let (word, rest) = text.split_once(char::is_whitespace).unwrap_or((text, ""));
    let kw = word.to_ascii_uppercase();
    if !KEYWORDS.contains(&kw.as_str()) {
        return Err(format!("unknown instruction: {word}"));
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
            return Err(format!("{kw} has no --{name} flag"));
        }
        flags.push((name.to_string(), value));
        rest = tail.trim_start();
    }
    let args = rest;
    let needs = |what: &str| -> Result<(), String> {
        if args.is_empty() {
            Err(format!("{kw} needs {what}"))
        } else {
            Ok(())
        }
    };
    let words = |s: &str| expand::split(s, escape).map_err(|e: ExpandError| format!("{kw}: {e}"));
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
                    return Err(format!(
                        "FROM takes an image and an optional AS name, not {args:?}"
                    ));
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
            _ => return Err("SHELL needs a JSON array, e.g. [\"/bin/sh\", \"-c\"]".into()),
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
                    return Err(format!("ARG name {name:?} is not a valid name"));
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
                return Err(format!("{kw} needs at least one source and a destination"));
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
                "NONE" => return Err("HEALTHCHECK NONE takes no arguments or flags".into()),
                "CMD" if !tail.trim().is_empty() => Command::Healthcheck(Some(form(tail.trim()))),
                _ => return Err(format!("HEALTHCHECK takes NONE or CMD <command>, not {args:?}")),
            }
        }
        "ONBUILD" => {
            needs("an instruction")?;
            let (inner, n) = instruction(args, line, escape, after)?;
            used = n;
            match keyword(&inner.original).as_str() {
                k @ ("ONBUILD" | "FROM" | "MAINTAINER") => {
                    return Err(format!("ONBUILD cannot trigger {k}"));
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
fn key_values(kw: &str, args: &str, escape: char) -> Result<Vec<(String, String)>, String> {
    let words = expand::split(args, escape).map_err(|e| format!("{kw}: {e}"))?;
    let first_has_eq = words.first().is_some_and(|w| {
        let unquoted = w.trim_start_matches(['"', '\'']);
        unquoted.contains('=') && !unquoted.starts_with('=')
    });
    if !first_has_eq {
        let (key, value) = args
            .trim()
            .split_once(char::is_whitespace)
            .ok_or_else(|| format!("{kw} {args} needs a value"))?;
        return Ok(vec![(key.to_string(), value.trim().to_string())]);
    }
    words
        .into_iter()
        .map(|w| {
            let (k, v) = w
                .split_once('=')
                .ok_or_else(|| format!("{kw}: {w:?} is not key=value"))?;
            if k.is_empty() {
                return Err(format!("{kw}: {w:?} has an empty key"));
            }
            Ok((k.to_string(), v.to_string()))
        })
        .collect()
}

/// The heredocs a line opens (`<<EOF`, `<<-EOF`, `<<"EOF"`), with their
/// bodies from the lines after it; how many lines they took.
fn heredocs(args: &str, after: &[&str]) -> Result<(Vec<Heredoc>, usize), String> {
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
                return Err(format!("heredoc <<{}{name} has no closing quote", q as char));
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
            return Err(format!(
                "heredoc {name} is not terminated: no line reads {name:?}"
            ));
        }
        out.push(Heredoc {
            name: name.to_string(),
            body,
            expand: quote.is_none(),
        });
    }
    Ok((out, used))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(text: &str) -> Dockerfile {
        parse("Dockerfile", text).unwrap_or_else(|e| panic!("{e}"))
    }

    fn fails(text: &str) -> ParseError {
        parse("Dockerfile", text).expect_err("should not parse")
    }

    #[test]
    fn stages_global_args_and_aliases() {
        let d = p("ARG BASE=busybox\n\
                   FROM $BASE AS Build\n\
                   RUN echo hi\n\
                   FROM --platform=linux/amd64 build\n\
                   COPY --from=build /a /b\n");
        assert_eq!(d.global_args.len(), 1);
        assert_eq!(d.stages.len(), 2);
        assert_eq!(d.stages[0].name.as_deref(), Some("build"));
        assert_eq!(d.stage("BUILD").map(|s| s.index), Some(0));
        assert_eq!(d.stage("1").map(|s| s.index), Some(1));
        assert_eq!(d.stages[1].from.flag("platform"), Some("linux/amd64"));
        let copy = &d.stages[1].instructions[0];
        assert_eq!(copy.line, 5);
        assert_eq!(copy.flag("from"), Some("build"));
        assert_eq!(
            copy.command,
            Command::Copy {
                srcs: vec!["/a".into()],
                dest: "/b".into(),
                heredocs: vec![]
            }
        );
    }

    #[test]
    fn shell_and_exec_forms() {
        let d = p(
            "FROM x\nRUN [\"echo\", \"a b\"]\nCMD echo $HOME\nENTRYPOINT [\"/bin/app\"]\nSHELL [\"/bin/bash\", \"-c\"]\nRUN [not json\n",
        );
        let c: Vec<&Command> = d.stages[0].instructions.iter().map(|i| &i.command).collect();
        assert_eq!(
            c[0],
            &Command::Run {
                form: Form::Exec(vec!["echo".into(), "a b".into()]),
                heredocs: vec![]
            }
        );
        assert_eq!(c[1], &Command::Cmd(Form::Shell("echo $HOME".into())));
        assert_eq!(c[2], &Command::Entrypoint(Form::Exec(vec!["/bin/app".into()])));
        assert_eq!(c[3], &Command::Shell(vec!["/bin/bash".into(), "-c".into()]));
        assert_eq!(
            c[4],
            &Command::Run {
                form: Form::Shell("[not json".into()),
                heredocs: vec![]
            }
        );
    }

    #[test]
    fn continuations_comments_and_the_escape_directive() {
        let d = p(
            "# syntax=docker/dockerfile:1\n# check=skip=all\n\n# a comment\nFROM x\nRUN echo a \\\n  # inside\n\n  && echo b\nrun echo c\n",
        );
        assert_eq!(d.syntax.as_deref(), Some("docker/dockerfile:1"));
        assert_eq!(d.check.as_deref(), Some("skip=all"));
        let ins = &d.stages[0].instructions;
        assert_eq!(ins[0].line, 6);
        assert_eq!(
            ins[0].command,
            Command::Run {
                form: Form::Shell("echo a   && echo b".into()),
                heredocs: vec![]
            }
        );
        assert_eq!(ins[1].line, 10);

        let d = p("# escape=`\nFROM x\nWORKDIR C:\\app\nRUN dir `\n  c:\\\n");
        assert_eq!(d.escape, '`');
        let ins = &d.stages[0].instructions;
        assert_eq!(ins[0].command, Command::Workdir("C:\\app".into()));
        assert_eq!(
            ins[1].command,
            Command::Run {
                form: Form::Shell("dir   c:\\".into()),
                heredocs: vec![]
            }
        );
        // A directive after the first instruction is a comment.
        assert_eq!(p("FROM x\n# escape=`\nRUN a \\\n b\n").escape, '\\');
    }

    #[test]
    fn heredocs_run_and_copy() {
        let d = p(
            "FROM x\nRUN <<EOF\necho one\necho $HOME\nEOF\nCOPY <<-\"CONF\" /etc/app.conf\n\tkey=value\n\tCONF\nRUN cat <<<here\n",
        );
        let ins = &d.stages[0].instructions;
        assert_eq!(ins.len(), 3);
        match &ins[0].command {
            Command::Run { heredocs, .. } => {
                assert_eq!(heredocs[0].name, "EOF");
                assert_eq!(heredocs[0].body, "echo one\necho $HOME\n");
                assert!(heredocs[0].expand);
            }
            c => panic!("{c:?}"),
        }
        match &ins[1].command {
            Command::Copy { srcs, dest, heredocs } => {
                assert_eq!(srcs, &vec!["<<-\"CONF\"".to_string()]);
                assert_eq!(dest, "/etc/app.conf");
                assert_eq!(heredocs[0].body, "key=value\n");
                assert!(!heredocs[0].expand);
            }
            c => panic!("{c:?}"),
        }
        assert_eq!(ins[2].line, 9);
        let e = fails("FROM x\nRUN <<EOF\necho never closed\n");
        assert_eq!(e.line, 2);
        assert!(e.message.contains("EOF is not terminated"), "{e}");
    }

    #[test]
    fn env_label_arg_expose_volume() {
        let d = p(
            "FROM x\nENV A=1 B=\"two words\" C=$A\nENV OLD style value\nLABEL \"com.example.k\"=v version=1.0\nARG X\nARG Y=2 Z\nEXPOSE 80 443/udp\nVOLUME [\"/data\", \"/logs\"]\nVOLUME /a /b\n",
        );
        let c: Vec<&Command> = d.stages[0].instructions.iter().map(|i| &i.command).collect();
        assert_eq!(
            c[0],
            &Command::Env(vec![
                ("A".into(), "1".into()),
                ("B".into(), "\"two words\"".into()),
                ("C".into(), "$A".into())
            ])
        );
        assert_eq!(c[1], &Command::Env(vec![("OLD".into(), "style value".into())]));
        assert_eq!(
            c[2],
            &Command::Label(vec![
                ("\"com.example.k\"".into(), "v".into()),
                ("version".into(), "1.0".into())
            ])
        );
        assert_eq!(c[3], &Command::Arg(vec![("X".into(), None)]));
        assert_eq!(
            c[4],
            &Command::Arg(vec![("Y".into(), Some("2".into())), ("Z".into(), None)])
        );
        assert_eq!(c[5], &Command::Expose(vec!["80".into(), "443/udp".into()]));
        assert_eq!(c[6], &Command::Volume(vec!["/data".into(), "/logs".into()]));
        assert_eq!(c[7], &Command::Volume(vec!["/a".into(), "/b".into()]));
    }

    #[test]
    fn healthcheck_onbuild_and_the_rest() {
        let d = p(
            "FROM x\nHEALTHCHECK --interval=5s --retries=3 CMD wget -q localhost\nHEALTHCHECK NONE\nONBUILD RUN make\nUSER app:app\nSTOPSIGNAL SIGTERM\nMAINTAINER someone\nADD --checksum=sha256:abc https://example.invalid/a.tar /x/\nRUN --mount=type=cache,target=/root/.cache --mount=type=tmpfs,target=/t --network=none true\n",
        );
        let ins = &d.stages[0].instructions;
        assert_eq!(ins[0].flag("interval"), Some("5s"));
        assert_eq!(
            ins[0].command,
            Command::Healthcheck(Some(Form::Shell("wget -q localhost".into())))
        );
        assert_eq!(ins[1].command, Command::Healthcheck(None));
        match &ins[2].command {
            Command::Onbuild(inner) => assert!(matches!(inner.command, Command::Run { .. })),
            c => panic!("{c:?}"),
        }
        assert_eq!(ins[3].command, Command::User("app:app".into()));
        assert_eq!(ins[4].command, Command::Stopsignal("SIGTERM".into()));
        assert_eq!(ins[5].command, Command::Maintainer("someone".into()));
        assert_eq!(ins[6].flag("checksum"), Some("sha256:abc"));
        assert_eq!(ins[7].flags_named("mount").count(), 2);
        assert_eq!(ins[7].flag("network"), Some("none"));
    }

    #[test]
    fn errors_name_the_file_and_line() {
        let e = fails("FROM x\n\nFROBNICATE all\n");
        assert_eq!(
            (e.line, e.to_string()),
            (3, "Dockerfile:3: unknown instruction: FROBNICATE".into())
        );
        assert_eq!(
            fails("RUN echo\nFROM x\n").to_string(),
            "Dockerfile:1: RUN comes before the first FROM"
        );
        assert!(fails("# nothing\n").message.contains("no FROM"));
        assert!(
            fails("FROM x\nCOPY --bogus=1 a b\n")
                .message
                .contains("COPY has no --bogus flag")
        );
        assert!(
            fails("FROM x\nCOPY onlyone\n")
                .message
                .contains("at least one source")
        );
        assert!(
            fails("FROM a AS one\nFROM b AS ONE\n")
                .message
                .contains("used twice")
        );
        assert!(fails("FROM x\nRUN\n").message.contains("RUN needs a command"));
        assert!(
            fails("FROM x\nONBUILD FROM y\n")
                .message
                .contains("cannot trigger FROM")
        );
        assert!(fails("FROM x\nSHELL /bin/sh -c\n").message.contains("JSON array"));
        assert!(fails("FROM x y z w\n").message.contains("FROM takes"));
        assert!(fails("# escape=x\nFROM y\n").message.contains("escape must be"));
        assert!(
            fails("FROM x\nARG bad-name\n")
                .message
                .contains("not a valid name")
        );
        assert!(fails("FROM x\nENV A=\"open\n").message.contains("unterminated"));
        assert_eq!(fails("FROM x\nHEALTHCHECK SOMETIMES\n").line, 2);
    }
}
