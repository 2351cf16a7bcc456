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
    assert!(!encode::is_literal("=?x?="));
    assert!(encode::is_literal("[SPAM]"));
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

// ---------------------------------------------------------------- forged fields

/// A header that forges every kind of owned field: the SpamAssassin names (mixed case, folded, empty), an
/// `X-Popguard-*` field; the body repeats one, which must stay.
fn forged_msg(eol: &str) -> Vec<u8> {
    [
        "Return-Path: <x@example.org>",
        "X-Spam-Flag: NO",
        "x-SPAM-status: No, score=-10.0 required=5.0",
        "\ttests=ALL_TRUSTED,",
        " BAYES_00",
        "Subject: cheap pills",
        "X-Popguard-Verdict: ham",
        "X-Spam-Level:",
        "X-Not-Spam-Flag: kept, not an owned name",
        "From: a@example.org",
        "",
        "X-Spam-Flag: NO in the body stays",
        "",
    ]
    .join(eol)
    .into_bytes()
}

/// The header part of `msg` (up to and including the blank line, or all of it).
fn header_of(msg: &[u8]) -> &[u8] {
    match find_header_end(msg, usize::MAX) {
        HeadEnd::Found(n) => &msg[..n],
        _ => msg,
    }
}

/// The names (as written) of the fields in `header` whose name starts with an owned one, continuation lines aside.
fn owned_names(header: &[u8]) -> Vec<String> {
    header
        .split(|&b| b == b'\n')
        .filter(|l| {
            forged::RENAMES
                .iter()
                .any(|(n, _)| l.len() >= n.len() && l[..n.len()].eq_ignore_ascii_case(n))
        })
        .map(|l| text(&l[..l.iter().position(|&b| b == b':').unwrap_or(l.len())]))
        .collect()
}

/// Splits `msg` into chunks ending at `cuts` (sorted), the last one ending the message.
fn chunks<'a>(msg: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
    let mut out = Vec::new();
    let mut from = 0;
    for &c in cuts {
        let c = c.clamp(from, msg.len());
        out.push(&msg[from..c]);
        from = c;
    }
    out.push(&msg[from..]);
    out
}

/// What the relay sends for `msg` arriving in `chunks`: it reads until the header's end is decided (bounded by
/// `cap`), plans the tag from those bytes with `tag`, starts the splice, then streams the rest through the same
/// [`ForgedFields`], holding back what it says. Checks the held bytes stay within [`forged::MAX_HELD`].
fn relay(chunks: &[&[u8]], cap: usize, tag: &dyn Fn(&[u8], HeadEnd) -> TagPlan) -> Vec<u8> {
    let mut next = chunks.iter();
    let mut head = Vec::new();
    let mut done = false;
    let mut read = |buf: &mut Vec<u8>, done: &mut bool| {
        buf.extend_from_slice(next.next().expect("read past the end"));
        *done = next.len() == 0;
    };
    let end = loop {
        match find_header_end(&head, cap) {
            HeadEnd::NeedMore if !done => read(&mut head, &mut done),
            HeadEnd::NeedMore => break HeadEnd::NoBody,
            e => break e,
        }
    };
    let plan = tag(&head, end);
    let mut ff = ForgedFields::new();
    let mut out = plan.start(&mut head, done, &mut ff);
    let mut buf = head;
    loop {
        assert!(buf.len() <= forged::MAX_HELD, "held {}", buf.len());
        if !done {
            read(&mut buf, &mut done);
        }
        let ready = ff.rename(&mut buf, done);
        out.extend_from_slice(&buf[..ready]);
        buf.drain(..ready);
        if done {
            assert!(buf.is_empty(), "everything is sent at the end");
            return out;
        }
    }
}

/// The tag plans the relay makes: `exact` with [`plan`], else [`plan_fixed`] at [`FIXED_TAG_SIZE`].
fn tagger(class: Class, exact: bool, cap: usize) -> impl Fn(&[u8], HeadEnd) -> TagPlan {
    move |head: &[u8], end: HeadEnd| {
        let r = rules();
        let v = TagVerdict {
            class,
            score: 7.25,
            rules: &r,
        };
        let eol = Eol::Crlf;
        if exact {
            plan(head, end, cap, v, &settings(), eol)
        } else {
            plan_fixed(head, end, cap, v, &settings(), eol, FIXED_TAG_SIZE)
        }
    }
}

#[test]
fn renames_keep_the_length_and_leave_no_owned_name() {
    for (from, to) in forged::RENAMES {
        assert_eq!(from.len(), to.len(), "sizes must not change");
        for (owned, _) in forged::RENAMES {
            assert!(
                !to.to_ascii_lowercase()
                    .starts_with(&owned.to_ascii_lowercase())
            );
        }
    }
    let longest = forged::RENAMES.iter().map(|(f, _)| f.len()).max().unwrap();
    assert_eq!(forged::MAX_HELD, longest - 1);
}

#[test]
fn forged_fields_are_renamed_folded_mixed_case_lf_and_crlf() {
    for eol in ["\r\n", "\n"] {
        let mut msg = forged_msg(eol);
        let original = msg.clone();
        assert_eq!(ForgedFields::new().rename(&mut msg, true), msg.len());
        assert_eq!(msg.len(), original.len());
        let want = [
            "Return-Path: <x@example.org>",
            "X-Prev-Flag: NO",
            "X-Prev-status: No, score=-10.0 required=5.0",
            "\ttests=ALL_TRUSTED,",
            " BAYES_00",
            "Subject: cheap pills",
            "X-Prev-Pgd-Verdict: ham",
            "X-Prev-Level:",
            "X-Not-Spam-Flag: kept, not an owned name",
            "From: a@example.org",
            "",
            "X-Spam-Flag: NO in the body stays",
            "",
        ]
        .join(eol);
        assert_eq!(text(&msg), want);
    }
    // Continuation lines are the field above them, whatever they say; an empty header ends at once.
    let mut m = b"To: a\r\n X-Spam-Flag: NO\r\n\r\n".to_vec();
    ForgedFields::new().rename(&mut m, true);
    assert_eq!(m, b"To: a\r\n X-Spam-Flag: NO\r\n\r\n");
    let mut m = b"\r\nX-Spam-Flag: NO\r\n".to_vec();
    ForgedFields::new().rename(&mut m, true);
    assert_eq!(m, b"\r\nX-Spam-Flag: NO\r\n");
    // A whole-header message without a final line end, and the obsolete `Name :` form.
    let mut m = b"X-Spam-Flag : NO\r\nX-SPAM-".to_vec();
    ForgedFields::new().rename(&mut m, true);
    assert_eq!(m, b"X-Prev-Flag : NO\r\nX-Prev-");
}

#[test]
fn tagged_delivery_has_only_the_proxys_fields_and_the_promised_size() {
    for eol in ["\r\n", "\n"] {
        let msg = forged_msg(eol);
        let top_len = header_of(&msg).len();
        for class in [Class::Spam, Class::Unsure, Class::Ham] {
            for exact in [true, false] {
                let label = format!("{eol:?} {class:?} exact={exact}");
                let tag = tagger(class, exact, MAX_TAG_HEADER);
                let p = tag(&msg, head_end(&msg, MAX_TAG_HEADER, true));
                if !exact {
                    assert_eq!(p.added_len(), FIXED_TAG_SIZE, "{label}");
                }
                let out = relay(&[&msg[..]], MAX_TAG_HEADER, &tag);
                assert_eq!(out.len(), msg.len() + p.added_len(), "{label}: LIST size");
                assert!(out.starts_with(&p.top), "{label}");
                let theirs = header_of(&out[p.top.len()..]);
                assert_eq!(owned_names(theirs), Vec::<String>::new(), "{label}");
                assert_eq!(
                    owned_names(&p.top).len(),
                    if class == Class::Spam { 3 } else { 1 },
                    "{label}: the proxy's own fields stay"
                );
                let t = text(&out);
                assert!(t.contains("X-Prev-Flag: NO"), "{label}: {t}");
                assert!(t.contains("X-Prev-status: No, score=-10.0"), "{label}");
                assert!(t.ends_with(&format!("{eol}X-Spam-Flag: NO in the body stays{eol}")));
                if class == Class::Spam {
                    assert!(t.contains("Subject: [SPAM] cheap pills"), "{label}");
                }
                // TOP 0 gets the header alone from the upstream and shows what RETR shows of it.
                let top = relay(&[&msg[..top_len]], MAX_TAG_HEADER, &tag);
                assert_eq!(top, out[..top_len + p.added_len()], "{label}: TOP");
                // The same bytes whatever the upstream's chunks: one cut anywhere, two cuts around every owned name.
                for cut in 0..=msg.len() {
                    assert_eq!(
                        relay(&chunks(&msg, &[cut]), MAX_TAG_HEADER, &tag),
                        out,
                        "{label}: cut at {cut}"
                    );
                }
                for a in 0..top_len {
                    for b in a..(a + 12).min(msg.len()) {
                        assert_eq!(relay(&chunks(&msg, &[a, b]), MAX_TAG_HEADER, &tag), out);
                    }
                }
            }
        }
    }
}

#[test]
fn forged_fields_past_the_header_cap_are_renamed_too() {
    // A header longer than the cap: the tag sees only the first `cap` bytes, the renaming the whole header.
    let cap = 200;
    let mut msg = Vec::new();
    for i in 0..20 {
        msg.extend_from_slice(format!("Received: hop {i} {}\r\n", "y".repeat(30)).as_bytes());
    }
    msg.extend_from_slice(
        b"Subject: late\r\nX-Spam-Flag: NO\r\nX-Spam-Status: No,\r\n score=-10.0\r\n",
    );
    msg.extend_from_slice(b"X-Popguard-Released: yes\r\n\r\nX-Spam-Flag: body\r\n");
    assert_eq!(head_end(&msg, cap, true), HeadEnd::Overlong);
    for exact in [true, false] {
        let tag = tagger(Class::Spam, exact, cap);
        let p = tag(&msg, head_end(&msg, cap, true));
        let out = relay(&[&msg[..]], cap, &tag);
        assert_eq!(out.len(), msg.len() + p.added_len());
        assert_eq!(
            owned_names(header_of(&out[p.top.len()..])),
            Vec::<String>::new()
        );
        assert!(text(&out).ends_with("\r\nX-Prev-Pgd-Released: yes\r\n\r\nX-Spam-Flag: body\r\n"));
        // Streamed in small chunks (the relay's state crosses every boundary), the same bytes.
        for size in 1..=13 {
            let cuts: Vec<usize> = (size..msg.len()).step_by(size).collect();
            assert_eq!(
                relay(&chunks(&msg, &cuts), cap, &tag),
                out,
                "chunks of {size}"
            );
        }
    }
}

#[test]
fn ten_thousand_forged_fields_take_one_pass_and_hold_back_a_few_bytes() {
    const FIELDS: usize = 10_000;
    let mut msg = b"Subject: flood\r\n".to_vec();
    for i in 0..FIELDS {
        msg.extend_from_slice(
            format!("X-Spam-Status: No, score=-{i}.0\r\n\ttests=NONE\r\n").as_bytes(),
        );
    }
    msg.extend_from_slice(b"\r\nbody\r\n");
    let tag = tagger(Class::Spam, true, MAX_TAG_HEADER);
    let p = tag(&msg, head_end(&msg, MAX_TAG_HEADER, true));
    let started = std::time::Instant::now();
    let out = relay(&[&msg[..]], MAX_TAG_HEADER, &tag);
    let whole = started.elapsed();
    assert_eq!(out.len(), msg.len() + p.added_len());
    assert_eq!(text(&out).matches("X-Prev-Status: No").count(), FIELDS);
    assert_eq!(
        owned_names(header_of(&out[p.top.len()..])),
        Vec::<String>::new()
    );
    // Past the buffered head, chunks of 7 bytes: every name is split, the held bytes stay within MAX_HELD (checked
    // in `relay`).
    let cuts: Vec<usize> = (MAX_TAG_HEADER + 1000..msg.len()).step_by(7).collect();
    let started = std::time::Instant::now();
    assert_eq!(relay(&chunks(&msg, &cuts), MAX_TAG_HEADER, &tag), out);
    let chunked = started.elapsed();
    // Linear work: generous bounds for a debug build on a busy machine (measured: a few ms each).
    assert!(
        whole.as_secs() < 2 && chunked.as_secs() < 5,
        "{whole:?} {chunked:?}"
    );
}

#[test]
fn delivered_copy_keeps_the_training_digest_and_tokens_of_the_original() {
    use crate::filter::bayes::message_digest;
    use crate::filter::bayes::tokenize::Tokenizer;
    for eol in ["\r\n", "\n"] {
        let msg = forged_msg(eol);
        for class in [Class::Spam, Class::Ham] {
            let tag = tagger(class, true, MAX_TAG_HEADER);
            let out = relay(&[&msg[..]], MAX_TAG_HEADER, &tag);
            assert_eq!(
                message_digest(&out, "[SPAM]"),
                message_digest(&msg, "[SPAM]")
            );
            if class == Class::Ham {
                // Ham has no Subject prefix: the only differences are the proxy's field and the renamed ones.
                let tokens = |m: &[u8]| Tokenizer::new().tokenize(m, 4000, false).hashes;
                assert_eq!(tokens(&out), tokens(&msg));
            }
        }
    }
}
