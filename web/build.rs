//! Rebuilds the web crate when a lesson or a page asset changes (rust-embed includes the files
//! that exist at build time; a new file in these folders must trigger a rebuild too).
fn main() {
    println!("cargo:rerun-if-changed=../lessons");
    println!("cargo:rerun-if-changed=static");
    println!("cargo:rerun-if-changed=templates");
}
