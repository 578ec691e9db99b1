//! `.dockerignore`: which context paths a build never sees. One pattern per
//! line, `#` comments, `!` re-includes; `*` and `?` stay within a path
//! component, `**` spans any number of them, `[...]` is a character class.
//! The last pattern that matches a path, or any directory above it, decides.

/// The parsed patterns of a `.dockerignore`.
#[derive(Debug, Clone, Default)]
pub struct Ignore {
    patterns: Vec<(bool, Vec<String>)>,
}

impl Ignore {
    /// No patterns: nothing is left out.
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    pub fn parse(text: &str) -> Ignore {
        let mut patterns = Vec::new();
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (negated, p) = match line.strip_prefix('!') {
                Some(rest) => (true, rest.trim()),
                None => (false, line),
            };
            let parts: Vec<String> = p
                .split('/')
                .filter(|c| !c.is_empty() && *c != ".")
                .map(str::to_string)
                .collect();
            if !parts.is_empty() {
                patterns.push((negated, parts));
            }
        }
        Ignore { patterns }
    }

    /// Whether `path` (relative to the context, `/`-separated) is left out.
    pub fn excluded(&self, path: &str) -> bool {
        let comps: Vec<&str> = path.split('/').filter(|c| !c.is_empty() && *c != ".").collect();
        let mut out = false;
        for (negated, pattern) in &self.patterns {
            // The path itself, or a directory above it.
            if (1..=comps.len()).any(|n| matches(pattern, &comps[..n])) {
                out = !negated;
            }
        }
        out
    }
}

fn matches(pattern: &[String], path: &[&str]) -> bool {
    match pattern.split_first() {
        None => path.is_empty(),
        Some((p, rest)) if p == "**" => (0..=path.len()).any(|k| matches(rest, &path[k..])),
        Some((p, rest)) => match path.split_first() {
            Some((c, tail)) => component(p.as_bytes(), c.as_bytes()) && matches(rest, tail),
            None => false,
        },
    }
}

/// A path component against a glob (`*`, `?`, `[...]`).
pub fn glob(pattern: &str, name: &str) -> bool {
    component(pattern.as_bytes(), name.as_bytes())
}

/// One component against one glob component.
fn component(p: &[u8], s: &[u8]) -> bool {
    match p.split_first() {
        None => s.is_empty(),
        Some((b'*', rest)) => (0..=s.len()).any(|k| component(rest, &s[k..])),
        Some((b'?', rest)) => !s.is_empty() && component(rest, &s[1..]),
        Some((b'[', rest)) => {
            let Some(end) = rest.iter().position(|&c| c == b']') else {
                return s.first() == Some(&b'[') && component(rest, &s[1..]);
            };
            let Some(&c) = s.first() else { return false };
            let (negate, class) = match rest[..end].split_first() {
                Some((b'^' | b'!', tail)) => (true, tail),
                _ => (false, &rest[..end]),
            };
            let mut hit = false;
            let mut k = 0;
            while k < class.len() {
                if k + 2 < class.len() && class[k + 1] == b'-' {
                    hit |= class[k] <= c && c <= class[k + 2];
                    k += 3;
                } else {
                    hit |= class[k] == c;
                    k += 1;
                }
            }
            hit != negate && component(&rest[end + 1..], &s[1..])
        }
        Some((b'\\', rest)) if !rest.is_empty() => {
            s.first() == Some(&rest[0]) && component(&rest[1..], &s[1..])
        }
        Some((&c, rest)) => s.first() == Some(&c) && component(rest, &s[1..]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_exceptions_and_directories() {
        let i = Ignore::parse(
            "# build output\n\
             target\n\
             *.log\n\
             !keep.log\n\
             docs/**/*.md\n\
             !docs/README.md\n\
             /secrets/\n\
             temp?\n\
             [ab]c.txt\n",
        );
        assert!(i.excluded("target"));
        assert!(i.excluded("target/debug/app"), "inside an ignored directory");
        assert!(i.excluded("build.log"));
        assert!(!i.excluded("sub/build.log"), "* stays in its component");
        assert!(!i.excluded("keep.log"));
        assert!(i.excluded("docs/a.md"));
        assert!(i.excluded("docs/x/y/z.md"));
        assert!(!i.excluded("docs/README.md"));
        assert!(i.excluded("secrets/key"));
        assert!(i.excluded("temp1") && !i.excluded("temp12"));
        assert!(i.excluded("ac.txt") && i.excluded("bc.txt") && !i.excluded("cc.txt"));
        assert!(!i.excluded("src/main.rs"));
        assert!(!Ignore::parse("").excluded("anything"));
    }

    #[test]
    fn everything_but() {
        let i = Ignore::parse("*\n!src\n!Dockerfile\nsrc/**/*.tmp\n");
        assert!(i.excluded("README.md"));
        assert!(!i.excluded("Dockerfile"));
        assert!(!i.excluded("src/lib.rs"));
        assert!(i.excluded("src/deep/x.tmp"));
        assert!(i.excluded("src/x.tmp"), "** matches no directory too");
    }
}
