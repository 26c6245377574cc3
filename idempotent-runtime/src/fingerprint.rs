//! SHA-256 over what makes two requests "the same request": method, path, query and body.
//!
//! Each part is length-prefixed, so no two different requests hash the same input. With
//! [`FingerprintMode::Json`] the body is canonicalised first (object keys sorted, insignificant
//! whitespace dropped), so `{"a":1,"b":2}` and `{ "b": 2, "a": 1 }` are the same request.
//! Numbers are compared by value: `12.5` and `12.50` are the same request. A body with a number
//! that a 64-bit float cannot tell apart from a neighbour (an integer beyond 64 bits, a decimal
//! with more significant digits than its float keeps) is hashed as bytes instead, so two such
//! numbers never count as the same request.

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::route::FingerprintMode;

/// A request fingerprint: the SHA-256 digest of method, path, query and body.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Fingerprint(pub [u8; 32]);

/// A digest's first eight bytes are already uniformly spread: a map hashes those, not all 32.
impl std::hash::Hash for Fingerprint {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        let (head, _) = self.0.split_first_chunk::<8>().expect("32 bytes");
        state.write_u64(u64::from_ne_bytes(*head));
    }
}

impl std::fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for byte in &self.0[..8] {
            write!(f, "{byte:02x}")?;
        }
        f.write_str("…")
    }
}

impl Fingerprint {
    /// Fingerprints one request; `body` is hashed in place, never copied.
    pub fn of(method: &str, path: &str, query: &str, body: &[u8], mode: FingerprintMode) -> Self {
        let mut hasher = Sha256::new();
        for part in [method.as_bytes(), path.as_bytes(), query.as_bytes()] {
            update_prefixed(&mut hasher, part);
        }
        let canonical = match mode {
            FingerprintMode::Json if numbers_are_exact(body) => serde_json::from_slice::<Value>(body).ok(),
            _ => None,
        };
        match canonical {
            Some(value) => {
                hasher.update(b"json:");
                write_canonical(&mut hasher, &value);
            }
            None => {
                hasher.update(b"body:");
                update_prefixed(&mut hasher, body);
            }
        }
        Self(hasher.finalize().into())
    }

    /// Lower-case hex of all 32 bytes.
    pub fn to_hex(&self) -> String {
        hex(&self.0)
    }
}

/// Whether every number literal in `body` (outside strings) is held exactly by what
/// `serde_json` parses it into: a 64-bit integer, or a float whose value no other decimal of at
/// most 15 significant digits shares, or whose digits are exactly its shortest representation.
fn numbers_are_exact(body: &[u8]) -> bool {
    let mut in_string = false;
    let mut escaped = false;
    let mut i = 0;
    while i < body.len() {
        let byte = body[i];
        if in_string {
            match (escaped, byte) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            i += 1;
        } else if byte == b'"' {
            in_string = true;
            i += 1;
        } else if byte == b'-' || byte.is_ascii_digit() {
            let end = body[i..]
                .iter()
                .position(|b| !matches!(b, b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E'))
                .map_or(body.len(), |len| i + len);
            let exact = std::str::from_utf8(&body[i..end]).is_ok_and(number_is_exact);
            if !exact {
                return false;
            }
            i = end;
        } else {
            i += 1;
        }
    }
    true
}

fn number_is_exact(literal: &str) -> bool {
    let is_integer = !literal.contains(['.', 'e', 'E']);
    if is_integer && (literal.parse::<i64>().is_ok() || literal.parse::<u64>().is_ok()) {
        return true;
    }
    let Ok(value) = literal.parse::<f64>() else {
        // Not a number serde_json accepts either: the body is not JSON and is hashed as bytes.
        return true;
    };
    let digits = significant_digits(literal);
    if value == 0.0 {
        return digits.is_empty();
    }
    let normal = value.is_finite() && value.abs() >= f64::MIN_POSITIVE;
    (normal && digits.len() <= 15) || digits == significant_digits(&written_by_serde_json(value))
}

/// How serde_json writes `value`: its one shortest representation, so no two different literals
/// both match it (a value halfway between two 17-digit decimals has two shortest candidates, and
/// formatters need not pick the same one).
fn written_by_serde_json(value: f64) -> String {
    serde_json::Number::from_f64(value).map_or_else(String::new, |n| n.to_string())
}

/// The mantissa's digits without leading or trailing zeros: `"-0.01250e3"` → `"125"`.
fn significant_digits(literal: &str) -> String {
    let mantissa = literal.split(['e', 'E']).next().unwrap_or_default();
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    digits.trim_start_matches('0').trim_end_matches('0').to_owned()
}

/// Lower-case hex of a 32-byte digest, in one allocation.
pub(crate) fn hex(digest: &[u8; 32]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(64);
    for byte in digest {
        out.push(char::from(DIGITS[usize::from(byte >> 4)]));
        out.push(char::from(DIGITS[usize::from(byte & 0xf)]));
    }
    out
}

fn update_prefixed(hasher: &mut Sha256, part: &[u8]) {
    hasher.update((part.len() as u64).to_be_bytes());
    hasher.update(part);
}

/// Writes `value` as canonical JSON into the hasher, sorting object keys whatever map type
/// `serde_json` was built with.
fn write_canonical(hasher: &mut Sha256, value: &Value) {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
            hasher.update(b"{");
            for (i, (key, item)) in entries.into_iter().enumerate() {
                if i > 0 {
                    hasher.update(b",");
                }
                write_scalar(hasher, &Value::String(key.clone()));
                hasher.update(b":");
                write_canonical(hasher, item);
            }
            hasher.update(b"}");
        }
        Value::Array(items) => {
            hasher.update(b"[");
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    hasher.update(b",");
                }
                write_canonical(hasher, item);
            }
            hasher.update(b"]");
        }
        scalar => write_scalar(hasher, scalar),
    }
}

fn write_scalar(hasher: &mut Sha256, value: &Value) {
    let text = serde_json::to_string(value).expect("a JSON scalar always serialises");
    hasher.update(text.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(body: &str) -> Fingerprint {
        Fingerprint::of("POST", "/orders", "", body.as_bytes(), FingerprintMode::Json)
    }

    fn raw(method: &str, path: &str, query: &str, body: &str) -> Fingerprint {
        Fingerprint::of(method, path, query, body.as_bytes(), FingerprintMode::Body)
    }

    #[test]
    fn json_mode_ignores_key_order_and_whitespace() {
        assert_eq!(
            json(r#"{"a":1,"b":{"y":[1,2],"x":null}}"#),
            json(r#" { "b" : { "x":null, "y":[1, 2] }, "a": 1 }"#)
        );
        assert_ne!(json(r#"{"a":1}"#), json(r#"{"a":2}"#));
        assert_ne!(json(r#"[1,2]"#), json(r#"[2,1]"#));
    }

    #[test]
    fn json_mode_compares_numbers_by_value() {
        assert_eq!(json(r#"{"amount":12.5,"n":7}"#), json(r#"{"n":7,"amount":12.50}"#));
        assert_ne!(json(r#"{"amount":12.5}"#), json(r#"{"amount":12.6}"#));
    }

    #[test]
    fn numbers_beyond_float_precision_are_never_the_same_request() {
        // Each pair parses to the same f64; hashed as bytes, they stay two requests.
        assert_ne!(json("18446744073709551616"), json("18446744073709551617"));
        assert_ne!(json("0.30000000000000003"), json("0.30000000000000004"));
        assert_ne!(json("[1e-400]"), json("[0]"));
        assert_ne!(json(r#"{"a":1.00000000000000001}"#), json(r#"{"a":1}"#));
        // Numbers inside strings are text, not numbers.
        assert_eq!(
            json(r#"{"b":"18446744073709551617","a":1}"#),
            json(r#"{"a":1,"b":"18446744073709551617"}"#)
        );
    }

    #[test]
    fn a_float_halfway_between_two_shortest_decimals_keeps_canonical_json() {
        // 1801439850948198.25 is exactly halfway: serde_json writes ...198.2.
        assert_eq!(
            json(r#"{"a":true,"b":1801439850948198.2}"#),
            json(r#"{ "b": 1801439850948198.2, "a": true }"#)
        );
        assert_ne!(json("[1801439850948198.2]"), json("[1801439850948198.3]"));
    }

    #[test]
    fn shortest_float_representations_keep_canonical_json() {
        assert_eq!(
            json(r#"{"x":0.30000000000000004,"y":2}"#),
            json(r#"{"y":2,"x":0.30000000000000004}"#)
        );
        assert_eq!(
            json(r#"{"x":-1.5e-3,"y":[1,2]}"#),
            json(r#"{ "y":[1, 2], "x":-1.5e-3 }"#)
        );
    }

    #[test]
    fn json_mode_falls_back_to_bytes_for_non_json() {
        assert_eq!(json("not json"), raw("POST", "/orders", "", "not json"));
    }

    #[test]
    fn body_mode_is_byte_exact() {
        assert_ne!(
            raw("POST", "/orders", "", r#"{"a":1}"#),
            raw("POST", "/orders", "", r#"{ "a":1}"#)
        );
    }

    #[test]
    fn method_path_and_query_are_part_of_the_request() {
        let base = raw("POST", "/orders", "amount=5", "{}");
        assert_ne!(base, raw("PUT", "/orders", "amount=5", "{}"));
        assert_ne!(base, raw("POST", "/payments", "amount=5", "{}"));
        assert_ne!(base, raw("POST", "/orders", "amount=6", "{}"));
        // Length prefixes keep parts from running into each other.
        assert_ne!(raw("POST", "/a", "b", ""), raw("POST", "/ab", "", ""));
    }
}
