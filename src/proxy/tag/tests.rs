//! Tag planning and splicing tests: every header shape the tag must survive.

use super::*;

fn settings() -> TagSettings {
    TagSettings {
        prefix: "[SPAM]".into(),
        mark_ham: true,
        required: 5.0,
    }
}

fn rules() -> Vec<String> {
    vec!["SUBJ_ALL_CAPS".into(), "FROM_FREEMAIL".into()]
}

#[test]
fn fixed_plans_add_exactly_the_fixed_size() {
    let long: Vec<String> = (0..60)
        .map(|i| format!("SOME_LONG_RULE_NAME_{i}"))
        .collect();
    let msgs: [&[u8]; 4] = [
        b"From: a@b\r\nSubject: hello\r\n\r\nbody\r\n",
        b"From: a@b\r\n\r\nno subject\r\n",
        b"Subject: =?UTF-8?B?w6nDqcOp?=\r\n\r\nx",
        b"Subject: [SPAM] already\r\n\r\n",
    ];
    for msg in msgs {
        let end = head_end(msg, MAX_TAG_HEADER, true);
        for class in [Class::Ham, Class::Unsure, Class::Spam] {
            for rules in [Vec::new(), rules(), long.clone()] {
                let v = TagVerdict {
                    class,
                    score: 12.5,
                    rules: &rules,
                };
                for s in [
                    settings(),
                    TagSettings {
                        mark_ham: false,
                        ..settings()
                    },
                ] {
                    let p = plan_fixed(msg, end, MAX_TAG_HEADER, v, &s, Eol::Crlf, FIXED_TAG_SIZE);
                    assert_eq!(p.added_len(), FIXED_TAG_SIZE, "{class:?} {}", rules.len());
                    let mut out = Vec::new();
                    p.apply(msg, &mut out);
                    assert_eq!(out.len(), msg.len() + FIXED_TAG_SIZE);
                    let text = String::from_utf8(out).unwrap();
                    assert!(text.starts_with("X-Spam-"), "ham is marked too: {text}");
                    assert!(text.lines().all(|l| l.len() <= RFC5322_MAX_LINE));
                    if rules.len() == 60 {
                        assert!(text.contains("..."), "a cut rule list says so");
                    }
                    if class == Class::Spam && rules.len() < 60 && !text.contains("already") {
                        assert!(text.contains("[SPAM]"), "{text}");
                    }
                }
            }
        }
    }
}

/// Tags a whole message the way the proxy does and checks the size promise.
fn tag_full(msg: &[u8], class: Class, s: &TagSettings, eol: Eol) -> Vec<u8> {
    let r = rules();
    let v = TagVerdict {
        class,
        score: 7.25,
        rules: &r,
    };
    let end = head_end(msg, MAX_TAG_HEADER, true);
    let p = plan(msg, end, MAX_TAG_HEADER, v, s, eol);
    let mut out = Vec::new();
    p.apply(msg, &mut out);
    assert_eq!(out.len(), msg.len() + p.added_len(), "size promise broken");
    out
}

fn text(b: &[u8]) -> String {
    String::from_utf8(b.to_vec()).unwrap()
}

#[test]
fn crlf_spam_gets_fields_and_prefix_and_body_is_untouched() {
    let msg = b"From: a@b\r\nSubject: Hello there\r\n\r\nBody line\r\n";
    let out = text(&tag_full(msg, Class::Spam, &settings(), Eol::Crlf));
    assert!(out.starts_with(
        "X-Spam-Flag: YES\r\nX-Spam-Score: 7.2\r\nX-Spam-Status: Yes, score=7.2 required=5.0 \
         tests=SUBJ_ALL_CAPS,FROM_FREEMAIL\r\nFrom: a@b\r\n"
    ));
    assert!(out.contains("\r\nSubject: [SPAM] Hello there\r\n\r\nBody line\r\n"));
    assert!(out.ends_with("\r\n\r\nBody line\r\n"));
}

#[test]
fn lf_message_keeps_lf() {
    let msg = b"From: a@b\nSubject: Hello\n\nBody\n";
    let eol = Eol::detect(msg);
    assert_eq!(eol, Eol::Lf);
    let out = text(&tag_full(msg, Class::Spam, &settings(), eol));
    assert!(!out.contains('\r'));
    assert!(out.contains("\nSubject: [SPAM] Hello\n\nBody\n"));
    assert!(out.starts_with("X-Spam-Flag: YES\n"));
}

#[test]
fn ham_gets_only_a_status_field_or_nothing() {
    let msg = b"Subject: hi\r\n\r\nb\r\n";
    let out = text(&tag_full(msg, Class::Ham, &settings(), Eol::Crlf));
    assert_eq!(
        out,
        "X-Spam-Status: No, score=7.2 required=5.0 tests=SUBJ_ALL_CAPS,FROM_FREEMAIL\r\nSubject: hi\r\n\r\nb\r\n"
    );
    let quiet = TagSettings {
        mark_ham: false,
        ..settings()
    };
    assert_eq!(tag_full(msg, Class::Ham, &quiet, Eol::Crlf), msg);
    let unsure = text(&tag_full(msg, Class::Unsure, &quiet, Eol::Crlf));
    assert!(unsure.starts_with("X-Spam-Status: Unsure, "));
    assert!(unsure.contains("Subject: hi\r\n"));
}

#[test]
fn folded_subject_gets_prefix_on_first_line() {
    let msg = b"Subject: a long\r\n subject folded\r\nTo: x\r\n\r\n";
    let out = text(&tag_full(msg, Class::Spam, &settings(), Eol::Crlf));
    assert!(out.contains("Subject: [SPAM] a long\r\n subject folded\r\nTo: x\r\n"));
}

#[test]
fn subject_value_starting_on_continuation_line() {
    let msg = b"Subject:\r\n starts below\r\n\r\n";
    let out = text(&tag_full(msg, Class::Spam, &settings(), Eol::Crlf));
    assert!(
        out.contains("Subject: [SPAM]\r\n starts below\r\n"),
        "{out}"
    );
}

#[test]
fn empty_subject_and_no_space_after_colon() {
    let out = text(&tag_full(
        b"Subject:\r\n\r\nx",
        Class::Spam,
        &settings(),
        Eol::Crlf,
    ));
    assert!(out.contains("Subject: [SPAM]\r\n\r\nx"), "{out}");
    let out = text(&tag_full(
        b"Subject:Hi\r\n\r\nx",
        Class::Spam,
        &settings(),
        Eol::Crlf,
    ));
    assert!(out.contains("Subject: [SPAM] Hi\r\n"), "{out}");
    let out = text(&tag_full(
        b"SUBJECT :  Hi\r\n\r\nx",
        Class::Spam,
        &settings(),
        Eol::Crlf,
    ));
    assert!(out.contains("SUBJECT :  [SPAM] Hi\r\n"), "{out}");
}

#[test]
fn encoded_subject_stays_valid_rfc2047() {
    let msg = b"Subject: =?UTF-8?B?w6ljaGFudGlsbG9u?=\r\n\r\n";
    let out = tag_full(msg, Class::Spam, &settings(), Eol::Crlf);
    let s = text(&out);
    assert!(s.contains("Subject: [SPAM] =?UTF-8?B?w6ljaGFudGlsbG9u?=\r\n"));
    let parsed = mail_parser::MessageParser::default().parse(&out).unwrap();
    assert_eq!(parsed.subject(), Some("[SPAM] échantillon"));
}

#[test]
fn non_ascii_prefix_is_encoded_and_keeps_its_gap() {
    let s = TagSettings {
        prefix: "[ПОДОЗР]".into(),
        ..settings()
    };
    for (msg, want) in [
        (
            &b"Subject: =?UTF-8?B?w6ljaGFudGlsbG9u?=\r\n\r\n"[..],
            "[ПОДОЗР] échantillon",
        ),
        (&b"Subject: plain words\r\n\r\n"[..], "[ПОДОЗР] plain words"),
        (&b"From: x\r\n\r\n"[..], "[ПОДОЗР]"),
    ] {
        let out = tag_full(msg, Class::Spam, &s, Eol::Crlf);
        let t = text(&out);
        assert!(t.is_ascii(), "header must stay ASCII: {t}");
        let parsed = mail_parser::MessageParser::default().parse(&out).unwrap();
        assert_eq!(parsed.subject(), Some(want), "{t}");
    }
}

#[test]
fn long_non_ascii_prefix_splits_into_short_words() {
    let long = "é".repeat(40);
    let w = encode_words(&long);
    for word in w.split(' ') {
        assert!(word.len() <= RFC2047_MAX_WORD, "{word}");
    }
    let msg = "Subject: =?UTF-8?Q?x?=\r\n\r\n";
    let s = TagSettings {
        prefix: long.clone(),
        ..settings()
    };
    let out = tag_full(msg.as_bytes(), Class::Spam, &s, Eol::Crlf);
    let parsed = mail_parser::MessageParser::default().parse(&out).unwrap();
    assert_eq!(parsed.subject(), Some(format!("{long} x").as_str()));
}

#[test]
fn prefix_with_encoded_word_syntax_is_encoded() {
    assert!(!prefix_is_literal("=?x?="));
    assert!(prefix_is_literal("[SPAM]"));
}

#[test]
fn no_subject_adds_one() {
    let out = text(&tag_full(
        b"From: a\r\n\r\nbody\r\n",
        Class::Spam,
        &settings(),
        Eol::Crlf,
    ));
    assert!(
        out.contains("\r\nSubject: [SPAM]\r\nFrom: a\r\n\r\nbody\r\n"),
        "{out}"
    );
}

#[test]
fn message_without_body() {
    let msg = b"From: a\r\nSubject: s\r\n";
    assert_eq!(head_end(msg, MAX_TAG_HEADER, true), HeadEnd::NoBody);
    assert_eq!(head_end(msg, MAX_TAG_HEADER, false), HeadEnd::NeedMore);
    let out = text(&tag_full(msg, Class::Spam, &settings(), Eol::Crlf));
    assert!(out.ends_with("From: a\r\nSubject: [SPAM] s\r\n"));
    // Without a final line ending either.
    let out = text(&tag_full(
        b"Subject: s",
        Class::Spam,
        &settings(),
        Eol::Crlf,
    ));
    assert!(out.ends_with("Subject: [SPAM] s"), "{out}");
}

#[test]
fn already_prefixed_subject_is_left_alone() {
    let msg = b"Subject: [SPAM] again\r\n\r\n";
    let r = rules();
    let v = TagVerdict {
        class: Class::Spam,
        score: 9.0,
        rules: &r,
    };
    let p = plan(
        msg,
        head_end(msg, 100, true),
        100,
        v,
        &settings(),
        Eol::Crlf,
    );
    assert_eq!(p.subject, SubjectEdit::None);
}

#[test]
fn subject_in_the_body_is_not_touched() {
    let msg = b"From: a\r\n\r\nSubject: not a header\r\n";
    let out = text(&tag_full(msg, Class::Spam, &settings(), Eol::Crlf));
    assert!(
        out.contains("Subject: [SPAM]\r\nFrom: a\r\n\r\nSubject: not a header\r\n"),
        "{out}"
    );
}

#[test]
fn only_the_first_subject_is_prefixed() {
    let msg = b"Subject: one\r\nSubject: two\r\n\r\n";
    let out = text(&tag_full(msg, Class::Spam, &settings(), Eol::Crlf));
    assert!(out.contains("Subject: [SPAM] one\r\nSubject: two\r\n"));
}

#[test]
fn very_long_subject_line_is_folded_not_overlong() {
    let long = "x".repeat(990);
    let msg = format!("Subject: {long}\r\n\r\n");
    let out = text(&tag_full(
        msg.as_bytes(),
        Class::Spam,
        &settings(),
        Eol::Crlf,
    ));
    for line in out.split("\r\n") {
        assert!(line.len() <= RFC5322_MAX_LINE, "line of {}", line.len());
    }
    assert!(out.contains("Subject: [SPAM]\r\n x"));
}

#[test]
fn many_rules_fold_the_status_field() {
    let many: Vec<String> = (0..30).map(|i| format!("RULE_NUMBER_{i}")).collect();
    let v = TagVerdict {
        class: Class::Spam,
        score: 30.0,
        rules: &many,
    };
    let f = text(&status_fields(v, &settings(), Eol::Crlf));
    for line in f.split("\r\n") {
        assert!(line.len() <= RFC5322_FOLD_WIDTH, "{line}");
    }
    let unfolded = f.replace("\r\n\t", "");
    assert!(unfolded.contains(&many.join(",")));
}

#[test]
fn hostile_rule_names_cannot_inject_header_lines() {
    let evil = vec!["A\r\nBcc: victim@x".to_string(), String::new()];
    let v = TagVerdict {
        class: Class::Spam,
        score: -0.04,
        rules: &evil,
    };
    let f = text(&status_fields(v, &settings(), Eol::Crlf));
    assert_eq!(f.matches("\r\n").count(), 3, "{f}");
    assert!(f.contains("score=0.0"));
    assert!(f.contains("tests=A__Bcc__victim_x,_"));
}

#[test]
fn overlong_header_without_subject_in_cap_adds_no_subject() {
    let mut msg = Vec::new();
    for i in 0..200 {
        msg.extend_from_slice(format!("X-Filler-{i}: {}\r\n", "y".repeat(50)).as_bytes());
    }
    msg.extend_from_slice(b"Subject: late\r\n\r\nbody");
    let cap = 1000;
    let end = head_end(&msg, cap, true);
    assert_eq!(end, HeadEnd::Overlong);
    assert_eq!(
        subject_edit(&msg, end, cap, "[SPAM]", Eol::Crlf),
        SubjectEdit::None
    );
    // The same answer from just the first `cap` bytes: the scan and the RETR agree.
    let end2 = head_end(&msg[..cap], cap, false);
    assert_eq!(end2, HeadEnd::Overlong);
    assert_eq!(
        subject_edit(&msg[..cap], end2, cap, "[SPAM]", Eol::Crlf),
        SubjectEdit::None
    );
}

#[test]
fn plan_from_a_top_prefix_equals_plan_from_the_whole_message() {
    let msg = b"Received: x\r\nSubject: Win money\r\nFrom: f\r\n\r\nline1\r\nline2\r\nline3\r\n";
    let top0 = b"Received: x\r\nSubject: Win money\r\nFrom: f\r\n\r\n";
    let r = rules();
    let v = TagVerdict {
        class: Class::Spam,
        score: 8.0,
        rules: &r,
    };
    let s = settings();
    let a = plan(msg, head_end(msg, 64, true), 64, v, &s, Eol::Crlf);
    let b = plan(top0, head_end(top0, 64, true), 64, v, &s, Eol::Crlf);
    assert_eq!(a, b);
    // Fed in pieces, the first decidable answer is the same.
    for cut in 0..msg.len() {
        match find_header_end(&msg[..cut], 64) {
            HeadEnd::NeedMore => continue,
            end => {
                let c = plan(&msg[..cut], end, 64, v, &s, Eol::Crlf);
                assert_eq!(c, a, "cut at {cut}");
            }
        }
    }
}

#[test]
fn blank_first_line_means_empty_header() {
    assert_eq!(find_header_end(b"\r\nbody", 100), HeadEnd::Found(2));
    assert_eq!(find_header_end(b"\nbody", 100), HeadEnd::Found(1));
    let out = text(&tag_full(b"\r\nbody", Class::Spam, &settings(), Eol::Crlf));
    assert!(out.ends_with("Subject: [SPAM]\r\n\r\nbody"));
}

#[test]
fn eol_detection() {
    assert_eq!(Eol::detect(b"a\r\nb\n"), Eol::Crlf);
    assert_eq!(Eol::detect(b"a\nb\r\n"), Eol::Lf);
    assert_eq!(Eol::detect(b"\n"), Eol::Lf);
    assert_eq!(Eol::detect(b"abc"), Eol::Crlf);
}
