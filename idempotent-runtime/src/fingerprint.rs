//! SHA-256 over what makes two requests "the same request": method, path, query and body.
//!
//! Each part is length-prefixed, so no two different requests hash the same input. With
//! [`FingerprintMode::Json`] the body is canonicalised first (object keys sorted, insignificant
//! whitespace dropped), so `{"a":1,"b":2}` and `{ "b": 2, "a": 1 }` are the same request.
//! Numbers are compared by value as `serde_json` reads them (integers exactly up to 64 bits,
//! others as `f64`): two bodies whose numbers differ only beyond that precision count as the
//! same request, so send arbitrary-precision decimals as strings.

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::route::FingerprintMode;

/// A request fingerprint: the SHA-256 digest of method, path, query and body.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint(pub [u8; 32]);

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
            FingerprintMode::Json => serde_json::from_slice::<Value>(body).ok(),
            FingerprintMode::Body => None,
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
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }
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
