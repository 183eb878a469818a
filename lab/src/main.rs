//! `lab`: one binary that turns a Linux VM into a small Kubernetes-style cluster with an eBPF
//! policy enforcer that understands CiliumNetworkPolicy, and a web page that teaches with it.
//!
//! Modules: `cli` (commands and their output), `control` (the running lab), `flows` (the flow
//! recorder), `backend` (what the API exposes), `policies`, `metrics`, `cluster` and `topology` (the cluster as data, from
//! manifests), `supervisor` and `spawn` (processes in pods), `netlink` and `sys` (kernel
//! plumbing), `state` (the record of what was created), `paths`, `client` (the CLI's API client),
//! `workloads` (what each image runs).

mod audit;
mod backend;
mod bench;
mod cli;
mod client;
mod cluster;
mod control;
mod flows;
mod manifest;
mod matrix;
mod metrics;
mod netlink;
mod paths;
mod policies;
mod prefilter;
mod probe;
mod spawn;
mod state;
mod supervisor;
mod sys;
mod topology;
mod up;
mod workloads;

fn main() {
    std::process::exit(cli::main());
}
