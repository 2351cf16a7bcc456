//! Self-made test messages: a varied maildrop that exercises every awkward corner of POP3 transfer, and obviously
//! spammy vs ordinary mail for filter tests. Deterministic: the same `n` always gives the same bytes.
//!
//! Every message has a unique Message-ID and a `#<index>` in its Subject. None contains NUL, a bare CR or a
//! Return-Path field (getmail replaces Return-Path; see `clients`), and no line exceeds [`MAX_LINE`] octets.
//!
//! The headers of [`mailbox`], [`spam`] and [`ham`] are tidy (every header line at most [`MAX_HEADER_LINE`]
//! octets, `Name: value` with one space) because getmail re-serialises headers through Python's `email`
//! package, which refolds longer lines and normalises the space after the colon. All the awkwardness is in the
//! bodies. Untidy headers are in [`odd_headers`], for tests with the other four clients or raw sessions.

/// Longest line in any fixture, line end excluded: past RFC 5322's 998, below Python poplib's 2048-octet cap.
pub const MAX_LINE: usize = 1990;

/// Longest header line in [`mailbox`], [`spam`] and [`ham`]: Python's `email` generator (used by getmail) refolds
/// longer ones.
pub const MAX_HEADER_LINE: usize = 78;

/// Number of message kinds `mailbox` cycles through.
const KINDS: usize = 12;

/// A varied maildrop of `n` messages: plain text, lines starting with `.` and a line that is just `.`, long lines
/// (> 1000 octets), 8-bit UTF-8 with some invalid bytes, a base64 attachment, RFC 2047 subjects, an empty body,
/// HTML in quoted-printable, `From ` lines, a message without a final newline, folded headers with CRLF and a
/// body with LF, and a larger message. Even-numbered messages use CRLF line ends, odd ones LF only.
pub fn mailbox(n: usize) -> Vec<Vec<u8>> {
    (0..n).map(varied).collect()
}

/// Message `i` of [`mailbox`].
pub fn varied(i: usize) -> Vec<u8> {
    let eol = line_end(i);
    let m = Msg::new(i, eol, "fixture");
    match i % KINDS {
        0 => m
            .subject("Plain note")
            .body_text("Hello Bob,\n\nthis is a plain ASCII message.\nNothing special in here.\n\n-- \nAlice\n"),
        1 => m.subject("Dots at line starts").body_text(
            ".leading dot\n..two leading dots\n.\n..\n...\n. space after dot\nmiddle line\n.\nafter a lone dot\nend.\n.",
        ),
        2 => {
            let words = long_line("lorem ipsum dolor sit amet ", 1500);
            let solid = long_line("0123456789abcdef", MAX_LINE);
            let refs: Vec<String> = (0..40).map(|k| format!("<ref-{k}-{i}@popguard.test>")).collect();
            m.subject("Long lines")
                .header(&format!("References: {}", refs.join("\n ")))
                .body_lines(&[b"A line of 1500 octets follows.", words.as_bytes(), solid.as_bytes(), b"short again"])
        }
        3 => m
            .subject("UTF-8 body and a few invalid bytes")
            .header("MIME-Version: 1.0")
            .header("Content-Type: text/plain; charset=utf-8")
            .header("Content-Transfer-Encoding: 8bit")
            .header_bytes(b"X-Raw-8bit: Gr\xc3\xbc\xc3\x9fe aus K\xc3\xb6ln")
            .body_lines(&[
                "Grüße aus Köln — naïve café, 日本語のテキスト, emoji 🦀".as_bytes(),
                b"invalid bytes: \xff\xfe then \xc3\x28 then \x80 end",
                b"latin-1 bytes: caf\xe9 na\xefve",
                b"tab\tseparated\tvalues",
            ]),
        4 => attachment(m, i),
        5 => m
            .raw_subject(&format!("=?UTF-8?B?{}?=", base64(format!("Grüße – 日本 #{i}").as_bytes())))
            .header("Cc: =?ISO-8859-1?Q?J=F6rg_M=FCller?= <joerg@example.org>")
            .header("MIME-Version: 1.0")
            .header("Content-Type: text/plain; charset=us-ascii")
            .body_text("The subject and Cc are RFC 2047 encoded words.\n"),
        6 => m.subject("Empty body").body_lines(&[]),
        7 => m
            .subject("HTML newsletter")
            .header("MIME-Version: 1.0")
            .header("Content-Type: multipart/alternative; boundary=\"alt-b0undary\"")
            .body_text(
                "This is a multi-part message in MIME format.\n\n--alt-b0undary\nContent-Type: text/plain; charset=utf-8\n\
                 Content-Transfer-Encoding: quoted-printable\n\nPlain version with a soft line break that goes on and o=\n\
                 n, an equals sign =3D and caf=C3=A9.\n\n--alt-b0undary\nContent-Type: text/html; charset=utf-8\n\
                 Content-Transfer-Encoding: quoted-printable\n\n<html><body><p style=3D\"color:blue\">HTML version</p>=\n\
                 <p>caf=C3=A9</p></body></html>\n\n--alt-b0undary--\n",
            ),
        8 => m.subject("From lines in the body").body_text(
            "From the desk of Alice:\n>From a quoted line\nFrom: not a header, just body text\nFrom \nend\n",
        ),
        9 => m.subject("No final newline").body_text("the last line has no line terminator").no_final_eol(),
        10 => m
            .subject("Folded headers, mixed line ends")
            .header("Received: from mx.example.net (mx.example.net [192.0.2.10])\n\tby pop.example.org with ESMTP id 4711\n\tfor <bob@example.net>; Mon, 2 Mar 2026 10:00:00 +0000")
            .header("X-Tab: value\twith a tab inside")
            .header("X-Trailing-Space: value   ")
            .header("x-lowercase-name: yes")
            .body_mixed_eol(),
        _ => {
            let line = "All work and no play makes a big message. 0123456789";
            let body: Vec<String> = (0..600).map(|k| format!("{k:04} {line}")).collect();
            m.subject("Larger message (about 34 KB)").body_text(&body.join("\n"))
        }
    }
    .build()
}

fn attachment(m: Msg, i: usize) -> Msg {
    // Pseudo-random bytes so the base64 text is not trivially repetitive.
    let mut x: u32 = 0x1234_5678 ^ i as u32;
    let data: Vec<u8> = (0..3000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x >> 24) as u8
        })
        .collect();
    let encoded = base64(&data);
    let wrapped: Vec<&str> = encoded
        .as_bytes()
        .chunks(76)
        .map(|c| std::str::from_utf8(c).unwrap_or_default())
        .collect();
    m.subject("Report with an attachment")
        .header("MIME-Version: 1.0")
        .header("Content-Type: multipart/mixed; boundary=\"mix-boundary-42\"")
        .body_text(&format!(
            "This is a multi-part message in MIME format.\n\n--mix-boundary-42\nContent-Type: text/plain; charset=us-ascii\n\n\
             Please find the report attached.\n\n--mix-boundary-42\nContent-Type: application/octet-stream; name=\"report-{i}.bin\"\n\
             Content-Transfer-Encoding: base64\nContent-Disposition: attachment; filename=\"report-{i}.bin\"\n\n{}\n\n--mix-boundary-42--\n",
            wrapped.join("\n")
        ))
}

/// `n` messages with untidy but real-world headers: an unfolded 1100-octet field, a 998-octet field, a tab after
/// the colon, an empty field, no space after the colon, an unfolded 200-character Subject and a long raw 8-bit
/// field. getmail refolds these (see the module docs); the other clients and raw sessions must keep them intact.
pub fn odd_headers(n: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| {
            let eol = line_end(i);
            let long_8bit = "Grüße aus Köln ".repeat(12);
            Msg::new(i, eol, "odd")
                .raw_subject(&format!(
                    "{} #{i}",
                    long_line("A very long subject line that nobody folded ", 200)
                ))
                .header(&format!("X-Long-Header: {}", long_line("x", 1100)))
                .header(&format!(
                    "X-Exactly-998: {}",
                    long_line("y", 998 - "X-Exactly-998: ".len())
                ))
                .header("X-Tab:\tvalue after a tab")
                .header("X-Empty:")
                .header("X-No-Space:value")
                .header(&format!("X-Raw-8bit: {long_8bit}"))
                .body_text("The headers above are legal or common, and ugly.\n")
                .build()
        })
        .collect()
}

/// `n` obviously spammy messages: ALL CAPS subjects, "Viagra", "100% FREE", "Click here", "$$$", unsubscribe
/// lines, links to raw IP addresses and look-alike domains, HTML-only bodies, an encoded subject.
pub fn spam(n: usize) -> Vec<Vec<u8>> {
    (0..n).map(spam_message).collect()
}

/// Message `i` of [`spam`].
pub fn spam_message(i: usize) -> Vec<u8> {
    let eol = line_end(i);
    let m = Msg::new(i, eol, "spam").header("X-Mailer: Mass Mailer Pro 9.1");
    let unsubscribe =
        "To unsubscribe from this list click here: http://198.51.100.23/unsub.php?id=8812";
    match i % 6 {
        0 => m
            .from("\"Best Deals\" <deals@cheap-pills-online.example>")
            .subject("CHEAP VIAGRA - 100% FREE SHIPPING!!!")
            .body_text(&format!(
                "BUY VIAGRA NOW at 90% OFF!!!\n100% FREE shipping, no prescription needed.\n\
                 Click here: http://198.51.100.23/pills/viagra.php?ref={i}\nLimited time offer, act now!\n\n{unsubscribe}\n"
            )),
        1 => m
            .from("Lottery Board <winner@intl-lotto-claims.example>")
            .subject("YOU HAVE WON $1,000,000 !!! CLAIM NOW")
            .body_text(&format!(
                "CONGRATULATIONS!!! You are our lucky WINNER of $$$ 1,000,000 USD $$$.\n\
                 Click here to claim your prize: http://claim-prize.example.ru/winner?id={i}\n\
                 Send your bank details to receive the money today. 100% FREE, no risk!\n\n{unsubscribe}\n"
            )),
        2 => m
            .from("Security Team <security@paypa1-verify.example>")
            .subject("URGENT: Your account has been SUSPENDED")
            .body_text(&format!(
                "Dear Customer,\n\nWe detected unusual activity. Your account is SUSPENDED.\n\
                 Click here to verify your identity within 24 hours: http://203.0.113.77/paypal/login.php?case={i}\n\
                 Failure to verify will result in permanent closure.\n\n{unsubscribe}\n"
            )),
        3 => m
            .from("Work From Home <cash@easy-money-now.example>")
            .subject("Make $$$ FAST - Earn $5000 a WEEK from home!!!")
            .header("MIME-Version: 1.0")
            .header("Content-Type: text/html; charset=us-ascii")
            .body_text(&format!(
                "<html><body><h1>EARN $$$ FROM HOME</h1><p>Make $5000 a week with NO experience! 100% FREE to join!</p>\
                 \n<p><a href=\"http://198.51.100.99/join?aff={i}\">Click here</a> to start earning today!!!</p>\
                 \n<p><font size=\"1\">{unsubscribe}</font></p></body></html>\n"
            )),
        4 => m
            .from("Pharmacy <rx@discount-meds.example.ru>")
            .raw_subject(&format!("=?UTF-8?B?{}?=", base64(format!("GRATIS VIAGRA – 100% FREE #{i}").as_bytes())))
            .header("MIME-Version: 1.0")
            .header("Content-Type: text/plain; charset=utf-8")
            .header("Content-Transfer-Encoding: 8bit")
            .body_text(&format!(
                "Cheap Viagra, Cialis, Xanax – lowest prices!!!\n100% FREE consultation. Click here: http://discount-meds.example.ru/?p={i}\n\
                 $$$ Save $$$ on every order!\n\n{unsubscribe}\n"
            )),
        _ => m
            .from("Diet Secrets <slim@weight-loss-miracle.example>")
            .subject("LOSE 30 LBS IN 30 DAYS - GUARANTEED!!!")
            .body_text(&format!(
                "MIRACLE PILL melts fat while you sleep! Doctors HATE this trick!\nOrder now and get a 100% FREE bottle.\n\
                 Click here: http://bit.example/xYz{i} or http://198.51.100.23/diet\n\n{unsubscribe}\n"
            )),
    }
    .build()
}

/// `n` ordinary messages: colleagues, family, a legitimate invoice, a mailing-list digest, replies with
/// References, plain wording without spam markers.
pub fn ham(n: usize) -> Vec<Vec<u8>> {
    (0..n).map(ham_message).collect()
}

/// Message `i` of [`ham`].
pub fn ham_message(i: usize) -> Vec<u8> {
    let eol = line_end(i);
    let m = Msg::new(i, eol, "ham");
    match i % 6 {
        0 => m
            .from("Carol Jones <carol@example.org>")
            .subject("Re: meeting notes for Thursday")
            .header(&format!("In-Reply-To: <meeting-{i}@example.org>"))
            .header(&format!("References: <meeting-{i}@example.org>"))
            .body_text(
                "Hi Bob,\n\nthanks for the notes. I added two points about the release schedule:\n\n\
                 1. Feature freeze moves to the 14th.\n2. Dave will handle the changelog.\n\nSee you on Thursday,\nCarol\n",
            ),
        1 => m
            .from("Mum <mum@example.net>")
            .subject("Photos from the weekend")
            .body_text(
                "Hello dear,\n\nhere are a few words about Sunday: the garden looked lovely and your uncle\n\
                 finally fixed the fence. I will send the pictures when your father finds the cable.\n\nLove,\nMum\n",
            ),
        2 => m
            .from("Acme Hosting Billing <billing@acme-hosting.example.com>")
            .subject("Your invoice 2026-0412")
            .body_text(
                "Dear customer,\n\nyour invoice for March is now available in the customer portal.\n\
                 Amount: EUR 12.00, charged to the card ending in 4242 on 5 April.\n\n\
                 Kind regards,\nAcme Hosting\n",
            ),
        3 => m
            .from("rust-users digest <rust-users@lists.example.org>")
            .subject("rust-users Digest, Vol 42, Issue 7")
            .header("List-Id: <rust-users.lists.example.org>")
            .body_text(
                "Today's Topics:\n\n   1. Lifetimes in async traits (Ferris)\n   2. Re: cargo workspaces and features (Ann)\n\n\
                 ----------------------------------------------------------------------\n\n\
                 Message: 1\nDate: Mon, 2 Mar 2026 08:00:00 +0000\nFrom: Ferris <ferris@example.org>\n\n\
                 Has anyone tried returning impl Future from a trait method?\n",
            ),
        4 => m
            .from("Dave Miller <dave@example.com>")
            .subject("Lunch on Friday?")
            .body_text("Hey,\n\nare you free for lunch on Friday? The new noodle place near the station opened.\n\nDave\n"),
        _ => m
            .from("Erin Walsh <erin@example.org>")
            .subject("Quarterly report draft - comments welcome")
            .header("MIME-Version: 1.0")
            .header("Content-Type: text/plain; charset=utf-8")
            .header("Content-Transfer-Encoding: 8bit")
            .body_text(
                "Hi all,\n\nthe draft of the quarterly report is in the shared folder. Please send comments\n\
                 by Wednesday. Special thanks to Zoë for the numbers.\n\nErin\n",
            ),
    }
    .build()
}

/// A message under construction: header lines, then body lines, joined with one line end.
struct Msg {
    index: usize,
    eol: &'static [u8],
    from: String,
    subject: Option<String>,
    raw_subject: bool,
    headers: Vec<Vec<u8>>,
    body: Vec<Vec<u8>>,
    final_eol: bool,
    mixed_eol: bool,
    kind: &'static str,
}

impl Msg {
    fn new(index: usize, eol: &'static [u8], kind: &'static str) -> Msg {
        Msg {
            index,
            eol,
            from: "Alice Example <alice@example.org>".into(),
            subject: None,
            raw_subject: false,
            headers: Vec::new(),
            body: Vec::new(),
            final_eol: true,
            mixed_eol: false,
            kind,
        }
    }

    fn from(mut self, from: &str) -> Msg {
        self.from = from.into();
        self
    }

    fn subject(mut self, s: &str) -> Msg {
        self.subject = Some(s.into());
        self
    }

    /// A subject used as is (already encoded, index included by the caller).
    fn raw_subject(mut self, s: &str) -> Msg {
        self.subject = Some(s.into());
        self.raw_subject = true;
        self
    }

    /// A header; `\n` inside starts a continuation line.
    fn header(self, h: &str) -> Msg {
        self.header_bytes(h.as_bytes())
    }

    fn header_bytes(mut self, h: &[u8]) -> Msg {
        self.headers.push(h.to_vec());
        self
    }

    fn body_text(self, text: &str) -> Msg {
        let lines: Vec<&[u8]> = text.split('\n').map(str::as_bytes).collect();
        // A trailing "\n" in `text` ends the last line rather than adding an empty one.
        let lines = match lines.split_last() {
            Some((&[], rest)) => rest.to_vec(),
            _ => lines,
        };
        self.body_lines(&lines)
    }

    fn body_lines(mut self, lines: &[&[u8]]) -> Msg {
        self.body = lines.iter().map(|l| l.to_vec()).collect();
        self
    }

    /// Headers with CRLF, body with LF: some mailers really write that.
    fn body_mixed_eol(mut self) -> Msg {
        self.mixed_eol = true;
        self.body_text("headers ended with CRLF,\nthis body uses LF only,\nboth must survive.\n")
    }

    fn no_final_eol(mut self) -> Msg {
        self.final_eol = false;
        self
    }

    fn build(self) -> Vec<u8> {
        let i = self.index;
        let eol = if self.mixed_eol {
            b"\r\n".as_slice()
        } else {
            self.eol
        };
        let body_eol = if self.mixed_eol {
            b"\n".as_slice()
        } else {
            self.eol
        };
        let subject = match (&self.subject, self.raw_subject) {
            (Some(s), true) => s.clone(),
            (Some(s), false) => format!("{s} #{i}"),
            (None, _) => format!("Message #{i}"),
        };
        let mut headers: Vec<Vec<u8>> = vec![
            format!("From: {}", self.from).into_bytes(),
            b"To: Bob <bob@example.net>".to_vec(),
            format!(
                "Date: Mon, 02 Mar 2026 {:02}:{:02}:{:02} +0000",
                8 + i / 3600 % 12,
                i / 60 % 60,
                i % 60
            )
            .into_bytes(),
            format!("Message-ID: <{}-{i}@popguard.test>", self.kind).into_bytes(),
            format!("Subject: {subject}").into_bytes(),
        ];
        headers.extend(self.headers);
        let mut out = Vec::new();
        for h in headers {
            // Continuation lines use the message's line end too.
            for (k, part) in h.split(|&b| b == b'\n').enumerate() {
                if k > 0 {
                    out.extend_from_slice(eol);
                }
                out.extend_from_slice(part);
            }
            out.extend_from_slice(eol);
        }
        out.extend_from_slice(eol);
        let n = self.body.len();
        for (k, line) in self.body.iter().enumerate() {
            out.extend_from_slice(line);
            if k + 1 < n || self.final_eol {
                out.extend_from_slice(body_eol);
            }
        }
        out
    }
}

/// CRLF for even-numbered messages, LF only for odd ones.
fn line_end(i: usize) -> &'static [u8] {
    if i.is_multiple_of(2) { b"\r\n" } else { b"\n" }
}

/// `unit` repeated and cut to exactly `len` octets.
fn long_line(unit: &str, len: usize) -> String {
    unit.repeat(len / unit.len() + 1)[..len].to_string()
}

/// Standard base64 with padding (RFC 4648 §4), no line breaks.
pub fn base64(data: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(data)
}
