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
