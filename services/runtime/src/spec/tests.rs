use super::*;

#[test]
fn process_comes_from_image_and_overrides() {
    let mut img = ProcessConfig::default();
    img.set_env(Some(vec!["PATH=/bin".into(), "X=1".into()]));
    img.set_entrypoint(Some(vec!["/bin/sh".into(), "-c".into()]));
    img.set_cmd(Some(vec!["echo default".into()]));
    img.set_working_dir(Some("/srv".into()));
    img.set_user(Some("1000:1000".into()));
    let req = RunRequest {
        image: "i".into(),
        args: vec!["echo hi".into()],
        env: vec!["X=2".into()],
        ..Default::default()
    };
    let s = build(
        "default",
        "abcdef0123456789",
        &img,
        &req,
        &Identity::default(),
        Path::new("/tmp"),
    )
    .unwrap();
    let p = s.process().as_ref().unwrap();
    assert_eq!(p.args().as_ref().unwrap(), &["/bin/sh", "-c", "echo hi"]);
    assert!(p.env().as_ref().unwrap().contains(&"X=2".to_string()));
    assert_eq!(p.cwd().to_str().unwrap(), "/srv");
    assert_eq!(s.hostname().as_deref(), Some("abcdef012345"));
    let empty = ProcessConfig::default();
    assert!(
        build(
            "default",
            "x",
            &empty,
            &RunRequest::default(),
            &Identity::default(),
            Path::new("/tmp")
        )
        .is_err(),
        "no command at all is refused"
    );
}
