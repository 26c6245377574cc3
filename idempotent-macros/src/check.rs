//! Stage two: raw arguments validated into typed [`Options`], every mistake reported at once.
//!
//! What each argument accepts is its entry in [`ARGUMENTS`]; the value checks it uses, and the
//! rules that join arguments, are here.

use proc_macro2::{Span, TokenTree};
use quote::ToTokens;
use syn::spanned::Spanned;
use syn::{Ident, Lit, LitStr};

use crate::arguments::{argument, Cache, InFlight, Options, ARGUMENTS};
use crate::attr::{RawArg, RawValue};
use crate::duration;
use crate::errors::Errors;

impl Options {
    /// Validates every argument and the rules that join them. A mistake is recorded in `errors`
    /// and its argument keeps its default, so every other argument is still checked.
    pub fn from_args(args: Vec<RawArg>, errors: &mut Errors) -> Self {
        let mut options = Options::default();
        let mut seen: Vec<&'static str> = Vec::new();
        for arg in args {
            let name = arg.name.to_string();
            let Some(argument) = argument(&name) else {
                unknown(&arg.name, errors);
                continue;
            };
            if seen.contains(&argument.name) {
                errors.push(
                    arg.name.span(),
                    format!("duplicate argument `{name}`; give each argument once"),
                );
                continue;
            }
            seen.push(argument.name);
            if (argument.read)(&arg, errors, &mut options) {
                options.value_spans.push((argument.name, arg.value_span()));
            }
        }
        check_combinations(&options, errors);
        options
    }
}

/// An argument that is not in the table, with the one a typo most likely meant.
fn unknown(name: &Ident, errors: &mut Errors) {
    let names = || ARGUMENTS.iter().map(|argument| argument.name);
    let expected: Vec<String> = names().map(|name| format!("`{name}`")).collect();
    let hint = did_you_mean(&name.to_string(), names()).map_or(String::new(), |a| format!(" did you mean `{a}`?"));
    errors.push(
        name.span(),
        format!(
            "unknown argument `{name}`;{hint} expected one of {}",
            expected.join(", ")
        ),
    );
}

/// The rules that join arguments.
fn check_combinations(options: &Options, errors: &mut Errors) {
    if let (InFlight::Accept, Cache::All, Some(cache_span)) =
        (options.in_flight, options.cache, options.value_span("cache"))
    {
        errors.push(
            cache_span,
            "`cache = \"all\"` cannot be combined with `in_flight = \"accept\"`: a 202 promises that a retry gets the \
             outcome, and storing server errors would make a transient failure that outcome for the whole ttl; \
             use `cache = \"success\"` or `cache = \"non-server-error\"`",
        );
    }
}

impl RawArg {
    fn value_span(&self) -> Span {
        match &self.value {
            RawValue::Lit(lit) => lit.span(),
            RawValue::Other(expr) => expr.span(),
            RawValue::Missing => self.name.span(),
        }
    }
}

/// Reports a bare `name` written without `= value`.
fn missing<T>(arg: &RawArg, errors: &mut Errors) -> Option<T> {
    errors.push(
        arg.name.span(),
        format!("`{}` needs a value, e.g. {}", arg.name, example(&arg.name)),
    );
    None
}

pub(crate) fn string(arg: &RawArg, errors: &mut Errors) -> Option<LitStr> {
    match &arg.value {
        RawValue::Lit(Lit::Str(s)) => Some(s.clone()),
        RawValue::Missing => missing(arg, errors),
        _ => {
            errors.push(
                arg.value_span(),
                format!("`{}` takes a string literal, e.g. {}", arg.name, example(&arg.name)),
            );
            None
        }
    }
}

pub(crate) fn boolean(arg: &RawArg, errors: &mut Errors) -> Option<bool> {
    match &arg.value {
        RawValue::Lit(Lit::Bool(b)) => Some(b.value),
        RawValue::Missing => missing(arg, errors),
        _ => {
            errors.push(
                arg.value_span(),
                format!("`{}` takes `true` or `false`, without quotes", arg.name),
            );
            None
        }
    }
}

pub(crate) fn choice<T: Copy>(arg: &RawArg, errors: &mut Errors, choices: &[(&str, T)]) -> Option<T> {
    let s = string(arg, errors)?;
    let value = s.value();
    if let Some((_, choice)) = choices.iter().find(|(name, _)| *name == value) {
        return Some(*choice);
    }
    let allowed: Vec<String> = choices.iter().map(|(name, _)| format!("`\"{name}\"`")).collect();
    let hint = did_you_mean(&value, choices.iter().map(|(name, _)| *name))
        .map_or(String::new(), |name| format!(" did you mean `\"{name}\"`?"));
    errors.push(
        s.span(),
        format!(
            "unknown `{}` value `\"{value}\"`;{hint} expected one of {}",
            arg.name,
            allowed.join(", ")
        ),
    );
    None
}

/// The candidate a typo most likely meant: close in spelling, ignoring case, `-` and `_`.
fn did_you_mean<'a>(written: &str, candidates: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    let normalise = |text: &str| text.to_ascii_lowercase().replace('-', "_");
    let written = normalise(written);
    candidates
        .map(|candidate| (strsim::damerau_levenshtein(&written, &normalise(candidate)), candidate))
        .filter(|(distance, candidate)| *distance <= (candidate.len() / 3).max(1))
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, candidate)| candidate)
}

/// A valid use of the argument, shown in its errors.
fn example(name: &Ident) -> &'static str {
    argument(&name.to_string()).map_or("", |argument| argument.example)
}

pub(crate) fn ttl(s: &LitStr, errors: &mut Errors) -> Option<u64> {
    duration::parse_seconds(&s.value())
        .map_err(|e| errors.push(s.span(), format!("invalid `ttl = \"{}\"`: {e}", s.value())))
        .ok()
}

/// A header name is an RFC 9110 token.
pub(crate) fn header(s: &LitStr, errors: &mut Errors) -> Option<String> {
    let value = s.value();
    let is_tchar = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
    if value.is_empty() || !value.chars().all(is_tchar) {
        errors.push(
            s.span(),
            format!(
                "`\"{value}\"` is not a valid header name; expected letters, digits and `-`, \
                 e.g. `\"X-Idempotency-Key\"`"
            ),
        );
        return None;
    }
    Some(value)
}

/// RFC 6901: `/`-separated tokens in which `~` is only `~0` or `~1`. The empty pointer (the
/// whole body) is refused: a key must be one field.
pub(crate) fn json_pointer(s: &LitStr, errors: &mut Errors) -> Option<String> {
    let value = s.value();
    let bad_escape = value
        .match_indices('~')
        .any(|(i, _)| !matches!(value.as_bytes().get(i + 1), Some(b'0' | b'1')));
    if !value.starts_with('/') || bad_escape {
        errors.push(
            s.span(),
            format!(
                "`\"{value}\"` is not a JSON Pointer to a field; expected e.g. \
                 `\"/reference_id\"` or `\"/order/id\"`"
            ),
        );
        return None;
    }
    Some(value)
}

/// The parsed path keeps the literal's span, so a path that does not resolve is reported there.
pub(crate) fn crate_path(s: &LitStr, errors: &mut Errors) -> Option<syn::Path> {
    s.parse::<syn::Path>()
        .map_err(|_| {
            errors.push(
                s.span(),
                format!(
                    "`\"{}\"` is not a path; expected the path of the `idempotent_actix` crate, \
                     e.g. `crate = \"::idempotent_actix\"`",
                    s.value()
                ),
            );
        })
        .ok()
}

/// Where generated code finds the facade: under the name the user's `Cargo.toml` gives it (a
/// renamed dependency such as `idem = { package = "idempotent-actix" }` is found), else
/// `::idempotent_actix`. The facade never uses the attribute itself, so when the crate being
/// compiled *is* the facade, this is one of its examples, benches or doc tests, which see it
/// as `idempotent_actix` too.
pub(crate) fn default_crate_path() -> syn::Path {
    match proc_macro_crate::crate_name("idempotent-actix") {
        Ok(proc_macro_crate::FoundCrate::Name(name)) => {
            let name = Ident::new(&name, Span::call_site());
            syn::parse_quote!(::#name)
        }
        _ => syn::parse_quote!(::idempotent_actix),
    }
}

/// The item must be an `async fn` without `self`; returns it when it is a function. A
/// function written without `async` comes back with it, so that registering it (`.to(f)`,
/// `#[post]`) adds no error to the one that says what to change.
pub fn handler(item: syn::Item, errors: &mut Errors) -> Option<syn::ItemFn> {
    let syn::Item::Fn(function) = item else {
        errors.push(
            span_after_attributes(&item),
            "`#[idempotent]` applies only to an `async fn` actix-web handler",
        );
        return None;
    };
    let mut function = function;
    if function.sig.asyncness.is_none() {
        let fn_span = function.sig.fn_token.span;
        errors.push(
            fn_span,
            "`#[idempotent]` handlers must be `async fn`; add `async` before `fn`",
        );
        function.sig.asyncness = Some(syn::Token![async](fn_span));
    }
    let signature = &function.sig;
    if let Some(receiver) = signature.receiver() {
        errors.push(
            receiver.self_token.span,
            "`#[idempotent]` handlers cannot take `self`; actix-web handlers are free functions, \
             so take state through `web::Data` instead",
        );
    }
    if let Some(variadic) = &signature.variadic {
        errors.push(variadic.dots.spans[0], "`#[idempotent]` handlers cannot be variadic");
    }
    Some(function)
}

/// Where the item itself starts (`struct`, `impl`, `pub`, ...), past its attributes and doc
/// comments.
fn span_after_attributes(item: &syn::Item) -> Span {
    let mut tokens = item.to_token_stream().into_iter();
    while let Some(token) = tokens.next() {
        match token {
            TokenTree::Punct(pound) if pound.as_char() == '#' => {
                tokens.next(); // the attribute's `[...]`
            }
            other => return other.span(),
        }
    }
    item.span()
}

#[cfg(test)]
mod tests {
    use proc_macro2::{Delimiter, Group, Literal, TokenStream, TokenTree};
    use quote::quote;

    use super::*;
    use crate::arguments::{Fingerprint, OnMismatch, Scope};
    use crate::attr;

    /// Runs stages one and two on `args`, returning the options and every error message.
    fn check(args: TokenStream) -> (Options, Vec<String>) {
        let mut errors = Errors::default();
        let options = Options::from_args(attr::parse_args(args, &mut errors), &mut errors);
        let messages = match errors.finish() {
            Ok(()) => Vec::new(),
            Err(error) => error.into_iter().map(|e| e.to_string()).collect(),
        };
        (options, messages)
    }

    fn valid(args: TokenStream) -> Options {
        let (options, errors) = check(args);
        assert!(errors.is_empty(), "unexpected errors: {errors:?}");
        options
    }

    fn errors(args: TokenStream) -> Vec<String> {
        check(args).1
    }

    fn path(path: &syn::Path) -> String {
        path.to_token_stream().to_string()
    }

    #[test]
    fn no_arguments_give_the_documented_defaults() {
        let options = valid(quote!());
        assert_eq!(options.ttl_seconds, 24 * 60 * 60);
        assert_eq!(options.scope, Scope::Global);
        assert_eq!(options.header, "Idempotency-Key");
        assert!(!options.required);
        assert_eq!(options.in_flight, InFlight::Wait);
        assert_eq!(options.on_mismatch, OnMismatch::Reject);
        assert_eq!(options.cache, Cache::Success);
        assert_eq!(options.fingerprint, Fingerprint::Body);
        assert_eq!(options.key_from, None);
        assert_eq!(path(&options.krate), ":: idempotent_actix");
    }

    #[test]
    fn every_argument_is_read() {
        let options = valid(quote!(
            ttl = "1h30m",
            scope = "tenant",
            header = "X-Event-ID",
            required = true,
            in_flight = "reject",
            on_mismatch = "execute",
            cache = "non-server-error",
            fingerprint = "json",
            key_from = "/order/id",
            crate = "renamed",
        ));
        assert_eq!(options.ttl_seconds, 5_400);
        assert_eq!(options.scope, Scope::Tenant);
        assert_eq!(options.header, "X-Event-ID");
        assert!(options.required);
        assert_eq!(options.in_flight, InFlight::Reject);
        assert_eq!(options.on_mismatch, OnMismatch::Execute);
        assert_eq!(options.cache, Cache::NonServerError);
        assert_eq!(options.fingerprint, Fingerprint::Json);
        assert_eq!(options.key_from.as_deref(), Some("/order/id"));
        assert_eq!(path(&options.krate), "renamed");
    }

    #[test]
    fn the_example_in_every_message_is_itself_valid() {
        for argument in ARGUMENTS {
            let args: TokenStream = argument.example.trim_matches('`').parse().unwrap();
            valid(args);
        }
    }

    #[test]
    fn a_zero_ttl_and_its_duplicate_are_both_reported() {
        assert_eq!(
            errors(quote!(ttl = "0s", ttl = "1h")),
            [
                "invalid `ttl = \"0s\"`: duration must be greater than zero, e.g. `\"30s\"`",
                "duplicate argument `ttl`; give each argument once",
            ]
        );
    }

    #[test]
    fn a_malformed_argument_does_not_hide_the_next_one() {
        assert_eq!(
            errors(quote!(ttl: "1h", scope = "user")),
            [
                "expected `=` and a value after `ttl`",
                "unknown `scope` value `\"user\"`; expected one of `\"global\"`, `\"tenant\"`",
            ]
        );
        assert_eq!(
            errors(quote!(required, cache = "all", in_flight = "accept")),
            [
                "`required` needs a value, e.g. `required = true`",
                "`cache = \"all\"` cannot be combined with `in_flight = \"accept\"`: a 202 promises that a retry gets \
                 the outcome, and storing server errors would make a transient failure that outcome for the whole \
                 ttl; use `cache = \"success\"` or `cache = \"non-server-error\"`",
            ]
        );
    }

    #[test]
    fn missing_separators_and_values_are_reported() {
        assert_eq!(
            errors(quote!(ttl = "1h" scope = "tenant")),
            ["expected `,` between arguments"]
        );
        assert_eq!(errors(quote!(ttl =)), ["expected a value after `ttl =`"]);
        assert_eq!(
            errors(quote!(ttl = "1h",, scope = "tenant")),
            ["expected an argument before `,`"]
        );
        assert_eq!(
            errors(quote!("ttl" = "1h")),
            ["expected an argument, e.g. `ttl = \"24h\"`"]
        );
    }

    #[test]
    fn a_trailing_comma_is_accepted() {
        assert_eq!(valid(quote!(scope = "tenant",)).scope, Scope::Tenant);
    }

    #[test]
    fn an_unknown_argument_lists_the_known_ones_and_is_never_a_duplicate() {
        assert_eq!(
            errors(quote!(ttll = "1h", ttll = "2h")),
            ["unknown argument `ttll`; did you mean `ttl`? expected one of `ttl`, `scope`, `header`, `required`, `in_flight`, \
                 `on_mismatch`, `cache`, `fingerprint`, `key_from`, `crate`"; 2]
        );
    }

    #[test]
    fn values_of_the_wrong_kind_are_reported_with_an_example() {
        assert_eq!(
            errors(quote!(ttl = 30, required = "yes", scope = tenant)),
            [
                "`ttl` takes a string literal, e.g. `ttl = \"24h\"`",
                "`required` takes `true` or `false`, without quotes",
                "`scope` takes a string literal, e.g. `scope = \"tenant\"`",
            ]
        );
    }

    #[test]
    fn a_value_from_a_macro_rules_fragment_is_unwrapped() {
        // `$ttl:expr` reaches the attribute as a literal inside an invisible group.
        let grouped = Group::new(Delimiter::None, TokenTree::Literal(Literal::string("15m")).into());
        assert_eq!(valid(quote!(ttl = #grouped)).ttl_seconds, 900);
    }

    #[test]
    fn header_names_must_be_tokens() {
        assert_eq!(
            errors(quote!(header = "Idempotency Key")),
            [
                "`\"Idempotency Key\"` is not a valid header name; expected letters, digits and `-`, \
                 e.g. `\"X-Idempotency-Key\"`"
            ]
        );
        assert_eq!(errors(quote!(header = "")).len(), 1);
    }

    #[test]
    fn key_from_must_be_a_json_pointer_to_a_field() {
        assert_eq!(
            valid(quote!(key_from = "/a~1b/c~0d")).key_from.as_deref(),
            Some("/a~1b/c~0d")
        );
        for pointer in ["reference_id", "", "/a~2b", "/a~"] {
            assert_eq!(
                errors(quote!(key_from = #pointer)),
                [format!(
                    "`\"{pointer}\"` is not a JSON Pointer to a field; expected e.g. \
                     `\"/reference_id\"` or `\"/order/id\"`"
                )]
            );
        }
    }

    #[test]
    fn a_typo_gets_a_suggestion_and_a_stranger_none() {
        let names = || ARGUMENTS.iter().map(|argument| argument.name);
        assert_eq!(did_you_mean("in_fligth", names()), Some("in_flight"));
        assert_eq!(did_you_mean("keyfrom", names()), Some("key_from"));
        assert_eq!(did_you_mean("TTL", names()), Some("ttl"));
        assert_eq!(did_you_mean("lifetime", names()), None);
        assert_eq!(
            errors(quote!(in_flight = "rejects")),
            [
                "unknown `in_flight` value `\"rejects\"`; did you mean `\"reject\"`? expected one of `\"wait\"`, \
             `\"reject\"`, `\"accept\"`"
            ]
        );
    }

    #[test]
    fn crate_must_be_a_path() {
        assert_eq!(
            path(&valid(quote!(crate = "crate::reexports::idempotency")).krate),
            "crate :: reexports :: idempotency"
        );
        assert_eq!(
            errors(quote!(crate = "idempotent actix")),
            [
                "`\"idempotent actix\"` is not a path; expected the path of the `idempotent_actix` crate, \
                 e.g. `crate = \"::idempotent_actix\"`"
            ]
        );
    }

    #[test]
    fn accept_in_flight_allows_the_other_cache_policies() {
        for cache in ["success", "non-server-error"] {
            valid(quote!(in_flight = "accept", cache = #cache));
        }
    }

    fn item_errors(item: syn::Item) -> Vec<String> {
        let mut errors = Errors::default();
        handler(item, &mut errors);
        match errors.finish() {
            Ok(()) => Vec::new(),
            Err(error) => error.into_iter().map(|e| e.to_string()).collect(),
        }
    }

    #[test]
    fn a_handler_is_an_async_fn_without_self() {
        assert!(item_errors(syn::parse_quote!(
            async fn create(body: Bytes) -> HttpResponse {}
        ))
        .is_empty());
        assert_eq!(
            item_errors(syn::parse_quote!(
                fn create() {}
            )),
            ["`#[idempotent]` handlers must be `async fn`; add `async` before `fn`"]
        );
        assert_eq!(
            item_errors(syn::parse_quote!(
                struct Order;
            )),
            ["`#[idempotent]` applies only to an `async fn` actix-web handler"]
        );
        assert_eq!(
            item_errors(syn::parse_quote!(
                fn create(&self) {}
            ))
            .len(),
            2
        );
    }
}
