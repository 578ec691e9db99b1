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
        let (ins, used) = instruction(&logical, start + 1, escape, heredoc_lines)
            .map_err(|m| err(start + 1, m.message()))?;
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

mod instruction;

use instruction::instruction;

#[cfg(test)]
mod tests;
