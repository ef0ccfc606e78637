//! Transfer engine: deduplicated, watched, retried transfers with concurrency limits.
