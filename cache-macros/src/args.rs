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
    "invalidate",
    "cache_none",
    "crate",
];

/// `ttl = 1800` or `ttl = "30m"`.
#[derive(Debug, Clone)]
pub enum Ttl {
    Seconds(syn::LitInt),
    Text(LitStr),
}

impl Ttl {
    pub fn span(&self) -> Span {
        match self {
            Ttl::Seconds(l) => l.span(),
            Ttl::Text(l) => l.span(),
        }
    }
}

/// One entry of `invalidate = [...]`.
#[derive(Debug, Clone)]
pub enum InvalidateEntry {
    /// `get_user(user_id)`: another cached function and its key arguments.
    Typed(ExprCall),
    /// `"user:{user_id}:posts:*"`: a template of this function's parameters.
    Template(LitStr),
}

#[derive(Debug, Default)]
pub struct Args {
    /// The span of each option's name, to report duplicates and misplaced options.
    pub prefix: Option<LitStr>,
    pub id: Option<LitStr>,
    pub ttl: Option<(Ident, Ttl)>,
    pub skip: Option<(Ident, Vec<Ident>)>,
    pub invalidate: Option<(Ident, Vec<InvalidateEntry>)>,
    pub cache_none: Option<(Ident, LitBool)>,
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

fn parse_invalidate_item(input: ParseStream) -> syn::Result<InvalidateEntry> {
    if input.peek(LitStr) {
        return Ok(InvalidateEntry::Template(input.parse()?));
    }
    let expr: Expr = input.parse()?;
    match expr {
        Expr::Call(call) if matches!(*call.func, Expr::Path(_)) => Ok(InvalidateEntry::Typed(call)),
        other => Err(syn::Error::new(
            other.span(),
            "expected a cached function call such as `get_user(user_id)` or a key template string such as \"user:{user_id}:posts:*\"",
        )),
    }
}

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
                    let input = meta.value()?;
                    let ttl = if input.peek(syn::LitInt) {
                        Ttl::Seconds(input.parse()?)
                    } else if input.peek(LitStr) {
                        Ttl::Text(input.parse()?)
                    } else {
                        return Err(input.error(
                            "`ttl` takes seconds or a duration string: `ttl = 1800` or `ttl = \"30m\"`",
                        ));
                    };
                    set_once(&mut args.ttl, &meta, (name, ttl))
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
                "cache_none" => {
                    let lit: LitBool = meta.value()?.parse()?;
                    set_once(&mut args.cache_none, &meta, (name, lit))
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
}
