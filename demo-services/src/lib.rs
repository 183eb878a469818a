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
//! - [`agnhost`]: the servers of Kubernetes' `agnhost` test image (network policy conformance).
//! - [`loadgen`]: a wrk2-style HTTP load generator (open and closed loop) for `lab bench`.
//!
//! Everything logs with `tracing`; installing a subscriber is the caller's job.
//! [`run_workload`] maps a workload name and its JSON config to the right `run`.

pub mod agnhost;
pub mod deathstar;
pub mod dns;
pub mod echo;
mod ftp_client;
pub mod ftpstore;
mod http_server;
mod listen;
pub mod loadgen;
pub mod logship;
pub mod ship;

/// The names [`run_workload`] accepts: the server workloads (the ships are clients, see [`ship`]).
pub const WORKLOADS: &[&str] = &["deathstar", "ftpstore", "echo", "dns"];

/// Parses `config_json` as the named workload's `Config` and runs it until the process dies.
/// The one place that knows which name means which workload, for `lab workload NAME --config JSON`.
pub async fn run_workload(name: &str, config_json: &str) -> anyhow::Result<()> {
    fn parse<T: serde::de::DeserializeOwned>(name: &str, json: &str) -> anyhow::Result<T> {
        serde_json::from_str(json).map_err(|e| anyhow::anyhow!("bad {name} config: {e}"))
    }
    match name {
        "deathstar" => deathstar::run(parse(name, config_json)?).await,
        "ftpstore" => ftpstore::run(parse(name, config_json)?).await,
        "echo" => echo::run(parse(name, config_json)?).await,
        "dns" => dns::run(parse(name, config_json)?).await,
        _ => anyhow::bail!("unknown workload {name:?}; known: {}", WORKLOADS.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn run_workload_rejects_unknown_names_and_bad_configs() {
        let err = super::run_workload("tiefighter", "{}").await.unwrap_err();
        assert!(err.to_string().contains("deathstar"), "{err}");
        let err = super::run_workload("dns", "{}").await.unwrap_err();
        assert!(err.to_string().contains("records_file"), "{err}");
        let err = super::run_workload("echo", r#"{"prot": 1}"#)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("bad echo config"), "{err}");
    }
}
