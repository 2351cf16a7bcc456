//! The rule engine through its public API: loading (and its errors, with file and line), per-user files,
//! sender lists, meta rules, and the shipped default set on crafted spam and ham.

use std::path::{Path, PathBuf};

use popguard::config::{Config, UserConfig};
use popguard::filter::rules::{RuleEngine, RulesError};
use popguard::filter::{Class, Filter, ScoreOptions};
use popguard::message::MessageView;

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    if let Some(parent) = p.parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    std::fs::write(&p, text).unwrap();
    p
}

fn config_for(dir: &Path) -> Config {
    let mut c = Config::default();
    c.rules.dir = Some(dir.to_owned());
    c.data_dir = Some(dir.join("data"));
    c
}

fn names(engine: &RuleEngine, user: Option<&str>, msg: &str) -> Vec<(String, f64)> {
    let view = MessageView::parse(msg.as_bytes());
    engine
        .evaluate(user, &view)
        .into_iter()
        .map(|h| (h.name, h.score))
        .collect()
}

fn errors_of(config: &Config) -> Vec<(String, usize, String)> {
    match RuleEngine::check(&config.rules_settings()) {
        Ok(s) => panic!("expected errors, loaded {s:?}"),
        Err(errs) => errs
            .into_iter()
            .map(|e| match e {
                RulesError::Invalid { file, line, reason } => (file, line, reason),
                RulesError::Read { file, reason } => (file, 0, reason),
                other => panic!("unexpected {other}"),
            })
            .collect(),
    }
}

const BASIC: &str = r#"
[[rule]]
name = "SUBJ_VIAGRA"
target = "subject"
pattern = '(?i)\bviagra\b'
score = 2.5
description = "Subject mentions viagra"

[[rule]]
name = "BODY_CHEAP"
target = "body"
pattern = '(?i)\bcheap\b'
score = 1.0
description = "Says cheap"

[[rule]]
name = "__HAS_HTML"
target = "mime"
pattern = '^text/html'
score = 0
description = "helper"

[[rule]]
name = "CHEAP_HTML"
expr = "BODY_CHEAP && __HAS_HTML"
score = 1.5
description = "Cheap, in HTML"

[[rule]]
name = "NO_DATE"
target = "raw_headers"
pattern = '(?mi)^Date:'
negate = true
score = 0.5
description = "No Date"
"#;

const SPAMMY: &str = "From: Seller <seller@shop.example>\nSubject: Viagra deal\nContent-Type: text/html\n\n<p>cheap cheap</p>\n";
const PLAIN: &str = "From: Friend <friend@example.org>\nDate: Mon, 1 Jan 2024 10:00:00 +0000\nSubject: lunch\n\nSee you at noon.\n";

#[test]
fn the_engine_and_view_can_be_shared_across_sessions() {
    fn shared<T: Send + Sync + 'static>() {}
    shared::<RuleEngine>();
    shared::<MessageView>();
    shared::<Filter>();
}

#[test]
fn loads_a_directory_and_evaluates_pattern_negated_and_meta_rules() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "10-basic.toml", BASIC);
    let engine = RuleEngine::load(&config_for(dir.path()).rules_settings()).unwrap();
    assert_eq!(
        names(&engine, None, SPAMMY),
        [
            ("SUBJ_VIAGRA".to_owned(), 2.5),
            ("BODY_CHEAP".to_owned(), 1.0),
            ("CHEAP_HTML".to_owned(), 1.5),
            ("NO_DATE".to_owned(), 0.5)
        ]
    );
    assert!(names(&engine, None, PLAIN).is_empty());
    let s = engine.summary();
    assert_eq!((s.files.len(), s.rules, s.meta_rules), (1, 5, 1));
}

#[test]
fn per_user_files_add_rescore_and_disable() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "10-basic.toml", BASIC);
    write(
        dir.path(),
        "users/alice.toml",
        r#"
disable = ["NO_DATE"]
[score]
SUBJ_VIAGRA = 0.5
[[rule]]
name = "ALICE_LUNCH"
target = "subject"
pattern = 'lunch'
score = 3.0
description = "Alice hates lunch invitations"
[[rule]]
name = "ALICE_META"
expr = "ALICE_LUNCH || BODY_CHEAP"
score = 0.1
description = "mixes own and global rules"
"#,
    );
    // The sample file is documentation and must never apply to anyone.
    write(
        dir.path(),
        "users/example.toml.sample",
        "this is not toml [",
    );
    let engine = RuleEngine::load(&config_for(dir.path()).rules_settings()).unwrap();

    let alice = names(&engine, Some("alice"), SPAMMY);
    assert!(
        alice.contains(&("SUBJ_VIAGRA".to_owned(), 0.5)),
        "{alice:?}"
    );
    assert!(!alice.iter().any(|(n, _)| n == "NO_DATE"), "{alice:?}");
    assert!(alice.contains(&("ALICE_META".to_owned(), 0.1)), "{alice:?}");
    assert_eq!(
        names(&engine, Some("alice"), PLAIN),
        [
            ("ALICE_LUNCH".to_owned(), 3.0),
            ("ALICE_META".to_owned(), 0.1)
        ]
    );

    // Other users and the anonymous scorer are untouched.
    for user in [None, Some("bob")] {
        let other = names(&engine, user, SPAMMY);
        assert!(
            other.contains(&("SUBJ_VIAGRA".to_owned(), 2.5)),
            "{other:?}"
        );
        assert!(other.iter().any(|(n, _)| n == "NO_DATE"));
        assert!(names(&engine, user, PLAIN).is_empty());
    }
    assert_eq!(engine.summary().user_files.len(), 1);
}

#[test]
fn user_file_path_from_config_overrides_the_users_directory() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "10-basic.toml", BASIC);
    write(
        dir.path(),
        "users/carol.toml",
        "disable = [\"SUBJ_VIAGRA\"]\n",
    );
    let elsewhere = write(
        dir.path(),
        "elsewhere/carol-rules.toml",
        "[score]\nSUBJ_VIAGRA = 4.0\n",
    );
    let mut config = config_for(dir.path());
    config.users.insert(
        "carol".into(),
        UserConfig {
            rules: Some(elsewhere),
            ..UserConfig::default()
        },
    );
    let engine = RuleEngine::load(&config.rules_settings()).unwrap();
    assert!(names(&engine, Some("carol"), SPAMMY).contains(&("SUBJ_VIAGRA".to_owned(), 4.0)));
}

#[test]
fn sender_whitelist_and_blacklist_global_and_per_user() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "10-basic.toml", BASIC);
    write(
        dir.path(),
        "20-lists.toml",
        "blacklist_from = [\"*@shop.example\"]\n",
    );
    write(
        dir.path(),
        "users/dave.toml",
        "whitelist_from = [\"seller@shop.example\"]\nblacklist_from = [\"example.org\"]\n",
    );
    let mut config = config_for(dir.path());
    config.rules.whitelist_from = vec!["friend@example.org".into()];
    let engine = RuleEngine::load(&config.rules_settings()).unwrap();

    let anon = names(&engine, None, SPAMMY);
    assert_eq!(anon[0], ("BLACKLIST_FROM".to_owned(), 100.0));
    assert_eq!(
        names(&engine, None, PLAIN),
        [("WHITELIST_FROM".to_owned(), -100.0)]
    );

    let dave = names(&engine, Some("dave"), SPAMMY);
    assert!(
        dave.contains(&("USER_WHITELIST".to_owned(), -100.0)),
        "{dave:?}"
    );
    let dave_plain = names(&engine, Some("dave"), PLAIN);
    assert!(
        dave_plain.contains(&("USER_BLACKLIST".to_owned(), 100.0)),
        "{dave_plain:?}"
    );

    // No From address: no list can match.
    assert!(
        names(
            &engine,
            None,
            "Date: Mon, 1 Jan 2024 10:00:00 +0000\nSubject: x\n\nbody\n"
        )
        .is_empty()
    );
}

#[test]
fn errors_name_file_line_and_reason() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "10-bad.toml",
        "# comment\n\n[[rule]]\nname = \"BAD_REGEX\"\ntarget = \"body\"\npattern = '(unclosed'\nscore = 1\n\
         description = \"d\"\n",
    );
    write(
        dir.path(),
        "20-huge.toml",
        "[[rule]]\nname = \"HUGE\"\ntarget = \"body\"\n\npattern = '(?:a{1000}){1000}'\nscore = 1\ndescription = \"d\"\n",
    );
    write(
        dir.path(),
        "30-refs.toml",
        "disable = [\"NOPE\"]\n[[rule]]\nname = \"M1\"\nexpr = \"M2 && BAD_REGEX\"\nscore = 1\ndescription = \"d\"\n\
         [[rule]]\nname = \"M2\"\nexpr = \"M1\"\nscore = 1\ndescription = \"d\"\n[[rule]]\nname = \"M3\"\n\
         expr = \"UNKNOWN_RULE\"\nscore = 1\ndescription = \"d\"\n",
    );
    write(
        dir.path(),
        "40-dup.toml",
        "[[rule]]\nname = \"M1\"\ntarget = \"subject\"\npattern = 'x'\nscore = 1\ndescription = \"d\"\n",
    );
    write(
        dir.path(),
        "50-syntax.toml",
        "[[rule]]\nname = \"S\"\nscore = = 1\n",
    );
    let errs = errors_of(&config_for(dir.path()));
    let find = |file: &str, needle: &str| {
        errs.iter()
            .find(|(f, _, r)| f.ends_with(file) && r.contains(needle))
            .unwrap_or_else(|| panic!("no error {file}/{needle} in {errs:#?}"))
            .1
    };
    assert_eq!(
        find("10-bad.toml", "BAD_REGEX: pattern does not compile"),
        6
    );
    assert_eq!(
        find("20-huge.toml", "HUGE: pattern compiles to more than"),
        5
    );
    assert_eq!(find("30-refs.toml", "disable: unknown rule NOPE"), 1);
    assert_eq!(
        find("30-refs.toml", "M3: expr: unknown rule UNKNOWN_RULE"),
        14
    );
    assert!(find("30-refs.toml", "cycle") > 0);
    assert!((1..=2).contains(&find("40-dup.toml", "M1 is already defined at")));
    assert_eq!(find("50-syntax.toml", ""), 3);

    // Loading fails with the first error and a pointer to `rules check`.
    let e = RuleEngine::load(&config_for(dir.path()).rules_settings())
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("more; run `popguard rules check`"), "{e}");
}

#[test]
fn a_missing_configured_directory_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let e = RuleEngine::load(&config_for(&dir.path().join("nope")).rules_settings())
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("cannot read rules directory"), "{e}");
}

#[test]
fn bad_user_file_and_bad_sender_pattern_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "10-basic.toml", BASIC);
    write(dir.path(), "users/erin.toml", "\n[score]\nNOT_A_RULE = 1\n");
    let mut config = config_for(dir.path());
    config.rules.whitelist_from = vec!["two words@x".into()];
    let errs = errors_of(&config);
    assert!(
        errs.iter()
            .any(|(f, l, r)| f.ends_with("erin.toml") && *l == 3 && r.contains("NOT_A_RULE")),
        "{errs:?}"
    );
    assert!(
        errs.iter()
            .any(|(f, _, r)| f.contains("config") && r.contains("white space")),
        "{errs:?}"
    );
}

// The shipped default set.

fn shipped() -> Config {
    let mut c = Config::default();
    c.rules.dir = Some(Path::new(env!("CARGO_MANIFEST_DIR")).join("rules"));
    c
}

#[test]
fn shipped_rules_pass_check_and_the_sample_user_file_is_valid() {
    let summary =
        RuleEngine::check(&shipped().rules_settings()).unwrap_or_else(|e| panic!("{e:#?}"));
    assert!(summary.rules > 50, "{summary:?}");
    assert!(
        summary.user_files.is_empty(),
        "the sample must not be applied: {summary:?}"
    );

    // The sample user file is valid when installed under a real name.
    let dir = tempfile::tempdir().unwrap();
    let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join("rules/users/example.toml.sample");
    let mut config = shipped();
    config.users.insert(
        "example".into(),
        UserConfig {
            rules: Some(sample),
            ..UserConfig::default()
        },
    );
    config.data_dir = Some(dir.path().to_owned());
    let s = RuleEngine::check(&config.rules_settings()).unwrap_or_else(|e| panic!("{e:#?}"));
    assert_eq!(s.user_files.len(), 1);
}

const CRAFTED_SPAM: &str = "Return-Path: <deals4u2983@bulk.example>
Received: from unknown (HELO mailer) ([203.0.113.45]) by mx.example.net with SMTP; Mon, 5 Aug 2002 08:51:39 -0000
From: deals4u2983@bulk.example
To: undisclosed-recipients:;
Subject: FREE CASH NOW!!!                          48213
Date: Mon, 05 Aug 2002 08:51:39 -1700
Message-ID: <0000047b4e66$00005044$0000547b@bulk.example>
X-Mailer: Microsoft Outlook Express 6.00.2600.0000
X-Priority: 1
MIME-Version: 1.0
Content-Type: text/html; charset=\"iso-8859-1\"

<html><body><center><font size=\"+4\" color=\"#ff0000\"><b>MAKE MONEY FROM HOME!!!</b></font></center>
<p>Dear Friend, this is not spam. You opted in to receive offers from our marketing partners.</p>
<p>Earn $5,000 per week working from home. 100% guaranteed, risk-free! Act now!</p>
<p><a href=\"http://198.51.100.23/join\">Click here</a> to start.</p>
<p>To be removed from our list, reply with REMOVE in the subject line.</p>
</body></html>
";

const ORDINARY_HAM: &str = "Return-Path: <alice@example.org>
Received: from mail.example.org (mail.example.org [192.0.2.10]) by mx.example.net; Tue, 3 Sep 2024 10:02:03 +0200
From: Alice Example <alice@example.org>
To: Bob <bob@example.net>
Subject: Re: the build is broken again
Date: Tue, 3 Sep 2024 10:02:00 +0200
Message-ID: <20240903080200.GA1234@example.org>
In-Reply-To: <87zfq1x2y3.fsf@example.net>
References: <87zfq1x2y3.fsf@example.net>
User-Agent: Mutt/2.2.12
MIME-Version: 1.0
Content-Type: text/plain; charset=utf-8

Hi Bob,

> The nightly build fails in the parser tests.
> Did somebody change the fixtures?

Yes, I did. I pushed a fix this morning; please pull and try again.
If it still fails, send me the log and I'll have a look after lunch.

Thanks,
Alice
";

#[test]
fn shipped_rules_flag_crafted_spam_and_pass_ordinary_ham() {
    let filter = Filter::new(&shipped().filter_settings()).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let opts = ScoreOptions {
        network: false,
        explain: false,
    };
    for msg in [CRAFTED_SPAM.to_owned(), CRAFTED_SPAM.replace('\n', "\r\n")] {
        let v = rt.block_on(filter.score(None, msg.as_bytes(), &opts));
        assert_eq!(v.class, Class::Spam, "{v:#?}");
        assert!(v.score >= 5.0, "{v:#?}");
    }
    for msg in [ORDINARY_HAM.to_owned(), ORDINARY_HAM.replace('\n', "\r\n")] {
        let v = rt.block_on(filter.score(None, msg.as_bytes(), &opts));
        assert!(v.score < 3.0, "{v:#?}");
        assert_eq!(v.class, Class::Ham);
    }
}
