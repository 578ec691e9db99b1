//! The OCI runtime spec of a container: oci-spec's defaults (namespaces,
//! capabilities, masked and read-only paths, /proc /dev /sys mounts) with the
//! process taken from the image config and the run options.

use oci_spec::runtime::{ProcessBuilder, RootBuilder, Spec, UserBuilder};
use tonic::Status;

use crate::image::ProcessConfig;
use molde_api::molde::services::runtime::v1::RunRequest;

fn bad(e: impl std::fmt::Display) -> Status {
    Status::internal(format!("building the runtime spec: {e}"))
}

/// `KEY=VALUE` lists merged: later keys replace earlier ones.
pub fn merge_env(base: &[String], extra: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for e in base.iter().chain(extra) {
        let key = e.split_once('=').map_or(e.as_str(), |(k, _)| k);
        out.retain(|o| o.split_once('=').map_or(o.as_str(), |(k, _)| k) != key);
        out.push(e.clone());
    }
    out
}

pub fn build(id: &str, img: &ProcessConfig, req: &RunRequest) -> Result<Spec, Status> {
    let entrypoint = if req.entrypoint_set {
        req.entrypoint.clone()
    } else {
        img.entrypoint.clone().unwrap_or_default()
    };
    let cmd = if req.args.is_empty() {
        img.cmd.clone().unwrap_or_default()
    } else {
        req.args.clone()
    };
    let args: Vec<String> = entrypoint.into_iter().chain(cmd).collect();
    if args.is_empty() {
        return Err(Status::invalid_argument(format!(
            "image {} has no command: give one after the image name",
            req.image
        )));
    }
    let mut env = img.env.clone().unwrap_or_default();
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.insert(
            0,
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
        );
    }
    let hostname = if req.hostname.is_empty() {
        id.chars().take(12).collect()
    } else {
        req.hostname.clone()
    };
    env = merge_env(&env, &[format!("HOSTNAME={hostname}")]);
    env = merge_env(&env, &req.env);
    let cwd = if !req.workdir.is_empty() {
        req.workdir.clone()
    } else if !img.working_dir.is_empty() {
        img.working_dir.clone()
    } else {
        "/".into()
    };
    let (uid, gid): (u32, u32) = match img.user.split_once(':') {
        Some((u, g)) => (u.parse().unwrap_or(0), g.parse().unwrap_or(0)),
        None => (img.user.parse().unwrap_or(0), 0),
    };
    let mut spec = Spec::default();
    let mut process = spec.process().clone().unwrap_or_default();
    process = ProcessBuilder::default()
        .terminal(false)
        .args(args)
        .env(env)
        .cwd(cwd)
        .user(UserBuilder::default().uid(uid).gid(gid).build().map_err(bad)?)
        .capabilities(process.capabilities().clone().unwrap_or_default())
        .rlimits(process.rlimits().clone().unwrap_or_default())
        .no_new_privileges(true)
        .build()
        .map_err(bad)?;
    spec.set_process(Some(process));
    spec.set_root(Some(
        RootBuilder::default()
            .path("rootfs")
            .readonly(false)
            .build()
            .map_err(bad)?,
    ));
    spec.set_hostname(Some(hostname));
    if let Some(linux) = spec.linux_mut() {
        linux.set_cgroups_path(Some(format!("/molde/{id}").into()));
    }
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_merges_by_key() {
        let out = merge_env(&["PATH=/bin".into(), "A=1".into()], &["A=2".into(), "B=3".into()]);
        assert_eq!(out, ["PATH=/bin", "A=2", "B=3"]);
    }

    #[test]
    fn process_comes_from_image_and_overrides() {
        let img = ProcessConfig {
            env: Some(vec!["PATH=/bin".into(), "X=1".into()]),
            entrypoint: Some(vec!["/bin/sh".into(), "-c".into()]),
            cmd: Some(vec!["echo default".into()]),
            working_dir: "/srv".into(),
            user: "1000:1000".into(),
        };
        let req = RunRequest {
            image: "i".into(),
            args: vec!["echo hi".into()],
            env: vec!["X=2".into()],
            ..Default::default()
        };
        let s = build("abcdef0123456789", &img, &req).unwrap();
        let p = s.process().as_ref().unwrap();
        assert_eq!(p.args().as_ref().unwrap(), &["/bin/sh", "-c", "echo hi"]);
        assert!(p.env().as_ref().unwrap().contains(&"X=2".to_string()));
        assert_eq!(p.cwd().to_str().unwrap(), "/srv");
        assert_eq!(p.user().uid(), 1000);
        assert_eq!(s.hostname().as_deref(), Some("abcdef012345"));
        let empty = ProcessConfig::default();
        assert!(
            build("x", &empty, &RunRequest::default()).is_err(),
            "no command at all is refused"
        );
    }
}
