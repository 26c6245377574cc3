//! What a store remembers about a completed request, and its byte encoding for remote stores.

use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::http::StatusCode;
use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::fingerprint::Fingerprint;

/// A response as it is replayed: status, headers in their original order (repeated headers
/// kept) and the body, byte for byte.
///
/// `#[non_exhaustive]`, so that a record may remember more about a response without a breaking
/// change: build one with [`new`](Self::new), or change a clone's fields (as an
/// [`on_replay`](crate::IdempotencyBuilder::on_replay) hook does).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct StoredResponse {
    /// The status code.
    pub status: StatusCode,
    /// Headers in order, without `Set-Cookie`, `Date`, framing or hop-by-hop headers.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// The complete body.
    pub body: Bytes,
}

impl StoredResponse {
    /// A response with `status`, `headers` (in the order they are sent) and `body`.
    pub fn new(status: StatusCode, headers: Vec<(HeaderName, HeaderValue)>, body: Bytes) -> Self {
        Self { status, headers, body }
    }

    /// Bytes this response occupies beyond its fixed-size parts.
    pub fn payload_len(&self) -> usize {
        let headers: usize = self.headers.iter().map(|(n, v)| n.as_str().len() + v.len()).sum();
        headers + self.body.len()
    }
}

/// What a completed request left behind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Completion {
    /// The response, replayed to every retry.
    Response(StoredResponse),
    /// The request ran but its response was too large (or too slow) to keep: retries get
    /// `idempotency_response_not_stored` instead of a second execution.
    Tombstone,
}

/// A completed record: the fingerprint of the request that made it, and what it left.
///
/// `#[non_exhaustive]`, so that a record may carry more without a breaking change: build one
/// with [`new`](Self::new).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Record {
    /// Fingerprint of the request that executed.
    pub fingerprint: Fingerprint,
    /// Its outcome.
    pub completion: Completion,
}

/// A stored record that could not be decoded; stores treat it as a store error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("corrupt idempotency record: {0}")]
pub struct DecodeError(&'static str);

impl DecodeError {
    /// A decode error saying what was wrong, for stores that find a malformed field of their
    /// own around the record (a fingerprint of the wrong length, an unknown state).
    pub fn new(what: &'static str) -> Self {
        Self(what)
    }
}

/// Version 2 ends every encoding with a CRC-32 of everything before it, so a record damaged
/// in the store fails to decode instead of replaying a different response.
const VERSION: u8 = 2;
const CHECKSUM_LEN: usize = 4;
const TOMBSTONE: u8 = 0;
const RESPONSE: u8 = 1;

impl Record {
    /// The record of a request with `fingerprint` that left `completion`.
    pub fn new(fingerprint: Fingerprint, completion: Completion) -> Self {
        Self {
            fingerprint,
            completion,
        }
    }

    /// Approximate bytes this record occupies, for capacity accounting.
    pub fn payload_len(&self) -> usize {
        match &self.completion {
            Completion::Response(response) => response.payload_len(),
            Completion::Tombstone => 0,
        }
    }

    /// Encodes the record into a self-describing, checksummed byte string.
    pub fn encode(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(64 + CHECKSUM_LEN + self.payload_len());
        out.put_u8(VERSION);
        out.put_slice(&self.fingerprint.0);
        match &self.completion {
            Completion::Tombstone => out.put_u8(TOMBSTONE),
            Completion::Response(response) => {
                out.put_u8(RESPONSE);
                out.put_u16(response.status.as_u16());
                out.put_u16(u16::try_from(response.headers.len()).unwrap_or(u16::MAX));
                for (name, value) in response.headers.iter().take(usize::from(u16::MAX)) {
                    put_bytes(&mut out, name.as_str().as_bytes());
                    put_bytes(&mut out, value.as_bytes());
                }
                out.put_u64(response.body.len() as u64);
                out.put_slice(&response.body);
            }
        }
        let checksum = crc32fast::hash(&out);
        out.put_u32(checksum);
        out.freeze()
    }

    /// Decodes what [`Record::encode`] wrote; anything else (including any change to those
    /// bytes) is a [`DecodeError`], never a panic.
    pub fn decode(mut input: Bytes) -> Result<Self, DecodeError> {
        if input.len() < 1 + 32 + 1 + CHECKSUM_LEN {
            return Err(DecodeError("truncated header"));
        }
        if input[0] != VERSION {
            return Err(DecodeError("unknown version"));
        }
        let checksum = input.split_off(input.len() - CHECKSUM_LEN);
        if crc32fast::hash(&input).to_be_bytes()[..] != checksum[..] {
            return Err(DecodeError("checksum does not match"));
        }
        input.advance(1);
        let mut fingerprint = [0u8; 32];
        input.copy_to_slice(&mut fingerprint);
        let fingerprint = Fingerprint(fingerprint);
        let completion = match input.get_u8() {
            TOMBSTONE if input.is_empty() => Completion::Tombstone,
            RESPONSE => Completion::Response(decode_response(input)?),
            _ => return Err(DecodeError("unknown record kind")),
        };
        Ok(Self {
            fingerprint,
            completion,
        })
    }
}

fn decode_response(mut input: Bytes) -> Result<StoredResponse, DecodeError> {
    if input.remaining() < 4 {
        return Err(DecodeError("truncated status"));
    }
    let status = StatusCode::from_u16(input.get_u16()).map_err(|_| DecodeError("bad status"))?;
    let count = input.get_u16();
    let mut headers = Vec::with_capacity(usize::from(count).min(64));
    for _ in 0..count {
        let name = take_bytes(&mut input)?;
        let value = take_bytes(&mut input)?;
        let name = HeaderName::from_bytes(&name).map_err(|_| DecodeError("bad header name"))?;
        let value = HeaderValue::from_maybe_shared(value).map_err(|_| DecodeError("bad header value"))?;
        headers.push((name, value));
    }
    if input.remaining() < 8 {
        return Err(DecodeError("truncated body length"));
    }
    let body_len = input.get_u64();
    if input.remaining() as u64 != body_len {
        return Err(DecodeError("body length does not match"));
    }
    Ok(StoredResponse {
        status,
        headers,
        body: input,
    })
}

fn put_bytes(out: &mut BytesMut, bytes: &[u8]) {
    out.put_u32(u32::try_from(bytes.len()).expect("header parts are far below 4 GiB"));
    out.put_slice(bytes);
}

fn take_bytes(input: &mut Bytes) -> Result<Bytes, DecodeError> {
    if input.remaining() < 4 {
        return Err(DecodeError("truncated length"));
    }
    let len = input.get_u32() as usize;
    if input.remaining() < len {
        return Err(DecodeError("truncated field"));
    }
    Ok(input.split_to(len))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response_record() -> Record {
        Record {
            fingerprint: Fingerprint([7; 32]),
            completion: Completion::Response(StoredResponse {
                status: StatusCode::CREATED,
                headers: vec![
                    (
                        HeaderName::from_static("location"),
                        HeaderValue::from_static("/orders/1"),
                    ),
                    (HeaderName::from_static("x-a"), HeaderValue::from_static("1")),
                    (HeaderName::from_static("x-a"), HeaderValue::from_static("2")),
                ],
                body: Bytes::from_static(b"{\"id\":1}"),
            }),
        }
    }

    #[test]
    fn records_round_trip() {
        let record = response_record();
        assert_eq!(Record::decode(record.encode()), Ok(record));
        let tombstone = Record {
            fingerprint: Fingerprint([1; 32]),
            completion: Completion::Tombstone,
        };
        assert_eq!(Record::decode(tombstone.encode()), Ok(tombstone));
    }

    #[test]
    fn every_truncation_is_an_error_never_a_shorter_replay() {
        let encoded = response_record().encode();
        for len in 0..encoded.len() {
            assert!(
                Record::decode(encoded.slice(..len)).is_err(),
                "truncated to {len} bytes"
            );
        }
        let mut extended = encoded.to_vec();
        extended.push(b'!');
        assert!(Record::decode(Bytes::from(extended)).is_err());
        assert!(Record::decode(Bytes::from_static(b"\x02garbage")).is_err());
    }

    /// A body byte damaged in the store used to decode as a different body, and was replayed.
    #[test]
    fn a_corrupted_body_byte_is_an_error_not_a_different_replay() {
        let encoded = response_record().encode();
        let body_at = encoded.len() - CHECKSUM_LEN - 1;
        for at in [body_at, 1, 40, encoded.len() - 1] {
            let mut corrupted = encoded.to_vec();
            corrupted[at] ^= 0x20;
            assert_eq!(
                Record::decode(Bytes::from(corrupted)),
                Err(DecodeError("checksum does not match")),
                "byte {at} flipped"
            );
        }
    }

    #[test]
    fn records_of_the_unchecked_first_version_are_refused() {
        let mut first_version = response_record().encode().to_vec();
        first_version.truncate(first_version.len() - CHECKSUM_LEN);
        first_version[0] = 1;
        assert_eq!(
            Record::decode(Bytes::from(first_version)),
            Err(DecodeError("unknown version"))
        );
    }
}
