//! criterion benches (in progress).
fn main() {}
