//! The default rule set (`rules/*.toml` in the source tree), compiled into the binary so that popguard filters
//! with its defaults from any working directory. A test keeps this list equal to the `rules/` directory.

/// `(file name, contents)` in load order.
pub const FILES: &[(&str, &str)] = &[
    (
        "10-headers.toml",
        include_str!("../../../rules/10-headers.toml"),
    ),
    (
        "20-subject.toml",
        include_str!("../../../rules/20-subject.toml"),
    ),
    ("30-body.toml", include_str!("../../../rules/30-body.toml")),
    ("40-html.toml", include_str!("../../../rules/40-html.toml")),
    ("50-urls.toml", include_str!("../../../rules/50-urls.toml")),
    ("60-mime.toml", include_str!("../../../rules/60-mime.toml")),
    ("90-meta.toml", include_str!("../../../rules/90-meta.toml")),
];
