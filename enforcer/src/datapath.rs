//! The kernel side as user space sees it: the embedded eBPF object.

/// The compiled kernel programs (`enforcer-ebpf`), built by this crate's build script.
pub static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/enforcer-ebpf"));
