//! `Fingerprint::of` never panics, in either mode. In JSON mode, a body and the same JSON
//! written with its object keys in another order and other whitespace are the same request:
//!
//! - for any input that parses as JSON, its re-serialisations (compact with sorted keys, and
//!   with keys in reverse order and whitespace between every token) fingerprint alike, and as
//!   the input itself when every number in it is an integer that serde_json holds exactly
//!   (re-serialising rewrites other numbers: `1E2` becomes `100.0`, and serde_json's default
//!   float parsing does not always read its own output back to the same `f64`);
//! - for a JSON document built from the input (`arbitrary`), two renderings that differ only in
//!   key order and whitespace fingerprint alike.
#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use idempotent_runtime::{Fingerprint, FingerprintMode};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let json = |body: &[u8]| Fingerprint::of("POST", "/orders", "a=1", body, FingerprintMode::Json);
    let of_input = json(data);

    if let Ok(value) = serde_json::from_slice::<Value>(data) {
        let compact = serde_json::to_vec(&value).expect("a parsed value serialises");
        let mut spaced = Vec::new();
        write_json(
            &mut spaced,
            &value,
            Layout {
                reverse_keys: true,
                space: b" \n\t\r",
            },
        );
        assert_eq!(
            json(&spaced),
            json(&compact),
            "reversed keys and whitespace changed the fingerprint of {value}"
        );
        if exact_numbers(&value) {
            assert_eq!(
                json(&compact),
                of_input,
                "re-serialisation changed the fingerprint of {value}"
            );
        }
    } else {
        let bytes = Fingerprint::of("POST", "/orders", "a=1", data, FingerprintMode::Body);
        assert_eq!(of_input, bytes, "a body that is not JSON is hashed as bytes");
    }

    if let Ok(document) = Document::arbitrary(&mut Unstructured::new(data)) {
        let value = document.to_value(0);
        let (mut first, mut second) = (Vec::new(), Vec::new());
        write_json(
            &mut first,
            &value,
            Layout {
                reverse_keys: false,
                space: b"",
            },
        );
        write_json(
            &mut second,
            &value,
            Layout {
                reverse_keys: true,
                space: b"\n  ",
            },
        );
        assert_eq!(
            json(&first),
            json(&second),
            "key order and whitespace changed the fingerprint of {value}"
        );
    }
});

/// Whether every number is an integer held as `i64` or `u64`: serde_json writes those back exactly.
fn exact_numbers(value: &Value) -> bool {
    match value {
        Value::Number(n) => !n.is_f64(),
        Value::Array(items) => items.iter().all(exact_numbers),
        Value::Object(map) => map.values().all(exact_numbers),
        _ => true,
    }
}

/// Deeper documents are cut off: serde_json refuses to parse more than 128 levels.
const MAX_DEPTH: usize = 32;

/// A JSON document with finite numbers, built from fuzz input.
#[derive(Debug, Arbitrary)]
enum Document {
    Null,
    Bool(bool),
    Integer(i64),
    Unsigned(u64),
    Float(f64),
    Text(String),
    Array(Vec<Document>),
    Object(Vec<(String, Document)>),
}

impl Document {
    fn to_value(&self, depth: usize) -> Value {
        let nested = |document: &Self| document.to_value(depth + 1);
        match self {
            _ if depth > MAX_DEPTH => Value::Null,
            Self::Null => Value::Null,
            Self::Bool(b) => Value::Bool(*b),
            Self::Integer(n) => Value::from(*n),
            Self::Unsigned(n) => Value::from(*n),
            // Not finite: JSON has no such number.
            Self::Float(x) => serde_json::Number::from_f64(*x).map_or(Value::Null, Value::Number),
            Self::Text(s) => Value::String(s.clone()),
            Self::Array(items) => Value::Array(items.iter().map(nested).collect()),
            Self::Object(entries) => Value::Object(entries.iter().map(|(k, v)| (k.clone(), nested(v))).collect()),
        }
    }
}

struct Layout {
    reverse_keys: bool,
    /// Written between every two tokens.
    space: &'static [u8],
}

/// Writes `value` as JSON, with object keys in sorted or reverse order and `layout.space`
/// between tokens; scalars exactly as serde_json writes them.
fn write_json(out: &mut Vec<u8>, value: &Value, layout: Layout) {
    write_value(out, value, &layout);
}

fn write_value(out: &mut Vec<u8>, value: &Value, layout: &Layout) {
    out.extend_from_slice(layout.space);
    match value {
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_value(out, item, layout);
            }
            out.extend_from_slice(layout.space);
            out.push(b']');
        }
        Value::Object(map) => {
            let mut entries: Vec<_> = map.iter().collect();
            if layout.reverse_keys {
                entries.reverse();
            }
            out.push(b'{');
            for (i, (key, item)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(layout.space);
                out.extend_from_slice(serde_json::to_string(key).expect("a string serialises").as_bytes());
                out.extend_from_slice(layout.space);
                out.push(b':');
                write_value(out, item, layout);
            }
            out.extend_from_slice(layout.space);
            out.push(b'}');
        }
        scalar => out.extend_from_slice(serde_json::to_string(scalar).expect("a scalar serialises").as_bytes()),
    }
    out.extend_from_slice(layout.space);
}
