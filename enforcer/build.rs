//! Builds the kernel programs (`enforcer-ebpf`) for bpfel-unknown-none and leaves the object in
//! OUT_DIR, where `enforcer::datapath` embeds it. A missing toolchain piece stops the build with
//! the command that installs it.
use std::{env, path::Path, process::Command};

fn main() {
    if let Err(e) = build() {
        // cargo shows a build script's stderr on failure.
        eprintln!("\nerror building the eBPF programs: {e:#}\n");
        std::process::exit(1);
    }
}

fn build() -> anyhow::Result<()> {
    let toolchain = env::var("RUSTUP_TOOLCHAIN").unwrap_or_else(|_| "stable".into());
    let manifest_dir = env::var("CARGO_MANIFEST_DIR")?;
    let ebpf_dir = Path::new(&manifest_dir).join("../enforcer-ebpf");
    let ebpf_dir = ebpf_dir.canonicalize()?;

    if Command::new("bpf-linker")
        .arg("--version")
        .output()
        .is_err()
    {
        anyhow::bail!(
            "bpf-linker is not installed or not on PATH.\n  Install it with: ./scripts/setup.sh \
             (it builds bpf-linker 0.13 against the Rust toolchain's own LLVM)"
        );
    }
    let sysroot = Command::new("rustc")
        .args(["--print", "sysroot"])
        .output()?;
    let sysroot = String::from_utf8(sysroot.stdout)?;
    let rust_src = Path::new(sysroot.trim()).join("lib/rustlib/src/rust/library/core");
    if !rust_src.exists() {
        anyhow::bail!(
            "the rust-src component is missing (needed to build `core` for the BPF target).\n  \
             Install it with: rustup component add rust-src --toolchain {toolchain}"
        );
    }

    // The kernel crate needs -Z build-std on this stable toolchain.
    // SAFETY: build scripts are single-threaded; aya-build's child cargo inherits this.
    unsafe { env::set_var("RUSTC_BOOTSTRAP", "1") };
    println!(
        "cargo:rerun-if-changed={}",
        ebpf_dir.join("common/src").display()
    );
    let root = ebpf_dir.to_str().unwrap_or_default().to_owned();
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "enforcer-ebpf",
            root_dir: &root,
            ..Default::default()
        }],
        aya_build::Toolchain::Custom(&toolchain),
    )
}
