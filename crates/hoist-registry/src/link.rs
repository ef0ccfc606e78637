//! `Link` headers (RFC 8288), for the `rel="next"` pagination of tags and the catalog.
//!
//! [`parse_link_header`] reads one header value into its [`Link`]s; [`next_link`] finds the
//! `next` target across all the `Link` values of a response. Targets are returned exactly as
//! written: a relative reference such as `/v2/_catalog?last=b&n=2` is resolved by the caller
//! against the request URL. Malformed values are a [`LinkError`], never a panic.

/// The longest `Link` value parsed; longer ones are refused.
pub const MAX_LINK_HEADER_LEN: usize = 16 * 1024;

/// Why a `Link` value could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LinkError {
    /// The value is longer than [`MAX_LINK_HEADER_LEN`].
    #[error("Link header is {len} bytes long; the limit is {MAX_LINK_HEADER_LEN}")]
    TooLong {
        /// The value's length.
        len: usize,
    },
    /// The value breaks the RFC 8288 grammar.
    #[error("malformed Link header {header:?}: expected {expected} at byte {offset}")]
    Syntax {
        /// The value.
        header: String,
        /// Where parsing stopped.
        offset: usize,
        /// What was expected there.
        expected: &'static str,
    },
}

/// One link: a target and its parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    target: String,
    params: Vec<(String, Option<String>)>,
}

impl Link {
    /// The target URI reference, as written between `<` and `>`.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// The value of the first parameter called `name` (case-insensitive): `Some(None)` when it
    /// has no value, `None` when it is absent.
    pub fn param(&self, name: &str) -> Option<Option<&str>> {
        self.params
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_deref())
    }

    /// The relation types of the first `rel` parameter (a space-separated list).
    pub fn rels(&self) -> impl Iterator<Item = &str> {
        self.param("rel")
            .flatten()
            .unwrap_or_default()
            .split_ascii_whitespace()
    }

    /// Whether `rel` is among the link's relation types (case-insensitive).
    pub fn has_rel(&self, rel: &str) -> bool {
        self.rels().any(|r| r.eq_ignore_ascii_case(rel))
    }
}

/// Parses one `Link` header value into its links, in order.
pub fn parse_link_header(value: &str) -> Result<Vec<Link>, LinkError> {
    if value.len() > MAX_LINK_HEADER_LEN {
        return Err(LinkError::TooLong { len: value.len() });
    }
    let mut c = Cursor::new(value);
    let mut links = Vec::new();
    loop {
        c.skip_while(|b| matches!(b, b' ' | b'\t' | b','));
        if c.at_end() {
            break;
        }
        c.expect(b'<', "'<' opening a link target")?;
        let target = c.take_while(|b| b != b'>' && b > b' ' && b != 0x7f);
        c.expect(b'>', "'>' closing the link target")?;
        let mut link = Link {
            target: target.to_owned(),
            params: Vec::new(),
        };
        loop {
            c.skip_ows();
            if c.at_end() || c.peek() == Some(b',') {
                break;
            }
            c.expect(b';', "';' before a parameter, or ',' between links")?;
            c.skip_ows();
            let name = c.token().ok_or_else(|| c.error("a parameter name"))?;
            c.skip_ows();
            let value = if c.peek() == Some(b'=') {
                c.pos += 1;
                c.skip_ows();
                Some(if c.peek() == Some(b'"') {
                    c.quoted_string()?
                } else {
                    c.token()
                        .ok_or_else(|| c.error("a token or quoted-string value"))?
                        .to_owned()
                })
            } else {
                None
            };
            link.params.push((name.to_ascii_lowercase(), value));
        }
        links.push(link);
    }
    Ok(links)
}

/// The target of the first `rel="next"` link among `values` (all `Link` values of a
/// response), as written.
pub fn next_link<'a>(
    values: impl IntoIterator<Item = &'a str>,
) -> Result<Option<String>, LinkError> {
    for value in values {
        if let Some(link) = parse_link_header(value)?
            .into_iter()
            .find(|l| l.has_rel("next"))
        {
            return Ok(Some(link.target));
        }
    }
    Ok(None)
}

type Cursor<'a> = crate::http_syntax::Cursor<'a, LinkError>;

impl crate::http_syntax::FromSyntax for LinkError {
    fn from_syntax(header: &str, offset: usize, expected: &'static str) -> Self {
        LinkError::Syntax {
            header: header.to_owned(),
            offset,
            expected,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn link(target: &str, params: &[(&str, Option<&str>)]) -> Link {
        Link {
            target: target.to_owned(),
            params: params
                .iter()
                .map(|(n, v)| ((*n).to_owned(), v.map(str::to_owned)))
                .collect(),
        }
    }

    #[test]
    fn link_values_parse_to_the_pinned_links() {
        let cases: Vec<(&str, Vec<Link>)> = vec![
            (
                r#"</v2/_catalog?last=b&n=2>; rel="next""#,
                vec![link("/v2/_catalog?last=b&n=2", &[("rel", Some("next"))])],
            ),
            (
                r#"</v2/foo/tags/list?n=2&last=v2>; rel=next"#,
                vec![link(
                    "/v2/foo/tags/list?n=2&last=v2",
                    &[("rel", Some("next"))],
                )],
            ),
            (
                r#"<https://r.example/v2/x?a=1,2;b=3>;rel="next";title="a, b; c""#,
                vec![link(
                    "https://r.example/v2/x?a=1,2;b=3",
                    &[("rel", Some("next")), ("title", Some("a, b; c"))],
                )],
            ),
            (
                r#"</a>; rel="prev", </b>; rel="next""#,
                vec![
                    link("/a", &[("rel", Some("prev"))]),
                    link("/b", &[("rel", Some("next"))]),
                ],
            ),
            (
                r#"</x>; REL="Next Last""#,
                vec![link("/x", &[("rel", Some("Next Last"))])],
            ),
            (
                r#"</x>; crossorigin; rel = next"#,
                vec![link("/x", &[("crossorigin", None), ("rel", Some("next"))])],
            ),
            (
                r#"<>; rel="self""#,
                vec![link("", &[("rel", Some("self"))])],
            ),
            (r#"</x>"#, vec![link("/x", &[])]),
            (
                r#" , </x> ,, </y>; a=b ,"#,
                vec![link("/x", &[]), link("/y", &[("a", Some("b"))])],
            ),
            (
                r#"</x>; title="q\"uote""#,
                vec![link("/x", &[("title", Some("q\"uote"))])],
            ),
            (
                r#"</ü>; rel=next"#,
                vec![link("/ü", &[("rel", Some("next"))])],
            ),
            ("", vec![]),
        ];
        for (value, expected) in cases {
            assert_eq!(parse_link_header(value), Ok(expected), "{value:?}");
        }
    }

    #[test]
    fn malformed_link_values_fail_with_the_pinned_error() {
        let syntax = |h: &str, offset, expected| LinkError::Syntax {
            header: h.to_owned(),
            offset,
            expected,
        };
        let cases: Vec<(&str, LinkError)> = vec![
            (
                "/v2/x; rel=next",
                syntax("/v2/x; rel=next", 0, "'<' opening a link target"),
            ),
            (
                "</v2/x; rel=next",
                syntax("</v2/x; rel=next", 7, "'>' closing the link target"),
            ),
            (
                "</v2/x y>; rel=next",
                syntax("</v2/x y>; rel=next", 6, "'>' closing the link target"),
            ),
            (
                "</x> rel=next",
                syntax(
                    "</x> rel=next",
                    5,
                    "';' before a parameter, or ',' between links",
                ),
            ),
            ("</x>; =next", syntax("</x>; =next", 6, "a parameter name")),
            (
                "</x>; rel=",
                syntax("</x>; rel=", 10, "a token or quoted-string value"),
            ),
            (
                "</x>; rel=\"next",
                syntax(
                    "</x>; rel=\"next",
                    15,
                    "the closing '\"' of a quoted-string",
                ),
            ),
            (
                "</x>; rel=next</y>",
                syntax(
                    "</x>; rel=next</y>",
                    14,
                    "';' before a parameter, or ',' between links",
                ),
            ),
            (
                "</x>; rel=\"a\u{1}\"",
                syntax(
                    "</x>; rel=\"a\u{1}\"",
                    12,
                    "a printable character in a quoted-string",
                ),
            ),
        ];
        for (value, expected) in cases {
            assert_eq!(parse_link_header(value), Err(expected), "{value:?}");
        }
        let long = format!("<{}>", "a".repeat(MAX_LINK_HEADER_LEN));
        assert_eq!(
            parse_link_header(&long),
            Err(LinkError::TooLong { len: long.len() })
        );
    }

    #[test]
    fn next_link_finds_rel_next_across_values() {
        assert_eq!(
            next_link([r#"</v2/_catalog?last=b&n=2>; rel="next""#]),
            Ok(Some("/v2/_catalog?last=b&n=2".to_owned()))
        );
        assert_eq!(
            next_link([
                r#"</first>; rel="prev""#,
                r#"</a>; rel="last", </b>; rel="last NEXT""#
            ]),
            Ok(Some("/b".to_owned()))
        );
        // Only the first rel counts.
        assert_eq!(next_link([r#"</a>; rel=prev; rel=next"#]), Ok(None));
        assert_eq!(next_link([r#"</a>; rel="nextpage""#]), Ok(None));
        assert_eq!(next_link(Vec::<&str>::new()), Ok(None));
        assert!(next_link(["garbage"]).is_err());
    }

    proptest! {
        #[test]
        fn rendered_links_parse_back(
            links in proptest::collection::vec(
                ("[!-;=?-~]{0,30}", proptest::collection::vec(("[a-z][a-z0-9*-]{0,6}", proptest::option::of("[ -~]{0,12}")), 0..4)),
                1..4,
            )
        ) {
            let rendered: Vec<String> = links
                .iter()
                .map(|(target, params)| {
                    let mut s = format!("<{target}>");
                    for (name, value) in params {
                        match value {
                            Some(v) => s.push_str(&format!("; {name}=\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\""))),
                            None => s.push_str(&format!("; {name}")),
                        }
                    }
                    s
                })
                .collect();
            let parsed = parse_link_header(&rendered.join(", ")).unwrap();
            let expected: Vec<Link> = links
                .into_iter()
                .map(|(target, params)| Link { target, params })
                .collect();
            prop_assert_eq!(parsed, expected);
        }

        #[test]
        fn arbitrary_values_never_panic(value in "\\PC{0,120}") {
            let _ = next_link([value.as_str()]);
        }

        #[test]
        fn link_like_noise_never_panics(value in "[<>;=,\" a-z/\\\\]{0,60}") {
            let _ = parse_link_header(&value);
        }
    }
}
