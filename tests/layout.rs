//! The workspace's shape, read from `cargo metadata`: service crates never
//! depend on each other, only on the shared libraries; only the daemon (and
//! these tests) wire services together.

use std::collections::BTreeMap;

/// The libraries a service crate may use.
const SHARED: &[&str] = &["molde-api", "molde-common", "molde-meta", "molde-bundle"];
/// The crates that host or drive services.
const WIRING: &[&str] = &["molded", "molde", "molde-tests"];

#[test]
fn service_crates_depend_only_on_the_shared_libraries() {
    let out = std::process::Command::new(std::env::var_os("CARGO").unwrap_or_else(|| env!("CARGO").into()))
        .args(["metadata", "--format-version", "1", "--no-deps", "--offline"])
        .current_dir(molde_tests::tests_dir())
        .output()
        .expect("cargo metadata");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let members: BTreeMap<String, Vec<String>> = meta["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let deps = p["dependencies"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|d| d["kind"].is_null())
                .map(|d| d["name"].as_str().unwrap().to_string())
                .collect();
            (p["name"].as_str().unwrap().to_string(), deps)
        })
        .collect();
    let ours = |n: &str| members.contains_key(n);
    let services: Vec<&String> = members
        .keys()
        .filter(|n| !SHARED.contains(&n.as_str()) && !WIRING.contains(&n.as_str()))
        .collect();
    assert!(
        ["molde-content", "molde-transfer", "molde-builder"]
            .iter()
            .all(|want| services.iter().any(|s| s == want)),
        "the service crates are found: {services:?}"
    );
    for s in services {
        for d in &members[s] {
            assert!(
                !ours(d) || SHARED.contains(&d.as_str()),
                "service crate {s} depends on {d}: services reach each other only through their gRPC APIs"
            );
        }
    }
    for lib in SHARED {
        for d in &members[*lib] {
            assert!(
                !ours(d) || SHARED.contains(&d.as_str()),
                "shared library {lib} depends on {d}"
            );
        }
    }
}

/// Every `.rs` file under `dir`.
fn sources(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            sources(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The metadata schema has one owner: a key prefix of the local store
/// (`/v1/...`) or of a cluster's etcd (`/molde/<section>/`) is spelled in
/// services/meta/src/keys.rs and nowhere else in the crates.
#[test]
fn metadata_keys_are_spelled_only_in_the_schema() {
    let repo = molde_tests::tests_dir().parent().unwrap().to_path_buf();
    let schema = repo.join("services/meta/src/keys.rs");
    let text = std::fs::read_to_string(&schema).unwrap();
    // The etcd sections the schema defines: "/molde/nodes/", ...
    let sections: Vec<String> = text
        .split('"')
        .skip(1)
        .step_by(2)
        .filter(|s| s.starts_with("/molde/") && s.len() > "/molde/".len())
        .map(str::to_string)
        .collect();
    assert!(sections.iter().any(|s| s == "/molde/nodes/"), "{sections:?}");
    let mut files = Vec::new();
    for d in ["services", "cli/src"] {
        sources(&repo.join(d), &mut files);
    }
    let mut spelled = Vec::new();
    for f in files.iter().filter(|f| **f != schema) {
        let src = std::fs::read_to_string(f).unwrap();
        for (n, line) in src.lines().enumerate() {
            let literal = line.contains("\"/v1/")
                || line.contains("format!(\"/v1/")
                || sections.iter().any(|s| line.contains(&format!("\"{s}")));
            if literal {
                spelled.push(format!(
                    "{}:{}: {}",
                    f.strip_prefix(&repo).unwrap().display(),
                    n + 1,
                    line.trim()
                ));
            }
        }
    }
    assert!(files.len() > 50, "the crates' sources were found");
    assert!(
        spelled.is_empty(),
        "key prefixes outside keys.rs:\n{}",
        spelled.join("\n")
    );
}

/// README quotes the pull ratio of the latest bench/pull.sh run in
/// docs/benchmarks.md (bench/sync-readme.sh keeps them in step), and
/// neither README nor the units point at a placeholder address.
#[test]
fn readme_claims_match_the_benchmarks_and_nothing_points_at_a_placeholder() {
    let root = molde_tests::tests_dir().join("..");
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let bench = std::fs::read_to_string(root.join("docs/benchmarks.md")).unwrap();
    let ratio = |text: &str, before: &str, after: &str| -> Option<String> {
        let i = text.find(after)?;
        let head = &text[..i];
        let start = head.rfind(before)? + before.len();
        Some(head[start..].to_string())
    };
    let measured = ratio(&bench, "molde is **", "x** faster than containerd")
        .expect("the pull ratio in docs/benchmarks.md");
    let claimed =
        ratio(&readme, "\n  ", "x faster than containerd in the latest run").expect("README's pull claim");
    assert_eq!(
        claimed.trim(),
        measured,
        "README says {claimed}x, docs/benchmarks.md {measured}x"
    );
    assert!(
        !readme.contains("example.invalid"),
        "a placeholder link in README"
    );
    for unit in ["molded.service", "molded@.service"] {
        let text = std::fs::read_to_string(root.join("deploy").join(unit)).unwrap();
        assert!(
            !text.contains("example.invalid"),
            "{unit}: a placeholder Documentation"
        );
    }
}
