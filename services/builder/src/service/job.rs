//! A build: the plan's waves, each stage from its FROM (and ONBUILD triggers) through its instructions, cached or run.

use super::*;

impl Job {
    pub(super) async fn run(&self, df: &Dockerfile, waves: Vec<Vec<usize>>) -> Result<(), Error> {
        let mut expiry = std::collections::HashMap::new();
        expiry.insert(
            molde_common::labels::GC_EXPIRE.to_string(),
            rfc3339(now_secs() + 24 * 3600),
        );
        let mut leases = LeasesClient::new(self.svc.content.clone());
        leases
            .create(self.plain(CreateLease {
                id: self.lease.clone(),
                labels: expiry,
            }))
            .await?;
        // The cache's own lease, without expiry; there already, most times.
        match leases
            .create(self.plain(CreateLease {
                id: CACHE_LEASE.into(),
                labels: Default::default(),
            }))
            .await
        {
            Ok(_) => {}
            Err(s) if s.code() == tonic::Code::AlreadyExists => {}
            Err(s) => return Err(s.into()),
        }
        // Values of the ARGs before the first FROM, over the platform ones.
        let mut global: HashMap<String, Option<String>> = platform_args()
            .into_iter()
            .map(|(k, v)| (k.to_string(), Some(v)))
            .collect();
        for ins in &df.global_args {
            if let Command::Arg(list) = &ins.command {
                for (k, v) in list {
                    let value = match self.req.build_args.get(k) {
                        Some(b) => Some(b.clone()),
                        None => match v {
                            Some(d) => Some(
                                crate::expand::expand(d, df.escape, &|n| global.get(n).cloned().flatten())
                                    .map_err(|e| at(df, ins, e))?,
                            ),
                            None => global.get(k).cloned().flatten(),
                        },
                    };
                    global.insert(k.clone(), value);
                }
            }
        }
        let mut last = None;
        for wave in waves {
            // Stages of one wave need only earlier waves: they run at once.
            let results =
                futures::future::try_join_all(wave.iter().map(|&s| self.stage(df, s, &global))).await?;
            for (&s, built) in wave.iter().zip(results) {
                self.done
                    .lock()
                    .map_err(|_| Error::Internal("build state poisoned".into()))?
                    .insert(s, built);
                last = Some(s);
            }
        }
        let built = self
            .built(last.unwrap_or(0))
            .ok_or_else(|| Error::Internal("no stage was built".into()))?;
        self.settle().await;
        self.image(built).await
    }

    /// The ONBUILD triggers a base image carries, as instructions of the
    /// child stage (reported at its FROM line).
    pub(super) fn triggers(
        &self,
        df: &Dockerfile,
        from: &Instruction,
        config: &Value,
    ) -> Result<Vec<Instruction>, Error> {
        let mut out = Vec::new();
        for t in config["config"]["OnBuild"].as_array().into_iter().flatten() {
            let text = t.as_str().unwrap_or_default();
            let parsed = dockerfile::parse(&df.file, &format!("FROM scratch\n{text}\n"))
                .map_err(|e| at(df, from, format!("ONBUILD trigger {text:?}: {e}")))?;
            let Some(mut ins) = parsed
                .stages
                .first()
                .and_then(|s| s.instructions.first())
                .cloned()
            else {
                continue;
            };
            if matches!(ins.command, Command::Onbuild(_) | Command::Maintainer(_)) {
                return Err(at(
                    df,
                    from,
                    format!("ONBUILD trigger {text:?}: not allowed as a trigger"),
                ));
            }
            ins.line = from.line;
            out.push(ins);
        }
        Ok(out)
    }

    pub(super) async fn stage(
        &self,
        df: &Dockerfile,
        s: usize,
        global: &HashMap<String, Option<String>>,
    ) -> Result<Built, Error> {
        let stage = &df.stages[s];
        let label = stage.name.clone().unwrap_or_else(|| s.to_string());
        let Command::From { image, .. } = &stage.from.command else {
            return Err(Error::Internal("a stage without FROM".into()));
        };
        let lookup = |n: &str| global.get(n).cloned().flatten();
        let image = crate::expand::expand(image, df.escape, &lookup).map_err(|e| at(df, &stage.from, e))?;
        if let Some(p) = stage.from.flag("platform") {
            let p = crate::expand::expand(p, df.escape, &lookup).map_err(|e| at(df, &stage.from, e))?;
            let host = format!("linux/{}", molde_common::host_arch());
            if p != host {
                return Err(at(
                    df,
                    &stage.from,
                    format!("FROM --platform={p}: molde builds for this host's platform only ({host})"),
                ));
            }
        }
        let step = self.begin(&label, &stage.from).await;
        let started = Instant::now();
        let mut built = if image == "scratch" {
            Built {
                config: json!({ "architecture": molde_common::host_arch(), "os": "linux", "config": {} }),
                layers: Vec::new(),
                top: String::new(),
            }
        } else if let Some(prev) = df
            .stage(&image)
            .filter(|p| p.index < s && p.name.is_some())
            .and_then(|p| self.built(p.index))
        {
            prev
        } else {
            self.base(&image, self.req.pull)
                .await
                .map_err(|e| at(df, &stage.from, e.message()))?
        };
        self.finish(step, false, started).await;
        let mut instructions = self.triggers(df, &stage.from, &built.config)?;
        instructions.extend(stage.instructions.iter().cloned());
        let mut base_config = built.config["config"].as_object().cloned().unwrap_or_default();
        // Triggers run once, in the child; they are not inherited further.
        base_config.remove("OnBuild");
        let mut state = StageState::new(base_config, df.escape);
        let build_args: HashMap<String, String> = self.req.build_args.clone().into_iter().collect();
        let mut key = cache::step_key("", &format!("FROM {image}"), &[], Some(&built.top));
        for ins in &instructions {
            let step = self.begin(&label, ins).await;
            let started = Instant::now();
            // Again here: ONBUILD triggers come from the base image.
            self.granted.check(ins).map_err(|e| at(df, ins, e))?;
            let what = state
                .apply(ins, &build_args, global)
                .map_err(|e| at(df, ins, e))?;
            let mounts = match &what {
                Step::Run { cwd, .. } => ins
                    .flags_named("mount")
                    .map(|m| crate::mounts::parse(m, cwd))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| at(df, ins, e))?,
                _ => Vec::new(),
            };
            // The step's key: its parent's, what it does once expanded (a
            // RUN's argv, env, directory and user), its flags and its inputs.
            let inputs = self.inputs(df, ins, &what, &mounts).await?;
            let text = format!(
                "{:?}|{:?}|{}",
                ins.flags,
                state.key_of(&what),
                self.req.compression
            );
            key = cache::step_key(&key, &text, &[], inputs.as_deref());
            tracing::debug!(step = %ins.original, key = %key, "build step");
            if what != Step::Metadata
                && !self.req.no_cache
                && let Some(layer) = self.cached_anywhere(&key, &built.top).await
            {
                built = add_layer(built, layer);
                self.finish(step, true, started).await;
                continue;
            }
            match what {
                Step::Metadata => {}
                Step::Run {
                    argv,
                    mut env,
                    cwd,
                    user,
                    script,
                } => {
                    molde_common::env::default_path(&mut env);
                    let network = match ins.flag("network") {
                        None | Some("default") => "bridge",
                        Some("none") => "none",
                        Some("host") => "host",
                        Some(other) => {
                            return Err(at(
                                df,
                                ins,
                                format!("RUN --network={other}: expected default, none or host"),
                            ));
                        }
                    };
                    let run = RunStep {
                        argv,
                        env,
                        cwd,
                        user,
                        network,
                        script,
                        mounts,
                    };
                    let layer = self.run_step(df, ins, step, &built.top, run).await?;
                    self.remember(&key, &layer).await;
                    built = add_layer(built, layer);
                }
                Step::Copy { srcs, dest, inline } => {
                    // --link: the files make a layer of their own, cached
                    // whatever lies below, then stacked on the stage.
                    // (--chown by name needs the stage's /etc/passwd.)
                    let link = ins.flag("link").is_some_and(|v| v != "false")
                        && ins
                            .flag("chown")
                            .is_none_or(|c| c.split(':').all(|p| p.parse::<u32>().is_ok()));
                    if link {
                        let alone_key = cache::step_key("link", &text, &[], inputs.as_deref());
                        let cached = if self.req.no_cache {
                            None
                        } else {
                            self.cached(&alone_key).await
                        };
                        let hit = cached.is_some();
                        let alone = match cached {
                            Some(l) => l,
                            None => {
                                let l = self.copy_step(df, ins, "", srcs, dest, inline).await?;
                                self.remember(&alone_key, &l).await;
                                l
                            }
                        };
                        let layer = self.rebase(alone, &built.top).await?;
                        self.remember(&key, &layer).await;
                        built = add_layer(built, layer);
                        self.finish(step, hit, started).await;
                        continue;
                    }
                    let layer = self.copy_step(df, ins, &built.top, srcs, dest, inline).await?;
                    self.remember(&key, &layer).await;
                    built = add_layer(built, layer);
                }
            }
            self.finish(step, false, started).await;
        }
        // The stage's config and history.
        let mut config = built.config.clone();
        config["config"] = Value::Object(state.config.clone());
        if let Some(a) = &state.author {
            config["author"] = json!(a);
        }
        let mut history = config["history"].as_array().cloned().unwrap_or_default();
        // Layer entries of this stage line up with the layers it added.
        history.extend(state.history.iter().cloned());
        config["history"] = json!(history);
        built.config = config;
        Ok(built)
    }

    pub(super) async fn begin(&self, stage: &str, ins: &Instruction) -> u32 {
        let step = self.step.fetch_add(1, Ordering::Relaxed) + 1;
        self.send(Event::Started(api::StepStarted {
            step,
            stage: stage.to_string(),
            instruction: ins.original.clone(),
            line: ins.line as u32,
        }))
        .await;
        step
    }

    pub(super) async fn finish(&self, step: u32, cached: bool, started: Instant) {
        if cached {
            molde_common::metrics::BUILD_STEPS_CACHED.add(1);
        } else {
            molde_common::metrics::BUILD_STEPS_RUN.add(1);
        }
        self.send(Event::Done(api::StepDone {
            step,
            cached,
            micros: started.elapsed().as_micros() as u64,
        }))
        .await;
    }
}
