//! Kubernetes manifests for the lab's topology (`lab up -f FILE...`): `Namespace`, `Pod`,
//! `Deployment`, `Service` and `ServiceAccount`, parsed and validated with errors that name the file, line and
//! field (see `enforcer::yaml`).
//!
//! - [`parse_manifests`]: a source → every [`Object`] in it with where it came from, or every
//!   error. Policies in the file are errors (they are not topology).
//! - [`parse_all`]: the same, but Cilium policies, CiliumCIDRGroups and ConnectionLimits in the
//!   file are taken too, into a [`Bundle`], by the decision `lab policy apply` makes
//!   (`enforcer::policy::accept`).
//!
//! Only the fields the lab uses are accepted; any other field is an error, so a typo is never
//! silently ignored. A few common Kubernetes fields that do not change what the lab builds are
//! accepted and ignored, so ordinary manifests load unchanged:
//!
//! - metadata: `uid`, `resourceVersion`, `generation`, `creationTimestamp`, `managedFields`,
//!   `selfLink` (server-filled); top level: `status`;
//! - pod spec: `terminationGracePeriodSeconds`, `dnsPolicy`, `securityContext`,
//!   `automountServiceAccountToken`, `enableServiceLinks`, `schedulerName`
//!   (`serviceAccountName` is used: it labels the pod's identity, as in Cilium);
//! - container: `imagePullPolicy`, `resources`, `readinessProbe`, `livenessProbe`,
//!   `startupProbe`, `securityContext`, `terminationMessagePath`, `terminationMessagePolicy`,
//!   `stdin`, `tty`; container port: `hostIP` is *not* tolerated (it would matter);
//! - deployment spec: `strategy`, `revisionHistoryLimit`, `progressDeadlineSeconds`,
//!   `minReadySeconds`; service port: `appProtocol`.
//!
//! Valid Kubernetes the lab does not implement is an error saying so ("… is valid Kubernetes but
//! not supported by the lab yet"): other kinds (ConfigMap, StatefulSet, ...), Services of type
//! `LoadBalancer`/`ExternalName` or without a selector, SCTP, `env[].valueFrom`,
//! `selector.matchExpressions` in a Deployment.
//!
//! Images are not checked here (the orchestrator knows which images it can run); the image
//! string is kept as written.
#![allow(
    dead_code,
    reason = "wired into the CLI by the orchestrator; until then only the tests use it"
)]

use std::collections::{BTreeMap, HashMap};

use enforcer::{
    policy::{
        accept::{Accepted, FileAcceptor, is_policy_kind},
        api::{PolicyDoc, PolicyKind},
        cidrgroup::CidrGroupDoc,
        limits::LimitDoc,
    },
    yaml::{
        self, Checker, Document, ErrorKind, Located, NameRule, NamesInFile, ObjectMeta, Source,
        SourceRef, UNSUPPORTED_MARK, join_index, join_key, names, parse_documents, suggest,
    },
};
use serde::{
    Deserialize, Serialize,
    de::{DeserializeOwned, IgnoredAny},
};
use serde_json::Value;

use crate::cluster::{
    NODE_PORT_RANGE, Protocol, RestartPolicy, ServicePort, ServiceType, TargetPort,
};

// ---------------------------------------------------------------------------------------------
// Objects

/// One object of the topology.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind")]
pub enum Object {
    Namespace(NamespaceObject),
    Pod(PodObject),
    Deployment(DeploymentObject),
    Service(ServiceObject),
    ServiceAccount(Meta),
}

impl Object {
    pub fn kind(&self) -> &'static str {
        match self {
            Object::Namespace(_) => "Namespace",
            Object::Pod(_) => "Pod",
            Object::Deployment(_) => "Deployment",
            Object::Service(_) => "Service",
            Object::ServiceAccount(_) => "ServiceAccount",
        }
    }

    pub fn name(&self) -> &str {
        match self {
            Object::Namespace(o) => &o.name,
            Object::Pod(o) => &o.meta.name,
            Object::Deployment(o) => &o.meta.name,
            Object::Service(o) => &o.meta.name,
            Object::ServiceAccount(m) => &m.name,
        }
    }

    /// `None` for namespaces (they are not namespaced).
    pub fn namespace(&self) -> Option<&str> {
        match self {
            Object::Namespace(_) => None,
            Object::Pod(o) => Some(&o.meta.namespace),
            Object::Deployment(o) => Some(&o.meta.namespace),
            Object::Service(o) => Some(&o.meta.namespace),
            Object::ServiceAccount(m) => Some(&m.namespace),
        }
    }
}

/// Name, namespace, labels and annotations of a namespaced object.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Meta {
    pub name: String,
    /// `"default"` when not written.
    pub namespace: String,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct NamespaceObject {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PodObject {
    pub meta: Meta,
    pub spec: PodSpec,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PodSpec {
    /// At least one.
    pub containers: Vec<Container>,
    pub restart_policy: RestartPolicy,
    /// `serviceAccountName` (or the deprecated `serviceAccount`), if written.
    pub service_account: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Container {
    pub name: String,
    /// As written; the orchestrator decides whether it can run it.
    pub image: String,
    /// Replaces the image's entrypoint when not empty.
    pub command: Vec<String>,
    pub args: Vec<String>,
    pub ports: Vec<ContainerPort>,
    pub env: Vec<EnvVar>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ContainerPort {
    pub container_port: u16,
    pub name: Option<String>,
    pub protocol: Protocol,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct EnvVar {
    pub name: String,
    pub value: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct DeploymentObject {
    pub meta: Meta,
    pub replicas: u32,
    /// `spec.selector.matchLabels`; every pair is also in the template's labels.
    pub selector: BTreeMap<String, String>,
    pub template: PodTemplate,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PodTemplate {
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub spec: PodSpec,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ServiceObject {
    pub meta: Meta,
    pub service_type: ServiceType,
    /// Never empty (a Service without selector is unsupported).
    pub selector: BTreeMap<String, String>,
    /// At least one.
    pub ports: Vec<ServicePort>,
}

/// The objects and the policies of a file.
#[derive(Clone, Debug, Default)]
pub struct Bundle {
    pub objects: Vec<(Object, SourceRef)>,
    pub policies: Vec<PolicyDoc>,
    pub limits: Vec<LimitDoc>,
    pub groups: Vec<CidrGroupDoc>,
}

// ---------------------------------------------------------------------------------------------
// Parsing

/// Every object of a source, or every error in it (sorted by line). Documents of other kinds,
/// Cilium policies included, are errors.
pub fn parse_manifests(src: &Source) -> Result<Vec<(Object, SourceRef)>, Vec<Located>> {
    parse(src, false).map(|b| b.objects)
}

/// Every object and every Cilium policy of a source, or every error in it.
pub fn parse_all(src: &Source) -> Result<Bundle, Vec<Located>> {
    parse(src, true)
}

fn parse(src: &Source, policies: bool) -> Result<Bundle, Vec<Located>> {
    let docs = parse_documents(src).map_err(|e| vec![e])?;
    let mut bundle = Bundle::default();
    let mut errors = Vec::new();
    let mut names = NamesInFile::default();
    let mut node_ports: HashMap<u16, usize> = HashMap::new();
    let mut policy_file = FileAcceptor::default();
    for doc in &docs {
        if policies && is_policy_kind(doc) {
            // The same decision as `lab policy apply` (enforcer::policy::accept).
            match policy_file.accept(doc) {
                Ok(Accepted::Policy(p)) => bundle.policies.push(p),
                Ok(Accepted::Limit(l)) => bundle.limits.push(l),
                Ok(Accepted::CidrGroup(g)) => bundle.groups.push(g),
                Err(e) => errors.extend(e),
            }
            continue;
        }
        let (object, errs) = parse_object(doc);
        errors.extend(errs);
        let Some(object) = object else { continue };
        let (kind, name) = (object.kind(), object.name());
        if let Some(e) = names.defined_twice(doc, kind, object.namespace(), name, name) {
            errors.push(e.with_hint("give each object its own name"));
        }
        if let Object::Service(s) = &object {
            for (i, p) in s.ports.iter().enumerate() {
                let Some(np) = p.node_port else { continue };
                if let Some(first) = node_ports.insert(np, doc.start_line) {
                    errors.push(
                        doc.value_error(
                            &join_key(&join_index("spec.ports", i), "nodePort"),
                            format!("nodePort {np} is already used by the service at line {first}"),
                        )
                        .with_hint("each NodePort can belong to only one service"),
                    );
                }
            }
        }
        bundle.objects.push((object, doc.source_ref()));
    }
    if errors.is_empty() {
        Ok(bundle)
    } else {
        yaml::sort_errors(&mut errors);
        Err(errors)
    }
}

/// The kinds `lab up -f` accepts, with their apiVersion.
const KINDS: &[(&str, &str)] = &[
    ("Namespace", "v1"),
    ("Pod", "v1"),
    ("Deployment", "apps/v1"),
    ("Service", "v1"),
    ("ServiceAccount", "v1"),
];

/// Kubernetes kinds the lab knows of but does not run.
const OTHER_KINDS: &[&str] = &[
    "ConfigMap",
    "Secret",
    "StatefulSet",
    "DaemonSet",
    "ReplicaSet",
    "ReplicationController",
    "Job",
    "CronJob",
    "Ingress",
    "NetworkPolicy",
    "PersistentVolumeClaim",
    "PersistentVolume",
    "Endpoints",
    "EndpointSlice",
    "Role",
    "RoleBinding",
    "ClusterRole",
    "ClusterRoleBinding",
    "HorizontalPodAutoscaler",
    "PodDisruptionBudget",
];

fn accepted() -> String {
    let kinds: Vec<String> = KINDS.iter().map(|(k, v)| format!("{k} ({v})")).collect();
    format!("accepted kinds: {}", kinds.join(", "))
}

fn unsupported_k8s(doc: &Document, path: &str, what: &str, hint: &str) -> Located {
    doc.error(
        path,
        format!("{what} is valid Kubernetes {UNSUPPORTED_MARK}"),
    )
    .with_kind(ErrorKind::Unsupported)
    .with_hint(hint)
}

/// Checks kind and apiVersion, then decodes and validates the object.
fn parse_object(doc: &Document) -> (Option<Object>, Vec<Located>) {
    if !doc.value.is_object() {
        return (
            None,
            vec![doc.error(
                "",
                "a manifest document must be a mapping with `apiVersion`, `kind` and `metadata`",
            )],
        );
    }
    let kind = match doc.get("kind") {
        Some(Value::String(k)) => k.as_str(),
        Some(_) => {
            return (
                None,
                vec![
                    doc.value_error("kind", "`kind` must be a string")
                        .with_hint(accepted()),
                ],
            );
        }
        None => {
            return (
                None,
                vec![
                    doc.error("", "missing required field `kind`")
                        .with_hint(accepted()),
                ],
            );
        }
    };
    let Some((_, api_version)) = KINDS.iter().find(|(k, _)| *k == kind) else {
        let e = if PolicyKind::from_kind(kind).is_some() {
            doc.value_error(
                "kind",
                format!("a {kind} is a policy, not part of the topology"),
            )
            .with_hint("apply it as a policy rather than with `lab up -f`")
        } else if OTHER_KINDS.contains(&kind) {
            unsupported_k8s(doc, "kind", &format!("kind `{kind}`"), &accepted())
        } else {
            let hint = match suggest(kind, KINDS.iter().map(|(k, _)| *k)) {
                Some(s) => format!("did you mean `{s}`?"),
                None => accepted(),
            };
            doc.value_error("kind", format!("unknown kind `{kind}`"))
                .with_hint(hint)
        };
        return (None, vec![e]);
    };
    match doc.get("apiVersion") {
        Some(Value::String(v)) if v == api_version => {}
        Some(Value::String(v)) => {
            return (
                None,
                vec![
                    doc.value_error(
                        "apiVersion",
                        format!("apiVersion `{v}` is not right for a {kind}"),
                    )
                    .with_hint(format!("write `apiVersion: {api_version}`")),
                ],
            );
        }
        _ => {
            return (
                None,
                vec![
                    doc.error("", "missing required field `apiVersion`")
                        .with_hint(format!("write `apiVersion: {api_version}`")),
                ],
            );
        }
    }
    match kind {
        "Namespace" => object(doc, NameRule::Label, false, kind, namespace),
        "Pod" => object(doc, NameRule::Subdomain, true, kind, pod),
        "Deployment" => object(doc, NameRule::Subdomain, true, kind, deployment),
        "ServiceAccount" => object(doc, NameRule::Subdomain, true, kind, service_account),
        _ => object(doc, NameRule::Dns1035, true, kind, service),
    }
}

/// Decodes a document of `kind` (with a spec of type `S`) and checks its metadata (names follow
/// `rule`); `build` checks the spec and builds the object, which is returned only if the
/// document has no error.
fn object<S: DeserializeOwned>(
    doc: &Document,
    rule: NameRule,
    namespaced: bool,
    kind: &str,
    build: fn(&mut Ctx<'_>, Option<Meta>, Option<S>) -> Option<Object>,
) -> (Option<Object>, Vec<Located>) {
    let (mut ctx, wire) = Ctx::decode::<S>(doc);
    let Some(wire) = wire else {
        return (None, ctx.check.errors);
    };
    let meta = ctx.meta(wire.metadata, rule, namespaced, kind);
    let object = build(&mut ctx, meta, wire.spec);
    ctx.finish(object)
}

// ---------------------------------------------------------------------------------------------
// Wire types: the fields as written, tolerated ones included

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Wire<S> {
    #[serde(rename = "apiVersion")]
    _api_version: Option<IgnoredAny>,
    #[serde(rename = "kind")]
    _kind: Option<IgnoredAny>,
    metadata: Option<ObjectMeta>,
    spec: Option<S>,
    #[serde(rename = "status")]
    _status: Option<IgnoredAny>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct PodSpecWire {
    containers: Option<Vec<ContainerWire>>,
    restart_policy: Option<RestartPolicy>,
    #[serde(rename = "terminationGracePeriodSeconds")]
    _termination_grace_period_seconds: Option<IgnoredAny>,
    #[serde(rename = "dnsPolicy")]
    _dns_policy: Option<IgnoredAny>,
    #[serde(rename = "securityContext")]
    _security_context: Option<IgnoredAny>,
    service_account_name: Option<String>,
    /// The deprecated name of `serviceAccountName`.
    service_account: Option<String>,
    #[serde(rename = "automountServiceAccountToken")]
    _automount_service_account_token: Option<IgnoredAny>,
    #[serde(rename = "enableServiceLinks")]
    _enable_service_links: Option<IgnoredAny>,
    #[serde(rename = "schedulerName")]
    _scheduler_name: Option<IgnoredAny>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ContainerWire {
    name: Option<String>,
    image: Option<String>,
    command: Option<Vec<String>>,
    args: Option<Vec<String>>,
    ports: Option<Vec<ContainerPortWire>>,
    env: Option<Vec<EnvVarWire>>,
    #[serde(rename = "imagePullPolicy")]
    _image_pull_policy: Option<IgnoredAny>,
    #[serde(rename = "resources")]
    _resources: Option<IgnoredAny>,
    #[serde(rename = "readinessProbe")]
    _readiness_probe: Option<IgnoredAny>,
    #[serde(rename = "livenessProbe")]
    _liveness_probe: Option<IgnoredAny>,
    #[serde(rename = "startupProbe")]
    _startup_probe: Option<IgnoredAny>,
    #[serde(rename = "securityContext")]
    _security_context: Option<IgnoredAny>,
    #[serde(rename = "terminationMessagePath")]
    _termination_message_path: Option<IgnoredAny>,
    #[serde(rename = "terminationMessagePolicy")]
    _termination_message_policy: Option<IgnoredAny>,
    #[serde(rename = "stdin")]
    _stdin: Option<IgnoredAny>,
    #[serde(rename = "tty")]
    _tty: Option<IgnoredAny>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ContainerPortWire {
    container_port: Option<i64>,
    name: Option<String>,
    protocol: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct EnvVarWire {
    name: String,
    value: Option<String>,
    value_from: Option<IgnoredAny>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct DeploymentSpecWire {
    replicas: Option<u32>,
    selector: Option<LabelSelectorWire>,
    template: Option<PodTemplateWire>,
    #[serde(rename = "strategy")]
    _strategy: Option<IgnoredAny>,
    #[serde(rename = "revisionHistoryLimit")]
    _revision_history_limit: Option<IgnoredAny>,
    #[serde(rename = "progressDeadlineSeconds")]
    _progress_deadline_seconds: Option<IgnoredAny>,
    #[serde(rename = "minReadySeconds")]
    _min_ready_seconds: Option<IgnoredAny>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct LabelSelectorWire {
    match_labels: Option<BTreeMap<String, String>>,
    match_expressions: Option<IgnoredAny>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PodTemplateWire {
    metadata: Option<ObjectMeta>,
    spec: Option<PodSpecWire>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ServiceSpecWire {
    #[serde(rename = "type")]
    service_type: Option<String>,
    selector: Option<BTreeMap<String, String>>,
    ports: Option<Vec<ServicePortWire>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ServicePortWire {
    name: Option<String>,
    port: Option<i64>,
    target_port: Option<Value>,
    protocol: Option<String>,
    node_port: Option<i64>,
    #[serde(rename = "appProtocol")]
    _app_protocol: Option<IgnoredAny>,
}

// ---------------------------------------------------------------------------------------------
// Validation

/// The checks of one manifest document, on top of the shared [`Checker`].
struct Ctx<'d> {
    check: Checker<'d>,
}

impl<'d> Ctx<'d> {
    /// Decodes the document into `Wire<S>`; `None` if it could not be decoded, or had to be
    /// repaired with list items dropped (then paths would no longer match the file).
    fn decode<S: DeserializeOwned>(doc: &'d Document) -> (Ctx<'d>, Option<Wire<S>>) {
        let d = doc.decode::<Wire<S>>("");
        let value = if d.paths_exact { d.value } else { None };
        let check = Checker::new(doc, d.errors);
        (Ctx { check }, value)
    }

    fn unsupported(&mut self, path: &str, what: &str, hint: &str) {
        let e = unsupported_k8s(self.check.doc, path, what, hint);
        self.check.errors.push(e);
    }

    /// Metadata of a namespaced object (or, with `namespaced` false, of a Namespace).
    fn meta(
        &mut self,
        meta: Option<ObjectMeta>,
        rule: NameRule,
        namespaced: bool,
        kind: &str,
    ) -> Option<Meta> {
        let Some(meta) = meta else {
            self.check.missing(
                "",
                "metadata",
                format!("a {kind} needs `metadata` with a `name`"),
                "add `metadata:` with `name: my-name`",
            );
            return None;
        };
        self.check.metadata(&meta, rule, namespaced, kind);
        Some(Meta {
            name: meta.name?,
            namespace: meta.namespace.unwrap_or_else(|| "default".into()),
            labels: meta.labels.unwrap_or_default(),
            annotations: meta.annotations.unwrap_or_default(),
        })
    }

    /// The object if no error was found in its document.
    fn finish(self, object: Option<Object>) -> (Option<Object>, Vec<Located>) {
        let object = if self.check.errors.is_empty() {
            object
        } else {
            None
        };
        (object, self.check.errors)
    }

    fn protocol(&mut self, path: &str, protocol: Option<&str>) -> Protocol {
        match protocol {
            None | Some("TCP") => Protocol::Tcp,
            Some("UDP") => Protocol::Udp,
            Some("SCTP") => {
                self.unsupported(path, "protocol `SCTP`", "the lab runs TCP and UDP services");
                Protocol::Tcp
            }
            Some(other) => {
                let hint = match suggest(other, ["TCP", "UDP"]) {
                    Some(s) => format!("did you mean `{s}`?"),
                    None => "write `TCP` or `UDP`".into(),
                };
                self.check
                    .invalid_value(path, format!("`{other}` is not a protocol"), Some(hint));
                Protocol::Tcp
            }
        }
    }

    fn port_number(&mut self, path: &str, n: i64, what: &str) -> Option<u16> {
        match u16::try_from(n) {
            Ok(p) if p > 0 => Some(p),
            _ => {
                self.check.invalid_value(
                    path,
                    format!("{what} {n} is out of range"),
                    Some("ports are 1 to 65535".into()),
                );
                None
            }
        }
    }

    fn pod_spec(&mut self, path: &str, spec: Option<PodSpecWire>, kind: &str) -> PodSpec {
        let Some(spec) = spec else {
            let (parent, field) = path.rsplit_once('.').unwrap_or(("", path));
            self.check.missing(
                parent,
                field,
                format!("a {kind} needs `{field}` with its containers"),
                "add `spec:` with `containers:`",
            );
            return PodSpec::default();
        };
        let containers_path = join_key(path, "containers");
        let mut containers = Vec::new();
        match spec.containers {
            None => self.check.missing(
                path,
                "containers",
                format!("a {kind} needs at least one container"),
                "add `containers: [{name: app, image: IMAGE}]`",
            ),
            Some(list) if list.is_empty() => self.check.invalid(
                &containers_path,
                format!("a {kind} needs at least one container"),
                Some("add `- name: app` with an `image:`".into()),
            ),
            Some(list) => {
                let mut names: HashMap<String, usize> = HashMap::new();
                let mut port_names: HashMap<String, String> = HashMap::new();
                for (i, c) in list.into_iter().enumerate() {
                    let cp = join_index(&containers_path, i);
                    let container = self.container(&cp, c, &mut port_names);
                    if !container.name.is_empty()
                        && let Some(first) = names.insert(container.name.clone(), i)
                    {
                        self.check.invalid_value(
                            &join_key(&cp, "name"),
                            format!(
                                "container name `{}` is already used by containers[{first}]",
                                container.name
                            ),
                            None,
                        );
                    }
                    containers.push(container);
                }
            }
        }
        PodSpec {
            containers,
            restart_policy: spec.restart_policy.unwrap_or_default(),
            service_account: spec.service_account_name.or(spec.service_account),
        }
    }

    fn container(
        &mut self,
        path: &str,
        c: ContainerWire,
        port_names: &mut HashMap<String, String>,
    ) -> Container {
        let name = match c.name {
            None => {
                self.check.missing(
                    path,
                    "name",
                    "a container needs a `name`",
                    "add `name: app`",
                );
                String::new()
            }
            Some(n) => {
                if let Err(e) = names::dns1123_label(&n, "container name") {
                    self.check
                        .invalid_value(&join_key(path, "name"), e.message, e.hint);
                }
                n
            }
        };
        let image = match c.image {
            Some(i) if !i.trim().is_empty() => i,
            Some(_) => {
                self.check.invalid_value(
                    &join_key(path, "image"),
                    "`image` must not be empty",
                    None,
                );
                String::new()
            }
            None => {
                self.check.missing(
                    path,
                    "image",
                    "a container needs an `image`",
                    "add `image:` with one of the lab's images",
                );
                String::new()
            }
        };
        let mut ports = Vec::new();
        for (i, p) in c.ports.into_iter().flatten().enumerate() {
            let pp = join_index(&join_key(path, "ports"), i);
            let protocol = self.protocol(&join_key(&pp, "protocol"), p.protocol.as_deref());
            let number = match p.container_port {
                None => {
                    self.check.missing(
                        &pp,
                        "containerPort",
                        "a container port needs `containerPort`",
                        "add `containerPort: 80`",
                    );
                    None
                }
                Some(n) => self.port_number(&join_key(&pp, "containerPort"), n, "containerPort"),
            };
            if let Some(n) = &p.name {
                let np = join_key(&pp, "name");
                if let Err(e) = names::port_name(n, true) {
                    self.check.invalid_value(&np, e.message, e.hint);
                } else if let Some(other) = port_names.insert(n.clone(), pp.clone()) {
                    self.check.invalid_value(
                        &np,
                        format!("port name `{n}` is already used at {other}"),
                        Some("port names must be unique within a pod".into()),
                    );
                }
            }
            if let Some(container_port) = number {
                ports.push(ContainerPort {
                    container_port,
                    name: p.name,
                    protocol,
                });
            }
        }
        let mut env = Vec::new();
        for (i, e) in c.env.into_iter().flatten().enumerate() {
            let ep = join_index(&join_key(path, "env"), i);
            if e.name.is_empty() || e.name.contains('=') {
                self.check.invalid_value(
                    &join_key(&ep, "name"),
                    format!("`{}` is not a valid environment variable name", e.name),
                    Some("use letters, digits and `_`, without `=`".into()),
                );
            }
            if e.value_from.is_some() {
                self.unsupported(
                    &join_key(&ep, "valueFrom"),
                    "`valueFrom`",
                    "write the value with `value:`",
                );
            }
            env.push(EnvVar {
                name: e.name,
                value: e.value.unwrap_or_default(),
            });
        }
        Container {
            name,
            image,
            command: c.command.unwrap_or_default(),
            args: c.args.unwrap_or_default(),
            ports,
            env,
        }
    }
}

/// A Namespace has nothing but metadata (a `spec` is accepted and ignored).
fn namespace(_: &mut Ctx<'_>, meta: Option<Meta>, _: Option<IgnoredAny>) -> Option<Object> {
    meta.map(|m| {
        Object::Namespace(NamespaceObject {
            name: m.name,
            labels: m.labels,
            annotations: m.annotations,
        })
    })
}

/// A ServiceAccount: only its name matters here (pods name it; Cilium labels their identity).
fn service_account(_: &mut Ctx<'_>, meta: Option<Meta>, _: Option<IgnoredAny>) -> Option<Object> {
    meta.map(Object::ServiceAccount)
}

fn pod(ctx: &mut Ctx<'_>, meta: Option<Meta>, spec: Option<PodSpecWire>) -> Option<Object> {
    let spec = ctx.pod_spec("spec", spec, "Pod");
    meta.map(|meta| Object::Pod(PodObject { meta, spec }))
}

fn deployment(
    ctx: &mut Ctx<'_>,
    meta: Option<Meta>,
    spec: Option<DeploymentSpecWire>,
) -> Option<Object> {
    let Some(spec) = spec else {
        ctx.check.missing(
            "",
            "spec",
            "a Deployment needs a `spec`",
            "add `spec:` with `replicas`, `selector` and `template`",
        );
        return None;
    };
    // The template first: the selector is checked against its labels.
    let mut template = PodTemplate::default();
    match spec.template {
        None => ctx.check.missing(
            "spec",
            "template",
            "a Deployment needs a pod `template`",
            "add `template:` with `metadata.labels` and a pod `spec`",
        ),
        Some(t) => {
            if let Some(m) = t.metadata {
                let at = "spec.template.metadata";
                let mut errors = yaml::check_metadata(
                    ctx.check.doc,
                    at,
                    &m,
                    NameRule::Subdomain,
                    true,
                    "pod template",
                );
                // A template needs no name of its own.
                errors.retain(|e| e.field != at);
                ctx.check.errors.extend(errors);
                template.labels = m.labels.unwrap_or_default();
                template.annotations = m.annotations.unwrap_or_default();
            }
            template.spec = ctx.pod_spec("spec.template.spec", t.spec, "pod template");
            if template.spec.restart_policy != RestartPolicy::Always {
                ctx.check.invalid_value(
                    "spec.template.spec.restartPolicy",
                    "the pods of a Deployment must use `restartPolicy: Always`",
                    Some("remove `restartPolicy`, or use a Pod for one-off runs".into()),
                );
            }
        }
    }
    let mut selector = BTreeMap::new();
    match spec.selector {
        None => ctx.check.missing(
            "spec",
            "selector",
            "a Deployment needs `selector.matchLabels`",
            "add `selector: {matchLabels: {...}}` with labels of the template",
        ),
        Some(s) => {
            if s.match_expressions.is_some() {
                ctx.unsupported(
                    "spec.selector.matchExpressions",
                    "`matchExpressions`",
                    "select the pods with `matchLabels`",
                );
            }
            selector = s.match_labels.unwrap_or_default();
            if selector.is_empty() && s.match_expressions.is_none() {
                ctx.check.invalid(
                    "spec.selector",
                    "`selector.matchLabels` must not be empty",
                    Some("copy the template's labels into it".into()),
                );
            }
            for (k, v) in &selector {
                if template.labels.get(k) != Some(v) {
                    ctx.check.invalid(
                        &join_key("spec.selector.matchLabels", k),
                        format!("the selector `{k}: {v}` does not match the template's labels"),
                        Some(format!("the template's labels must include `{k}: {v}`")),
                    );
                }
            }
        }
    }
    meta.map(|meta| {
        Object::Deployment(DeploymentObject {
            meta,
            replicas: spec.replicas.unwrap_or(1),
            selector,
            template,
        })
    })
}

fn service(ctx: &mut Ctx<'_>, meta: Option<Meta>, spec: Option<ServiceSpecWire>) -> Option<Object> {
    let Some(spec) = spec else {
        ctx.check.missing(
            "",
            "spec",
            "a Service needs a `spec`",
            "add `spec:` with `selector` and `ports`",
        );
        return None;
    };
    let service_type = match spec.service_type.as_deref() {
        None | Some("ClusterIP") => ServiceType::ClusterIP,
        Some("NodePort") => ServiceType::NodePort,
        Some(t @ ("LoadBalancer" | "ExternalName")) => {
            ctx.unsupported(
                "spec.type",
                &format!("type `{t}`"),
                "use `ClusterIP`, or `NodePort` to reach it from outside",
            );
            ServiceType::ClusterIP
        }
        Some(t) => {
            let hint = match suggest(t, ["ClusterIP", "NodePort"]) {
                Some(s) => format!("did you mean `{s}`?"),
                None => "write `ClusterIP` (the default) or `NodePort`".into(),
            };
            ctx.check.invalid_value(
                "spec.type",
                format!("`{t}` is not a service type"),
                Some(hint),
            );
            ServiceType::ClusterIP
        }
    };
    let selector = spec.selector.unwrap_or_default();
    if selector.is_empty() && !ctx.check.suggested.contains("spec.selector") {
        ctx.unsupported(
            if ctx.check.doc.get("spec.selector").is_some() {
                "spec.selector"
            } else {
                "spec"
            },
            "a Service without a selector",
            "add `selector:` with the labels of the pods to serve",
        );
    }
    for (k, v) in &selector {
        let p = join_key("spec.selector", k);
        if let Err(e) = enforcer::policy::selector::validate_k8s_label_key(k) {
            ctx.check.invalid(&p, e.message, e.hint);
        }
        if let Err(e) = enforcer::policy::selector::validate_label_value(v) {
            ctx.check.invalid_value(&p, e.message, e.hint);
        }
    }
    let wire_ports = spec.ports.unwrap_or_default();
    if wire_ports.is_empty() {
        let p = if ctx.check.doc.get("spec.ports").is_some() {
            "spec.ports"
        } else {
            "spec"
        };
        if !ctx.check.suggested.contains("spec.ports") {
            ctx.check.invalid(
                p,
                "a Service needs at least one port",
                Some("add `ports: [{port: 80}]`".into()),
            );
        }
    }
    let many = wire_ports.len() > 1;
    let mut ports = Vec::new();
    let mut names_seen: HashMap<String, usize> = HashMap::new();
    let mut pairs_seen: HashMap<(u16, Protocol), usize> = HashMap::new();
    for (i, p) in wire_ports.into_iter().enumerate() {
        let pp = join_index("spec.ports", i);
        let protocol = ctx.protocol(&join_key(&pp, "protocol"), p.protocol.as_deref());
        match &p.name {
            None if many => ctx.check.invalid(
                &pp,
                "a Service with several ports needs a `name` for each",
                Some("add `name: http` (lowercase letters, digits and `-`)".into()),
            ),
            None => {}
            Some(n) => {
                if let Err(e) = names::dns1123_label(n, "port name") {
                    ctx.check
                        .invalid_value(&join_key(&pp, "name"), e.message, e.hint);
                } else if let Some(first) = names_seen.insert(n.clone(), i) {
                    ctx.check.invalid_value(
                        &join_key(&pp, "name"),
                        format!("port name `{n}` is already used by ports[{first}]"),
                        None,
                    );
                }
            }
        }
        let port = match p.port {
            None => {
                ctx.check
                    .missing(&pp, "port", "a service port needs `port`", "add `port: 80`");
                None
            }
            Some(n) => ctx.port_number(&join_key(&pp, "port"), n, "port"),
        };
        if let Some(port) = port
            && let Some(first) = pairs_seen.insert((port, protocol), i)
        {
            ctx.check.invalid_value(
                &join_key(&pp, "port"),
                format!("port {port}/{protocol:?} is already listed at ports[{first}]"),
                None,
            );
        }
        let tp = join_key(&pp, "targetPort");
        let target_port = match p.target_port {
            None => port.map(TargetPort::Number),
            Some(Value::Number(n)) => match n.as_i64() {
                Some(n) => ctx
                    .port_number(&tp, n, "targetPort")
                    .map(TargetPort::Number),
                None => {
                    ctx.check.invalid_value(
                        &tp,
                        format!("targetPort {n} is not a port number"),
                        Some("ports are 1 to 65535".into()),
                    );
                    None
                }
            },
            Some(Value::String(s)) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => {
                ctx.check.invalid_value(
                    &tp,
                    format!("targetPort \"{s}\" is a string, so it would name a port"),
                    Some(format!(
                        "write the number without quotes: `targetPort: {s}`"
                    )),
                );
                None
            }
            Some(Value::String(s)) => match names::port_name(&s, true) {
                Ok(()) => Some(TargetPort::Name(s)),
                Err(e) => {
                    ctx.check.invalid_value(&tp, e.message, e.hint);
                    None
                }
            },
            Some(_) => {
                ctx.check.invalid_value(
                    &tp,
                    "`targetPort` must be a port number or the name of a container port",
                    None,
                );
                None
            }
        };
        let np = join_key(&pp, "nodePort");
        let node_port = match (p.node_port, service_type) {
            (None, _) => None,
            (Some(n), ServiceType::NodePort) => match u16::try_from(n) {
                Ok(n) if (NODE_PORT_RANGE.0..=NODE_PORT_RANGE.1).contains(&n) => Some(n),
                _ => {
                    ctx.check.invalid_value(
                        &np,
                        format!("nodePort {n} is outside the range 30000 to 32767"),
                        Some("leave `nodePort` out to get a free one".into()),
                    );
                    None
                }
            },
            (Some(_), ServiceType::ClusterIP) => {
                ctx.check.invalid(
                    &np,
                    "`nodePort` is only allowed with `type: NodePort`",
                    Some("add `type: NodePort` to the spec, or remove `nodePort`".into()),
                );
                None
            }
        };
        if let (Some(port), Some(target_port)) = (port, target_port) {
            ports.push(ServicePort {
                name: p.name,
                port,
                target_port,
                protocol,
                node_port,
            });
        }
    }
    meta.map(|meta| {
        Object::Service(ServiceObject {
            meta,
            service_type,
            selector,
            ports,
        })
    })
}

#[cfg(test)]
mod tests {
    use std::{
        fs,
        path::{Path, PathBuf},
    };

    use super::*;

    fn data_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/manifests")
    }

    fn source(path: &Path) -> Source {
        let rel = path
            .strip_prefix(data_dir())
            .unwrap()
            .to_str()
            .unwrap()
            .to_owned();
        Source::new(rel, fs::read_to_string(path).unwrap())
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn starwars() {
        let objects =
            parse_manifests(&source(&data_dir().join("starwars.yaml"))).unwrap_or_else(|e| {
                panic!(
                    "{}",
                    e.iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join("\n")
                )
            });
        let kinds: Vec<(&str, &str)> = objects.iter().map(|(o, _)| (o.kind(), o.name())).collect();
        assert_eq!(
            kinds,
            [
                ("Service", "deathstar"),
                ("Deployment", "deathstar"),
                ("Pod", "tiefighter"),
                ("Pod", "xwing")
            ]
        );
        let Object::Service(svc) = &objects[0].0 else {
            panic!()
        };
        assert_eq!(svc.meta.namespace, "default");
        assert_eq!(svc.service_type, ServiceType::ClusterIP);
        assert_eq!(
            svc.selector,
            labels(&[("org", "empire"), ("class", "deathstar")])
        );
        assert_eq!(
            svc.ports,
            [ServicePort {
                name: None,
                port: 80,
                target_port: TargetPort::Number(80),
                protocol: Protocol::Tcp,
                node_port: None
            }]
        );
        let Object::Deployment(d) = &objects[1].0 else {
            panic!()
        };
        assert_eq!(d.replicas, 2);
        assert_eq!(
            d.selector,
            labels(&[("org", "empire"), ("class", "deathstar")])
        );
        assert!(
            d.template
                .labels
                .get("class")
                .is_some_and(|c| c == "deathstar")
        );
        assert_eq!(
            d.template.spec.containers[0].image,
            "quay.io/cilium/starwars:v2.1"
        );
        assert_eq!(d.template.spec.containers[0].ports[0].container_port, 80);
        assert_eq!(d.template.spec.restart_policy, RestartPolicy::Always);
        for (i, (org, class)) in [(2, ("empire", "tiefighter")), (3, ("alliance", "xwing"))] {
            let Object::Pod(p) = &objects[i].0 else {
                panic!()
            };
            assert_eq!(p.meta.labels, labels(&[("org", org), ("class", class)]));
            assert_eq!(
                p.spec.containers[0].image,
                "quay.io/cilium/json-mock:v1.3.8"
            );
        }
        assert_eq!(objects[2].1.document, 2);
        assert_eq!(objects[2].1.file, "starwars.yaml");
    }

    #[test]
    fn tolerated_fields_and_defaults() {
        let text = "apiVersion: v1\nkind: Pod\nmetadata: {name: p, namespace: space, uid: x}\nspec:\n  terminationGracePeriodSeconds: 0\n  containers:\n  - name: c\n    image: busybox\n    imagePullPolicy: IfNotPresent\n    resources: {limits: {cpu: 1}}\n    readinessProbe: {httpGet: {port: 80}}\n    ports: [{containerPort: 53, protocol: UDP, name: dns}]\n    env: [{name: A, value: \"1\"}]\nstatus: {phase: Running}\n";
        let objects = parse_manifests(&Source::new("t.yaml", text)).unwrap();
        let Object::Pod(p) = &objects[0].0 else {
            panic!()
        };
        assert_eq!(p.meta.namespace, "space");
        assert_eq!(p.spec.restart_policy, RestartPolicy::Always);
        let c = &p.spec.containers[0];
        assert_eq!(
            c.ports,
            [ContainerPort {
                container_port: 53,
                name: Some("dns".into()),
                protocol: Protocol::Udp
            }]
        );
        assert_eq!(
            c.env,
            [EnvVar {
                name: "A".into(),
                value: "1".into()
            }]
        );
    }

    #[test]
    fn node_port_service_and_named_target() {
        let text = "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec:\n  type: NodePort\n  selector: {app: web}\n  ports:\n  - {name: http, port: 80, targetPort: http, nodePort: 30080}\n  - {name: dns, port: 53, protocol: UDP}\n";
        let objects = parse_manifests(&Source::new("t.yaml", text)).unwrap();
        let Object::Service(s) = &objects[0].0 else {
            panic!()
        };
        assert_eq!(s.service_type, ServiceType::NodePort);
        assert_eq!(s.ports[0].target_port, TargetPort::Name("http".into()));
        assert_eq!(s.ports[0].node_port, Some(30080));
        assert_eq!(
            (s.ports[1].target_port.clone(), s.ports[1].protocol),
            (TargetPort::Number(53), Protocol::Udp)
        );
    }

    #[test]
    fn namespaces_and_policies_in_one_file() {
        let text = "apiVersion: v1\nkind: Namespace\nmetadata: {name: space, labels: {team: a}}\n---\napiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: p, namespace: space}\nspec: {endpointSelector: {}, ingress: [{}]}\n";
        let src = Source::new("t.yaml", text);
        let bundle = parse_all(&src).unwrap();
        assert_eq!(bundle.objects.len(), 1);
        assert_eq!(bundle.objects[0].0.namespace(), None);
        assert_eq!(bundle.policies[0].qualified_name(), "space/p");
        let e = parse_manifests(&src).unwrap_err();
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].line, 6);
    }

    /// Every broken fixture gives exactly the errors in its `.expected` file
    /// (`UPDATE_EXPECT=1` rewrites them).
    #[test]
    fn invalid_manifests() {
        let update = std::env::var_os("UPDATE_EXPECT").is_some();
        let mut files: Vec<PathBuf> = fs::read_dir(data_dir().join("invalid"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
            .collect();
        files.sort();
        assert!(!files.is_empty());
        let mut failures = Vec::new();
        for path in files {
            let src = source(&path);
            let actual: String = match parse_manifests(&src) {
                Ok(_) => panic!("{} should not parse", src.name),
                Err(errors) => errors.iter().map(|e| format!("{e}\n")).collect(),
            };
            let expected_path = path.with_extension("expected");
            if update {
                fs::write(&expected_path, &actual).unwrap();
            } else if fs::read_to_string(&expected_path).unwrap_or_default() != actual {
                failures.push(format!("--- {}\n{actual}", expected_path.display()));
            }
        }
        assert!(
            failures.is_empty(),
            "fixtures differ (UPDATE_EXPECT=1 rewrites them):\n{}",
            failures.join("\n")
        );
    }
}
