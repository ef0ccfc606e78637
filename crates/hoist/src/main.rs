//! The `hoist` command-line tool.
fn main() {}
