//! The `reg` command line.

fn main() {
    println!("reg {}", env!("CARGO_PKG_VERSION"));
}
