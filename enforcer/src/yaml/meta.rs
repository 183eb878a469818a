//! Kubernetes object metadata: `metadata` as written ([`ObjectMeta`]) and its checks
//! ([`check_metadata`]: name rules, namespace, label and annotation keys).

use std::collections::BTreeMap;

use super::{Document, Located, join_key, names};

/// `metadata` as written in a Kubernetes object (policies and manifests). The fields an API
/// server fills in (`uid`, `resourceVersion`, `generation`, `creationTimestamp`,
/// `managedFields`, `selfLink`) are accepted and ignored, so `kubectl get -o yaml` output can
/// be pasted; any other field is an error.
#[derive(Clone, Debug, Default, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ObjectMeta {
    pub name: Option<String>,
    pub namespace: Option<String>,
    pub labels: Option<BTreeMap<String, String>>,
    pub annotations: Option<BTreeMap<String, String>>,
    #[serde(default, rename = "uid")]
    _uid: Option<serde::de::IgnoredAny>,
    #[serde(default, rename = "resourceVersion")]
    _resource_version: Option<serde::de::IgnoredAny>,
    #[serde(default, rename = "generation")]
    _generation: Option<serde::de::IgnoredAny>,
    #[serde(default, rename = "creationTimestamp")]
    _creation_timestamp: Option<serde::de::IgnoredAny>,
    #[serde(default, rename = "managedFields")]
    _managed_fields: Option<serde::de::IgnoredAny>,
    #[serde(default, rename = "selfLink")]
    _self_link: Option<serde::de::IgnoredAny>,
}

/// Which Kubernetes rule an object's name follows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NameRule {
    /// DNS-1123 subdomain: most objects (pods, deployments, policies).
    Subdomain,
    /// DNS-1123 label: namespaces.
    Label,
    /// DNS-1035 label (a DNS-1123 label starting with a letter): services.
    Dns1035,
}

/// Checks `meta`, written at path `at` of `doc` (usually `metadata`): `name` present and valid
/// under `rule`, `namespace` a DNS-1123 label and only for namespaced kinds, label keys and values
/// valid, annotation keys valid. `kind` names the object in messages.
pub fn check_metadata(
    doc: &Document,
    at: &str,
    meta: &ObjectMeta,
    rule: NameRule,
    namespaced: bool,
    kind: &str,
) -> Vec<Located> {
    let mut errors = Vec::new();
    let name_error = |path: &str, e: names::NameError, errors: &mut Vec<Located>| {
        let mut l = doc.value_error(path, e.message);
        l.hint = e.hint;
        errors.push(l);
    };
    match meta.name.as_deref() {
        None => errors.push(
            doc.error(at, format!("a {kind} needs `metadata.name`"))
                .with_hint(
                    "add `name: my-name` under `metadata:` (lowercase letters, digits and `-`)",
                ),
        ),
        Some(name) => {
            let r = match rule {
                NameRule::Subdomain => names::dns1123_subdomain(name, "name"),
                NameRule::Label => names::dns1123_label(name, "name"),
                NameRule::Dns1035 => names::dns1123_label(name, "name").and_then(|()| {
                    if name.starts_with(|c: char| c.is_ascii_digit()) {
                        Err(names::NameError {
                            message: format!("name `{name}` must start with a letter"),
                            hint: Some(format!("for example `s-{name}`")),
                        })
                    } else {
                        Ok(())
                    }
                }),
            };
            if let Err(e) = r {
                name_error(&join_key(at, "name"), e, &mut errors);
            }
        }
    }
    if let Some(ns) = meta.namespace.as_deref() {
        if !namespaced {
            errors.push(
                doc.error(
                    &join_key(at, "namespace"),
                    format!("a {kind} is not namespaced; it cannot have `metadata.namespace`"),
                )
                .with_hint("remove the `namespace` line"),
            );
        } else if let Err(e) = names::dns1123_label(ns, "namespace") {
            name_error(&join_key(at, "namespace"), e, &mut errors);
        }
    }
    for (key, value) in meta.labels.iter().flatten() {
        let path = join_key(&join_key(at, "labels"), key);
        if let Err(e) = crate::policy::selector::validate_k8s_label_key(key) {
            let mut l = doc.error(&path, e.message);
            l.hint = e.hint;
            errors.push(l);
        }
        if let Err(e) = crate::policy::selector::validate_label_value(value) {
            name_error(&path, e, &mut errors);
        }
    }
    for key in meta.annotations.iter().flatten().map(|(k, _)| k) {
        if let Err(e) = crate::policy::selector::validate_k8s_label_key(key) {
            let mut l = doc.error(
                &join_key(&join_key(at, "annotations"), key),
                e.message.replace("label key", "annotation key"),
            );
            l.hint = e.hint;
            errors.push(l);
        }
    }
    errors
}
