//! Which stages a build runs, and in what order: a stage depends on the
//! stage its FROM names and on those its `COPY --from` and
//! `RUN --mount=from=` name. Only the stages the target needs are planned;
//! stages of one wave depend only on earlier waves, so they run in parallel.

use crate::dockerfile::{Command, Dockerfile};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("no stage is called {0:?} (--target)")]
    UnknownTarget(String),
    #[error("{file}:{line}: --from={from}: there is no stage {from}")]
    MissingStage { file: String, line: usize, from: String },
    #[error("{file}:{line}: --from={from} names the stage it is in")]
    OwnStage { file: String, line: usize, from: String },
    #[error("{file}: stages depend on each other in a cycle: {0}", .cycle.join(" -> "))]
    Cycle { file: String, cycle: Vec<String> },
}

/// The stages each stage depends on, by index.
pub fn dependencies(df: &Dockerfile) -> Result<Vec<Vec<usize>>, PlanError> {
    let by_name = |name: &str| -> Option<usize> {
        let lower = name.to_ascii_lowercase();
        df.stages
            .iter()
            .position(|s| s.name.as_deref() == Some(lower.as_str()))
    };
    let mut deps = Vec::new();
    for s in &df.stages {
        let mut d: Vec<usize> = Vec::new();
        if let Command::From { image, .. } = &s.from.command
            && let Some(i) = by_name(image).filter(|&i| i < s.index)
        {
            d.push(i);
        }
        for ins in &s.instructions {
            let mut refs: Vec<String> = ins.flags_named("from").map(str::to_string).collect();
            for m in ins.flags_named("mount") {
                refs.extend(
                    m.split(',')
                        .filter_map(|kv| kv.strip_prefix("from="))
                        .map(str::to_string),
                );
            }
            for from in refs {
                if from.contains('$') {
                    continue; // decided once build args are known
                }
                let target = match from.parse::<usize>() {
                    Ok(i) if i < df.stages.len() => Some(i),
                    Ok(_) => {
                        return Err(PlanError::MissingStage {
                            file: df.file.clone(),
                            line: ins.line,
                            from,
                        });
                    }
                    // Not a stage's name: an image.
                    Err(_) => by_name(&from),
                };
                match target {
                    Some(i) if i == s.index => {
                        return Err(PlanError::OwnStage {
                            file: df.file.clone(),
                            line: ins.line,
                            from,
                        });
                    }
                    Some(i) if !d.contains(&i) => d.push(i),
                    _ => {}
                }
            }
        }
        deps.push(d);
    }
    Ok(deps)
}

/// The waves of stages that build `target` (the last stage by default).
pub fn plan(df: &Dockerfile, target: Option<&str>) -> Result<Vec<Vec<usize>>, PlanError> {
    let deps = dependencies(df)?;
    let target = match target {
        Some(t) => {
            df.stage(t)
                .ok_or_else(|| PlanError::UnknownTarget(t.into()))?
                .index
        }
        None => df.stages.len() - 1,
    };
    // Depth-first from the target: 0 unseen, 1 on the path, 2 done.
    let mut state = vec![0u8; deps.len()];
    let mut wave = vec![0usize; deps.len()];
    let mut path = Vec::new();
    visit(df, &deps, target, &mut state, &mut wave, &mut path)?;
    let last = (0..deps.len())
        .filter(|&i| state[i] == 2)
        .map(|i| wave[i])
        .max()
        .unwrap_or(0);
    Ok((0..=last)
        .map(|w| {
            (0..deps.len())
                .filter(|&i| state[i] == 2 && wave[i] == w)
                .collect()
        })
        .collect())
}

fn visit(
    df: &Dockerfile,
    deps: &[Vec<usize>],
    s: usize,
    state: &mut [u8],
    wave: &mut [usize],
    path: &mut Vec<usize>,
) -> Result<(), PlanError> {
    match state[s] {
        2 => return Ok(()),
        1 => {
            let from = path.iter().position(|&p| p == s).unwrap_or(0);
            let name = |i: usize| df.stages[i].name.clone().unwrap_or_else(|| i.to_string());
            let mut cycle: Vec<String> = path[from..].iter().map(|&i| name(i)).collect();
            cycle.push(name(s));
            return Err(PlanError::Cycle {
                file: df.file.clone(),
                cycle,
            });
        }
        _ => {}
    }
    state[s] = 1;
    path.push(s);
    let mut w = 0;
    for &d in &deps[s] {
        visit(df, deps, d, state, wave, path)?;
        w = w.max(wave[d] + 1);
    }
    path.pop();
    state[s] = 2;
    wave[s] = w;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dockerfile::parse;

    fn df(text: &str) -> Dockerfile {
        parse("Dockerfile", text).unwrap()
    }

    #[test]
    fn independent_stages_share_a_wave_and_unneeded_ones_are_skipped() {
        let d = df("FROM busybox AS base\n\
                    FROM base AS tools\nRUN make tools\n\
                    FROM busybox AS assets\nRUN make assets\n\
                    FROM busybox AS unused\nRUN sleep 100\n\
                    FROM base\nCOPY --from=tools /t /t\nCOPY --from=assets /a /a\nRUN --mount=type=bind,from=2,target=/x true\n");
        assert_eq!(plan(&d, None).unwrap(), vec![vec![0, 2], vec![1], vec![4]]);
        assert_eq!(plan(&d, Some("ASSETS")).unwrap(), vec![vec![2]]);
        assert_eq!(plan(&d, Some("tools")).unwrap(), vec![vec![0], vec![1]]);
        assert_eq!(
            plan(&d, Some("nope")),
            Err(PlanError::UnknownTarget("nope".into()))
        );
    }

    #[test]
    fn images_are_not_stages() {
        let d = df("FROM busybox AS a\nFROM a\nCOPY --from=alpine:3 /x /x\n");
        assert_eq!(plan(&d, None).unwrap(), vec![vec![0], vec![1]]);
        // A FROM names only an earlier stage; a later name is an image.
        let d = df("FROM later\nFROM busybox AS later\n");
        assert_eq!(plan(&d, Some("0")).unwrap(), vec![vec![0]]);
    }

    #[test]
    fn bad_references_and_cycles() {
        let d = df("FROM x AS a\nCOPY --from=b /y /y\nFROM x AS b\nCOPY --from=a /z /z\n");
        let e = plan(&d, None).unwrap_err();
        assert_eq!(
            e.to_string(),
            "Dockerfile: stages depend on each other in a cycle: b -> a -> b"
        );
        let d = df("FROM x\nCOPY --from=3 /y /y\n");
        assert_eq!(
            plan(&d, None).unwrap_err().to_string(),
            "Dockerfile:2: --from=3: there is no stage 3"
        );
        let d = df("FROM x AS me\nCOPY --from=me /y /y\n");
        assert!(matches!(plan(&d, None), Err(PlanError::OwnStage { line: 2, .. })));
    }
}
