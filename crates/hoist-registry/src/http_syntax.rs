//! The HTTP header grammar pieces (RFC 9110 §5.6) that several header parsers share: tokens,
//! optional white space and quoted-strings, read by a byte cursor that reports errors in the
//! caller's own error type. I/O-free.

use std::marker::PhantomData;

/// How a parser's error type is built from a syntax error at an offset of a header value.
pub(crate) trait FromSyntax {
    /// The error for `header`, at byte `offset`, where `expected` was expected.
    fn from_syntax(header: &str, offset: usize, expected: &'static str) -> Self;
}

/// A position in a header value.
pub(crate) struct Cursor<'a, E> {
    /// The header value.
    pub s: &'a str,
    /// The byte offset of the next byte.
    pub pos: usize,
    error: PhantomData<fn() -> E>,
}

/// `tchar` of RFC 9110: the bytes a token is made of.
pub(crate) fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

impl<'a, E: FromSyntax> Cursor<'a, E> {
    /// A cursor at the start of `s`.
    pub fn new(s: &'a str) -> Self {
        Cursor {
            s,
            pos: 0,
            error: PhantomData,
        }
    }

    pub fn at_end(&self) -> bool {
        self.pos >= self.s.len()
    }

    pub fn peek(&self) -> Option<u8> {
        self.s.as_bytes().get(self.pos).copied()
    }

    /// The error "`expected` expected here".
    pub fn error(&self, expected: &'static str) -> E {
        E::from_syntax(self.s, self.pos, expected)
    }

    /// Consumes `b`, or fails saying `expected` was expected.
    pub fn expect(&mut self, b: u8, expected: &'static str) -> Result<(), E> {
        if self.peek() == Some(b) {
            self.pos += 1;
            Ok(())
        } else {
            Err(self.error(expected))
        }
    }

    pub fn skip_while(&mut self, f: impl Fn(u8) -> bool) {
        while self.peek().is_some_and(&f) {
            self.pos += 1;
        }
    }

    /// Skips spaces and tabs; returns how many.
    pub fn skip_ows(&mut self) -> usize {
        let start = self.pos;
        self.skip_while(|b| b == b' ' || b == b'\t');
        self.pos - start
    }

    /// Takes bytes while `f` holds. `f` must stop at ASCII bytes only or take whole UTF-8
    /// sequences (it sees every byte of a multi-byte character alike, as all are >= 0x80).
    pub fn take_while(&mut self, f: impl Fn(u8) -> bool) -> &'a str {
        let start = self.pos;
        self.skip_while(f);
        self.s.get(start..self.pos).unwrap_or_default()
    }

    /// A non-empty token.
    pub fn token(&mut self) -> Option<&'a str> {
        Some(self.take_while(is_tchar)).filter(|t| !t.is_empty())
    }

    /// A quoted-string, unescaped.
    pub fn quoted_string(&mut self) -> Result<String, E> {
        let qdtext = |b: u8| b == b'\t' || b == b' ' || (b >= 0x21 && b != 0x7f);
        self.expect(b'"', "'\"'")?;
        let mut out = Vec::new();
        loop {
            match self.peek() {
                None => return Err(self.error("the closing '\"' of a quoted-string")),
                Some(b'"') => {
                    self.pos += 1;
                    break;
                }
                Some(b'\\') => {
                    self.pos += 1;
                    match self.peek() {
                        Some(b) if qdtext(b) => {
                            out.push(b);
                            self.pos += 1;
                        }
                        _ => return Err(self.error("an escaped character after '\\'")),
                    }
                }
                Some(b) if qdtext(b) => {
                    out.push(b);
                    self.pos += 1;
                }
                Some(_) => return Err(self.error("a printable character in a quoted-string")),
            }
        }
        // Whole UTF-8 sequences were copied (an escape only drops the ASCII '\'), so this
        // cannot fail; the error arm keeps it panic-free regardless.
        String::from_utf8(out).map_err(|_| self.error("UTF-8 text in a quoted-string"))
    }
}
