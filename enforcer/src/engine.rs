//! The policy engine of one lab: endpoints and their identities, the rules in force, and the
//! synchronisation of both into the kernel's maps. Every change (a pod added or removed, a
//! policy set applied) is resolved in full and then written as a difference, in an order that
//! never drops traffic that stays allowed: new entries first, then address and endpoint
//! changes, then removals.
//!
//! Two halves: [`DesiredState`] computes what the maps must hold ([`MapState`]) from pods and
//! rules, without the kernel (the map fixtures in `tests/maps.rs` run it as it is); [`Engine`]
//! owns one, attaches pods, and writes the differences through [`Datapath`].

use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
    path::{Path, PathBuf},
    sync::{Arc, RwLock},
};

use enforcer_common::{IDENTITY_HOST, IDENTITY_WORLD, IpcacheValue, LimitKey, LimitValue};
use serde::Serialize;

use crate::{
    datapath::{Datapath, DatapathError, EndpointEntry},
    identity::{Identities, LabelSet, pod_labels},
    policy::resolve::{
        EndpointRef, HttpSpec, MapKey, MapValue, NamedPort, NormLimit, NormRule, Resolved, resolve,
        resolve_limits,
    },
    proxy::{CompiledRules, HttpRuleSpec},
};

/// A pod to enforce policy for.
#[derive(Clone, Debug)]
pub struct EndpointSpec {
    pub namespace: String,
    pub pod: String,
    pub labels: BTreeMap<String, String>,
    pub namespace_labels: BTreeMap<String, String>,
    /// `spec.serviceAccountName` (`default` when not written).
    pub service_account: String,
    pub ip: Ipv4Addr,
    /// Node side of the pod's veth, in the node namespace.
    pub ifname: String,
    /// The container ports the pod declares with a name, for named ports in policies.
    pub named_ports: Vec<NamedPort>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Endpoint {
    pub ep_id: u32,
    pub namespace: String,
    pub pod: String,
    pub ip: Ipv4Addr,
    pub ifname: String,
    pub ifindex: u32,
    pub identity: u32,
    pub labels: LabelSet,
    /// `EP_*` flags in force.
    pub flags: u32,
    pub named_ports: Vec<NamedPort>,
}

/// Where a rule came from, for flows ("allowed by"), `lab policy get` and error messages.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct RuleInfo {
    pub policy: String,
    /// None for clusterwide policies.
    pub namespace: Option<String>,
    pub kind: String,
    /// `ingress`, `egress`, `ingressDeny`, `egressDeny`.
    pub section: String,
    /// Index of the spec (for `specs:` lists) and of the rule in its section.
    pub spec_index: usize,
    pub rule_index: usize,
    /// `file:line` of the rule.
    pub source: String,
    pub audit: bool,
}

/// A consistent view for naming things in flows, replaced on every change.
#[derive(Debug, Default)]
pub struct Names {
    pub endpoints_by_id: BTreeMap<u32, Endpoint>,
    pub endpoints_by_ip: BTreeMap<Ipv4Addr, u32>,
    pub identities: BTreeMap<u32, Vec<String>>,
    pub rules: Vec<RuleInfo>,
    /// (endpoint, direction) → rules that put it in default deny.
    pub enforcers: BTreeMap<(u32, u8), Vec<u32>>,
    /// L7 rules of enforced redirects by the key of their entry (a port or a block of ports).
    pub http: BTreeMap<MapKey, Vec<HttpSpec>>,
    /// The same, compiled for the proxy.
    pub l7: BTreeMap<MapKey, Arc<CompiledRules>>,
    /// Entries without a redirect under one with a redirect (see [`Resolved::l7_shadowed`]).
    pub l7_shadowed: BTreeSet<MapKey>,
    /// CIDR prefixes with their identities, for naming addresses outside the cluster.
    pub cidrs: Vec<((Ipv4Addr, u8), u32)>,
    /// The node's own addresses (identity `host`).
    pub node_ips: Vec<Ipv4Addr>,
}

impl Names {
    pub fn endpoint_by_ip(&self, ip: Ipv4Addr) -> Option<u32> {
        self.endpoints_by_ip.get(&ip).copied()
    }

    /// The identity of an address, as the datapath's ipcache resolves it.
    pub fn identity_of(&self, ip: Ipv4Addr) -> u32 {
        if let Some(ep) = self
            .endpoints_by_ip
            .get(&ip)
            .and_then(|id| self.endpoints_by_id.get(id))
        {
            return ep.identity;
        }
        if self.node_ips.contains(&ip) {
            return IDENTITY_HOST;
        }
        self.cidrs
            .iter()
            .filter(|((p, l), _)| crate::identity::mask(ip, *l) == *p)
            .max_by_key(|((_, l), _)| *l)
            .map(|(_, id)| *id)
            .unwrap_or(IDENTITY_WORLD)
    }
}

pub type SharedNames = Arc<RwLock<Arc<Names>>>;

/// The desired rule set: normalised rules, their table (index = rule ref; entry 0 unused) and
/// the CIDR prefixes they name.
pub struct RuleSet {
    pub rules: Vec<NormRule>,
    pub table: Vec<RuleInfo>,
    pub cidrs: Vec<(Ipv4Addr, u8)>,
    pub limits: Vec<NormLimit>,
}

impl Default for RuleSet {
    fn default() -> Self {
        Self {
            rules: Vec::new(),
            table: vec![placeholder_rule()],
            cidrs: Vec::new(),
            limits: Vec::new(),
        }
    }
}

fn placeholder_rule() -> RuleInfo {
    RuleInfo {
        policy: String::new(),
        namespace: None,
        kind: String::new(),
        section: String::new(),
        spec_index: 0,
        rule_index: 0,
        source: String::new(),
        audit: false,
    }
}

/// What the kernel's maps hold besides the endpoints themselves, as resolution computes it.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct MapState {
    /// `POLICY`, with the endpoints' default-deny flags, the L7 rules of redirects and the rules
    /// that switch default deny on.
    pub policy: Resolved,
    /// `IPCACHE` entries of the CIDR prefixes the rules name: prefix → identity.
    pub cidrs: BTreeMap<(Ipv4Addr, u8), u32>,
    /// `CONN_LIMITS`.
    pub limits: BTreeMap<LimitKey, LimitValue>,
}

/// The pods, their identities and the rules in force, and the map state they call for. Pure:
/// no kernel, no root. Identities and endpoint ids are allocated in the order pods are added,
/// so the same pods in the same order get the same numbers.
pub struct DesiredState {
    node_ips: Vec<Ipv4Addr>,
    proxy_port: u16,
    identities: Identities,
    endpoints: BTreeMap<u32, Endpoint>,
    next_ep: u32,
    rules: RuleSet,
}

impl DesiredState {
    /// The node's own addresses are the `host` identity; redirects name `proxy_port`.
    pub fn new(node_ips: &[Ipv4Addr], proxy_port: u16) -> Self {
        Self {
            node_ips: node_ips.to_vec(),
            proxy_port,
            identities: Identities::new(),
            endpoints: BTreeMap::new(),
            next_ep: 1,
            rules: RuleSet::default(),
        }
    }

    /// Registers a pod whose veth has `ifindex`: its identity (shared by pods with the same
    /// labels) and the next endpoint id. Call [`DesiredState::compute`] afterwards.
    pub fn add_endpoint(&mut self, spec: EndpointSpec, ifindex: u32) -> u32 {
        let labels = pod_labels(
            &spec.namespace,
            &spec.labels,
            &spec.namespace_labels,
            &spec.service_account,
        );
        let identity = self.identities.acquire_pod(labels.clone());
        let ep_id = self.next_ep;
        self.next_ep += 1;
        self.endpoints.insert(
            ep_id,
            Endpoint {
                ep_id,
                namespace: spec.namespace,
                pod: spec.pod,
                ip: spec.ip,
                ifname: spec.ifname,
                ifindex,
                identity,
                labels,
                flags: 0,
                named_ports: spec.named_ports,
            },
        );
        ep_id
    }

    /// Forgets a pod and its reference to its identity.
    pub fn remove_endpoint(&mut self, ep_id: u32) -> Option<Endpoint> {
        let ep = self.endpoints.remove(&ep_id)?;
        self.identities.release_pod(ep.identity);
        Some(ep)
    }

    pub fn set_rules(&mut self, rules: RuleSet) {
        self.rules = rules;
    }

    pub fn endpoint(&self, ep_id: u32) -> Option<&Endpoint> {
        self.endpoints.get(&ep_id)
    }

    pub fn endpoints(&self) -> impl Iterator<Item = &Endpoint> {
        self.endpoints.values()
    }

    pub fn identities(&self) -> &Identities {
        &self.identities
    }

    pub fn rule_table(&self) -> &[RuleInfo] {
        &self.rules.table
    }

    pub fn node_ips(&self) -> &[Ipv4Addr] {
        &self.node_ips
    }

    /// Resolves the rules for the current pods: gives the CIDR prefixes the rules name their
    /// identities, sets each endpoint's default-deny flags, and returns the map state.
    pub fn compute(&mut self) -> MapState {
        // Identities for the CIDRs named by the rules, and their addresses (pods and the node
        // keep their own /32 entries: CIDR rules never select them).
        self.identities.set_cidrs(&self.rules.cidrs);
        let taken: BTreeSet<Ipv4Addr> = self
            .endpoints
            .values()
            .map(|e| e.ip)
            .chain(self.node_ips.iter().copied())
            .collect();
        let mut cidrs = BTreeMap::new();
        for (prefix, len) in &self.rules.cidrs {
            if *len == 0 || (*len == 32 && taken.contains(prefix)) {
                continue;
            }
            if let Some(id) = self.identities.cidr_identity(*prefix, *len) {
                cidrs.insert((*prefix, *len), id);
            }
        }

        let eps: Vec<EndpointRef> = self
            .endpoints
            .values()
            .map(|e| EndpointRef {
                ep_id: e.ep_id,
                labels: e.labels.clone(),
                named_ports: Arc::new(e.named_ports.clone()),
            })
            .collect();
        let idents: Vec<_> = self.identities.all().collect();
        let policy = resolve(&self.rules.rules, &eps, &idents, self.proxy_port);
        let limits = resolve_limits(&self.rules.limits, &eps, &idents);
        for ep in self.endpoints.values_mut() {
            ep.flags = policy.flags.get(&ep.ep_id).copied().unwrap_or(0);
        }
        MapState {
            policy,
            cidrs,
            limits,
        }
    }
}

pub struct Engine {
    dp: Datapath,
    node_netns: PathBuf,
    state: DesiredState,
    /// What the maps hold: the map state last written in full.
    written: MapState,
    names: SharedNames,
}

impl Engine {
    /// Takes over a loaded datapath. The node's own addresses are the `host` identity; every
    /// address without an entry is `world`.
    pub fn new(
        mut dp: Datapath,
        node_netns: &Path,
        node_ips: &[Ipv4Addr],
        proxy_port: u16,
    ) -> Result<Self, DatapathError> {
        for ip in node_ips {
            let host = IpcacheValue {
                identity: IDENTITY_HOST,
                ep_id: 0,
                ep_flags: 0,
            };
            dp.set_ipcache(*ip, 32, host)?;
        }
        dp.set_ipcache(
            Ipv4Addr::UNSPECIFIED,
            0,
            IpcacheValue {
                identity: IDENTITY_WORLD,
                ep_id: 0,
                ep_flags: 0,
            },
        )?;
        let engine = Self {
            dp,
            node_netns: node_netns.to_owned(),
            state: DesiredState::new(node_ips, proxy_port),
            written: MapState::default(),
            names: Arc::new(RwLock::new(Arc::new(Names::default()))),
        };
        engine.publish();
        Ok(engine)
    }

    pub fn names(&self) -> SharedNames {
        self.names.clone()
    }

    pub fn datapath(&mut self) -> &mut Datapath {
        &mut self.dp
    }

    pub fn datapath_ref(&self) -> &Datapath {
        &self.dp
    }

    pub fn endpoints(&self) -> impl Iterator<Item = &Endpoint> {
        self.state.endpoints()
    }

    pub fn identities(&self) -> &Identities {
        self.state.identities()
    }

    pub fn rule_table(&self) -> &[RuleInfo] {
        self.state.rule_table()
    }

    pub fn resolved(&self) -> &Resolved {
        &self.written.policy
    }

    /// Attaches the datapath to the pod's veth, gives it an identity and its policy.
    pub fn add_endpoint(&mut self, spec: EndpointSpec) -> Result<Endpoint, DatapathError> {
        let mut added = self.add_endpoints(vec![spec])?;
        Ok(added.remove(0))
    }

    /// Adds several pods and resolves once. Identities and endpoint ids are allocated in the
    /// order given, so the same pods in the same order get the same numbers (a restarted lab
    /// reproduces the map contents it finds pinned, without a gap).
    pub fn add_endpoints(
        &mut self,
        specs: Vec<EndpointSpec>,
    ) -> Result<Vec<Endpoint>, DatapathError> {
        let mut ids = Vec::new();
        for spec in specs {
            let ifname = spec.ifname.clone();
            let dp = &mut self.dp;
            let (links, ifindex) = netns::run_in(&self.node_netns, || {
                let links = dp.attach_pod(&ifname)?;
                let ifindex = nix::net::if_::if_nametoindex(ifname.as_str()).map_err(|e| {
                    DatapathError::Attach {
                        iface: ifname.clone(),
                        detail: format!("no such interface in the node namespace: {e}"),
                    }
                })?;
                Ok::<_, DatapathError>((links, ifindex))
            })
            .map_err(|e| DatapathError::Attach {
                iface: spec.ifname.clone(),
                detail: e.to_string(),
            })??;
            Datapath::pin_links(links)?;
            ids.push(self.state.add_endpoint(spec, ifindex));
        }
        self.sync()?;
        Ok(ids
            .iter()
            .filter_map(|id| self.state.endpoint(*id).cloned())
            .collect())
    }

    /// After a restart: removes what the pinned maps still hold that the current state does not
    /// have (entries of pods or rules that no longer exist).
    pub fn reconcile(&mut self) -> Result<usize, DatapathError> {
        let written = &self.written;
        let mut removed = self
            .dp
            .retain_policy(|k| written.policy.map.contains_key(k))?;
        let ifindexes: BTreeSet<u32> = self.state.endpoints().map(|e| e.ifindex).collect();
        for (ifindex, _) in self.dp.endpoints() {
            if !ifindexes.contains(&ifindex) {
                self.dp.remove_endpoint(ifindex)?;
                removed += 1;
            }
        }
        for key in self.dp.limits().into_keys() {
            if !self.written.limits.contains_key(&key) {
                self.dp.remove_limit(key)?;
                removed += 1;
            }
        }
        removed += self.remove_conn_counts_of_gone_pods();
        let mut wanted: BTreeSet<(Ipv4Addr, u8)> =
            self.state.endpoints().map(|e| (e.ip, 32)).collect();
        wanted.extend(self.state.node_ips().iter().map(|ip| (*ip, 32)));
        wanted.insert((Ipv4Addr::UNSPECIFIED, 0));
        wanted.extend(self.written.cidrs.keys().copied());
        for (addr, len, _) in self.dp.ipcache() {
            if !wanted.contains(&(addr, len)) {
                self.dp.remove_ipcache(addr, len)?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Forgets a pod: its maps entries, tracking entries and identity reference.
    pub fn remove_endpoint(&mut self, ep_id: u32) -> Result<(), DatapathError> {
        let Some(ep) = self.state.remove_endpoint(ep_id) else {
            return Ok(());
        };
        self.dp.remove_ipcache(ep.ip, 32)?;
        self.dp.remove_endpoint(ep.ifindex)?;
        self.dp.detach_pod(&ep.ifname);
        self.dp.flush_conntrack(ep.ip);
        self.remove_conn_counts_of_gone_pods();
        self.sync()
    }

    /// Connection counts stay while their pod exists, also without a limit: every counted
    /// socket still gives its slot back when it closes, so a limit applied again (or the same
    /// limit after a restart) starts from the exact count.
    fn remove_conn_counts_of_gone_pods(&mut self) -> usize {
        let gone: Vec<LimitKey> = self
            .dp
            .conn_counts()
            .into_keys()
            .filter(|k| self.state.endpoint(k.ep_id).is_none())
            .collect();
        for k in &gone {
            self.dp.remove_conn_count(*k);
        }
        gone.len()
    }

    /// Replaces the rules in force. The caller has validated them; this only resolves and
    /// writes.
    pub fn set_rules(&mut self, rules: RuleSet) -> Result<(), DatapathError> {
        self.state.set_rules(rules);
        self.sync()
    }

    /// Re-resolves everything and writes the difference to the kernel.
    pub fn sync(&mut self) -> Result<(), DatapathError> {
        let new = self.state.compute();
        let old = &self.written;

        // 1. New and changed policy entries.
        for (k, v) in &new.policy.map {
            if old.policy.map.get(k) != Some(v) {
                self.dp.set_policy(k, v)?;
            }
        }
        // 2. Addresses of CIDR identities.
        for (&(p, l), &id) in &new.cidrs {
            if old.cidrs.get(&(p, l)) != Some(&id) {
                self.dp.set_ipcache(
                    p,
                    l,
                    IpcacheValue {
                        identity: id,
                        ep_id: 0,
                        ep_flags: 0,
                    },
                )?;
            }
        }
        // 3. Endpoints, with their default-deny flags.
        for ep in self.state.endpoints() {
            let entry = EndpointEntry {
                ep_id: ep.ep_id,
                identity: ep.identity,
                ip: ep.ip,
                flags: ep.flags,
            };
            self.dp.set_endpoint(ep.ifindex, &entry)?;
            self.dp.set_ipcache(
                ep.ip,
                32,
                IpcacheValue {
                    identity: ep.identity,
                    ep_id: ep.ep_id,
                    ep_flags: ep.flags,
                },
            )?;
        }
        // Connection limits (counts stay: established connections keep being counted).
        for (k, v) in &new.limits {
            if old.limits.get(k) != Some(v) {
                self.dp.set_limit(*k, *v)?;
            }
        }
        // 4. Removals.
        for k in old.limits.keys() {
            if !new.limits.contains_key(k) {
                self.dp.remove_limit(*k)?;
            }
        }
        for k in old.policy.map.keys() {
            if !new.policy.map.contains_key(k) {
                self.dp.remove_policy(k)?;
            }
        }
        for &(p, l) in old.cidrs.keys() {
            if !new.cidrs.contains_key(&(p, l)) {
                self.dp.remove_ipcache(p, l)?;
            }
        }
        self.written = new;
        self.publish();
        Ok(())
    }

    fn publish(&self) {
        let l7 = self
            .written
            .policy
            .http
            .iter()
            .filter_map(|(key, specs)| {
                let rules: Vec<(HttpRuleSpec, u32)> = specs
                    .iter()
                    .map(|h| {
                        let spec = HttpRuleSpec {
                            method: h.method.clone(),
                            path: h.path.clone(),
                            host: h.host.clone(),
                            headers: h.headers.clone(),
                        };
                        (spec, h.rule_ref)
                    })
                    .collect();
                match CompiledRules::compile(&rules) {
                    Ok(c) => Some((*key, Arc::new(c))),
                    Err(e) => {
                        // Validation compiled the same expressions; this is a bug if it happens.
                        tracing::error!("compiling HTTP rules: {e}");
                        None
                    }
                }
            })
            .collect();
        let names = Names {
            endpoints_by_id: self
                .state
                .endpoints()
                .map(|e| (e.ep_id, e.clone()))
                .collect(),
            endpoints_by_ip: self.state.endpoints().map(|e| (e.ip, e.ep_id)).collect(),
            identities: self
                .state
                .identities()
                .all()
                .map(|i| (i.id, i.label_strings()))
                .collect(),
            rules: self.state.rule_table().to_vec(),
            enforcers: self.written.policy.enforcers.clone(),
            http: self.written.policy.http.clone(),
            l7,
            l7_shadowed: self.written.policy.l7_shadowed.clone(),
            cidrs: self.written.cidrs.iter().map(|(k, v)| (*k, *v)).collect(),
            node_ips: self.state.node_ips().to_vec(),
        };
        *self.names.write().expect("names lock") = Arc::new(names);
    }

    /// The number of entries in the policy map (for `lab get` and the benchmark).
    pub fn policy_entries(&self) -> usize {
        self.written.policy.map.len()
    }

    pub fn policy_value(&self, key: &MapKey) -> Option<MapValue> {
        self.written.policy.map.get(key).copied()
    }
}
