//! The lab's integration tests: real `lab up`, real namespaces, processes, eBPF and traffic.
//! Each test has its own lab instance, so they run in parallel and clean up after themselves.
//! Needs root.

mod harness;

mod audit;
mod bench;
mod cluster;
mod demo;
mod l7;
mod limits;
mod policy;
mod semantics;
mod web;
mod world;
