//! Stage 1: parse `#[cached(key = value, ...)]` into [`Args`], syntax only.

use proc_macro2::Span;
use syn::meta::ParseNestedMeta;
use syn::parse::{ParseStream, Parser};
use syn::punctuated::Punctuated;
use syn::spanned::Spanned;
use syn::{Expr, ExprCall, Ident, LitBool, LitStr, Token, bracketed};

pub const OPTIONS: &[&str] = &[
    "prefix",
    "id",
    "ttl",
    "skip",
    "version",
    "tags",
    "invalidate",
    "cache_none",
    "lease",
    "lease_ttl",
    "early_refresh",
    "stale_while_revalidate",
    "stale_if_error",
    "store",
    "near",
    "crate",
];

/// A duration option (`ttl`, `lease_ttl`, `stale_while_revalidate`,
/// `stale_if_error`): `1800` (seconds) or `"30m"`. Its value is checked in
/// `validate`, where each option's rule (zero allowed or not) is known.
#[derive(Debug, Clone)]
pub enum DurationArg {
    Seconds(syn::LitInt),
    Text(LitStr),
    /// A const path or const expression, in seconds (`u64`): `TTL_SECS`,
    /// `10 * 60`. Checked by rustc, and for zero at compile time.
    Const(syn::Expr),
}

impl DurationArg {
    pub fn span(&self) -> Span {
        match self {
            DurationArg::Seconds(l) => l.span(),
            DurationArg::Text(l) => l.span(),
            DurationArg::Const(e) => syn::spanned::Spanned::span(e),
        }
    }
}

/// `early_refresh = true | false | 1.5`.
#[derive(Debug, Clone)]
pub enum EarlyRefresh {
    Switch(LitBool),
    /// The XFetch beta, an integer or float literal; checked in `validate`.
    Factor(syn::Lit),
}

/// One entry of `invalidate = [...]`.
#[derive(Debug, Clone)]
pub enum InvalidateEntry {
    /// `get_user(user_id)`: another cached function and its key arguments.
    Typed(ExprCall),
    /// `"user:{user_id}:posts:*"`: a template of this function's parameters.
    Template(LitStr),
    /// `tag("user:{user_id}")`: every entry labelled with this tag, a
    /// template of this function's parameters. Recognised by its form: a
    /// call of the bare identifier `tag` with one string literal. To
    /// invalidate a cached function that is itself named `tag`, write a
    /// path to it (`self::tag(x)`, `crate::tag(x)`): that stays typed.
    Tag(LitStr),
}

#[derive(Debug, Default)]
pub struct Args {
    /// The span of each option's name, to report duplicates and misplaced options.
    pub prefix: Option<LitStr>,
    pub id: Option<LitStr>,
    pub ttl: Option<(Ident, DurationArg)>,
    pub skip: Option<(Ident, Vec<Ident>)>,
    pub invalidate: Option<(Ident, Vec<InvalidateEntry>)>,
    pub cache_none: Option<(Ident, LitBool)>,
    pub near: Option<(Ident, LitBool)>,
    pub lease: Option<(Ident, LitBool)>,
    pub lease_ttl: Option<(Ident, DurationArg)>,
    pub early_refresh: Option<(Ident, EarlyRefresh)>,
    pub stale_while_revalidate: Option<(Ident, DurationArg)>,
    pub stale_if_error: Option<(Ident, DurationArg)>,
    /// `tags = ["user:{user_id}", "posts"]`: labels of the own entry.
    pub tags: Option<(Ident, Vec<LitStr>)>,
    /// `version = 2`: checked (positive, fits a `u32`) in `validate`.
    pub version: Option<(Ident, syn::LitInt)>,
    /// `store = "flags"`: the name is checked in `validate`.
    pub store: Option<(Ident, LitStr)>,
    pub krate: Option<syn::Path>,
}

fn set_once<T>(slot: &mut Option<T>, meta: &ParseNestedMeta, value: T) -> syn::Result<()> {
    if slot.is_some() {
        let name = meta
            .path
            .get_ident()
            .map(ToString::to_string)
            .unwrap_or_default();
        return Err(meta.error(format!("duplicate option `{name}`: give each option once")));
    }
    *slot = Some(value);
    Ok(())
}

fn parse_list<T>(
    input: ParseStream,
    item: fn(ParseStream) -> syn::Result<T>,
) -> syn::Result<Vec<T>> {
    let content;
    bracketed!(content in input);
    let items = Punctuated::<T, Token![,]>::parse_terminated_with(&content, item)?;
    Ok(items.into_iter().collect())
}

/// The value of a duration option: seconds or a duration string.
fn parse_duration(input: ParseStream, name: &str, examples: &str) -> syn::Result<DurationArg> {
    let help = |span| {
        syn::Error::new(
            span,
            format!(
                "`{name}` takes seconds, a duration string, or a const expression in seconds (`u64`): {examples}"
            ),
        )
    };
    let expr: syn::Expr = input.parse().map_err(|e| help(e.span()))?;
    match expr {
        syn::Expr::Lit(syn::ExprLit {
            lit: syn::Lit::Int(lit),
            ..
        }) => Ok(DurationArg::Seconds(lit)),
        syn::Expr::Lit(syn::ExprLit {
            lit: syn::Lit::Str(lit),
            ..
        }) => Ok(DurationArg::Text(lit)),
        // Another literal (`1.5`, `true`), or a negated one: never a
        // number of seconds.
        syn::Expr::Lit(lit) => Err(help(syn::spanned::Spanned::span(&lit))),
        syn::Expr::Unary(u) if matches!(&*u.expr, syn::Expr::Lit(_)) => {
            Err(help(syn::spanned::Spanned::span(&u)))
        }
        other => Ok(DurationArg::Const(other)),
    }
}

fn parse_early_refresh(input: ParseStream) -> syn::Result<EarlyRefresh> {
    // syn would read `-1.5` as one literal spanned on the `-` alone; blame
    // the whole number instead.
    if input.peek(Token![-]) {
        let minus: Token![-] = input.parse()?;
        let rest: Option<proc_macro2::TokenTree> = if input.peek(syn::Lit) {
            Some(input.parse()?)
        } else {
            None
        };
        return Err(syn::Error::new_spanned(
            quote::quote!(#minus #rest),
            EARLY_REFRESH_HELP,
        ));
    }
    let lit: syn::Lit = input
        .parse()
        .map_err(|e| syn::Error::new(e.span(), EARLY_REFRESH_HELP))?;
    match lit {
        syn::Lit::Bool(b) => Ok(EarlyRefresh::Switch(b)),
        lit @ (syn::Lit::Int(_) | syn::Lit::Float(_)) => Ok(EarlyRefresh::Factor(lit)),
        other => Err(syn::Error::new(other.span(), EARLY_REFRESH_HELP)),
    }
}

pub const EARLY_REFRESH_HELP: &str = "`early_refresh` takes `true`, `false` or a positive factor (XFetch beta), e.g. `early_refresh = 1.5`";

fn parse_skip_item(input: ParseStream) -> syn::Result<Ident> {
    if input.peek(Token![self]) {
        let tok: Token![self] = input.parse()?;
        return Err(syn::Error::new(
            tok.span(),
            "`self` is never part of a key, so it needs no `skip`; remove it",
        ));
    }
    input.parse::<Ident>().map_err(|e| {
        syn::Error::new(
            e.span(),
            "`skip` takes parameter names: `skip = [db, pool]`",
        )
    })
}

pub const TAG_CALL_HELP: &str = "`tag(...)` invalidates every entry with a tag and takes one string literal, a template of this function's parameters: `tag(\"user:{user_id}\")`; to invalidate a cached function named `tag`, write its path: `self::tag(..)`";

/// `tag(...)`: the bare identifier `tag` called, nothing more (a path such
/// as `self::tag(..)` is a typed invalidation).
fn is_tag_call(call: &ExprCall) -> bool {
    matches!(&*call.func, Expr::Path(p) if p.qself.is_none() && p.path.is_ident("tag"))
}

fn parse_invalidate_item(input: ParseStream) -> syn::Result<InvalidateEntry> {
    if input.peek(LitStr) {
        return Ok(InvalidateEntry::Template(input.parse()?));
    }
    let expr: Expr = input.parse()?;
    match expr {
        Expr::Call(call) if is_tag_call(&call) => {
            let mut args = call.args.iter();
            match (args.next(), args.next()) {
                (
                    Some(Expr::Lit(syn::ExprLit {
                        lit: syn::Lit::Str(lit),
                        attrs,
                    })),
                    None,
                ) if attrs.is_empty() => Ok(InvalidateEntry::Tag(lit.clone())),
                (None, _) => Err(syn::Error::new(call.paren_token.span.join(), TAG_CALL_HELP)),
                _ => Err(syn::Error::new_spanned(&call.args, TAG_CALL_HELP)),
            }
        }
        Expr::Call(call) if matches!(*call.func, Expr::Path(_)) => Ok(InvalidateEntry::Typed(call)),
        other => Err(syn::Error::new(
            other.span(),
            "expected a cached function call such as `get_user(user_id)`, a key template string such as \"user:{user_id}:posts:*\" or a tag such as `tag(\"user:{user_id}\")`",
        )),
    }
}

fn parse_version(input: ParseStream) -> syn::Result<syn::LitInt> {
    // As for `early_refresh`: blame all of `-1`, not the `-` alone.
    if input.peek(Token![-]) {
        let minus: Token![-] = input.parse()?;
        let rest: Option<proc_macro2::TokenTree> = if input.peek(syn::Lit) {
            Some(input.parse()?)
        } else {
            None
        };
        return Err(syn::Error::new_spanned(
            quote::quote!(#minus #rest),
            VERSION_HELP,
        ));
    }
    input
        .parse()
        .map_err(|e| syn::Error::new(e.span(), VERSION_HELP))
}

fn parse_tag_item(input: ParseStream) -> syn::Result<LitStr> {
    input
        .parse()
        .map_err(|e| syn::Error::new(e.span(), TAGS_HELP))
}

pub const TAGS_HELP: &str =
    "`tags` takes template strings: `tags = [\"user:{user_id}\", \"posts\"]`";

pub const VERSION_HELP: &str =
    "`version` takes a positive integer (a `u32`), appended to the key as `:v<N>`: `version = 2`";

impl Args {
    pub fn parse(tokens: proc_macro2::TokenStream) -> syn::Result<Args> {
        let mut args = Args::default();
        let parser = syn::meta::parser(|meta| {
            let Some(name) = meta.path.get_ident().cloned() else {
                let path = quote::ToTokens::to_token_stream(&meta.path)
                    .to_string()
                    .replace(' ', "");
                return Err(meta.error(unknown_option_message(&format!("`{path}`"))));
            };
            match name.to_string().as_str() {
                "prefix" => {
                    let lit: LitStr = meta.value()?.parse()?;
                    set_once(&mut args.prefix, &meta, lit)
                }
                "id" => {
                    let lit: LitStr = meta.value()?.parse()?;
                    set_once(&mut args.id, &meta, lit)
                }
                "ttl" => {
                    let ttl =
                        parse_duration(meta.value()?, "ttl", "`ttl = 1800` or `ttl = \"30m\"`")?;
                    set_once(&mut args.ttl, &meta, (name, ttl))
                }
                "lease_ttl" => {
                    let ttl = parse_duration(
                        meta.value()?,
                        "lease_ttl",
                        "`lease_ttl = 5` or `lease_ttl = \"5s\"`",
                    )?;
                    set_once(&mut args.lease_ttl, &meta, (name, ttl))
                }
                "stale_while_revalidate" => {
                    let d = parse_duration(
                        meta.value()?,
                        "stale_while_revalidate",
                        "`stale_while_revalidate = 30` or `stale_while_revalidate = \"30s\"`",
                    )?;
                    set_once(&mut args.stale_while_revalidate, &meta, (name, d))
                }
                "stale_if_error" => {
                    let d = parse_duration(
                        meta.value()?,
                        "stale_if_error",
                        "`stale_if_error = 300` or `stale_if_error = \"5m\"`",
                    )?;
                    set_once(&mut args.stale_if_error, &meta, (name, d))
                }
                "lease" => {
                    let lit: LitBool = meta.value()?.parse().map_err(|e| {
                        syn::Error::new(e.span(), "`lease` takes `true` or `false`")
                    })?;
                    set_once(&mut args.lease, &meta, (name, lit))
                }
                "early_refresh" => {
                    let value = parse_early_refresh(meta.value()?)?;
                    set_once(&mut args.early_refresh, &meta, (name, value))
                }
                "skip" => {
                    let list = parse_list(meta.value()?, parse_skip_item)?;
                    set_once(&mut args.skip, &meta, (name, list))
                }
                "invalidate" => {
                    let list = parse_list(meta.value()?, parse_invalidate_item)?;
                    if list.is_empty() {
                        return Err(syn::Error::new(
                            name.span(),
                            "`invalidate` is empty: list what this function invalidates, or remove the option",
                        ));
                    }
                    set_once(&mut args.invalidate, &meta, (name, list))
                }
                "tags" => {
                    let input = meta.value()?;
                    if !input.peek(syn::token::Bracket) {
                        return Err(input.error(TAGS_HELP));
                    }
                    let list = parse_list(input, parse_tag_item)?;
                    if list.is_empty() {
                        return Err(syn::Error::new(
                            name.span(),
                            "`tags` is empty: list the tags of this function's entries, or remove the option",
                        ));
                    }
                    set_once(&mut args.tags, &meta, (name, list))
                }
                "version" => {
                    let lit = parse_version(meta.value()?)?;
                    set_once(&mut args.version, &meta, (name, lit))
                }
                "store" => {
                    let lit: LitStr = meta.value()?.parse().map_err(|e| {
                        syn::Error::new(
                            e.span(),
                            "`store` takes the name of a store as a string: `store = \"flags\"`",
                        )
                    })?;
                    set_once(&mut args.store, &meta, (name, lit))
                }
                "cache_none" => {
                    let lit: LitBool = meta.value()?.parse()?;
                    set_once(&mut args.cache_none, &meta, (name, lit))
                }
                "near" => {
                    let lit: LitBool = meta.value()?.parse().map_err(|e: syn::Error| {
                        syn::Error::new(e.span(), "`near` takes `true` or `false`")
                    })?;
                    set_once(&mut args.near, &meta, (name, lit))
                }
                "crate" => {
                    let lit: LitStr = meta.value()?.parse()?;
                    let path = lit.parse().map_err(|_| {
                        syn::Error::new(
                            lit.span(),
                            "`crate` takes a path string, e.g. `crate = \"::cache_runtime\"`",
                        )
                    })?;
                    set_once(&mut args.krate, &meta, path)
                }
                other => Err(syn::Error::new(
                    name.span(),
                    unknown_option_message(&format!("`{other}`")),
                )),
            }
        });
        parser.parse2(tokens)?;
        Ok(args)
    }
}

fn unknown_option_message(what: &str) -> String {
    format!(
        "unknown option {what} of #[cached]; valid options are: {}",
        OPTIONS.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use quote::quote;

    #[test]
    fn parses_every_option() {
        let a = Args::parse(quote!(
            prefix = "user:{id}",
            ttl = "5m",
            skip = [db],
            cache_none = true,
            invalidate = [get_user(id), "user:{id}:*"],
            crate = "::cache_runtime"
        ))
        .unwrap();
        assert_eq!(a.prefix.unwrap().value(), "user:{id}");
        assert_eq!(a.skip.unwrap().1.len(), 1);
        assert_eq!(a.invalidate.unwrap().1.len(), 2);
        assert!(a.cache_none.unwrap().1.value);
    }

    #[test]
    fn rejects_unknown_and_duplicate_options() {
        let e = Args::parse(quote!(prefx = "user")).unwrap_err();
        assert!(e.to_string().contains("valid options are: prefix"), "{e}");
        let e = Args::parse(quote!(ttl = 1, ttl = 2)).unwrap_err();
        assert!(e.to_string().contains("duplicate option `ttl`"), "{e}");
    }

    #[test]
    fn parses_stampede_options() {
        let a = Args::parse(quote!(
            lease = true,
            lease_ttl = 5,
            early_refresh = 2.5,
            stale_while_revalidate = "30s",
            stale_if_error = 0
        ))
        .unwrap();
        assert!(a.lease.unwrap().1.value);
        assert!(matches!(a.lease_ttl.unwrap().1, DurationArg::Seconds(_)));
        assert!(matches!(
            a.early_refresh.unwrap().1,
            EarlyRefresh::Factor(syn::Lit::Float(_))
        ));
        assert!(matches!(
            a.stale_while_revalidate.unwrap().1,
            DurationArg::Text(_)
        ));
        assert!(matches!(
            a.stale_if_error.unwrap().1,
            DurationArg::Seconds(_)
        ));
        let a = Args::parse(quote!(early_refresh = false)).unwrap();
        assert!(matches!(
            a.early_refresh.unwrap().1,
            EarlyRefresh::Switch(b) if !b.value
        ));
        let a = Args::parse(quote!(early_refresh = 2)).unwrap();
        assert!(matches!(
            a.early_refresh.unwrap().1,
            EarlyRefresh::Factor(syn::Lit::Int(_))
        ));
    }

    #[test]
    fn rejects_malformed_stampede_options() {
        let err = |ts| Args::parse(ts).unwrap_err().to_string();
        assert_eq!(err(quote!(early_refresh = "fast")), EARLY_REFRESH_HELP);
        assert_eq!(err(quote!(early_refresh = fast)), EARLY_REFRESH_HELP);
        assert_eq!(err(quote!(early_refresh = -1.5)), EARLY_REFRESH_HELP);
        assert_eq!(
            err(quote!(lease = "yes")),
            "`lease` takes `true` or `false`"
        );
        let e = err(quote!(stale_if_error = true));
        assert!(e.starts_with("`stale_if_error` takes seconds"), "{e}");
        let e = err(quote!(lease_ttl = 1.5));
        assert!(e.starts_with("`lease_ttl` takes seconds"), "{e}");
        let e = err(quote!(lease = true, lease = false));
        assert!(e.contains("duplicate option `lease`"), "{e}");
        let e = err(quote!(leese = true));
        assert!(
            e.contains("lease, lease_ttl, early_refresh, stale_while_revalidate, stale_if_error"),
            "{e}"
        );
    }

    #[test]
    fn parses_tags_version_store_and_tag_invalidations() {
        let a = Args::parse(quote!(
            prefix = "user",
            id = "user_id",
            tags = ["user:{user_id}", "posts"],
            version = 3,
            store = "flags",
            invalidate = [tag("user:{user_id}"), self::tag(user_id), get_user(user_id)]
        ))
        .unwrap();
        let tags: Vec<String> = a.tags.unwrap().1.iter().map(LitStr::value).collect();
        assert_eq!(tags, ["user:{user_id}", "posts"]);
        assert_eq!(a.version.unwrap().1.base10_digits(), "3");
        assert_eq!(a.store.unwrap().1.value(), "flags");
        let entries = a.invalidate.unwrap().1;
        assert!(matches!(&entries[0], InvalidateEntry::Tag(l) if l.value() == "user:{user_id}"));
        // A path to a function named `tag` stays a typed invalidation.
        assert!(matches!(&entries[1], InvalidateEntry::Typed(_)));
        assert!(matches!(&entries[2], InvalidateEntry::Typed(_)));
    }

    #[test]
    fn rejects_malformed_tags_version_store() {
        let err = |ts| Args::parse(ts).unwrap_err().to_string();
        assert_eq!(err(quote!(tags = [user_id])), TAGS_HELP);
        assert_eq!(err(quote!(tags = "user")), TAGS_HELP);
        assert_eq!(
            err(quote!(tags = [])),
            "`tags` is empty: list the tags of this function's entries, or remove the option"
        );
        assert_eq!(err(quote!(version = "2")), VERSION_HELP);
        assert_eq!(err(quote!(version = 1.5)), VERSION_HELP);
        assert_eq!(err(quote!(version = -1)), VERSION_HELP);
        assert_eq!(
            err(quote!(store = flags)),
            "`store` takes the name of a store as a string: `store = \"flags\"`"
        );
        for dup in [
            quote!(tags = ["a"], tags = ["b"]),
            quote!(version = 1, version = 2),
            quote!(store = "a", store = "b"),
        ] {
            assert!(err(dup).contains("duplicate option"));
        }
        assert_eq!(err(quote!(near = "yes")), "`near` takes `true` or `false`");
        let e = err(quote!(stor = "flags"));
        assert!(
            e.contains("prefix, id, ttl, skip, version, tags, invalidate, cache_none")
                && e.ends_with("stale_if_error, store, near, crate"),
            "{e}"
        );
    }

    #[test]
    fn tag_invalidation_takes_one_string_literal() {
        let err = |ts| Args::parse(ts).unwrap_err().to_string();
        for bad in [
            quote!(invalidate = [tag(user_id)]),
            quote!(invalidate = [tag("a", "b")]),
            quote!(invalidate = [tag()]),
            quote!(invalidate = [tag(concat!("a", "b"))]),
        ] {
            assert_eq!(err(bad), TAG_CALL_HELP);
        }
    }
}
