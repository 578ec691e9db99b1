use super::*;
use molde_common::spec::capability;
use oci_spec::runtime::LinuxCapabilities;

#[test]
fn command_and_args_follow_kubernetes() {
    let mut img = oci_spec::image::Config::default();
    img.set_entrypoint(Some(vec!["/entry".into()]));
    img.set_cmd(Some(vec!["default".into()]));
    let mut c = cri::ContainerConfig::default();
    assert_eq!(argv(&c, &img), ["/entry", "default"]);
    c.args = vec!["a".into()];
    assert_eq!(argv(&c, &img), ["/entry", "a"]);
    c.command = vec!["/bin/sh".into()];
    c.args.clear();
    assert_eq!(argv(&c, &img), ["/bin/sh"]);
    c.args = vec!["-c".into(), "x".into()];
    assert_eq!(argv(&c, &img), ["/bin/sh", "-c", "x"]);
}

#[test]
fn capabilities_add_and_drop_with_all() {
    let sc = |add: &[&str], drop: &[&str]| cri::LinuxContainerSecurityContext {
        capabilities: Some(cri::Capability {
            add_capabilities: add.iter().map(|s| s.to_string()).collect(),
            drop_capabilities: drop.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }),
        ..Default::default()
    };
    let has =
        |c: &LinuxCapabilities, n: &str| c.bounding().as_ref().unwrap().contains(&capability(n).unwrap());
    let c = capabilities(&sc(&["NET_ADMIN"], &["CHOWN"])).unwrap();
    assert!(has(&c, "CAP_NET_ADMIN") && !has(&c, "CHOWN") && has(&c, "KILL"));
    let c = capabilities(&sc(&[], &["ALL"])).unwrap();
    assert!(c.bounding().as_ref().unwrap().is_empty());
    let c = capabilities(&sc(&["SYS_TIME"], &["ALL"])).unwrap();
    assert_eq!(c.bounding().as_ref().unwrap().len(), 1);
    let c = capabilities(&sc(&["ALL"], &[])).unwrap();
    assert!(has(&c, "SYS_ADMIN"));
    assert!(capabilities(&sc(&["NOT_A_CAP"], &[])).is_err());
}

#[test]
fn cgroups_go_under_the_pods_parent() {
    assert_eq!(
        cgroups_path("cgroupfs", "/kubepods/besteffort/pod1", "c1"),
        PathBuf::from("/kubepods/besteffort/pod1/c1")
    );
    assert_eq!(cgroups_path("cgroupfs", "", "c1"), PathBuf::from("/k8s.io/c1"));
    assert_eq!(
        cgroups_path("systemd", "kubepods-besteffort-pod1.slice", "c1"),
        PathBuf::from(
            "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod1.slice/cri-molde-c1.scope"
        )
    );
    assert_eq!(
        cgroups_path("systemd", "", "c1"),
        PathBuf::from("/system.slice/cri-molde-c1.scope")
    );
}

#[test]
fn seccomp_profiles_by_type() {
    use cri::security_profile::ProfileType;
    let sc = |t: ProfileType| cri::LinuxContainerSecurityContext {
        seccomp: Some(cri::SecurityProfile {
            profile_type: t as i32,
            localhost_ref: "/nonexistent.json".into(),
        }),
        ..Default::default()
    };
    assert!(seccomp(&sc(ProfileType::RuntimeDefault)).unwrap().is_some());
    assert!(seccomp(&sc(ProfileType::Unconfined)).unwrap().is_none());
    assert!(seccomp(&sc(ProfileType::Localhost)).is_err());
    assert!(
        seccomp(&cri::LinuxContainerSecurityContext::default())
            .unwrap()
            .is_none()
    );
}
