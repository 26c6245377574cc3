//! Stage two: raw arguments validated into typed [`Options`], every mistake reported at once.

use proc_macro2::Span;
use syn::spanned::Spanned;
use syn::{Ident, Lit, LitStr};

use crate::attr::{RawArg, RawValue};
use crate::duration;

/// Collects every error of one expansion, so the user sees all of them in one build.
#[derive(Default)]
pub struct Errors(Option<syn::Error>);

impl Errors {
    pub fn push(&mut self, span: Span, message: impl std::fmt::Display) {
        self.push_error(syn::Error::new(span, message));
    }

    pub fn push_error(&mut self, error: syn::Error) {
        match &mut self.0 {
            Some(existing) => existing.combine(error),
            None => self.0 = Some(error),
        }
    }

    pub fn finish(self) -> Result<(), syn::Error> {
        self.0.map_or(Ok(()), Err)
    }
}

/// How duplicates are keyed; mirrors `idempotent_runtime::Scope`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Global,
    Tenant,
}

/// What a duplicate gets while the first request runs; mirrors `idempotent_runtime::InFlight`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum InFlight {
    Wait,
    Reject,
    Accept,
}

/// What a reused key with another request gets; mirrors `idempotent_runtime::OnMismatch`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum OnMismatch {
    Reject,
    Execute,
}

/// Which outcomes are remembered; mirrors `idempotent_runtime::CachePolicy`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Cache {
    Success,
    NonServerError,
    All,
}

/// How the body enters the fingerprint; mirrors `idempotent_runtime::FingerprintMode`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Fingerprint {
    Body,
    Json,
}

/// The validated attribute: expansion reads only this.
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
}

const ARGUMENTS: &str = "`ttl`, `scope`, `header`, `required`, `in_flight`, `on_mismatch`, `cache`, `fingerprint`, `key_from`, `crate`";

const DEFAULT_TTL_SECONDS: u64 = 24 * 60 * 60;

impl Options {
    /// Validates every argument and the rules that join them.
    pub fn from_args(args: Vec<RawArg>) -> Result<Self, syn::Error> {
        let mut errors = Errors::default();
        let mut seen: Vec<Ident> = Vec::new();
        let mut builder = Builder::default();
        for arg in args {
            if seen.contains(&arg.name) {
                errors.push(arg.name.span(), format!("duplicate argument `{}`", arg.name));
                continue;
            }
            seen.push(arg.name.clone());
            builder.set(arg, &mut errors);
        }
        let options = builder.build(&mut errors);
        errors.finish().map(|()| options)
    }
}

/// Arguments as they are set; `build` applies defaults and the cross-argument rules.
#[derive(Default)]
struct Builder {
    ttl_seconds: Option<u64>,
    scope: Option<Scope>,
    header: Option<String>,
    required: Option<bool>,
    in_flight: Option<(InFlight, Span)>,
    on_mismatch: Option<OnMismatch>,
    cache: Option<(Cache, Span)>,
    fingerprint: Option<Fingerprint>,
    key_from: Option<String>,
    krate: Option<syn::Path>,
}

impl Builder {
    fn set(&mut self, arg: RawArg, errors: &mut Errors) {
        let name = arg.name.to_string();
        match name.as_str() {
            "ttl" => self.ttl_seconds = string(&arg, errors).and_then(|s| ttl(&s, errors)),
            "scope" => {
                self.scope = choice(&arg, errors, &[("global", Scope::Global), ("tenant", Scope::Tenant)])
            }
            "header" => self.header = string(&arg, errors).and_then(|s| header(&s, errors)),
            "required" => self.required = boolean(&arg, errors),
            "in_flight" => {
                let choices = [("wait", InFlight::Wait), ("reject", InFlight::Reject), ("accept", InFlight::Accept)];
                self.in_flight = choice(&arg, errors, &choices).map(|c| (c, arg.value_span()));
            }
            "on_mismatch" => {
                let choices = [("reject", OnMismatch::Reject), ("execute", OnMismatch::Execute)];
                self.on_mismatch = choice(&arg, errors, &choices);
            }
            "cache" => {
                let choices = [
                    ("success", Cache::Success),
                    ("non-server-error", Cache::NonServerError),
                    ("all", Cache::All),
                ];
                self.cache = choice(&arg, errors, &choices).map(|c| (c, arg.value_span()));
            }
            "fingerprint" => {
                let choices = [("body", Fingerprint::Body), ("json", Fingerprint::Json)];
                self.fingerprint = choice(&arg, errors, &choices);
            }
            "key_from" => self.key_from = string(&arg, errors).and_then(|s| json_pointer(&s, errors)),
            "crate" => {
                self.krate = string(&arg, errors).and_then(|s| match s.parse::<syn::Path>() {
                    Ok(path) => Some(path),
                    Err(_) => {
                        errors.push(s.span(), format!("`{}` is not a path; expected e.g. `\"::idempotent_actix\"`", s.value()));
                        None
                    }
                })
            }
            _ => errors.push(arg.name.span(), format!("unknown argument `{name}`; expected one of {ARGUMENTS}")),
        }
    }

    fn build(self, errors: &mut Errors) -> Options {
        if let (Some((InFlight::Accept, _)), Some((Cache::All, cache_span))) = (self.in_flight, self.cache) {
            errors.push(
                cache_span,
                "`cache = \"all\"` cannot be combined with `in_flight = \"accept\"`: a 202 promises that a retry gets the \
                 outcome, and storing server errors would make a transient failure that outcome for the whole ttl; \
                 use `cache = \"success\"` or `cache = \"non-server-error\"`",
            );
        }
        Options {
            ttl_seconds: self.ttl_seconds.unwrap_or(DEFAULT_TTL_SECONDS),
            scope: self.scope.unwrap_or(Scope::Global),
            header: self.header.unwrap_or_else(|| "Idempotency-Key".to_owned()),
            required: self.required.unwrap_or(false),
            in_flight: self.in_flight.map_or(InFlight::Wait, |(c, _)| c),
            on_mismatch: self.on_mismatch.unwrap_or(OnMismatch::Reject),
            cache: self.cache.map_or(Cache::Success, |(c, _)| c),
            fingerprint: self.fingerprint.unwrap_or(Fingerprint::Body),
            key_from: self.key_from,
            krate: self.krate.unwrap_or_else(|| syn::parse_quote!(::idempotent_actix)),
        }
    }
}

impl RawArg {
    fn value_span(&self) -> Span {
        match &self.value {
            RawValue::Lit(lit) => lit.span(),
            RawValue::Other(expr) => expr.span(),
        }
    }
}

fn string(arg: &RawArg, errors: &mut Errors) -> Option<LitStr> {
    match &arg.value {
        RawValue::Lit(Lit::Str(s)) => Some(s.clone()),
        _ => {
            errors.push(arg.value_span(), format!("`{}` takes a string literal, e.g. {}", arg.name, example(&arg.name)));
            None
        }
    }
}

fn boolean(arg: &RawArg, errors: &mut Errors) -> Option<bool> {
    match &arg.value {
        RawValue::Lit(Lit::Bool(b)) => Some(b.value),
        _ => {
            errors.push(arg.value_span(), format!("`{}` takes `true` or `false`", arg.name));
            None
        }
    }
}

fn choice<T: Copy>(arg: &RawArg, errors: &mut Errors, choices: &[(&str, T)]) -> Option<T> {
    let s = string(arg, errors)?;
    let value = s.value();
    if let Some((_, choice)) = choices.iter().find(|(name, _)| *name == value) {
        return Some(*choice);
    }
    let allowed: Vec<String> = choices.iter().map(|(name, _)| format!("`\"{name}\"`")).collect();
    errors.push(s.span(), format!("unknown {} `\"{value}\"`; expected one of {}", arg.name, allowed.join(", ")));
    None
}

fn example(name: &Ident) -> &'static str {
    match name.to_string().as_str() {
        "ttl" => "`ttl = \"24h\"`",
        "scope" => "`scope = \"tenant\"`",
        "header" => "`header = \"X-Idempotency-Key\"`",
        "in_flight" => "`in_flight = \"reject\"`",
        "on_mismatch" => "`on_mismatch = \"execute\"`",
        "cache" => "`cache = \"non-server-error\"`",
        "fingerprint" => "`fingerprint = \"json\"`",
        "key_from" => "`key_from = \"/reference_id\"`",
        _ => "`crate = \"::idempotent_actix\"`",
    }
}

fn ttl(s: &LitStr, errors: &mut Errors) -> Option<u64> {
    duration::parse_seconds(&s.value())
        .map_err(|e| errors.push(s.span(), format!("invalid ttl `\"{}\"`: {e}", s.value())))
        .ok()
}

/// A header name is an RFC 9110 token; it is stored lower-cased, as `http` wants it.
fn header(s: &LitStr, errors: &mut Errors) -> Option<String> {
    let value = s.value();
    let is_tchar = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
    if value.is_empty() || !value.chars().all(is_tchar) {
        errors.push(
            s.span(),
            format!("`\"{value}\"` is not a valid header name; expected letters, digits and `-`, e.g. `\"X-Idempotency-Key\"`"),
        );
        return None;
    }
    Some(value)
}

/// RFC 6901: empty, or `/`-separated tokens in which `~` is only `~0` or `~1`.
fn json_pointer(s: &LitStr, errors: &mut Errors) -> Option<String> {
    let value = s.value();
    let bad_escape = value.match_indices('~').any(|(i, _)| !matches!(value.as_bytes().get(i + 1), Some(b'0' | b'1')));
    if !value.starts_with('/') || bad_escape {
        errors.push(
            s.span(),
            format!("`\"{value}\"` is not a JSON Pointer; expected a path such as `\"/reference_id\"` or `\"/order/id\"`"),
        );
        return None;
    }
    Some(value)
}

/// The item must be an `async fn` without `self`; returns it when it is.
pub fn handler(item: &syn::Item, errors: &mut Errors) -> Option<syn::ItemFn> {
    let syn::Item::Fn(function) = item else {
        errors.push(item.span(), "`#[idempotent]` applies to an `async fn` actix-web handler");
        return None;
    };
    let signature = &function.sig;
    if signature.asyncness.is_none() {
        errors.push(signature.fn_token.span, "`#[idempotent]` handlers must be `async fn`");
    }
    if let Some(receiver) = signature.receiver() {
        errors.push(
            receiver.span(),
            "`#[idempotent]` handlers cannot take `self`; actix-web handlers are free functions, \
             so take state through `web::Data` instead",
        );
    }
    if let Some(variadic) = &signature.variadic {
        errors.push(variadic.span(), "`#[idempotent]` handlers cannot be variadic");
    }
    Some(function.clone())
}
