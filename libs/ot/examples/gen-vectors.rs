//! Writes `libs/ot/vectors/ot-vectors.json`, the test vectors shared with the JavaScript client.
//!
//! Run `cargo run -p tandem-ot --example gen-vectors` after changing the generator in
//! `tests/common/vectors.rs`; `tests/vectors.rs` fails until the file matches.

#[path = "../tests/common/vectors.rs"]
mod vectors;

fn main() {
    let path = vectors::vectors_path();
    let text = vectors::render(&vectors::generate());
    if let Err(e) = std::fs::write(&path, &text) {
        eprintln!("error: writing {}: {e}", path.display());
        std::process::exit(1);
    }
    println!("wrote {} ({} bytes)", path.display(), text.len());
}
