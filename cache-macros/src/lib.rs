//! The `#[cached]` attribute. Depend on `cache-runtime`, which re-exports it;
//! its documentation describes the attribute in full.
//!
//! The work is split by stage, each testable without a compiler round trip:
//! `args` parses the options, `validate` checks them against the
//! signature and decides what to generate, `expand` generates it.

mod args;
mod expand;
mod template;
mod validate;

use proc_macro::TokenStream;

/// Caches an async function's result, invalidates other functions' entries,
/// or both. See the `cache-runtime` crate for the options and rules.
#[proc_macro_attribute]
pub fn cached(args: TokenStream, item: TokenStream) -> TokenStream {
    cached_impl(args.into(), item.into()).into()
}

fn cached_impl(
    args: proc_macro2::TokenStream,
    item: proc_macro2::TokenStream,
) -> proc_macro2::TokenStream {
    let func: syn::ItemFn = match syn::parse2(item.clone()) {
        Ok(f) => f,
        Err(e) => {
            let e = syn::Error::new(
                e.span(),
                "#[cached] applies to an `async fn` (a free function or a method)",
            );
            let err = e.to_compile_error();
            return quote::quote!(#item #err);
        }
    };
    let parsed = args::Args::parse(args);
    let krate = parsed
        .as_ref()
        .ok()
        .and_then(|a| a.krate.as_ref())
        .map(quote::ToTokens::to_token_stream)
        .unwrap_or_else(|| quote::quote!(::cache_runtime));
    let plan = parsed.and_then(|a| validate::validate(&a, &func.sig));
    match plan {
        Ok(plan) => expand::expand(
            &krate,
            expand::Item {
                attrs: &func.attrs,
                vis: &func.vis,
                sig: &func.sig,
                block: &func.block,
            },
            &plan,
        ),
        // The item as written plus the errors: one diagnostic per misuse, not
        // a cascade, and editors keep resolving the function.
        Err(e) => {
            let err = e.to_compile_error();
            quote::quote!(#item #err)
        }
    }
}
