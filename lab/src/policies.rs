//! The policy set of a running lab — CiliumNetworkPolicies, CiliumClusterwideNetworkPolicies and
//! the lab's ConnectionLimits: apply (atomic: a bad document leaves the previous set in force),
//! delete, list, per-policy and lab-wide audit mode, and persistence so a restarted lab
//! restores it.

use std::{collections::BTreeMap, fmt::Write as _};

use enforcer::{
    policy::{
        api::{PolicyDoc, PolicyKind, parse_policy_document},
        limits::{self, LimitDoc},
        normalize::{normalize, normalize_limits},
    },
    yaml::{Located, Source, parse_documents},
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
}

#[derive(Default)]
pub struct PolicyStore {
    pub docs: BTreeMap<PolicyKey, PolicyDoc>,
    pub limits: BTreeMap<LimitKey, LimitDoc>,
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
        }
    }
}

/// Switches lab-wide audit mode (kept in the pinned config map, so a restart keeps it).
pub fn set_audit_all(lab: &Lab, on: bool) -> Result<Value, ApiError> {
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
    Ok(json!({"audit_mode": on}))
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
    .with_details(serde_json::to_value(&errors).unwrap_or_default())
}

/// Every policy and limit in a source, or every error in it.
fn check_source(src: &Source) -> Result<(Vec<PolicyDoc>, Vec<LimitDoc>), Vec<Located>> {
    let documents = parse_documents(src).map_err(|e| vec![e])?;
    let (mut policies, mut limit_docs, mut errors) = (Vec::new(), Vec::new(), Vec::new());
    for doc in &documents {
        if limits::is_limit(doc) {
            match limits::parse_limit_document(doc) {
                Ok(l) => limit_docs.push(l),
                Err(e) => errors.extend(e),
            }
        } else {
            match parse_policy_document(doc) {
                Ok(p) => policies.push(p),
                Err(e) => errors.extend(e),
            }
        }
    }
    if errors.is_empty() {
        Ok((policies, limit_docs))
    } else {
        Err(errors)
    }
}

/// Resolves and enforces `set` as the complete policy set, or changes nothing.
fn enforce(lab: &Lab, set: &PolicySet) -> Result<(), ApiError> {
    let list: Vec<PolicyDoc> = set.docs.values().cloned().collect();
    let mut rules = normalize(&list).map_err(errors_response)?;
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
    store.revision += 1;
    persist(lab, store);
}

pub fn apply(lab: &Lab, req: &ApplyRequest) -> Result<Value, ApiError> {
    let src = Source::new(req.source.clone(), req.text.clone());
    let (policies, limit_docs) = check_source(&src).map_err(errors_response)?;
    if policies.is_empty() && limit_docs.is_empty() {
        return Err(ApiError::new(
            422,
            format!(
                "{}: no CiliumNetworkPolicy, CiliumClusterwideNetworkPolicy or ConnectionLimit found",
                req.source
            ),
        ));
    }
    let mut store = lab.policies.lock().expect("policies");
    let mut next = store.set();
    let mut results = Vec::new();
    for doc in policies {
        let action = match next.docs.get(&key(&doc)) {
            Some(old) if old.raw == doc.raw => "unchanged",
            Some(_) => "configured",
            None => "created",
        };
        results.push(json!({"kind": doc.kind.as_str(), "name": doc.name, "namespace": doc.namespace, "action": action, "audit": doc.audit_mode()}));
        next.docs.insert(key(&doc), doc);
    }
    for l in limit_docs {
        let action = match next.limits.get(&limit_key(&l)) {
            Some(old) if old.raw == l.raw => "unchanged",
            Some(_) => "configured",
            None => "created",
        };
        results.push(json!({"kind": limits::KIND, "name": l.name, "namespace": l.namespace, "action": action, "audit": false}));
        next.limits.insert(limit_key(&l), l);
    }
    if req.dry_run {
        let list: Vec<PolicyDoc> = next.docs.values().cloned().collect();
        normalize(&list).map_err(errors_response)?;
        return Ok(json!({"dry_run": true, "results": results}));
    }
    enforce(lab, &next)?;
    commit(lab, &mut store, next);
    Ok(json!({"dry_run": false, "revision": store.revision, "results": results}))
}

pub fn delete(lab: &Lab, req: &DeleteRequest) -> Result<Value, ApiError> {
    let mut store = lab.policies.lock().expect("policies");
    let mut next = store.set();
    let mut deleted = Vec::new();
    if req.all {
        deleted.extend(next.docs.keys().map(describe));
        deleted.extend(next.limits.keys().map(describe_limit));
        next = PolicySet::default();
    } else if let Some(text) = &req.text {
        let src = Source::new(
            req.source.clone().unwrap_or_else(|| "-".into()),
            text.clone(),
        );
        let (policies, limit_docs) = check_source(&src).map_err(errors_response)?;
        for doc in policies {
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
        let policies: Vec<PolicyKey> = next
            .docs
            .keys()
            .filter(|(_, ns, n)| n == name && ns_ok(ns))
            .cloned()
            .collect();
        let limit_keys: Vec<LimitKey> = next
            .limits
            .keys()
            .filter(|(ns, n)| n == name && ns_ok(&Some(ns.clone())))
            .cloned()
            .collect();
        if policies.is_empty() && limit_keys.is_empty() {
            return Err(ApiError::not_found(format!(
                "policy {name} not found{}",
                req.namespace
                    .as_ref()
                    .map(|n| format!(" in namespace {n}"))
                    .unwrap_or_default()
            )));
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
    Ok(json!({"deleted": deleted, "revision": store.revision}))
}

pub fn set_audit(lab: &Lab, namespace: &str, name: &str, audit: bool) -> Result<Value, ApiError> {
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
    Ok(json!({"policy": describe(&k), "audit": audit}))
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

pub fn audit_all(lab: &Lab) -> bool {
    lab.policies.lock().expect("policies").audit_all
}

pub fn list(lab: &Lab) -> Value {
    let store = lab.policies.lock().expect("policies");
    let policies = store.docs.values().map(|d| {
        json!({
            "kind": d.kind.as_str(),
            "name": d.name,
            "namespace": d.namespace,
            "audit": d.audit_mode(),
            "source": d.source.to_string(),
            "manifest": d.raw,
        })
    });
    let limit_docs = store.limits.values().map(|l| {
        json!({
            "kind": limits::KIND,
            "name": l.name,
            "namespace": l.namespace,
            "audit": false,
            "source": l.source.to_string(),
            "manifest": l.raw,
        })
    });
    Value::Array(policies.chain(limit_docs).collect())
}

pub fn count(lab: &Lab) -> usize {
    let store = lab.policies.lock().expect("policies");
    store.docs.len() + store.limits.len()
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
        let (policies, limit_docs) = check_source(&Source::new(f.display().to_string(), text))
            .map_err(|e| anyhow::anyhow!("a saved policy no longer validates: {}", e[0]))?;
        for doc in policies {
            next.docs.insert(key(&doc), doc);
        }
        for l in limit_docs {
            next.limits.insert(limit_key(&l), l);
        }
    }
    let count = next.docs.len() + next.limits.len();
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
    store.revision += 1;
    store.audit_all = audit_all;
    Ok(count)
}

/// Connection limits with their current counts, per endpoint and bucket.
pub fn limit_status(lab: &Lab) -> Value {
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
    Value::Array(
        seen.into_iter()
            .map(|((name, bucket), max)| {
                json!({
                    "limit": name,
                    "pod": eps.get(&bucket.ep_id).cloned().unwrap_or_default(),
                    "port": bucket.port,
                    "peer_identity": if bucket.identity == 0 { Value::Null } else { json!(bucket.identity) },
                    "connections": counts.get(&bucket).copied().unwrap_or(0),
                    "max": max,
                })
            })
            .collect(),
    )
}

/// Policy metrics: how many, the revision, audit mode, connection limits.
pub fn render_metrics(lab: &Lab, out: &mut String) {
    {
        let store = lab.policies.lock().expect("policies");
        let _ = writeln!(
            out,
            "# HELP cilium_policy Number of policies currently loaded"
        );
        let _ = writeln!(out, "# TYPE cilium_policy gauge");
        let _ = writeln!(out, "cilium_policy {}", store.docs.len());
        let _ = writeln!(
            out,
            "# HELP cilium_policy_max_revision Highest policy revision number in the agent"
        );
        let _ = writeln!(out, "# TYPE cilium_policy_max_revision gauge");
        let _ = writeln!(out, "cilium_policy_max_revision {}", store.revision);
        let _ = writeln!(
            out,
            "# HELP lab_policy_audit_mode Whether lab-wide audit mode is on (would-be drops are forwarded)"
        );
        let _ = writeln!(out, "# TYPE lab_policy_audit_mode gauge");
        let _ = writeln!(out, "lab_policy_audit_mode {}", u8::from(store.audit_all));
    }
    let _ = writeln!(
        out,
        "# HELP lab_connection_limit_connections Established connections counted against a connection limit"
    );
    let _ = writeln!(out, "# TYPE lab_connection_limit_connections gauge");
    let _ = writeln!(out, "# HELP lab_connection_limit_max The connection limit");
    let _ = writeln!(out, "# TYPE lab_connection_limit_max gauge");
    for l in limit_status(lab).as_array().into_iter().flatten() {
        let labels = format!(
            "limit=\"{}\",pod=\"{}\",port=\"{}\"",
            l["limit"].as_str().unwrap_or_default(),
            l["pod"].as_str().unwrap_or_default(),
            l["port"]
        );
        let _ = writeln!(
            out,
            "lab_connection_limit_connections{{{labels}}} {}",
            l["connections"]
        );
        let _ = writeln!(out, "lab_connection_limit_max{{{labels}}} {}", l["max"]);
    }
}
