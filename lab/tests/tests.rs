//! The lab's integration tests: real `lab up`, real namespaces, processes, eBPF and traffic.
//! Each test has its own lab instance, so they run in parallel and clean up after themselves.
//! Needs root.

mod browser;
mod harness;

mod agreement;
mod audit;
mod bench;
mod bench_page;
mod cidr_groups;
mod cluster;
mod connectivity;
mod demo;
mod l7;
mod lessons;
mod limits;
mod netpol;
mod policy;
mod semantics;
mod startup;
mod topology_scale;
mod web;
mod world;
