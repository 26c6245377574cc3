//! A reqwest client that retries writes safely: one idempotency key per logical operation, kept
//! across every retry. Made for [`idempotent-actix`](https://docs.rs/idempotent-actix) servers,
//! whose applications also reach it as `idempotent_actix::client` (feature `client`).
//!
//! [`IdempotentRetry`] is a [`reqwest_middleware::Middleware`]. For every request whose method is
//! not `GET`, `HEAD`, `OPTIONS` or `TRACE` it:
//!
//! 1. uses the key the caller put in the key header (a stable business key such as
//!    `order-42`), or generates a UUID v4 and sets it; either way the same key goes out on every
//!    attempt;
//! 2. sends the request again after a transport error (no connection, a timeout, or a connection
//!    that dropped before the answer arrived: the server may have run the request, which is
//!    exactly what the key makes safe to retry), 408, 429, any 5xx, and a 409 that says a request
//!    with this key is still running: one that carries `Retry-After` (the server adds it to every
//!    in-flight answer, also one an app's error hook renders in its own envelope), or an
//!    `application/problem+json` answer whose `code` is `idempotency_in_flight`;
//! 3. never retries any other 4xx, including the 409 `idempotency_conflict` (the key was first
//!    used with a different request: sending it again cannot succeed);
//! 4. waits between attempts with exponential backoff and full jitter, at least as long as
//!    `Retry-After` asks, and stops at the attempt cap or the elapsed cap of its
//!    [`RetryPolicy`], handing back the last answer;
//! 5. records a [`RetryOutcome`] in the final response (the key, the number of attempts, and
//!    whether the server replayed a stored response), read with [`ResponseExt`].
//!
//! Safe methods pass through untouched: no key, one attempt, no [`RetryOutcome`]. A 202 from a
//! route with `in_flight = "accept"` is a success like any other and is handed back as is.
//!
//! ```no_run
//! use std::time::Duration;
//!
//! use idempotent_client::reqwest_middleware::{reqwest, ClientBuilder};
//! use idempotent_client::{IdempotentRetry, ResponseExt, RetryPolicy};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! // reqwest's own timeout bounds each attempt; a timed-out attempt is retried.
//! let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build()?;
//! let client = ClientBuilder::new(http)
//!     .with(IdempotentRetry::new(RetryPolicy::default().max_attempts(4)))
//!     .build();
//!
//! // One logical operation: one generated key, reused by every retry of this `send`.
//! let response = client
//!     .post("https://shop.example/orders")
//!     .header("content-type", "application/json")
//!     .body(r#"{"item":"book","quantity":1}"#)
//!     .send()
//!     .await?;
//! if response.was_replayed() {
//!     // An earlier attempt had already created the order; this is its stored answer.
//! }
//! let outcome = response.retry_outcome().expect("a POST goes through IdempotentRetry");
//! println!("{} after {} attempt(s)", response.status(), outcome.attempts());
//!
//! // A stable business key: every process that retries order 42 sends the same key.
//! let response = client
//!     .post("https://shop.example/payments")
//!     .header("Idempotency-Key", "order-42-payment")
//!     .header("content-type", "application/json")
//!     .body(r#"{"amount":1200}"#)
//!     .send()
//!     .await?;
//! # Ok(())
//! # }
//! ```
//!
//! # One key per logical operation
//!
//! A key lives as long as one `send`. A generated key is gone once `send` returns, so an
//! operation retried later by your own code (a job queue, the next run of a process) must
//! carry a key of its own: derive it from the operation (`order-42-payment`) and set the key
//! header yourself. Use a new key for a genuinely new operation, and send the same body with
//! the same key: the server answers 409 `idempotency_conflict` otherwise.
//!
//! Retrying a write is only safe against endpoints that honour the key (`#[idempotent]` routes
//! of this crate, or any server implementing the same contract). Do not stack another retrying
//! layer on the same client (reqwest-retry, or a `reqwest::ClientBuilder::retry` policy beyond
//! reqwest's default of protocol-level refusals): attempts would multiply.
//!
//! # Bodies that cannot be cloned
//!
//! Every retry sends a clone of the request. A request whose body is a stream
//! (`reqwest::Body::wrap_stream`, `Body::wrap`) cannot be cloned: it gets its key and is sent
//! once, never retried.
//!
//! # TLS and other reqwest features
//!
//! This crate enables no reqwest feature: no TLS, HTTP/2 or system proxy of its own. Depend on
//! reqwest yourself with what you need, e.g. `reqwest = { version = "0.13", features =
//! ["rustls"] }`; cargo unifies features, so the client you build has them.
//!
//! # Cancellation
//!
//! Dropping the `send` future stops at once, between attempts or during one. The server may
//! have run the operation by then; only a caller-supplied key lets a later call find its
//! result.
//!
//! # Logging
//!
//! Each retry, and each decision to stop early, is a `tracing` debug event with the attempt
//! number, the status or transport error, and the delay. Keys and bodies are never logged.
#![warn(missing_docs)]

use std::fmt;
use std::time::{Duration, SystemTime};

use http::Extensions;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE, RETRY_AFTER};
use reqwest::{Method, Request, Response, ResponseBuilderExt, StatusCode};
use reqwest_middleware::{Middleware, Next};
use serde::Deserialize;
use tokio::time::Instant;

/// The reqwest-middleware crate this crate is built on, and through it
/// `reqwest_middleware::reqwest`: the versions [`IdempotentRetry`] works with.
#[doc(no_inline)]
pub use reqwest_middleware;

/// When [`IdempotentRetry`] stops, and how long it waits between attempts.
///
/// Before retry number `n` (0 for the first retry) it sleeps a random time between zero and
/// `min(max_delay, base_delay * 2^n)` ("full jitter", so that many clients failing together do
/// not retry together), or longer if the answer's `Retry-After` asks for longer: `Retry-After`
/// is a lower bound and may exceed `max_delay`. It gives up, and returns the last answer, when
/// `max_attempts` attempts were made or when the next attempt would start more than
/// `max_elapsed` after the first one; in particular a `Retry-After` longer than the remaining
/// budget ends the retries at once instead of sleeping past the cap.
///
/// The elapsed cap bounds when a new attempt may start, not how long one attempt takes: bound
/// that with reqwest's own `timeout` (a timed-out attempt is retried like any transport error).
///
/// ```
/// use std::time::Duration;
///
/// use idempotent_client::RetryPolicy;
///
/// // The defaults: 5 attempts, 30 s in all, backoff windows of 100 ms, 200 ms, 400 ms, ... up to 5 s.
/// let patient = RetryPolicy::default();
/// // A request on a user's critical path: 3 attempts within 2 s.
/// let quick = RetryPolicy::default()
///     .max_attempts(3)
///     .max_elapsed(Duration::from_secs(2))
///     .max_delay(Duration::from_millis(500));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    max_attempts: u32,
    max_elapsed: Duration,
    base_delay: Duration,
    max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 5,
            max_elapsed: Duration::from_secs(30),
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(5),
        }
    }
}

impl RetryPolicy {
    /// Attempts in all, the first included (default 5); `1` sends once and never retries. `0` is
    /// taken as `1`.
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts.max(1);
        self
    }

    /// Longest time from the start of the first attempt to the start of the last one (default
    /// 30 s).
    pub fn max_elapsed(mut self, elapsed: Duration) -> Self {
        self.max_elapsed = elapsed;
        self
    }

    /// Backoff window of the first retry, doubled for each further one (default 100 ms).
    pub fn base_delay(mut self, delay: Duration) -> Self {
        self.base_delay = delay;
        self
    }

    /// Largest backoff window (default 5 s). A longer `Retry-After` is still honoured.
    pub fn max_delay(mut self, delay: Duration) -> Self {
        self.max_delay = delay;
        self
    }

    /// The sleep before retry number `retry` (0 for the first).
    fn delay(&self, retry: u32, retry_after: Option<Duration>) -> Duration {
        let window = self
            .base_delay
            .saturating_mul(2u32.saturating_pow(retry))
            .min(self.max_delay);
        let jittered = window.mul_f64(fastrand::f64());
        jittered.max(retry_after.unwrap_or_default())
    }
}

/// The middleware: one idempotency key per `send`, retried under a [`RetryPolicy`].
///
/// Add it to a [`reqwest_middleware::ClientBuilder`] with `.with(...)`; the [crate
/// documentation](crate) describes what it retries and why.
///
/// # Errors
///
/// A `send` through it fails with:
/// - the last transport error, when no attempt got an answer before a cap was reached (or the
///   body could not be cloned for a retry);
/// - at once, without retrying, with a reqwest builder or redirect-policy error, or with an
///   error of another middleware further down the chain: sending again would fail the same way.
///
/// After an error the generated key is lost with the future: supply your own key when the
/// operation may have to be resumed later.
///
/// # Concurrent calls
///
/// The middleware keeps no state between calls: concurrent `send`s each have their own key and
/// attempts (unless the caller gives them the same key, which is how two processes converge on
/// one operation: the server runs it once and answers the other with 409 in flight, retried
/// here, then with the replay).
///
/// ```no_run
/// use idempotent_client::reqwest_middleware::reqwest::{self, header::HeaderName};
/// use idempotent_client::reqwest_middleware::ClientBuilder;
/// use idempotent_client::{IdempotentRetry, RetryPolicy};
///
/// // A server whose routes read the key from `X-Idempotency-Key` and mark replays with
/// // `X-Idempotency-Replayed`.
/// let client = ClientBuilder::new(reqwest::Client::new())
///     .with(
///         IdempotentRetry::new(RetryPolicy::default())
///             .key_header(HeaderName::from_static("x-idempotency-key"))
///             .replay_header(HeaderName::from_static("x-idempotency-replayed")),
///     )
///     .build();
/// ```
#[derive(Debug, Clone)]
pub struct IdempotentRetry {
    policy: RetryPolicy,
    key_header: HeaderName,
    replay_header: HeaderName,
}

impl Default for IdempotentRetry {
    /// [`RetryPolicy::default`], keys in `Idempotency-Key`, replays marked by
    /// `Idempotency-Replayed: true`.
    fn default() -> Self {
        Self::new(RetryPolicy::default())
    }
}

impl IdempotentRetry {
    /// Retries under `policy`, with the key in `Idempotency-Key` and replays marked by
    /// `Idempotency-Replayed: true` (this crate's server defaults).
    pub fn new(policy: RetryPolicy) -> Self {
        Self {
            policy,
            key_header: HeaderName::from_static("idempotency-key"),
            replay_header: HeaderName::from_static("idempotency-replayed"),
        }
    }

    /// The header that carries the key (default `Idempotency-Key`); match the server route's
    /// `header = "..."`. A caller-supplied key is read from this header too.
    ///
    /// A name is checked where it is made: `HeaderName::from_static("x-idempotency-key")` (in
    /// lowercase) for a constant, `HeaderName::try_from(name)` (any case, with an error to
    /// handle) for a name read from configuration.
    pub fn key_header(mut self, name: HeaderName) -> Self {
        self.key_header = name;
        self
    }

    /// The header whose value `true` marks a replayed response (default `Idempotency-Replayed`);
    /// match the server's `IdempotencyBuilder::replay_header`.
    pub fn replay_header(mut self, name: HeaderName) -> Self {
        self.replay_header = name;
        self
    }

    /// The caller's key if the key header holds one, else a fresh UUID v4, set in the header.
    /// A blank value counts as none, as it does for the server (which would run the request
    /// unprotected).
    fn key(&self, headers: &mut HeaderMap) -> String {
        if let Some(own) = headers.get(&self.key_header).filter(|value| !is_blank(value)) {
            return String::from_utf8_lossy(own.as_bytes()).into_owned();
        }
        let key = uuid::Uuid::new_v4().to_string();
        let value = HeaderValue::from_str(&key).expect("a UUID is a valid header value");
        headers.insert(self.key_header.clone(), value);
        key
    }

    /// The answer handed to the caller, with its [`RetryOutcome`].
    fn finish(
        &self,
        result: reqwest_middleware::Result<Response>,
        key: String,
        attempts: u32,
    ) -> reqwest_middleware::Result<Response> {
        result.map(|mut response| {
            let replayed = response
                .headers()
                .get(&self.replay_header)
                .is_some_and(|value| value.as_bytes().eq_ignore_ascii_case(b"true"));
            response.extensions_mut().insert(RetryOutcome {
                key,
                attempts,
                replayed,
            });
            response
        })
    }
}

#[async_trait::async_trait]
impl Middleware for IdempotentRetry {
    async fn handle(
        &self,
        mut request: Request,
        extensions: &mut Extensions,
        next: Next<'_>,
    ) -> reqwest_middleware::Result<Response> {
        if is_safe(request.method()) {
            return next.run(request, extensions).await;
        }
        let key = self.key(request.headers_mut());
        let started = Instant::now();
        let mut attempts = 0;
        loop {
            attempts += 1;
            let copy = if attempts < self.policy.max_attempts {
                request.try_clone()
            } else {
                None
            };
            let (result, retry_after) = match judge(next.clone().run(request, extensions).await).await {
                Verdict::Final(result) => return self.finish(result, key, attempts),
                Verdict::Retry(result, retry_after) => (result, retry_after),
            };
            let Some(copy) = copy else {
                let reason = if attempts >= self.policy.max_attempts {
                    "attempt cap reached"
                } else {
                    "the body is a stream and cannot be sent again"
                };
                log_stop(&result, attempts, reason);
                return self.finish(result, key, attempts);
            };
            let delay = self.policy.delay(attempts - 1, retry_after);
            if started.elapsed().saturating_add(delay) > self.policy.max_elapsed {
                log_stop(&result, attempts, "the next attempt would start past the elapsed cap");
                return self.finish(result, key, attempts);
            }
            log_retry(&result, attempts, delay);
            tokio::time::sleep(delay).await;
            request = copy;
        }
    }
}

/// Whether `result` is worth another attempt, and the wait its server asked for.
async fn judge(result: reqwest_middleware::Result<Response>) -> Verdict {
    let response = match result {
        Ok(response) => response,
        Err(error) if is_transport(&error) => return Verdict::Retry(Err(error), None),
        Err(error) => return Verdict::Final(Err(error)),
    };
    let status = response.status();
    let retry_after = retry_after(response.headers());
    if matches!(status, StatusCode::REQUEST_TIMEOUT | StatusCode::TOO_MANY_REQUESTS) || status.is_server_error() {
        return Verdict::Retry(Ok(response), retry_after);
    }
    // The in-flight 409 asks the client to come back; a conflict never carries `Retry-After`.
    if status == StatusCode::CONFLICT && retry_after.is_some() {
        return Verdict::Retry(Ok(response), retry_after);
    }
    if status == StatusCode::CONFLICT && is_problem(response.headers()) {
        return match read_problem(response).await {
            Ok((response, code)) if code.as_deref() == Some("idempotency_in_flight") => {
                Verdict::Retry(Ok(response), retry_after)
            }
            Ok((response, _)) => Verdict::Final(Ok(response)),
            // The answer broke off mid-body: a transport failure like any other.
            Err(error) => Verdict::Retry(Err(error.into()), retry_after),
        };
    }
    Verdict::Final(Ok(response))
}

/// What an attempt's answer calls for.
enum Verdict {
    /// Hand it to the caller.
    Final(reqwest_middleware::Result<Response>),
    /// Try again (after at least the `Retry-After`, if any), or hand it over if a cap is reached.
    Retry(reqwest_middleware::Result<Response>, Option<Duration>),
}

/// What [`IdempotentRetry`] records in the extensions of the response it returns.
///
/// Read it with [`ResponseExt`]. Its `Debug` output leaves the key out: a key is a bearer-like
/// secret, and logs are no place for it.
#[derive(Clone, PartialEq, Eq)]
pub struct RetryOutcome {
    key: String,
    attempts: u32,
    replayed: bool,
}

impl RetryOutcome {
    /// The key sent on every attempt: the caller's own, or the generated UUID v4.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// How many times the request was sent, the first included.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// Whether this response is the server's stored answer to an earlier attempt (its replay
    /// header said `true`): the operation ran once, before this attempt.
    pub fn replayed(&self) -> bool {
        self.replayed
    }
}

impl fmt::Debug for RetryOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryOutcome")
            .field("key", &format_args!("<{} bytes>", self.key.len()))
            .field("attempts", &self.attempts)
            .field("replayed", &self.replayed)
            .finish()
    }
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for reqwest::Response {}
}

/// Reads the [`RetryOutcome`] of a `reqwest::Response`.
///
/// ```no_run
/// use idempotent_client::reqwest_middleware::ClientWithMiddleware;
/// use idempotent_client::ResponseExt;
///
/// # async fn pay(client: &ClientWithMiddleware) -> Result<(), Box<dyn std::error::Error>> {
/// let response = client.post("https://shop.example/payments").body("{}").send().await?;
/// if response.was_replayed() {
///     println!("already paid");
/// }
/// # Ok(())
/// # }
/// ```
pub trait ResponseExt: sealed::Sealed {
    /// What [`IdempotentRetry`] recorded; `None` when the response did not go through it (a
    /// safe method, or a client without it).
    fn retry_outcome(&self) -> Option<&RetryOutcome>;

    /// Whether the server replayed a stored answer ([`RetryOutcome::replayed`]); `false` without
    /// a [`RetryOutcome`].
    fn was_replayed(&self) -> bool {
        self.retry_outcome().is_some_and(RetryOutcome::replayed)
    }
}

impl ResponseExt for Response {
    fn retry_outcome(&self) -> Option<&RetryOutcome> {
        self.extensions().get::<RetryOutcome>()
    }
}

fn is_safe(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE)
}

fn is_blank(value: &HeaderValue) -> bool {
    value.as_bytes().trim_ascii().is_empty()
}

/// Every failure to get an answer, whether or not the request reached the server: with the key,
/// sending it again is safe. Builder and redirect-policy errors would only fail again, and
/// another middleware's errors are its own business.
fn is_transport(error: &reqwest_middleware::Error) -> bool {
    matches!(error, reqwest_middleware::Error::Reqwest(error)
        if error.is_connect() || error.is_timeout() || error.is_request())
}

/// `Retry-After` as delta-seconds or an HTTP-date (a date in the past is no wait).
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(SystemTime::now()).unwrap_or_default())
}

fn is_problem(headers: &HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .is_some_and(|media_type| media_type.trim().eq_ignore_ascii_case("application/problem+json"))
}

#[derive(Deserialize)]
struct Problem {
    code: Option<String>,
}

/// Reads a problem document's `code`, and rebuilds the response around the bytes read, so the
/// caller still gets the whole answer (status, version, headers, extensions, URL and body).
async fn read_problem(mut response: Response) -> reqwest::Result<(Response, Option<String>)> {
    let url = response.url().clone();
    let status = response.status();
    let version = response.version();
    let headers = std::mem::take(response.headers_mut());
    let extensions = std::mem::take(response.extensions_mut());
    let body = response.bytes().await?;
    let code = serde_json::from_slice::<Problem>(&body)
        .ok()
        .and_then(|problem| problem.code);
    let mut rebuilt = http::Response::builder().status(status).version(version);
    if let Some(slot) = rebuilt.headers_mut() {
        *slot = headers;
    }
    if let Some(slot) = rebuilt.extensions_mut() {
        *slot = extensions;
    }
    let rebuilt = rebuilt
        .url(url)
        .body(body)
        .expect("a builder given only parts of a valid response");
    Ok((Response::from(rebuilt), code))
}

fn log_retry(result: &reqwest_middleware::Result<Response>, attempt: u32, delay: Duration) {
    let delay_ms = delay.as_millis();
    match result {
        Ok(response) => tracing::debug!(
            attempt,
            status = response.status().as_u16(),
            delay_ms,
            "retrying with the same idempotency key"
        ),
        Err(error) => tracing::debug!(
            attempt,
            error = %Causes(error),
            delay_ms,
            "retrying with the same idempotency key"
        ),
    }
}

fn log_stop(result: &reqwest_middleware::Result<Response>, attempt: u32, reason: &'static str) {
    match result {
        Ok(response) => tracing::debug!(
            attempt,
            status = response.status().as_u16(),
            reason,
            "not retrying; returning the last answer"
        ),
        Err(error) => tracing::debug!(
            attempt,
            error = %Causes(error),
            reason,
            "not retrying; returning the last error"
        ),
    }
}

/// An error followed by its sources: reqwest's own message ("error sending request for url
/// ...") does not say what went wrong.
struct Causes<'a>(&'a dyn std::error::Error);

impl fmt::Display for Causes<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(cause) = source {
            write!(f, ": {cause}")?;
            source = cause.source();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers_with(name: HeaderName, value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(name, HeaderValue::from_str(value).unwrap());
        headers
    }

    #[test]
    fn retry_after_reads_delta_seconds() {
        assert_eq!(
            retry_after(&headers_with(RETRY_AFTER, " 3 ")),
            Some(Duration::from_secs(3))
        );
    }

    #[test]
    fn retry_after_reads_an_http_date() {
        let at = SystemTime::now() + Duration::from_secs(120);
        let wait = retry_after(&headers_with(RETRY_AFTER, &httpdate::fmt_http_date(at))).unwrap();
        // The date has whole seconds.
        assert!(
            wait > Duration::from_secs(118) && wait <= Duration::from_secs(120),
            "{wait:?}"
        );
    }

    #[test]
    fn retry_after_in_the_past_is_no_wait() {
        let headers = headers_with(RETRY_AFTER, "Wed, 21 Oct 2015 07:28:00 GMT");
        assert_eq!(retry_after(&headers), Some(Duration::ZERO));
    }

    #[test]
    fn retry_after_that_is_neither_is_ignored() {
        assert_eq!(retry_after(&headers_with(RETRY_AFTER, "soon")), None);
        assert_eq!(retry_after(&headers_with(RETRY_AFTER, "-1")), None);
        assert_eq!(retry_after(&HeaderMap::new()), None);
    }

    #[test]
    fn delays_stay_inside_the_doubling_window_up_to_the_cap() {
        let policy = RetryPolicy::default()
            .base_delay(Duration::from_millis(100))
            .max_delay(Duration::from_millis(1000));
        for (retry, window) in [(0, 100), (1, 200), (2, 400), (3, 800), (4, 1000), (40, 1000)] {
            for _ in 0..200 {
                let delay = policy.delay(retry, None);
                assert!(delay <= Duration::from_millis(window), "retry {retry}: {delay:?}");
            }
        }
    }

    #[test]
    fn delays_are_jittered_over_the_whole_window() {
        let policy = RetryPolicy::default().base_delay(Duration::from_millis(1000));
        let delays: Vec<Duration> = (0..200).map(|_| policy.delay(0, None)).collect();
        assert!(delays.iter().any(|d| *d < Duration::from_millis(250)), "{delays:?}");
        assert!(delays.iter().any(|d| *d > Duration::from_millis(750)), "{delays:?}");
    }

    #[test]
    fn retry_after_is_a_lower_bound_even_above_the_max_delay() {
        let policy = RetryPolicy::default().max_delay(Duration::from_millis(10));
        for _ in 0..100 {
            assert_eq!(policy.delay(3, Some(Duration::from_secs(2))), Duration::from_secs(2));
        }
    }

    #[test]
    fn zero_attempts_means_one() {
        assert_eq!(RetryPolicy::default().max_attempts(0).max_attempts, 1);
    }

    #[test]
    fn only_problem_documents_are_read() {
        assert!(is_problem(&headers_with(CONTENT_TYPE, "application/problem+json")));
        assert!(is_problem(&headers_with(
            CONTENT_TYPE,
            "Application/Problem+JSON; charset=utf-8"
        )));
        assert!(!is_problem(&headers_with(CONTENT_TYPE, "application/json")));
        assert!(!is_problem(&HeaderMap::new()));
    }

    #[test]
    fn a_generated_key_is_set_and_a_callers_key_kept() {
        let retry = IdempotentRetry::default();
        let mut headers = HeaderMap::new();
        let generated = retry.key(&mut headers);
        assert_eq!(uuid::Uuid::parse_str(&generated).unwrap().get_version_num(), 4);
        assert_eq!(headers["idempotency-key"], generated.as_str());

        let mut own = headers_with(HeaderName::from_static("idempotency-key"), "order-42");
        assert_eq!(retry.key(&mut own), "order-42");
        assert_eq!(own["idempotency-key"], "order-42");

        let mut blank = headers_with(HeaderName::from_static("idempotency-key"), "  ");
        let replaced = retry.key(&mut blank);
        assert_ne!(replaced.trim(), "");
        assert_eq!(blank["idempotency-key"], replaced.as_str());
    }

    #[test]
    fn the_outcome_debug_leaves_the_key_out() {
        let outcome = RetryOutcome {
            key: "secret-key".into(),
            attempts: 2,
            replayed: true,
        };
        let debug = format!("{outcome:?}");
        assert!(!debug.contains("secret-key"), "{debug}");
        assert!(debug.contains("attempts: 2"), "{debug}");
    }
}
