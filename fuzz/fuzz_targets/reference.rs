//! `ImageRef::parse` on arbitrary UTF-8: never panics, and what it accepts prints (`Display`)
//! to a string that parses back to the same reference, as does its familiar form.
#![no_main]

use hoist_registry::reference::ImageRef;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &str| {
    let Ok(parsed) = ImageRef::parse(input) else {
        return;
    };
    let printed = parsed.to_string();
    let reparsed = ImageRef::parse(&printed);
    assert_eq!(
        reparsed.as_ref(),
        Ok(&parsed),
        "{input:?} printed as {printed:?}"
    );
    let familiar = parsed.familiar();
    let from_familiar = ImageRef::parse(&familiar);
    assert_eq!(
        from_familiar.as_ref(),
        Ok(&parsed),
        "{input:?} familiar {familiar:?}"
    );
});
