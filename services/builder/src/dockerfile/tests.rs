use super::*;

fn p(text: &str) -> Dockerfile {
    parse("Dockerfile", text).unwrap_or_else(|e| panic!("{e}"))
}

fn fails(text: &str) -> ParseError {
    parse("Dockerfile", text).expect_err("should not parse")
}

#[test]
fn stages_global_args_and_aliases() {
    let d = p("ARG BASE=busybox\n\
                   FROM $BASE AS Build\n\
                   RUN echo hi\n\
                   FROM --platform=linux/amd64 build\n\
                   COPY --from=build /a /b\n");
    assert_eq!(d.global_args.len(), 1);
    assert_eq!(d.stages.len(), 2);
    assert_eq!(d.stages[0].name.as_deref(), Some("build"));
    assert_eq!(d.stage("BUILD").map(|s| s.index), Some(0));
    assert_eq!(d.stage("1").map(|s| s.index), Some(1));
    assert_eq!(d.stages[1].from.flag("platform"), Some("linux/amd64"));
    let copy = &d.stages[1].instructions[0];
    assert_eq!(copy.line, 5);
    assert_eq!(copy.flag("from"), Some("build"));
    assert_eq!(
        copy.command,
        Command::Copy {
            srcs: vec!["/a".into()],
            dest: "/b".into(),
            heredocs: vec![]
        }
    );
}

#[test]
fn shell_and_exec_forms() {
    let d = p(
        "FROM x\nRUN [\"echo\", \"a b\"]\nCMD echo $HOME\nENTRYPOINT [\"/bin/app\"]\nSHELL [\"/bin/bash\", \"-c\"]\nRUN [not json\n",
    );
    let c: Vec<&Command> = d.stages[0].instructions.iter().map(|i| &i.command).collect();
    assert_eq!(
        c[0],
        &Command::Run {
            form: Form::Exec(vec!["echo".into(), "a b".into()]),
            heredocs: vec![]
        }
    );
    assert_eq!(c[1], &Command::Cmd(Form::Shell("echo $HOME".into())));
    assert_eq!(c[2], &Command::Entrypoint(Form::Exec(vec!["/bin/app".into()])));
    assert_eq!(c[3], &Command::Shell(vec!["/bin/bash".into(), "-c".into()]));
    assert_eq!(
        c[4],
        &Command::Run {
            form: Form::Shell("[not json".into()),
            heredocs: vec![]
        }
    );
}

#[test]
fn continuations_comments_and_the_escape_directive() {
    let d = p(
        "# syntax=docker/dockerfile:1\n# check=skip=all\n\n# a comment\nFROM x\nRUN echo a \\\n  # inside\n\n  && echo b\nrun echo c\n",
    );
    assert_eq!(d.syntax.as_deref(), Some("docker/dockerfile:1"));
    assert_eq!(d.check.as_deref(), Some("skip=all"));
    let ins = &d.stages[0].instructions;
    assert_eq!(ins[0].line, 6);
    assert_eq!(
        ins[0].command,
        Command::Run {
            form: Form::Shell("echo a   && echo b".into()),
            heredocs: vec![]
        }
    );
    assert_eq!(ins[1].line, 10);

    let d = p("# escape=`\nFROM x\nWORKDIR C:\\app\nRUN dir `\n  c:\\\n");
    assert_eq!(d.escape, '`');
    let ins = &d.stages[0].instructions;
    assert_eq!(ins[0].command, Command::Workdir("C:\\app".into()));
    assert_eq!(
        ins[1].command,
        Command::Run {
            form: Form::Shell("dir   c:\\".into()),
            heredocs: vec![]
        }
    );
    // A directive after the first instruction is a comment.
    assert_eq!(p("FROM x\n# escape=`\nRUN a \\\n b\n").escape, '\\');
}

#[test]
fn heredocs_run_and_copy() {
    let d = p(
        "FROM x\nRUN <<EOF\necho one\necho $HOME\nEOF\nCOPY <<-\"CONF\" /etc/app.conf\n\tkey=value\n\tCONF\nRUN cat <<<here\n",
    );
    let ins = &d.stages[0].instructions;
    assert_eq!(ins.len(), 3);
    match &ins[0].command {
        Command::Run { heredocs, .. } => {
            assert_eq!(heredocs[0].name, "EOF");
            assert_eq!(heredocs[0].body, "echo one\necho $HOME\n");
            assert!(heredocs[0].expand);
        }
        c => panic!("{c:?}"),
    }
    match &ins[1].command {
        Command::Copy { srcs, dest, heredocs } => {
            assert_eq!(srcs, &vec!["<<-\"CONF\"".to_string()]);
            assert_eq!(dest, "/etc/app.conf");
            assert_eq!(heredocs[0].body, "key=value\n");
            assert!(!heredocs[0].expand);
        }
        c => panic!("{c:?}"),
    }
    assert_eq!(ins[2].line, 9);
    let e = fails("FROM x\nRUN <<EOF\necho never closed\n");
    assert_eq!(e.line, 2);
    assert!(e.message.contains("EOF is not terminated"), "{e}");
}

#[test]
fn env_label_arg_expose_volume() {
    let d = p(
        "FROM x\nENV A=1 B=\"two words\" C=$A\nENV OLD style value\nLABEL \"com.example.k\"=v version=1.0\nARG X\nARG Y=2 Z\nEXPOSE 80 443/udp\nVOLUME [\"/data\", \"/logs\"]\nVOLUME /a /b\n",
    );
    let c: Vec<&Command> = d.stages[0].instructions.iter().map(|i| &i.command).collect();
    assert_eq!(
        c[0],
        &Command::Env(vec![
            ("A".into(), "1".into()),
            ("B".into(), "\"two words\"".into()),
            ("C".into(), "$A".into())
        ])
    );
    assert_eq!(c[1], &Command::Env(vec![("OLD".into(), "style value".into())]));
    assert_eq!(
        c[2],
        &Command::Label(vec![
            ("\"com.example.k\"".into(), "v".into()),
            ("version".into(), "1.0".into())
        ])
    );
    assert_eq!(c[3], &Command::Arg(vec![("X".into(), None)]));
    assert_eq!(
        c[4],
        &Command::Arg(vec![("Y".into(), Some("2".into())), ("Z".into(), None)])
    );
    assert_eq!(c[5], &Command::Expose(vec!["80".into(), "443/udp".into()]));
    assert_eq!(c[6], &Command::Volume(vec!["/data".into(), "/logs".into()]));
    assert_eq!(c[7], &Command::Volume(vec!["/a".into(), "/b".into()]));
}

#[test]
fn healthcheck_onbuild_and_the_rest() {
    let d = p(
        "FROM x\nHEALTHCHECK --interval=5s --retries=3 CMD wget -q localhost\nHEALTHCHECK NONE\nONBUILD RUN make\nUSER app:app\nSTOPSIGNAL SIGTERM\nMAINTAINER someone\nADD --checksum=sha256:abc https://example.invalid/a.tar /x/\nRUN --mount=type=cache,target=/root/.cache --mount=type=tmpfs,target=/t --network=none true\n",
    );
    let ins = &d.stages[0].instructions;
    assert_eq!(ins[0].flag("interval"), Some("5s"));
    assert_eq!(
        ins[0].command,
        Command::Healthcheck(Some(Form::Shell("wget -q localhost".into())))
    );
    assert_eq!(ins[1].command, Command::Healthcheck(None));
    match &ins[2].command {
        Command::Onbuild(inner) => assert!(matches!(inner.command, Command::Run { .. })),
        c => panic!("{c:?}"),
    }
    assert_eq!(ins[3].command, Command::User("app:app".into()));
    assert_eq!(ins[4].command, Command::Stopsignal("SIGTERM".into()));
    assert_eq!(ins[5].command, Command::Maintainer("someone".into()));
    assert_eq!(ins[6].flag("checksum"), Some("sha256:abc"));
    assert_eq!(ins[7].flags_named("mount").count(), 2);
    assert_eq!(ins[7].flag("network"), Some("none"));
}

#[test]
fn errors_name_the_file_and_line() {
    let e = fails("FROM x\n\nFROBNICATE all\n");
    assert_eq!(
        (e.line, e.to_string()),
        (3, "Dockerfile:3: unknown instruction: FROBNICATE".into())
    );
    assert_eq!(
        fails("RUN echo\nFROM x\n").to_string(),
        "Dockerfile:1: RUN comes before the first FROM"
    );
    assert!(fails("# nothing\n").message.contains("no FROM"));
    assert!(
        fails("FROM x\nCOPY --bogus=1 a b\n")
            .message
            .contains("COPY has no --bogus flag")
    );
    assert!(
        fails("FROM x\nCOPY onlyone\n")
            .message
            .contains("at least one source")
    );
    assert!(
        fails("FROM a AS one\nFROM b AS ONE\n")
            .message
            .contains("used twice")
    );
    assert!(fails("FROM x\nRUN\n").message.contains("RUN needs a command"));
    assert!(
        fails("FROM x\nONBUILD FROM y\n")
            .message
            .contains("cannot trigger FROM")
    );
    assert!(fails("FROM x\nSHELL /bin/sh -c\n").message.contains("JSON array"));
    assert!(fails("FROM x y z w\n").message.contains("FROM takes"));
    assert!(fails("# escape=x\nFROM y\n").message.contains("escape must be"));
    assert!(
        fails("FROM x\nARG bad-name\n")
            .message
            .contains("not a valid name")
    );
    assert!(fails("FROM x\nENV A=\"open\n").message.contains("unterminated"));
    assert_eq!(fails("FROM x\nHEALTHCHECK SOMETIMES\n").line, 2);
}
