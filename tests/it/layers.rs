//! The layering of `src/`: which top-level module may use which, checked on the source text, plus the size cap
//! on source files. `lib.rs` describes the same layers in prose; this test keeps the two honest.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Each top-level module and the modules of ours it may name (`crate::X` in the library). The table is a DAG,
/// lowest layers last; `cli` (in the binary) may use anything, so it is not listed.
const LAYERS: &[(&str, &[&str])] = &[
    (
        "config",
        &[
            "proxy", "server", "client", "web", "filter", "store", "tls", "pop3", "message",
            "listener", "secret", "fsutil",
        ],
    ),
    (
        "web",
        &[
            "filter", "store", "message", "listener", "tls", "secret", "fsutil",
        ],
    ),
    (
        "proxy",
        &[
            "pop3", "filter", "store", "message", "tls", "listener", "secret", "fsutil",
        ],
    ),
    (
        "server",
        &["pop3", "tls", "listener", "secret", "message", "fsutil"],
    ),
    ("client", &["pop3", "tls", "secret", "fsutil"]),
    ("store", &["filter", "message", "secret", "fsutil"]),
    ("filter", &["message", "fsutil"]),
    ("pop3", &["tls", "secret"]),
    ("message", &[]),
    ("tls", &["secret"]),
    ("listener", &[]),
    ("secret", &[]),
    ("fsutil", &[]),
];

/// Longest source file allowed under `src/`: a file past this does several jobs and wants splitting.
const MAX_SOURCE_LINES: usize = 800;

fn src_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src/") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a file under `src/` belongs to (`src/proxy/session/mod.rs` -> `proxy`), or `None` for
/// the crate roots and the binary's own `cli`.
fn owner(path: &Path) -> Option<String> {
    let rel = path.strip_prefix(src_dir()).ok()?;
    let first = rel.components().next()?.as_os_str().to_str()?.to_owned();
    let name = first.strip_suffix(".rs").unwrap_or(&first).to_owned();
    match name.as_str() {
        "lib" | "main" | "cli" => None,
        _ => Some(name),
    }
}

/// Source text without `//` comments (doc comments name modules freely).
fn code_of(text: &str) -> String {
    text.lines()
        .map(|l| match l.find("//") {
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every top-level module named after `crate::`, including inside `crate::{a::X, b}` groups.
fn crate_refs(code: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = code;
    while let Some(i) = rest.find("crate::") {
        let before = rest[..i].chars().next_back();
        rest = &rest[i + "crate::".len()..];
        // `$crate::` in macros and `popguard_crate::` style names are not ours.
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '$') {
            continue;
        }
        let rest_trim = rest.trim_start();
        if let Some(group) = rest_trim.strip_prefix('{') {
            let mut depth = 1usize;
            let mut item_start = true;
            let mut ident = String::new();
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' => {
                        depth -= 1;
                        if depth == 0 {
                            break;
                        }
                    }
                    ',' if depth == 1 => {
                        item_start = true;
                        continue;
                    }
                    _ => {}
                }
                if depth == 1 && item_start {
                    if c.is_alphanumeric() || c == '_' {
                        ident.push(c);
                    } else if !ident.is_empty() {
                        out.insert(std::mem::take(&mut ident));
                        item_start = false;
                    }
                }
            }
            if !ident.is_empty() {
                out.insert(ident);
            }
        } else {
            let ident: String = rest_trim
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if !ident.is_empty() {
                out.insert(ident);
            }
        }
    }
    out
}

fn layer_table() -> BTreeMap<&'static str, BTreeSet<&'static str>> {
    LAYERS
        .iter()
        .map(|(m, deps)| (*m, deps.iter().copied().collect()))
        .collect()
}

#[test]
fn the_layer_table_has_no_cycle() {
    let table = layer_table();
    // Kahn's algorithm: a DAG empties completely.
    let mut remaining: BTreeMap<&str, BTreeSet<&str>> = table.clone();
    loop {
        let free: Vec<&str> = remaining
            .iter()
            .filter(|(_, deps)| deps.iter().all(|d| !remaining.contains_key(d)))
            .map(|(m, _)| *m)
            .collect();
        if free.is_empty() {
            break;
        }
        for m in free {
            remaining.remove(m);
        }
    }
    assert!(
        remaining.is_empty(),
        "layer table has a cycle among {:?}",
        remaining.keys()
    );
    for (m, deps) in &table {
        for d in deps {
            assert!(
                table.contains_key(d),
                "{m} may use {d}, which the table does not list"
            );
        }
    }
}

#[test]
fn modules_use_only_the_layers_below_them() {
    let table = layer_table();
    let mut files = Vec::new();
    rust_files(&src_dir(), &mut files);
    files.sort();
    assert!(
        files.len() > 20,
        "found only {} files under src/",
        files.len()
    );
    let mut violations = Vec::new();
    let mut checked = 0;
    for file in &files {
        let Some(module) = owner(file) else { continue };
        let Some(allowed) = table.get(module.as_str()) else {
            violations.push(format!(
                "{}: top-level module `{module}` is not in the layer table (tests/it/layers.rs LAYERS)",
                file.display()
            ));
            continue;
        };
        checked += 1;
        let text = std::fs::read_to_string(file).expect("read source file");
        for used in crate_refs(&code_of(&text)) {
            if used == module || used == "self" || used == "super" {
                continue;
            }
            if !allowed.contains(used.as_str()) {
                violations.push(format!(
                    "{}: `{module}` uses `crate::{used}`, which is not below it in the layers",
                    file.display()
                ));
            }
        }
    }
    assert!(checked > 20, "checked only {checked} files");
    assert!(
        violations.is_empty(),
        "layering violations:\n{}",
        violations.join("\n")
    );
}

#[test]
fn no_source_file_is_too_long() {
    let mut files = Vec::new();
    rust_files(&src_dir(), &mut files);
    let long: Vec<String> = files
        .iter()
        .filter_map(|f| {
            let n = std::fs::read_to_string(f).expect("read").lines().count();
            (n > MAX_SOURCE_LINES).then(|| format!("{}: {n} lines", f.display()))
        })
        .collect();
    assert!(
        long.is_empty(),
        "files over {MAX_SOURCE_LINES} lines:\n{}",
        long.join("\n")
    );
}

#[test]
fn crate_refs_reads_groups_and_paths() {
    let code = "use crate::{config::Config, filter::{Verdict, Class}, pop3};\nlet x = crate::store::f();\n\
                macro_rules! m { () => { $crate::tls::x } }";
    let refs = crate_refs(code);
    let want: BTreeSet<String> = ["config", "filter", "pop3", "store"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(refs, want);
    assert_eq!(code_of("let a = 1; // crate::proxy"), "let a = 1; ");
}
