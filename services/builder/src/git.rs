//! ADD of a git repository: `git@host:repo.git`, `git://…`, or an http(s)
//! URL ending in `.git`, with an optional `#REF[:SUBDIR]`. The ref is
//! resolved to a commit (the step's cache input), then cloned shallowly with
//! the git command, bounded in time and never prompting.

use molde_common::errdefs::Error;
use std::path::Path;
use std::time::Duration;

use tokio::process::Command;

/// How long one git command may take.
const TIMEOUT: Duration = Duration::from_secs(300);

/// A repository source of ADD.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    pub url: String,
    /// Branch or tag; the remote's HEAD when empty.
    pub reference: String,
    /// The directory of the repository to add; all of it when empty.
    pub subdir: String,
}

/// The repository an ADD source names, if it names one.
pub fn parse(src: &str) -> Option<Source> {
    let (url, fragment) = src.split_once('#').unwrap_or((src, ""));
    let is_git = url.starts_with("git@")
        || url.starts_with("git://")
        || ((url.starts_with("http://") || url.starts_with("https://")) && url.ends_with(".git"));
    if !is_git {
        return None;
    }
    let (reference, subdir) = fragment.split_once(':').unwrap_or((fragment, ""));
    Some(Source {
        url: url.to_string(),
        reference: reference.to_string(),
        subdir: subdir.trim_matches('/').to_string(),
    })
}

async fn git(args: &[&str], dir: Option<&Path>) -> Result<String, Error> {
    let mut c = Command::new("git");
    c.args(args)
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_SSH_COMMAND", "ssh -o BatchMode=yes")
        .kill_on_drop(true);
    if let Some(d) = dir {
        c.current_dir(d);
    }
    let out = tokio::time::timeout(TIMEOUT, c.output())
        .await
        .map_err(|_| {
            Error::FailedPrecondition(format!(
                "git {} took longer than {}s",
                args.join(" "),
                TIMEOUT.as_secs()
            ))
        })?
        .map_err(|e| Error::FailedPrecondition(format!("running git (is it installed?): {e}")))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(Error::FailedPrecondition(format!(
            "git {}: {}",
            args.join(" "),
            err.trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The commit the source's ref names now.
pub async fn resolve(s: &Source) -> Result<String, Error> {
    let wanted = if s.reference.is_empty() {
        "HEAD"
    } else {
        &s.reference
    };
    let out = git(&["ls-remote", &s.url, wanted], None).await?;
    // A tag's peeled commit (`^{}`) wins over the tag object.
    let mut found = None;
    for line in out.lines() {
        let Some((sha, name)) = line.split_once('\t') else {
            continue;
        };
        let exact =
            name == wanted || name == format!("refs/heads/{wanted}") || name == format!("refs/tags/{wanted}");
        if name.ends_with("^{}") && name.trim_end_matches("^{}") == format!("refs/tags/{wanted}") {
            return Ok(sha.to_string());
        }
        if exact && found.is_none() {
            found = Some(sha.to_string());
        }
    }
    if let Some(sha) = found {
        return Ok(sha);
    }
    // A commit given by its hash.
    if wanted.len() >= 7 && wanted.chars().all(|c| c.is_ascii_hexdigit()) {
        return Ok(wanted.to_string());
    }
    Err(Error::FailedPrecondition(format!("{}: no ref {wanted:?}", s.url)))
}

/// Clones `commit` of the source into `dir` (which must not exist), without
/// its `.git` unless `keep_git_dir`.
pub async fn fetch(s: &Source, commit: &str, dir: &Path, keep_git_dir: bool) -> Result<(), Error> {
    std::fs::create_dir_all(dir).map_err(|e| Error::FailedPrecondition(e.to_string()))?;
    git(&["init", "-q"], Some(dir)).await?;
    git(&["remote", "add", "origin", &s.url], Some(dir)).await?;
    let wanted = if s.reference.is_empty() {
        "HEAD"
    } else {
        &s.reference
    };
    // Fetch the ref (servers need not serve bare commits), then check out
    // exactly the commit that was resolved.
    let fetched = git(&["fetch", "-q", "--depth", "1", "origin", wanted], Some(dir)).await;
    if fetched.is_err() {
        git(&["fetch", "-q", "--depth", "1", "origin", commit], Some(dir)).await?;
    }
    git(
        &["-c", "advice.detachedHead=false", "checkout", "-q", commit],
        Some(dir),
    )
    .await
    .map_err(|e| Error::FailedPrecondition(format!("{e} (the ref moved while building?)")))?;
    if !keep_git_dir {
        std::fs::remove_dir_all(dir.join(".git")).map_err(|e| Error::FailedPrecondition(e.to_string()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repository_sources_parse() {
        assert_eq!(
            parse("https://example.com/o/r.git#v1.2:docs/"),
            Some(Source {
                url: "https://example.com/o/r.git".into(),
                reference: "v1.2".into(),
                subdir: "docs".into()
            })
        );
        assert_eq!(parse("git@host:o/r.git").unwrap().reference, "");
        assert_eq!(
            parse("git://127.0.0.1:9418/r.git#main").unwrap().reference,
            "main"
        );
        assert_eq!(parse("https://example.com/file.tar.gz"), None);
        assert_eq!(parse("app.git"), None);
    }
}
