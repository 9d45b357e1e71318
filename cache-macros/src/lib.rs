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
use proc_macro2::{Span, TokenStream as TokenStream2, TokenTree};
use quote::{ToTokens, quote};
use syn::{Attribute, ImplItem, ItemFn, ItemImpl};

/// Caches an async function's result, invalidates other functions' entries,
/// or both. See the `cache-runtime` crate for the options and rules.
#[proc_macro_attribute]
pub fn cached(args: TokenStream, item: TokenStream) -> TokenStream {
    cached_impl(args.into(), item.into()).into()
}

fn cached_impl(args: TokenStream2, item: TokenStream2) -> TokenStream2 {
    if let Ok(imp) = syn::parse2::<ItemImpl>(item.clone()) {
        return on_impl(args, imp);
    }
    let func: ItemFn = match syn::parse2(item.clone()) {
        Ok(f) => f,
        Err(e) => {
            let e = syn::Error::new(
                e.span(),
                "#[cached] applies to an `async fn` (a free function or a method), or to an `impl` block holding `#[cached(..)]` methods",
            );
            let err = e.to_compile_error();
            return quote!(#item #err);
        }
    };
    match on_fn(args, &func, None) {
        // A method (`self`) lives in an impl, where only `#[cached]` on the
        // impl block can put companions legally (a trait impl holds nothing
        // but the trait's items).
        Ok((function, plan, companions)) => {
            if plan.has_receiver {
                function
            } else {
                quote!(#function #companions)
            }
        }
        // The item as written plus the errors: one diagnostic per misuse, not
        // a cascade, and editors keep resolving the function.
        Err(e) => {
            let err = e.to_compile_error();
            quote!(#item #err)
        }
    }
}

/// Expands one function: `(function, plan, companions)`.
fn on_fn(
    args: TokenStream2,
    func: &ItemFn,
    owner: Option<String>,
) -> syn::Result<(TokenStream2, validate::Plan, TokenStream2)> {
    check_order(func)?;
    let args = args::Args::parse(args)?;
    let krate = args
        .krate
        .as_ref()
        .map(ToTokens::to_token_stream)
        .unwrap_or_else(|| quote!(::cache_runtime));
    let plan = validate::validate(&args, &func.sig)?;
    let (inner_attrs, attrs): (Vec<Attribute>, Vec<Attribute>) = func
        .attrs
        .iter()
        .cloned()
        .partition(|a| matches!(a.style, syn::AttrStyle::Inner(_)));
    let item = expand::Item {
        attrs: &attrs,
        inner_attrs: &inner_attrs,
        owner,
        vis: &func.vis,
        sig: &func.sig,
        block: &func.block,
    };
    let function = expand::expand(&krate, &item, &plan);
    let companions = expand::companions(&krate, &item, &plan);
    Ok((function, plan, companions))
}

/// Attributes that must run after `#[cached]`, found already expanded.
fn check_order(func: &ItemFn) -> syn::Result<()> {
    fn mentions(ts: TokenStream2, found: &dyn Fn(&str) -> bool) -> bool {
        ts.into_iter().any(|tt| match tt {
            TokenTree::Ident(i) => found(&i.to_string()),
            TokenTree::Group(g) => mentions(g.stream(), found),
            _ => false,
        })
    }
    let output = func.sig.output.to_token_stream();
    // `#[async_trait]` returns `Pin<Box<dyn Future<..> + 'async_trait>>`; a
    // hand-written `fn .. -> impl Future` is reported as not `async` instead.
    if func.sig.asyncness.is_none() && mentions(output, &|i| i == "async_trait") {
        return Err(syn::Error::new(
            Span::call_site(),
            "#[cached] sees a function that returns a boxed future: `#[async_trait]` ran first. Put a bare `#[cached]` on the impl block, above `#[async_trait]`, and keep `#[cached(..)]` on the method",
        ));
    }
    if mentions(func.block.to_token_stream(), &|i| {
        i.starts_with("__tracing_attr_") || i == "__tracing_instrument_future"
    }) {
        return Err(syn::Error::new(
            Span::call_site(),
            "`#[tracing::instrument]` is written above `#[cached]`, so its span would cover the body only, on a miss; write it below `#[cached]` so that every call gets its span",
        ));
    }
    Ok(())
}

/// Whether an attribute is this macro, as a method's attribute names it.
fn is_cached(attr: &Attribute) -> bool {
    attr.path()
        .segments
        .last()
        .is_some_and(|s| s.ident == "cached")
}

/// `#[cached]` on an impl block (inherent or trait, above `#[async_trait]`):
/// expands its `#[cached(..)]` methods, and puts their companions in an
/// inherent impl of the same type, where `Type::f_key(..)` finds them.
fn on_impl(args: TokenStream2, mut imp: ItemImpl) -> TokenStream2 {
    if !args.is_empty() {
        let err = syn::Error::new_spanned(
            &args,
            "on an impl block, #[cached] takes no options: write them on each method, `#[cached(prefix = \"user\", id = \"id\")]`",
        )
        .to_compile_error();
        return quote!(#imp #err);
    }
    // `OrgRepo` of `impl Repo for OrgRepo<T>`: the labels of its methods.
    let owner = match &*imp.self_ty {
        syn::Type::Path(p) => p.path.segments.last().map(|s| s.ident.to_string()),
        _ => None,
    };
    let mut companions = TokenStream2::new();
    let mut errors = TokenStream2::new();
    let mut found = false;
    for item in &mut imp.items {
        let ImplItem::Fn(method) = item else {
            continue;
        };
        let Some(at) = method.attrs.iter().position(is_cached) else {
            continue;
        };
        found = true;
        let attr = method.attrs.remove(at);
        let args = match attr.meta {
            syn::Meta::Path(_) => TokenStream2::new(),
            syn::Meta::List(list) => list.tokens,
            syn::Meta::NameValue(nv) => {
                errors.extend(
                    syn::Error::new_spanned(nv, "write `#[cached(..)]`").to_compile_error(),
                );
                continue;
            }
        };
        let func = ItemFn {
            attrs: method.attrs.clone(),
            vis: method.vis.clone(),
            sig: method.sig.clone(),
            block: Box::new(method.block.clone()),
        };
        match on_fn(args, &func, owner.clone()) {
            Ok((function, _, ours)) => {
                *item = ImplItem::Verbatim(function);
                companions.extend(ours);
            }
            Err(e) => errors.extend(e.to_compile_error()),
        }
    }
    if !found {
        errors.extend(
            syn::Error::new(
                Span::call_site(),
                "#[cached] on an impl block expands the methods marked `#[cached(..)]`, and this impl has none",
            )
            .to_compile_error(),
        );
    }
    let companions = (!companions.is_empty()).then(|| {
        let (impl_generics, _, where_clause) = imp.generics.split_for_impl();
        let self_ty = &imp.self_ty;
        quote! {
            impl #impl_generics #self_ty #where_clause {
                #companions
            }
        }
    });
    quote!(#imp #companions #errors)
}
