//! I/O-free pieces of the upload protocol: the `Range` an upload session reports, and adding
//! query parameters to an opaque upload location.

use url::Url;

/// Parses the `Range` header of an upload session (`0-1023` means 1024 bytes held) into the number
/// of bytes the registry holds. Accepts a `bytes=` prefix. An empty session is `0-0` in the CNCF
/// registry (and `0--1` in some others): both read as 0. `0-0` after a one-byte chunk is resolved
/// by the caller, who knows what it sent.
pub(crate) fn parse_upload_range(v: &str) -> Result<u64, String> {
    let s = v.trim();
    let s = s.strip_prefix("bytes=").unwrap_or(s);
    let (start, end) = s
        .split_once('-')
        .ok_or_else(|| format!("invalid upload Range {v:?}"))?;
    if start.trim() != "0" {
        return Err(format!("upload Range {v:?} does not start at 0"));
    }
    let end = end.trim();
    if end == "-1" || end == "0" {
        return Ok(0);
    }
    let end: u64 = end
        .parse()
        .map_err(|_| format!("invalid upload Range end in {v:?}"))?;
    end.checked_add(1)
        .ok_or_else(|| format!("upload Range {v:?} overflows"))
}

/// Appends `key=value` to a location URL, keeping the parameters it already has (`_state`…).
pub(crate) fn with_query(url: &mut Url, key: &str, value: &str) {
    url.query_pairs_mut().append_pair(key, value);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upload_ranges_give_the_bytes_held() {
        for (v, want) in [
            ("0-0", Ok(0)),
            ("0-1", Ok(2)),
            ("0-1023", Ok(1024)),
            ("bytes=0-9", Ok(10)),
            ("0--1", Ok(0)),
            (" 0-4 ", Ok(5)),
        ] {
            assert_eq!(parse_upload_range(v), want, "{v}");
        }
        for v in ["", "5-9", "0-x", "abc", "0-18446744073709551615"] {
            assert!(parse_upload_range(v).is_err(), "{v}");
        }
    }

    #[test]
    fn query_parameters_are_appended_to_existing_ones() {
        let mut u = Url::parse("http://r/v2/a/blobs/uploads/uuid?_state=abc%3D").unwrap();
        with_query(&mut u, "digest", "sha256:00");
        assert_eq!(u.query(), Some("_state=abc%3D&digest=sha256%3A00"));
        let mut u = Url::parse("http://r/v2/a/blobs/uploads/uuid").unwrap();
        with_query(&mut u, "digest", "sha256:00");
        assert_eq!(u.query(), Some("digest=sha256%3A00"));
    }
}
