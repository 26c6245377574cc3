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
//! rewritten handler from the typed model only.

mod attr;
mod check;
mod duration;
mod errors;
mod expand;

use proc_macro::TokenStream;

/// Makes an actix-web write handler safe to retry: a request that repeats an
/// `Idempotency-Key` gets the first response back instead of running the handler again.
///
/// See the `idempotent-actix` crate documentation for every argument and the runtime behaviour.
#[proc_macro_attribute]
pub fn idempotent(args: TokenStream, item: TokenStream) -> TokenStream {
    expand::idempotent(args.into(), item.into()).into()
}
