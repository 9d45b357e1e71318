//! Key templates: `"user:{user_id}:posts:page:{page}"`, `"{user.id}"`.
//! `{{` and `}}` stand for literal braces (Redis Cluster hash tags).

use proc_macro2::Span;
use syn::LitStr;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    /// Literal text, written into the key as is.
    Text(String),
    /// `{root.field.field}`: an interpolated, escaped value.
    Placeholder(Placeholder),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placeholder {
    pub root: String,
    pub fields: Vec<String>,
    /// Byte range of `{...}` inside the literal's source text (quotes included).
    pub range: std::ops::Range<usize>,
}

#[derive(Debug, Clone)]
pub struct Template {
    pub lit: LitStr,
    pub segments: Vec<Segment>,
}

impl Template {
    /// Whether the literal text holds Redis glob syntax (`*`, `?`, `[`).
    pub fn is_pattern(&self) -> bool {
        self.segments.iter().any(|s| match s {
            Segment::Text(t) => t.bytes().any(|b| matches!(b, b'*' | b'?' | b'[')),
            Segment::Placeholder(_) => false,
        })
    }

    #[cfg(test)]
    pub fn placeholders(&self) -> impl Iterator<Item = &Placeholder> {
        self.segments.iter().filter_map(|s| match s {
            Segment::Placeholder(p) => Some(p),
            Segment::Text(_) => None,
        })
    }

    /// The span of one placeholder: the exact characters where the compiler
    /// can point inside a string literal, else the whole literal.
    pub fn span_of(&self, p: &Placeholder) -> Span {
        self.lit
            .token()
            .subspan(p.range.clone())
            .unwrap_or_else(|| self.lit.span())
    }
}

fn is_ident(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c == '_' || c.is_alphabetic())
        && chars.all(|c| c == '_' || c.is_alphanumeric())
}

/// Parses a template. Errors point at the literal and say what to write.
pub fn parse(lit: &LitStr) -> syn::Result<Template> {
    let value = lit.value();
    // Offsets are reported against the source text, which starts with `"`;
    // exact for literals without escapes, the common case.
    let offset = 1;
    let mut segments = Vec::new();
    let mut text = String::new();
    let bytes = value.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'{' if bytes.get(i + 1) == Some(&b'{') => {
                text.push('{');
                i += 2;
            }
            b'}' if bytes.get(i + 1) == Some(&b'}') => {
                text.push('}');
                i += 2;
            }
            b'}' => {
                return Err(syn::Error::new(
                    lit.span(),
                    format!(
                        "unmatched `}}` at byte {i} of the template; write `}}}}` for a literal brace"
                    ),
                ));
            }
            b'{' => {
                let Some(len) = value[i + 1..].find('}') else {
                    return Err(syn::Error::new(
                        lit.span(),
                        format!(
                            "unclosed `{{` at byte {i} of the template; close the placeholder with `}}`, or write `{{{{` for a literal brace"
                        ),
                    ));
                };
                let inner = value[i + 1..i + 1 + len].trim();
                let range = offset + i..offset + i + len + 2;
                let mut parts = inner.split('.');
                let root = parts.next().unwrap_or_default().to_owned();
                let fields: Vec<String> = parts.map(str::to_owned).collect();
                if inner.is_empty() {
                    return Err(syn::Error::new(
                        lit.span(),
                        "empty placeholder `{}`: name a parameter, e.g. `{user_id}`",
                    ));
                }
                if !is_ident(&root)
                    || !fields
                        .iter()
                        .all(|f| is_ident(f) || f.parse::<u32>().is_ok())
                {
                    return Err(syn::Error::new(
                        lit.span(),
                        format!(
                            "`{{{inner}}}` is not a placeholder: write a parameter name or a field path such as `{{user.id}}`"
                        ),
                    ));
                }
                if !text.is_empty() {
                    segments.push(Segment::Text(std::mem::take(&mut text)));
                }
                segments.push(Segment::Placeholder(Placeholder {
                    root,
                    fields,
                    range,
                }));
                i += len + 2;
            }
            _ => {
                // Copy one whole UTF-8 character.
                let ch = value[i..].chars().next().unwrap_or_default();
                text.push(ch);
                i += ch.len_utf8().max(1);
            }
        }
    }
    if !text.is_empty() {
        segments.push(Segment::Text(text));
    }
    Ok(Template {
        lit: lit.clone(),
        segments,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lit(s: &str) -> LitStr {
        LitStr::new(s, Span::call_site())
    }

    #[test]
    fn splits_text_and_placeholders() {
        let t = parse(&lit("user:{user_id}:posts:{page}")).unwrap();
        assert_eq!(t.segments.len(), 4);
        assert_eq!(t.segments[0], Segment::Text("user:".into()));
        let roots: Vec<_> = t.placeholders().map(|p| p.root.as_str()).collect();
        assert_eq!(roots, ["user_id", "page"]);
        assert!(!t.is_pattern());
    }

    #[test]
    fn field_paths_braces_and_patterns() {
        let t = parse(&lit("{{tag}}:{user.id}:*")).unwrap();
        assert_eq!(t.segments[0], Segment::Text("{tag}:".into()));
        let p = t.placeholders().next().unwrap();
        assert_eq!(
            (p.root.as_str(), p.fields.as_slice()),
            ("user", &["id".to_owned()][..])
        );
        assert!(t.is_pattern());
    }

    #[test]
    fn reports_malformed_templates() {
        for bad in ["user:{id", "user:}", "user:{}", "user:{a b}", "{1x}"] {
            assert!(parse(&lit(bad)).is_err(), "{bad} should not parse");
        }
    }
}
