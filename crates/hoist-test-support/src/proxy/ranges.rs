//! Faults on range requests that depend on how many ranges a request asks for: registries
//! that serve one range per request, ignore or refuse multi-range requests, or refuse ranges.

use http::HeaderMap;
use http::header;

/// What the proxy does to a request with a `Range` header ([`super::Action::Ranges`]).
/// Requests without one pass unchanged.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RangeFault {
    /// A request asking for more than one range is answered `status` (416, say) by the
    /// proxy; single-range requests pass.
    RefuseMultiRange {
        /// The status answered.
        status: u16,
    },
    /// A request asking for more than one range is forwarded with only its first range: the
    /// upstream answers a `206` with that one range.
    FirstRangeOnly,
    /// A request asking for more than one range is forwarded without `Range`: the upstream
    /// answers `200` with the whole body. Single-range requests pass.
    IgnoreMultiRange,
    /// Every request with a `Range` header is answered `status` by the proxy; requests
    /// without one pass.
    RefuseAnyRange {
        /// The status answered.
        status: u16,
    },
}

/// The ranges a `Range: bytes=...` value asks for, as written.
fn specs(value: &str) -> Vec<&str> {
    let Some(rest) = value.trim().strip_prefix("bytes=") else {
        return Vec::new();
    };
    rest.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect()
}

/// Applies `fault` to a request's headers; returns the status the proxy answers itself
/// instead of forwarding, if any.
pub(crate) fn apply(fault: &RangeFault, headers: &mut HeaderMap) -> Option<u16> {
    let value = headers.get(header::RANGE)?.to_str().ok()?.to_owned();
    let specs = specs(&value);
    let many = specs.len() > 1;
    match fault {
        RangeFault::RefuseMultiRange { status } if many => Some(*status),
        RangeFault::RefuseAnyRange { status } => Some(*status),
        RangeFault::FirstRangeOnly if many => {
            if let Ok(v) = http::HeaderValue::from_str(&format!("bytes={}", specs[0])) {
                headers.insert(header::RANGE, v);
            }
            None
        }
        RangeFault::IgnoreMultiRange if many => {
            headers.remove(header::RANGE);
            headers.remove(header::IF_RANGE);
            None
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_range(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::RANGE, value.parse().unwrap());
        h
    }

    #[test]
    fn multi_range_faults_leave_single_ranges_alone() {
        for fault in [
            RangeFault::RefuseMultiRange { status: 416 },
            RangeFault::FirstRangeOnly,
            RangeFault::IgnoreMultiRange,
        ] {
            let mut h = with_range("bytes=10-19");
            assert_eq!(apply(&fault, &mut h), None);
            assert_eq!(h.get(header::RANGE).unwrap(), "bytes=10-19");
        }
        let mut none = HeaderMap::new();
        assert_eq!(
            apply(&RangeFault::RefuseAnyRange { status: 400 }, &mut none),
            None
        );
    }

    #[test]
    fn multi_range_requests_are_refused_cut_to_the_first_range_or_stripped() {
        let mut h = with_range("bytes=0-9, 100-199");
        assert_eq!(
            apply(&RangeFault::RefuseMultiRange { status: 416 }, &mut h),
            Some(416)
        );
        let mut h = with_range("bytes=0-9, 100-199");
        assert_eq!(apply(&RangeFault::FirstRangeOnly, &mut h), None);
        assert_eq!(h.get(header::RANGE).unwrap(), "bytes=0-9");
        let mut h = with_range("bytes=0-9,100-199");
        assert_eq!(apply(&RangeFault::IgnoreMultiRange, &mut h), None);
        assert!(h.get(header::RANGE).is_none());
        let mut h = with_range("bytes=5-6");
        assert_eq!(
            apply(&RangeFault::RefuseAnyRange { status: 501 }, &mut h),
            Some(501)
        );
    }
}
