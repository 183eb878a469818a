//! From Kubernetes manifests to the cluster as data ([`Topology`]): images to built-in
//! workloads, Deployments to pods, and every check that needs the whole set of objects. Nothing
//! is created here; a bad manifest stops `lab up` before anything exists.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::PathBuf,
};

use anyhow::{Result, bail};
use enforcer::yaml::{Located, Source};

use demo_services::agnhost;

use crate::{
    cluster::{
        self, ContainerSpec, KNOWN_IMAGES, LogStoreRef, PodSpec, ServiceSpec, Topology, Workload,
    },
    manifest::{self, Object},
};

/// The default cluster, embedded in the binary.
pub const DEFAULT_MANIFEST: &str = include_str!("../manifests/default.yaml");

/// Reads the manifests (or the default cluster when `files` is empty) into a topology.
pub fn load(files: &[PathBuf]) -> Result<Topology> {
    let mut sources = Vec::new();
    if files.is_empty() {
        sources.push(Source::new("<default cluster>", DEFAULT_MANIFEST));
    }
    for f in files {
        // Errors name the file; too large or not text is refused before parsing.
        sources.push(Source::read(&f.display().to_string())?);
    }
    from_sources(&sources)
}

/// A digest of the manifests (the default cluster when `files` is empty): the same digest
/// means the same requested cluster.
pub fn digest(files: &[PathBuf]) -> Result<String> {
    let mut h: u64 = 0xcbf29ce484222325;
    let mut feed = |bytes: &[u8]| {
        for b in bytes {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x100000001b3);
        }
    };
    if files.is_empty() {
        feed(DEFAULT_MANIFEST.as_bytes());
    }
    for f in files {
        feed(f.display().to_string().as_bytes());
        feed(&std::fs::read(f).map_err(|e| anyhow::anyhow!("reading {}: {e}", f.display()))?);
    }
    Ok(format!("{h:016x}"))
}

pub fn from_sources(sources: &[Source]) -> Result<Topology> {
    let mut objects = Vec::new();
    let mut errors: Vec<Located> = Vec::new();
    for src in sources {
        match manifest::parse_manifests(src) {
            Ok(objs) => objects.extend(objs),
            Err(e) => errors.extend(e),
        }
    }
    if !errors.is_empty() {
        let problems: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
        bail!(
            "the manifests have problems; nothing was created:\n  {}",
            problems.join("\n  ")
        );
    }
    from_objects(&objects)
}

/// Objects (already parsed) to a topology, with every whole-cluster check.
pub fn from_objects(objects: &[(Object, enforcer::yaml::SourceRef)]) -> Result<Topology> {
    let mut topo = Topology::default();
    let mut problems: Vec<String> = Vec::new();
    let mut service_accounts: BTreeSet<(&str, &str)> = BTreeSet::new();
    for (obj, src) in objects {
        let at = format!("{}:{}", src.file, src.line);
        match obj {
            Object::ServiceAccount(m) => {
                service_accounts.insert((&m.namespace, &m.name));
            }
            Object::Namespace(ns) => {
                topo.namespaces.insert(ns.name.clone(), ns.labels.clone());
            }
            Object::Pod(p) => match pod_spec(
                &p.meta.namespace,
                &p.meta.name,
                &p.meta.labels,
                None,
                &p.spec,
                &at,
            ) {
                Ok(spec) => topo.pods.push(spec),
                Err(e) => problems.push(e),
            },
            Object::Deployment(d) => {
                let hash = cluster::template_hash(&format!(
                    "{}/{}/{:?}",
                    d.meta.namespace, d.meta.name, d.template
                ));
                for _ in 0..d.replicas {
                    let name = format!("{}-{hash}-{}", d.meta.name, cluster::pod_suffix());
                    match pod_spec(
                        &d.meta.namespace,
                        &name,
                        &d.template.labels,
                        Some(&d.meta.name),
                        &d.template.spec,
                        &at,
                    ) {
                        Ok(spec) => topo.pods.push(spec),
                        Err(e) => {
                            problems.push(e);
                            break;
                        }
                    }
                }
            }
            Object::Service(s) => topo.services.push(ServiceSpec {
                namespace: s.meta.namespace.clone(),
                name: s.meta.name.clone(),
                labels: s.meta.labels.clone(),
                selector: s.selector.clone(),
                ports: s.ports.clone(),
                service_type: s.service_type,
                cluster_ip: None,
                source: at,
            }),
        }
    }
    // Kubernetes' admission refuses a pod whose service account does not exist; every
    // namespace has `default`.
    for pod in &topo.pods {
        let sa = pod.service_account.as_str();
        if sa != cluster::DEFAULT_SERVICE_ACCOUNT
            && !service_accounts.contains(&(pod.namespace.as_str(), sa))
        {
            problems.push(format!(
                "{}: pod {}/{} names service account {sa:?}, but no ServiceAccount {sa:?} is defined in namespace {}; add one (`kind: ServiceAccount`, `metadata.name: {sa}`) or leave `serviceAccountName` out for `default`",
                pod.source, pod.namespace, pod.name, pod.namespace
            ));
        }
    }
    let topo = topo.with_system_parts();
    problems.extend(topo.validate());
    if !problems.is_empty() {
        bail!(
            "the manifests have problems; nothing was created:\n  {}",
            problems.join("\n  ")
        );
    }
    Ok(topo)
}

fn pod_spec(
    namespace: &str,
    name: &str,
    labels: &BTreeMap<String, String>,
    owner: Option<&str>,
    spec: &manifest::PodSpec,
    at: &str,
) -> Result<PodSpec, String> {
    let container = match spec.containers.as_slice() {
        [] => return Err(format!("{at}: pod {namespace}/{name} has no containers")),
        // The conformance suite runs one agnhost container per port: one workload serves them
        // all.
        [first, ..] if is_agnhost(&first.image) => agnhost_container(name, spec, at)?,
        [container] => single_container(container, at)?,
        more => {
            return Err(format!(
                "{at}: pod {namespace}/{name} has {} containers; the lab runs one workload per pod (no sidecars; only agnhost servers may share a pod)",
                more.len()
            ));
        }
    };
    Ok(PodSpec {
        namespace: namespace.to_owned(),
        name: name.to_owned(),
        labels: labels.clone(),
        owner: owner.map(str::to_owned),
        service_account: spec
            .service_account
            .clone()
            .unwrap_or_else(|| cluster::DEFAULT_SERVICE_ACCOUNT.to_owned()),
        container,
        restart_policy: spec.restart_policy,
        source: at.to_owned(),
    })
}

fn env_of(c: &manifest::Container) -> BTreeMap<&str, &str> {
    c.env
        .iter()
        .map(|e| (e.name.as_str(), e.value.as_str()))
        .collect()
}

fn ports_of(
    c: &manifest::Container,
) -> impl Iterator<Item = (Option<String>, u16, cluster::Protocol)> + '_ {
    c.ports
        .iter()
        .map(|p| (p.name.clone(), p.container_port, p.protocol))
}

/// The one container of a pod, on the built-in workload its image names.
fn single_container(container: &manifest::Container, at: &str) -> Result<ContainerSpec, String> {
    if !container.command.is_empty() || !container.args.is_empty() {
        return Err(format!(
            "{at}: container {} sets command/args; the lab runs its built-in workloads only (use `lab exec` to run other programs in a pod)",
            container.name
        ));
    }
    let workload = workload_for(&container.image, &env_of(container))
        .map_err(|e| format!("{at}: container {}: {e}", container.name))?;
    Ok(ContainerSpec {
        name: container.name.clone(),
        image: container.image.clone(),
        workload,
        ports: ports_of(container).collect(),
    })
}

const AGNHOST: &str = "registry.k8s.io/e2e-test-images/agnhost";

fn is_agnhost(image: &str) -> bool {
    matches!(
        image_name(image),
        AGNHOST
            | "k8s.gcr.io/e2e-test-images/agnhost"
            | "gcr.io/kubernetes-e2e-test-images/agnhost"
    )
}

/// A pod of agnhost containers: every container's server arguments, served by one process.
fn agnhost_container(
    name: &str,
    spec: &manifest::PodSpec,
    at: &str,
) -> Result<ContainerSpec, String> {
    let mut servers = Vec::new();
    let mut ports = Vec::new();
    for c in &spec.containers {
        if !is_agnhost(&c.image) {
            return Err(format!(
                "{at}: container {} runs {:?} beside agnhost containers; the lab runs one workload per pod, and only agnhost servers may share a pod",
                c.name, c.image
            ));
        }
        let argv: Vec<&str> = c
            .command
            .iter()
            .chain(&c.args)
            .map(String::as_str)
            .collect();
        servers.extend(
            agnhost_servers(&argv, &env_of(c), name)
                .map_err(|e| format!("{at}: container {}: {e}", c.name))?,
        );
        ports.extend(ports_of(c));
    }
    let first = &spec.containers[0];
    Ok(ContainerSpec {
        name: first.name.clone(),
        image: first.image.clone(),
        workload: Workload::Agnhost { servers },
        ports,
    })
}

/// The servers one agnhost container runs, from its command line (`/agnhost` and the image's
/// entrypoint optional) and environment, with agnhost's defaults. `pause` (or no subcommand)
/// serves nothing.
fn agnhost_servers(
    argv: &[&str],
    env: &BTreeMap<&str, &str>,
    hostname: &str,
) -> Result<Vec<agnhost::Server>, String> {
    use agnhost::{Kind, Server};
    let argv = match argv.first() {
        Some(&"/agnhost" | &"agnhost") => &argv[1..],
        _ => argv,
    };
    let Some((&sub, flags)) = argv.split_first() else {
        return Ok(vec![]);
    };
    // `--name=value`, `--name value` and a bare `--name` (true).
    let mut values: BTreeMap<&str, &str> = BTreeMap::new();
    let mut i = 0;
    while i < flags.len() {
        let Some(flag) = flags[i].strip_prefix("--").or(flags[i].strip_prefix('-')) else {
            return Err(format!(
                "unexpected argument {:?} to agnhost {sub}",
                flags[i]
            ));
        };
        match flag.split_once('=') {
            Some((k, v)) => {
                values.insert(k, v);
            }
            None if flags.get(i + 1).is_some_and(|n| !n.starts_with('-'))
                && !matches!(flag, "tcp" | "udp" | "http" | "close") =>
            {
                values.insert(flag, flags[i + 1]);
                i += 1;
            }
            None => {
                values.insert(flag, "true");
            }
        }
        i += 1;
    }
    let flag_bool = |k: &str, default: bool| -> Result<bool, String> {
        match values.get(k) {
            None => Ok(default),
            Some(&"true") => Ok(true),
            Some(&"false") => Ok(false),
            Some(v) => Err(format!("--{k}={v} is not true or false")),
        }
    };
    let port = |k: &str, default: i64| -> Result<i64, String> {
        values.get(k).map_or(Ok(default), |v| {
            v.parse::<i64>()
                .map_err(|_| format!("--{k}={v} is not a port number"))
        })
    };
    let valid = |p: i64| -> Result<u16, String> {
        u16::try_from(p)
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| format!("port {p} is out of range"))
    };
    let body = hostname.to_owned();
    let mut out = Vec::new();
    match sub {
        "pause" => {}
        "serve-hostname" => {
            let p = valid(port("port", 9376)?)?;
            let (tcp, udp, http) = (
                flag_bool("tcp", false)?,
                flag_bool("udp", false)?,
                flag_bool("http", true)?,
            );
            // agnhost serves TCP and UDP raw, or HTTP when neither is asked for.
            if tcp {
                out.push(Server {
                    port: p,
                    kind: Kind::Tcp,
                    body: body.clone(),
                });
            }
            if udp {
                out.push(Server {
                    port: p,
                    kind: Kind::Udp,
                    body: body.clone(),
                });
            }
            if http && !tcp && !udp {
                out.push(Server {
                    port: p,
                    kind: Kind::Http,
                    body,
                });
            }
        }
        "netexec" => {
            let http = port("http-port", 8080)?;
            let udp = port("udp-port", 8081)?;
            out.push(Server {
                port: valid(http)?,
                kind: Kind::Http,
                body: body.clone(),
            });
            if udp > 0 {
                out.push(Server {
                    port: valid(udp)?,
                    kind: Kind::Udp,
                    body,
                });
            }
        }
        "porter" => {
            for (k, v) in env {
                if let Some(p) = k.strip_prefix("SERVE_PORT_") {
                    let p = p
                        .parse::<i64>()
                        .map_err(|_| format!("env {k}: not a port"))?;
                    out.push(Server {
                        port: valid(p)?,
                        kind: Kind::Http,
                        body: v.to_string(),
                    });
                } else if k.starts_with("SERVE_TLS_PORT_") || k.starts_with("SERVE_SCTP_PORT_") {
                    return Err(format!(
                        "env {k}: the lab's agnhost serves plain HTTP ports only (SERVE_PORT_N)"
                    ));
                }
            }
        }
        other => {
            return Err(format!(
                "agnhost {other:?} is not one of the servers the lab stands in for (serve-hostname, netexec, porter, pause)"
            ));
        }
    }
    Ok(out)
}

/// The image without registry tag or digest, e.g. `quay.io/cilium/starwars:v2.1@sha256:..` →
/// `quay.io/cilium/starwars`.
fn image_name(image: &str) -> &str {
    let no_digest = image.split('@').next().unwrap_or(image);
    match no_digest.rfind(':') {
        Some(i) if !no_digest[i..].contains('/') => &no_digest[..i],
        _ => no_digest,
    }
}

fn workload_for(image: &str, env: &BTreeMap<&str, &str>) -> Result<Workload, String> {
    let port = |default: u16| -> Result<u16, String> {
        match env.get("PORT") {
            Some(p) => p
                .parse()
                .map_err(|_| format!("env PORT={p:?} is not a port number")),
            None => Ok(default),
        }
    };
    match image_name(image) {
        "lab/deathstar"
        | "quay.io/cilium/starwars"
        | "docker.io/cilium/starwars"
        | "cilium/starwars" => {
            let log_stores = match env.get("LOG_STORES") {
                Some(v) => parse_log_stores(v)?,
                None => Vec::new(),
            };
            Ok(Workload::Deathstar { log_stores })
        }
        "lab/ship"
        | "quay.io/cilium/json-mock"
        | "docker.io/cilium/json-mock"
        | "docker.io/tgraf/netperf"
        | "tgraf/netperf" => Ok(Workload::Ship),
        "lab/ftp-store" => match env.get("FTP_MODE").copied() {
            Some("secure") => Ok(Workload::FtpStore { secure: true }),
            Some("vulnerable") => Ok(Workload::FtpStore { secure: false }),
            other => Err(format!(
                "lab/ftp-store needs env FTP_MODE=secure or FTP_MODE=vulnerable (got {other:?})"
            )),
        },
        "lab/echo" => Ok(Workload::Echo {
            port: port(80)?,
            body: env
                .get("BODY")
                .map(|b| b.to_string())
                .unwrap_or_else(|| "hello world\n".into()),
        }),
        "lab/inventory" => Ok(Workload::Inventory { port: port(8080)? }),
        other => Err(format!(
            "unknown image {other:?}: the lab has no container runtime and runs built-in workloads. Known images:\n    {}",
            KNOWN_IMAGES.join("\n    ")
        )),
    }
}

/// `user:password@service:port,service:port`
fn parse_log_stores(v: &str) -> Result<Vec<LogStoreRef>, String> {
    v.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|item| {
            let (cred, service) = match item.rsplit_once('@') {
                Some((c, s)) => (Some(c), s),
                None => (None, item),
            };
            if !service.contains(':') {
                return Err(format!(
                    "LOG_STORES entry {item:?}: expected [user:password@]service:port"
                ));
            }
            let (user, password) = match cred {
                Some(c) => match c.split_once(':') {
                    Some((u, p)) => (Some(u.to_owned()), Some(p.to_owned())),
                    None => (Some(c.to_owned()), None),
                },
                None => (None, None),
            };
            Ok(LogStoreRef {
                service: service.to_owned(),
                user,
                password,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_cluster() {
        let t = from_sources(&[Source::new("default", DEFAULT_MANIFEST)]).unwrap();
        let names: Vec<&str> = t.pods.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(
            t.pods
                .iter()
                .filter(|p| p.owner.as_deref() == Some("deathstar"))
                .count(),
            2
        );
        for n in ["tiefighter", "xwing", "ftp-secure", "ftp-vulnerable"] {
            assert!(names.contains(&n), "{n} in {names:?}");
        }
        assert!(
            t.pods
                .iter()
                .any(|p| p.labels.get("k8s-app").map(String::as_str) == Some("kube-dns"))
        );
        let ds = t
            .pods
            .iter()
            .find(|p| p.owner.as_deref() == Some("deathstar"))
            .unwrap();
        assert!(ds.name.starts_with("deathstar-"));
        match &ds.container.workload {
            Workload::Deathstar { log_stores } => {
                assert_eq!(log_stores.len(), 2);
                assert_eq!(log_stores[0].user.as_deref(), Some("deathstar"));
                assert_eq!(log_stores[1].service, "ftp-vulnerable:21");
            }
            w => panic!("{w:?}"),
        }
    }

    #[test]
    fn images() {
        assert_eq!(
            image_name("quay.io/cilium/starwars:v2.1@sha256:abc"),
            "quay.io/cilium/starwars"
        );
        assert_eq!(image_name("localhost:5000/x"), "localhost:5000/x");
        assert_eq!(image_name("lab/echo:1"), "lab/echo");
        let err = workload_for("nginx:latest", &BTreeMap::new()).unwrap_err();
        assert!(
            err.contains("Known images") && err.contains("lab/deathstar"),
            "{err}"
        );
    }

    #[test]
    fn cilium_starwars_manifest_works_as_written() {
        let text = r#"
apiVersion: v1
kind: Service
metadata:
  name: deathstar
spec:
  type: ClusterIP
  ports:
  - port: 80
  selector:
    org: empire
    class: deathstar
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: deathstar
spec:
  replicas: 2
  selector:
    matchLabels:
      org: empire
      class: deathstar
  template:
    metadata:
      labels:
        org: empire
        class: deathstar
    spec:
      containers:
      - name: deathstar
        image: quay.io/cilium/starwars:v2.1@sha256:833d915ec68fca3ce83668fc5dae97c455b2134d8f23ef96586f55b894cfb1e8
---
apiVersion: v1
kind: Pod
metadata:
  name: xwing
  labels:
    org: alliance
    class: xwing
spec:
  containers:
  - name: spaceship
    image: quay.io/cilium/json-mock:v1.3.8@sha256:5aad04835eda9025fe4561ad31be77fd55309af8158ca8663a72f6abb78c2603
"#;
        let t = from_sources(&[Source::new("sw.yaml", text)]).unwrap();
        assert_eq!(
            t.pods
                .iter()
                .filter(|p| matches!(p.container.workload, Workload::Deathstar { .. }))
                .count(),
            2
        );
        assert!(
            t.pods
                .iter()
                .any(|p| p.name == "xwing" && p.container.workload == Workload::Ship)
        );
    }

    #[test]
    fn unknown_image_names_file_and_line() {
        let text = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\nspec:\n  containers:\n  - name: c\n    image: nginx\n";
        let err = from_sources(&[Source::new("web.yaml", text)])
            .unwrap_err()
            .to_string();
        assert!(err.contains("web.yaml:") && err.contains("nginx"), "{err}");
    }
}
