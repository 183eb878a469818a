//! `ConnectionLimit`, the lab's own kind (apiVersion `lab.dev/v1`): at most N established TCP
//! connections to the selected pods' port, optionally only from some peers, and counted per peer
//! identity if asked. Validated like the Cilium policies, with located errors, and applied,
//! listed and deleted with them.
//!
//! ```yaml
//! apiVersion: lab.dev/v1
//! kind: ConnectionLimit
//! metadata:
//!   name: deathstar-landing
//! spec:
//!   endpointSelector:
//!     matchLabels: {class: deathstar}
//!   port: 80
//!   maxConnections: 8
//!   fromEndpoints:            # optional: only these peers are limited
//!   - matchLabels: {org: alliance}
//!   perIdentity: false        # optional: true gives each peer identity its own budget
//! ```

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{
    policy::api::EndpointSelector,
    yaml::{Document, Located, Locations, NameRule, ObjectMeta, SourceRef, check_metadata},
};

pub const API_VERSION: &str = "lab.dev/v1";
pub const KIND: &str = "ConnectionLimit";

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LimitSpec {
    pub endpoint_selector: EndpointSelector,
    pub port: u16,
    /// Only TCP (connections); absent means TCP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    pub max_connections: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_endpoints: Option<Vec<EndpointSelector>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_identity: Option<bool>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LimitDoc {
    pub name: String,
    pub namespace: String,
    pub spec: LimitSpec,
    pub source: SourceRef,
    #[serde(skip)]
    pub raw: Value,
    #[serde(skip)]
    pub locations: Locations,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct LimitObject {
    #[serde(rename = "apiVersion")]
    _api_version: String,
    #[serde(rename = "kind")]
    _kind: String,
    metadata: ObjectMeta,
    spec: LimitSpec,
}

/// Whether a document is a `ConnectionLimit` (of any apiVersion, so a wrong one gets a clear error).
pub fn is_limit(doc: &Document) -> bool {
    doc.get("kind").and_then(Value::as_str) == Some(KIND)
}

pub fn parse_limit_document(doc: &Document) -> Result<LimitDoc, Vec<Located>> {
    let mut errors = Vec::new();
    let api = doc
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if api != API_VERSION {
        errors.push(
            doc.value_error(
                "apiVersion",
                format!("`{api}` is not the apiVersion of ConnectionLimit"),
            )
            .with_hint(format!("write `apiVersion: {API_VERSION}`")),
        );
    }
    let decoded = doc.decode::<LimitObject>("");
    errors.extend(decoded.errors);
    let Some(obj) = decoded.value else {
        return Err(errors);
    };
    errors.extend(check_metadata(
        doc,
        "metadata",
        &obj.metadata,
        NameRule::Subdomain,
        true,
        KIND,
    ));
    let spec = &obj.spec;
    if spec.port == 0 {
        errors.push(
            doc.value_error("spec.port", "port 0 is not a port")
                .with_hint("the server's port, 1 to 65535"),
        );
    }
    if spec.max_connections == 0 {
        errors.push(
            doc.value_error(
                "spec.maxConnections",
                "a limit of 0 refuses every connection",
            )
            .with_hint(
                "to refuse all connections, use a CiliumNetworkPolicy; a limit needs at least 1",
            ),
        );
    }
    if let Some(p) = &spec.protocol
        && !p.eq_ignore_ascii_case("TCP")
    {
        errors.push(
            doc.value_error(
                "spec.protocol",
                format!("`{p}`: only TCP has connections to limit"),
            )
            .with_hint("remove the field or write `protocol: TCP`"),
        );
    }
    let mut selectors = vec![("spec.endpointSelector".to_owned(), &spec.endpoint_selector)];
    for (i, s) in spec.from_endpoints.iter().flatten().enumerate() {
        selectors.push((format!("spec.fromEndpoints[{i}]"), s));
    }
    for (path, sel) in selectors {
        for key in sel
            .match_labels
            .iter()
            .flatten()
            .map(|(k, _)| k)
            .chain(sel.match_expressions.iter().flatten().map(|e| &e.key))
        {
            if let Err(e) = crate::policy::selector::validate_selector_key(key) {
                let mut l = doc.error(&path, format!("label key `{key}`: {}", e.message));
                l.hint = e.hint;
                errors.push(l);
            }
        }
    }
    let Some(name) = obj.metadata.name.clone() else {
        return Err(errors);
    };
    if !errors.is_empty() {
        crate::yaml::sort_errors(&mut errors);
        return Err(errors);
    }
    Ok(LimitDoc {
        name,
        namespace: obj
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into()),
        spec: obj.spec,
        source: doc.source_ref(),
        raw: doc.value.clone(),
        locations: doc.locations.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::yaml::{Source, parse_documents};

    fn parse(text: &str) -> Result<LimitDoc, Vec<Located>> {
        let docs = parse_documents(&Source::new("limit.yaml", text)).unwrap();
        assert!(is_limit(&docs[0]));
        parse_limit_document(&docs[0])
    }

    #[test]
    fn a_valid_limit() {
        let l = parse(
            "apiVersion: lab.dev/v1\nkind: ConnectionLimit\nmetadata:\n  name: ds\nspec:\n  endpointSelector:\n    matchLabels: {class: deathstar}\n  port: 80\n  maxConnections: 8\n  fromEndpoints:\n  - matchLabels: {org: alliance}\n",
        )
        .unwrap();
        assert_eq!(
            (
                l.name.as_str(),
                l.namespace.as_str(),
                l.spec.port,
                l.spec.max_connections
            ),
            ("ds", "default", 80, 8)
        );
    }

    #[test]
    fn errors_name_the_line_and_field() {
        let errs = parse(
            "apiVersion: lab.dev/v1\nkind: ConnectionLimit\nmetadata:\n  name: ds\nspec:\n  endpointSelector: {}\n  port: 80\n  protocol: UDP\n  maxConnection: 8\n",
        )
        .unwrap_err();
        let text: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
        assert!(
            text.iter()
                .any(|t| t.contains("limit.yaml:9") && t.contains("maxConnections")),
            "{text:#?}"
        );
        let udp = parse("apiVersion: lab.dev/v1\nkind: ConnectionLimit\nmetadata:\n  name: ds\nspec:\n  endpointSelector: {}\n  port: 80\n  protocol: UDP\n  maxConnections: 8\n").unwrap_err();
        assert!(
            udp[0].to_string().starts_with("limit.yaml:8")
                && udp[0].to_string().contains("only TCP"),
            "{udp:?}"
        );
        let zero = parse("apiVersion: lab.dev/v1\nkind: ConnectionLimit\nmetadata:\n  name: ds\nspec:\n  endpointSelector: {}\n  port: 80\n  maxConnections: 0\n").unwrap_err();
        assert!(zero[0].to_string().contains("refuses every connection"));
    }
}
