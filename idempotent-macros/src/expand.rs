//! Stage three: the rewritten handler, written from validated [`Options`] only.
//!
//! ```text
//! #[post("/orders")]                       // every attribute not ours, untouched
//! async fn create_order(                   // same name and visibility
//!     __idempotent_request: HttpRequest,
//!     __idempotent_payload: web::Payload,
//! ) -> HttpResponse {
//!     async fn __idempotent_handler(order: web::Json<NewOrder>) -> R { /* the user's body */ }
//!     static __IDEMPOTENT_ROUTE: Route = Route::new(RouteOptions::new("create_order").ttl(..) ..);
//!     handle(&__IDEMPOTENT_ROUTE, request, payload, |request, payload| async move {
//!         // the user's extractors, one by one, on the (possibly buffered) payload
//!         __idempotent_respond(__idempotent_handler(arg0).await, &request)
//!     }).await
//! }
//! ```

use proc_macro2::TokenStream;
use quote::{format_ident, quote, quote_spanned};
use syn::spanned::Spanned;

use crate::arguments::{Options, ARGUMENTS};
use crate::attr;
use crate::check;
use crate::errors::Errors;

/// Entry point: on any error, the user's item comes back unchanged next to the errors (a
/// function written without `async` comes back with it), so `#[post]` and `.service(handler)`
/// keep compiling and only the real mistakes are shown.
pub fn idempotent(args: TokenStream, item: TokenStream) -> TokenStream {
    let mut errors = Errors::default();
    let options = Options::from_args(attr::parse_args(args, &mut errors), &mut errors);
    let function = syn::parse2::<syn::Item>(item.clone())
        .map_err(|e| errors.push_error(e))
        .ok()
        .and_then(|ast| check::handler(ast, &mut errors));
    match (errors.finish(), function) {
        (Ok(()), Some(function)) => rewrite(&options, function),
        (Err(error), Some(function)) => with_errors(quote!(#function), error),
        (Err(error), None) => with_errors(item, error),
        (Ok(()), None) => unreachable!("a missing handler always records an error"),
    }
}

fn with_errors(item: TokenStream, error: syn::Error) -> TokenStream {
    let errors = error.to_compile_error();
    quote!(#item #errors)
}

fn rewrite(options: &Options, function: syn::ItemFn) -> TokenStream {
    let krate = &options.krate;
    let private = quote!(#krate::__private);
    let syn::ItemFn { attrs, vis, sig, block } = function;
    let name = &sig.ident;
    let (impl_generics, _, where_clause) = sig.generics.split_for_impl();

    let mut inner_sig = sig.clone();
    inner_sig.ident = format_ident!("__idempotent_handler");

    let args: Vec<&syn::PatType> = sig
        .inputs
        .iter()
        .filter_map(|arg| match arg {
            syn::FnArg::Typed(typed) => Some(typed),
            syn::FnArg::Receiver(_) => None,
        })
        .collect();
    let arg_names: Vec<syn::Ident> = (0..args.len()).map(|i| format_ident!("__idempotent_arg{i}")).collect();
    // Generated locals are always written with the macro's own span, even inside code spanned
    // with the user's tokens: a handler written by a `macro_rules!` gives those tokens another
    // hygiene context, in which the locals would not resolve.
    let request = quote!(__idempotent_request);
    let payload = quote!(__idempotent_payload);
    let extractions = args.iter().zip(&arg_names).map(|(arg, binding)| {
        // Spanned with the argument's type, so "not an extractor" lands on the user's type.
        let ty = &arg.ty;
        quote_spanned! {ty.span()=>
            let #binding = match <#ty as #private::FromRequest>::from_request(&#request, &mut #payload).await {
                ::core::result::Result::Ok(value) => value,
                ::core::result::Result::Err(error) => {
                    return #private::extractor_error(error, &#request);
                }
            };
        }
    });
    // Spanned with the return type, so "not a responder" lands on the user's signature.
    let output_span = match &sig.output {
        syn::ReturnType::Type(_, ty) => ty.span(),
        syn::ReturnType::Default => sig.paren_token.span.close(),
    };
    let respond = quote_spanned! {output_span=>
        __idempotent_respond(__idempotent_handler(#(#arg_names),*).await, &#request)
    };
    let route_options = route_options(options, name);

    quote! {
        #(#attrs)*
        #vis async fn #name #impl_generics (
            __idempotent_request: #private::HttpRequest,
            __idempotent_payload: #private::Payload,
        ) -> #private::HttpResponse #where_clause {
            // A handler takes one argument per extractor (up to 16) and must be `async` even when
            // it awaits nothing; clippy spares the original, which actix-web takes as a value.
            #[allow(clippy::too_many_arguments, clippy::unused_async)]
            #inner_sig #block

            static __IDEMPOTENT_ROUTE: #private::Route = #private::Route::new(#route_options);

            // Local, so that "not a responder" notes name this function, not the crate's internals.
            fn __idempotent_respond<R: #private::Responder>(
                __idempotent_output: R,
                __idempotent_request: &#private::HttpRequest,
            ) -> #private::Handled {
                #private::Handled::Ran(
                    #private::Responder::respond_to(__idempotent_output, __idempotent_request).map_into_boxed_body(),
                )
            }

            #private::handle(
                &__IDEMPOTENT_ROUTE,
                __idempotent_request,
                __idempotent_payload,
                move |__idempotent_request: #private::HttpRequest, mut __idempotent_payload: #private::DevPayload| async move {
                    #(#extractions)*
                    #respond
                },
            )
            .await
        }
    }
}

/// `RouteOptions::new(handler)` and one `const` setter per argument, so that the route is a
/// `static`.
fn route_options(options: &Options, name: &syn::Ident) -> TokenStream {
    let krate = &options.krate;
    let private = quote!(#krate::__private);
    let handler_name = name.to_string();
    let setters = ARGUMENTS.iter().map(|argument| (argument.emit)(options, &private));
    quote! {
        #private::RouteOptions::new(#handler_name) #(#setters)*
    }
}
