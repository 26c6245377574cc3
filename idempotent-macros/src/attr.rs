//! Stage one: the attribute's tokens as written, each argument with its span.
//!
//! Nothing here knows what an argument means; [`crate::check`] does.

use proc_macro2::TokenStream;
use syn::ext::IdentExt;
use syn::parse::{Parse, ParseStream, Parser};
use syn::punctuated::Punctuated;
use syn::{Ident, Lit, Token};

/// One `name = value` pair as the user wrote it.
pub struct RawArg {
    pub name: Ident,
    pub value: RawValue,
}

/// The right-hand side of an argument: a literal, or anything else (reported by `check`).
pub enum RawValue {
    Lit(Lit),
    Other(syn::Expr),
}

impl Parse for RawArg {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        // `crate` is a keyword, so names are read as any identifier.
        let name = input.call(Ident::parse_any)?;
        if !input.peek(Token![=]) {
            return Err(syn::Error::new(
                name.span(),
                format!("expected `{name} = <value>`; every argument takes a value"),
            ));
        }
        input.parse::<Token![=]>()?;
        let value = match input.parse::<syn::Expr>()? {
            syn::Expr::Lit(lit) => RawValue::Lit(lit.lit),
            other => RawValue::Other(other),
        };
        Ok(Self { name, value })
    }
}

/// Parses `ttl = "24h", scope = "tenant", ...` into raw arguments, in order.
pub fn parse_args(args: TokenStream) -> syn::Result<Vec<RawArg>> {
    let parsed = Punctuated::<RawArg, Token![,]>::parse_terminated.parse2(args)?;
    Ok(parsed.into_iter().collect())
}
