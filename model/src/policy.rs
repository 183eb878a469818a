//! Policies through the control API: applying, deleting and listing them, audit mode, the
//! connection limits with their counts, the XDP prefilter, and `lab audit`'s findings.

use serde::{Deserialize, Serialize};

/// `POST /api/policies`: policy documents (YAML or JSON, several per text).
#[derive(Debug, Deserialize, Serialize, Clone, PartialEq, Eq)]
pub struct ApplyRequest {
    /// Where the text came from (a file name, `-`, or `web editor`), for error messages.
    pub source: String,
    pub text: String,
    /// Validate and resolve, but change nothing.
    #[serde(default)]
    pub dry_run: bool,
}

/// What applying did.
#[derive(Debug, Deserialize, Serialize, Clone, PartialEq, Eq)]
pub struct ApplyResult {
    pub dry_run: bool,
    /// The policy revision now in force (not for a dry run).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub revision: Option<u64>,
    pub results: Vec<Applied>,
}

impl ApplyResult {
    /// `created rule1, unchanged rule2`.
    pub fn describe(&self) -> String {
        let parts: Vec<String> = self
            .results
            .iter()
            .map(|r| format!("{} {}", r.action.name(), r.name))
            .collect();
        if parts.is_empty() {
            "applied".into()
        } else {
            parts.join(", ")
        }
    }
}

/// One document of an apply.
#[derive(Debug, Deserialize, Serialize, Clone, PartialEq, Eq)]
pub struct Applied {
    /// `CiliumNetworkPolicy`, `CiliumClusterwideNetworkPolicy`, `CiliumCIDRGroup`,
    /// `ConnectionLimit`.
    pub kind: String,
    pub name: String,
    pub namespace: Option<String>,
    pub action: ApplyAction,
    /// In audit mode (would-be drops are forwarded).
    pub audit: bool,
}

impl Applied {
    /// `ciliumnetworkpolicy.cilium.io/rule1`, as kubectl names what it applied.
    pub fn resource(&self) -> String {
        let kind = self.kind.to_lowercase();
        let group = match kind.as_str() {
            "connectionlimit" => "lab.dev",
            "networkpolicy" => "networking.k8s.io",
            _ => "cilium.io",
        };
        format!("{kind}.{group}/{}", self.name)
    }
}

/// What an apply did to one object, in kubectl's words.
#[derive(Debug, Deserialize, Serialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ApplyAction {
    Created,
    Configured,
    Unchanged,
}

impl ApplyAction {
    pub fn name(self) -> &'static str {
        match self {
            ApplyAction::Created => "created",
            ApplyAction::Configured => "configured",
            ApplyAction::Unchanged => "unchanged",
        }
    }
}

/// The kinds `lab policy` manages, each with kubectl's short name.
pub const POLICY_KINDS: [(&str, Option<&str>); 5] = [
    ("CiliumNetworkPolicy", Some("cnp")),
    ("CiliumClusterwideNetworkPolicy", Some("ccnp")),
    ("NetworkPolicy", Some("netpol")),
    ("CiliumCIDRGroup", Some("ccg")),
    ("ConnectionLimit", None),
];

/// The kind a word names, as kubectl reads a resource type: the kind in any case, its plural,
/// or its short name (`ccg`, `CiliumCIDRGroup`, `ciliumcidrgroups`).
pub fn policy_kind(word: &str) -> Option<&'static str> {
    let w = word.to_ascii_lowercase();
    POLICY_KINDS.iter().find_map(|(kind, short)| {
        let k = kind.to_ascii_lowercase();
        let plural = match k.strip_suffix('y') {
            Some(stem) => format!("{stem}ies"),
            None => format!("{k}s"),
        };
        (w == k || w == plural || Some(w.as_str()) == *short).then_some(*kind)
    })
}

/// `DELETE /api/policies`: by name (of one kind, or of any), by the documents of a text, or all.
#[derive(Debug, Default, Deserialize, Serialize, Clone, PartialEq, Eq)]
pub struct DeleteRequest {
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub name: Option<String>,
    /// With `name`: only objects of this kind (as [`policy_kind`] gives it).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub kind: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub namespace: Option<String>,
    /// Delete the policies named in this manifest text.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub text: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub source: Option<String>,
    #[serde(default)]
    pub all: bool,
}

#[derive(Debug, Deserialize, Serialize, Clone, PartialEq, Eq)]
pub struct DeleteResult {
    /// `cnp/default/rule1`, `connectionlimit/default/deathstar`.
    pub deleted: Vec<String>,
    pub revision: u64,
}

impl DeleteResult {
    pub fn describe(&self) -> String {
        if self.deleted.is_empty() {
            "there were no policies: nothing to delete".into()
        } else {
            format!("deleted {}", self.deleted.join(", "))
        }
    }
}

/// `POST /api/policies/{ns}/{name}/audit`: one policy in audit mode, or back.
#[derive(Debug, Deserialize, Serialize, Clone, Copy, PartialEq, Eq)]
pub struct AuditSwitch {
    pub audit: bool,
}

/// The answer: which policy, and its mode now.
#[derive(Debug, Deserialize, Serialize, Clone, PartialEq, Eq)]
pub struct PolicyAudit {
    pub policy: String,
    pub audit: bool,
}

/// Lab-wide audit mode, `GET`/`POST /api/audit-mode`.
#[derive(Debug, Deserialize, Serialize, Clone, Copy, PartialEq, Eq)]
pub struct AuditMode {
    pub audit_mode: bool,
}

/// A policy in force, `GET /api/policies`.
#[derive(Debug, Deserialize, Serialize, Clone, PartialEq)]
pub struct PolicyEntry {
    pub kind: String,
    pub name: String,
    pub namespace: Option<String>,
    pub audit: bool,
    /// Where it was applied from (`file:line (document N)`).
    pub source: String,
    /// The document as the user wrote it.
    pub manifest: serde_json::Value,
}

/// A connection limit's count for one pod (and one peer identity when counted per peer),
/// `GET /api/limits`.
#[derive(Debug, Deserialize, Serialize, Clone, PartialEq, Eq)]
pub struct LimitStatus {
    /// `namespace/name` of the ConnectionLimit.
    pub limit: String,
    /// `namespace/name` of the pod.
    pub pod: String,
    pub port: u16,
    /// `None`: one count shared by every peer.
    pub peer_identity: Option<u32>,
    pub connections: u64,
    pub max: u32,
}

/// The XDP prefilter on the node's external interface, `GET /api/prefilter`.
#[derive(Debug, Deserialize, Serialize, Clone, PartialEq, Eq)]
pub struct PrefilterState {
    pub interface: String,
    /// Denied source CIDRs.
    pub deny: Vec<String>,
    /// NodePorts that skip every policy (the incident lesson's unsafe switch).
    pub bypass_node_ports: Vec<u16>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub warning: Option<String>,
}

impl PrefilterState {
    /// `XDP prefilter on ext0: deny 198.51.100.0/24`, the first line `lab prefilter list` prints.
    pub fn headline(&self) -> String {
        format!(
            "XDP prefilter on {}: deny {}",
            self.interface,
            if self.deny.is_empty() {
                "nothing".into()
            } else {
                self.deny.join(", ")
            }
        )
    }

    /// One line: the headline and the bypass warnings after `; `.
    pub fn describe(&self) -> String {
        let mut s = self.headline();
        for p in &self.bypass_node_ports {
            s.push_str(&format!("; {}", Self::bypass_warning(*p)));
        }
        s
    }

    pub fn bypass_warning(node_port: u16) -> String {
        format!("UNSAFE: NodePort {node_port} skips every network policy")
    }
}

/// `POST /api/prefilter`: a change to the deny list or to a NodePort's bypass.
#[derive(Debug, Deserialize, Serialize, Clone, PartialEq, Eq)]
#[serde(tag = "action", rename_all = "lowercase")]
pub enum PrefilterChange {
    Update {
        cidrs: Vec<String>,
    },
    Delete {
        cidrs: Vec<String>,
    },
    Bypass {
        node_port: u16,
        enabled: bool,
        /// The confirmation that turning it on is meant.
        #[serde(rename = "unsafe", default)]
        unsafe_ok: bool,
    },
}

impl PrefilterChange {
    /// The same change from a terminal.
    pub fn cli(&self, quote: impl Fn(&str) -> String) -> String {
        match self {
            PrefilterChange::Update { cidrs } | PrefilterChange::Delete { cidrs } => {
                let verb = if matches!(self, PrefilterChange::Update { .. }) {
                    "update"
                } else {
                    "delete"
                };
                let mut s = format!("lab prefilter {verb}");
                for c in cidrs {
                    s.push_str(" --cidr ");
                    s.push_str(&quote(c));
                }
                s
            }
            PrefilterChange::Bypass {
                node_port,
                enabled,
                unsafe_ok,
            } => {
                let flag = match (enabled, unsafe_ok) {
                    (true, true) => " --unsafe",
                    (true, false) => "",
                    (false, _) => " --off",
                };
                format!("lab prefilter bypass --node-port {node_port}{flag}")
            }
        }
    }
}

/// `POST /api/audit`: policy files to audit on top of the running lab's state.
#[derive(Debug, Default, Deserialize, Serialize, Clone, PartialEq, Eq)]
pub struct AuditRequest {
    #[serde(default)]
    pub files: Vec<AuditFile>,
}

#[derive(Debug, Deserialize, Serialize, Clone, PartialEq, Eq)]
pub struct AuditFile {
    pub source: String,
    pub text: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "low" => Some(Self::Low),
            "medium" => Some(Self::Medium),
            "high" => Some(Self::High),
            "critical" => Some(Self::Critical),
            _ => None,
        }
    }

    /// `medium`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Low => "low",
            Self::Medium => "medium",
            Self::High => "high",
            Self::Critical => "critical",
        }
    }

    /// `MEDIUM`.
    pub fn label(self) -> &'static str {
        match self {
            Self::Low => "LOW",
            Self::Medium => "MEDIUM",
            Self::High => "HIGH",
            Self::Critical => "CRITICAL",
        }
    }
}

/// One finding of `lab audit`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Finding {
    pub severity: Severity,
    /// A short stable name of the check.
    pub check: String,
    /// `file:line` of the offending field, or the live object (`service default/inventory`).
    pub location: String,
    pub problem: String,
    pub why: String,
    pub fix: String,
}

impl Finding {
    /// The finding as `lab audit` prints it: a headline and where, why, and the fix.
    pub fn render(&self) -> String {
        format!(
            "{} [{}] {}\n  at:   {}\n  why:  {}\n  fix:  {}\n",
            self.severity.label(),
            self.check,
            self.problem,
            self.location,
            self.why,
            self.fix
        )
    }
}

/// One error at a place in a file: a refused document's problem, shown as
/// `FILE:LINE:COL: FIELD: MESSAGE` (without `FIELD: ` when the field is the document root or
/// the error is a syntax error), followed by `\n  hint: HINT` when there is a hint; the web
/// editor shows it at its line. Lines and columns are 1-based.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Located {
    pub file: String,
    pub line: usize,
    pub column: usize,
    /// Field path such as `spec.ingress[0].fromEndpoints`; `""` for syntax errors and the root.
    pub field: String,
    pub message: String,
    pub hint: Option<String>,
    pub kind: ErrorKind,
}

impl Located {
    pub fn new(
        file: impl Into<String>,
        (line, column): (usize, usize),
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Located {
            file: file.into(),
            line,
            column,
            field: field.into(),
            message: message.into(),
            hint: None,
            kind: ErrorKind::Invalid,
        }
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    pub fn with_kind(mut self, kind: ErrorKind) -> Self {
        self.kind = kind;
        self
    }
}

impl std::fmt::Display for Located {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}:{}: ", self.file, self.line, self.column)?;
        if !self.field.is_empty() {
            write!(f, "{}: ", self.field)?;
        }
        f.write_str(&self.message)?;
        if let Some(hint) = &self.hint {
            write!(f, "\n  hint: {hint}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Located {}

/// The largest policy or manifest file the lab reads (4 MiB; a Kubernetes object is at most about
/// 1.5 MB). Larger files are refused with an error that names them, before they are parsed.
pub const MAX_SOURCE_BYTES: usize = 4 << 20;

/// What kind of problem a [`Located`] error reports.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum ErrorKind {
    /// The text is not valid YAML.
    Syntax,
    /// The document is not a valid object: wrong type, unknown field, bad value.
    Invalid,
    /// Valid upstream (Cilium or Kubernetes) but not implemented by the lab yet.
    Unsupported,
}

#[cfg(test)]
mod tests {
    use super::policy_kind;

    #[test]
    fn kinds_as_kubectl_names_them() {
        for (word, kind) in [
            ("ccg", Some("CiliumCIDRGroup")),
            ("CiliumCIDRGroup", Some("CiliumCIDRGroup")),
            ("ciliumcidrgroups", Some("CiliumCIDRGroup")),
            ("cnp", Some("CiliumNetworkPolicy")),
            ("ciliumnetworkpolicies", Some("CiliumNetworkPolicy")),
            ("ccnp", Some("CiliumClusterwideNetworkPolicy")),
            ("netpol", Some("NetworkPolicy")),
            ("networkpolicies", Some("NetworkPolicy")),
            ("connectionlimit", Some("ConnectionLimit")),
            ("rule1", None),
            ("ccgs", None),
        ] {
            assert_eq!(policy_kind(word), kind, "{word}");
        }
    }
}
