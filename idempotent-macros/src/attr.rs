//! Stage one: the attribute's tokens as written, each argument with its span.
//!
//! Nothing here knows what an argument means; [`crate::check`] does. A malformed argument is
//! reported and skipped, so the arguments after it are still checked in the same build.

use proc_macro2::{Punct, TokenStream, TokenTree};
use syn::ext::IdentExt;
use syn::parse::{Parse, ParseStream};
use syn::{Ident, Lit, Token};

use crate::errors::Errors;

/// One argument as the user wrote it.
pub struct RawArg {
    pub name: Ident,
    pub value: RawValue,
}

/// The right-hand side of an argument.
pub enum RawValue {
    /// A literal, as every argument expects.
    Lit(Lit),
    /// Any other expression: reported by `check` with the argument's expected form.
    Other(syn::Expr),
    /// A bare name without `= value`.
    Missing,
}

impl Parse for RawArg {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        // `crate` is a keyword, so names are read as any identifier.
        let name = input
            .call(Ident::parse_any)
            .map_err(|e| syn::Error::new(e.span(), "expected an argument, e.g. `ttl = \"24h\"`"))?;
        if input.is_empty() {
            return Ok(Self {
                name,
                value: RawValue::Missing,
            });
        }
        if !input.peek(Token![=]) {
            return Err(input.error(format!("expected `=` and a value after `{name}`")));
        }
        let eq = input.parse::<Token![=]>()?;
        if input.is_empty() {
            return Err(syn::Error::new(eq.span, format!("expected a value after `{name} =`")));
        }
        let value = match ungroup(input.parse()?) {
            syn::Expr::Lit(lit) => RawValue::Lit(lit.lit),
            other => RawValue::Other(other),
        };
        if !input.is_empty() {
            return Err(input.error("expected `,` between arguments"));
        }
        Ok(Self { name, value })
    }
}

/// A `macro_rules!` fragment such as `$ttl:expr` arrives wrapped in an invisible group.
fn ungroup(mut expr: syn::Expr) -> syn::Expr {
    while let syn::Expr::Group(group) = expr {
        expr = *group.expr;
    }
    expr
}

/// Parses `ttl = "24h", scope = "tenant", ...` into raw arguments, in order.
pub fn parse_args(args: TokenStream, errors: &mut Errors) -> Vec<RawArg> {
    let mut parsed = Vec::new();
    for (tokens, comma) in split_at_commas(args) {
        if tokens.is_empty() {
            // Only an empty argument before a comma is a mistake; a trailing comma is fine.
            if let Some(comma) = comma {
                errors.push(comma.span(), "expected an argument before `,`");
            }
            continue;
        }
        match syn::parse2::<RawArg>(tokens) {
            Ok(arg) => parsed.push(arg),
            Err(error) => errors.push_error(error),
        }
    }
    parsed
}

/// The arguments' tokens, each with the comma that ends it (none for the last one).
fn split_at_commas(args: TokenStream) -> Vec<(TokenStream, Option<Punct>)> {
    let mut parts = Vec::new();
    let mut current = Vec::new();
    for token in args {
        match token {
            TokenTree::Punct(comma) if comma.as_char() == ',' => {
                parts.push((current.drain(..).collect(), Some(comma)));
            }
            other => current.push(other),
        }
    }
    parts.push((current.into_iter().collect(), None));
    parts
}
