//! The policy set of a running lab: apply (atomic: a bad document leaves the previous set in
//! force), delete, list, per-policy audit mode, and persistence so a restarted lab restores it.

use std::{collections::BTreeMap, fmt::Write as _};

use enforcer::{
    policy::{
        api::{PolicyDoc, PolicyKind, check_policies},
        normalize::normalize,
    },
    yaml::{Located, Source},
};
use serde_json::{Value, json};
use web::api::{ApiError, ApplyRequest, DeleteRequest};

use crate::control::Lab;

/// Policies by (kind, namespace, name).
pub type PolicyKey = (PolicyKind, Option<String>, String);

#[derive(Default)]
pub struct PolicyStore {
    pub docs: BTreeMap<PolicyKey, PolicyDoc>,
    /// Bumped on every change (Cilium's policy revision).
    pub revision: u64,
    /// Lab-wide audit mode (Cilium's `policy-audit-mode`): every would-be drop is forwarded.
    pub audit_all: bool,
}

/// Switches lab-wide audit mode, and remembers it for a restarted lab.
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

/// Resolves and enforces `docs` as the complete policy set, or changes nothing.
fn enforce(lab: &Lab, docs: &BTreeMap<PolicyKey, PolicyDoc>) -> Result<(), ApiError> {
    let list: Vec<PolicyDoc> = docs.values().cloned().collect();
    let rules = normalize(&list).map_err(errors_response)?;
    let mut engine = lab.engine.lock().expect("engine");
    engine
        .set_rules(rules)
        .map_err(|e| ApiError::new(500, format!("writing the policy maps failed: {e}")))
}

pub fn apply(lab: &Lab, req: &ApplyRequest) -> Result<Value, ApiError> {
    let src = Source::new(req.source.clone(), req.text.clone());
    let check = check_policies(&src);
    if !check.errors.is_empty() {
        return Err(errors_response(check.errors));
    }
    if check.policies.is_empty() {
        return Err(ApiError::new(
            422,
            format!(
                "{}: no CiliumNetworkPolicy or CiliumClusterwideNetworkPolicy found",
                req.source
            ),
        ));
    }
    let mut store = lab.policies.lock().expect("policies");
    let mut next = store.docs.clone();
    let mut results = Vec::new();
    for doc in check.policies {
        let action = match next.get(&key(&doc)) {
            Some(old) if old.raw == doc.raw => "unchanged",
            Some(_) => "configured",
            None => "created",
        };
        results.push(json!({
            "kind": doc.kind.as_str(),
            "name": doc.name,
            "namespace": doc.namespace,
            "action": action,
            "audit": doc.audit_mode(),
        }));
        next.insert(key(&doc), doc);
    }
    if req.dry_run {
        let list: Vec<PolicyDoc> = next.values().cloned().collect();
        normalize(&list).map_err(errors_response)?;
        return Ok(json!({"dry_run": true, "results": results}));
    }
    enforce(lab, &next)?;
    store.docs = next;
    store.revision += 1;
    persist(lab, &store);
    Ok(json!({"dry_run": false, "revision": store.revision, "results": results}))
}

pub fn delete(lab: &Lab, req: &DeleteRequest) -> Result<Value, ApiError> {
    let mut store = lab.policies.lock().expect("policies");
    let mut next = store.docs.clone();
    let mut deleted = Vec::new();
    if req.all {
        deleted.extend(next.keys().map(describe));
        next.clear();
    } else if let Some(text) = &req.text {
        let src = Source::new(
            req.source.clone().unwrap_or_else(|| "-".into()),
            text.clone(),
        );
        let check = check_policies(&src);
        if !check.errors.is_empty() && check.policies.is_empty() {
            return Err(errors_response(check.errors));
        }
        for doc in check.policies {
            if next.remove(&key(&doc)).is_some() {
                deleted.push(describe(&key(&doc)));
            } else {
                return Err(ApiError::not_found(format!(
                    "policy {} not found",
                    doc.qualified_name()
                )));
            }
        }
    } else if let Some(name) = &req.name {
        let matches: Vec<PolicyKey> = next
            .keys()
            .filter(|(_, ns, n)| {
                n == name && (req.namespace.is_none() || ns.is_none() || *ns == req.namespace)
            })
            .cloned()
            .collect();
        if matches.is_empty() {
            return Err(ApiError::not_found(format!(
                "policy {name} not found{}",
                req.namespace
                    .as_ref()
                    .map(|n| format!(" in namespace {n}"))
                    .unwrap_or_default()
            )));
        }
        for k in matches {
            next.remove(&k);
            deleted.push(describe(&k));
        }
    } else {
        return Err(ApiError::new(
            400,
            "say which policy to delete: a name, -f FILE, or --all",
        ));
    }
    enforce(lab, &next)?;
    store.docs = next;
    store.revision += 1;
    persist(lab, &store);
    Ok(json!({"deleted": deleted, "revision": store.revision}))
}

pub fn set_audit(lab: &Lab, namespace: &str, name: &str, audit: bool) -> Result<Value, ApiError> {
    let mut store = lab.policies.lock().expect("policies");
    let mut next = store.docs.clone();
    let k = next
        .keys()
        .find(|(_, ns, n)| {
            n == name && (ns.as_deref() == Some(namespace) || (ns.is_none() && namespace == "-"))
        })
        .cloned()
        .ok_or_else(|| ApiError::not_found(format!("policy {namespace}/{name} not found")))?;
    let doc = next.get_mut(&k).expect("present");
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
    store.docs = next;
    store.revision += 1;
    persist(lab, &store);
    Ok(json!({"policy": describe(&k), "audit": audit}))
}

fn describe((kind, ns, name): &PolicyKey) -> String {
    match ns {
        Some(ns) => format!("{}/{ns}/{name}", kind.short_name()),
        None => format!("{}/{name}", kind.short_name()),
    }
}

pub fn audit_all(lab: &Lab) -> bool {
    lab.policies.lock().expect("policies").audit_all
}

pub fn list(lab: &Lab) -> Value {
    let store = lab.policies.lock().expect("policies");
    Value::Array(
        store
            .docs
            .values()
            .map(|d| {
                json!({
                    "kind": d.kind.as_str(),
                    "name": d.name,
                    "namespace": d.namespace,
                    "audit": d.audit_mode(),
                    "source": d.source.to_string(),
                    "manifest": d.raw,
                })
            })
            .collect(),
    )
}

pub fn count(lab: &Lab) -> usize {
    lab.policies.lock().expect("policies").docs.len()
}

/// Saves the set so a restarted lab can restore it (one JSON document per policy).
fn persist(lab: &Lab, store: &PolicyStore) {
    let dir = lab.paths.policies();
    let _ = std::fs::remove_dir_all(&dir);
    if std::fs::create_dir_all(&dir).is_err() {
        return;
    }
    for (i, doc) in store.docs.values().enumerate() {
        let _ = std::fs::write(dir.join(format!("{i:04}.json")), doc.raw.to_string());
    }
}

/// After a restart: loads the policies the previous run saved and puts them in force before
/// any pod is registered again, so the maps are rewritten with the same verdicts.
pub fn restore(lab: &Lab) -> anyhow::Result<usize> {
    let dir = lab.paths.policies();
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Ok(0);
    };
    let mut files: Vec<_> = entries.flatten().map(|e| e.path()).collect();
    files.sort();
    let mut next = BTreeMap::new();
    for f in files {
        let text = std::fs::read_to_string(&f)?;
        let check = check_policies(&Source::new(f.display().to_string(), text));
        if let Some(e) = check.errors.first() {
            anyhow::bail!("a saved policy no longer validates: {e}");
        }
        for doc in check.policies {
            next.insert(key(&doc), doc);
        }
    }
    let count = next.len();
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
    store.docs = next;
    store.revision += 1;
    store.audit_all = audit_all;
    Ok(count)
}

/// Policy metrics: how many, and the revision.
pub fn render_metrics(lab: &Lab, out: &mut String) {
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
