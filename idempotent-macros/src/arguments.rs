//! The attribute's arguments, one entry each in [`ARGUMENTS`]: the name, a valid use shown in
//! errors, how the value is read into [`Options`], and the `RouteOptions` setter it becomes.
//!
//! Adding an argument is one entry here and its field (with its default) in [`Options`]; the
//! list of known arguments, the "did you mean" candidates, duplicate detection and the
//! expansion all come from the table.

use std::fmt::Debug;

use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote};
use syn::Ident;

use crate::attr::RawArg;
use crate::check::{boolean, choice, crate_path, default_crate_path, header, json_pointer, string, ttl};
use crate::errors::Errors;

/// How duplicates are keyed; mirrors `idempotent_runtime::Scope`, variant for variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Global,
    Tenant,
}

/// What a duplicate gets while the first request runs; mirrors `idempotent_runtime::InFlight`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InFlight {
    Wait,
    Reject,
    Accept,
}

/// What a reused key with another request gets; mirrors `idempotent_runtime::OnMismatch`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnMismatch {
    Reject,
    Execute,
}

/// Which outcomes are remembered; mirrors `idempotent_runtime::CachePolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cache {
    Success,
    NonServerError,
    All,
}

/// How the body enters the fingerprint; mirrors `idempotent_runtime::FingerprintMode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fingerprint {
    Body,
    Json,
}

/// The validated attribute: expansion reads only this. Each field starts at the argument's
/// default.
pub struct Options {
    pub ttl_seconds: u64,
    pub scope: Scope,
    /// Header name as written (matched case-insensitively).
    pub header: String,
    pub required: bool,
    pub in_flight: InFlight,
    pub on_mismatch: OnMismatch,
    pub cache: Cache,
    pub fingerprint: Fingerprint,
    pub key_from: Option<String>,
    pub krate: syn::Path,
    /// Where each argument given with a valid value was written, for the rules that join them.
    pub value_spans: Vec<(&'static str, Span)>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            ttl_seconds: 24 * 60 * 60,
            scope: Scope::Global,
            header: "Idempotency-Key".to_owned(),
            required: false,
            in_flight: InFlight::Wait,
            on_mismatch: OnMismatch::Reject,
            cache: Cache::Success,
            fingerprint: Fingerprint::Body,
            key_from: None,
            krate: default_crate_path(),
            value_spans: Vec::new(),
        }
    }
}

impl Options {
    /// Where the argument `name` was given with a valid value.
    pub fn value_span(&self, name: &str) -> Option<Span> {
        self.value_spans
            .iter()
            .find(|(given, _)| *given == name)
            .map(|(_, span)| *span)
    }
}

/// One argument of `#[idempotent(...)]`.
pub struct Argument {
    /// As written in the attribute.
    pub name: &'static str,
    /// A valid use of the argument, shown in its errors.
    pub example: &'static str,
    /// Reads a value into `options`, or records in `errors` what is wrong with it (the field then
    /// keeps its default); `true` when the value was valid.
    pub read: fn(&RawArg, &mut Errors, &mut Options) -> bool,
    /// The argument's part of the route's `RouteOptions`, a `const` setter call written after
    /// `RouteOptions::new(..)`; `private` is the path of `__private`.
    pub emit: fn(&Options, private: &TokenStream) -> TokenStream,
}

/// Every argument, in the order the documentation and the errors list them.
pub const ARGUMENTS: &[Argument] = &[
    Argument {
        name: "ttl",
        example: "`ttl = \"24h\"`",
        read: |arg, errors, options| {
            set(
                &mut options.ttl_seconds,
                string(arg, errors).and_then(|s| ttl(&s, errors)),
            )
        },
        emit: |options, _| {
            let seconds = options.ttl_seconds;
            quote!(.ttl(::core::time::Duration::from_secs(#seconds)))
        },
    },
    Argument {
        name: "scope",
        example: "`scope = \"tenant\"`",
        read: |arg, errors, options| {
            let choices = [("global", Scope::Global), ("tenant", Scope::Tenant)];
            set(&mut options.scope, choice(arg, errors, &choices))
        },
        emit: |options, private| {
            let scope = variant(options.scope);
            quote!(.scope(#private::Scope::#scope))
        },
    },
    Argument {
        name: "header",
        example: "`header = \"X-Idempotency-Key\"`",
        read: |arg, errors, options| {
            set(
                &mut options.header,
                string(arg, errors).and_then(|s| header(&s, errors)),
            )
        },
        emit: |options, private| {
            // `from_static` takes the lowercase form; `check::header` allowed only valid names.
            let name = options.header.to_ascii_lowercase();
            quote!(.header(#private::HeaderName::from_static(#name)))
        },
    },
    Argument {
        name: "required",
        example: "`required = true`",
        read: |arg, errors, options| set(&mut options.required, boolean(arg, errors)),
        emit: |options, _| {
            let required = options.required;
            quote!(.required(#required))
        },
    },
    Argument {
        name: "in_flight",
        example: "`in_flight = \"reject\"`",
        read: |arg, errors, options| {
            let choices = [
                ("wait", InFlight::Wait),
                ("reject", InFlight::Reject),
                ("accept", InFlight::Accept),
            ];
            set(&mut options.in_flight, choice(arg, errors, &choices))
        },
        emit: |options, private| {
            let in_flight = variant(options.in_flight);
            quote!(.in_flight(#private::InFlight::#in_flight))
        },
    },
    Argument {
        name: "on_mismatch",
        example: "`on_mismatch = \"execute\"`",
        read: |arg, errors, options| {
            let choices = [("reject", OnMismatch::Reject), ("execute", OnMismatch::Execute)];
            set(&mut options.on_mismatch, choice(arg, errors, &choices))
        },
        emit: |options, private| {
            let on_mismatch = variant(options.on_mismatch);
            quote!(.on_mismatch(#private::OnMismatch::#on_mismatch))
        },
    },
    Argument {
        name: "cache",
        example: "`cache = \"non-server-error\"`",
        read: |arg, errors, options| {
            let choices = [
                ("success", Cache::Success),
                ("non-server-error", Cache::NonServerError),
                ("all", Cache::All),
            ];
            set(&mut options.cache, choice(arg, errors, &choices))
        },
        emit: |options, private| {
            let cache = variant(options.cache);
            quote!(.cache(#private::CachePolicy::#cache))
        },
    },
    Argument {
        name: "fingerprint",
        example: "`fingerprint = \"json\"`",
        read: |arg, errors, options| {
            let choices = [("body", Fingerprint::Body), ("json", Fingerprint::Json)];
            set(&mut options.fingerprint, choice(arg, errors, &choices))
        },
        emit: |options, private| {
            let fingerprint = variant(options.fingerprint);
            quote!(.fingerprint(#private::FingerprintMode::#fingerprint))
        },
    },
    Argument {
        name: "key_from",
        example: "`key_from = \"/reference_id\"`",
        read: |arg, errors, options| {
            let pointer = string(arg, errors).and_then(|s| json_pointer(&s, errors));
            set(&mut options.key_from, pointer.map(Some))
        },
        emit: |options, _| match &options.key_from {
            Some(pointer) => quote!(.key_from(::core::option::Option::Some(#pointer))),
            None => quote!(.key_from(::core::option::Option::None)),
        },
    },
    Argument {
        name: "crate",
        example: "`crate = \"::idempotent_actix\"`",
        read: |arg, errors, options| {
            set(
                &mut options.krate,
                string(arg, errors).and_then(|s| crate_path(&s, errors)),
            )
        },
        // Not a route option: the path every other part is written under.
        emit: |_, _| TokenStream::new(),
    },
];

/// The entry of the argument written `name`.
pub fn argument(name: &str) -> Option<&'static Argument> {
    ARGUMENTS.iter().find(|argument| argument.name == name)
}

/// Keeps a valid value; an invalid one (`None`, already reported) leaves the default.
fn set<T>(field: &mut T, value: Option<T>) -> bool {
    match value {
        Some(value) => {
            *field = value;
            true
        }
        None => false,
    }
}

/// The runtime variant a mirrored enum value names: the same identifier.
fn variant(value: impl Debug) -> Ident {
    format_ident!("{value:?}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_argument_is_in_the_documented_table() {
        let docs = include_str!("lib.rs");
        for argument in ARGUMENTS {
            let row = format!("/// | `{}` |", argument.name);
            assert!(
                docs.contains(&row),
                "`{}` is missing from the table in lib.rs",
                argument.name
            );
        }
    }

    #[test]
    fn a_mirrored_value_is_written_as_the_runtime_variant() {
        assert_eq!(variant(Cache::NonServerError).to_string(), "NonServerError");
        assert_eq!(variant(InFlight::Accept).to_string(), "Accept");
    }
}
