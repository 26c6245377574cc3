//! The `#[idempotent]` attribute of [`idempotent-actix`](https://docs.rs/idempotent-actix).
//!
//! Depend on `idempotent-actix` and write `use idempotent_actix::idempotent;`: this crate only
//! parses, validates and rewrites the handler; everything that runs lives in
//! `idempotent-runtime`, reached through `idempotent_actix::__private` (or the path given with
//! `crate = "..."`).
//!
//! The attribute works in three stages, one private module each: `attr` parses the arguments
//! into a raw model that keeps every token's span, `check` validates them into typed `Options`
//! (reporting every mistake at once, collected in `errors::Errors`), and `expand` writes the
//! rewritten handler from the typed model only. `arguments` is the table of the arguments,
//! one entry each: the name, how its value is read, and the setter it is written as.

mod arguments;
mod attr;
mod check;
mod duration;
mod errors;
mod expand;

use proc_macro::TokenStream;

/// Makes an actix-web write handler safe to retry: a request that repeats an
/// `Idempotency-Key` gets the first response back instead of running the handler again.
///
/// ```text
/// #[post("/orders")]
/// #[idempotent(ttl = "24h", scope = "tenant")]
/// async fn create_order(order: web::Json<NewOrder>, db: web::Data<Db>) -> actix_web::Result<HttpResponse> {
///     /* runs at most once per (tenant, Idempotency-Key) while the key is remembered */
/// }
/// ```
///
/// | argument | values | default |
/// |---|---|---|
/// | `ttl` | `"30s"`, `"15m"`, `"24h"`, `"7d"`, `"1h30m"` (at most 365 days) | `"24h"` |
/// | `scope` | `"global"`, `"tenant"` | `"global"` |
/// | `header` | a header name | `"Idempotency-Key"` |
/// | `required` | `true`, `false` | `false` |
/// | `in_flight` | `"wait"`, `"reject"`, `"accept"` | `"wait"` |
/// | `on_mismatch` | `"reject"`, `"execute"` | `"reject"` |
/// | `cache` | `"success"`, `"non-server-error"`, `"all"` | `"success"` |
/// | `fingerprint` | `"body"`, `"json"` | `"body"` |
/// | `key_from` | a JSON Pointer such as `"/reference_id"` | none |
/// | `crate` | a path such as `"::my_reexport::idempotent_actix"` | `"::idempotent_actix"` |
///
/// `in_flight = "accept"` cannot be combined with `cache = "all"`.
///
/// # What the rewritten handler looks like
///
/// The function keeps its name, visibility and every other attribute, but takes
/// `(HttpRequest, web::Payload)` and returns `HttpResponse`: the engine buffers the body,
/// fingerprints it, and then runs your extractors on the buffered bytes (with their own
/// configured limits) and calls your code. Consequences:
///
/// - call the handler through an `App` in tests (`actix_web::test::init_service`), not directly;
/// - put attributes that should see your arguments, such as `#[tracing::instrument]`, *above*
///   `#[idempotent]`: attributes above it are expanded first, on your original function.
///
/// See the `idempotent-actix` crate documentation for the runtime behaviour.
#[proc_macro_attribute]
pub fn idempotent(args: TokenStream, item: TokenStream) -> TokenStream {
    expand::idempotent(args.into(), item.into()).into()
}
