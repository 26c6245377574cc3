//! Key, tenant, body and fingerprint of one request, before anything runs.

use actix_web::http::header;
use actix_web::{dev, HttpMessage, HttpRequest};
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;

use super::Caller;
use crate::config::Idempotency;
use crate::error::IdempotencyError;
use crate::fingerprint::Fingerprint;
use crate::key::{self, Exposed, Source};
use crate::route::{FingerprintMode, OnMismatch, Route, Scope};
use crate::store::RecordKey;

pub(super) enum Prepared {
    /// No key: the handler runs as if unannotated (with the buffered body if it was read).
    Unprotected(dev::Payload),
    Keyed(Keyed),
}

/// A keyed request, ready to run once.
pub(super) struct Keyed {
    pub(super) id: RecordKey,
    pub(super) fingerprint: Fingerprint,
    /// The fingerprint in the other mode, while the middleware probes a route an annotated
    /// handler may govern.
    pub(super) alt: Option<Fingerprint>,
    pub(super) body: Bytes,
    /// The key when it came from the body; a header key is read again for the extractor.
    key_from_body: Option<String>,
    tenant: Option<String>,
}

impl Keyed {
    /// Makes the key available to the handler's [`IdempotencyKey`](crate::IdempotencyKey)
    /// extractor.
    pub(super) fn expose(&self, req: &HttpRequest, route: &Route, first_attempt: bool) {
        let source = match &self.key_from_body {
            Some(key) => Source::Body(key.clone()),
            None => Source::Header(route.header().clone()),
        };
        req.extensions_mut().insert(Exposed {
            source,
            tenant: self.tenant.clone(),
            first_attempt,
        });
    }

    /// Whether a record or claim with `fingerprint` was made by this same request.
    pub(super) fn is_same_request(&self, fingerprint: Fingerprint) -> bool {
        fingerprint == self.fingerprint || Some(fingerprint) == self.alt
    }
}

pub(super) async fn prepare(
    caller: &Caller,
    config: &Idempotency,
    req: &HttpRequest,
    payload: dev::Payload,
) -> Result<Prepared, IdempotencyError> {
    let route = caller.route();
    let options = route.options();
    let header_key = key::from_headers(req.headers(), route.header()).map_err(IdempotencyError::KeyInvalid)?;
    let missing = || IdempotencyError::KeyMissing {
        header: options.header.clone(),
    };
    let (key, tenant, body, from_body) = match (header_key, options.key_from) {
        (Some(key), _) => {
            let tenant = tenant(caller, config, req)?;
            let body = read_body(payload, req, config.inner.max_request_bytes).await?;
            (key, tenant, body, false)
        }
        (None, None) if options.required => return Err(missing()),
        (None, None) => return Ok(Prepared::Unprotected(payload)),
        (None, Some(pointer)) => {
            let body = read_body(payload, req, config.inner.max_request_bytes).await?;
            match key_from_body(&body, pointer)? {
                Some(key) => (key.into(), tenant(caller, config, req)?, body, true),
                None if options.required => return Err(missing()),
                None => return Ok(Prepared::Unprotected(super::buffered(body))),
            }
        }
    };
    let fingerprint_in = |mode| Fingerprint::of(req.method().as_str(), req.path(), req.query_string(), &body, mode);
    let fingerprint = fingerprint_in(options.fingerprint);
    let alt = caller.upstream().is_some_and(|upstream| upstream.alt).then(|| {
        fingerprint_in(match options.fingerprint {
            FingerprintMode::Body => FingerprintMode::Json,
            FingerprintMode::Json => FingerprintMode::Body,
        })
    });
    let variant = (options.on_mismatch == OnMismatch::Execute).then_some(&fingerprint);
    let id = RecordKey::new(&config.inner.namespace, tenant.as_deref(), &key, variant);
    Ok(Prepared::Keyed(Keyed {
        id,
        fingerprint,
        alt,
        body,
        key_from_body: from_body.then(|| key.into_owned()),
        tenant,
    }))
}

fn tenant(caller: &Caller, config: &Idempotency, req: &HttpRequest) -> Result<Option<String>, IdempotencyError> {
    match caller.route().options().scope {
        Scope::Global => Ok(None),
        Scope::Tenant => match config.inner.tenants.of(req, caller.is_middleware()) {
            Ok(tenant) => Ok(Some(tenant)),
            Err(reason) => Err(IdempotencyError::TenantMissing { reason }),
        },
    }
}
/// The key at `pointer` in a JSON body: a string (validated like a header key) or a number.
fn key_from_body(body: &[u8], pointer: &str) -> Result<Option<String>, IdempotencyError> {
    let Ok(json) = serde_json::from_slice::<serde_json::Value>(body) else {
        return Ok(None);
    };
    match json.pointer(pointer) {
        Some(serde_json::Value::String(text)) => key::parse(text.as_bytes())
            .map(|key| key.map(|k| k.into_owned()))
            .map_err(IdempotencyError::KeyInvalid),
        Some(serde_json::Value::Number(number)) => Ok(Some(number.to_string())),
        _ => Ok(None),
    }
}

/// Buffers the body up to `limit` bytes; a single-chunk body is kept without a copy.
async fn read_body(mut payload: dev::Payload, req: &HttpRequest, limit: usize) -> Result<Bytes, IdempotencyError> {
    let too_large = IdempotencyError::BodyTooLarge { limit };
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
    if declared.is_some_and(|len| len > limit) {
        return Err(too_large);
    }
    let mut first: Option<Bytes> = None;
    let mut joined: Option<BytesMut> = None;
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|_| IdempotencyError::BodyUnreadable)?;
        let read = joined.as_ref().map_or(0, BytesMut::len) + first.as_ref().map_or(0, Bytes::len);
        if read + chunk.len() > limit {
            return Err(too_large);
        }
        match (&mut joined, first.take()) {
            (Some(buffer), _) => buffer.extend_from_slice(&chunk),
            (None, None) => first = Some(chunk),
            (None, Some(previous)) => {
                let mut buffer = BytesMut::with_capacity(declared.unwrap_or(0).max(previous.len() + chunk.len()));
                buffer.extend_from_slice(&previous);
                buffer.extend_from_slice(&chunk);
                joined = Some(buffer);
            }
        }
    }
    Ok(joined.map(BytesMut::freeze).or(first).unwrap_or_default())
}
