//! Reading and validating the idempotency key from request headers.
//!
//! A key is 1–255 printable ASCII characters, sent bare (`Idempotency-Key: abc`) or as an
//! RFC 8941 structured-field string (`Idempotency-Key: "abc"`), which is unquoted and unescaped.

use std::borrow::Cow;
use std::future::{ready, Ready};

use actix_web::http::header::{HeaderMap, HeaderName};
use actix_web::{dev, FromRequest, HttpMessage, HttpRequest};

use crate::error::IdempotencyError;

/// The longest key accepted, in bytes.
pub const MAX_KEY_LEN: usize = 255;

/// Why a key header was refused (400 `idempotency_key_invalid`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The header appeared more than once.
    #[error("the key header was sent more than once")]
    Repeated,
    /// Longer than [`MAX_KEY_LEN`].
    #[error("the key is longer than {MAX_KEY_LEN} characters")]
    TooLong,
    /// A control or non-ASCII character.
    #[error("the key may contain only printable ASCII characters")]
    BadCharacter,
    /// A quoted value that is not a valid structured-field string.
    #[error("the quoted key is not a valid structured-field string")]
    BadQuoting,
    /// Blank. A blank header means "no key" (the request runs unprotected); a blank key given
    /// to [`crate::work::Work::run`] is refused.
    #[error("the key is empty")]
    Empty,
}

/// The idempotency key of the request a handler is running for, as an extractor: forward it to
/// a downstream service that de-duplicates too (a payment provider, another idempotent API), so
/// that a re-execution here (after a failure released the key, or a crashed replica's lease
/// lapsed) is de-duplicated there.
///
/// Available to annotated handlers and to handlers behind [`crate::IdempotentMiddleware`] when
/// the engine executes a keyed request. A request without a key (on a route that does not
/// require one) has none: take `Option<IdempotencyKey>` there. Taken as `IdempotencyKey`, a
/// missing key is a 400 `idempotency_key_missing` and the handler does not run.
///
/// ```
/// use actix_web::{test, web, App, HttpResponse};
/// use idempotent_runtime::{testing, IdempotencyKey, IdempotentMiddleware};
///
/// // With `#[idempotent]`, take it the same way: `async fn charge(key: IdempotencyKey)`.
/// async fn charge(key: IdempotencyKey) -> HttpResponse {
///     // e.g. provider.charge(amount).idempotency_key(format!("charge-{}", key.key()))
///     HttpResponse::Created().body(format!("forwarded {}", key.key()))
/// }
///
/// # #[actix_web::main]
/// # async fn main() {
/// let app = App::new().app_data(testing::isolated()).service(
///     web::scope("").wrap(IdempotentMiddleware::new().required(true)).route("/charges", web::post().to(charge)),
/// );
/// let app = test::init_service(app).await;
/// let request = test::TestRequest::post().uri("/charges").insert_header(("Idempotency-Key", "k-42")).to_request();
/// assert_eq!(test::call_and_read_body(&app, request).await, "forwarded k-42");
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey {
    key: String,
    tenant: Option<String>,
    first_attempt: bool,
}

impl IdempotencyKey {
    pub(crate) fn new(key: String, tenant: Option<String>, first_attempt: bool) -> Self {
        Self {
            key,
            tenant,
            first_attempt,
        }
    }

    /// `false` when an earlier execution of this key started and did not complete: it was
    /// released (a response outside the cache policy, such as a 503, or a panic) or the replica
    /// running it died and its lease lapsed. Its effects may then already have happened
    /// downstream: forward the same key there, or look the effect up before repeating it.
    pub fn is_first_attempt(&self) -> bool {
        self.first_attempt
    }

    /// The key as the client sent it (unquoted), or as taken from the body with `key_from`.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The tenant of a `scope = "tenant"` route; `None` in global scope.
    pub fn tenant(&self) -> Option<&str> {
        self.tenant.as_deref()
    }
}

impl FromRequest for IdempotencyKey {
    type Error = IdempotencyError;
    type Future = Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut dev::Payload) -> Self::Future {
        let key = req.extensions().get::<Exposed>().and_then(|exposed| {
            let key = match &exposed.source {
                Source::Body(key) => key.clone(),
                Source::Header(name) => from_headers(req.headers(), name).ok()??.into_owned(),
            };
            Some(Self::new(key, exposed.tenant.clone(), exposed.first_attempt))
        });
        ready(key.ok_or(IdempotencyError::KeyMissing {
            header: HeaderName::from_static("idempotency-key"),
        }))
    }
}

/// What the engine tells a handler's [`IdempotencyKey`] extractor about its request. A header
/// key is read (it was validated) only when the handler takes it.
pub(crate) struct Exposed {
    pub(crate) source: Source,
    pub(crate) tenant: Option<String>,
    pub(crate) first_attempt: bool,
}

/// Where the request's key is.
pub(crate) enum Source {
    Header(HeaderName),
    /// Taken from the body (`key_from`).
    Body(String),
}

/// The key of a request: `Ok(None)` when absent, empty or whitespace-only.
pub fn from_headers<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Result<Option<Cow<'a, str>>, KeyError> {
    let mut values = headers.get_all(name);
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(KeyError::Repeated);
    }
    parse(value.as_bytes())
}

/// Parses one header value (also used for keys taken from a JSON body).
pub fn parse(raw: &[u8]) -> Result<Option<Cow<'_, str>>, KeyError> {
    let trimmed = raw.trim_ascii();
    let key = match trimmed {
        [b'"', inner @ .., b'"'] => Cow::Owned(unquote(inner)?),
        [b'"', ..] => return Err(KeyError::BadQuoting),
        bare => Cow::Borrowed(printable(bare)?),
    };
    if key.trim().is_empty() {
        return Ok(None);
    }
    if key.len() > MAX_KEY_LEN {
        return Err(KeyError::TooLong);
    }
    Ok(Some(key))
}

fn printable(bytes: &[u8]) -> Result<&str, KeyError> {
    if bytes.iter().all(|b| (0x20..=0x7e).contains(b)) {
        // Printable ASCII is valid UTF-8.
        Ok(std::str::from_utf8(bytes).map_err(|_| KeyError::BadCharacter)?)
    } else {
        Err(KeyError::BadCharacter)
    }
}

/// RFC 8941 §3.3.3: inside the quotes, `\"` and `\\` are the only escapes and a bare `"` ends
/// the string.
fn unquote(inner: &[u8]) -> Result<String, KeyError> {
    let mut out = String::with_capacity(inner.len());
    let mut bytes = inner.iter();
    while let Some(&b) = bytes.next() {
        match b {
            b'\\' => match bytes.next() {
                Some(&escaped @ (b'"' | b'\\')) => out.push(char::from(escaped)),
                _ => return Err(KeyError::BadQuoting),
            },
            b'"' => return Err(KeyError::BadQuoting),
            0x20..=0x7e => out.push(char::from(b)),
            _ => return Err(KeyError::BadCharacter),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(raw: &str) -> Result<Option<String>, KeyError> {
        parse(raw.as_bytes()).map(|k| k.map(Cow::into_owned))
    }

    #[test]
    fn bare_and_quoted_keys_are_the_same_key() {
        assert_eq!(key("abc-123").unwrap().as_deref(), Some("abc-123"));
        assert_eq!(key("\"abc-123\"").unwrap().as_deref(), Some("abc-123"));
        assert_eq!(key("  abc  ").unwrap().as_deref(), Some("abc"));
    }

    #[test]
    fn quoted_keys_are_unescaped() {
        assert_eq!(key(r#""a\"b\\c""#).unwrap().as_deref(), Some(r#"a"b\c"#));
        assert_eq!(key(r#""a\nb""#), Err(KeyError::BadQuoting));
        assert_eq!(key(r#""a"b""#), Err(KeyError::BadQuoting));
        assert_eq!(key(r#""abc"#), Err(KeyError::BadQuoting));
    }

    #[test]
    fn empty_and_blank_keys_are_absent() {
        assert_eq!(key(""), Ok(None));
        assert_eq!(key("   "), Ok(None));
        assert_eq!(key("\"\""), Ok(None));
        assert_eq!(key("\"  \""), Ok(None));
    }

    #[test]
    fn long_control_and_non_ascii_keys_are_invalid() {
        assert_eq!(key(&"k".repeat(255)).unwrap().map(|k| k.len()), Some(255));
        assert_eq!(key(&"k".repeat(256)), Err(KeyError::TooLong));
        assert_eq!(key("a\tb"), Err(KeyError::BadCharacter));
        assert_eq!(parse(b"caf\xc3\xa9"), Err(KeyError::BadCharacter));
        assert_eq!(parse(b"a\x7fb"), Err(KeyError::BadCharacter));
    }

    #[test]
    fn a_repeated_header_is_invalid() {
        let name = HeaderName::from_static("idempotency-key");
        let mut headers = HeaderMap::new();
        headers.append(name.clone(), "a".parse().unwrap());
        headers.append(name.clone(), "b".parse().unwrap());
        assert_eq!(from_headers(&headers, &name), Err(KeyError::Repeated));
    }
}
