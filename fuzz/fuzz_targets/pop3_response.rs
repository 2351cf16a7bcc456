//! Fuzz target: the server status-line parser (`Response::parse`), its encoder, and the CAPA list parser.
#![no_main]

use libfuzzer_sys::fuzz_target;
use popguard::pop3::capability::MAX_CAPABILITIES;
use popguard::pop3::{Capabilities, RESPONSE_LINE_READ_LIMIT, Response, ResponseError, Status};

fuzz_target!(|data: &[u8]| {
    match Response::parse(data) {
        Ok(r) => {
            // Lossy UTF-8 turns one bad byte into a 3-byte replacement character, no worse.
            assert!(r.text.len() <= 3 * data.len());
            let wire = r.to_wire();
            assert!(wire.ends_with(b"\r\n"));
            let line = &wire[..wire.len() - 2];
            assert!(
                !line.contains(&b'\n') && !line.contains(&b'\r') && !line.contains(&0),
                "{wire:?}"
            );
            // Relaying a parsed reply is stable: after one round trip, encoding and parsing change nothing.
            let again = Response::parse(line).expect("our own status line parses");
            assert_eq!(again.status, r.status);
            let wire2 = again.to_wire();
            let thrice = Response::parse(&wire2[..wire2.len() - 2]).expect("re-parses");
            assert_eq!(thrice, again, "unstable round trip of {data:?}");
            if r.status == Status::Continue {
                assert!(r.code.is_none());
            }
        }
        Err(ResponseError::TooLong { .. }) => assert!(data.len() > RESPONSE_LINE_READ_LIMIT),
        // The error quotes at most 40 octets of the line, escaped: it stays short enough to log or relay.
        Err(e) => assert!(e.to_string().len() < 480, "{e}"),
    }

    let caps = Capabilities::parse(data);
    assert!(caps.lines().len() <= MAX_CAPABILITIES);
    for l in caps.lines() {
        assert!(!l.is_empty() && !l.chars().any(char::is_control), "{l:?}");
    }
    assert_eq!(Capabilities::parse(&caps.to_body()), caps);
    let _ = caps.sasl_mechanisms();
    let _ = caps.has("TOP");
});
