use super::*;
use crate::dockerfile::parse;

/// Applies every instruction of the last stage; returns the state and steps.
fn build(text: &str, build_args: &[(&str, &str)]) -> Result<(StageState, Vec<Step>), String> {
    let d = parse("Dockerfile", text).map_err(|e| e.to_string())?;
    let build_args: HashMap<String, String> = build_args
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let mut global = HashMap::new();
    for ins in &d.global_args {
        if let Command::Arg(list) = &ins.command {
            for (k, v) in list {
                global.insert(k.clone(), build_args.get(k).cloned().or(v.clone()));
            }
        }
    }
    let base: Map<String, Value> = serde_json::from_value(json!({
        "Env": ["PATH=/usr/bin:/bin"],
        "Cmd": ["sh"],
    }))
    .unwrap();
    let mut st = StageState::new(base, d.escape);
    let mut steps = Vec::new();
    for ins in &d.stages.last().unwrap().instructions {
        steps.push(st.apply(ins, &build_args, &global).map_err(|e| e.to_string())?);
    }
    Ok((st, steps))
}

#[test]
fn config_fields_from_instructions() {
    let (st, steps) = build(
        "FROM x\n\
             ENV APP=/opt/app NAME=\"my app\"\n\
             ENV BIN=$APP/bin\n\
             WORKDIR $APP\nWORKDIR sub/../data\n\
             USER app:app\n\
             LABEL org.example.name=\"$NAME\" version=1\n\
             EXPOSE 8080 53/UDP\n\
             VOLUME /data /logs\n\
             STOPSIGNAL SIGQUIT\n\
             HEALTHCHECK --interval=1m30s --timeout=5s --retries=2 CMD wget -q localhost\n\
             ONBUILD RUN echo child\n\
             ENTRYPOINT [\"/bin/app\"]\n\
             MAINTAINER someone@example.invalid\n",
        &[],
    )
    .unwrap();
    assert_eq!(st.author.as_deref(), Some("someone@example.invalid"));
    let c = Value::Object(st.config.clone());
    assert_eq!(
        c["Env"],
        json!([
            "PATH=/usr/bin:/bin",
            "APP=/opt/app",
            "NAME=my app",
            "BIN=/opt/app/bin"
        ])
    );
    assert_eq!(c["WorkingDir"], "/opt/app/data");
    assert_eq!(c["User"], "app:app");
    assert_eq!(c["Labels"], json!({"org.example.name": "my app", "version": "1"}));
    assert_eq!(c["ExposedPorts"], json!({"8080/tcp": {}, "53/udp": {}}));
    assert_eq!(c["Volumes"], json!({"/data": {}, "/logs": {}}));
    assert_eq!(c["StopSignal"], "SIGQUIT");
    assert_eq!(
        c["Healthcheck"],
        json!({"Test": ["CMD-SHELL", "wget -q localhost"], "Interval": 90_000_000_000u64, "Timeout": 5_000_000_000u64, "Retries": 2})
    );
    assert_eq!(c["OnBuild"], json!(["RUN echo child"]));
    assert_eq!(c["Entrypoint"], json!(["/bin/app"]));
    assert!(c.get("Cmd").is_none(), "ENTRYPOINT drops the base image's Cmd");
    assert!(steps.iter().all(|s| *s == Step::Metadata));
    assert_eq!(st.history.len(), 13);
    assert_eq!(st.history[0]["created_by"], "ENV APP=/opt/app NAME=\"my app\"");
    assert_eq!(st.history[0]["empty_layer"], true);
}

#[test]
fn arg_scoping_and_build_args() {
    let text = "ARG VERSION=1.0\nARG UNUSED=x\n\
                    FROM x\n\
                    ARG VERSION\nARG MODE=debug\nARG FROM_CLI\n\
                    ENV MODE=release\n\
                    RUN echo $VERSION $MODE\n\
                    COPY app-$VERSION.tar /opt/$UNUSED/\n";
    let (st, steps) = build(
        text,
        &[
            ("FROM_CLI", "yes"),
            ("HTTP_PROXY", "http://proxy:3128"),
            ("NOT_DECLARED", "z"),
        ],
    )
    .unwrap();
    match &steps[4] {
        Step::Run {
            argv, env, cwd, user, ..
        } => {
            assert_eq!(
                argv,
                &vec!["/bin/sh".to_string(), "-c".into(), "echo $VERSION $MODE".into()]
            );
            assert!(env.contains(&"VERSION=1.0".to_string()), "{env:?}");
            assert!(
                env.contains(&"MODE=release".to_string()),
                "ENV wins over ARG: {env:?}"
            );
            assert!(!env.contains(&"MODE=debug".to_string()), "{env:?}");
            assert!(env.contains(&"FROM_CLI=yes".to_string()));
            assert!(env.contains(&"HTTP_PROXY=http://proxy:3128".to_string()));
            assert!(!env.iter().any(|e| e.starts_with("NOT_DECLARED")));
            assert_eq!((cwd.as_str(), user.as_str()), ("/", ""));
        }
        s => panic!("{s:?}"),
    }
    // The global UNUSED was not declared in the stage: it expands empty.
    assert_eq!(
        steps[5],
        Step::Copy {
            srcs: vec!["app-1.0.tar".into()],
            dest: "/opt/".into(),
            inline: vec![]
        }
    );
    let c = Value::Object(st.config);
    assert!(
        !c["Env"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e.as_str().unwrap().starts_with("VERSION")),
        "ARG values stay out of the image"
    );
    let (_, steps) = build(text, &[("VERSION", "2.0")]).unwrap();
    assert!(matches!(&steps[5], Step::Copy { srcs, .. } if srcs == &vec!["app-2.0.tar".to_string()]));
}

#[test]
fn shell_exec_forms_and_relative_destinations() {
    let (_, steps) = build(
            "FROM x\nSHELL [\"/bin/bash\", \"-o\", \"pipefail\", \"-c\"]\nWORKDIR /w\nRUN [\"echo\", \"$HOME\"]\nRUN echo hi | cat\nCOPY a b ./dir/\nCOPY c .\n",
            &[],
        )
        .unwrap();
    assert!(
        matches!(&steps[2], Step::Run { argv, cwd, .. } if argv == &vec!["echo".to_string(), "$HOME".into()] && cwd == "/w")
    );
    assert!(
        matches!(&steps[3], Step::Run { argv, .. } if argv[0] == "/bin/bash" && argv[4] == "echo hi | cat")
    );
    assert_eq!(
        steps[4],
        Step::Copy {
            srcs: vec!["a".into(), "b".into()],
            dest: "/w/dir/".into(),
            inline: vec![]
        }
    );
    assert_eq!(
        steps[5],
        Step::Copy {
            srcs: vec!["c".into()],
            dest: "/w/".into(),
            inline: vec![]
        }
    );
}

#[test]
fn proxy_args_stay_out_of_cache_keys_unless_declared() {
    let has = |st: &StageState, step: &Step| match st.key_of(step) {
        Step::Run { env, .. } => env.iter().any(|e| e.starts_with("HTTP_PROXY=")),
        _ => false,
    };
    let (st, steps) = build("FROM x\nRUN true\n", &[("HTTP_PROXY", "http://p:1")]).unwrap();
    assert!(matches!(&steps[0], Step::Run { env, .. } if env.contains(&"HTTP_PROXY=http://p:1".to_string())));
    assert!(!has(&st, &steps[0]), "the RUN sees it, its key does not");
    let (st, steps) = build(
        "FROM x\nARG HTTP_PROXY\nRUN true\n",
        &[("HTTP_PROXY", "http://p:1")],
    )
    .unwrap();
    assert!(has(&st, &steps[1]), "declared, it counts");
}

#[test]
fn heredocs_become_scripts_and_files() {
    let (_, steps) = build(
            "FROM x\nARG N=one\nRUN <<EOF\necho $N\nEOF\nRUN <<EOF\n#!/usr/bin/env python3\nprint(1)\nEOF\nRUN cat > /f <<A\nbody\nA\nCOPY <<EOF <<\"RAW\" /etc/\nv=$N\nEOF\nv=$N\nRAW\n",
            &[],
        )
        .unwrap();
    assert!(
        matches!(&steps[1], Step::Run { argv, script: None, .. } if argv == &vec!["/bin/sh".to_string(), "-c".into(), "echo $N\n".into()])
    );
    assert!(
        matches!(&steps[2], Step::Run { argv, script: Some(s), .. } if argv == &vec!["/dev/pipes/EOF".to_string()] && s.starts_with("#!/usr/bin/env python3"))
    );
    assert!(matches!(&steps[3], Step::Run { argv, .. } if argv[2] == "cat > /f <<A\nbody\nA\n"));
    assert_eq!(
        steps[4],
        Step::Copy {
            srcs: vec![],
            dest: "/etc/".into(),
            inline: vec![("EOF".into(), "v=one\n".into()), ("RAW".into(), "v=$N\n".into())]
        }
    );
}

#[test]
fn bad_values_are_errors() {
    assert!(
        build("FROM x\nEXPOSE http\n", &[])
            .unwrap_err()
            .contains("not a port")
    );
    assert!(
        build("FROM x\nEXPOSE 80/icmp\n", &[])
            .unwrap_err()
            .contains("protocol")
    );
    assert!(
        build("FROM x\nHEALTHCHECK --interval=soon CMD true\n", &[])
            .unwrap_err()
            .contains("not a duration")
    );
    assert!(
        build("FROM x\nENV A=${B\n", &[])
            .unwrap_err()
            .contains("missing '}'")
    );
}

#[test]
fn durations_and_paths() {
    assert_eq!(duration_ns("30s"), Some(30_000_000_000));
    assert_eq!(duration_ns("1m30s"), Some(90_000_000_000));
    assert_eq!(duration_ns("250ms"), Some(250_000_000));
    assert_eq!(duration_ns("1.5h"), Some(5_400_000_000_000));
    assert_eq!(duration_ns("10"), None);
    assert_eq!(duration_ns(""), None);
    assert_eq!(clean("/a/./b/../c/"), "/a/c");
    assert_eq!(clean("/../.."), "/");
}
