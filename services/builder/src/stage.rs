//! A stage's state while it builds: the image config its instructions write
//! (Env, User, WorkingDir, Cmd, Entrypoint, ExposedPorts, Volumes, Labels,
//! StopSignal, Healthcheck, OnBuild, Shell), its history, and the ARG and ENV
//! values words expand against. The rules are the Dockerfile reference's:
//! ENV beats an ARG of the same name; a global ARG reaches a stage only when
//! the stage declares it again; `--build-arg` values count only for declared
//! ARGs (and the predefined proxy ones); ARG values are in RUN's environment
//! but not in the image; exec forms are not expanded.

use molde_common::errdefs::Error;
use std::collections::{BTreeMap, HashMap};

use serde_json::{Map, Value, json};

use crate::dockerfile::{Command, Form, Heredoc, Instruction};
use crate::expand;

/// ARGs every build knows without a declaration.
pub const PREDEFINED_ARGS: &[&str] = &[
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "FTP_PROXY",
    "ftp_proxy",
    "NO_PROXY",
    "no_proxy",
    "ALL_PROXY",
    "all_proxy",
];

/// What an instruction asks of the executor once the stage has taken in its
/// metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Only the config changed (no layer).
    Metadata,
    /// Run this argv with this environment and working directory, as this user.
    Run {
        argv: Vec<String>,
        env: Vec<String>,
        cwd: String,
        user: String,
        /// `RUN <<EOF` whose body starts with `#!`: the body, run as a file
        /// (argv names where it is mounted).
        script: Option<String>,
    },
    /// COPY or ADD with expanded sources and an absolute destination.
    /// `inline` holds the files heredoc sources (`COPY <<EOF dest`) make:
    /// (name, contents).
    Copy {
        srcs: Vec<String>,
        dest: String,
        inline: Vec<(String, String)>,
    },
}

/// The state of one stage.
#[derive(Debug, Clone)]
pub struct StageState {
    /// The image config's `config` object.
    pub config: Map<String, Value>,
    /// History entries added by this stage's instructions.
    pub history: Vec<Value>,
    /// The image's `author`, from MAINTAINER.
    pub author: Option<String>,
    /// ARGs declared in this stage, with their values.
    args: BTreeMap<String, Option<String>>,
    escape: char,
}

impl StageState {
    /// Starts from the base image's `config` object.
    pub fn new(base: Map<String, Value>, escape: char) -> StageState {
        StageState {
            config: base,
            history: Vec::new(),
            author: None,
            args: BTreeMap::new(),
            escape,
        }
    }

    fn env(&self) -> Vec<String> {
        self.config
            .get("Env")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect())
            .unwrap_or_default()
    }

    /// A name's value for expansion: ENV first, then declared ARGs.
    pub fn lookup(&self, name: &str) -> Option<String> {
        let prefix = format!("{name}=");
        self.env()
            .iter()
            .rev()
            .find_map(|e| e.strip_prefix(&prefix).map(str::to_string))
            .or_else(|| self.args.get(name).cloned().flatten())
    }

    fn expand(&self, word: &str) -> Result<String, Error> {
        expand::expand(word, self.escape, &|n| self.lookup(n))
            .map_err(|e| Error::InvalidArgument(e.to_string()))
    }

    fn expand_all(&self, words: &str) -> Result<Vec<String>, Error> {
        expand::expand_all(words, self.escape, &|n| self.lookup(n))
            .map_err(|e| Error::InvalidArgument(e.to_string()))
    }

    /// A copy of an object field of the config (Labels, Volumes, ...), or an empty one.
    fn object(&self, key: &str) -> Map<String, Value> {
        self.config
            .get(key)
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default()
    }

    fn set(&mut self, key: &str, v: Value) {
        self.config.insert(key.into(), v);
    }

    fn shell(&self) -> Vec<String> {
        self.config
            .get("Shell")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect())
            .filter(|v: &Vec<String>| !v.is_empty())
            .unwrap_or_else(|| vec!["/bin/sh".into(), "-c".into()])
    }

    fn argv(&self, form: &Form) -> Vec<String> {
        match form {
            Form::Exec(v) => v.clone(),
            Form::Shell(s) => {
                let mut v = self.shell();
                v.push(s.clone());
                v
            }
        }
    }

    /// RUN's argv. Heredocs go to the shell with the command that reads
    /// them; a lone `<<EOF` is the script itself, run by the shell, or as a
    /// file when it starts with `#!` (mounted at `/dev/pipes/NAME`).
    fn run_argv(&self, form: &Form, heredocs: &[Heredoc]) -> (Vec<String>, Option<String>) {
        let (Form::Shell(text), Some(first)) = (form, heredocs.first()) else {
            return (self.argv(form), None);
        };
        let alone = text
            .trim()
            .trim_start_matches("<<")
            .trim_start_matches('-')
            .trim_matches(|c| c == '"' || c == '\'')
            == first.name
            && heredocs.len() == 1;
        if alone {
            if first.body.starts_with("#!") {
                return (
                    vec![format!("/dev/pipes/{}", first.name)],
                    Some(first.body.clone()),
                );
            }
            let mut v = self.shell();
            v.push(first.body.clone());
            return (v, None);
        }
        let mut script = text.clone();
        for d in heredocs {
            script.push('\n');
            script.push_str(&d.body);
            script.push_str(&d.name);
        }
        script.push('\n');
        let mut v = self.shell();
        v.push(script);
        (v, None)
    }

    /// What of a step goes into its cache key: the proxy arguments a RUN sees
    /// without declaring them are left out, as docker leaves them out.
    pub fn key_of(&self, step: &Step) -> Step {
        let mut s = step.clone();
        if let Step::Run { env, .. } = &mut s {
            env.retain(|e| {
                let name = e.split_once('=').map_or(e.as_str(), |(k, _)| k);
                !PREDEFINED_ARGS.contains(&name) || self.args.contains_key(name) || self.declared_in_env(name)
            });
        }
        s
    }

    fn declared_in_env(&self, name: &str) -> bool {
        self.env()
            .iter()
            .any(|e| e.split_once('=').is_some_and(|(k, _)| k == name))
    }

    fn workdir(&self) -> String {
        self.config
            .get("WorkingDir")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .unwrap_or("/")
            .to_string()
    }

    /// Takes in one instruction (not FROM). `build_args` are `--build-arg`s;
    /// `global` the values of the ARGs before the first FROM.
    pub fn apply(
        &mut self,
        ins: &Instruction,
        build_args: &HashMap<String, String>,
        global: &HashMap<String, Option<String>>,
    ) -> Result<Step, Error> {
        let step = match &ins.command {
            Command::Arg(list) => {
                for (name, default) in list {
                    let value = match build_args.get(name) {
                        Some(v) => Some(v.clone()),
                        None => match default {
                            Some(d) => Some(self.expand(d)?),
                            None => global.get(name).cloned().flatten(),
                        },
                    };
                    self.args.insert(name.clone(), value);
                }
                Step::Metadata
            }
            Command::Env(pairs) => {
                let mut env = self.env();
                for (k, v) in pairs {
                    let (k, v) = (self.expand(k)?, self.expand(v)?);
                    env.retain(|e| e.split_once('=').map(|(n, _)| n) != Some(k.as_str()));
                    env.push(format!("{k}={v}"));
                    // Later pairs of the same ENV see earlier ones.
                    self.set("Env", json!(env));
                }
                Step::Metadata
            }
            Command::Label(pairs) => {
                let mut labels = self.object("Labels");
                for (k, v) in pairs {
                    labels.insert(self.expand(k)?, json!(self.expand(v)?));
                }
                self.set("Labels", Value::Object(labels));
                Step::Metadata
            }
            Command::Maintainer(m) => {
                self.author = Some(m.clone());
                Step::Metadata
            }
            Command::Expose(ports) => {
                let mut exposed = self.object("ExposedPorts");
                for p in ports {
                    let p = self.expand(p)?;
                    let (num, proto) = p.split_once('/').unwrap_or((&p, "tcp"));
                    let proto = proto.to_ascii_lowercase();
                    if num.parse::<u16>().is_err() && !num.contains('-') {
                        return Err(Error::InvalidArgument(format!("EXPOSE {p}: not a port")));
                    }
                    if !matches!(proto.as_str(), "tcp" | "udp" | "sctp") {
                        return Err(Error::InvalidArgument(format!(
                            "EXPOSE {p}: protocol must be tcp, udp or sctp"
                        )));
                    }
                    exposed.insert(format!("{num}/{proto}"), json!({}));
                }
                self.set("ExposedPorts", Value::Object(exposed));
                Step::Metadata
            }
            Command::Volume(paths) => {
                let mut vols = self.object("Volumes");
                for p in paths {
                    let p = self.expand(p)?;
                    if p.is_empty() {
                        return Err(Error::InvalidArgument("VOLUME needs a path".into()));
                    }
                    vols.insert(p, json!({}));
                }
                self.set("Volumes", Value::Object(vols));
                Step::Metadata
            }
            Command::User(u) => {
                let u = self.expand(u)?;
                self.set("User", json!(u));
                Step::Metadata
            }
            Command::Workdir(w) => {
                let w = self.expand(w)?;
                let joined = if w.starts_with('/') {
                    w
                } else {
                    format!("{}/{w}", self.workdir())
                };
                self.set("WorkingDir", json!(clean(&joined)));
                Step::Metadata
            }
            Command::Stopsignal(s) => {
                let s = self.expand(s)?;
                self.set("StopSignal", json!(s));
                Step::Metadata
            }
            Command::Shell(v) => {
                self.set("Shell", json!(v));
                Step::Metadata
            }
            Command::Cmd(f) => {
                let argv = self.argv(f);
                self.set("Cmd", json!(argv));
                Step::Metadata
            }
            Command::Entrypoint(f) => {
                let argv = self.argv(f);
                self.set("Entrypoint", json!(argv));
                // A new entrypoint drops the base image's Cmd.
                self.config.remove("Cmd");
                Step::Metadata
            }
            Command::Healthcheck(None) => {
                self.set("Healthcheck", json!({ "Test": ["NONE"] }));
                Step::Metadata
            }
            Command::Healthcheck(Some(f)) => {
                let test = match f {
                    Form::Exec(v) => {
                        let mut t = vec!["CMD".to_string()];
                        t.extend(v.iter().cloned());
                        t
                    }
                    Form::Shell(s) => vec!["CMD-SHELL".to_string(), s.clone()],
                };
                let mut h = Map::new();
                h.insert("Test".into(), json!(test));
                for (flag, key) in [
                    ("interval", "Interval"),
                    ("timeout", "Timeout"),
                    ("start-period", "StartPeriod"),
                    ("start-interval", "StartInterval"),
                ] {
                    if let Some(v) = ins.flag(flag) {
                        let ns = duration_ns(v).ok_or_else(|| {
                            Error::InvalidArgument(format!("HEALTHCHECK --{flag}={v}: not a duration"))
                        })?;
                        h.insert(key.into(), json!(ns));
                    }
                }
                if let Some(r) = ins.flag("retries") {
                    let n: u32 = r.parse().map_err(|_| {
                        Error::InvalidArgument(format!("HEALTHCHECK --retries={r}: not a number"))
                    })?;
                    h.insert("Retries".into(), json!(n));
                }
                self.set("Healthcheck", Value::Object(h));
                Step::Metadata
            }
            Command::Onbuild(inner) => {
                let mut triggers: Vec<Value> = self
                    .config
                    .get("OnBuild")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default();
                triggers.push(json!(inner.original));
                self.set("OnBuild", json!(triggers));
                Step::Metadata
            }
            Command::Run { form, heredocs } => {
                let mut env = self.env();
                // Declared ARGs are in RUN's environment, under ENV.
                for (k, v) in &self.args {
                    if let Some(v) = v
                        && !env.iter().any(|e| e.starts_with(&format!("{k}=")))
                    {
                        env.push(format!("{k}={v}"));
                    }
                }
                for k in PREDEFINED_ARGS {
                    if let Some(v) = build_args.get(*k)
                        && !env.iter().any(|e| e.starts_with(&format!("{k}=")))
                    {
                        env.push(format!("{k}={v}"));
                    }
                }
                let (argv, script) = self.run_argv(form, heredocs);
                Step::Run {
                    argv,
                    script,
                    env,
                    cwd: self.workdir(),
                    user: self
                        .config
                        .get("User")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_string(),
                }
            }
            Command::Copy { srcs, dest, heredocs } | Command::Add { srcs, dest, heredocs } => {
                let mut s = Vec::new();
                let mut inline = Vec::new();
                let mut docs = heredocs.iter();
                for src in srcs {
                    if src.starts_with("<<") {
                        // A heredoc source: a file named after it, holding its body.
                        let doc = docs.next().ok_or_else(|| {
                            Error::InvalidArgument(format!("{src}: no heredoc body follows"))
                        })?;
                        let body = if doc.expand {
                            self.expand(&doc.body)?
                        } else {
                            doc.body.clone()
                        };
                        inline.push((doc.name.clone(), body));
                        continue;
                    }
                    s.extend(self.expand_all(src)?);
                }
                if !inline.is_empty() && !s.is_empty() {
                    return Err(Error::InvalidArgument(
                        "heredoc sources cannot be mixed with files from the context".into(),
                    ));
                }
                let d = self.expand(dest)?;
                let abs = if d.starts_with('/') {
                    d.clone()
                } else {
                    format!("{}/{d}", self.workdir())
                };
                // A trailing slash (a directory destination) is meaningful.
                let mut dest = clean(&abs);
                let names_dir =
                    d.ends_with('/') || d == "." || d == ".." || d.ends_with("/.") || d.ends_with("/..");
                if names_dir && dest != "/" {
                    dest.push('/');
                }
                Step::Copy {
                    srcs: s,
                    dest,
                    inline,
                }
            }
            Command::From { .. } => {
                return Err(Error::InvalidArgument(
                    "FROM starts a stage; it is not applied to one".into(),
                ));
            }
        };
        let empty_layer = step == Step::Metadata;
        let mut h = json!({
            "created_by": ins.original,
            "comment": "molde.dockerfile.v0",
        });
        if empty_layer {
            h["empty_layer"] = json!(true);
        }
        self.history.push(h);
        Ok(step)
    }
}

/// `/a/./b/../c` → `/a/c`; never above `/`.
pub fn clean(path: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            c => out.push(c),
        }
    }
    format!("/{}", out.join("/"))
}

/// `30s`, `1m30s`, `500ms`, `2h` → nanoseconds.
pub fn duration_ns(s: &str) -> Option<u64> {
    let mut total: u64 = 0;
    let mut rest = s;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let n = rest.find(|c: char| !c.is_ascii_digit() && c != '.')?;
        let value: f64 = rest[..n].parse().ok()?;
        rest = &rest[n..];
        let u = rest.find(|c: char| c.is_ascii_digit()).unwrap_or(rest.len());
        let unit = match &rest[..u] {
            "ns" => 1.0,
            "us" | "µs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return None,
        };
        rest = &rest[u..];
        total += (value * unit) as u64;
    }
    Some(total)
}

#[cfg(test)]
mod tests;
