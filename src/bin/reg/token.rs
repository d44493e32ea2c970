//! `reg token new|hash`: bearer tokens for a registry that checks them, and the hash its
//! `--auth` file holds (`sha256:<64 hex>`), so the server's configuration never holds a token
//! itself: a leaked `--auth` file lets no one in.

use std::fmt::Write as _;
use std::io::{self, IsTerminal, Read};

use anyhow::Context;
use reg::server::auth::hash_token as hash;

/// Random bytes in a new token: 32 (256 bits), far beyond guessing, and as many as the hash
/// has, so the hash is no easier to attack than the token.
const TOKEN_BYTES: usize = 32;

/// Longest token `hash` reads from stdin: 4 KiB, far beyond any token; more is not one.
const MAX_TOKEN_BYTES: u64 = 4096;

/// The arguments of `reg token` (its help is on `Command::Token` in `main.rs`).
#[derive(Debug, clap::Args)]
pub(crate) struct TokenArgs {
    #[command(subcommand)]
    command: TokenCommand,
}

#[derive(Debug, clap::Subcommand)]
enum TokenCommand {
    /// Print a new random token (32 bytes from /dev/urandom, hex) and its hash.
    ///
    /// Two lines, `token: <token>` and `hash: sha256:<hex>`. Give the token to the client
    /// (REG_TOKEN or --token) and put the hash in the server's --auth file.
    New,
    /// Print a token's hash, `sha256:<64 lowercase hex>` (SHA-256 of its UTF-8 bytes), as
    /// the server's --auth file holds it.
    ///
    /// The token comes from the argument or, without one, from stdin (which keeps it out of
    /// the shell history and the process list). Whitespace around it is dropped: a header
    /// value loses it on the way to the server too.
    Hash {
        /// The token; default: read from stdin.
        token: Option<String>,
    },
}

pub(crate) fn run(args: TokenArgs) -> anyhow::Result<()> {
    match args.command {
        TokenCommand::New => {
            let token = new_token()?;
            println!("token: {token}");
            println!("hash: {}", hash(&token));
        }
        TokenCommand::Hash { token } => {
            let token = match token {
                Some(token) => token,
                None => read_stdin()?,
            };
            let token = token.trim();
            if token.is_empty() {
                anyhow::bail!("no token given: pass it as an argument or on stdin");
            }
            println!("{}", hash(token));
        }
    }
    Ok(())
}

/// 32 random bytes from the kernel, hex-encoded: 64 characters that need no quoting
/// anywhere (shell, header, TOML).
fn new_token() -> anyhow::Result<String> {
    let mut bytes = [0_u8; TOKEN_BYTES];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut random| random.read_exact(&mut bytes))
        .context("cannot read random bytes from /dev/urandom")?;
    Ok(hex(&bytes))
}

fn hex(bytes: &[u8]) -> String {
    let mut text = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        // Writing to a String cannot fail.
        let _ = write!(text, "{byte:02x}");
    }
    text
}

fn read_stdin() -> anyhow::Result<String> {
    if io::stdin().is_terminal() {
        eprintln!("reg: reading the token from stdin (end it with Enter and Ctrl-D)");
    }
    let mut input = String::new();
    io::stdin()
        .lock()
        .take(MAX_TOKEN_BYTES + 1)
        .read_to_string(&mut input)
        .context("cannot read the token from stdin (is it UTF-8?)")?;
    if input.len() as u64 > MAX_TOKEN_BYTES {
        anyhow::bail!("the token on stdin is longer than {MAX_TOKEN_BYTES} bytes");
    }
    Ok(input)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_sha256_of_the_utf8_bytes_in_lowercase_hex() {
        // FIPS 180-2's "abc" test vector.
        assert_eq!(
            hash("abc"),
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn new_tokens_are_64_hex_characters_and_differ() -> anyhow::Result<()> {
        let (a, b) = (new_token()?, new_token()?);
        assert_eq!(a.len(), 64);
        assert!(a
            .bytes()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        assert_ne!(a, b);
        Ok(())
    }
}
