//! The policies Cilium itself publishes, against the lab's validation: every
//! CiliumNetworkPolicy and CiliumClusterwideNetworkPolicy document of the corpus in
//! `tests/data/cilium-corpus` (see its README.md and PROVENANCE.md) is loaded through the one
//! path that decides whether the lab accepts a policy, offline (no root, no kernel), and its
//! outcome compared with `tests/data/corpus-expected.txt`:
//!
//! ```text
//! # 131 of 194 accepted
//! examples/policies/l3/simple/l3.yaml#0 accepted
//! examples/policies/l3/fqdn/fqdn.yaml#0 refused: `toFQDNs` is valid Cilium but not supported
//! ```
//!
//! One line per document (`FILE#INDEX`, the index among the file's documents); `refused: TEXT`
//! passes when one of the document's errors contains TEXT (edit it down to the part that
//! matters). The Go-templated connectivity manifests are read from their `rendered/` copies.
//!
//! `UPDATE_EXPECT=1 cargo test -p enforcer --test corpus` rewrites the file after an intended
//! change; review the diff (and the figure in its first line) before committing it.
//!
//! The lab must never accept what a real API server refuses: every document the lab accepts (of
//! the corpus, of the lab's own fixtures and lessons) is also checked against the CRDs'
//! `openAPIV3Schema` (in the corpus, `pkg/k8s/apis/cilium.io/client/crds/v2/`) with a JSON
//! Schema validator, the formats Kubernetes checks included. And the negative fixtures
//! `tests/data/policies/invalid/crd_*.yaml` (each document refused by the schema) and
//! `cilium_*.yaml` (refused by Cilium's own checks) must be refused by the lab.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    fs,
    path::{Path, PathBuf},
};

use enforcer::{
    policy::accept::accept_document,
    yaml::{Document, Located, Segment, Source, parse_documents, path_segments},
};
use serde_json::Value;

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/cilium-corpus")
}

fn expected_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/corpus-expected.txt")
}

/// Every `.yaml`/`.yml`/`.json` file under `dir` (relative to the corpus), sorted.
fn files_under(dir: &str) -> Vec<String> {
    fn walk(root: &Path, rel: &str, out: &mut Vec<String>) {
        for e in fs::read_dir(root.join(rel)).unwrap() {
            let e = e.unwrap();
            let name = e.file_name().to_string_lossy().into_owned();
            let path = format!("{rel}/{name}");
            if e.file_type().unwrap().is_dir() {
                walk(root, &path, out);
            } else if name.ends_with(".yaml") || name.ends_with(".yml") || name.ends_with(".json") {
                out.push(path);
            }
        }
    }
    let mut out = Vec::new();
    walk(&corpus_dir(), dir, &mut out);
    out.sort();
    out
}

/// The corpus's policy files as they are loaded: the upstream examples, and the connectivity
/// manifests (the `rendered/` copy of each templated one).
fn corpus_sources() -> Vec<Source> {
    let root = corpus_dir();
    let read = |rel: &str| fs::read_to_string(root.join(rel)).unwrap();
    let mut out = Vec::new();
    for rel in files_under("examples") {
        out.push(Source::new(rel.clone(), read(&rel)));
    }
    for rel in files_under("cilium-cli") {
        let text = read(&rel);
        let rendered = format!("rendered/{rel}");
        if text.contains("{{") {
            out.push(Source::new(rendered.clone(), read(&rendered)));
        } else {
            out.push(Source::new(rel, text));
        }
    }
    out
}

/// A policy document of the corpus: Cilium's kinds and Kubernetes NetworkPolicy.
fn is_policy(doc: &Document) -> bool {
    is_cilium_policy(doc) || doc.get("kind").and_then(|k| k.as_str()) == Some("NetworkPolicy")
}

/// The kinds the CRD schemas cover (a NetworkPolicy is built into the API server; the lab's
/// unit tests hold it to the API server's checks).
fn is_cilium_policy(doc: &Document) -> bool {
    matches!(
        doc.get("kind").and_then(|k| k.as_str()),
        Some("CiliumNetworkPolicy" | "CiliumClusterwideNetworkPolicy")
    )
}

/// Whether the lab accepts one document, as `lab policy apply` and `lab audit` decide it.
fn outcome(doc: &Document) -> Result<(), Vec<Located>> {
    accept_document(doc).map(|_| ())
}

/// One line per policy document of the corpus, and the errors of the refused ones.
fn outcomes() -> Vec<(String, Result<(), Vec<Located>>)> {
    let mut out = Vec::new();
    for src in corpus_sources() {
        let docs = match parse_documents(&src) {
            Ok(d) => d,
            Err(e) => {
                // Only policy files matter; a file that does not load at all is listed whole.
                if src.text.contains("kind: CiliumNetworkPolicy")
                    || src.text.contains("kind: CiliumClusterwideNetworkPolicy")
                {
                    out.push((format!("{}#*", src.name), Err(vec![e])));
                }
                continue;
            }
        };
        for doc in docs.iter().filter(|d| is_policy(d)) {
            out.push((format!("{}#{}", src.name, doc.index), outcome(doc)));
        }
    }
    out
}

/// The text the expectations file records for a refusal: the first error's message.
fn reason(errors: &[Located]) -> String {
    errors
        .first()
        .map(|e| e.message.replace('\n', " "))
        .unwrap_or_default()
}

fn render(outcomes: &[(String, Result<(), Vec<Located>>)]) -> String {
    let accepted = outcomes.iter().filter(|(_, r)| r.is_ok()).count();
    let mut s = format!("# {accepted} of {} accepted\n", outcomes.len());
    for (id, r) in outcomes {
        match r {
            Ok(()) => writeln!(s, "{id} accepted").unwrap(),
            Err(e) => writeln!(s, "{id} refused: {}", reason(e)).unwrap(),
        }
    }
    s
}

/// The refusals grouped by reason, for the summary the test prints.
fn summary(outcomes: &[(String, Result<(), Vec<Located>>)]) -> String {
    let mut groups: BTreeMap<String, Vec<&str>> = BTreeMap::new();
    for (id, r) in outcomes {
        if let Err(e) = r {
            groups.entry(reason(e)).or_default().push(id);
        }
    }
    let mut s = String::new();
    for (reason, ids) in groups {
        writeln!(s, "{} × {reason}", ids.len()).unwrap();
        for id in ids {
            writeln!(s, "    {id}").unwrap();
        }
    }
    s
}

#[test]
fn corpus_documents_are_accepted_or_refused_as_expected() {
    let outcomes = outcomes();
    eprintln!("{}", render(&outcomes).lines().next().unwrap_or_default());
    eprintln!("{}", summary(&outcomes));
    let path = expected_path();
    if std::env::var_os("UPDATE_EXPECT").is_some() {
        fs::write(&path, render(&outcomes)).unwrap();
        return;
    }
    let text = fs::read_to_string(&path).unwrap_or_default();
    let mut expected: BTreeMap<&str, &str> = BTreeMap::new();
    let mut figure = "";
    for line in text.lines() {
        if line.starts_with("# ") {
            figure = line;
            continue;
        }
        if let Some((id, what)) = line.split_once(' ') {
            expected.insert(id, what);
        }
    }
    let mut problems = Vec::new();
    let actual_figure = render(&outcomes);
    let actual_figure = actual_figure.lines().next().unwrap_or_default();
    if figure != actual_figure {
        problems.push(format!(
            "figure: expected `{figure}`, got `{actual_figure}`"
        ));
    }
    for (id, r) in &outcomes {
        let Some(want) = expected.remove(id.as_str()) else {
            problems.push(format!("{id}: not in the expectations file"));
            continue;
        };
        match (want, r) {
            ("accepted", Ok(())) => {}
            ("accepted", Err(e)) => problems.push(format!(
                "{id}: expected accepted, refused:\n    {}",
                e.iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("\n    ")
            )),
            (w, Ok(())) => problems.push(format!("{id}: expected {w}, accepted")),
            (w, Err(e)) => {
                let text = w.strip_prefix("refused: ").unwrap_or(w);
                if !e.iter().any(|e| e.message.contains(text)) {
                    problems.push(format!(
                        "{id}: expected a refusal containing `{text}`, got:\n    {}",
                        e.iter()
                            .map(ToString::to_string)
                            .collect::<Vec<_>>()
                            .join("\n    ")
                    ));
                }
            }
        }
    }
    for id in expected.keys() {
        problems.push(format!("{id}: listed but not in the corpus"));
    }
    assert!(
        problems.is_empty(),
        "{} difference(s) from {} (UPDATE_EXPECT=1 rewrites it):\n{}",
        problems.len(),
        path.display(),
        problems.join("\n")
    );
}

// ---------------------------------------------------------------------------------------------
// The CRDs' schemas

/// A CRD's `openAPIV3Schema`, as the API server checks it: OpenAPI v3 schemas are JSON Schema
/// draft 4 plus `x-kubernetes-*` annotations, and Kubernetes checks the format `cidr` (Go's
/// `net.ParseCIDR`: an address with a prefix length) but not `idn-hostname`.
fn crd_validator(file: &str) -> jsonschema::Validator {
    let path = corpus_dir()
        .join("pkg/k8s/apis/cilium.io/client/crds/v2")
        .join(file);
    let src = Source::read(path.to_str().unwrap()).unwrap();
    let docs = parse_documents(&src).unwrap();
    let mut schema = docs[0].value["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone();
    assert!(schema.is_object(), "{file}: no openAPIV3Schema");
    go_patterns(&mut schema);
    jsonschema::options()
        .with_draft(jsonschema::Draft::Draft4)
        .should_validate_formats(true)
        .with_format("cidr", is_go_cidr)
        .with_format("idn-hostname", |_: &str| true)
        .build(&schema)
        .unwrap()
}

/// Kubernetes checks `pattern` with Go's regexp, where a one-letter Unicode class may be written
/// without braces (`\PC`); the validator's dialect wants them (`\P{C}`).
fn go_patterns(v: &mut Value) {
    static ONE_LETTER_CLASS: std::sync::LazyLock<regex::Regex> =
        std::sync::LazyLock::new(|| regex::Regex::new(r"\\([pP])([A-Z])").unwrap());
    match v {
        Value::Object(m) => {
            for (k, child) in m.iter_mut() {
                if k == "pattern"
                    && let Value::String(p) = child
                {
                    *p = ONE_LETTER_CLASS.replace_all(p, r"\${1}{${2}}").into_owned();
                } else {
                    go_patterns(child);
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(go_patterns),
        _ => {}
    }
}

/// Go's `net.ParseCIDR`: an IPv4 or IPv6 address, `/`, a prefix length in range.
fn is_go_cidr(s: &str) -> bool {
    let Some((addr, len)) = s.split_once('/') else {
        return false;
    };
    let Ok(ip) = addr.parse::<std::net::IpAddr>() else {
        return false;
    };
    let max = if ip.is_ipv4() { 32 } else { 128 };
    !len.is_empty()
        && len.bytes().all(|b| b.is_ascii_digit())
        && len.parse::<u32>().is_ok_and(|l| l <= max)
}

struct Schemas {
    cnp: jsonschema::Validator,
    ccnp: jsonschema::Validator,
}

impl Schemas {
    fn load() -> Self {
        Schemas {
            cnp: crd_validator("ciliumnetworkpolicies.yaml"),
            ccnp: crd_validator("ciliumclusterwidenetworkpolicies.yaml"),
        }
    }

    /// What the API server would refuse in `doc` as `kubectl` sends it (empty if it accepts
    /// it). The CRDs' one CEL rule (`has(self.spec) || has(self.specs)`) is checked here, as the
    /// validator does not run CEL.
    fn refusals(&self, doc: &Document) -> Vec<String> {
        let value = &as_kubectl_sends(doc);
        let validator = match value.get("kind").and_then(Value::as_str) {
            Some("CiliumClusterwideNetworkPolicy") => &self.ccnp,
            _ => &self.cnp,
        };
        let mut out: Vec<String> = validator
            .iter_errors(value)
            .map(|e| format!("{}: {e}", e.instance_path()))
            .collect();
        if value.get("spec").is_none() && value.get("specs").is_none() {
            out.push("spec or specs must be provided".into());
        }
        out
    }
}

/// The document as `kubectl` sends it: YAML 1.1 reads unquoted `yes`, `on`, `n`, `off`, ... as
/// booleans, where the lab (YAML 1.2) reads strings.
fn as_kubectl_sends(doc: &Document) -> Value {
    let mut value = doc.value.clone();
    for path in doc.locations.yaml11_booleans() {
        let mut v = &mut value;
        for seg in path_segments(path).unwrap_or_default() {
            v = match (seg, v) {
                (Segment::Key(k), Value::Object(m)) => m.get_mut(&k).unwrap(),
                (Segment::Index(i), Value::Array(a)) => &mut a[i],
                _ => unreachable!("{path}"),
            };
        }
        if let Value::String(s) = v {
            *v = Value::Bool(matches!(
                s.as_str(),
                "y" | "Y" | "yes" | "Yes" | "YES" | "on" | "On" | "ON"
            ));
        }
    }
    value
}

/// Every policy document of the files under `dir` (relative to the repository).
fn repo_documents(dir: &str) -> Vec<Document> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(dir);
    let mut files: Vec<PathBuf> = fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            matches!(
                p.extension().and_then(|e| e.to_str()),
                Some("yaml" | "yml" | "json")
            )
        })
        .collect();
    files.sort();
    let mut out = Vec::new();
    for f in files {
        let name = format!("{dir}/{}", f.file_name().unwrap().to_string_lossy());
        let src = Source::new(name, fs::read_to_string(&f).unwrap());
        if let Ok(docs) = parse_documents(&src) {
            out.extend(docs.into_iter().filter(is_cilium_policy));
        }
    }
    out
}

/// The lab never accepts what the API server refuses: every accepted document of the corpus,
/// of the lab's own valid fixtures and of its lessons is valid under the CRD's schema.
#[test]
fn what_the_lab_accepts_the_crd_schema_accepts() {
    let schemas = Schemas::load();
    let mut checked = 0;
    let mut problems = Vec::new();
    let mut check = |id: String, doc: &Document| {
        if accept_document(doc).is_err() {
            return;
        }
        checked += 1;
        let refusals = schemas.refusals(doc);
        if !refusals.is_empty() {
            problems.push(format!("{id}:\n    {}", refusals.join("\n    ")));
        }
    };
    for src in corpus_sources() {
        for doc in parse_documents(&src)
            .unwrap_or_default()
            .iter()
            .filter(|d| is_cilium_policy(d))
        {
            check(format!("{}#{}", src.name, doc.index), doc);
        }
    }
    for dir in ["enforcer/tests/data/policies/valid", "lessons/policies"] {
        for doc in repo_documents(dir) {
            check(format!("{}#{}", doc.file, doc.index), &doc);
        }
    }
    assert!(checked > 100, "only {checked} documents checked");
    assert!(
        problems.is_empty(),
        "the lab accepts what the CRD's schema refuses:\n{}",
        problems.join("\n")
    );
}

/// The negative fixtures: `crd_*` documents are refused by the schema and by the lab;
/// `cilium_*` documents pass the schema but Cilium's own checks refuse them, and so does the lab.
#[test]
fn what_the_crd_schema_or_cilium_refuses_the_lab_refuses() {
    let schemas = Schemas::load();
    let docs = repo_documents("enforcer/tests/data/policies/invalid");
    let mut seen = (0, 0);
    for doc in &docs {
        let id = format!("{}#{}", doc.file, doc.index);
        let name = doc.file.rsplit('/').next().unwrap();
        let schema = schemas.refusals(doc);
        if name.starts_with("crd_") {
            seen.0 += 1;
            assert!(!schema.is_empty(), "{id}: the CRD's schema accepts it");
        } else if name.starts_with("cilium_") {
            seen.1 += 1;
            assert!(schema.is_empty(), "{id}: the schema refuses it: {schema:?}");
        } else {
            continue;
        }
        assert!(accept_document(doc).is_err(), "{id}: the lab accepts it");
    }
    assert!(seen.0 >= 6 && seen.1 >= 4, "{seen:?}");
}
