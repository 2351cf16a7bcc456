//! Fuzz target: the multi-line body codec. The un-stuffer fed in fuzzer-chosen chunks must agree with one-shot
//! decoding (body and terminator position), and stuff → un-stuff must give the documented normal form.
#![no_main]

use libfuzzer_sys::fuzz_target;
use popguard::pop3::multiline::normalize;
use popguard::pop3::{Stuffer, Unstuffer};
use popguard_fuzz::{chunks, split_pattern};

fuzz_target!(|data: &[u8]| {
    let (pattern, payload) = split_pattern(data);

    // Decode the raw payload as a server's reply body, whole and in chunks.
    let mut whole = Vec::new();
    let end_whole = Unstuffer::new().feed(payload, &mut whole);
    let mut chunked = Vec::new();
    let mut un = Unstuffer::new();
    let mut consumed = 0;
    let mut end_chunked = None;
    for c in chunks(payload, &pattern) {
        match un.feed(c, &mut chunked) {
            Some(n) => {
                assert!(n <= c.len());
                end_chunked = Some(consumed + n);
                break;
            }
            None => consumed += c.len(),
        }
    }
    assert_eq!(chunked, whole, "chunking changed the body");
    assert_eq!(end_chunked, end_whole, "chunking moved the terminator");
    let used = end_whole.unwrap_or(payload.len());
    // A bare LF becomes CRLF; nothing else grows.
    assert!(whole.len() <= 2 * used);
    if let Some(n) = end_whole {
        assert!(payload[..n].ends_with(b"\n"));
        assert!(un.is_done());
        assert_eq!(un.feed(b"more", &mut Vec::new()), Some(0));
    }

    // Encode the payload as a body (in chunks), then decode it: nothing lost, nothing read past the end.
    let mut wire = Vec::new();
    let mut st = Stuffer::new();
    for c in chunks(payload, &pattern) {
        st.stuff(c, &mut wire);
    }
    st.finish(&mut wire);
    assert_eq!(
        wire,
        Stuffer::stuff_all(payload),
        "chunking changed the stuffed form"
    );
    let mut back = Vec::new();
    assert_eq!(Unstuffer::new().feed(&wire, &mut back), Some(wire.len()));
    assert_eq!(back, normalize(payload));
});
