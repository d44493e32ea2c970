//! `reg version`.

/// Prints `reg <version>`.
pub(crate) fn run() -> anyhow::Result<()> {
    println!("reg {}", env!("CARGO_PKG_VERSION"));
    Ok(())
}
