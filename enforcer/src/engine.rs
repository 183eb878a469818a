//! The policy engine of one lab: endpoints and their identities, the rules in force, and the
//! synchronisation of both into the kernel's maps. Every change (a pod added or removed, a
//! policy set applied) is resolved in full and then written as a difference, in an order that
//! never drops traffic that stays allowed: new entries first, then address and endpoint
//! changes, then removals.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
    path::{Path, PathBuf},
    sync::{Arc, RwLock},
};

use enforcer_common::{
    EndpointInfo, IDENTITY_HOST, IDENTITY_WORLD, IpcacheValue, LimitKey, LimitValue, PolicyKey,
    PolicyValue,
};
use serde::Serialize;

use crate::{
    datapath::{Datapath, DatapathError},
    identity::{Identities, LabelSet, pod_labels},
    policy::resolve::{EndpointRef, HttpSpec, NormRule, Resolved, resolve},
    proxy::{CompiledRules, HttpRuleSpec},
};

/// A pod to enforce policy for.
#[derive(Clone, Debug)]
pub struct EndpointSpec {
    pub namespace: String,
    pub pod: String,
    pub labels: BTreeMap<String, String>,
    pub namespace_labels: BTreeMap<String, String>,
    pub ip: Ipv4Addr,
    /// Node side of the pod's veth, in the node namespace.
    pub ifname: String,
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
    /// L7 rules of enforced redirects by exact key.
    pub http: BTreeMap<PolicyKey, Vec<HttpSpec>>,
    /// The same, compiled for the proxy.
    pub l7: BTreeMap<PolicyKey, Arc<CompiledRules>>,
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
    pub limits: Vec<crate::policy::resolve::NormLimit>,
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

pub struct Engine {
    dp: Datapath,
    node_netns: PathBuf,
    node_ips: Vec<Ipv4Addr>,
    identities: Identities,
    endpoints: BTreeMap<u32, Endpoint>,
    next_ep: u32,
    rules: RuleSet,
    resolved: Resolved,
    /// CIDR prefixes currently in the ipcache (with their identity).
    cidr_entries: BTreeMap<(Ipv4Addr, u8), u32>,
    /// Connection limits in force.
    limit_entries: BTreeMap<LimitKey, LimitValue>,
    proxy_port: u16,
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
            node_ips: node_ips.to_vec(),
            identities: Identities::new(),
            endpoints: BTreeMap::new(),
            next_ep: 1,
            rules: RuleSet::default(),
            resolved: Resolved::default(),
            cidr_entries: BTreeMap::new(),
            limit_entries: BTreeMap::new(),
            proxy_port,
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
        self.endpoints.values()
    }

    pub fn identities(&self) -> &Identities {
        &self.identities
    }

    pub fn rule_table(&self) -> &[RuleInfo] {
        &self.rules.table
    }

    pub fn resolved(&self) -> &Resolved {
        &self.resolved
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

            let labels = pod_labels(&spec.namespace, &spec.labels, &spec.namespace_labels);
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
                },
            );
            ids.push(ep_id);
        }
        self.sync()?;
        Ok(ids.iter().map(|id| self.endpoints[id].clone()).collect())
    }

    /// After a restart: removes what the pinned maps still hold that the current state does not
    /// have (entries of pods or rules that no longer exist).
    pub fn reconcile(&mut self) -> Result<usize, DatapathError> {
        let mut removed = 0;
        let stale: Vec<(u32, PolicyKey)> = self
            .dp
            .policy()
            .into_keys()
            .filter(|k| !self.resolved.map.contains_key(k))
            .collect();
        for (prefix, key) in stale {
            self.dp.remove_policy(prefix, key)?;
            removed += 1;
        }
        let ifindexes: BTreeSet<u32> = self.endpoints.values().map(|e| e.ifindex).collect();
        for (ifindex, _) in self.dp.endpoints() {
            if !ifindexes.contains(&ifindex) {
                self.dp.remove_endpoint(ifindex)?;
                removed += 1;
            }
        }
        for key in self.dp.limits().into_keys() {
            if !self.limit_entries.contains_key(&key) {
                self.dp.remove_limit(key)?;
                removed += 1;
            }
        }
        removed += self.remove_conn_counts_of_gone_pods();
        let mut wanted: BTreeSet<(Ipv4Addr, u8)> =
            self.endpoints.values().map(|e| (e.ip, 32)).collect();
        wanted.extend(self.node_ips.iter().map(|ip| (*ip, 32)));
        wanted.insert((Ipv4Addr::UNSPECIFIED, 0));
        wanted.extend(self.cidr_entries.keys().copied());
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
        let Some(ep) = self.endpoints.remove(&ep_id) else {
            return Ok(());
        };
        self.dp.remove_ipcache(ep.ip, 32)?;
        self.dp.remove_endpoint(ep.ifindex)?;
        self.dp.detach_pod(&ep.ifname);
        let ip = u32::from(ep.ip).to_be();
        self.dp.flush_conntrack(|k| k.saddr == ip || k.daddr == ip);
        self.identities.release_pod(ep.identity);
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
            .filter(|k| !self.endpoints.contains_key(&k.ep_id))
            .collect();
        for k in &gone {
            self.dp.remove_conn_count(*k);
        }
        gone.len()
    }

    /// Replaces the rules in force. The caller has validated them; this only resolves and
    /// writes.
    pub fn set_rules(&mut self, rules: RuleSet) -> Result<(), DatapathError> {
        self.rules = rules;
        self.sync()
    }

    /// Re-resolves everything and writes the difference to the kernel.
    pub fn sync(&mut self) -> Result<(), DatapathError> {
        // Identities for the CIDRs named by the rules, and their addresses (pods and the node
        // keep their own /32 entries: CIDR rules never select them).
        self.identities.set_cidrs(&self.rules.cidrs);
        let taken: BTreeSet<Ipv4Addr> = self
            .endpoints
            .values()
            .map(|e| e.ip)
            .chain(self.node_ips.iter().copied())
            .collect();
        let mut cidr_entries = BTreeMap::new();
        for (prefix, len) in &self.rules.cidrs {
            if *len == 0 || (*len == 32 && taken.contains(prefix)) {
                continue;
            }
            if let Some(id) = self.identities.cidr_identity(*prefix, *len) {
                cidr_entries.insert((*prefix, *len), id);
            }
        }

        let eps: Vec<EndpointRef> = self
            .endpoints
            .values()
            .map(|e| EndpointRef {
                ep_id: e.ep_id,
                labels: e.labels.clone(),
            })
            .collect();
        let idents: Vec<_> = self.identities.all().collect();
        let new = resolve(&self.rules.rules, &eps, &idents, self.proxy_port);
        let limits = crate::policy::resolve::resolve_limits(&self.rules.limits, &eps, &idents);

        // 1. New and changed policy entries.
        for (k, v) in &new.map {
            if self.resolved.map.get(k) != Some(v) {
                self.dp.set_policy(k.0, k.1, *v)?;
            }
        }
        // 2. Addresses of CIDR identities.
        for (&(p, l), &id) in &cidr_entries {
            if self.cidr_entries.get(&(p, l)) != Some(&id) {
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
        for ep in self.endpoints.values_mut() {
            let flags = new.flags.get(&ep.ep_id).copied().unwrap_or(0);
            ep.flags = flags;
            self.dp.set_endpoint(
                ep.ifindex,
                EndpointInfo {
                    ep_id: ep.ep_id,
                    identity: ep.identity,
                    ipv4: u32::from(ep.ip).to_be(),
                    flags,
                },
            )?;
            self.dp.set_ipcache(
                ep.ip,
                32,
                IpcacheValue {
                    identity: ep.identity,
                    ep_id: ep.ep_id,
                    ep_flags: flags,
                },
            )?;
        }
        // Connection limits (counts stay: established connections keep being counted).
        for (k, v) in &limits {
            if self.limit_entries.get(k) != Some(v) {
                self.dp.set_limit(*k, *v)?;
            }
        }
        // 4. Removals.
        for k in self.limit_entries.keys() {
            if !limits.contains_key(k) {
                self.dp.remove_limit(*k)?;
            }
        }
        self.limit_entries = limits;
        for k in self.resolved.map.keys() {
            if !new.map.contains_key(k) {
                self.dp.remove_policy(k.0, k.1)?;
            }
        }
        for &(p, l) in self.cidr_entries.keys() {
            if !cidr_entries.contains_key(&(p, l)) {
                self.dp.remove_ipcache(p, l)?;
            }
        }
        self.cidr_entries = cidr_entries;
        self.resolved = new;
        self.publish();
        Ok(())
    }

    fn publish(&self) {
        let l7 = self
            .resolved
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
            endpoints_by_id: self.endpoints.clone(),
            endpoints_by_ip: self.endpoints.values().map(|e| (e.ip, e.ep_id)).collect(),
            identities: self
                .identities
                .all()
                .map(|i| (i.id, i.label_strings()))
                .collect(),
            rules: self.rules.table.clone(),
            enforcers: self.resolved.enforcers.clone(),
            http: self.resolved.http.clone(),
            l7,
            cidrs: self.cidr_entries.iter().map(|(k, v)| (*k, *v)).collect(),
            node_ips: self.node_ips.clone(),
        };
        *self.names.write().expect("names lock") = Arc::new(names);
    }

    /// The number of entries in the policy map (for `lab get` and the benchmark).
    pub fn policy_entries(&self) -> usize {
        self.resolved.map.len()
    }

    pub fn policy_value(&self, prefix: u32, key: &PolicyKey) -> Option<PolicyValue> {
        self.resolved.map.get(&(prefix, *key)).copied()
    }
}
