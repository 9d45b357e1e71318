//! Stage 3: generate the wrapper and its companions from a validated [`Plan`].
//!
//! The signature is re-emitted as written; only the body is rewritten. The
//! key is built from borrowed arguments first, then the user's block runs in
//! its own `async move` block, so `return` and `?` behave exactly as without
//! the macro.

use proc_macro2::{Literal, Span, TokenStream, TokenTree};
use quote::{ToTokens, format_ident, quote, quote_spanned};
use syn::ext::IdentExt;
use syn::spanned::Spanned;
use syn::{Block, Expr, GenericParam, Ident, Signature, Type, Visibility};

use crate::validate::{
    Dur, DurationRule, Invalidation, KeyPart, LEASE_TTL, Mode, Plan, STALE_IF_ERROR,
    STALE_WHILE_REVALIDATE, TTL,
};

/// Everything needed from the annotated function.
pub struct Item<'a> {
    /// Outer attributes, re-emitted in front of the function.
    pub attrs: &'a [syn::Attribute],
    /// Inner attributes (`#![allow(..)]` at the top of the body), re-emitted
    /// at the top of the rewritten body, where they still apply to it all.
    pub inner_attrs: &'a [syn::Attribute],
    /// The type of the impl, when `#[cached]` on the impl block names it:
    /// part of the function's label in metrics.
    pub owner: Option<String>,
    pub vis: &'a Visibility,
    pub sig: &'a Signature,
    pub block: &'a Block,
}

/// `__cache_k.lit(..); __cache_k.arg(&..);` for a key or template.
/// The statements that write a key or template into `__cache_k`: text as
/// is, each value by its key form (`Display` text, else compact JSON; see
/// `__private::KeyArg`), spanned at its placeholder for errors.
fn key_writes(krate: &TokenStream, parts: &[KeyPart]) -> TokenStream {
    let mut out = TokenStream::new();
    let mut values = false;
    for part in parts {
        match part {
            KeyPart::Text(text) => out.extend(quote!(__cache_k.lit(#text);)),
            KeyPart::Value(v) => {
                values = true;
                let root = &v.root;
                let fields = v.fields.iter().map(|f| match f.parse::<u32>() {
                    Ok(index) => syn::Index {
                        index,
                        span: v.span,
                    }
                    .into_token_stream(),
                    Err(_) => Ident::new(f, v.span).into_token_stream(),
                });
                let arg = respan(quote!(#krate::__private::KeyArg), v.span);
                out.extend(quote_spanned!(v.span=>
                    (&&&#arg(&#root #(.#fields)*)).__cache_key_part(__cache_k);
                ));
            }
        }
    }
    if !values {
        return out;
    }
    quote! {
        #[allow(unused_imports)]
        use #krate::__private::{NoKeyForm as _, ViaDisplay as _, ViaSerialize as _};
        #out
    }
}

fn key_closure(krate: &TokenStream, parts: &[KeyPart]) -> TokenStream {
    let writes = key_writes(krate, parts);
    quote!(|__cache_k: &mut #krate::__private::KeyBuilder| { #writes })
}

/// Gives every token the span of the return type, so that a missing
/// `Cacheable` impl is reported there, once, and not on the attribute.
fn respan(ts: TokenStream, span: Span) -> TokenStream {
    ts.into_iter()
        .map(|mut tt| {
            if let TokenTree::Group(g) = &tt {
                let mut group = proc_macro2::Group::new(g.delimiter(), respan(g.stream(), span));
                group.set_span(span);
                tt = TokenTree::Group(group);
            } else {
                tt.set_span(span);
            }
            tt
        })
        .collect()
}

fn contains_impl_trait(ty: &Type) -> bool {
    fn scan(ts: TokenStream) -> bool {
        ts.into_iter().any(|tt| match tt {
            TokenTree::Ident(i) => i == "impl",
            TokenTree::Group(g) => scan(g.stream()),
            _ => false,
        })
    }
    scan(ty.to_token_stream())
}

/// `if false { let x: Ret = loop {}; return x; }`: fixes the async block's
/// output type so `?` inside the user's block knows what to convert into
/// (the trick `tracing::instrument` uses). It sits outside the block of the
/// user's statements, so a `use` among them can not change what `Ret` names.
fn return_type_hint(sig: &Signature) -> TokenStream {
    match &sig.output {
        syn::ReturnType::Type(_, ty) if !contains_impl_trait(ty) => quote! {
            #[allow(
                unknown_lints,
                unreachable_code,
                clippy::diverging_sub_expression,
                clippy::empty_loop,
                clippy::let_unit_value,
                clippy::let_with_type_underscore,
                clippy::needless_return,
                clippy::unreachable
            )]
            if false {
                let __cache_fake_return: #ty = loop {};
                return __cache_fake_return;
            }
        },
        _ => TokenStream::new(),
    }
}

/// The arguments of one typed invalidation: the target's `_key` companion
/// called with the user's arguments, and its store (`f_key(&a),
/// __cache_store_f`, or `Type::f_key(&a), Type::__cache_store_f` for a
/// method; the key first, so a target that is not cached is reported by
/// the name a user knows):
/// one shape wherever the target is, checked by rustc.
fn typed_key(call: &syn::ExprCall) -> TokenStream {
    let Expr::Path(path) = &*call.func else {
        return quote_spanned!(call.span()=> ::core::compile_error!("expected a function path"));
    };
    let mut key_path = path.path.clone();
    let mut store_path = path.path.clone();
    if let (Some(key), Some(store)) = (key_path.segments.last_mut(), store_path.segments.last_mut())
    {
        key.ident = companion_ident(&key.ident, CompanionName::Key);
        store.ident = companion_ident(&store.ident, CompanionName::Store);
    }
    let args = call.args.iter().map(|a| quote_spanned!(a.span()=> &(#a)));
    quote_spanned!(call.span()=> #key_path(#(#args),*), #store_path)
}

/// The names of a function's companions.
#[derive(Clone, Copy)]
pub enum CompanionName {
    /// `f_key`: the exact key of a call.
    Key,
    /// `f_invalidate`: removes that entry.
    Invalidate,
    /// `__cache_store_f` (hidden): the function's store, for typed invalidations.
    Store,
}

/// `f_key`, `f_invalidate`, `__cache_store_f`, spanned like `f` (a raw
/// `r#type` gives `type_key`).
pub fn companion_ident(f: &Ident, which: CompanionName) -> Ident {
    match which {
        CompanionName::Key => format_ident!("{}_key", f),
        CompanionName::Invalidate => format_ident!("{}_invalidate", f),
        CompanionName::Store => format_ident!("__cache_store_{}", f),
    }
}

fn invalidations(krate: &TokenStream, plan: &Plan) -> TokenStream {
    let calls = plan.invalidations.iter().map(|inv| match inv {
        Invalidation::Typed(call) => {
            let store_and_key = typed_key(call);
            quote!(.key(#store_and_key))
        }
        Invalidation::Exact(parts) => {
            let f = key_closure(krate, parts);
            quote!(.template(#f))
        }
        Invalidation::Pattern(parts) => {
            let f = key_closure(krate, parts);
            quote!(.pattern(#f))
        }
        Invalidation::Tag(parts) => {
            let f = key_closure(krate, parts);
            quote!(.tag(#f))
        }
    });
    let store = opt(plan.store.as_deref());
    quote!(#krate::__private::Invalidations::new(#store) #(#calls)*)
}

/// `call(&__CACHE_SPEC, <key>)`, with `.tags(..)` when the function has tags.
fn own_call(krate: &TokenStream, plan: &Plan) -> TokenStream {
    let key = key_closure(krate, &plan.key);
    let call = quote!(#krate::__private::call(&__CACHE_SPEC, #key));
    if plan.tags.is_empty() {
        return call;
    }
    let tags = plan.tags.iter().map(|parts| {
        let f = key_closure(krate, parts);
        quote!(__cache_t.tag(#f);)
    });
    quote! {
        #call.tags(|__cache_t: &mut #krate::__private::TagWriter| { #(#tags)* })
    }
}

/// Registers a named store for the start-up check that it is configured.
/// Spanned at the call site: nothing here is the user's to fix.
fn store_use(krate: &TokenStream, plan: &Plan, fn_name: &Ident) -> TokenStream {
    let Some(store) = &plan.store else {
        return TokenStream::new();
    };
    let function = fn_name.to_string();
    let ts = quote! {
        #krate::__private::inventory::submit! {
            #krate::__private::StoreUse {
                store: #store,
                function: #function,
                location: ::core::concat!(::core::file!(), ":", ::core::line!()),
            }
        }
    };
    respan(ts, Span::call_site())
}

/// `T` -> `&T`; `&'a T` / `&mut T` -> `&T`; `String` -> `&str`: companions
/// borrow their arguments, and accept a string literal for a `String`.
fn borrowed(ty: &Type) -> TokenStream {
    match ty {
        Type::Reference(r) => borrowed(&r.elem),
        Type::Path(p) if p.qself.is_none() && p.path.is_ident("String") => quote!(&str),
        Type::ImplTrait(_) | Type::TraitObject(_) => quote!(&(#ty)),
        other => quote!(&#other),
    }
}

fn idents_in(ts: TokenStream, out: &mut Vec<String>) {
    for tt in ts {
        match tt {
            TokenTree::Ident(i) => out.push(i.to_string()),
            TokenTree::Group(g) => idents_in(g.stream(), out),
            TokenTree::Punct(p) if p.as_char() == '\'' => out.push("'".into()),
            _ => {}
        }
    }
}

/// The generics of a companion: only the parameters its arguments mention,
/// so none is left for the caller to annotate.
fn companion_generics(sig: &Signature, arg_types: &[TokenStream]) -> (TokenStream, TokenStream) {
    let mut mentioned = Vec::new();
    for ty in arg_types {
        idents_in(ty.clone(), &mut mentioned);
    }
    let text: String = arg_types
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(" ");
    let name_of = |gp: &GenericParam| match gp {
        GenericParam::Type(t) => t.ident.to_string(),
        GenericParam::Const(c) => c.ident.to_string(),
        GenericParam::Lifetime(l) => l.lifetime.to_string(),
    };
    let is_used = |gp: &GenericParam| match gp {
        GenericParam::Lifetime(l) => text.contains(&l.lifetime.to_string()),
        _ => mentioned.contains(&name_of(gp)),
    };
    let all: Vec<String> = sig.generics.params.iter().map(name_of).collect();
    let kept: Vec<&GenericParam> = sig
        .generics
        .params
        .iter()
        .filter(|gp| is_used(gp))
        .collect();
    let kept_names: Vec<String> = kept.iter().map(|gp| name_of(gp)).collect();
    let params = if kept.is_empty() {
        TokenStream::new()
    } else {
        quote!(<#(#kept),*>)
    };
    let predicates = sig
        .generics
        .where_clause
        .iter()
        .flat_map(|w| w.predicates.iter())
        .filter(|p| {
            let mut ids = Vec::new();
            idents_in(p.to_token_stream(), &mut ids);
            let text = p.to_token_stream().to_string();
            all.iter()
                .filter(|g| ids.contains(g) || (g.starts_with('\'') && text.contains(g.as_str())))
                .all(|g| kept_names.contains(g))
        });
    let predicates: Vec<_> = predicates.collect();
    let where_clause = if predicates.is_empty() {
        TokenStream::new()
    } else {
        quote!(where #(#predicates),*)
    };
    (params, where_clause)
}

/// The companions of a function with a key of its own: `f_key`,
/// `f_invalidate` and the hidden `__cache_store_f`. Each is self-contained
/// (no call of a sibling, which would be `Self::..` in an impl and bare in
/// a module), so the same items are legal next to a free function, in a
/// block, and in an inherent impl; for a trait impl, `#[cached]` on the
/// impl block moves them into an inherent impl of the type.
pub fn companions(krate: &TokenStream, item: &Item, plan: &Plan) -> TokenStream {
    if plan.mode == Mode::Write {
        return TokenStream::new();
    }
    let name = &item.sig.ident;
    let vis = item.vis;
    let key_fn = companion_ident(name, CompanionName::Key);
    let inv_fn = companion_ident(name, CompanionName::Invalidate);
    let store_const = companion_ident(name, CompanionName::Store);
    let arg_names: Vec<&Ident> = plan.key_params.iter().map(|(n, _)| n).collect();
    let arg_types: Vec<TokenStream> = plan.key_params.iter().map(|(_, t)| borrowed(t)).collect();
    let (generics, where_clause) = companion_generics(item.sig, &arg_types);
    let writes = key_writes(krate, &plan.key);
    let plain = name.unraw();
    let key_doc = format!("The exact cache key that `{plain}` uses for these arguments.");
    let inv_doc = format!(
        "Removes the entry that `{plain}` stores for these arguments (retried in the background if the store is unreachable)."
    );
    let store = opt(plan.store.as_deref());
    let key_body = quote!(#krate::__private::key_in(#store, |__cache_k: &mut #krate::__private::KeyBuilder| { #writes }));
    quote! {
        #[doc(hidden)]
        #[allow(non_upper_case_globals)]
        #vis const #store_const: ::core::option::Option<&'static str> = #store;
        #[doc = #key_doc]
        #[allow(clippy::needless_borrow)]
        #vis fn #key_fn #generics (#(#arg_names: #arg_types),*) -> ::std::string::String #where_clause {
            #key_body
        }
        #[doc = #inv_doc]
        #[allow(clippy::needless_borrow)]
        #vis async fn #inv_fn #generics (#(#arg_names: #arg_types),*) #where_clause {
            #krate::__private::invalidate_key_in(#store, #key_body).await
        }
    }
}

/// `Some(Duration::from_millis(ms))` or `None`; `from_millis` is `const`, so
/// the result fits in the `static` spec. A const expression is evaluated by
/// rustc as `u64` seconds, in an inline `const` block that rejects zero
/// where the rule does (`name` says which option, in the error).
fn opt_duration(value: &Option<Dur>, rule: &DurationRule) -> TokenStream {
    match value {
        Some(Dur::Millis(ms)) => {
            quote!(::core::option::Option::Some(::core::time::Duration::from_millis(#ms)))
        }
        Some(Dur::Seconds(expr)) => {
            let check = (!rule.zero_is_off).then(|| {
                let msg = format!("`{}` must be a positive number of seconds", rule.name);
                quote_spanned!(expr.span()=> ::core::assert!(__cache_secs > 0, #msg);)
            });
            let secs = quote_spanned!(expr.span()=> {
                let __cache_secs: u64 = #expr;
                #check
                __cache_secs
            });
            quote!(::core::option::Option::Some(::core::time::Duration::from_secs(const #secs)))
        }
        None => quote!(::core::option::Option::None),
    }
}

fn opt<T: ToTokens>(value: Option<T>) -> TokenStream {
    match value {
        Some(v) => quote!(::core::option::Option::Some(#v)),
        None => quote!(::core::option::Option::None),
    }
}

/// `beta` as a suffixed float literal that reads as one: `1.0f64`.
/// (`Literal::f64_suffixed(1.0)` prints `1f64`, valid but easy to misread.)
fn f64_literal(beta: f64) -> Literal {
    format!("{}f64", Literal::f64_unsuffixed(beta))
        .parse()
        .unwrap_or_else(|_| Literal::f64_suffixed(beta))
}

/// `let __cache_shape = ..;`: the return type's shape, chosen by rustc from
/// the type itself (an alias such as `ApiResult<T>` is a `Result`), through
/// the autoref specialization of `__private::Kind`. With `cache_none`, the
/// shape must have a `None` (checked by a trait bound, reported there).
fn shape(krate: &TokenStream, sig: &Signature, plan: &Plan) -> TokenStream {
    let ret = match &sig.output {
        syn::ReturnType::Type(_, ty) if !contains_impl_trait(ty) => ty.to_token_stream(),
        syn::ReturnType::Type(..) => {
            return quote!(let __cache_shape = #krate::__private::PlainShape;);
        }
        syn::ReturnType::Default => quote!(()),
    };
    let cache_none = plan.cache_none_span.map(|span| {
        let check = respan(quote!(#krate::__private::cache_none(__cache_shape)), span);
        quote!(let __cache_shape = #check;)
    });
    quote! {
        #[allow(unused_imports)]
        use #krate::__private::{
            OptionKind as _, PlainKind as _, ResultKind as _, ResultOptionKind as _,
        };
        let __cache_shape = (&&&#krate::__private::Kind::<#ret>::new()).__cache_shape();
        #cache_none
    }
}

/// The rewritten function. Its companions are separate ([`companions`]):
/// where they go depends on where the function is.
pub fn expand(krate: &TokenStream, item: &Item, plan: &Plan) -> TokenStream {
    let Item {
        attrs,
        inner_attrs,
        owner,
        vis,
        sig,
        block,
    } = item;
    let owner = opt(owner.as_deref());
    let name = sig.ident.unraw().to_string();
    let ttl = opt_duration(&plan.ttl, &TTL);
    let cache_none = plan.cache_none;
    let lease = opt(plan.lease);
    let lease_ttl = opt_duration(&plan.lease_ttl, &LEASE_TTL);
    let early_refresh = opt(plan.early_refresh.map(f64_literal));
    let stale_while_revalidate = opt_duration(&plan.swr, &STALE_WHILE_REVALIDATE);
    let stale_if_error = opt_duration(&plan.sie, &STALE_IF_ERROR);
    let store = opt(plan.store.as_deref());
    let store_use = store_use(krate, plan, &sig.ident);
    let shape = shape(krate, sig, plan);
    let hint = return_type_hint(sig);
    // The user's statements in a block of their own, after the return type
    // hint: their `use` items can not rename what the hint names.
    let stmts = &block.stmts;
    let body = quote!(async move { #hint { #(#stmts)* } });
    // Trait-bound failures of the stored type (a missing serde derive) are
    // reported on that type: the whole runtime call carries its span.
    let bound_span = match (&plan.stored_ty, &sig.output) {
        (Some(ty), _) => ty.span(),
        (None, syn::ReturnType::Type(_, ty)) => ty.span(),
        (None, syn::ReturnType::Default) => Span::call_site(),
    };
    // The shape too: it decides the stored type, and rustc blames it.
    let shape_arg = respan(quote!(__cache_shape), bound_span);
    let spanned_call = |path: TokenStream, args: TokenStream| {
        let mut group = proc_macro2::Group::new(proc_macro2::Delimiter::Parenthesis, args);
        group.set_span(bound_span);
        let path = respan(path, bound_span);
        let await_ = respan(quote!(.await), bound_span);
        quote!(#path #group #await_)
    };
    let spec = quote! {
        static __CACHE_SPEC: #krate::__private::Spec = #krate::__private::Spec {
            name: #name,
            module: ::core::module_path!(),
            owner: #owner,
            cache_none: #cache_none,
            options: #krate::__private::Overrides {
                ttl: #ttl,
                leases: #lease,
                lease_ttl: #lease_ttl,
                early_refresh: #early_refresh,
                stale_while_revalidate: #stale_while_revalidate,
                stale_if_error: #stale_if_error,
            },
            load_time: #krate::__private::LoadTime::new(),
            store: #store,
            metrics: #krate::__private::SpecMetrics::new(),
        };
    };
    let new_body = match plan.mode {
        Mode::Read => {
            let call = own_call(krate, plan);
            // `near = true` needs the stored value to be `Clone`: the near
            // tier hands out copies of one decoded value.
            let read_fn = if plan.near {
                quote!(#krate::__private::read_near)
            } else {
                quote!(#krate::__private::read)
            };
            let read = spanned_call(
                read_fn,
                quote!(#shape_arg, &__CACHE_SPEC, __cache_call, #body),
            );
            quote! {
                #store_use
                #spec
                #shape
                let __cache_call = #call;
                #read
            }
        }
        Mode::WriteThrough => {
            let call = own_call(krate, plan);
            let inv = invalidations(krate, plan);
            let write = spanned_call(
                quote!(#krate::__private::write_through),
                quote!(#shape_arg, &__CACHE_SPEC, __cache_call, __cache_invalidations, #body),
            );
            quote! {
                #store_use
                #spec
                #shape
                let __cache_call = #call;
                let __cache_invalidations = #inv;
                #write
            }
        }
        Mode::Write => {
            let inv = invalidations(krate, plan);
            quote! {
                #store_use
                #shape
                let __cache_invalidations = #inv;
                #krate::__private::write(__cache_shape, __cache_invalidations, #body).await
            }
        }
    };
    quote! {
        #(#attrs)*
        #vis #sig {
            #(#inner_attrs)*
            #new_body
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn float_literals_keep_a_fraction() {
        assert_eq!(f64_literal(1.0).to_string(), "1.0f64");
        assert_eq!(f64_literal(0.0).to_string(), "0.0f64");
        assert_eq!(f64_literal(2.5).to_string(), "2.5f64");
    }

    #[test]
    fn spec_fills_the_stampede_options() {
        let krate = quote!(::cache_runtime);
        let f: syn::ItemFn = syn::parse2(quote!(
            async fn f(id: u64) -> u64 {
                id
            }
        ))
        .unwrap();
        let args = crate::args::Args::parse(quote!(
            prefix = "p",
            id = "id",
            lease = true,
            lease_ttl = "2s",
            early_refresh = 1,
            stale_while_revalidate = 0,
            stale_if_error = "5m"
        ))
        .unwrap();
        let plan = crate::validate::validate(&args, &f.sig).unwrap();
        let item = Item {
            attrs: &f.attrs,
            inner_attrs: &[],
            owner: None,
            vis: &f.vis,
            sig: &f.sig,
            block: &f.block,
        };
        let out = expand(&krate, &item, &plan).to_string().replace(' ', "");
        for expected in [
            "leases:::core::option::Option::Some(true)",
            "lease_ttl:::core::option::Option::Some(::core::time::Duration::from_millis(2000u64))",
            "early_refresh:::core::option::Option::Some(1.0f64)",
            "stale_while_revalidate:::core::option::Option::Some(::core::time::Duration::from_millis(0u64))",
            "stale_if_error:::core::option::Option::Some(::core::time::Duration::from_millis(300000u64))",
            "load_time:::cache_runtime::__private::LoadTime::new()",
        ] {
            assert!(out.contains(expected), "{expected} not in {out}");
        }
    }

    /// The expansion of `#[cached(#args)] #f`, without spaces.
    fn expanded(args: TokenStream, f: TokenStream) -> String {
        let krate = quote!(::cache_runtime);
        let f: syn::ItemFn = syn::parse2(f).unwrap();
        let args = crate::args::Args::parse(args).unwrap();
        let plan = crate::validate::validate(&args, &f.sig).unwrap();
        let item = Item {
            attrs: &f.attrs,
            inner_attrs: &[],
            owner: None,
            vis: &f.vis,
            sig: &f.sig,
            block: &f.block,
        };
        let mut out = expand(&krate, &item, &plan);
        out.extend(companions(&krate, &item, &plan));
        out.to_string().replace(' ', "")
    }

    fn assert_contains(out: &str, expected: &[&str]) {
        for e in expected {
            assert!(out.contains(e), "{e} not in {out}");
        }
    }

    const KB: &str = "|__cache_k:&mut::cache_runtime::__private::KeyBuilder|";
    /// What a key closure with a value starts with.
    const USE: &str = "#[allow(unused_imports)]use::cache_runtime::__private::{NoKeyFormas_,ViaDisplayas_,ViaSerializeas_};";

    #[test]
    fn tags_version_and_store_on_a_read_function() {
        let out = expanded(
            quote!(
                prefix = "user",
                id = "id",
                tags = ["user:{id}", "users"],
                version = 2,
                store = "flags"
            ),
            quote!(
                async fn get_user(id: u64) -> u64 {
                    id
                }
            ),
        );
        let key = format!(
            "{KB}{{{USE}__cache_k.lit(\"user\");__cache_k.lit(\":\");(&&&::cache_runtime::__private::KeyArg(&id)).__cache_key_part(__cache_k);__cache_k.lit(\":v2\");}}"
        );
        let store = "::core::option::Option::Some(\"flags\")";
        assert_contains(
            &out,
            &[
                &format!(
                    "let__cache_call=::cache_runtime::__private::call(&__CACHE_SPEC,{key}).tags(|__cache_t:&mut::cache_runtime::__private::TagWriter|{{__cache_t.tag({KB}{{{USE}__cache_k.lit(\"user:\");(&&&::cache_runtime::__private::KeyArg(&id)).__cache_key_part(__cache_k);}});__cache_t.tag({KB}{{__cache_k.lit(\"users\");}});}});"
                ),
                &format!("store:{store},"),
                &format!(
                    "const__cache_store_get_user:::core::option::Option<&'staticstr>={store};"
                ),
                &format!(
                    "fnget_user_key(id:&u64)->::std::string::String{{::cache_runtime::__private::key_in({store},{key})}}"
                ),
                &format!(
                    "::cache_runtime::__private::invalidate_key_in({store},::cache_runtime::__private::key_in({store},{key})).await"
                ),
                "::cache_runtime::__private::inventory::submit!{::cache_runtime::__private::StoreUse{store:\"flags\",function:\"get_user\",location:::core::concat!(::core::file!(),\":\",::core::line!()),}}static__CACHE_SPEC",
            ],
        );
    }

    #[test]
    fn without_the_new_options_the_call_is_unchanged() {
        let out = expanded(
            quote!(prefix = "user", id = "id"),
            quote!(
                async fn get_user(id: u64) -> u64 {
                    id
                }
            ),
        );
        assert_contains(
            &out,
            &[
                &format!(
                    "let__cache_call=::cache_runtime::__private::call(&__CACHE_SPEC,{KB}{{{USE}__cache_k.lit(\"user\");__cache_k.lit(\":\");(&&&::cache_runtime::__private::KeyArg(&id)).__cache_key_part(__cache_k);}});"
                ),
                "store:::core::option::Option::None,",
                "const__cache_store_get_user:::core::option::Option<&'staticstr>=::core::option::Option::None;",
                "key_in(::core::option::Option::None,",
                "invalidate_key_in(::core::option::Option::None,::cache_runtime::__private::key_in(",
            ],
        );
        assert!(!out.contains(".tags("), "{out}");
        assert!(!out.contains("inventory"), "{out}");
    }

    #[test]
    fn invalidations_carry_stores_and_tags() {
        let out = expanded(
            quote!(
                store = "users",
                invalidate = [
                    get_user(id),
                    Repo::find(id),
                    self::tag(id),
                    tag("user:{id}"),
                    "user:{id}:*"
                ]
            ),
            quote!(
                async fn update(id: u64) -> Result<(), E> {
                    Ok(())
                }
            ),
        );
        assert_contains(
            &out,
            &[
                "{::cache_runtime::__private::inventory::submit!{::cache_runtime::__private::StoreUse{store:\"users\",function:\"update\",",
                "__cache_shape();let__cache_invalidations=::cache_runtime::__private::Invalidations::new(::core::option::Option::Some(\"users\"))",
                ".key(get_user_key(&(id)),__cache_store_get_user)",
                ".key(Repo::find_key(&(id)),Repo::__cache_store_find)",
                ".key(self::tag_key(&(id)),self::__cache_store_tag)",
                &format!(
                    ".tag({KB}{{{USE}__cache_k.lit(\"user:\");(&&&::cache_runtime::__private::KeyArg(&id)).__cache_key_part(__cache_k);}})"
                ),
                &format!(
                    ".pattern({KB}{{{USE}__cache_k.lit(\"user:\");(&&&::cache_runtime::__private::KeyArg(&id)).__cache_key_part(__cache_k);__cache_k.lit(\":*\");}})"
                ),
            ],
        );
    }

    #[test]
    fn methods_expose_their_store() {
        let out = expanded(
            quote!(
                prefix = "post",
                id = "id",
                store = "posts",
                tags = ["post:{id}"]
            ),
            quote!(
                pub async fn post(&self, id: u64) -> u64 {
                    id
                }
            ),
        );
        let store = "::core::option::Option::Some(\"posts\")";
        assert_contains(
            &out,
            &[
                &format!(
                    "#[doc(hidden)]#[allow(non_upper_case_globals)]pubconst__cache_store_post:::core::option::Option<&'staticstr>={store};"
                ),
                "pubfnpost_key(id:&u64)",
                &format!(
                    "pubasyncfnpost_invalidate(id:&u64){{::cache_runtime::__private::invalidate_key_in({store},"
                ),
                ".tags(|__cache_t:",
            ],
        );
        // Write-through: tags on its own call, and its store for the invalidations.
        let out = expanded(
            quote!(
                prefix = "u",
                id = "id",
                tags = ["t"],
                invalidate = [tag("t")]
            ),
            quote!(
                async fn save(id: u64) -> Result<u64, E> {
                    Ok(id)
                }
            ),
        );
        assert_contains(
            &out,
            &[
                ".tags(|__cache_t:",
                "Invalidations::new(::core::option::Option::None).tag(",
            ],
        );
    }
}
