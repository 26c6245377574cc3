//! Stage three: the rewritten handler, written from validated [`Options`] only.
//!
//! ```text
//! #[post("/orders")]                       // every attribute not ours, untouched
//! async fn create_order(                   // same name and visibility
//!     __idempotent_request: HttpRequest,
//!     __idempotent_payload: web::Payload,
//! ) -> HttpResponse {
//!     async fn __idempotent_handler(order: web::Json<NewOrder>) -> R { /* the user's body */ }
//!     static __IDEMPOTENT_ROUTE: Route = Route::new(RouteOptions { .. });
//!     handle(&__IDEMPOTENT_ROUTE, request, payload, |request, payload| async move {
//!         // the user's extractors, one by one, on the (possibly buffered) payload
//!         respond(__idempotent_handler(arg0).await, &request)
//!     }).await
//! }
//! ```

use proc_macro2::TokenStream;
use quote::{format_ident, quote, quote_spanned};
use syn::spanned::Spanned;

use crate::attr;
use crate::check::{self, Cache, Errors, Fingerprint, InFlight, OnMismatch, Options, Scope};

/// Entry point: on any error, the user's item comes back unchanged next to the errors, so
/// `#[post]` and `.service(handler)` keep compiling and only the real mistake is shown.
pub fn idempotent(args: TokenStream, item: TokenStream) -> TokenStream {
    let item_ast = match syn::parse2::<syn::Item>(item.clone()) {
        Ok(ast) => ast,
        Err(error) => return with_errors(item, error),
    };
    let mut errors = Errors::default();
    let options = attr::parse_args(args)
        .and_then(Options::from_args)
        .map_err(|e| errors.push_error(e))
        .ok();
    let function = check::handler(&item_ast, &mut errors);
    match (errors.finish(), options, function) {
        (Ok(()), Some(options), Some(function)) => rewrite(&options, function),
        (Err(error), ..) => with_errors(item, error),
        _ => unreachable!("every missing part records an error"),
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
    let extractions = args.iter().zip(&arg_names).map(|(arg, binding)| {
        let ty = &arg.ty;
        // Spanned with the argument's type, so "not an extractor" lands on the user's type.
        quote_spanned! {ty.span()=>
            let #binding = match <#ty as #private::FromRequest>::from_request(
                &__idempotent_request,
                &mut __idempotent_payload,
            ).await {
                ::core::result::Result::Ok(value) => value,
                ::core::result::Result::Err(error) => return #private::extractor_error(error, &__idempotent_request),
            };
        }
    });
    let route_options = route_options(options, name);

    quote! {
        #(#attrs)*
        #vis async fn #name #impl_generics (
            __idempotent_request: #private::HttpRequest,
            __idempotent_payload: #private::Payload,
        ) -> #private::HttpResponse #where_clause {
            #[allow(clippy::too_many_arguments)]
            #inner_sig #block

            static __IDEMPOTENT_ROUTE: #private::Route = #private::Route::new(#route_options);

            #private::handle(
                &__IDEMPOTENT_ROUTE,
                __idempotent_request,
                __idempotent_payload,
                move |__idempotent_request: #private::HttpRequest, mut __idempotent_payload: #private::DevPayload| async move {
                    #(#extractions)*
                    let __idempotent_output = __idempotent_handler(#(#arg_names),*).await;
                    #private::respond(__idempotent_output, &__idempotent_request)
                },
            )
            .await
        }
    }
}

fn route_options(options: &Options, name: &syn::Ident) -> TokenStream {
    let krate = &options.krate;
    let private = quote!(#krate::__private);
    let ttl = options.ttl_seconds;
    let header = &options.header;
    let required = options.required;
    let handler_name = name.to_string();
    let scope = match options.scope {
        Scope::Global => quote!(Global),
        Scope::Tenant => quote!(Tenant),
    };
    let in_flight = match options.in_flight {
        InFlight::Wait => quote!(Wait),
        InFlight::Reject => quote!(Reject),
        InFlight::Accept => quote!(Accept),
    };
    let on_mismatch = match options.on_mismatch {
        OnMismatch::Reject => quote!(Reject),
        OnMismatch::Execute => quote!(Execute),
    };
    let cache = match options.cache {
        Cache::Success => quote!(Success),
        Cache::NonServerError => quote!(NonServerError),
        Cache::All => quote!(All),
    };
    let fingerprint = match options.fingerprint {
        Fingerprint::Body => quote!(Body),
        Fingerprint::Json => quote!(Json),
    };
    let key_from = match &options.key_from {
        Some(pointer) => quote!(::core::option::Option::Some(#pointer)),
        None => quote!(::core::option::Option::None),
    };
    quote! {
        #private::RouteOptions {
            handler: #handler_name,
            ttl: ::core::time::Duration::from_secs(#ttl),
            scope: #private::Scope::#scope,
            header: #header,
            required: #required,
            in_flight: #private::InFlight::#in_flight,
            on_mismatch: #private::OnMismatch::#on_mismatch,
            cache: #private::CachePolicy::#cache,
            fingerprint: #private::FingerprintMode::#fingerprint,
            key_from: #key_from,
        }
    }
}
