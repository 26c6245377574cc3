//! `Record::decode`, what the Redis and PostgreSQL stores apply to every stored record:
//!
//! - never panics, whatever the bytes;
//! - `decode(encode(r)) == r` for every record;
//! - an encoded record that was corrupted (bytes flipped, inserted, removed, or cut short)
//!   fails to decode, or decodes to exactly the record that was encoded: never to another
//!   response, which would be replayed as if it were the original.
#![no_main]

use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::http::StatusCode;
use arbitrary::Arbitrary;
use bytes::Bytes;
use idempotent_runtime::{Completion, Fingerprint, Record, StoredResponse};
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Arbitrary)]
struct Input {
    record: RecordSpec,
    corruption: Vec<Corruption>,
    stored: Vec<u8>,
}

#[derive(Debug, Arbitrary)]
struct RecordSpec {
    fingerprint: [u8; 32],
    tombstone: bool,
    status: u16,
    headers: Vec<(Vec<u8>, Vec<u8>)>,
    body: Vec<u8>,
}

#[derive(Debug, Arbitrary)]
enum Corruption {
    Flip { at: usize, mask: u8 },
    Insert { at: usize, byte: u8 },
    Remove { at: usize },
    Truncate { len: usize },
}

fuzz_target!(|input: Input| {
    if let Ok(record) = Record::decode(Bytes::from(input.stored)) {
        assert_eq!(
            Record::decode(record.encode()).as_ref(),
            Ok(&record),
            "a decoded record re-encodes"
        );
    }

    let record = input.record.build();
    let encoded = record.encode();
    assert_eq!(
        Record::decode(encoded.clone()).as_ref(),
        Ok(&record),
        "a record round-trips"
    );

    let mut corrupted = encoded.to_vec();
    for corruption in &input.corruption {
        corruption.apply(&mut corrupted);
    }
    if corrupted != encoded {
        if let Ok(decoded) = Record::decode(Bytes::from(corrupted)) {
            assert_eq!(decoded, record, "a corrupted record decoded to another record");
        }
    }
});

impl RecordSpec {
    fn build(&self) -> Record {
        let completion = if self.tombstone {
            Completion::Tombstone
        } else {
            let headers = self
                .headers
                .iter()
                .filter_map(|(name, value)| {
                    let name = HeaderName::from_bytes(&name.to_ascii_lowercase()).ok()?;
                    Some((name, HeaderValue::from_bytes(value).ok()?))
                })
                .collect();
            Completion::Response(StoredResponse::new(
                StatusCode::from_u16(100 + self.status % 900).expect("100..=999 is a status"),
                headers,
                Bytes::copy_from_slice(&self.body),
            ))
        };
        Record::new(Fingerprint(self.fingerprint), completion)
    }
}

impl Corruption {
    fn apply(&self, bytes: &mut Vec<u8>) {
        let position = |at: usize, len: usize| at.checked_rem(len);
        match *self {
            Self::Flip { at, mask } => {
                if let Some(at) = position(at, bytes.len()) {
                    bytes[at] ^= mask;
                }
            }
            Self::Insert { at, byte } => {
                let at = position(at, bytes.len() + 1).unwrap_or(0);
                bytes.insert(at, byte);
            }
            Self::Remove { at } => {
                if let Some(at) = position(at, bytes.len()) {
                    bytes.remove(at);
                }
            }
            Self::Truncate { len } => bytes.truncate(len % (bytes.len() + 1)),
        }
    }
}
