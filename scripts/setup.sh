#!/usr/bin/env bash
#! Installs everything the lab and its tests need, idempotently. Safe to re-run: when all is
#! present it only checks and returns in seconds.
set -euo pipefail

LLVM_PREFIX_DIR=${LAB_LLVM_PREFIX:-/usr/local/lib/lab-bpf-llvm}
BPF_LINKER_VERSION=0.13.0
# Debian packages: build tools for -sys crates, iproute2 for inspecting namespaces, curl for the
# ships, iputils-ping for `ping` in pods (ICMP policies), chromium for the browser tests,
# iptables/nftables/haproxy as the benchmark's peers.
APT_PACKAGES=(build-essential pkg-config iproute2 curl iputils-ping ca-certificates chromium
              chromium-driver iptables nftables haproxy procps)

say() { printf '\033[1m[setup]\033[0m %s\n' "$*"; }
die() { printf '\033[1;31m[setup] error:\033[0m %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "run as root (the lab creates network namespaces and loads eBPF): sudo $0"
command -v rustup >/dev/null || die "rustup not found: install it from https://rustup.rs, then re-run"

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  say "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  say "Debian packages present"
fi

# The toolchain named by rust-toolchain.toml (if any) or the default one.
toolchain=$(cd "$(dirname "$0")/.." && rustup show active-toolchain | awk '{print $1}')
if ! rustup component list --toolchain "$toolchain" --installed | grep -q '^rust-src'; then
  say "adding rust-src to $toolchain (the eBPF crate builds core from source)"
  rustup component add rust-src --toolchain "$toolchain"
else
  say "rust-src present"
fi
for c in rustfmt clippy; do
  rustup component list --toolchain "$toolchain" --installed | grep -q "^$c" || rustup component add "$c" --toolchain "$toolchain"
done

# bpf-linker linked against the Rust toolchain's own libLLVM (no Debian LLVM matches rustc's).
sysroot=$(rustc +"$toolchain" --print sysroot)
libllvm=$(ls "$sysroot"/lib/libLLVM.so.* 2>/dev/null | head -n1 || true)
[ -n "$libllvm" ] || die "no libLLVM.so.* in $sysroot/lib; is this a rustup toolchain?"
llvm_major=$(basename "$libllvm" | sed -E 's/^libLLVM\.so\.([0-9]+).*/\1/')
mkdir -p "$LLVM_PREFIX_DIR/lib"
ln -sfn "$libllvm" "$LLVM_PREFIX_DIR/lib/libLLVM.so"
ln -sfn "$libllvm" "$LLVM_PREFIX_DIR/lib/$(basename "$libllvm")"

cargo_bin=${CARGO_HOME:-$HOME/.cargo}/bin
if "$cargo_bin/bpf-linker" --version 2>/dev/null | grep -q "$BPF_LINKER_VERSION"; then
  say "bpf-linker $BPF_LINKER_VERSION present"
else
  say "building bpf-linker $BPF_LINKER_VERSION against $(basename "$libllvm") (about a minute)"
  LLVM_PREFIX="$LLVM_PREFIX_DIR" cargo +"$toolchain" install bpf-linker --locked --force \
    --version "$BPF_LINKER_VERSION" --no-default-features --features "llvm-$llvm_major"
  "$cargo_bin/bpf-linker" --version >/dev/null || die "bpf-linker was built but does not run"
fi
say "done"
