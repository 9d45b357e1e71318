//! Stage 2: check the arguments against the function's signature and decide
//! what to generate. Every misuse is an error with a span on the exact token;
//! all errors are collected and reported together.

use std::collections::BTreeSet;

use proc_macro2::Span;
use syn::spanned::Spanned;
use syn::{FnArg, Ident, LitStr, Pat, ReturnType, Signature, Type};

use crate::args::{
    Args, DurationArg, EARLY_REFRESH_HELP, EarlyRefresh, InvalidateEntry, VERSION_HELP,
};
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
    /// `tag("user:{user_id}")`: every entry labelled with this tag.
    Tag(Vec<KeyPart>),
}

/// At most this many `tags` per function.
pub const MAX_TAGS: usize = 255;

#[derive(Debug)]
pub struct Plan {
    pub mode: Mode,
    /// Where a missing `Cacheable` impl is reported: the stored part of the
    /// return type as written (`T` of `Result<T, E>`), or the whole type.
    /// Only a span: the shape itself is decided by rustc, from the type
    /// (aliases included), in the expansion.
    pub stored_ty: Option<Type>,
    /// The own key, as written into a `KeyBuilder` after the namespace,
    /// `:v<N>` of `version` included.
    pub key: Vec<KeyPart>,
    /// `tags`: each tag as written into a `KeyBuilder`; only parameters of the own key.
    pub tags: Vec<Vec<KeyPart>>,
    /// `store = "name"`; `None`: the default store.
    pub store: Option<String>,
    /// Parameters the own key reads, in signature order: the companions' arguments.
    pub key_params: Vec<(Ident, Type)>,
    pub ttl: Option<Dur>,
    pub cache_none: bool,
    /// `cache_none = true`: where to report a return type without a `None`.
    pub cache_none_span: Option<Span>,
    /// `near = true`: served from the in-process near tier when it holds
    /// the entry (read functions only).
    pub near: bool,
    /// The stampede options; `None`: not given, the cache's setting applies.
    /// Only read functions take them.
    pub lease: Option<bool>,
    pub lease_ttl: Option<Dur>,
    /// The XFetch beta; `0.0` is `early_refresh = false`.
    pub early_refresh: Option<f64>,
    /// `0` is "off for this function".
    pub swr: Option<Dur>,
    pub sie: Option<Dur>,
    pub invalidations: Vec<Invalidation>,
    /// A `self` method: it lives in an impl, where its companions come from
    /// `#[cached]` on the impl block (a trait impl can hold no others).
    pub has_receiver: bool,
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

/// How one duration option reads its value.
pub struct DurationRule {
    pub name: &'static str,
    /// Seconds, for the example in the error message.
    pub example: u64,
    /// `0` means "off for this function" rather than being an error.
    pub zero_is_off: bool,
}

pub const TTL: DurationRule = DurationRule {
    name: "ttl",
    example: 1800,
    zero_is_off: false,
};
pub const LEASE_TTL: DurationRule = DurationRule {
    name: "lease_ttl",
    example: 5,
    zero_is_off: false,
};
pub const STALE_WHILE_REVALIDATE: DurationRule = DurationRule {
    name: "stale_while_revalidate",
    example: 30,
    zero_is_off: true,
};
pub const STALE_IF_ERROR: DurationRule = DurationRule {
    name: "stale_if_error",
    example: 300,
    zero_is_off: true,
};

/// A duration option's value.
#[derive(Debug, Clone)]
pub enum Dur {
    /// A literal, parsed here.
    Millis(u64),
    /// A const expression in seconds, for rustc to evaluate (and check for
    /// zero where zero is not allowed).
    Seconds(syn::Expr),
}

impl Dur {
    /// The milliseconds of a literal.
    #[cfg(test)]
    pub fn millis(d: &Option<Dur>) -> Option<u64> {
        match d {
            Some(Dur::Millis(ms)) => Some(*ms),
            _ => None,
        }
    }
}

/// The one duration grammar, shared with the environment
/// (`CACHE_DEFAULT_TTL`): seconds, or a `humantime` duration such as
/// `"500ms"`, `"90s"`, `"10min"`, `"1h30m"`, `"1d"`. `None`: not a duration.
fn text_millis(text: &str) -> Option<u64> {
    let text = text.trim();
    if let Ok(secs) = text.parse::<u64>() {
        return secs.checked_mul(1000);
    }
    let d = humantime::parse_duration(text).ok()?;
    u64::try_from(d.as_millis()).ok()
}

/// Parses a duration option: seconds, a duration string, or a const
/// expression in seconds.
pub fn parse_duration(rule: &DurationRule, arg: &DurationArg) -> syn::Result<Dur> {
    let ms = match arg {
        DurationArg::Seconds(lit) => lit
            .base10_parse::<u64>()
            .ok()
            .and_then(|s| s.checked_mul(1000)),
        DurationArg::Text(lit) => text_millis(&lit.value()),
        DurationArg::Const(expr) => return Ok(Dur::Seconds(expr.clone())),
    };
    match ms {
        Some(ms) if ms > 0 || rule.zero_is_off => Ok(Dur::Millis(ms)),
        _ => {
            let DurationRule {
                name,
                example,
                zero_is_off,
            } = rule;
            let (positive, off) = if *zero_is_off {
                ("", "; `0` turns it off for this function")
            } else {
                ("positive ", "")
            };
            Err(syn::Error::new(
                arg.span(),
                format!(
                    "`{name}` must be a {positive}number of seconds (`{name} = {example}`), a duration such as \"500ms\", \"90s\", \"10min\", \"1h30m\", \"1d\", or a const expression in seconds{off}"
                ),
            ))
        }
    }
}

/// A duration option's value, or its error pushed to `errors`.
fn duration_ms(
    option: &Option<(Ident, DurationArg)>,
    rule: &DurationRule,
    errors: &mut Errors,
) -> Option<Dur> {
    let (_, arg) = option.as_ref()?;
    parse_duration(rule, arg)
        .map_err(|e| errors.push_err(e))
        .ok()
}

/// The XFetch beta of `early_refresh`: `true` is 1, `false` is 0 (off).
pub fn early_refresh_beta(value: &EarlyRefresh) -> syn::Result<f64> {
    let lit = match value {
        EarlyRefresh::Switch(b) => return Ok(if b.value { 1.0 } else { 0.0 }),
        EarlyRefresh::Factor(lit) => lit,
    };
    let beta = match lit {
        syn::Lit::Int(i) => i.base10_parse::<f64>().ok(),
        syn::Lit::Float(f) => f.base10_parse::<f64>().ok(),
        _ => None,
    };
    match beta {
        Some(beta) if beta.is_finite() && beta > 0.0 => Ok(beta),
        Some(0.0) => Err(syn::Error::new(
            lit.span(),
            format!(
                "`early_refresh = {}` would never refresh early: write `early_refresh = false` to turn it off, or give a positive factor (XFetch beta), e.g. `early_refresh = 1.5`",
                quote::ToTokens::to_token_stream(lit)
            ),
        )),
        _ => Err(syn::Error::new(lit.span(), EARLY_REFRESH_HELP)),
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

/// The type to blame for a missing `Cacheable` impl, or the error of a
/// return type that can not be cached. `Result<T, ..>` / `Option<T>` as
/// written point at `T`; anything else (an alias) at itself. The name is
/// used for nothing else.
fn stored_span_type(output: &ReturnType, fn_name: &Ident) -> Result<Type, (Span, &'static str)> {
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
            let inner = p.path.segments.last().and_then(|last| {
                let syn::PathArguments::AngleBracketed(a) = &last.arguments else {
                    return None;
                };
                let named = last.ident == "Result" || last.ident == "Option";
                a.args.iter().find_map(|arg| match arg {
                    syn::GenericArgument::Type(t) if named => Some(t.clone()),
                    _ => None,
                })
            });
            Ok(inner.unwrap_or_else(|| ty.clone()))
        }
        _ => Ok(ty.clone()),
    }
}

/// The facts of one signature and its arguments, shared by the rules
/// below; each rule is a method that checks one thing (reporting to
/// `errors`) and returns what it decided.
struct Check<'a> {
    args: &'a Args,
    sig: &'a Signature,
    fn_name: &'a Ident,
    mode: Mode,
    /// The function has a key of its own (read or write-through).
    has_key: bool,
    params: Vec<Param>,
    receiver: Option<Span>,
    /// Destructured parameters.
    unnamed: Vec<Span>,
    errors: Errors,
}

/// What the stampede options decided.
struct Stampede {
    lease: Option<bool>,
    lease_ttl: Option<Dur>,
    swr: Option<Dur>,
    sie: Option<Dur>,
    early_refresh: Option<f64>,
}

impl<'a> Check<'a> {
    fn new(args: &'a Args, sig: &'a Signature) -> Self {
        let has_key = args.prefix.is_some() || args.id.is_some() || args.invalidate.is_none();
        let mode = match (has_key, args.invalidate.is_some()) {
            (true, false) => Mode::Read,
            (true, true) => Mode::WriteThrough,
            (false, _) => Mode::Write,
        };
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
        Check {
            args,
            sig,
            fn_name: &sig.ident,
            mode,
            has_key,
            params,
            receiver,
            unnamed,
            errors: Errors(None),
        }
    }

    /// A parsed template's parts, each placeholder naming a parameter (or a
    /// field path on one); the parameters it reads are added to `used`.
    fn parts(&mut self, t: &Template, used: &mut Vec<(String, Span)>) -> Vec<KeyPart> {
        template_parts(t, &self.params, self.fn_name, &mut self.errors, used)
    }

    /// The function is `async`: the cache is reached over the network.
    fn rule_async(&mut self) {
        if self.sig.asyncness.is_none() {
            self.errors.push(
                self.sig.fn_token.span,
                "#[cached] works on `async fn` only: the cache is reached over the network; write `async fn`",
            );
        }
    }

    /// Options that only make sense with an own key are not given to a
    /// write function.
    fn rule_keyless_options(&mut self) {
        if self.mode == Mode::Write {
            let hint = "this function has no key of its own (it only invalidates); add `prefix` to also store its result (write-through), or remove the option";
            if let Some((name, _)) = &self.args.ttl {
                self.errors
                    .push(name.span(), format!("`ttl` has no effect: {hint}"));
            }
            if let Some((name, _)) = &self.args.skip {
                self.errors
                    .push(name.span(), format!("`skip` has no effect: {hint}"));
            }
            if let Some((name, _)) = &self.args.cache_none {
                self.errors
                    .push(name.span(), format!("`cache_none` has no effect: {hint}"));
            }
            if let Some((name, _)) = &self.args.version {
                self.errors
                    .push(name.span(), format!("`version` has no effect: {hint}"));
            }
            if let Some((name, tags)) = &self.args.tags {
                let example = tags
                    .first()
                    .map(LitStr::value)
                    .unwrap_or_else(|| "user:{user_id}".to_owned());
                self.errors.push(
                    name.span(),
                    format!(
                        "`tags` has no effect: a write function stores nothing to label; to invalidate the entries that carry a tag, write `invalidate = [tag({example:?})]`"
                    ),
                );
            }
        }
    }

    /// Stampede options change how a cached value is served or recomputed,
    /// so only read functions take them; `lease_ttl` needs leases; each
    /// duration and beta is valid.
    fn stampede_options(&mut self) -> Stampede {
        let stampede_options = [
            self.args.lease.as_ref().map(|(name, _)| name),
            self.args.lease_ttl.as_ref().map(|(name, _)| name),
            self.args.early_refresh.as_ref().map(|(name, _)| name),
            self.args
                .stale_while_revalidate
                .as_ref()
                .map(|(name, _)| name),
            self.args.stale_if_error.as_ref().map(|(name, _)| name),
            self.args.near.as_ref().map(|(name, _)| name),
        ];
        let not_read = match self.mode {
            Mode::Read => None,
            Mode::WriteThrough => Some(
                "a write-through function always runs its body and never serves a cached value",
            ),
            Mode::Write => Some("a write function has no cached value (it only invalidates)"),
        };
        if let Some(why) = not_read {
            for name in stampede_options.into_iter().flatten() {
                self.errors.push(
                    name.span(),
                    format!("`{name}` applies to read functions only: {why}; remove the option"),
                );
            }
        }
        let lease = self.args.lease.as_ref().map(|(_, lit)| lit.value);
        if let (Some(false), Some((name, _)), Mode::Read) = (lease, &self.args.lease_ttl, self.mode)
        {
            self.errors.push(
                name.span(),
                "`lease_ttl` has no effect with `lease = false`; remove one",
            );
        }
        let lease_ttl_ms = duration_ms(&self.args.lease_ttl, &LEASE_TTL, &mut self.errors);
        let swr_ms = duration_ms(
            &self.args.stale_while_revalidate,
            &STALE_WHILE_REVALIDATE,
            &mut self.errors,
        );
        let sie_ms = duration_ms(&self.args.stale_if_error, &STALE_IF_ERROR, &mut self.errors);
        let early_refresh = self.args.early_refresh.as_ref().and_then(|(_, value)| {
            early_refresh_beta(value)
                .map_err(|e| self.errors.push_err(e))
                .ok()
        });
        Stampede {
            lease,
            lease_ttl: lease_ttl_ms,
            swr: swr_ms,
            sie: sie_ms,
            early_refresh,
        }
    }

    /// `skip` names parameters, each once.
    fn skipped(&mut self) -> Vec<&'a Ident> {
        let args = self.args;
        let mut skipped: Vec<&Ident> = Vec::new();
        if let Some((_, list)) = &args.skip {
            for ident in list {
                if skipped.contains(&ident) {
                    self.errors
                        .push(ident.span(), format!("`{ident}` is listed twice in `skip`"));
                } else if !self.params.iter().any(|p| &p.name == ident) {
                    self.errors.push(
                        ident.span(),
                        format!(
                            "`skip` names `{ident}`, which is not a parameter of `{}` ({})",
                            self.fn_name,
                            param_list(&self.params)
                        ),
                    );
                }
                skipped.push(ident);
            }
        }
        skipped
    }

    /// Only what can not be cached at all is checked here; the return
    /// type's shape (and so what `cache_none` applies to) is rustc's.
    fn stored_type(&mut self) -> Option<Type> {
        if self.mode == Mode::Write {
            return None;
        }
        match stored_span_type(&self.sig.output, self.fn_name) {
            Ok(ty) => Some(ty),
            Err((span, msg)) => {
                self.errors.push(span, msg);
                None
            }
        }
    }

    /// The own key: `prefix`, `id` or every parameter; every parameter is
    /// in the key or in `skip`, never both; `self` and destructured
    /// parameters are not key parts. Returns the key and the parameters it
    /// reads.
    fn own_key(&mut self, skipped: &[&Ident]) -> (Vec<KeyPart>, Vec<(String, Span)>) {
        let mut key = Vec::new();
        let mut used: Vec<(String, Span)> = Vec::new();
        if self.has_key {
            let bare = self.args.prefix.is_none() && self.args.id.is_none();
            if let (Some(receiver), None) = (self.receiver, &self.args.prefix) {
                self.errors.push(
                    receiver,
                    "a cached method needs an explicit `prefix`: the macro can not see the type's name, and two types' methods of the same name would share keys; e.g. `#[cached(prefix = \"user\", id = \"id\")]`",
                );
            }
            match &self.args.prefix {
                Some(lit) if lit.value().trim().is_empty() => self.errors.push(
                    lit.span(),
                    "`prefix` is empty: name the entry, e.g. `prefix = \"user\"` (or remove `prefix` to key on the function's name)",
                ),
                Some(lit) => match template::parse(lit) {
                    Ok(t) => {
                        if t.is_pattern() {
                            self.errors.push(
                                lit.span(),
                                "a key `prefix` can not contain `*`, `?` or `[`: those are pattern characters (use them in `invalidate` templates)",
                            );
                        }
                        key = self.parts(&t, &mut used);
                    }
                    Err(e) => self.errors.push_err(e),
                },
                None => key.push(KeyPart::Text(self.fn_name.to_string())),
            }
            if let Some(lit) = &self.args.id {
                match split_path(&lit.value()) {
                    Some((root, fields)) => {
                        if let Some(param) = check_root(&root, lit.span(), &self.params, self.fn_name, &mut self.errors) {
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
                    None => self.errors.push(
                        lit.span(),
                        "`id` names the parameter that identifies the entry, e.g. `id = \"user_id\"` or `id = \"user.id\"`",
                    ),
                }
            }
            if bare {
                for p in self.params.iter().filter(|p| !skipped.contains(&&p.name)) {
                    key.push(KeyPart::Text(":".into()));
                    key.push(KeyPart::Value(KeyValue {
                        root: p.name.clone(),
                        fields: Vec::new(),
                        span: p.name.span(),
                    }));
                    used.push((plain_name(&p.name), p.name.span()));
                }
            }
            for s in skipped {
                if used.iter().any(|(root, _)| plain_name(s) == *root) {
                    self.errors.push(
                        s.span(),
                        format!(
                            "`{s}` is listed in `skip` but is part of the key; remove it from `skip`"
                        ),
                    );
                }
            }
            // After a broken template or `id`, "parameter not in the key" would
            // only repeat the same mistake.
            let key_broken = self.errors.0.is_some();
            for p in self.params.iter().filter(|_| !key_broken) {
                let in_key = used.iter().any(|(r, _)| plain_name(&p.name) == *r);
                if !in_key && !skipped.contains(&&p.name) {
                    let suggestion = if self.args.prefix.is_some() || self.args.id.is_some() {
                        format!("add `{{{0}}}` to `prefix`, or", p.name)
                    } else {
                        String::new()
                    };
                    self.errors.push(
                        p.name.span(),
                        format!(
                            "parameter `{0}` is not part of the cache key, so calls that differ only in `{0}` would share one entry; {suggestion} list it in `skip = [{0}]` if it does not change the result",
                            p.name
                        ),
                    );
                }
            }
            for span in &self.unnamed {
                self.errors.push(
                    *span,
                    "a destructured parameter can not be part of a cache key: take it by name (`point: Point`) and destructure inside the body",
                );
            }
        }
        (key, used)
    }

    /// `version`: the last segment of the own key, so the companions and
    /// every typed invalidation pick it up.
    fn version(&mut self, key: &mut Vec<KeyPart>) {
        if let (Some((_, lit)), true) = (&self.args.version, self.mode != Mode::Write) {
            match check_version(lit) {
                Ok(v) => key.push(KeyPart::Text(format!(":v{v}"))),
                Err(e) => self.errors.push_err(e),
            }
        }
    }

    /// `tags` of the own entry: at most [`MAX_TAGS`], none empty, repeated
    /// or a pattern, each using only the key's parameters.
    fn own_tags(&mut self, used: &[(String, Span)], skipped: &[&Ident]) -> Vec<Vec<KeyPart>> {
        let mut tags = Vec::new();
        if let (Some((name, lits)), true) = (&self.args.tags, self.mode != Mode::Write) {
            if lits.len() > MAX_TAGS {
                self.errors.push(
                    name.span(),
                    format!(
                        "`tags` lists {} tags; a function can have at most {MAX_TAGS}",
                        lits.len()
                    ),
                );
            }
            let key_names: Vec<String> = self
                .params
                .iter()
                .filter(|p| used.iter().any(|(r, _)| plain_name(&p.name) == *r))
                .map(|p| plain_name(&p.name))
                .collect();
            let mut seen: Vec<String> = Vec::new();
            for lit in lits {
                let text = lit.value();
                if text.trim().is_empty() {
                    self.errors.push(
                        lit.span(),
                        "a tag can not be empty: name what the entry belongs to, e.g. `tags = [\"user:{user_id}\"]`",
                    );
                    continue;
                }
                if seen.contains(&text) {
                    self.errors.push(
                        lit.span(),
                        format!("tag {text:?} is listed twice in `tags`; remove one"),
                    );
                    continue;
                }
                seen.push(text);
                let t = match template::parse(lit) {
                    Ok(t) => t,
                    Err(e) => {
                        self.errors.push_err(e);
                        continue;
                    }
                };
                if t.is_pattern() {
                    self.errors.push(
                        lit.span(),
                        "a tag is an exact label; it can not contain `*`, `?` or `[` (pattern characters): entries are invalidated by their exact tag, with `invalidate = [tag(\"...\")]`",
                    );
                }
                let mut tag_used = Vec::new();
                let parts = self.parts(&t, &mut tag_used);
                for (root, span) in &tag_used {
                    // A parameter in neither the key nor `skip` is reported
                    // already ("not part of the cache key").
                    if let Some(s) = skipped.iter().find(|s| plain_name(s) == *root) {
                        let key_list = if key_names.is_empty() {
                            "it has none".to_owned()
                        } else {
                            key_names.join(", ")
                        };
                        self.errors.push(
                            *span,
                            format!(
                                "`{s}` is listed in `skip`, so it is not part of the key; a tag can only use the key's parameters ({key_list}): one entry is shared by calls that differ only in skipped parameters, so its tags can not depend on them"
                            ),
                        );
                    }
                }
                tags.push(parts);
            }
        }
        tags
    }

    /// `store` is a valid store name.
    fn store(&mut self) -> Option<String> {
        let args = self.args;
        args.store.as_ref().and_then(|(_, lit)| {
            check_store_name(lit)
                .map_err(|e| self.errors.push_err(e))
                .ok()
        })
    }

    /// Each `invalidate` entry: a typed call (checked by rustc), or a
    /// template, pattern or tag of this function's parameters.
    fn invalidations(&mut self) -> Vec<Invalidation> {
        let mut invalidations = Vec::new();
        if let Some((_, entries)) = &self.args.invalidate {
            for entry in entries {
                match entry {
                    InvalidateEntry::Typed(call) => {
                        invalidations.push(Invalidation::Typed(call.clone()))
                    }
                    InvalidateEntry::Template(lit) => match template::parse(lit) {
                        Ok(t) => {
                            let mut ignored = Vec::new();
                            let parts = self.parts(&t, &mut ignored);
                            invalidations.push(if t.is_pattern() {
                                Invalidation::Pattern(parts)
                            } else {
                                Invalidation::Exact(parts)
                            });
                        }
                        Err(e) => self.errors.push_err(e),
                    },
                    InvalidateEntry::Tag(lit) => match template::parse(lit) {
                        Ok(t) => {
                            if lit.value().trim().is_empty() {
                                self.errors.push(
                                    lit.span(),
                                    "`tag(\"\")` names no tag: write the tag to invalidate, e.g. `tag(\"user:{user_id}\")`",
                                );
                            } else if t.is_pattern() {
                                self.errors.push(
                                    lit.span(),
                                    "tags are invalidated exactly; `*`, `?` and `[` are not allowed in `tag(...)` (to invalidate keys by pattern, write the template without `tag`: `invalidate = [\"user:{user_id}:*\"]`)",
                                );
                            }
                            let mut ignored = Vec::new();
                            let parts = self.parts(&t, &mut ignored);
                            invalidations.push(Invalidation::Tag(parts));
                        }
                        Err(e) => self.errors.push_err(e),
                    },
                }
            }
        }
        invalidations
    }
}

/// Checks the arguments against the signature (every rule above, all
/// errors collected) and decides what to generate.
pub fn validate(args: &Args, sig: &Signature) -> syn::Result<Plan> {
    let mut check = Check::new(args, sig);
    check.rule_async();
    check.rule_keyless_options();
    let ttl = duration_ms(&args.ttl, &TTL, &mut check.errors);
    let stampede = check.stampede_options();
    let skipped = check.skipped();
    let stored_ty = check.stored_type();
    let (mut key, used) = check.own_key(&skipped);
    check.version(&mut key);
    let tags = check.own_tags(&used, &skipped);
    let store = check.store();
    let invalidations = check.invalidations();
    if let Some(e) = check.errors.0 {
        return Err(e);
    }

    // Companion arguments: the parameters the own key reads, in order.
    let used_roots: BTreeSet<&str> = used.iter().map(|(r, _)| r.as_str()).collect();
    let key_params = check
        .params
        .iter()
        .filter(|p| used_roots.contains(plain_name(&p.name).as_str()))
        .map(|p| (p.name.clone(), p.ty.clone()))
        .collect();

    Ok(Plan {
        mode: check.mode,
        stored_ty,
        key: if check.has_key { key } else { Vec::new() },
        key_params,
        tags,
        store,
        ttl,
        cache_none: args.cache_none.as_ref().is_some_and(|(_, l)| l.value),
        cache_none_span: args
            .cache_none
            .as_ref()
            .filter(|(_, l)| l.value)
            .map(|(name, _)| name.span()),
        near: args.near.as_ref().is_some_and(|(_, l)| l.value),
        lease: stampede.lease,
        lease_ttl: stampede.lease_ttl,
        early_refresh: stampede.early_refresh,
        swr: stampede.swr,
        sie: stampede.sie,
        invalidations,
        has_receiver: check.receiver.is_some(),
    })
}
/// `version = N`: a positive `u32`.
pub fn check_version(lit: &syn::LitInt) -> syn::Result<u32> {
    match lit.base10_parse::<u32>() {
        Ok(0) => Err(syn::Error::new(
            lit.span(),
            "`version = 0` is not a version: versions start at 1 (`version = 1` appends `:v1` to the key); bump it when the stored type changes",
        )),
        Ok(v) if lit.suffix().is_empty() => Ok(v),
        _ => Err(syn::Error::new(lit.span(), VERSION_HELP)),
    }
}

/// `store = "name"`: `^[a-z][a-z0-9_]{0,31}$`, because the name becomes
/// part of an environment variable and of metric labels.
pub fn check_store_name(lit: &LitStr) -> syn::Result<String> {
    let name = lit.value();
    let mut chars = name.chars();
    let valid = matches!(chars.next(), Some('a'..='z'))
        && chars.all(|c| matches!(c, 'a'..='z' | '0'..='9' | '_'))
        && name.len() <= 32;
    if valid {
        Ok(name)
    } else {
        Err(syn::Error::new(
            lit.span(),
            format!(
                "{name:?} is not a store name: use 1 to 32 characters, lowercase ASCII letters, digits and `_`, starting with a letter (e.g. `store = \"flags\"`); the store's URL is read from the environment variable `CACHE_STORE_<NAME>_URL` (`CACHE_STORE_FLAGS_URL` for `flags`)"
            ),
        ))
    }
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
        assert_eq!(Dur::millis(&p.ttl), Some(300_000));
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
        let t = |s: &str| {
            parse_duration(
                &TTL,
                &DurationArg::Text(syn::LitStr::new(s, Span::call_site())),
            )
            .map(|d| Dur::millis(&Some(d)).unwrap())
        };
        assert_eq!(t("90s").unwrap(), 90_000);
        assert_eq!(t("1d").unwrap(), 86_400_000);
        assert_eq!(t("250ms").unwrap(), 250);
        // The environment's grammar (humantime), and bare seconds.
        assert_eq!(t("1h30m").unwrap(), 5_400_000);
        assert_eq!(t("10min").unwrap(), 600_000);
        assert_eq!(t("2 days").unwrap(), 172_800_000);
        assert_eq!(t(" 90 ").unwrap(), 90_000);
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

    const READ_FN: &str = "async fn f(id: u64) -> u64 { id }";

    fn read_plan(args: proc_macro2::TokenStream) -> syn::Result<Plan> {
        let f: proc_macro2::TokenStream = READ_FN.parse().unwrap();
        plan(quote!(prefix = "p", id = "id", #args), f)
    }

    fn messages(e: syn::Error) -> Vec<String> {
        e.into_iter().map(|e| e.to_string()).collect()
    }

    #[test]
    fn stampede_options_on_a_read_function() {
        let p = read_plan(quote!(
            lease = true,
            lease_ttl = "2s",
            early_refresh = 2.5,
            stale_while_revalidate = "30s",
            stale_if_error = 300
        ))
        .unwrap();
        assert_eq!(p.lease, Some(true));
        assert_eq!(Dur::millis(&p.lease_ttl), Some(2_000));
        assert_eq!(p.early_refresh, Some(2.5));
        assert_eq!(Dur::millis(&p.swr), Some(30_000));
        assert_eq!(Dur::millis(&p.sie), Some(300_000));

        let p = read_plan(quote!()).unwrap();
        assert_eq!(
            (
                p.lease,
                p.lease_ttl.is_some(),
                p.early_refresh,
                p.swr.is_some(),
                p.sie.is_some()
            ),
            (None, false, None, false, false)
        );

        let beta = |ts| read_plan(ts).unwrap().early_refresh;
        assert_eq!(beta(quote!(early_refresh = true)), Some(1.0));
        assert_eq!(beta(quote!(early_refresh = false)), Some(0.0));
        assert_eq!(beta(quote!(early_refresh = 2)), Some(2.0));
        assert_eq!(beta(quote!(early_refresh = 0.25)), Some(0.25));
    }

    #[test]
    fn stale_options_accept_zero_as_off() {
        let p = read_plan(quote!(stale_while_revalidate = 0, stale_if_error = "0s")).unwrap();
        assert_eq!(
            (Dur::millis(&p.swr), Dur::millis(&p.sie)),
            (Some(0), Some(0))
        );
        let e = read_plan(quote!(stale_while_revalidate = "5x")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "`stale_while_revalidate` must be a number of seconds (`stale_while_revalidate = 30`), a duration such as \"500ms\", \"90s\", \"10min\", \"1h30m\", \"1d\", or a const expression in seconds; `0` turns it off for this function"
        );
    }

    #[test]
    fn lease_ttl_follows_the_ttl_rules() {
        let lease_ttl = |s: &str| {
            parse_duration(
                &LEASE_TTL,
                &DurationArg::Text(syn::LitStr::new(s, Span::call_site())),
            )
            .map(|d| Dur::millis(&Some(d)).unwrap())
        };
        assert_eq!(lease_ttl("500ms").unwrap(), 500);
        assert_eq!(lease_ttl("1h").unwrap(), 3_600_000);
        let e = lease_ttl("0s").unwrap_err();
        assert_eq!(
            e.to_string(),
            "`lease_ttl` must be a positive number of seconds (`lease_ttl = 5`), a duration such as \"500ms\", \"90s\", \"10min\", \"1h30m\", \"1d\", or a const expression in seconds"
        );
        assert!(read_plan(quote!(lease_ttl = 0)).is_err());
        // A bare number in a string is seconds, as in the environment.
        assert_eq!(lease_ttl("5").unwrap(), 5_000);
        assert!(read_plan(quote!(lease_ttl = "5 parsecs")).is_err());
    }

    #[test]
    fn early_refresh_rejects_zero_and_infinity() {
        for zero in [quote!(early_refresh = 0), quote!(early_refresh = 0.0)] {
            let e = read_plan(zero).unwrap_err().to_string();
            assert!(e.contains("would never refresh early"), "{e}");
            assert!(e.contains("`early_refresh = false`"), "{e}");
        }
        let e = read_plan(quote!(early_refresh = 1e400)).unwrap_err();
        assert_eq!(e.to_string(), EARLY_REFRESH_HELP);
    }

    #[test]
    fn lease_ttl_conflicts_with_lease_false() {
        let e = read_plan(quote!(lease = false, lease_ttl = 5)).unwrap_err();
        assert_eq!(
            e.to_string(),
            "`lease_ttl` has no effect with `lease = false`; remove one"
        );
        assert!(read_plan(quote!(lease = true, lease_ttl = 5)).is_ok());
        assert!(read_plan(quote!(lease = false)).is_ok());
    }

    #[test]
    fn stampede_options_only_on_read_functions() {
        let all = quote!(
            lease = true,
            lease_ttl = 5,
            early_refresh = true,
            stale_while_revalidate = 30,
            stale_if_error = 30
        );
        let f = quote!(
            async fn f(id: u64) -> Result<u64, E> {
                Ok(id)
            }
        );
        let msgs = messages(plan(quote!(invalidate = ["user:{id}"], #all), f.clone()).unwrap_err());
        assert_eq!(msgs.len(), 5, "{msgs:?}");
        for (msg, name) in msgs.iter().zip([
            "lease",
            "lease_ttl",
            "early_refresh",
            "stale_while_revalidate",
            "stale_if_error",
        ]) {
            assert_eq!(
                *msg,
                format!(
                    "`{name}` applies to read functions only: a write function has no cached value (it only invalidates); remove the option"
                )
            );
        }
        let msgs = messages(
            plan(
                quote!(prefix = "user", id = "id", invalidate = ["other:{id}"], #all),
                f,
            )
            .unwrap_err(),
        );
        assert_eq!(msgs.len(), 5, "{msgs:?}");
        assert!(
            msgs.iter().all(|m| m.contains(
                "applies to read functions only: a write-through function always runs its body"
            )),
            "{msgs:?}"
        );
    }

    #[test]
    fn lease_conflict_is_not_repeated_on_write_functions() {
        let msgs = messages(
            plan(
                quote!(invalidate = ["user:{id}"], lease = false, lease_ttl = 5),
                quote!(
                    async fn f(id: u64) -> Result<(), E> {
                        Ok(())
                    }
                ),
            )
            .unwrap_err(),
        );
        assert_eq!(msgs.len(), 2, "{msgs:?}");
        assert!(
            !msgs.iter().any(|m| m.contains("no effect with")),
            "{msgs:?}"
        );
    }

    fn texts(parts: &[KeyPart]) -> String {
        parts
            .iter()
            .map(|p| match p {
                KeyPart::Text(t) => t.clone(),
                KeyPart::Value(v) => format!("{{{}}}", v.root),
            })
            .collect()
    }

    fn one_error(args: proc_macro2::TokenStream, f: proc_macro2::TokenStream) -> String {
        let msgs = messages(plan(args, f).unwrap_err());
        assert_eq!(msgs.len(), 1, "{msgs:?}");
        msgs.into_iter().next().unwrap()
    }

    fn posts_fn() -> proc_macro2::TokenStream {
        quote!(
            async fn f(db: &Db, user_id: u64, page: u32) -> Result<Vec<u64>, E> {
                todo!()
            }
        )
    }

    #[test]
    fn tags_use_the_key_parameters() {
        let p = plan(
            quote!(
                prefix = "posts:{user_id}:{page}",
                skip = [db],
                tags = ["user:{user_id}", "posts", "{{all}}"]
            ),
            posts_fn(),
        )
        .unwrap();
        let tags: Vec<String> = p.tags.iter().map(|t| texts(t)).collect();
        assert_eq!(tags, ["user:{user_id}", "posts", "{all}"]);
        // Field paths on a key parameter, and a bare key's parameters.
        let p = plan(
            quote!(tags = ["user:{user.id}", "{page}"]),
            quote!(
                async fn f(user: &User, page: u32) -> u64 {
                    1
                }
            ),
        )
        .unwrap();
        assert_eq!(p.tags.len(), 2);
    }

    #[test]
    fn tag_placeholders_must_be_key_parameters() {
        let e = one_error(
            quote!(
                prefix = "posts:{user_id}:{page}",
                skip = [db],
                tags = ["db:{db}"]
            ),
            posts_fn(),
        );
        assert_eq!(
            e,
            "`db` is listed in `skip`, so it is not part of the key; a tag can only use the key's parameters (user_id, page): one entry is shared by calls that differ only in skipped parameters, so its tags can not depend on them"
        );
        let e = one_error(
            quote!(
                prefix = "posts:{user_id}:{page}",
                skip = [db],
                tags = ["user:{uid}"]
            ),
            posts_fn(),
        );
        assert_eq!(
            e,
            "`uid` is not a parameter of `f` (parameters: db, user_id, page); every placeholder must name a parameter or a field path on one"
        );
        let e = one_error(
            quote!(
                prefix = "posts:{user_id}:{page}",
                skip = [db],
                tags = ["{self.id}"]
            ),
            posts_fn(),
        );
        assert!(e.starts_with("`self` is never part of a key"), "{e}");
    }

    #[test]
    fn malformed_tags() {
        let read = |tags| {
            plan(
                quote!(prefix = "posts:{user_id}:{page}", skip = [db], tags = #tags),
                posts_fn(),
            )
        };
        let e = messages(read(quote!(["user:*", "", "a", "a", " "])).unwrap_err());
        assert_eq!(
            e,
            [
                "a tag is an exact label; it can not contain `*`, `?` or `[` (pattern characters): entries are invalidated by their exact tag, with `invalidate = [tag(\"...\")]`",
                "a tag can not be empty: name what the entry belongs to, e.g. `tags = [\"user:{user_id}\"]`",
                "tag \"a\" is listed twice in `tags`; remove one",
                "a tag can not be empty: name what the entry belongs to, e.g. `tags = [\"user:{user_id}\"]`",
            ]
        );
        assert!(read(quote!(["p?", "[x]"])).is_err());
        let e = read(quote!(["user:{user_id"])).unwrap_err().to_string();
        assert!(e.starts_with("unclosed `{`"), "{e}");

        let many: Vec<String> = (0..=MAX_TAGS).map(|i| format!("t{i}")).collect();
        let e = read(quote!([#(#many),*])).unwrap_err().to_string();
        assert_eq!(e, "`tags` lists 256 tags; a function can have at most 255");
        let many = &many[..MAX_TAGS];
        assert_eq!(read(quote!([#(#many),*])).unwrap().tags.len(), 255);
    }

    #[test]
    fn tags_on_a_write_function() {
        let e = one_error(
            quote!(invalidate = ["user:{id}"], tags = ["user:{id}"]),
            quote!(
                async fn f(id: u64) -> Result<(), E> {
                    Ok(())
                }
            ),
        );
        assert_eq!(
            e,
            "`tags` has no effect: a write function stores nothing to label; to invalidate the entries that carry a tag, write `invalidate = [tag(\"user:{id}\")]`"
        );
        // Write-through: its own entry is labelled.
        let p = plan(
            quote!(
                prefix = "u",
                id = "id",
                tags = ["user:{id}"],
                invalidate = ["x"]
            ),
            quote!(
                async fn f(id: u64) -> Result<u64, E> {
                    Ok(id)
                }
            ),
        )
        .unwrap();
        assert_eq!((p.mode, p.tags.len()), (Mode::WriteThrough, 1));
    }

    #[test]
    fn version_ends_the_own_key() {
        let p = read_plan(quote!(version = 2)).unwrap();
        assert_eq!(texts(&p.key), "p:{id}:v2");
        let p = plan(
            quote!(version = 7),
            quote!(
                async fn f(a: u8, b: u8) -> u8 {
                    a + b
                }
            ),
        )
        .unwrap();
        assert_eq!(texts(&p.key), "f:{a}:{b}:v7");

        assert_eq!(
            read_plan(quote!(version = 0)).unwrap_err().to_string(),
            "`version = 0` is not a version: versions start at 1 (`version = 1` appends `:v1` to the key); bump it when the stored type changes"
        );
        for bad in [quote!(version = 4294967296), quote!(version = 2u8)] {
            assert_eq!(read_plan(bad).unwrap_err().to_string(), VERSION_HELP);
        }
        let e = one_error(
            quote!(invalidate = ["user:{id}"], version = 2),
            quote!(
                async fn f(id: u64) -> Result<(), E> {
                    Ok(())
                }
            ),
        );
        assert_eq!(
            e,
            "`version` has no effect: this function has no key of its own (it only invalidates); add `prefix` to also store its result (write-through), or remove the option"
        );
    }

    #[test]
    fn store_names() {
        let write = |store: &str| {
            plan(
                quote!(invalidate = ["user:{id}"], store = #store),
                quote!(
                    async fn f(id: u64) -> Result<(), E> {
                        Ok(())
                    }
                ),
            )
        };
        for good in ["flags", "a", "s3_cache_2", &"a".repeat(32)] {
            assert_eq!(write(good).unwrap().store.as_deref(), Some(good));
            assert_eq!(
                read_plan(quote!(store = #good)).unwrap().store.as_deref(),
                Some(good)
            );
        }
        assert_eq!(read_plan(quote!()).unwrap().store, None);
        for bad in ["", "Flags", "1x", "_x", "a-b", "a b", "é", &"a".repeat(33)] {
            let e = write(bad).unwrap_err().to_string();
            assert_eq!(
                e,
                format!(
                    "{bad:?} is not a store name: use 1 to 32 characters, lowercase ASCII letters, digits and `_`, starting with a letter (e.g. `store = \"flags\"`); the store's URL is read from the environment variable `CACHE_STORE_<NAME>_URL` (`CACHE_STORE_FLAGS_URL` for `flags`)"
                )
            );
        }
    }

    #[test]
    fn tag_invalidations() {
        let f = quote!(
            async fn f(db: &Db, user_id: u64) -> Result<(), E> {
                Ok(())
            }
        );
        let p = plan(
            quote!(invalidate = [tag("user:{user_id}"), "user:{user_id}:*", tag("all")]),
            f.clone(),
        )
        .unwrap();
        let tags: Vec<String> = p
            .invalidations
            .iter()
            .filter_map(|i| match i {
                Invalidation::Tag(parts) => Some(texts(parts)),
                _ => None,
            })
            .collect();
        assert_eq!(tags, ["user:{user_id}", "all"]);

        let e = one_error(quote!(invalidate = [tag("user:*")]), f.clone());
        assert_eq!(
            e,
            "tags are invalidated exactly; `*`, `?` and `[` are not allowed in `tag(...)` (to invalidate keys by pattern, write the template without `tag`: `invalidate = [\"user:{user_id}:*\"]`)"
        );
        let e = one_error(quote!(invalidate = [tag("")]), f.clone());
        assert_eq!(
            e,
            "`tag(\"\")` names no tag: write the tag to invalidate, e.g. `tag(\"user:{user_id}\")`"
        );
        let e = one_error(quote!(invalidate = [tag("user:{id}")]), f);
        assert!(e.starts_with("`id` is not a parameter of `f`"), "{e}");
    }
}
