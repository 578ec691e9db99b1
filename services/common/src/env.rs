//! A container's environment: the one rule `molde run`, CRI and the
//! builder's RUN follow, as docker and containerd do — the image's `Env`,
//! `PATH` defaulted when the image sets none, then the request's
//! variables, each replacing a variable of the same name where it stands.

/// The `PATH` a container gets when its image sets none (docker's and
/// containerd's default).
pub const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

fn key(e: &str) -> &str {
    e.split_once('=').map_or(e, |(k, _)| k)
}

/// Adds [`DEFAULT_PATH`] first unless `env` sets `PATH`.
pub fn default_path(env: &mut Vec<String>) {
    if !env.iter().any(|e| key(e) == "PATH") {
        env.insert(0, DEFAULT_PATH.into());
    }
}

/// `base` with each of `overrides` replacing the variable of its name in
/// place, or appended when `base` has none; later overrides win.
pub fn merge(base: &[String], overrides: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut out = base.to_vec();
    for e in overrides {
        match out.iter_mut().find(|o| key(o) == key(&e)) {
            Some(o) => *o = e,
            None => out.push(e),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &[&str]) -> Vec<String> {
        s.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn overrides_replace_in_place_and_later_ones_win() {
        let out = merge(&v(&["PATH=/bin", "A=1", "C=0"]), v(&["A=2", "B=3", "A=4"]));
        assert_eq!(out, ["PATH=/bin", "A=4", "C=0", "B=3"]);
        // A name that only starts like another is another variable.
        assert_eq!(merge(&v(&["AB=1"]), v(&["A=2"])), ["AB=1", "A=2"]);
    }

    #[test]
    fn path_is_defaulted_only_when_missing() {
        let mut env = v(&["A=1"]);
        default_path(&mut env);
        assert_eq!(env, [DEFAULT_PATH, "A=1"]);
        let mut env = v(&["PATH=/opt/bin"]);
        default_path(&mut env);
        assert_eq!(env, ["PATH=/opt/bin"]);
    }
}
