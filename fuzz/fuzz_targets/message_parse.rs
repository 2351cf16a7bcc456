//! Fuzz target: `MessageView::parse`, the MIME view every rule reads (mail-parser, RFC 2047, charsets, HTML to
//! text, URL and Received extraction), on arbitrary bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use popguard::message::{
    MAX_ATTACHMENT_NAMES, MAX_HEADERS, MAX_PARTS, MAX_RECEIVED_IPS, MAX_TEXT, MAX_URLS, MessageView,
};

fuzz_target!(|data: &[u8]| {
    let v = MessageView::parse(data);
    assert!(v.headers.len() <= MAX_HEADERS);
    assert!(v.urls.len() <= MAX_URLS);
    assert!(
        v.url_hosts.len() <= v.urls.len(),
        "hosts come from the URLs"
    );
    for h in &v.url_hosts {
        assert!(
            !h.bytes().any(|b| b.is_ascii_uppercase()),
            "hosts are lower-cased: {h:?}"
        );
    }
    let mut hosts = v.url_hosts.clone();
    hosts.sort();
    hosts.dedup();
    assert_eq!(hosts.len(), v.url_hosts.len(), "hosts are de-duplicated");
    assert!(v.received_ips.len() <= MAX_RECEIVED_IPS);
    assert!(v.content_types.len() <= MAX_PARTS);
    assert!(v.attachment_names.len() <= MAX_ATTACHMENT_NAMES);
    // Decoding never grows text past its cap (plus one multi-byte character cut at the boundary).
    assert!(v.body_text.len() <= MAX_TEXT + 4, "{}", v.body_text.len());
    assert!(v.html.len() <= MAX_TEXT + 4, "{}", v.html.len());
    assert!(
        !v.from_address.bytes().any(|b| b.is_ascii_uppercase()),
        "{:?}",
        v.from_address
    );
    // Parsing is a pure function of the bytes.
    let again = MessageView::parse(data);
    assert_eq!(format!("{again:?}"), format!("{v:?}"));
});
