//! The process a container runs, made from its image's config and what the
//! request overrides: one rule for `molde run`, the builder's RUN (through
//! the runtime) and CRI.
//!
//! - argv: an overridden entrypoint (docker's `--entrypoint`, Kubernetes'
//!   `command`) also drops the image's cmd; overridden arguments (docker's
//!   words after the image, Kubernetes' `args`) replace the image's cmd and
//!   follow whichever entrypoint applies. docker and the kubelet agree here.
//! - env: [`crate::env`]'s rule, with `HOSTNAME` set before the request's
//!   variables so a request can still override it.
//! - cwd: the request's, else the image's `WorkingDir`, else `/`.

use oci_spec::image::Config as ImageConfig;
use oci_spec::runtime::{LinuxCapabilities, Process, User};

use crate::errdefs::Error;

/// What a request says about the process, over the image's config.
#[derive(Debug, Default, Clone, Copy)]
pub struct Request<'a> {
    /// Replaces the image's entrypoint (and drops its cmd) when `Some`;
    /// `Some(&[])` runs the arguments alone.
    pub entrypoint: Option<&'a [String]>,
    /// Replaces the image's cmd when `Some`.
    pub cmd: Option<&'a [String]>,
    /// `KEY=VALUE` overrides of the image's environment.
    pub env: &'a [String],
    /// Set as `HOSTNAME` unless empty.
    pub hostname: &'a str,
    /// The working directory, unless empty.
    pub workdir: &'a str,
    pub terminal: bool,
}

/// The command line by the rule above.
pub fn argv(image: &ImageConfig, entrypoint: Option<&[String]>, cmd: Option<&[String]>) -> Vec<String> {
    let entry = match entrypoint {
        Some(e) => e.to_vec(),
        None => image.entrypoint().clone().unwrap_or_default(),
    };
    let args = match (cmd, entrypoint) {
        (Some(c), _) => c.to_vec(),
        (None, Some(_)) => Vec::new(),
        (None, None) => image.cmd().clone().unwrap_or_default(),
    };
    entry.into_iter().chain(args).collect()
}

/// The environment: the image's, `PATH` defaulted, `HOSTNAME`, the request's.
pub fn env(image: &ImageConfig, hostname: &str, overrides: &[String]) -> Vec<String> {
    let mut env = image.env().clone().unwrap_or_default();
    crate::env::default_path(&mut env);
    if !hostname.is_empty() {
        env = crate::env::merge(&env, [format!("HOSTNAME={hostname}")]);
    }
    crate::env::merge(&env, overrides.iter().cloned())
}

/// The working directory.
pub fn cwd(image: &ImageConfig, requested: &str) -> String {
    if !requested.is_empty() {
        return requested.to_string();
    }
    image
        .working_dir()
        .clone()
        .filter(|w| !w.is_empty())
        .unwrap_or_else(|| "/".into())
}

/// The whole process: argv, env and cwd by the rules above, run as `user`
/// with `capabilities`, under the default rlimits clamped to this host's.
/// A process with no command at all is refused.
pub fn process(
    image: &ImageConfig,
    req: &Request<'_>,
    user: User,
    capabilities: LinuxCapabilities,
) -> Result<Process, Error> {
    let args = argv(image, req.entrypoint, req.cmd);
    if args.is_empty() {
        return Err(Error::InvalidArgument(
            "no command: the image has none and the request gives none".into(),
        ));
    }
    let mut p = Process::default();
    let rlimits = super::clamp_rlimits(p.rlimits().clone().unwrap_or_default());
    p.set_rlimits(Some(rlimits));
    p.set_args(Some(args));
    p.set_env(Some(env(image, req.hostname, req.env)));
    p.set_cwd(cwd(image, req.workdir).into());
    p.set_terminal(Some(req.terminal));
    p.set_user(user);
    p.set_capabilities(Some(capabilities));
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &[&str]) -> Vec<String> {
        s.iter().map(|s| s.to_string()).collect()
    }

    fn image() -> ImageConfig {
        let mut img = ImageConfig::default();
        img.set_entrypoint(Some(v(&["/entry"])));
        img.set_cmd(Some(v(&["default"])));
        img.set_env(Some(v(&["X=1", "PATH=/bin"])));
        img.set_working_dir(Some("/srv".into()));
        img
    }

    #[test]
    fn argv_follows_docker_and_kubernetes() {
        let img = image();
        let (e, c) = (v(&["/other"]), v(&["a", "b"]));
        // Nothing asked: the image's entrypoint and cmd.
        assert_eq!(argv(&img, None, None), ["/entry", "default"]);
        // Arguments replace the cmd and follow the image's entrypoint.
        assert_eq!(argv(&img, None, Some(&c)), ["/entry", "a", "b"]);
        // An entrypoint drops the image's cmd (docker's --entrypoint, a pod's command).
        assert_eq!(argv(&img, Some(&e), None), ["/other"]);
        assert_eq!(argv(&img, Some(&e), Some(&c)), ["/other", "a", "b"]);
        // An empty entrypoint clears the image's: the arguments run alone.
        assert_eq!(argv(&img, Some(&[]), Some(&c)), ["a", "b"]);
    }

    #[test]
    fn env_and_cwd_come_from_the_image_then_the_request() {
        let img = image();
        assert_eq!(
            env(&img, "box", &v(&["X=2", "Y=3"])),
            ["X=2", "PATH=/bin", "HOSTNAME=box", "Y=3"]
        );
        assert_eq!(env(&ImageConfig::default(), "", &[]), [crate::env::DEFAULT_PATH]);
        assert_eq!(cwd(&img, ""), "/srv");
        assert_eq!(cwd(&img, "/tmp"), "/tmp");
        assert_eq!(cwd(&ImageConfig::default(), ""), "/");
    }

    #[test]
    fn a_process_needs_a_command() {
        let caps = LinuxCapabilities::default();
        let err = process(
            &ImageConfig::default(),
            &Request::default(),
            User::default(),
            caps.clone(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("no command"), "{err}");
        let p = process(
            &image(),
            &Request {
                terminal: true,
                ..Default::default()
            },
            User::default(),
            caps,
        )
        .unwrap();
        assert_eq!(p.args().as_deref(), Some(&v(&["/entry", "default"])[..]));
        assert_eq!(p.cwd().to_str(), Some("/srv"));
        assert_eq!(p.terminal(), Some(true));
    }
}
