//! The workloads that run inside the lab's simulated pods, one module per workload.
//!
//! Each server workload has a serde `Config` (the orchestrator passes it as JSON on the command
//! line of `lab workload <name> --config <json>`) and an `async fn run(cfg) -> anyhow::Result<()>`
//! that binds exactly the configured address and serves until the process is killed. Each also
//! has a `serve` taking an already bound socket, so tests can use port 0.
//!
//! - [`deathstar`]: the Star Wars demo's HTTP API, with the hidden exhaust port that kills it.
//! - [`logship`]: ships the Deathstar's API log over FTP to the log stores, in batches.
//! - [`ftpstore`]: the FTP log stores, one secure (login, chroot per user), one vulnerable.
//! - [`ship`]: the client moves of the ships (land, survey, fire, fetch the logs, any HTTP).
//! - [`echo`]: a small fast HTTP server for exercises and benchmarks.
//! - [`dns`]: the cluster's authoritative DNS server for `cluster.local.`.
//!
//! Everything logs with `tracing`; installing a subscriber is the caller's job.

pub mod deathstar;
pub mod dns;
pub mod echo;
mod ftp_client;
pub mod ftpstore;
mod http_server;
pub mod logship;
pub mod ship;
