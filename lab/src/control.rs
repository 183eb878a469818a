//! The running lab: builds the cluster described by a [`Topology`] — a node namespace, a
//! namespace, veth, cgroup and supervised process per pod, virtual IPs per service — runs the
//! enforcer over it, and tears it all down again. It implements [`web::Backend`], so the CLI
//! (over the instance socket) and the web page (over HTTP) see the same lab.
//!
//! Layout on the node (inside the lab's own network namespace, never the VM's):
//! `lo` holds the node address (10.244.0.1: the first address of the pod range); each pod's
//! veth `lxc<hash>` has a /32 route to the pod; pods route everything through the node address.
//! Packets marked for the L7 proxy are delivered locally by a policy-routing rule.

use std::{
    collections::BTreeMap,
    net::{Ipv4Addr, SocketAddr},
    path::PathBuf,
    sync::{Arc, Mutex, RwLock},
    time::{Duration, SystemTime},
};

use anyhow::{Context, Result, bail};
use enforcer::proxy::ProxyStats;
use enforcer::{
    datapath::Datapath,
    engine::{EndpointSpec, Engine},
};
use enforcer_common::{MARK_MASK, MARK_TO_PROXY};

use crate::{
    cluster::{self, PodSpec, ServiceSpec, ServiceType, TargetPort, Topology},
    flows::FlowRecorder,
    netlink::Netlink,
    paths::Paths,
    spawn::{PodContext, write_resolv_conf},
    state::Record,
    supervisor::{Phase, Supervised},
    sys, workloads,
};

/// Routing table and rule priority that deliver proxy-bound packets locally.
const PROXY_TABLE: u32 = 2004;
const PROXY_RULE_PRIORITY: u32 = 100;
/// The L7 proxy's transparent listener in the node namespace.
pub const PROXY_PORT: u16 = 15001;

pub struct PodRuntime {
    pub spec: PodSpec,
    pub ip: Ipv4Addr,
    pub netns: String,
    pub node_if: String,
    pub ep_id: u32,
    pub identity: u32,
    pub ctx: PodContext,
    pub log_file: PathBuf,
    pub created: SystemTime,
    pub process: Option<Supervised>,
    /// Asks the pod's namespace which ports it listens on (readiness); a leaf lock.
    pub probe: Mutex<crate::probe::ListenProbe>,
}

pub struct ServiceRuntime {
    pub spec: ServiceSpec,
    pub cluster_ip: Ipv4Addr,
    pub id: u32,
    /// Ready backends per service port (index into `spec.ports`).
    pub backends: BTreeMap<usize, Vec<(Ipv4Addr, u16)>>,
}

/// One running lab.
///
/// Lock order: where a thread holds several of these locks at once it took them in this
/// order, `policies` → `proxy` → `pods` → `services` → `engine` (applying a policy holds
/// `policies` while it writes the maps; refreshing service backends holds `pods` and
/// `services` while it writes the load balancer). `hosts`, `record`, `web_addr` and the flow
/// recorder's locks are leaves: nothing else is taken while one of them is held. None is held
/// across an await.
pub struct Lab {
    pub paths: Paths,
    pub record: Mutex<Record>,
    pub node_ns: PathBuf,
    node: Netlink,
    pub engine: Mutex<Engine>,
    pub pods: RwLock<BTreeMap<(String, String), PodRuntime>>,
    pub services: RwLock<BTreeMap<(String, String), ServiceRuntime>>,
    /// Hosts outside the cluster (`attacker`, `monitor`): for `lab exec` and `lab ship`.
    pub hosts: RwLock<BTreeMap<String, (PodContext, Ipv4Addr)>>,
    pub topology: Topology,
    /// Flows: the recent ones, the live feed, and their counters.
    pub recorder: Arc<FlowRecorder>,
    pub policies: Mutex<crate::policies::PolicyStore>,
    pub web_addr: Mutex<Option<SocketAddr>>,
    pub started: SystemTime,
    pub shutdown: tokio::sync::watch::Sender<bool>,
    /// The L7 proxy (None while stopped).
    pub proxy: Mutex<Option<enforcer::l7::ProxyHandle>>,
    pub proxy_stats: Arc<ProxyStats>,
}

/// Progress lines for the user.
pub fn step(msg: impl AsRef<str>) {
    println!("  \u{2713} {}", msg.as_ref());
}

/// A start-up line for the pods of one workload (in big clusters).
struct WorkloadLine {
    count: usize,
    first: Ipv4Addr,
    last: Ipv4Addr,
    identity: u32,
    image: String,
}

/// Up to this many pods, start-up lists each one; beyond, each workload.
const PODS_LISTED_ONE_BY_ONE: usize = 40;

/// The variable naming a start-up step to fail at (see [`fail_point`]).
pub const FAIL_AT_VAR: &str = "LAB_FAIL_AT";

/// Makes start-up fail right after the step `name` when `LAB_FAIL_AT` names it: the tests use
/// it to check that a failure at any step undoes exactly what was created.
pub fn fail_point(name: &str) -> Result<()> {
    match std::env::var(FAIL_AT_VAR) {
        Ok(at) if at == name => {
            bail!("injected failure after the start-up step {name:?} ({FAIL_AT_VAR})")
        }
        _ => Ok(()),
    }
}

impl Lab {
    /// Creates the node, loads the datapath and brings up every pod and service. On error, the
    /// processes and the proxy started are stopped, and whatever else was created is in the
    /// record for the caller's cleanup.
    /// With `resume`, the namespaces, veths and pinned maps of a previous run of the same
    /// topology are taken over as they are (enforcement continues throughout).
    pub async fn up(
        paths: Paths,
        topology: Topology,
        record: Record,
        resume: bool,
    ) -> Result<Arc<Self>> {
        let record = Mutex::new(record);
        let note_mount = |p: &std::path::Path| record.lock().expect("record").note_mount(&paths, p);

        // Mounts: a bpffs for the pinned maps and links, and cgroup v2 for the pods' processes.
        note_mount(&paths.bpffs())?;
        sys::mount_bpffs(&paths.bpffs())?;
        note_mount(&paths.cgroup_mount())?;
        sys::mount_cgroup2(&paths.cgroup_mount())?;
        let cg_root = paths.cgroup_root();
        record
            .lock()
            .expect("record")
            .note_cgroup(&paths, &cg_root)?;
        std::fs::create_dir_all(cg_root.join("pods"))
            .with_context(|| format!("creating cgroup {}", cg_root.display()))?;
        step(format!(
            "mounted bpffs and cgroup2 under {}",
            paths.root.display()
        ));
        fail_point("mounts")?;

        // The node.
        let node_name = paths.node_netns();
        record
            .lock()
            .expect("record")
            .note_netns(&paths, &node_name)?;
        let node_ns = if resume {
            sys::netns_path(&node_name)
        } else {
            sys::create_netns(&node_name)?
        };
        for (k, v) in [
            ("net.ipv4.ip_forward", "1"),
            ("net.ipv4.conf.all.rp_filter", "0"),
            ("net.ipv4.conf.default.rp_filter", "0"),
            ("net.ipv6.conf.all.disable_ipv6", "1"),
            ("net.ipv6.conf.default.disable_ipv6", "1"),
        ] {
            sys::sysctl(&node_ns, k, v)?;
        }
        let node = Netlink::open_in(&node_ns)?;
        let node_ip = topology.pod_range.node_ip();
        if !resume {
            node.set_up("lo").await?;
            node.add_addr("lo", node_ip, 32).await?;
            node.add_fwmark_rule(MARK_TO_PROXY, MARK_MASK, PROXY_TABLE, PROXY_RULE_PRIORITY)
                .await?;
            node.add_local_default_route(PROXY_TABLE).await?;
        }
        step(format!(
            "node namespace {node_name} (node address {node_ip}, pod range {}){}",
            topology.pod_range.0,
            if resume {
                ", taken over from the previous run"
            } else {
                ""
            }
        ));
        fail_point("node")?;

        // The enforcer.
        let mut dp = Datapath::load(&paths.bpffs()).context("loading the eBPF datapath")?;
        dp.attach_cgroup(&cg_root.join("pods"))
            .context("attaching the socket load balancer")?;
        let engine = Engine::new(dp, &node_ns, &[node_ip, cluster::NODE_EXT_IP], PROXY_PORT)?;
        step("eBPF datapath loaded (TC policy programs, socket load balancer), maps pinned");
        fail_point("datapath")?;

        let (shutdown, _) = tokio::sync::watch::channel(false);
        let (recorder, l7_rx) = FlowRecorder::new(engine.names(), &paths.instance);
        recorder.spawn_l7_reader(l7_rx);
        let lab = Arc::new(Self {
            paths: paths.clone(),
            record,
            node_ns,
            node,
            engine: Mutex::new(engine),
            pods: RwLock::new(BTreeMap::new()),
            services: RwLock::new(BTreeMap::new()),
            hosts: RwLock::new(BTreeMap::new()),
            topology: topology.clone(),
            recorder,
            policies: Mutex::new(crate::policies::PolicyStore::default()),
            web_addr: Mutex::new(None),
            started: SystemTime::now(),
            shutdown,
            proxy: Mutex::new(None),
            proxy_stats: Arc::new(ProxyStats::new()),
        });
        if let Err(e) = lab.clone().start(resume).await {
            lab.stop_running_parts().await;
            return Err(e);
        }
        Ok(lab)
    }

    /// The part of start-up that starts things running (the flow reader, the proxy, processes):
    /// on error, [`Lab::stop_running_parts`] stops them.
    async fn start(self: Arc<Self>, resume: bool) -> Result<()> {
        let lab = self;
        let events = lab
            .engine
            .lock()
            .expect("engine")
            .datapath()
            .take_events()
            .context("the flow-event ring buffer was taken already")?
            .into_async()
            .context("watching the flow-event ring buffer")?;
        lab.recorder
            .clone()
            .spawn_event_reader(events, lab.shutdown.subscribe());
        lab.start_proxy()?;
        step(format!(
            "L7 proxy listening on port {PROXY_PORT} in the node namespace (transparent)"
        ));
        fail_point("proxy")?;

        lab.create_world(resume)
            .await
            .context("creating the outside world")?;
        fail_point("world")?;
        // Services first: pods get their addresses at start.
        lab.create_services()?;
        if resume {
            let restored = crate::policies::restore(&lab)?;
            step(format!(
                "restored {restored} policies from the previous run"
            ));
        }
        lab.create_pods(resume).await?;
        fail_point("endpoints")?;
        if resume {
            let stale = lab.engine.lock().expect("engine").reconcile()?;
            step(format!(
                "pinned maps reconciled ({stale} stale entries removed); enforcement never stopped"
            ));
        }
        lab.write_dns_records()?;
        fail_point("dns")?;
        lab.refresh_backends();
        // Processes: DNS first, then the rest.
        let mut keys: Vec<_> = lab.pods.read().expect("pods").keys().cloned().collect();
        keys.sort_by_key(|(ns, _)| ns != "kube-system");
        let started = std::time::Instant::now();
        for key in &keys {
            lab.start_process(key)?;
            fail_point(&format!("process {}/{}", key.0, key.1))?;
        }
        step(format!(
            "{} processes started in {:.1}s",
            keys.len(),
            started.elapsed().as_secs_f64()
        ));
        lab.clone().spawn_readiness();
        lab.wait_ready(Duration::from_secs(30)).await;
        Ok(())
    }

    /// Waits until every pod runs and every service has a ready backend (or the time is up:
    /// the lab is still usable, and `lab get pods` shows what is not ready).
    async fn wait_ready(&self, limit: Duration) {
        let start = std::time::Instant::now();
        loop {
            let pods_running = self.pods.read().expect("pods").values().all(|p| {
                p.process
                    .as_ref()
                    .is_some_and(|s| s.status().phase == Phase::Running)
            });
            let services_ready = self.services.read().expect("services").values().all(|s| {
                (0..s.spec.ports.len()).all(|i| s.backends.get(&i).is_some_and(|b| !b.is_empty()))
            });
            if pods_running && services_ready {
                step(format!(
                    "all pods running, all services have endpoints ({:.1}s)",
                    start.elapsed().as_secs_f64()
                ));
                return;
            }
            if start.elapsed() > limit {
                println!(
                    "  ! not everything is ready after {}s; see `lab get pods` and `lab get svc`",
                    limit.as_secs()
                );
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The outside world: `ext0` on the node, the `world` router, the attacker and the monitoring
    /// host, and the prefilter and NodePort programs on `ext0`.
    async fn create_world(&self, resume: bool) -> Result<()> {
        let paths = &self.paths;
        let world = paths.netns_named("world");
        let hosts = [
            (
                "attacker",
                cluster::ATTACKER_IP,
                cluster::ATTACKER_GW,
                24u8,
                "att0",
            ),
            (
                "monitor",
                cluster::MONITOR_IP,
                cluster::MONITOR_GW,
                16u8,
                "mon0",
            ),
        ];
        if !resume {
            for name in ["world", "attacker", "monitor"] {
                let ns = paths.netns_named(name);
                self.record.lock().expect("record").note_netns(paths, &ns)?;
                let path = sys::create_netns(&ns)?;
                for (k, v) in [
                    ("net.ipv6.conf.all.disable_ipv6", "1"),
                    ("net.ipv6.conf.default.disable_ipv6", "1"),
                ] {
                    sys::sysctl(&path, k, v)?;
                }
            }
            let world_path = sys::netns_path(&world);
            sys::sysctl(&world_path, "net.ipv4.ip_forward", "1")?;
            // node ext0 <-> world uplink
            self.node.add_veth("ext0", "uplink", &world_path).await?;
            self.node.add_addr("ext0", cluster::NODE_EXT_IP, 24).await?;
            self.node.set_up("ext0").await?;
            self.node
                .add_default_route(cluster::WORLD_UPLINK_IP, "ext0")
                .await?;
            let wnl = Netlink::open_in(&world_path)?;
            wnl.set_up("lo").await?;
            wnl.add_addr("uplink", cluster::WORLD_UPLINK_IP, 24).await?;
            wnl.set_up("uplink").await?;
            for (name, ip, gw, len, world_if) in hosts {
                let host_path = sys::netns_path(&paths.netns_named(name));
                wnl.add_veth(world_if, "eth0", &host_path).await?;
                wnl.add_addr(world_if, gw, len).await?;
                wnl.set_up(world_if).await?;
                let hnl = Netlink::open_in(&host_path)?;
                hnl.set_up("lo").await?;
                hnl.add_addr("eth0", ip, len).await?;
                hnl.set_up("eth0").await?;
                hnl.add_default_route(gw, "eth0").await?;
            }
        }
        // The programs on ext0 (on a resume, the pinned TC links get the new programs).
        let links = {
            let mut engine = self.engine.lock().expect("engine");
            let dp = engine.datapath();
            netns::run_in(&self.node_ns, || dp.attach_world("ext0"))??
        };
        Datapath::pin_links(links)?;
        let mut map = BTreeMap::new();
        for (name, ip, ..) in hosts {
            let netns = sys::netns_path(&paths.netns_named(name));
            let cgroup = paths.cgroup_root().join("hosts").join(name);
            std::fs::create_dir_all(&cgroup)
                .with_context(|| format!("creating cgroup {}", cgroup.display()))?;
            let resolv_conf = paths
                .pods()
                .join(format!("host_{name}"))
                .join("resolv.conf");
            std::fs::create_dir_all(resolv_conf.parent().expect("dir"))?;
            // Outside the cluster there is no cluster DNS (and no internet DNS here).
            std::fs::write(
                &resolv_conf,
                "# written by the lab: hosts outside the cluster have no DNS; use addresses\n",
            )?;
            let ctx = PodContext {
                namespace: "world".into(),
                pod: name.into(),
                netns,
                cgroup,
                resolv_conf,
                hostname: name.into(),
            };
            map.insert(name.to_owned(), (ctx, ip));
        }
        *self.hosts.write().expect("hosts") = map;
        step(format!(
            "outside world: node address {} on ext0 (XDP prefilter, NodePorts); attacker {}, monitor {}",
            cluster::NODE_EXT_IP,
            cluster::ATTACKER_IP,
            cluster::MONITOR_IP
        ));
        Ok(())
    }

    fn create_services(&self) -> Result<()> {
        let services = &self.topology.services;
        let mut used: Vec<Ipv4Addr> = services.iter().filter_map(|s| s.cluster_ip).collect();
        let mut used_node_ports: Vec<u16> = services
            .iter()
            .flat_map(|s| s.ports.iter().filter_map(|p| p.node_port))
            .collect();
        let mut out = BTreeMap::new();
        for (i, spec) in services.iter().enumerate() {
            let ip = match spec.cluster_ip {
                Some(ip) => ip,
                None => {
                    let ip =
                        allocate_service_ip(&format!("{}/{}", spec.namespace, spec.name), &used);
                    used.push(ip);
                    ip
                }
            };
            let mut spec = spec.clone();
            if spec.service_type == ServiceType::NodePort {
                for port in &mut spec.ports {
                    if port.node_port.is_none() {
                        let key = format!("{}/{}/{}", spec.namespace, spec.name, port.port);
                        port.node_port = Some(allocate_node_port(&key, &used_node_ports));
                    }
                    used_node_ports.extend(port.node_port);
                }
            }
            let ports: Vec<String> = spec
                .ports
                .iter()
                .map(|p| match p.node_port {
                    Some(np) => format!("{}:{np}/{}", p.port, p.protocol.name()),
                    None => format!("{}/{}", p.port, p.protocol.name()),
                })
                .collect();
            step(format!(
                "service {}/{} {ip} ({})",
                spec.namespace,
                spec.name,
                ports.join(", ")
            ));
            fail_point(&format!("service {}/{}", spec.namespace, spec.name))?;
            out.insert(
                (spec.namespace.clone(), spec.name.clone()),
                ServiceRuntime {
                    spec,
                    cluster_ip: ip,
                    id: i as u32 + 1,
                    backends: BTreeMap::new(),
                },
            );
        }
        let node_ports = out
            .values()
            .flat_map(|s| {
                let name = format!("{}/{}", s.spec.namespace, s.spec.name);
                s.spec
                    .ports
                    .iter()
                    .filter_map(move |p| Some((p.node_port?, name.clone())))
            })
            .collect();
        self.recorder.set_node_ports(node_ports);
        *self.services.write().expect("services") = out;
        Ok(())
    }

    /// The pod's network: namespace, veth, address and routes (skipped when resuming: they are
    /// still there), its cgroup and resolv.conf. Returns what the engine needs to know.
    async fn create_pod_network(
        &self,
        spec: &PodSpec,
        ip: Ipv4Addr,
        resume: bool,
    ) -> Result<(PodContext, String, EndpointSpec)> {
        let paths = &self.paths;
        let ns_name = paths.pod_netns(&spec.namespace, &spec.name);
        let node_if = veth_name(&ns_name);
        let pod_ns = sys::netns_path(&ns_name);
        if !resume {
            // Noted in the record by `create_pods`, before any pod namespace was made.
            sys::create_netns(&ns_name)?;
            // Unprivileged ICMP echo sockets for every group, as container runtimes set it
            // (Docker, containerd 2): `ping` in a pod needs no raw socket.
            for (k, v) in [
                ("net.ipv6.conf.all.disable_ipv6", "1"),
                ("net.ipv6.conf.default.disable_ipv6", "1"),
                ("net.ipv4.ping_group_range", "0 2147483647"),
            ] {
                sys::sysctl(&pod_ns, k, v)?;
            }
            self.node.add_veth(&node_if, "eth0", &pod_ns).await?;
            self.node.set_up(&node_if).await?;
            self.node.add_link_route(ip, 32, &node_if).await?;
            let pod_nl = Netlink::open_in(&pod_ns)?;
            pod_nl.set_up("lo").await?;
            pod_nl.add_addr("eth0", ip, 32).await?;
            pod_nl.set_up("eth0").await?;
            let node_ip = self.topology.pod_range.node_ip();
            pod_nl.add_link_route(node_ip, 32, "eth0").await?;
            pod_nl.add_default_route(node_ip, "eth0").await?;
        }
        let key = format!("{}_{}", spec.namespace, spec.name);
        let cgroup = paths.cgroup_root().join("pods").join(&key);
        if resume {
            // The previous run's processes are orphans now: stop them, they restart below.
            sys::kill_cgroup(&cgroup)?;
        }
        std::fs::create_dir_all(&cgroup)
            .with_context(|| format!("creating cgroup {}", cgroup.display()))?;
        let resolv_conf = paths.pods().join(&key).join("resolv.conf");
        write_resolv_conf(&resolv_conf, &spec.namespace, cluster::DNS_SERVICE_IP)?;
        let ns_labels = self
            .topology
            .namespaces
            .get(&spec.namespace)
            .cloned()
            .unwrap_or_default();
        let ctx = PodContext {
            namespace: spec.namespace.clone(),
            pod: spec.name.clone(),
            netns: pod_ns,
            cgroup,
            resolv_conf,
            hostname: spec.name.clone(),
        };
        let endpoint = EndpointSpec {
            namespace: spec.namespace.clone(),
            pod: spec.name.clone(),
            labels: spec.labels.clone(),
            namespace_labels: ns_labels,
            service_account: spec.service_account.clone(),
            ip,
            ifname: node_if.clone(),
            named_ports: spec.named_ports(),
        };
        Ok((ctx, ns_name, endpoint))
    }

    /// Creates every pod's network, then registers all of them with the engine at once.
    async fn create_pods(&self, resume: bool) -> Result<()> {
        let mut prepared = Vec::new();
        let range = self.topology.pod_range;
        if !resume {
            let names: Vec<String> = self
                .topology
                .pods
                .iter()
                .map(|p| self.paths.pod_netns(&p.namespace, &p.name))
                .collect();
            self.record
                .lock()
                .expect("record")
                .note_netns_all(&self.paths, names.iter().map(String::as_str))?;
        }
        let started = std::time::Instant::now();
        for (i, spec) in self.topology.pods.iter().enumerate() {
            // `lab up` sized the range to the pods before creating anything.
            let ip = range.pod_ip(i).with_context(|| {
                format!(
                    "the pod range {} has room for {} pods, not {}",
                    range.0,
                    range.capacity(),
                    self.topology.pods.len()
                )
            })?;
            let (ctx, netns, ep) = self
                .create_pod_network(spec, ip, resume)
                .await
                .with_context(|| format!("creating pod {}/{}", spec.namespace, spec.name))?;
            fail_point(&format!("pod {}/{}", spec.namespace, spec.name))?;
            prepared.push((spec.clone(), ip, ctx, netns, ep));
        }
        let networks = started.elapsed();
        std::fs::create_dir_all(self.paths.logs())?;
        let endpoints = self
            .engine
            .lock()
            .expect("engine")
            .add_endpoints(prepared.iter().map(|p| p.4.clone()).collect())?;
        let attached = started.elapsed() - networks;
        // A line per pod while that stays readable; a line per workload beyond.
        let each = prepared.len() <= PODS_LISTED_ONE_BY_ONE;
        let mut workloads: BTreeMap<(String, String), WorkloadLine> = BTreeMap::new();
        let mut pods = self.pods.write().expect("pods");
        for ((spec, ip, ctx, netns, ep), endpoint) in prepared.into_iter().zip(endpoints) {
            if each {
                step(format!(
                    "pod {}/{} {ip} identity {} ({})",
                    spec.namespace, spec.name, endpoint.identity, spec.container.image
                ));
            } else {
                let name = spec.owner.clone().unwrap_or_else(|| spec.name.clone());
                let w = workloads
                    .entry((spec.namespace.clone(), name))
                    .or_insert_with(|| WorkloadLine {
                        count: 0,
                        first: ip,
                        last: ip,
                        identity: endpoint.identity,
                        image: spec.container.image.clone(),
                    });
                w.count += 1;
                w.last = ip;
            }
            let log_file = self
                .paths
                .logs()
                .join(format!("{}_{}.log", spec.namespace, spec.name));
            let probe = crate::probe::ListenProbe::open_in(&ctx.netns).with_context(|| {
                format!(
                    "opening the readiness probe of pod {}/{}",
                    spec.namespace, spec.name
                )
            })?;
            let rt = PodRuntime {
                probe: Mutex::new(probe),
                ip,
                netns,
                node_if: ep.ifname,
                ep_id: endpoint.ep_id,
                identity: endpoint.identity,
                ctx,
                log_file,
                created: SystemTime::now(),
                process: None,
                spec,
            };
            pods.insert((rt.spec.namespace.clone(), rt.spec.name.clone()), rt);
        }
        for ((namespace, name), w) in workloads {
            step(format!(
                "{} pod(s) of {namespace}/{name} {}{} identity {} ({})",
                w.count,
                w.first,
                if w.count > 1 {
                    format!("–{}", w.last)
                } else {
                    String::new()
                },
                w.identity,
                w.image
            ));
        }
        step(format!(
            "{} pod networks in {:.1}s, attached to the datapath in {:.1}s",
            pods.len(),
            networks.as_secs_f64(),
            attached.as_secs_f64()
        ));
        Ok(())
    }

    fn start_process(self: &Arc<Self>, key: &(String, String)) -> Result<()> {
        let mut pods = self.pods.write().expect("pods");
        let pod = pods.get_mut(key).context("pod vanished")?;
        let lab = Arc::downgrade(self);
        let spec = pod.spec.clone();
        let data = self.paths.data();
        let records = self.paths.dns_records();
        let exe = PathBuf::from(crate::paths::SELF_EXE);
        let builder = Box::new(move || -> Result<(PathBuf, Vec<String>)> {
            let lab = lab.upgrade().context("the lab is shutting down")?;
            let resolve = |ns: &str, svc: &str| lab.service_addr(ns, svc);
            let args = workloads::command_args(&spec, &data, &records, &resolve)?;
            Ok((exe.clone(), args))
        });
        pod.process = Some(Supervised::start(
            pod.ctx.clone(),
            pod.log_file.clone(),
            pod.spec.restart_policy,
            builder,
        ));
        Ok(())
    }

    /// `NAME:PORT` (or `NAME.NS:PORT`) of a service → its cluster IP and port.
    pub fn service_addr(&self, namespace: &str, name_port: &str) -> Option<SocketAddr> {
        let (name, port) = name_port.rsplit_once(':')?;
        let port: u16 = port.parse().ok()?;
        let (name, ns) = match name.split_once('.') {
            Some((n, rest)) => (n, rest.split('.').next().unwrap_or(namespace)),
            None => (name, namespace),
        };
        let services = self.services.read().expect("services");
        let svc = services.get(&(ns.to_owned(), name.to_owned()))?;
        svc.spec
            .ports
            .iter()
            .any(|p| p.port == port)
            .then_some(SocketAddr::from((svc.cluster_ip, port)))
    }

    fn write_dns_records(&self) -> Result<()> {
        let services = self.services.read().expect("services");
        let mut records = Vec::new();
        for svc in services.values() {
            records.push(demo_services::dns::RecordEntry {
                name: format!(
                    "{}.{}.svc.{}",
                    svc.spec.name,
                    svc.spec.namespace,
                    cluster::CLUSTER_DOMAIN
                ),
                ipv4: vec![svc.cluster_ip],
            });
        }
        let file = self.paths.dns_records();
        std::fs::create_dir_all(file.parent().expect("dns dir"))?;
        let tmp = file.with_extension("tmp");
        std::fs::write(
            &tmp,
            serde_json::to_vec_pretty(&demo_services::dns::RecordsFile { records })?,
        )?;
        std::fs::rename(&tmp, &file)?;
        Ok(())
    }

    /// Recomputes each service's ready backends (pods whose process listens on the target port)
    /// and updates the load balancer where they changed.
    pub fn refresh_backends(&self) {
        let pods = self.pods.read().expect("pods");
        let mut services = self.services.write().expect("services");
        for svc in services.values_mut() {
            for (i, port) in svc.spec.ports.iter().enumerate() {
                let mut ready = Vec::new();
                for pod in pods.values().filter(|p| svc.spec.selects(&p.spec)) {
                    let Some(target) = resolve_target_port(&port.target_port, &pod.spec) else {
                        continue;
                    };
                    let Some(pid) = pod.process.as_ref().and_then(|p| p.status().pid) else {
                        continue;
                    };
                    let listening = pod
                        .probe
                        .lock()
                        .expect("probe")
                        .ready(pid, target, port.protocol)
                        .unwrap_or_else(|e| {
                            tracing::warn!("probing pod {}: {e}", pod.spec.name);
                            false
                        });
                    if listening {
                        ready.push((pod.ip, target));
                    }
                }
                ready.sort();
                if svc.backends.get(&i) != Some(&ready) {
                    let mut engine = self.engine.lock().expect("engine");
                    let dp = engine.datapath();
                    let proto = port.protocol.number();
                    let mut res = dp.set_service(svc.cluster_ip, port.port, proto, svc.id, &ready);
                    if let (Ok(()), Some(np)) = (&res, port.node_port) {
                        // NodePorts: the same backends behind the node's external address.
                        res = dp.set_service(cluster::NODE_EXT_IP, np, proto, svc.id, &ready);
                    }
                    if let Err(e) = res {
                        tracing::warn!("updating service {}: {e}", svc.spec.name);
                    }
                    svc.backends.insert(i, ready);
                }
            }
        }
    }

    fn spawn_readiness(self: Arc<Self>) {
        let mut stop = self.shutdown.subscribe();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(250)) => {}
                    _ = stop.changed() => break,
                }
                let lab = self.clone();
                let _ = tokio::task::spawn_blocking(move || lab.refresh_backends()).await;
            }
        });
    }

    /// Starts the L7 proxy (if it is not running).
    pub fn start_proxy(&self) -> Result<()> {
        let mut proxy = self.proxy.lock().expect("proxy");
        if proxy.is_some() {
            return Ok(());
        }
        let names = self.engine.lock().expect("engine").names();
        let observer = self.recorder.observer();
        let handle = tokio::task::block_in_place(|| {
            enforcer::l7::start(
                &self.node_ns,
                PROXY_PORT,
                names,
                observer,
                self.proxy_stats.clone(),
            )
        })
        .context("starting the L7 proxy")?;
        *proxy = Some(handle);
        Ok(())
    }

    /// Stops the L7 proxy. Connections the datapath would steer to it are dropped meanwhile.
    pub fn stop_proxy(&self) {
        if let Some(p) = self.proxy.lock().expect("proxy").take() {
            p.stop();
        }
    }

    /// Stops every process, then removes what the record lists.
    pub async fn teardown(&self) -> crate::state::CleanupReport {
        self.stop_running_parts().await;
        let record = self.record.lock().expect("record").clone();
        crate::state::cleanup(&self.paths, &record)
    }

    /// Stops what runs (background tasks, the proxy, every pod's process); what exists in the
    /// kernel and on disk stays for the record's cleanup.
    pub async fn stop_running_parts(&self) {
        let _ = self.shutdown.send(true);
        self.stop_proxy();
        let procs: Vec<Supervised> = self
            .pods
            .write()
            .expect("pods")
            .values_mut()
            .filter_map(|p| p.process.take())
            .collect();
        let stops = procs.into_iter().map(|p| p.stop(Duration::from_secs(2)));
        futures::future::join_all(stops).await;
    }

    /// How to enter a pod (`NS/NAME` or `NAME`) or an outside host (`world/attacker`, `monitor`).
    pub fn context_of(&self, name: &str) -> Option<PodContext> {
        if let Some(key) = self.pod_key(name) {
            return self
                .pods
                .read()
                .expect("pods")
                .get(&key)
                .map(|p| p.ctx.clone());
        }
        let host = name.strip_prefix("world/").unwrap_or(name);
        self.hosts
            .read()
            .expect("hosts")
            .get(host)
            .map(|(ctx, _)| ctx.clone())
    }

    pub fn pod_key(&self, pod: &str) -> Option<(String, String)> {
        let pods = self.pods.read().expect("pods");
        match pod.split_once('/') {
            Some((ns, name)) => pods
                .contains_key(&(ns.into(), name.into()))
                .then(|| (ns.into(), name.into())),
            None => pods
                .keys()
                .find(|(ns, name)| ns == "default" && name == pod)
                .or_else(|| pods.keys().find(|(_, name)| name == pod))
                .cloned(),
        }
    }
}

/// `lxc` + 12 hex digits of a hash of the namespace name: unique and within 15 bytes.
fn veth_name(netns: &str) -> String {
    format!(
        "lxc{}",
        &cluster::template_hash(netns)
            .bytes()
            .map(|b| format!("{:x}", b % 16))
            .collect::<String>()[..10]
    )
}

fn allocate_service_ip(key: &str, used: &[Ipv4Addr]) -> Ipv4Addr {
    // Deterministic per name (stable across restarts), probing past collisions and the
    // reserved low addresses (10.96.0.1 is the API server's in Kubernetes, .10 is DNS).
    let mut h: u32 = 2166136261;
    for b in key.bytes() {
        h = (h ^ u32::from(b)).wrapping_mul(16777619);
    }
    let size = 1u32 << (32 - cluster::SERVICE_CIDR.1);
    let base = u32::from(cluster::SERVICE_CIDR.0);
    let mut off = (h % (size - 2)) + 1;
    loop {
        let ip = Ipv4Addr::from(base + off);
        if off > 10 && !used.contains(&ip) && ip.octets()[3] != 0 && ip.octets()[3] != 255 {
            return ip;
        }
        off = (off + 1) % (size - 1);
    }
}

fn allocate_node_port(key: &str, used: &[u16]) -> u16 {
    let (lo, hi) = cluster::NODE_PORT_RANGE;
    let mut h: u32 = 2166136261;
    for b in key.bytes() {
        h = (h ^ u32::from(b)).wrapping_mul(16777619);
    }
    let span = u32::from(hi - lo) + 1;
    let mut p = lo + (h % span) as u16;
    while used.contains(&p) {
        p = if p == hi { lo } else { p + 1 };
    }
    p
}

fn resolve_target_port(target: &TargetPort, pod: &PodSpec) -> Option<u16> {
    match target {
        TargetPort::Number(n) => Some(*n),
        TargetPort::Name(name) => pod
            .container
            .ports
            .iter()
            .find(|(n, _, _)| n.as_deref() == Some(name.as_str()))
            .map(|(_, p, _)| *p),
    }
}
