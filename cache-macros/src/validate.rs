//! Stage 2: check the arguments against the function's signature and decide
//! what to generate. Every misuse is an error with a span on the exact token;
//! all errors are collected and reported together.

use std::collections::BTreeSet;

use proc_macro2::Span;
use syn::spanned::Spanned;
use syn::{FnArg, Ident, Pat, ReturnType, Signature, Type};

use crate::args::{Args, InvalidateEntry, Ttl};
use crate::template::{self, Placeholder, Segment, Template};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Own key, no invalidations: cache-aside.
    Read,
    /// Own key and invalidations.
    WriteThrough,
    /// Invalidations only.
    Write,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    Result,
    Option,
    Plain,
}

/// A value interpolated into a key: `root.field...`, with the span to blame.
#[derive(Debug, Clone)]
pub struct KeyValue {
    /// The parameter's own identifier (so `r#type` stays raw), re-spanned
    /// to the placeholder.
    pub root: Ident,
    pub fields: Vec<String>,
    pub span: Span,
}

#[derive(Debug, Clone)]
pub enum KeyPart {
    Text(String),
    Value(KeyValue),
}

#[derive(Debug, Clone)]
pub enum Invalidation {
    Typed(syn::ExprCall),
    Exact(Vec<KeyPart>),
    Pattern(Vec<KeyPart>),
}

#[derive(Debug)]
pub struct Plan {
    pub mode: Mode,
    pub shape: Shape,
    /// The type whose `Cacheable` impl the runtime needs (not for `Write`).
    pub stored_ty: Option<Type>,
    /// The own key, as written into a `KeyBuilder` after the namespace.
    pub key: Vec<KeyPart>,
    /// Parameters the own key reads, in signature order: the companions' arguments.
    pub key_params: Vec<(Ident, Type)>,
    pub ttl_ms: Option<u64>,
    pub cache_none: bool,
    pub invalidations: Vec<Invalidation>,
    pub is_method: bool,
}

struct Param {
    name: Ident,
    ty: Type,
}

struct Errors(Option<syn::Error>);

impl Errors {
    fn push(&mut self, span: Span, msg: impl std::fmt::Display) {
        let e = syn::Error::new(span, msg);
        match &mut self.0 {
            Some(all) => all.combine(e),
            None => self.0 = Some(e),
        }
    }
    fn push_err(&mut self, e: syn::Error) {
        match &mut self.0 {
            Some(all) => all.combine(e),
            None => self.0 = Some(e),
        }
    }
}

/// Parses `ttl`: seconds, or `<n>ms|s|m|h|d`.
pub fn parse_ttl(ttl: &Ttl) -> syn::Result<u64> {
    const HELP: &str = "`ttl` must be a positive number of seconds (`ttl = 1800`) or a duration such as \"500ms\", \"90s\", \"5m\", \"1h\", \"1d\"";
    let ms = match ttl {
        Ttl::Seconds(lit) => lit
            .base10_parse::<u64>()
            .ok()
            .and_then(|s| s.checked_mul(1000)),
        Ttl::Text(lit) => {
            let text = lit.value();
            let text = text.trim();
            let split = text
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(text.len());
            let (digits, unit) = text.split_at(split);
            let factor = match unit.trim() {
                "ms" => Some(1),
                "s" => Some(1000),
                "m" => Some(60_000),
                "h" => Some(3_600_000),
                "d" => Some(86_400_000),
                _ => None,
            };
            digits
                .parse::<u64>()
                .ok()
                .zip(factor)
                .and_then(|(n, f)| n.checked_mul(f))
        }
    };
    match ms {
        Some(ms) if ms > 0 => Ok(ms),
        _ => Err(syn::Error::new(ttl.span(), HELP)),
    }
}

fn split_path(text: &str) -> Option<(String, Vec<String>)> {
    let mut parts = text.split('.');
    let root = parts.next()?.trim().to_owned();
    let fields: Vec<String> = parts.map(|s| s.trim().to_owned()).collect();
    let ident_like = |s: &str| {
        let mut c = s.chars();
        matches!(c.next(), Some(f) if f == '_' || f.is_alphabetic())
            && c.all(|c| c == '_' || c.is_alphanumeric())
    };
    (ident_like(&root)
        && fields
            .iter()
            .all(|f| ident_like(f) || f.parse::<u32>().is_ok()))
    .then_some((root, fields))
}

fn param_list(params: &[Param]) -> String {
    if params.is_empty() {
        "it has none".to_owned()
    } else {
        let names: Vec<String> = params.iter().map(|p| p.name.to_string()).collect();
        format!("parameters: {}", names.join(", "))
    }
}

/// Converts a template's segments, checking each placeholder's root.
fn template_parts(
    t: &Template,
    params: &[Param],
    fn_name: &Ident,
    errors: &mut Errors,
    used: &mut Vec<(String, Span)>,
) -> Vec<KeyPart> {
    let mut parts = Vec::new();
    for seg in &t.segments {
        match seg {
            Segment::Text(text) => parts.push(KeyPart::Text(text.clone())),
            Segment::Placeholder(p) => {
                let span = t.span_of(p);
                if let Some(param) = check_root(&p.root, span, params, fn_name, errors) {
                    used.push((p.root.clone(), span));
                    parts.push(KeyPart::Value(placeholder_value(p, param, span)));
                }
            }
        }
    }
    parts
}

fn placeholder_value(p: &Placeholder, param: &Ident, span: Span) -> KeyValue {
    let mut root = param.clone();
    root.set_span(span);
    KeyValue {
        root,
        fields: p.fields.clone(),
        span,
    }
}

/// A parameter's name as written in templates: `r#type` is `{type}`.
fn plain_name(ident: &Ident) -> String {
    use syn::ext::IdentExt;
    ident.unraw().to_string()
}

fn check_root<'p>(
    root: &str,
    span: Span,
    params: &'p [Param],
    fn_name: &Ident,
    errors: &mut Errors,
) -> Option<&'p Ident> {
    if root == "self" {
        errors.push(
            span,
            "`self` is never part of a key: name a parameter, or pass the value as a parameter",
        );
        return None;
    }
    if let Some(p) = params.iter().find(|p| plain_name(&p.name) == root) {
        return Some(&p.name);
    }
    errors.push(
        span,
        format!(
            "`{root}` is not a parameter of `{fn_name}` ({}); every placeholder must name a parameter or a field path on one",
            param_list(params)
        ),
    );
    None
}

fn return_shape(
    output: &ReturnType,
    fn_name: &Ident,
) -> Result<(Shape, Option<Type>), (Span, &'static str)> {
    let ty = match output {
        ReturnType::Default => {
            return Err((
                fn_name.span(),
                "the function returns `()`: there is nothing to cache (a function that only invalidates takes `invalidate = [...]` and no `prefix`)",
            ));
        }
        ReturnType::Type(_, ty) => &**ty,
    };
    match ty {
        Type::Tuple(t) if t.elems.is_empty() => Err((
            ty.span(),
            "the function returns `()`: there is nothing to cache",
        )),
        Type::ImplTrait(_) => Err((
            ty.span(),
            "a cached function must return a named type: `impl Trait` can not be decoded from the cache",
        )),
        Type::Path(p) if p.qself.is_none() => {
            let Some(last) = p.path.segments.last() else {
                return Ok((Shape::Plain, Some(ty.clone())));
            };
            let first_type_arg = match &last.arguments {
                syn::PathArguments::AngleBracketed(a) => a.args.iter().find_map(|arg| match arg {
                    syn::GenericArgument::Type(t) => Some(t.clone()),
                    _ => None,
                }),
                _ => None,
            };
            match (last.ident.to_string().as_str(), first_type_arg) {
                ("Result", Some(t)) => Ok((Shape::Result, Some(t))),
                ("Option", Some(t)) => Ok((Shape::Option, Some(t))),
                _ => Ok((Shape::Plain, Some(ty.clone()))),
            }
        }
        _ => Ok((Shape::Plain, Some(ty.clone()))),
    }
}

/// Only the success/failure split matters for write functions.
fn write_shape(output: &ReturnType, fn_name: &Ident) -> Shape {
    match return_shape(output, fn_name) {
        Ok((shape, _)) => shape,
        Err(_) => Shape::Plain,
    }
}

pub fn validate(args: &Args, sig: &Signature) -> syn::Result<Plan> {
    let mut errors = Errors(None);
    let fn_name = &sig.ident;

    if sig.asyncness.is_none() {
        errors.push(
            sig.fn_token.span,
            "#[cached] works on `async fn` only: the cache is reached over the network; write `async fn`",
        );
    }

    let has_key = args.prefix.is_some() || args.id.is_some() || args.invalidate.is_none();
    let mode = match (has_key, args.invalidate.is_some()) {
        (true, false) => Mode::Read,
        (true, true) => Mode::WriteThrough,
        (false, _) => Mode::Write,
    };

    // Parameters.
    let mut params = Vec::new();
    let mut receiver: Option<Span> = None;
    let mut unnamed = Vec::new();
    for input in &sig.inputs {
        match input {
            FnArg::Receiver(r) => receiver = Some(r.span()),
            FnArg::Typed(pt) => match &*pt.pat {
                Pat::Ident(pi) if pi.subpat.is_none() => params.push(Param {
                    name: pi.ident.clone(),
                    ty: (*pt.ty).clone(),
                }),
                // `_` can not influence the result: the body can not see it.
                Pat::Wild(_) => {}
                other => unnamed.push(other.span()),
            },
        }
    }

    // Options that only make sense with an own key.
    if mode == Mode::Write {
        let hint = "this function has no key of its own (it only invalidates); add `prefix` to also store its result (write-through), or remove the option";
        if let Some((name, _)) = &args.ttl {
            errors.push(name.span(), format!("`ttl` has no effect: {hint}"));
        }
        if let Some((name, _)) = &args.skip {
            errors.push(name.span(), format!("`skip` has no effect: {hint}"));
        }
        if let Some((name, _)) = &args.cache_none {
            errors.push(name.span(), format!("`cache_none` has no effect: {hint}"));
        }
    }

    let ttl_ms = match &args.ttl {
        Some((_, ttl)) => match parse_ttl(ttl) {
            Ok(ms) => Some(ms),
            Err(e) => {
                errors.push_err(e);
                None
            }
        },
        None => None,
    };

    // `skip`.
    let mut skipped: Vec<&Ident> = Vec::new();
    if let Some((_, list)) = &args.skip {
        for ident in list {
            if skipped.contains(&ident) {
                errors.push(ident.span(), format!("`{ident}` is listed twice in `skip`"));
            } else if !params.iter().any(|p| &p.name == ident) {
                errors.push(
                    ident.span(),
                    format!(
                        "`skip` names `{ident}`, which is not a parameter of `{fn_name}` ({})",
                        param_list(&params)
                    ),
                );
            }
            skipped.push(ident);
        }
    }

    // The return type.
    let (shape, stored_ty) = if mode == Mode::Write {
        (write_shape(&sig.output, fn_name), None)
    } else {
        match return_shape(&sig.output, fn_name) {
            Ok(found) => found,
            Err((span, msg)) => {
                errors.push(span, msg);
                (Shape::Plain, None)
            }
        }
    };
    if let Some((name, lit)) = &args.cache_none
        && mode != Mode::Write
        && shape != Shape::Option
        && lit.value
    {
        errors.push(
            name.span(),
            "`cache_none` applies to functions returning `Option<T>`; this one does not, so remove it",
        );
    }

    // The own key.
    let mut key = Vec::new();
    let mut used: Vec<(String, Span)> = Vec::new();
    if has_key {
        let bare = args.prefix.is_none() && args.id.is_none();
        if let (Some(receiver), None) = (receiver, &args.prefix) {
            errors.push(
                receiver,
                "a cached method needs an explicit `prefix`: the macro can not see the type's name, and two types' methods of the same name would share keys; e.g. `#[cached(prefix = \"user\", id = \"id\")]`",
            );
        }
        match &args.prefix {
            Some(lit) if lit.value().trim().is_empty() => errors.push(
                lit.span(),
                "`prefix` is empty: name the entry, e.g. `prefix = \"user\"` (or remove `prefix` to key on the function's name)",
            ),
            Some(lit) => match template::parse(lit) {
                Ok(t) => {
                    if t.is_pattern() {
                        errors.push(
                            lit.span(),
                            "a key `prefix` can not contain `*`, `?` or `[`: those are pattern characters (use them in `invalidate` templates)",
                        );
                    }
                    key = template_parts(&t, &params, fn_name, &mut errors, &mut used);
                }
                Err(e) => errors.push_err(e),
            },
            None => key.push(KeyPart::Text(fn_name.to_string())),
        }
        if let Some(lit) = &args.id {
            match split_path(&lit.value()) {
                Some((root, fields)) => {
                    if let Some(param) = check_root(&root, lit.span(), &params, fn_name, &mut errors) {
                        used.push((root.clone(), lit.span()));
                        let mut root = param.clone();
                        root.set_span(lit.span());
                        key.push(KeyPart::Text(":".into()));
                        key.push(KeyPart::Value(KeyValue {
                            root,
                            fields,
                            span: lit.span(),
                        }));
                    }
                }
                None => errors.push(
                    lit.span(),
                    "`id` names the parameter that identifies the entry, e.g. `id = \"user_id\"` or `id = \"user.id\"`",
                ),
            }
        }
        if bare {
            for p in params.iter().filter(|p| !skipped.contains(&&p.name)) {
                key.push(KeyPart::Text(":".into()));
                key.push(KeyPart::Value(KeyValue {
                    root: p.name.clone(),
                    fields: Vec::new(),
                    span: p.name.span(),
                }));
                used.push((plain_name(&p.name), p.name.span()));
            }
        }
        for s in &skipped {
            if used.iter().any(|(root, _)| plain_name(s) == *root) {
                errors.push(
                    s.span(),
                    format!(
                        "`{s}` is listed in `skip` but is part of the key; remove it from `skip`"
                    ),
                );
            }
        }
        // After a broken template or `id`, "parameter not in the key" would
        // only repeat the same mistake.
        let key_broken = errors.0.is_some();
        for p in params.iter().filter(|_| !key_broken) {
            let in_key = used.iter().any(|(r, _)| plain_name(&p.name) == *r);
            if !in_key && !skipped.contains(&&p.name) {
                let suggestion = if args.prefix.is_some() || args.id.is_some() {
                    format!("add `{{{0}}}` to `prefix`, or", p.name)
                } else {
                    String::new()
                };
                errors.push(
                    p.name.span(),
                    format!(
                        "parameter `{0}` is not part of the cache key, so calls that differ only in `{0}` would share one entry; {suggestion} list it in `skip = [{0}]` if it does not change the result",
                        p.name
                    ),
                );
            }
        }
        for span in &unnamed {
            errors.push(
                *span,
                "a destructured parameter can not be part of a cache key: take it by name (`point: Point`) and destructure inside the body",
            );
        }
    }

    // Invalidations.
    let mut invalidations = Vec::new();
    if let Some((_, entries)) = &args.invalidate {
        for entry in entries {
            match entry {
                InvalidateEntry::Typed(call) => {
                    invalidations.push(Invalidation::Typed(call.clone()))
                }
                InvalidateEntry::Template(lit) => match template::parse(lit) {
                    Ok(t) => {
                        let mut ignored = Vec::new();
                        let parts = template_parts(&t, &params, fn_name, &mut errors, &mut ignored);
                        invalidations.push(if t.is_pattern() {
                            Invalidation::Pattern(parts)
                        } else {
                            Invalidation::Exact(parts)
                        });
                    }
                    Err(e) => errors.push_err(e),
                },
            }
        }
    }

    if let Some(e) = errors.0 {
        return Err(e);
    }

    // Companion arguments: the parameters the own key reads, in order.
    let used_roots: BTreeSet<&str> = used.iter().map(|(r, _)| r.as_str()).collect();
    let key_params = params
        .iter()
        .filter(|p| used_roots.contains(plain_name(&p.name).as_str()))
        .map(|p| (p.name.clone(), p.ty.clone()))
        .collect();

    Ok(Plan {
        mode,
        shape,
        stored_ty,
        key: if has_key { key } else { Vec::new() },
        key_params,
        ttl_ms,
        cache_none: args.cache_none.as_ref().is_some_and(|(_, l)| l.value),
        invalidations,
        is_method: receiver.is_some() || mentions_self_type(sig),
    })
}

/// An associated function without a receiver can still be recognised when
/// its signature names `Self` (`async fn find(id: u64) -> Result<Self, E>`).
fn mentions_self_type(sig: &Signature) -> bool {
    fn scan(ts: proc_macro2::TokenStream) -> bool {
        ts.into_iter().any(|tt| match tt {
            proc_macro2::TokenTree::Ident(i) => i == "Self",
            proc_macro2::TokenTree::Group(g) => scan(g.stream()),
            _ => false,
        })
    }
    scan(quote::ToTokens::to_token_stream(&sig.inputs))
        || scan(quote::ToTokens::to_token_stream(&sig.output))
}

#[cfg(test)]
mod tests {
    use super::*;
    use quote::quote;

    fn plan(args: proc_macro2::TokenStream, f: proc_macro2::TokenStream) -> syn::Result<Plan> {
        let args = Args::parse(args)?;
        let item: syn::ItemFn = syn::parse2(f).unwrap();
        validate(&args, &item.sig)
    }

    #[test]
    fn read_function_with_template_and_skip() {
        let p = plan(
            quote!(
                prefix = "user:{user_id}:posts:{page}",
                ttl = "5m",
                skip = [db]
            ),
            quote!(
                async fn f(db: &Db, user_id: u64, page: u32) -> Result<Vec<Post>, E> {
                    todo!()
                }
            ),
        )
        .unwrap();
        assert_eq!(p.mode, Mode::Read);
        assert_eq!(p.shape, Shape::Result);
        assert_eq!(p.ttl_ms, Some(300_000));
        let names: Vec<String> = p.key_params.iter().map(|(n, _)| n.to_string()).collect();
        assert_eq!(names, ["user_id", "page"]);
    }

    #[test]
    fn collects_every_error() {
        let e = plan(
            quote!(prefix = "user:{uid}", skip = [nope]),
            quote!(
                fn f(db: &Db, user_id: u64) -> u64 {
                    1
                }
            ),
        )
        .unwrap_err();
        let msgs: Vec<String> = e.into_iter().map(|e| e.to_string()).collect();
        assert!(msgs.iter().any(|m| m.contains("async fn")), "{msgs:?}");
        assert!(
            msgs.iter().any(|m| m.contains("`uid` is not a parameter")),
            "{msgs:?}"
        );
        assert!(
            msgs.iter().any(|m| m.contains("`skip` names `nope`")),
            "{msgs:?}"
        );
        // A broken key reports itself only, not every parameter it misses.
        assert!(!msgs.iter().any(|m| m.contains("is not part")), "{msgs:?}");
        let e = plan(
            quote!(prefix = "user", id = "user_id"),
            quote!(
                async fn f(db: &Db, user_id: u64) -> u64 {
                    1
                }
            ),
        )
        .unwrap_err();
        assert!(e.to_string().contains("parameter `db` is not part"), "{e}");
    }

    #[test]
    fn ttl_forms() {
        let t = |s: &str| parse_ttl(&Ttl::Text(syn::LitStr::new(s, Span::call_site())));
        assert_eq!(t("90s").unwrap(), 90_000);
        assert_eq!(t("1d").unwrap(), 86_400_000);
        assert_eq!(t("250ms").unwrap(), 250);
        assert!(t("0s").is_err());
        assert!(t("5x").is_err());
        assert!(t("").is_err());
    }

    #[test]
    fn write_function_rejects_key_options() {
        let e = plan(
            quote!(invalidate = ["user:{id}"], ttl = 5),
            quote!(
                async fn f(id: u64) -> Result<(), E> {
                    Ok(())
                }
            ),
        )
        .unwrap_err();
        assert!(e.to_string().contains("`ttl` has no effect"), "{e}");
    }
}
