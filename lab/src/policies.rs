//! The policy set of a running lab — CiliumNetworkPolicies, CiliumClusterwideNetworkPolicies,
//! the CiliumCIDRGroups they name and the lab's ConnectionLimits: apply (atomic: a bad document
//! leaves the previous set in force), delete, list, per-policy and lab-wide audit mode, and
//! persistence so a restarted lab restores it. Every change, a group's included, re-resolves
//! the whole set.

use std::collections::BTreeMap;

use enforcer::{
    policy::{
        accept::{AcceptedObjects, accept_source},
        api::{PolicyDoc, PolicyKind},
        cidrgroup::{self, CidrGroupDoc},
        limits::{self, LimitDoc},
        normalize::{normalize_limits, normalize_with_groups},
    },
    yaml::{Located, Source},
};
use model::{
    Applied, ApplyAction, ApplyResult, AuditMode, DeleteResult, LimitStatus, PolicyAudit,
    PolicyEntry,
};
use serde_json::{Value, json};
use web::api::{ApiError, ApplyRequest, DeleteRequest};

use crate::control::Lab;

/// Policies by (kind, namespace, name).
pub type PolicyKey = (PolicyKind, Option<String>, String);
/// Limits by (namespace, name).
pub type LimitKey = (String, String);

#[derive(Default, Clone)]
pub struct PolicySet {
    pub docs: BTreeMap<PolicyKey, PolicyDoc>,
    pub limits: BTreeMap<LimitKey, LimitDoc>,
    /// CiliumCIDRGroups by name (cluster-scoped).
    pub groups: BTreeMap<String, CidrGroupDoc>,
}

#[derive(Default)]
pub struct PolicyStore {
    pub docs: BTreeMap<PolicyKey, PolicyDoc>,
    pub limits: BTreeMap<LimitKey, LimitDoc>,
    pub groups: BTreeMap<String, CidrGroupDoc>,
    /// Bumped on every change (Cilium's policy revision).
    pub revision: u64,
    /// Lab-wide audit mode (Cilium's `policy-audit-mode`): every would-be drop is forwarded.
    pub audit_all: bool,
}

impl PolicyStore {
    fn set(&self) -> PolicySet {
        PolicySet {
            docs: self.docs.clone(),
            limits: self.limits.clone(),
            groups: self.groups.clone(),
        }
    }
}

/// Switches lab-wide audit mode (kept in the pinned config map, so a restart keeps it).
pub fn set_audit_all(lab: &Lab, on: bool) -> Result<AuditMode, ApiError> {
    let mut store = lab.policies.lock().expect("policies");
    let mut engine = lab.engine.lock().expect("engine");
    let dp = engine.datapath();
    let flags = dp.config_flags();
    let flags = if on {
        flags | enforcer_common::CFG_AUDIT_ALL
    } else {
        flags & !enforcer_common::CFG_AUDIT_ALL
    };
    dp.set_config_flags(flags)
        .map_err(|e| ApiError::new(500, e.to_string()))?;
    store.audit_all = on;
    Ok(AuditMode { audit_mode: on })
}

fn key(doc: &PolicyDoc) -> PolicyKey {
    (doc.kind, doc.namespace.clone(), doc.name.clone())
}

fn limit_key(l: &LimitDoc) -> LimitKey {
    (l.namespace.clone(), l.name.clone())
}

fn errors_response(errors: Vec<Located>) -> ApiError {
    let text = errors
        .iter()
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join("\n");
    ApiError::new(
        422,
        format!("the policy was not applied; nothing changed:\n{text}"),
    )
    .with_details(errors)
}

/// Every policy, group and limit in a source, or every error in it: the same decision as `lab
/// audit` (see `enforcer::policy::accept`).
fn check_source(src: &Source) -> Result<AcceptedObjects, Vec<Located>> {
    accept_source(src)
}

/// The rules of `set`'s policies, with the prefixes of its CIDR groups.
fn normalize_set(set: &PolicySet) -> Result<enforcer::engine::RuleSet, ApiError> {
    let list: Vec<PolicyDoc> = set.docs.values().cloned().collect();
    let groups: Vec<CidrGroupDoc> = set.groups.values().cloned().collect();
    normalize_with_groups(&list, &groups).map_err(errors_response)
}

/// Resolves and enforces `set` as the complete policy set, or changes nothing.
fn enforce(lab: &Lab, set: &PolicySet) -> Result<(), ApiError> {
    let mut rules = normalize_set(set)?;
    let limit_list: Vec<LimitDoc> = set.limits.values().cloned().collect();
    normalize_limits(&limit_list, &mut rules);
    let mut engine = lab.engine.lock().expect("engine");
    engine
        .set_rules(rules)
        .map_err(|e| ApiError::new(500, format!("writing the policy maps failed: {e}")))
}

fn commit(lab: &Lab, store: &mut PolicyStore, next: PolicySet) {
    store.docs = next.docs;
    store.limits = next.limits;
    store.groups = next.groups;
    store.revision += 1;
    persist(lab, store);
}

/// What an apply does to an object that has `old` as its previous document.
fn action(old: Option<&Value>, new: &Value) -> ApplyAction {
    match old {
        Some(old) if old == new => ApplyAction::Unchanged,
        Some(_) => ApplyAction::Configured,
        None => ApplyAction::Created,
    }
}

pub fn apply(lab: &Lab, req: &ApplyRequest) -> Result<ApplyResult, ApiError> {
    let src = Source::new(req.source.clone(), req.text.clone());
    let objects = check_source(&src).map_err(errors_response)?;
    if objects.is_empty() {
        return Err(ApiError::new(
            422,
            format!(
                "{}: no CiliumNetworkPolicy, CiliumClusterwideNetworkPolicy, CiliumCIDRGroup or ConnectionLimit found",
                req.source
            ),
        ));
    }
    let AcceptedObjects {
        policies,
        limits: limit_docs,
        groups,
    } = objects;
    let mut store = lab.policies.lock().expect("policies");
    let mut next = store.set();
    let mut results = Vec::new();
    for doc in policies {
        results.push(Applied {
            kind: doc.kind.as_str().into(),
            name: doc.name.clone(),
            namespace: doc.namespace.clone(),
            action: action(next.docs.get(&key(&doc)).map(|d| &d.raw), &doc.raw),
            audit: doc.audit_mode(),
        });
        next.docs.insert(key(&doc), doc);
    }
    for l in limit_docs {
        results.push(Applied {
            kind: limits::KIND.into(),
            name: l.name.clone(),
            namespace: Some(l.namespace.clone()),
            action: action(next.limits.get(&limit_key(&l)).map(|d| &d.raw), &l.raw),
            audit: false,
        });
        next.limits.insert(limit_key(&l), l);
    }
    for g in groups {
        results.push(Applied {
            kind: cidrgroup::KIND.into(),
            name: g.name.clone(),
            namespace: None,
            action: action(next.groups.get(&g.name).map(|d| &d.raw), &g.raw),
            audit: false,
        });
        next.groups.insert(g.name.clone(), g);
    }
    if req.dry_run {
        normalize_set(&next)?;
        return Ok(ApplyResult {
            dry_run: true,
            revision: None,
            results,
        });
    }
    enforce(lab, &next)?;
    commit(lab, &mut store, next);
    Ok(ApplyResult {
        dry_run: false,
        revision: Some(store.revision),
        results,
    })
}

pub fn delete(lab: &Lab, req: &DeleteRequest) -> Result<DeleteResult, ApiError> {
    let mut store = lab.policies.lock().expect("policies");
    let mut next = store.set();
    let mut deleted = Vec::new();
    if req.all {
        deleted.extend(next.docs.keys().map(describe));
        deleted.extend(next.limits.keys().map(describe_limit));
        deleted.extend(next.groups.keys().map(|n| describe_group(n)));
        next = PolicySet::default();
    } else if let Some(text) = &req.text {
        let src = Source::new(
            req.source.clone().unwrap_or_else(|| "-".into()),
            text.clone(),
        );
        let objects = check_source(&src).map_err(errors_response)?;
        for g in objects.groups {
            next.groups.remove(&g.name).ok_or_else(|| {
                ApiError::not_found(format!("{} {} not found", cidrgroup::KIND, g.name))
            })?;
            deleted.push(describe_group(&g.name));
        }
        let limit_docs = objects.limits;
        for doc in objects.policies {
            next.docs.remove(&key(&doc)).ok_or_else(|| {
                ApiError::not_found(format!("policy {} not found", doc.qualified_name()))
            })?;
            deleted.push(describe(&key(&doc)));
        }
        for l in limit_docs {
            next.limits.remove(&limit_key(&l)).ok_or_else(|| {
                ApiError::not_found(format!(
                    "connection limit {}/{} not found",
                    l.namespace, l.name
                ))
            })?;
            deleted.push(describe_limit(&limit_key(&l)));
        }
    } else if let Some(name) = &req.name {
        let ns_ok =
            |ns: &Option<String>| req.namespace.is_none() || ns.is_none() || *ns == req.namespace;
        // With a kind (`lab policy delete ccg NAME`), only objects of that kind.
        let kind = match req.kind.as_deref() {
            None => None,
            Some(k) => Some(model::policy::policy_kind(k).ok_or_else(|| {
                ApiError::new(400, format!("`{k}` is not a kind of policy object"))
            })?),
        };
        let kind_ok = |k: &str| kind.is_none_or(|want| want == k);
        let policies: Vec<PolicyKey> = next
            .docs
            .keys()
            .filter(|(k, ns, n)| n == name && ns_ok(ns) && kind_ok(k.as_str()))
            .cloned()
            .collect();
        let limit_keys: Vec<LimitKey> = next
            .limits
            .keys()
            .filter(|(ns, n)| n == name && ns_ok(&Some(ns.clone())) && kind_ok(limits::KIND))
            .cloned()
            .collect();
        let group = next
            .groups
            .contains_key(name)
            .then(|| name.clone())
            .filter(|_| kind_ok(cidrgroup::KIND));
        if policies.is_empty() && limit_keys.is_empty() && group.is_none() {
            return Err(ApiError::not_found(format!(
                "{} {name} not found{}",
                kind.unwrap_or("policy"),
                req.namespace
                    .as_ref()
                    .map(|n| format!(" in namespace {n}"))
                    .unwrap_or_default()
            )));
        }
        if let Some(g) = group {
            next.groups.remove(&g);
            deleted.push(describe_group(&g));
        }
        for k in policies {
            next.docs.remove(&k);
            deleted.push(describe(&k));
        }
        for k in limit_keys {
            next.limits.remove(&k);
            deleted.push(describe_limit(&k));
        }
    } else {
        return Err(ApiError::new(
            400,
            "say which policy to delete: a name, -f FILE, or --all",
        ));
    }
    enforce(lab, &next)?;
    commit(lab, &mut store, next);
    Ok(DeleteResult {
        deleted,
        revision: store.revision,
    })
}

pub fn set_audit(
    lab: &Lab,
    namespace: &str,
    name: &str,
    audit: bool,
) -> Result<PolicyAudit, ApiError> {
    let mut store = lab.policies.lock().expect("policies");
    let mut next = store.set();
    let k = next
        .docs
        .keys()
        .find(|(_, ns, n)| {
            n == name && (ns.as_deref() == Some(namespace) || (ns.is_none() && namespace == "-"))
        })
        .cloned()
        .ok_or_else(|| ApiError::not_found(format!("policy {namespace}/{name} not found")))?;
    let doc = next.docs.get_mut(&k).expect("present");
    let value = if audit { "true" } else { "false" };
    doc.annotations
        .insert(enforcer::policy::api::AUDIT_ANNOTATION.into(), value.into());
    if let Some(meta) = doc.raw.get_mut("metadata").and_then(Value::as_object_mut) {
        let ann = meta.entry("annotations").or_insert_with(|| json!({}));
        if let Some(obj) = ann.as_object_mut() {
            obj.insert(enforcer::policy::api::AUDIT_ANNOTATION.into(), value.into());
        }
    }
    enforce(lab, &next)?;
    commit(lab, &mut store, next);
    Ok(PolicyAudit {
        policy: describe(&k),
        audit,
    })
}

fn describe((kind, ns, name): &PolicyKey) -> String {
    match ns {
        Some(ns) => format!("{}/{ns}/{name}", kind.short_name()),
        None => format!("{}/{name}", kind.short_name()),
    }
}

fn describe_limit((ns, name): &LimitKey) -> String {
    format!("connectionlimit/{ns}/{name}")
}

fn describe_group(name: &str) -> String {
    format!("{}/{name}", cidrgroup::SHORT_NAME)
}

pub fn audit_all(lab: &Lab) -> bool {
    lab.policies.lock().expect("policies").audit_all
}

pub fn list(lab: &Lab) -> Vec<PolicyEntry> {
    let store = lab.policies.lock().expect("policies");
    let policies = store.docs.values().map(|d| PolicyEntry {
        kind: d.kind.as_str().into(),
        name: d.name.clone(),
        namespace: d.namespace.clone(),
        audit: d.audit_mode(),
        source: d.source.to_string(),
        manifest: d.raw.clone(),
    });
    let limit_docs = store.limits.values().map(|l| PolicyEntry {
        kind: limits::KIND.into(),
        name: l.name.clone(),
        namespace: Some(l.namespace.clone()),
        audit: false,
        source: l.source.to_string(),
        manifest: l.raw.clone(),
    });
    let groups = store.groups.values().map(|g| PolicyEntry {
        kind: cidrgroup::KIND.into(),
        name: g.name.clone(),
        namespace: None,
        audit: false,
        source: g.source.to_string(),
        manifest: g.raw.clone(),
    });
    policies.chain(groups).chain(limit_docs).collect()
}

pub fn count(lab: &Lab) -> usize {
    let store = lab.policies.lock().expect("policies");
    store.docs.len() + store.limits.len() + store.groups.len()
}

/// Saves the set so a restarted lab can restore it (one JSON document per object).
fn persist(lab: &Lab, store: &PolicyStore) {
    let dir = lab.paths.policies();
    let _ = std::fs::remove_dir_all(&dir);
    if std::fs::create_dir_all(&dir).is_err() {
        return;
    }
    let raws = store
        .docs
        .values()
        .map(|d| &d.raw)
        .chain(store.groups.values().map(|g| &g.raw))
        .chain(store.limits.values().map(|l| &l.raw));
    for (i, raw) in raws.enumerate() {
        let _ = std::fs::write(dir.join(format!("{i:04}.json")), raw.to_string());
    }
}

/// After a restart: loads what the previous run saved and puts it in force before any pod is
/// registered again, so the maps are rewritten with the same verdicts.
pub fn restore(lab: &Lab) -> anyhow::Result<usize> {
    let dir = lab.paths.policies();
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Ok(0);
    };
    let mut files: Vec<_> = entries.flatten().map(|e| e.path()).collect();
    files.sort();
    let mut next = PolicySet::default();
    for f in files {
        let text = std::fs::read_to_string(&f)?;
        let objects = check_source(&Source::new(f.display().to_string(), text))
            .map_err(|e| anyhow::anyhow!("a saved policy no longer validates: {}", e[0]))?;
        for doc in objects.policies {
            next.docs.insert(key(&doc), doc);
        }
        for l in objects.limits {
            next.limits.insert(limit_key(&l), l);
        }
        for g in objects.groups {
            next.groups.insert(g.name.clone(), g);
        }
    }
    let count = next.docs.len() + next.limits.len() + next.groups.len();
    enforce(lab, &next).map_err(|e| anyhow::anyhow!("{}", e.error))?;
    let audit_all = lab
        .engine
        .lock()
        .expect("engine")
        .datapath_ref()
        .config_flags()
        & enforcer_common::CFG_AUDIT_ALL
        != 0;
    let mut store = lab.policies.lock().expect("policies");
    store.docs = next.docs;
    store.limits = next.limits;
    store.groups = next.groups;
    store.revision += 1;
    store.audit_all = audit_all;
    Ok(count)
}

/// Connection limits with their current counts, per endpoint and bucket.
pub fn limit_status(lab: &Lab) -> Vec<LimitStatus> {
    let engine = lab.engine.lock().expect("engine");
    let dp = engine.datapath_ref();
    let counts = dp.conn_counts();
    let table = engine.rule_table();
    let eps: BTreeMap<u32, String> = engine
        .endpoints()
        .map(|e| (e.ep_id, format!("{}/{}", e.namespace, e.pod)))
        .collect();
    let mut seen = BTreeMap::new();
    for (k, v) in dp.limits() {
        let bucket = enforcer_common::LimitKey {
            identity: v.bucket,
            ..k
        };
        let name = table
            .get(v.limit_ref as usize)
            .map(|r| format!("{}/{}", r.namespace.clone().unwrap_or_default(), r.policy))
            .unwrap_or_default();
        seen.entry((name, bucket)).or_insert(v.max);
    }
    seen.into_iter()
        .map(|((limit, bucket), max)| LimitStatus {
            limit,
            pod: eps.get(&bucket.ep_id).cloned().unwrap_or_default(),
            port: bucket.port,
            peer_identity: (bucket.identity != 0).then_some(bucket.identity),
            connections: counts.get(&bucket).copied().unwrap_or(0),
            max,
        })
        .collect()
}
