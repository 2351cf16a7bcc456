//! Engine internals: the built-in copy of the default set, and load-order details.

use std::path::Path;

use super::file::FileSpec;
use super::*;

#[test]
fn builtin_set_equals_the_rules_directory() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(DEFAULT_RULES_DIR);
    let mut on_disk: Vec<(String, String)> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read_to_string(&p).unwrap(),
            )
        })
        .collect();
    on_disk.sort();
    let built_in: Vec<(String, String)> = builtin::FILES
        .iter()
        .map(|(n, t)| ((*n).to_owned(), (*t).to_owned()))
        .collect();
    assert_eq!(
        on_disk.iter().map(|(n, _)| n).collect::<Vec<_>>(),
        built_in.iter().map(|(n, _)| n).collect::<Vec<_>>(),
        "add new rule files to src/filter/rules/builtin.rs"
    );
    assert!(
        on_disk == built_in,
        "built-in rules differ from rules/ (rebuild)"
    );
}

#[test]
fn builtin_set_loads_when_no_directory_is_configured() {
    // The test runs in the crate root, where rules/ exists; point at the built-in set explicitly instead.
    let mut loader = Loader::default();
    let specs: Vec<FileSpec> = builtin::FILES
        .iter()
        .filter_map(|(n, t)| loader.parse(n, t))
        .collect();
    assert!(loader.errors.is_empty(), "{:?}", loader.errors);
    assert!(specs.iter().map(|s| s.rules.len()).sum::<usize>() > 0);
}
