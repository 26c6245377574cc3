//! Capturing a handler's response for storage, and replaying a stored one.

use std::future::poll_fn;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use actix_web::body::{BodySize, BoxBody, MessageBody};
use actix_web::http::header::{self, HeaderName, HeaderValue};
use actix_web::{HttpRequest, HttpResponse};
use bytes::{Bytes, BytesMut};

use crate::config::Idempotency;
use crate::record::StoredResponse;

/// A handler's response after capture.
pub(crate) enum Captured {
    /// The whole body, within the size and time limits.
    Complete { head: HttpResponse<()>, body: Bytes },
    /// The body exceeded a limit or failed: what was read, followed by the rest, still to send.
    Partial {
        head: HttpResponse<()>,
        body: BoxBody,
        failed: bool,
    },
}

/// Reads the response body into memory, up to `limit` bytes and `time` long.
pub(crate) async fn capture(response: HttpResponse, limit: usize, time: Duration) -> Captured {
    let (head, body) = response.into_parts();
    match body.size() {
        BodySize::None | BodySize::Sized(0) => {
            return Captured::Complete {
                head,
                body: Bytes::new(),
            }
        }
        BodySize::Sized(len) if len > limit as u64 => {
            return Captured::Partial {
                head,
                body,
                failed: false,
            }
        }
        _ => {}
    }
    match body.try_into_bytes() {
        Ok(bytes) => Captured::Complete { head, body: bytes },
        // Boxed, so that the future of every execution is not as large as a streamed body's.
        Err(body) => Box::pin(read(head, body, limit, time)).await,
    }
}

/// Reads a streamed body, up to `limit` bytes and `time` long.
async fn read(head: HttpResponse<()>, mut body: BoxBody, limit: usize, time: Duration) -> Captured {
    let mut read = BytesMut::new();
    let deadline = tokio::time::sleep(time);
    tokio::pin!(deadline);
    loop {
        let next = tokio::select! {
            next = poll_fn(|cx| Pin::new(&mut body).poll_next(cx)) => next,
            () = &mut deadline => return partial(head, read, body, false),
        };
        match next {
            None => {
                return Captured::Complete {
                    head,
                    body: read.freeze(),
                }
            }
            Some(Ok(chunk)) if read.len() + chunk.len() > limit => {
                read.extend_from_slice(&chunk);
                return partial(head, read, body, false);
            }
            Some(Ok(chunk)) => read.extend_from_slice(&chunk),
            Some(Err(error)) => {
                tracing::warn!(%error, "response body failed while being captured");
                return partial(head, read, BoxBody::new(FailedBody(Some(error))), true);
            }
        }
    }
}

fn partial(head: HttpResponse<()>, read: BytesMut, rest: BoxBody, failed: bool) -> Captured {
    let body = BoxBody::new(Prefixed {
        prefix: Some(read.freeze()).filter(|b| !b.is_empty()),
        rest,
    });
    Captured::Partial { head, body, failed }
}

/// What was already read of a body, then the rest of it.
struct Prefixed {
    prefix: Option<Bytes>,
    rest: BoxBody,
}

impl MessageBody for Prefixed {
    type Error = Box<dyn std::error::Error>;

    fn size(&self) -> BodySize {
        BodySize::Stream
    }

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, Self::Error>>> {
        if let Some(prefix) = self.prefix.take() {
            return Poll::Ready(Some(Ok(prefix)));
        }
        Pin::new(&mut self.rest).poll_next(cx)
    }
}

/// A body that fails once with the handler body's own error.
struct FailedBody(Option<Box<dyn std::error::Error>>);

impl MessageBody for FailedBody {
    type Error = Box<dyn std::error::Error>;

    fn size(&self) -> BodySize {
        BodySize::Stream
    }

    fn poll_next(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Result<Bytes, Self::Error>>> {
        Poll::Ready(self.0.take().map(Err))
    }
}

/// Headers never stored: cookies belong to the first caller only; the rest describe one
/// connection or are written by the server at send time.
fn is_storable(name: &HeaderName, connection_tokens: &[&str]) -> bool {
    const DROPPED: [HeaderName; 10] = [
        header::SET_COOKIE,
        header::DATE,
        header::CONNECTION,
        header::CONTENT_LENGTH,
        header::TRANSFER_ENCODING,
        header::TE,
        header::TRAILER,
        header::UPGRADE,
        header::PROXY_AUTHENTICATE,
        header::PROXY_AUTHORIZATION,
    ];
    let name_str = name.as_str();
    !DROPPED.contains(name)
        && name_str != "keep-alive"
        && name_str != "proxy-connection"
        && name_str != "set-cookie2"
        && !connection_tokens
            .iter()
            .any(|token| token.eq_ignore_ascii_case(name_str))
}

/// The body as sent and as kept, in a buffer of its own size. A serialiser grows its buffer by
/// doubling, so a JSON body often sits in an allocation up to twice its length, and a stored
/// record would keep that slack for its whole ttl. Such a buffer is shrunk in place (the
/// allocator frees its tail, nothing is copied); a body already in a buffer of its size, or
/// shared, is kept as it is.
pub(crate) fn compact(body: Bytes) -> (Bytes, Bytes) {
    let body = match body.try_into_mut() {
        Ok(buffer) if buffer.capacity() - buffer.len() > buffer.len() / 8 => {
            let mut buffer = Vec::from(buffer);
            buffer.shrink_to_fit();
            Bytes::from(buffer)
        }
        Ok(buffer) => buffer.freeze(),
        Err(body) => body,
    };
    (body.clone(), body)
}

/// The storable part of a response.
pub(crate) fn to_stored(head: &HttpResponse<()>, body: Bytes) -> StoredResponse {
    let headers = head.headers();
    let connection_tokens: Vec<&str> = headers
        .get_all(header::CONNECTION)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(',').map(str::trim))
        .collect();
    StoredResponse {
        status: head.status(),
        headers: headers
            .iter()
            .filter(|(name, _)| is_storable(name, &connection_tokens))
            .map(|(name, value)| (name.clone(), value.clone()))
            .collect(),
        body,
    }
}

/// A stored response as sent to a retry of `req`: through the app's replay hook if it set one
/// ([`crate::IdempotencyBuilder::on_replay`]), then marked with the replay header.
pub(crate) fn replay(stored: &StoredResponse, config: &Idempotency, req: &HttpRequest) -> HttpResponse {
    let changed = config.inner.replay_hook.as_ref().and_then(|hook| hook(stored, req));
    let sent = changed.as_ref().unwrap_or(stored);
    let mut response = HttpResponse::with_body(sent.status, BoxBody::new(sent.body.clone()));
    let headers = response.headers_mut();
    for (name, value) in &sent.headers {
        headers.append(name.clone(), value.clone());
    }
    headers.insert(config.inner.replay_header.clone(), HeaderValue::from_static("true"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compact_drops_a_serialisers_slack_and_keeps_the_bytes() {
        let mut grown = Vec::with_capacity(2048);
        grown.extend_from_slice(&[b'x'; 1100]);
        let (sent, kept) = compact(Bytes::from(grown));
        assert_eq!(sent, Bytes::from(vec![b'x'; 1100]));
        assert_eq!(sent.as_ptr(), kept.as_ptr(), "one buffer, sent and kept");
        drop(sent);
        assert_eq!(kept.try_into_mut().unwrap().capacity(), 1100);

        let exact = Bytes::from(vec![b'y'; 1100]);
        let pointer = exact.as_ptr();
        let (sent, kept) = compact(exact);
        assert_eq!(
            (sent.as_ptr(), kept.as_ptr()),
            (pointer, pointer),
            "a buffer of the body's size is kept"
        );

        let shared = Bytes::from_static(b"static");
        assert_eq!(compact(shared.clone()), (shared.clone(), shared));
    }
}
