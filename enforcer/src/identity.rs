//! Security identities: a number for each distinct set of labels, as Cilium allocates them.
//! Pods with the same labels share an identity; reserved identities stand for the node
//! (`host`), everything outside the cluster (`world`) and Cilium's other special peers; CIDR
//! prefixes named in policies get local identities of their own.

use std::{collections::BTreeMap, net::Ipv4Addr};

use enforcer_common::*;

/// Labels with their source prefix, e.g. `k8s:org` → `empire`, `reserved:host` → ``.
pub type LabelSet = BTreeMap<String, String>;

/// An identity and what kind it is: the same type the control API shows.
pub use model::{Identity, IdentityKind};

/// The reserved identities, with Cilium's numbers and labels.
pub const RESERVED: &[(u32, &str)] = &[
    (IDENTITY_HOST, "host"),
    (IDENTITY_WORLD, "world"),
    (IDENTITY_UNMANAGED, "unmanaged"),
    (IDENTITY_HEALTH, "health"),
    (IDENTITY_INIT, "init"),
    (IDENTITY_REMOTE_NODE, "remote-node"),
    (IDENTITY_KUBE_APISERVER, "kube-apiserver"),
    (IDENTITY_INGRESS, "ingress"),
];

#[derive(Debug)]
pub struct Identities {
    by_id: BTreeMap<u32, Identity>,
    by_labels: BTreeMap<LabelSet, u32>,
    /// Reference counts of pod identities (identities of pods that are gone are released).
    users: BTreeMap<u32, usize>,
    next_pod: u32,
}

impl Default for Identities {
    fn default() -> Self {
        Self::new()
    }
}

impl Identities {
    pub fn new() -> Self {
        let mut s = Self {
            by_id: BTreeMap::new(),
            by_labels: BTreeMap::new(),
            users: BTreeMap::new(),
            next_pod: IDENTITY_FIRST_POD,
        };
        for (id, name) in RESERVED {
            let labels: LabelSet = [(format!("reserved:{name}"), String::new())].into();
            s.by_labels.insert(labels.clone(), *id);
            s.by_id.insert(
                *id,
                Identity {
                    id: *id,
                    labels,
                    kind: IdentityKind::Reserved,
                },
            );
        }
        s
    }

    /// The identity of a pod with these labels (already prefixed), allocated on first use.
    pub fn acquire_pod(&mut self, labels: LabelSet) -> u32 {
        let id = match self.by_labels.get(&labels) {
            Some(id) => *id,
            None => {
                let id = self.next_pod;
                self.next_pod += 1;
                self.by_labels.insert(labels.clone(), id);
                self.by_id.insert(
                    id,
                    Identity {
                        id,
                        labels,
                        kind: IdentityKind::Pod,
                    },
                );
                id
            }
        };
        *self.users.entry(id).or_default() += 1;
        id
    }

    pub fn release_pod(&mut self, id: u32) {
        if let Some(n) = self.users.get_mut(&id) {
            *n -= 1;
            if *n == 0 {
                self.users.remove(&id);
                if let Some(ident) = self.by_id.remove(&id) {
                    self.by_labels.remove(&ident.labels);
                }
            }
        }
    }

    /// Replaces the CIDR identities with exactly those for `prefixes` (keeping the numbers of
    /// prefixes that stay). A CIDR identity carries `cidr:` labels for its prefix and every
    /// shorter prefix containing it, plus `reserved:world`, as in Cilium.
    pub fn set_cidrs(&mut self, prefixes: &[(Ipv4Addr, u8)]) {
        let wanted: BTreeMap<(Ipv4Addr, u8), ()> = prefixes.iter().map(|p| (*p, ())).collect();
        let stale: Vec<u32> = self
            .by_id
            .values()
            .filter_map(|i| match i.kind {
                IdentityKind::Cidr { prefix, len } if !wanted.contains_key(&(prefix, len)) => {
                    Some(i.id)
                }
                _ => None,
            })
            .collect();
        for id in stale {
            if let Some(i) = self.by_id.remove(&id) {
                self.by_labels.remove(&i.labels);
            }
        }
        for (prefix, len) in wanted.keys() {
            if self.cidr_identity(*prefix, *len).is_some() {
                continue;
            }
            let id = (IDENTITY_FIRST_CIDR..)
                .find(|id| !self.by_id.contains_key(id))
                .expect("identity space");
            let mut labels = LabelSet::new();
            labels.insert("reserved:world".into(), String::new());
            for l in 0..=*len {
                let net = mask(*prefix, l);
                labels.insert(format!("cidr:{net}/{l}"), String::new());
            }
            self.by_labels.insert(labels.clone(), id);
            self.by_id.insert(
                id,
                Identity {
                    id,
                    labels,
                    kind: IdentityKind::Cidr {
                        prefix: *prefix,
                        len: *len,
                    },
                },
            );
        }
    }

    pub fn cidr_identity(&self, prefix: Ipv4Addr, len: u8) -> Option<u32> {
        self.by_id.values().find_map(|i| match i.kind {
            IdentityKind::Cidr { prefix: p, len: l } if p == prefix && l == len => Some(i.id),
            _ => None,
        })
    }

    pub fn get(&self, id: u32) -> Option<&Identity> {
        self.by_id.get(&id)
    }

    pub fn all(&self) -> impl Iterator<Item = &Identity> {
        self.by_id.values()
    }
}

/// The network address of `ip`'s /`len` prefix: `mask(10.1.2.3, 8)` is `10.0.0.0`.
pub fn mask(ip: Ipv4Addr, len: u8) -> Ipv4Addr {
    ipnet::Ipv4Net::new_assert(ip, len).network()
}

/// The labels Cilium derives for a pod: its own labels and its namespace's, with the `k8s:`
/// source, plus the namespace, its service account and the cluster.
pub fn pod_labels(
    namespace: &str,
    labels: &BTreeMap<String, String>,
    namespace_labels: &BTreeMap<String, String>,
    service_account: &str,
) -> LabelSet {
    let mut out = LabelSet::new();
    for (k, v) in labels {
        out.insert(format!("k8s:{k}"), v.clone());
    }
    out.insert("k8s:io.kubernetes.pod.namespace".into(), namespace.into());
    out.insert(
        "k8s:io.cilium.k8s.policy.serviceaccount".into(),
        service_account.into(),
    );
    out.insert("k8s:io.cilium.k8s.policy.cluster".into(), "default".into());
    let mut ns_labels = namespace_labels.clone();
    ns_labels.insert("kubernetes.io/metadata.name".into(), namespace.into());
    for (k, v) in ns_labels {
        out.insert(format!("k8s:io.cilium.k8s.namespace.labels.{k}"), v);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pods_with_equal_labels_share_an_identity() {
        let mut ids = Identities::new();
        let l = pod_labels(
            "default",
            &[("org".into(), "empire".into())].into(),
            &BTreeMap::new(),
            "default",
        );
        let a = ids.acquire_pod(l.clone());
        let b = ids.acquire_pod(l.clone());
        assert_eq!(a, b);
        assert!(a >= IDENTITY_FIRST_POD);
        ids.release_pod(a);
        assert!(ids.get(a).is_some(), "still used by one pod");
        ids.release_pod(a);
        assert!(ids.get(a).is_none());
        assert_eq!(
            ids.get(IDENTITY_HOST).unwrap().label_strings(),
            vec!["reserved:host"]
        );
    }

    #[test]
    fn cidr_identities_carry_their_supernets() {
        let mut ids = Identities::new();
        ids.set_cidrs(&[(Ipv4Addr::new(10, 0, 0, 0), 8)]);
        let id = ids.cidr_identity(Ipv4Addr::new(10, 0, 0, 0), 8).unwrap();
        let i = ids.get(id).unwrap();
        assert!(i.labels.contains_key("cidr:10.0.0.0/8"));
        assert!(i.labels.contains_key("cidr:0.0.0.0/0"));
        assert!(i.labels.contains_key("reserved:world"));
        ids.set_cidrs(&[]);
        assert!(ids.get(id).is_none());
    }
}
