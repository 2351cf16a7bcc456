//! Tests of the tokenizer: token families, MIME and HTML handling, and the caps on hostile input.

use super::*;

fn names(raw: &str) -> Vec<String> {
    let t = Tokenizer::new().tokenize(raw.as_bytes(), DEFAULT_MAX_TOKENS, true);
    let mut v: Vec<String> = t.names.into_values().collect();
    v.sort();
    v
}

fn has(tokens: &[String], t: &str) -> bool {
    tokens.iter().any(|x| x == t)
}

#[test]
fn hashes_match_names() {
    let t = Tokenizer::new().tokenize(b"Subject: Hello World\n\nsome body words\n", 100, true);
    for h in &t.hashes {
        assert_eq!(token_hash(&t.name(*h)), *h, "{}", t.name(*h));
    }
    assert!(
        t.hashes.windows(2).all(|w| w[0] < w[1]),
        "sorted and unique"
    );
}

#[test]
fn header_tokens_carry_their_field() {
    let t = names(
        "From: \"Cheap Meds\" <deals123@pharma.example.biz>\nTo: a@x.org, b@y.org\n\
         Subject: FREE MONEY now!!!\nReceived: from mx.spam.example.com ([192.0.2.7]) by mail.example.net\n\
         X-Mailer: Microsoft Outlook Express 6.00\nX-Spam-Status: Yes, score=99\n\
         X-Prev-Status: No, score=-10.0\n\nbody\n",
    );
    for want in [
        "from:addr:deals123@pharma.example.biz",
        "from:domain:example.biz",
        "from:name:cheap",
        "from:local-has-digits",
        "subject:free",
        "subject:ALL-CAPS",
        "subject:money",
        "subject:!!!",
        "rcvd:ip:192.0.2",
        "rcvd:mx.spam.example.com",
        "rcvd:example.com",
        "x-mailer:outlook",
        "hdr:recipients:2",
    ] {
        assert!(has(&t, want), "missing {want} in {t:?}");
    }
    assert!(
        !t.iter()
            .any(|x| x.contains("x-spam") || x.contains("x-prev")),
        "our own tags are not evidence"
    );
}

#[test]
fn rfc2047_subjects_are_decoded() {
    let t = names("Subject: =?UTF-8?B?R3LDvMOfZSBhdXMgV2llbg==?=\n\nx\n");
    assert!(has(&t, "subject:grüße"), "{t:?}");
    assert!(has(&t, "subject:wien"), "{t:?}");
}

#[test]
fn base64_and_quoted_printable_bodies_are_decoded() {
    let t = names(
        "Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: base64\n\n\
         VmlhZ3JhIGRpc2NvdW50IHBoYXJtYWN5\n",
    );
    assert!(has(&t, "viagra") && has(&t, "pharmacy"), "{t:?}");
    assert!(has(&t, "cte:base64"));
    let t = names(
        "Content-Type: text/plain; charset=iso-8859-1\nContent-Transfer-Encoding: quoted-printable\n\n\
         Caf=E9 cr=E8me soft=\nware\n",
    );
    assert!(
        has(&t, "café") && has(&t, "crème") && has(&t, "software"),
        "{t:?}"
    );
}

#[test]
fn html_gives_text_and_structure() {
    let t = names(
        "Content-Type: text/html\n\n<html><body><p>Click <a href=\"http://www.cheap-pills.example.com/buy/now.html?id=42\">\
         here</a> tod&#97;y</p><div style=\"display: none\">hidden words</div>\
         <font size=1 color=#ffffff>invisible</font><img src=\"http://t.example.org/b.gif\" width=1 height=1>\
         <!-- comment --><script>var notext = 1;</script></body></html>\n",
    );
    for want in [
        "click",
        "here",
        "today",
        "hidden",
        "html:a",
        "html:display-none",
        "html:white-text",
        "html:font-size:1",
        "html:web-bug",
        "html:comments:1",
        "url:www.cheap-pills.example.com",
        "url:example.com",
        "url:buy",
        "proto:http",
    ] {
        assert!(has(&t, want), "missing {want} in {t:?}");
    }
    assert!(
        !has(&t, "notext") && !has(&t, "var"),
        "script is not text: {t:?}"
    );
}

#[test]
fn invalid_utf8_and_binary_do_not_break_anything() {
    let mut raw = b"Subject: caf\xe9 \xff\xfe\n\n".to_vec();
    raw.extend((0..2000u32).map(|i| (i * 7 % 256) as u8));
    let t = Tokenizer::new().tokenize(&raw, DEFAULT_MAX_TOKENS, true);
    assert!(!t.hashes.is_empty());
    assert!(
        t.hashes.len() < 1000,
        "binary garbage is summarised, not tokenised: {}",
        t.hashes.len()
    );
}

#[test]
fn long_runs_are_summarised() {
    let t = names(&format!("Subject: x\n\nstart {} end\n", "Q".repeat(300)));
    assert!(has(&t, "skip:q 90+"), "{t:?}");
    assert!(has(&t, "start") && has(&t, "end"));
}

#[test]
fn a_hundred_thousand_parts_cost_a_bounded_amount() {
    let mut raw = String::from("Content-Type: multipart/mixed; boundary=b\n\n");
    for i in 0..100_000 {
        raw.push_str(&format!("--b\nContent-Type: text/plain\n\nword{i}\n"));
    }
    raw.push_str("--b--\n");
    let t = Tokenizer::new().tokenize(raw.as_bytes(), DEFAULT_MAX_TOKENS, false);
    assert!(t.hashes.len() <= MAX_PARTS * 8, "{}", t.hashes.len());
}

#[test]
fn endless_base64_is_bounded() {
    let mut raw = String::from(
        "Content-Type: application/octet-stream\nContent-Transfer-Encoding: base64\n\n",
    );
    let line = "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWZnaGlqa2xtbm9wcXJzdHV2d3h5ejAxMjM0\n";
    while raw.len() < 8 * MAX_INPUT_BYTES {
        raw.push_str(line);
    }
    let t = Tokenizer::new().tokenize(raw.as_bytes(), DEFAULT_MAX_TOKENS, true);
    assert!(t.hashes.len() < 20, "{:?}", t.names);
    let mut text = String::from("Content-Type: text/plain\n\n");
    for i in 0..(MAX_RAW_TOKENS * 2) {
        text.push_str(&format!("w{i:07} "));
    }
    let t = Tokenizer::new().tokenize(text.as_bytes(), usize::MAX, false);
    assert!(t.hashes.len() <= MAX_RAW_TOKENS);
    let t = Tokenizer::new().tokenize(text.as_bytes(), 100, false);
    assert_eq!(t.hashes.len(), 100);
}

#[test]
fn empty_and_headerless_input() {
    let t = Tokenizer::new().tokenize(b"", 10, false);
    assert!(t.hashes.len() <= 10);
    let t = Tokenizer::new().tokenize(b"just some words without headers", 100, true);
    assert!(!t.hashes.is_empty());
}

#[test]
fn mbox_from_line_is_skipped() {
    let t = names(
        "From someone@example.com Thu Jan  1 00:00:00 2002\nSubject: hi there\n\nbody text\n",
    );
    assert!(has(&t, "subject:there"), "{t:?}");
}
