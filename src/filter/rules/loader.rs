//! Loading a rule set: reading the files, compiling each layer, applying overrides, collecting every error.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::file::{FileSpec, Located, RuleKind};
use super::sender::SenderGlob;
use super::*;

/// Where the global rule files come from.
enum Source {
    Dir(PathBuf),
    Builtin,
}

/// Collects every error while loading, so `rules check` can list them all.
#[derive(Default)]
pub(super) struct Loader {
    pub(super) errors: Vec<RulesError>,
    /// Also validate `users/*.toml.sample` (for `rules check`; samples never apply to anyone).
    check_samples: bool,
}

impl Loader {
    /// A loader that also validates the `users/*.toml.sample` files.
    pub(super) fn checking_samples() -> Loader {
        Loader {
            check_samples: true,
            ..Loader::default()
        }
    }

    fn invalid(&mut self, file: &str, line: usize, reason: String) {
        self.errors.push(RulesError::Invalid {
            file: file.to_owned(),
            line,
            reason,
        });
    }

    /// Loads everything it can; the engine is only meant to be used when the error list is empty.
    pub(super) fn run(mut self, settings: &RulesSettings) -> (RuleEngine, Vec<RulesError>) {
        let config = &settings.config;
        let source = match &config.dir {
            Some(d) => Source::Dir(d.clone()),
            None if Path::new(DEFAULT_RULES_DIR).is_dir() => {
                Source::Dir(PathBuf::from(DEFAULT_RULES_DIR))
            }
            None => Source::Builtin,
        };
        let texts: Vec<(String, String)> = match &source {
            Source::Dir(d) => self.read_dir(d, true),
            Source::Builtin => builtin::FILES
                .iter()
                .map(|(name, text)| (format!("<built-in>/{name}"), (*text).to_owned()))
                .collect(),
        };
        let mut summary = Summary {
            files: texts.iter().map(|(f, _)| f.clone()).collect(),
            ..Summary::default()
        };
        let specs: Vec<FileSpec> = texts.iter().filter_map(|(f, t)| self.parse(f, t)).collect();

        // Global rule table.
        let mut rules: Vec<RuleInfo> = Vec::new();
        let mut names: HashMap<String, usize> = HashMap::new();
        for spec in &specs {
            for r in &spec.rules {
                self.add_rule(r, &mut rules, &mut names);
            }
        }
        let layer = self.compile_layer(&specs, 0, &rules, &names);
        summary.rules = rules.len();
        summary.meta_rules = rules.iter().filter(|r| r.target.is_none()).count();

        let mut enabled = vec![true; rules.len()];
        let mut scores: Vec<f64> = rules.iter().map(|r| r.score).collect();
        for spec in &specs {
            self.apply_overrides(spec, &names, &mut enabled, &mut scores);
        }
        for (r, s) in rules.iter_mut().zip(&scores) {
            r.score = *s;
        }

        let config_file = "config [rules]";
        let mut whitelist = self.globs(config.whitelist_from.iter().map(|w| Located {
            value: w.clone(),
            file: config_file.to_owned(),
            line: 0,
        }));
        let mut blacklist = self.globs(config.blacklist_from.iter().map(|w| Located {
            value: w.clone(),
            file: config_file.to_owned(),
            line: 0,
        }));
        for spec in &specs {
            whitelist.extend(self.globs(spec.whitelist_from.iter().cloned()));
            blacklist.extend(self.globs(spec.blacklist_from.iter().cloned()));
        }
        for (what, score) in [
            ("whitelist_score", config.whitelist_score),
            ("blacklist_score", config.blacklist_score),
        ] {
            if !score.is_finite() {
                self.invalid(config_file, 0, format!("{what} must be a finite number"));
            }
        }

        // Per-user files: RULES_DIR/users/NAME.toml, overridden by `[users.NAME] rules = PATH`.
        let mut user_paths: Vec<(String, PathBuf)> = Vec::new();
        if let Source::Dir(d) = &source {
            let users_dir = d.join(USERS_SUBDIR);
            if users_dir.is_dir() {
                for path in self.list_toml(&users_dir) {
                    if let Some(stem) = path.file_stem().and_then(|s| s.to_str()) {
                        user_paths.push((stem.to_owned(), path.clone()));
                    }
                }
            }
        }
        for (name, p) in &settings.user_files {
            user_paths.retain(|(n, _)| n != name);
            user_paths.push((name.clone(), p.clone()));
        }
        let mut users = HashMap::new();
        for (user, path) in user_paths {
            let file = path.display().to_string();
            let Some(text) = self.read(&path) else {
                continue;
            };
            let Some(spec) = self.parse(&file, &text) else {
                continue;
            };
            if let Some(u) = self.load_user(&spec, &rules, &names, &enabled, &scores) {
                summary.user_rules += u.rules.len();
                summary.user_files.push((user.clone(), file));
                users.insert(user, u);
            }
        }
        summary.user_files.sort();

        if self.check_samples
            && let Source::Dir(d) = &source
        {
            for path in self.list_ext(&d.join(USERS_SUBDIR), "sample") {
                let file = path.display().to_string();
                if let Some(text) = self.read(&path)
                    && let Some(spec) = self.parse(&file, &text)
                    && self
                        .load_user(&spec, &rules, &names, &enabled, &scores)
                        .is_some()
                {
                    summary.sample_files.push(file);
                }
            }
        }

        let engine = RuleEngine {
            rules,
            enabled,
            layer,
            whitelist,
            blacklist,
            whitelist_score: config.whitelist_score,
            blacklist_score: config.blacklist_score,
            users,
            summary,
        };
        (engine, self.errors)
    }

    fn read(&mut self, path: &Path) -> Option<String> {
        let file = path.display().to_string();
        let meta = std::fs::metadata(path);
        match meta {
            Ok(m) if m.len() > file::MAX_RULE_FILE_BYTES => {
                self.errors.push(RulesError::Read {
                    file,
                    reason: format!(
                        "larger than {} bytes; is this a rule file?",
                        file::MAX_RULE_FILE_BYTES
                    ),
                });
                return None;
            }
            Err(e) => {
                self.errors.push(RulesError::Read {
                    file,
                    reason: format!("cannot read: {e}"),
                });
                return None;
            }
            Ok(_) => {}
        }
        match std::fs::read_to_string(path) {
            Ok(t) => Some(t),
            Err(e) => {
                self.errors.push(RulesError::Read {
                    file,
                    reason: format!("cannot read: {e} (rule files are UTF-8 TOML)"),
                });
                None
            }
        }
    }

    /// `*.toml` files directly in `dir`, sorted by name.
    fn list_toml(&mut self, dir: &Path) -> Vec<PathBuf> {
        self.list_ext(dir, "toml")
    }

    /// Files ending in `.EXT` directly in `dir`, sorted by name (none when `dir` does not exist).
    fn list_ext(&mut self, dir: &Path, ext: &str) -> Vec<PathBuf> {
        if ext == "sample" && !dir.is_dir() {
            return Vec::new();
        }
        let entries = match std::fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) => {
                self.errors.push(RulesError::Read {
                    file: dir.display().to_string(),
                    reason: format!("cannot read rules directory: {e} (set rules.dir or --rules)"),
                });
                return Vec::new();
            }
        };
        let mut paths: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == ext))
            .take(MAX_RULE_FILES + 1)
            .collect();
        if paths.len() > MAX_RULE_FILES {
            self.errors.push(RulesError::Read {
                file: dir.display().to_string(),
                reason: format!(
                    "more than {MAX_RULE_FILES} rule files; is this the right directory?"
                ),
            });
            paths.truncate(MAX_RULE_FILES);
        }
        paths.sort();
        paths
    }

    fn read_dir(&mut self, dir: &Path, _global: bool) -> Vec<(String, String)> {
        self.list_toml(dir)
            .into_iter()
            .filter_map(|p| Some((p.display().to_string(), self.read(&p)?)))
            .collect()
    }

    pub(super) fn parse(&mut self, file: &str, text: &str) -> Option<FileSpec> {
        match file::parse(file, text) {
            Ok(s) => Some(s),
            Err(e) => {
                self.errors.extend(e);
                None
            }
        }
    }

    fn add_rule(
        &mut self,
        r: &file::RuleSpec,
        rules: &mut Vec<RuleInfo>,
        names: &mut HashMap<String, usize>,
    ) {
        let reserved = [
            WHITELIST_FROM,
            BLACKLIST_FROM,
            USER_WHITELIST,
            USER_BLACKLIST,
        ]
        .contains(&r.name.as_str())
            || RESERVED_PREFIXES.iter().any(|p| r.name.starts_with(p));
        if reserved {
            self.invalid(
                &r.file,
                r.line,
                format!("{}: this name is reserved for popguard's own tests", r.name),
            );
        }
        if let Some(&prev) = names.get(&r.name) {
            let p = &rules[prev];
            let reason = format!(
                "{} is already defined at {}:{}; rule names are unique (to replace a rule, disable it and add one \
                 with a new name)",
                r.name, p.file, p.line
            );
            self.invalid(&r.file, r.line, reason);
            return;
        }
        names.insert(r.name.clone(), rules.len());
        rules.push(RuleInfo {
            name: r.name.clone(),
            score: r.score,
            description: r.description.clone(),
            target: match &r.kind {
                RuleKind::Pattern { target, .. } => Some(target.clone()),
                RuleKind::Meta { .. } => None,
            },
            file: r.file.clone(),
            line: r.line,
        });
    }

    /// Compiles the pattern and meta rules of `specs`, whose rules have indices from `base` in `all`.
    fn compile_layer(
        &mut self,
        specs: &[FileSpec],
        base: usize,
        all: &[RuleInfo],
        names: &HashMap<String, usize>,
    ) -> Layer {
        let mut pending = Vec::new();
        let mut metas: Vec<(usize, meta::Expr, &file::RuleSpec)> = Vec::new();
        // Every pattern compiled up front, on every core: compiling the default set is most of popguard's
        // start-up time, and `popguard score` on a few files should not wait for it.
        let texts: Vec<&str> = specs
            .iter()
            .flat_map(|s| &s.rules)
            .filter_map(|r| match &r.kind {
                RuleKind::Pattern { patterns, .. } => Some(patterns),
                RuleKind::Meta { .. } => None,
            })
            .flatten()
            .map(|(text, _)| text.as_str())
            .collect();
        let checked: HashMap<&str, Result<regex::bytes::Regex, String>> = texts
            .iter()
            .copied()
            .zip(compile::par_map(&texts, |t| compile::check_pattern(t)))
            .collect();
        for r in specs.iter().flat_map(|s| &s.rules) {
            // Skip rules that were rejected as duplicates (their index belongs to the first definition).
            let Some(&idx) = names.get(&r.name) else {
                continue;
            };
            if idx < base
                || all
                    .get(idx)
                    .is_none_or(|i| i.file != r.file || i.line != r.line)
            {
                continue;
            }
            match &r.kind {
                RuleKind::Pattern {
                    target,
                    patterns,
                    negate,
                    min_matches,
                } => {
                    let mut compiled = Vec::with_capacity(patterns.len());
                    for (text, line) in patterns {
                        let result = checked
                            .get(text.as_str())
                            .cloned()
                            .unwrap_or_else(|| compile::check_pattern(text));
                        match result {
                            Ok(re) => compiled.push((text.clone(), re)),
                            Err(e) => self.invalid(&r.file, *line, format!("{}: {e}", r.name)),
                        }
                    }
                    if compiled.len() == patterns.len() {
                        pending.push(compile::Pending {
                            rule: idx,
                            target: target.clone(),
                            patterns: compiled,
                            negate: *negate,
                            min_matches: *min_matches,
                        });
                    }
                }
                RuleKind::Meta { expr } => {
                    let mut resolve = |n: &str| {
                        names
                            .get(n)
                            .copied()
                            .ok_or_else(|| format!("unknown rule {n}"))
                    };
                    match meta::parse(expr, &mut resolve) {
                        Ok(e) => metas.push((idx, e, r)),
                        Err(e) => {
                            self.invalid(&r.file, r.value_line, format!("{}: expr: {e}", r.name))
                        }
                    }
                }
            }
        }
        let patterns = match compile::compile(pending) {
            Ok(c) => c,
            Err(e) => {
                let file = specs
                    .first()
                    .and_then(|s| s.rules.first())
                    .map_or("rules", |r| r.file.as_str());
                self.errors.push(RulesError::Read {
                    file: file.to_owned(),
                    reason: e,
                });
                compile::Compiled::default()
            }
        };
        Layer {
            patterns,
            metas: self.order_metas(metas, all),
        }
    }

    /// Orders meta rules so each is evaluated after the meta rules it reads; a cycle is an error.
    fn order_metas(
        &mut self,
        metas: Vec<(usize, meta::Expr, &file::RuleSpec)>,
        all: &[RuleInfo],
    ) -> Vec<(usize, meta::Expr)> {
        let pos: HashMap<usize, usize> = metas
            .iter()
            .enumerate()
            .map(|(k, (i, _, _))| (*i, k))
            .collect();
        // 0 = unvisited, 1 = in progress, 2 = done.
        let mut state = vec![0u8; metas.len()];
        let mut order = Vec::with_capacity(metas.len());
        for start in 0..metas.len() {
            if state[start] != 0 {
                continue;
            }
            // Iterative DFS: (meta position, dependencies left to visit).
            let mut stack: Vec<(usize, Vec<usize>)> = Vec::new();
            let deps = |k: usize| {
                let mut v = Vec::new();
                metas[k].1.rules(&mut v);
                v.into_iter()
                    .filter_map(|i| pos.get(&i).copied())
                    .collect::<Vec<_>>()
            };
            state[start] = 1;
            stack.push((start, deps(start)));
            while let Some((k, pending)) = stack.last_mut() {
                let k = *k;
                if let Some(d) = pending.pop() {
                    match state[d] {
                        0 => {
                            state[d] = 1;
                            let dd = deps(d);
                            stack.push((d, dd));
                        }
                        1 => {
                            let r = metas[k].2;
                            let reason = format!(
                                "{}: meta rules form a cycle through {}; a meta rule cannot depend on itself",
                                r.name, all[metas[d].0].name
                            );
                            self.invalid(&r.file, r.value_line, reason);
                            state[d] = 2;
                        }
                        _ => {}
                    }
                } else {
                    state[k] = 2;
                    order.push(k);
                    stack.pop();
                }
            }
        }
        let mut slots: Vec<Option<(usize, meta::Expr)>> =
            metas.into_iter().map(|(i, e, _)| Some((i, e))).collect();
        order.into_iter().filter_map(|k| slots[k].take()).collect()
    }

    fn apply_overrides(
        &mut self,
        spec: &FileSpec,
        names: &HashMap<String, usize>,
        enabled: &mut [bool],
        scores: &mut [f64],
    ) {
        for d in &spec.disable {
            match names.get(d.value.trim()) {
                Some(&i) => enabled[i] = false,
                None => self.invalid(
                    &d.file,
                    d.line,
                    format!("disable: unknown rule {}", d.value),
                ),
            }
        }
        for s in &spec.scores {
            match names.get(&s.value.0) {
                Some(&i) => scores[i] = s.value.1,
                None => self.invalid(
                    &s.file,
                    s.line,
                    format!("score: unknown rule {}", s.value.0),
                ),
            }
        }
    }

    fn globs(&mut self, entries: impl Iterator<Item = Located<String>>) -> Vec<SenderGlob> {
        let mut out = Vec::new();
        for e in entries {
            match SenderGlob::new(&e.value) {
                Ok(g) => out.push(g),
                Err(reason) => self.invalid(&e.file, e.line, reason),
            }
        }
        out
    }

    fn load_user(
        &mut self,
        spec: &FileSpec,
        global: &[RuleInfo],
        global_names: &HashMap<String, usize>,
        global_enabled: &[bool],
        global_scores: &[f64],
    ) -> Option<UserRules> {
        let before = self.errors.len();
        let mut all: Vec<RuleInfo> = global.to_vec();
        let mut names = global_names.clone();
        for r in &spec.rules {
            self.add_rule(r, &mut all, &mut names);
        }
        let specs = std::slice::from_ref(spec);
        let layer = self.compile_layer(specs, global.len(), &all, &names);
        let mut enabled = global_enabled.to_vec();
        enabled.resize(all.len(), true);
        let mut scores = global_scores.to_vec();
        scores.extend(all[global.len()..].iter().map(|r| r.score));
        self.apply_overrides(spec, &names, &mut enabled, &mut scores);
        let whitelist = self.globs(spec.whitelist_from.iter().cloned());
        let blacklist = self.globs(spec.blacklist_from.iter().cloned());
        if self.errors.len() > before {
            return None;
        }
        let mut own = all.split_off(global.len());
        for (r, s) in own.iter_mut().zip(&scores[global.len()..]) {
            r.score = *s;
        }
        Some(UserRules {
            rules: own,
            layer,
            scores,
            enabled,
            whitelist,
            blacklist,
        })
    }
}
