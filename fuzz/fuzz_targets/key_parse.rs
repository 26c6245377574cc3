//! `key::parse` never panics; an accepted key is 1–255 printable ASCII characters, not blank;
//! a bare value is the key itself (trimmed), and the structured-field string of an accepted
//! key reads back as the same key.
#![no_main]

use idempotent_runtime::key::{parse, MAX_KEY_LEN};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|raw: &[u8]| {
    let Ok(Some(key)) = parse(raw) else { return };
    assert!(
        (1..=MAX_KEY_LEN).contains(&key.len()),
        "accepted a key of {} bytes",
        key.len()
    );
    assert!(
        key.bytes().all(|b| (0x20..=0x7e).contains(&b)),
        "accepted a non-printable key {key:?}"
    );
    assert!(!key.trim().is_empty(), "accepted a blank key");

    let trimmed = raw.trim_ascii();
    let quoted = trimmed.first() == Some(&b'"');
    if !quoted {
        assert_eq!(key.as_bytes(), trimmed, "a bare key is the trimmed header value");
    }
    assert_eq!(
        parse(structured_string(&key).as_bytes()),
        Ok(Some(key.clone())),
        "the quoted form of {key:?}"
    );
    // The bare form reads the same unless surrounding spaces or quotes would change its meaning.
    let bare_is_ambiguous = key.starts_with([' ', '"']) || key.ends_with(' ');
    if quoted && !bare_is_ambiguous {
        assert_eq!(parse(key.as_bytes()), Ok(Some(key.clone())), "the bare form of {key:?}");
    }
});

/// RFC 8941 §3.3.3: `"` and `\` escaped, in quotes.
fn structured_string(key: &str) -> String {
    let mut out = String::with_capacity(key.len() + 2);
    out.push('"');
    for c in key.chars() {
        if matches!(c, '"' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}
