//! From a pod's workload to the process that runs it: `lab workload <kind> --config <json>`,
//! with the configuration the workload needs in this cluster (its pod name, the addresses of
//! the services it talks to — resolved at start like Kubernetes' service environment variables,
//! so a workload does not depend on DNS being allowed by policy).

use std::{net::SocketAddr, path::Path};

use anyhow::{Context, Result, bail};
use demo_services::{agnhost, deathstar, dns, echo, ftpstore, logship};
use serde_json::Value;

use crate::cluster::{PodSpec, Workload};

/// Passive FTP ports of the log stores (fixed, so policies can name them with `endPort`).
pub const FTP_PASSIVE_PORTS: (u16, u16) = (30000, 30009);
/// The secure store's account for the Deathstar.
pub const SECURE_STORE_USER: (&str, &str) = ("deathstar", "darkside");

/// Resolves `NAME:PORT` of a service in a namespace to its cluster IP and port.
pub type ServiceResolver<'a> = &'a dyn Fn(&str, &str) -> Option<SocketAddr>;

/// The `lab workload` arguments for a pod, or `None` for pods that only idle (ships).
pub fn command_args(
    pod: &PodSpec,
    data_dir: &Path,
    dns_records: &Path,
    resolve: ServiceResolver,
) -> Result<Vec<String>> {
    let (kind, config): (&str, Value) = match &pod.container.workload {
        Workload::Deathstar { log_stores } => {
            let mut targets = Vec::new();
            for store in log_stores {
                let addr = resolve(&pod.namespace, &store.service).with_context(|| {
                    format!(
                        "log store service {} not found in namespace {}",
                        store.service, pod.namespace
                    )
                })?;
                targets.push(logship::Target {
                    name: store
                        .service
                        .split(':')
                        .next()
                        .unwrap_or_default()
                        .to_owned(),
                    addr: addr.to_string(),
                    user: store.user.clone(),
                    password: store.password.clone(),
                    dir: String::new(),
                });
            }
            let cfg = deathstar::Config {
                pod_name: pod.name.clone(),
                log_ship: logship::Config {
                    targets,
                    ..Default::default()
                },
                ..Default::default()
            };
            ("deathstar", serde_json::to_value(cfg)?)
        }
        Workload::Ship => ("ship", Value::Null),
        Workload::FtpStore { secure } => {
            let mode = if *secure {
                ftpstore::Mode::Secure {
                    users: vec![ftpstore::User {
                        name: SECURE_STORE_USER.0.into(),
                        password: SECURE_STORE_USER.1.into(),
                    }],
                }
            } else {
                ftpstore::Mode::Vulnerable
            };
            let root = data_dir.join(format!("{}_{}", pod.namespace, pod.name));
            std::fs::create_dir_all(&root)?;
            let cfg = ftpstore::Config {
                listen: SocketAddr::from(([0, 0, 0, 0], 21)),
                root,
                name: pod.name.clone(),
                passive_port_min: FTP_PASSIVE_PORTS.0,
                passive_port_max: FTP_PASSIVE_PORTS.1,
                mode,
            };
            ("ftp-store", serde_json::to_value(cfg)?)
        }
        Workload::Echo { port, body } => {
            let cfg = echo::Config {
                listen: SocketAddr::from(([0, 0, 0, 0], *port)),
                body: body.clone(),
                ..Default::default()
            };
            ("echo", serde_json::to_value(cfg)?)
        }
        Workload::Inventory { port } => {
            let cfg = echo::Config {
                listen: SocketAddr::from(([0, 0, 0, 0], *port)),
                body: INVENTORY_RECORDS.into(),
                ..Default::default()
            };
            ("echo", serde_json::to_value(cfg)?)
        }
        Workload::Agnhost { servers } => {
            let cfg = agnhost::Config {
                servers: servers.clone(),
            };
            ("agnhost", serde_json::to_value(cfg)?)
        }
        Workload::Dns => {
            let cfg = dns::Config {
                listen: SocketAddr::from(([0, 0, 0, 0], 53)),
                records_file: dns_records.to_owned(),
                reload_ms: 200,
            };
            ("dns", serde_json::to_value(cfg)?)
        }
    };
    Ok(vec![
        "workload".into(),
        kind.into(),
        "--config".into(),
        config.to_string(),
    ])
}

/// Fake customer records served by the inventory service of the NodePort incident lesson.
pub const INVENTORY_RECORDS: &str = "\
{\"customers\": [\n\
  {\"id\": 1001, \"name\": \"Leia Organa\", \"email\": \"leia@alderaan.example\", \"ship_to\": \"Royal Palace, Aldera\"},\n\
  {\"id\": 1002, \"name\": \"Lando Calrissian\", \"email\": \"lando@bespin.example\", \"ship_to\": \"Cloud City, Bespin\"},\n\
  {\"id\": 1003, \"name\": \"Wedge Antilles\", \"email\": \"wedge@corellia.example\", \"ship_to\": \"Coronet City, Corellia\"}\n\
]}\n";

/// Runs a workload in this process (the `lab workload` subcommand, inside the pod).
pub async fn run(kind: &str, config: &str) -> Result<()> {
    match kind {
        "deathstar" => deathstar::run(serde_json::from_str(config)?).await,
        "ftp-store" => ftpstore::run(serde_json::from_str(config)?).await,
        "echo" => echo::run(serde_json::from_str(config)?).await,
        "dns" => dns::run(serde_json::from_str(config)?).await,
        "agnhost" => agnhost::run(serde_json::from_str(config)?).await,
        "ship" => {
            // A ship idles until someone uses it with `lab exec` or `lab ship`.
            tracing::info!("ship ready: use `lab ship` or `lab exec` to fly it");
            std::future::pending::<()>().await;
            Ok(())
        }
        other => bail!("unknown workload {other}"),
    }
}
