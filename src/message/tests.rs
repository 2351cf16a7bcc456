//! Unit tests for `MessageView::parse`: decoding, extraction, and bounded work on hostile input.

use super::*;

fn crlf(s: &str) -> Vec<u8> {
    s.replace('\n', "\r\n").into_bytes()
}

/// Every message is checked with LF and CRLF line ends: POP3 delivers CRLF, maildir files often hold LF.
fn both(s: &str) -> [MessageView; 2] {
    [
        MessageView::parse(s.as_bytes()),
        MessageView::parse(&crlf(s)),
    ]
}

#[test]
fn rfc2047_subject_and_from_are_decoded() {
    let msg = "From: =?UTF-8?Q?J=C3=B6rg_M=C3=BCller?= <Joerg@Example.COM>\n\
               Subject: =?iso-8859-1?B?R3L832Uh?= and =?UTF-8?Q?more?=\n\
               X-Custom: =?utf-8?b?w6TDtsO8?=\n\
               \n\
               hi\n";
    for v in both(msg) {
        assert_eq!(v.subject, "Grüße! and more");
        assert_eq!(v.from, "Jörg Müller <Joerg@Example.COM>");
        assert_eq!(v.from_address, "joerg@example.com");
        assert_eq!(v.header_values("x-custom").collect::<Vec<_>>(), ["äöü"]);
        assert!(
            v.raw_headers.contains("=?iso-8859-1?B?"),
            "raw headers stay raw"
        );
        assert!(
            !v.raw_headers.contains("hi"),
            "raw headers end at the blank line"
        );
    }
}

#[test]
fn folded_headers_are_unfolded_in_order() {
    let msg = "Subject: one\n two\nX-A: 1\nX-A: 2\n\nbody\n";
    for v in both(msg) {
        assert_eq!(v.subject, "one two");
        assert_eq!(v.header_values("X-A").collect::<Vec<_>>(), ["1", "2"]);
        assert_eq!(v.headers[0].0, "Subject");
    }
}

#[test]
fn quoted_printable_and_base64_bodies_are_decoded_to_utf8() {
    let msg = "Subject: t\nMIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=\"B\"\n\n\
               --B\nContent-Type: text/plain; charset=iso-8859-1\nContent-Transfer-Encoding: quoted-printable\n\n\
               Gr=FC=DFe, soft=\n break\n\
               --B\nContent-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: base64\n\n\
               RnJlZSBtb25leSDigqwK\n\
               --B--\n";
    for v in both(msg) {
        assert!(
            v.body_text.contains("Grüße, soft break"),
            "{:?}",
            v.body_text
        );
        assert!(v.body_text.contains("Free money €"), "{:?}", v.body_text);
        assert_eq!(
            v.content_types,
            ["multipart/mixed", "text/plain", "text/plain"]
        );
        assert_eq!(
            v.mime_parts[1],
            "text/plain charset=iso-8859-1 encoding=quoted-printable"
        );
        assert_eq!(v.mime_parts[2], "text/plain charset=utf-8 encoding=base64");
    }
}

#[test]
fn html_is_kept_raw_and_converted_to_text_with_links() {
    let msg = "Subject: t\nContent-Type: text/html; charset=us-ascii\n\n\
               <html><head><style>p {color: red}</style></head><body>\
               <p>Click&nbsp;<a href=\"http://Spam.Example/buy?a=1&amp;b=2\">here</a></p>\
               <img src=\"http://img.example/x.gif\"> or visit www.other.example.</body></html>\n";
    for v in both(msg) {
        assert!(v.html.contains("<style>"));
        assert!(
            !v.body_text.contains("color"),
            "style is not text: {:?}",
            v.body_text
        );
        assert!(v.body_text.contains("Click\u{a0}here"), "{:?}", v.body_text);
        assert_eq!(
            v.urls,
            [
                "http://Spam.Example/buy?a=1&b=2",
                "http://img.example/x.gif",
                "www.other.example"
            ]
        );
        assert_eq!(
            v.url_hosts,
            ["spam.example", "img.example", "www.other.example"]
        );
        assert_eq!(v.content_types, ["text/html"]);
    }
}

#[test]
fn attachments_are_named_and_described() {
    let msg = "Subject: t\nContent-Type: multipart/mixed; boundary=b1\n\n--b1\nContent-Type: text/plain\n\nsee attached\n\
               --b1\nContent-Type: application/octet-stream; name=\"invoice.exe\"\n\
               Content-Disposition: attachment; filename=\"invoice.exe\"\nContent-Transfer-Encoding: base64\n\n\
               TVqQAAMAAAAEAAAA\n--b1--\n";
    for v in both(msg) {
        assert_eq!(v.attachment_names, ["invoice.exe"]);
        assert_eq!(
            v.mime_parts[2],
            "application/octet-stream encoding=base64 attachment name=invoice.exe"
        );
        assert!(v.body_text.contains("see attached"));
    }
}

#[test]
fn received_ips_newest_first_v4_and_v6() {
    let msg = "Received: from mx.example (mx.example [192.0.2.10])\n\tby inbound.example (Postfix) with ESMTP id 1;\n\tMon, 1 Jan 2024 00:00:00 +0000\n\
               Received: from sender.example ([IPv6:2001:db8::25])\n\tby mx.example with ESMTP; Mon, 1 Jan 2024 00:00:00 +0000\n\
               Received: from relay.example [198.51.100.7] by mx.example; Mon, 1 Jan 2024 00:00:00 +0000\n\
               Received: from localhost by nowhere; Mon, 1 Jan 2024 00:00:00 +0000\n\
               Received: from dup.example ([192.0.2.10]) by x; Mon, 1 Jan 2024 00:00:00 +0000\n\
               Subject: t\n\nbody\n";
    for v in both(msg) {
        let expect: Vec<IpAddr> = ["192.0.2.10", "2001:db8::25", "198.51.100.7"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        assert_eq!(v.received_ips, expect);
    }
}

#[test]
fn message_without_headers_is_still_text() {
    let v = MessageView::parse(b"just some words and http://bare.example/link\n");
    assert!(v.body_text.contains("just some words"), "{v:?}");
    assert_eq!(v.url_hosts, ["bare.example"]);
    let empty = MessageView::parse(b"");
    assert!(empty.headers.is_empty() && empty.body_text.is_empty());
}

#[test]
fn truncated_prefix_parses() {
    let msg = crlf(
        "Subject: cut\nContent-Type: multipart/alternative; boundary=x\n\n--x\nContent-Type: text/plain\n\nhello wor",
    );
    for end in 0..=msg.len() {
        let v = MessageView::parse(&msg[..end]);
        assert!(v.headers.len() <= 2);
    }
    assert!(MessageView::parse(&msg).body_text.contains("hello wor"));
}

// Hostile shapes: each must finish and keep collections within their caps.

#[test]
fn many_header_lines_are_capped() {
    let mut msg = String::new();
    for i in 0..100_000 {
        msg.push_str(&format!("X-H{i}: v\n"));
    }
    msg.push_str("\nbody\n");
    let v = MessageView::parse(msg.as_bytes());
    assert_eq!(v.headers.len(), MAX_HEADERS);
    assert!(v.raw_headers.len() <= MAX_RAW_HEADERS);
}

#[test]
fn many_received_lines_are_capped() {
    let mut msg = String::new();
    for i in 0..5000u32 {
        msg.push_str(&format!(
            "Received: from h ([10.{}.{}.{}]) by x; Mon, 1 Jan 2024 00:00:00 +0000\n",
            (i >> 16) & 255,
            (i >> 8) & 255,
            i & 255
        ));
    }
    msg.push_str("Subject: t\n\nbody\n");
    let v = MessageView::parse(msg.as_bytes());
    assert_eq!(v.received_ips.len(), MAX_RECEIVED_IPS);
}

#[test]
fn many_mime_parts_are_capped() {
    let mut msg = String::from("Subject: t\nContent-Type: multipart/mixed; boundary=b\n\n");
    for _ in 0..100_000 {
        msg.push_str("--b\n\nx\n");
    }
    msg.push_str("--b--\n");
    let v = MessageView::parse(msg.as_bytes());
    assert_eq!(v.content_types.len(), MAX_PARTS);
    assert_eq!(v.mime_parts.len(), MAX_PARTS);
}

#[test]
fn deep_multipart_nesting_is_bounded() {
    let depth = 20_000;
    let mut msg = String::from("Subject: t\n");
    for i in 0..depth {
        msg.push_str(&format!(
            "Content-Type: multipart/mixed; boundary=\"b{i}\"\n\n--b{i}\n"
        ));
    }
    msg.push_str("Content-Type: text/plain\n\ndeep text\n");
    for i in (0..depth).rev() {
        msg.push_str(&format!("--b{i}--\n"));
    }
    let v = MessageView::parse(msg.as_bytes());
    assert!(v.content_types.len() <= MAX_PARTS);
}

#[test]
fn deep_message_rfc822_nesting_is_bounded() {
    let mut msg = String::new();
    for _ in 0..5000 {
        msg.push_str("Subject: fwd\nContent-Type: message/rfc822\n\n");
    }
    msg.push_str("Subject: inner\n\ninnermost\n");
    let v = MessageView::parse(msg.as_bytes());
    assert!(v.content_types.len() <= MAX_PARTS);
    assert_eq!(v.subject, "fwd");
}

#[test]
fn many_urls_are_capped() {
    let mut msg = String::from("Subject: t\n\n");
    for i in 0..5000 {
        msg.push_str(&format!("http://h{i}.example/ "));
    }
    let v = MessageView::parse(msg.as_bytes());
    assert_eq!(v.urls.len(), MAX_URLS);
    assert_eq!(v.url_hosts.len(), MAX_URLS);
}

#[test]
fn arbitrary_bytes_never_panic() {
    // A cheap deterministic fuzz over MIME-ish fragments: the parse must return for every splice.
    let pieces: [&[u8]; 12] = [
        b"Content-Type: multipart/mixed; boundary=q\n",
        b"--q\n",
        b"--q--\n",
        b"\n",
        b"Content-Transfer-Encoding: base64\n",
        b"Content-Transfer-Encoding: quoted-printable\n",
        b"=?utf-8?B?w6Q=?=",
        b"<a href=\"http://[::1\">",
        b"Received: from [IPv6:::ffff:1.2.3.4] by",
        b"\xff\xfe\x00\r",
        b"Content-Type: message/rfc822\n",
        b"=\n=F",
    ];
    let mut state = 0x2545_f491_u32;
    for _ in 0..3000 {
        let mut msg = Vec::new();
        for _ in 0..24 {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            msg.extend_from_slice(pieces[(state % pieces.len() as u32) as usize]);
        }
        let _ = MessageView::parse(&msg);
    }
}

#[test]
fn unterminated_last_part_is_still_decoded() {
    // What a scanned prefix looks like: the closing boundary never arrives.
    let msg = "Subject: t\nContent-Type: multipart/mixed; boundary=\"B\"\n\n--B\n\
               Content-Type: text/plain; charset=iso-8859-1\nContent-Transfer-Encoding: base64\n\n\
               RnJlZSBtb25leSBmb3IgeW91\n";
    for v in both(msg) {
        assert!(
            v.body_text.contains("Free money for you"),
            "{:?}",
            v.body_text
        );
        assert_eq!(
            v.mime_parts[1],
            "text/plain charset=iso-8859-1 encoding=base64"
        );
    }
    let msg = "Subject: t\nContent-Type: multipart/alternative; boundary=\"B\"\n\n--B\n\
               Content-Type: text/html; charset=utf-8\nContent-Transfer-Encoding: quoted-printable\n\n\
               <p>Caf=C3=A9 <a href=3D\"http://x.example/\">cheap</a>";
    for v in both(msg) {
        assert!(v.body_text.contains("Café cheap"), "{:?}", v.body_text);
        assert!(v.html.contains("<p>Café"), "{:?}", v.html);
        assert_eq!(v.url_hosts, ["x.example"]);
    }
}

#[test]
fn alternatives_are_not_counted_twice() {
    let msg = "Subject: t\nContent-Type: multipart/alternative; boundary=\"B\"\n\n--B\n\
               Content-Type: text/plain\n\nonly once\n--B\nContent-Type: text/html\n\n<p>only once</p>\n--B--\n";
    for v in both(msg) {
        assert_eq!(
            v.body_text.matches("only once").count(),
            1,
            "{:?}",
            v.body_text
        );
        assert!(v.html.contains("<p>only once</p>"));
    }
}

#[test]
fn body_lines_end_in_lf_whatever_the_wire() {
    let msg = "Subject: t\nContent-Transfer-Encoding: base64\n\nb25lDQp0d28NCg==\n";
    for v in both(msg) {
        assert_eq!(v.body_text.trim_end(), "one\ntwo");
    }
}
