//! `Content-Range`, `Link` and registry error bodies on arbitrary input: never panics; an accepted
//! `Content-Range` prints (`Display`) to a value that parses back to it, and `check` never panics.
#![no_main]

use hoist_registry::error_body::parse_error_body;
use hoist_registry::link::{next_link, parse_link_header};
use hoist_registry::range::{ByteRange, ContentRange};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some(errors) = parse_error_body(data) {
        for error in errors {
            let _ = error.to_string();
            let _ = (
                error.code.is_retryable(),
                error.code.is_not_found(),
                error.code.is_auth(),
            );
        }
    }
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };

    if let Ok(range) = ContentRange::parse(text) {
        let printed = range.to_string();
        assert_eq!(
            ContentRange::parse(&printed),
            Ok(range),
            "{text:?} printed as {printed:?}"
        );
        let asked = [(0, 0), (0, 99), (1, u64::MAX - 1)];
        for (first, last) in asked {
            let asked = ByteRange::new(first, last).expect("a valid range");
            for known in [None, Some(0), Some(100), range.complete_length()] {
                let _ = range.check(asked, known);
            }
        }
        if let Some(r) = range.range() {
            let _ = range.check(r, range.complete_length());
        }
    }

    if let Ok(links) = parse_link_header(text) {
        for link in &links {
            let _ = (link.target(), link.has_rel("next"), link.rels().count());
        }
        let next = next_link([text]);
        let expected = links
            .iter()
            .find(|l| l.has_rel("next"))
            .map(|l| l.target().to_owned());
        assert_eq!(next, Ok(expected));
    }
});
