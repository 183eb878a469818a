//! Lessons and exercises as data: markdown files with YAML front matter and fenced metadata
//! blocks (`step`, `expect`, `starter`, `solution`), built into the binary from `lessons/` and
//! also read from a teacher's directory (`lab up --lessons DIR`) at every request, so a new or
//! edited lesson shows up on the next page load without a rebuild. The format is documented for
//! teachers in `lessons/README.md`.
//!
//! A mistake in a file never hides the rest: it is reported as a [`Problem`] with its file and
//! line, on the lessons page and in the broken step's place.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use pulldown_cmark::{CodeBlockKind, Event, Options as MdOptions, Parser, Tag, TagEnd};
use rust_embed::RustEmbed;
use serde::{Deserialize, Serialize};

use crate::actions::{
    ExecAction, Expect, FindingsExpect, MetricQuery, PrefilterAction, ShipAction, ValueExpect,
};

#[derive(RustEmbed)]
#[folder = "../lessons/"]
struct Builtin;

/// Where lessons come from: the built-in ones, overridden and extended by a directory.
#[derive(Clone, Debug, Default)]
pub struct Library {
    pub dir: Option<PathBuf>,
}

/// A mistake in a lesson or exercise file.
#[derive(Clone, Debug, Serialize)]
pub struct Problem {
    pub file: String,
    pub line: usize,
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}: {}", self.file, self.line, self.message)
    }
}

/// One file's text and where it came from.
struct FileText {
    /// The name to show: `lessons/01-l3-ingress.md` or the path in the teacher's directory.
    shown: String,
    text: String,
    from_dir: bool,
}

#[derive(Clone, Debug, Serialize)]
pub struct Lesson {
    pub id: String,
    pub title: String,
    pub summary: String,
    /// `lessons/NAME.md` (built in) or the file in the teacher's directory.
    pub file: String,
    /// The body as HTML, each step block replaced by the marker `<!--step:N-->`.
    pub html: String,
    pub steps: Vec<Step>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Step {
    /// 1-based, in the order of the file.
    pub n: usize,
    pub title: String,
    /// Where the step block starts.
    pub line: usize,
    /// `Err` holds what is wrong with the block; the step is shown but cannot run.
    pub spec: Result<StepSpec, String>,
}

/// A runnable step.
#[derive(Clone, Debug, Serialize)]
pub struct StepSpec {
    pub action: Action,
    pub expect: Expect,
    /// Pods (or Deployments) whose flows are shown besides the acting pod's.
    pub watch: Vec<String>,
    /// How long to keep collecting flows after the action, in milliseconds.
    pub settle_ms: u64,
    /// Flows that must appear (checked besides the outcome).
    pub flows: Vec<FlowExpect>,
    /// Text the output must contain.
    pub output: Option<String>,
    /// For an audit step: the findings it must report.
    pub findings: Option<FindingsExpect>,
    /// For a metrics step: what the sum of the lines shown must be.
    pub value: Option<ValueExpect>,
    /// Run in the background: Run returns while the action goes on, and the next steps run
    /// meanwhile; its result is shown when it ends.
    pub background: bool,
    /// The command line that does the same.
    pub cli: String,
}

impl StepSpec {
    /// What should happen, for people: "the step times out", "the audit reports wildcard-cidr".
    pub fn expected(&self) -> String {
        let what = match (&self.action, &self.expect) {
            (Action::Audit { .. }, Expect::Ok | Expect::Any) => match &self.findings {
                None => "runs the audit".to_owned(),
                Some(FindingsExpect::Clean) => "finds nothing wrong".to_owned(),
                Some(FindingsExpect::Include(c)) => format!("finds {}", c.join(", ")),
            },
            (Action::Metrics(_), Expect::Ok | Expect::Any) => match &self.value {
                None => "shows the metric".to_owned(),
                Some(v) => format!("shows a total {}", v.describe()),
            },
            (Action::Prefilter(_), Expect::Ok) => "changes the prefilter".to_owned(),
            (Action::Prefilter(_), Expect::Rejected) => "is refused by the lab".to_owned(),
            (_, e) => e.describe(),
        };
        if self.background {
            format!("{what} (it runs in the background)")
        } else {
            what
        }
    }
}

/// A file for an audit step, as `POST /api/x/audit` takes it.
pub use model::AuditFile;

#[derive(Clone, Debug, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Action {
    Ship(ShipAction),
    Exec {
        #[serde(flatten)]
        exec: ExecAction,
        timeout_ms: u64,
    },
    Apply {
        /// Shown in errors and flows as the policy's source (file:line).
        source: String,
        yaml: String,
    },
    Delete(DeleteWhat),
    /// A change to the XDP prefilter (or a look at it).
    Prefilter(PrefilterAction),
    /// `lab audit`: the running lab, with these files applied on top (none: the lab as it is).
    Audit {
        files: Vec<AuditFile>,
    },
    /// Lines of `lab metrics`.
    Metrics(MetricQuery),
}

#[derive(Clone, Debug, Serialize)]
#[serde(tag = "what", rename_all = "snake_case")]
pub enum DeleteWhat {
    All,
    Name { name: String },
    File { source: String, yaml: String },
}

/// A flow a step expects to cause: any field left out matches anything.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FlowExpect {
    #[serde(default)]
    pub from: Option<String>,
    #[serde(default)]
    pub to: Option<String>,
    #[serde(default)]
    pub verdict: Option<String>,
    #[serde(default)]
    pub port: Option<u16>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Exercise {
    pub id: String,
    pub title: String,
    pub summary: String,
    pub file: String,
    /// The goal as HTML; the expectations block becomes the marker `<!--expectations-->`.
    pub html: String,
    pub probes: Vec<Probe>,
    /// The policy the editor starts with.
    pub starter: String,
    /// A policy that passes, for teachers (shown folded).
    pub solution: Option<String>,
    /// Check also runs `lab audit` on the student's policy and fails on a finding in it at or
    /// above this severity (`low`, `medium`, `high`, `critical`).
    pub audit: Option<String>,
    /// Check first empties the XDP prefilter's deny list and turns every bypass off, so that
    /// only the student's policy decides.
    pub reset_prefilter: bool,
}

#[derive(Clone, Debug, Serialize)]
pub struct Probe {
    pub n: usize,
    /// What the expectation says, in words: "the X-wing must not land".
    pub says: String,
    pub ship: ShipAction,
    pub expect: Expect,
    pub hint: Option<String>,
    pub cli: String,
}

/// A policy file offered in the editor's example list.
#[derive(Clone, Debug, Serialize)]
pub struct PolicyExample {
    pub file: String,
    pub title: String,
    pub yaml: String,
}

/// Everything found, with the problems met on the way.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Catalog {
    pub lessons: Vec<Lesson>,
    pub exercises: Vec<Exercise>,
    pub problems: Vec<Problem>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FrontMatter {
    title: String,
    #[serde(default)]
    summary: String,
    /// Exercises only: `true` (medium) or the lowest severity that fails the check.
    #[serde(default)]
    audit: Option<AuditSwitch>,
    /// Exercises only.
    #[serde(default)]
    reset_prefilter: Option<bool>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum AuditSwitch {
    On(bool),
    From(String),
}

impl FrontMatter {
    /// The severity at which an exercise's audit fails, if it has one.
    fn audit_level(&self) -> Result<Option<String>, String> {
        match &self.audit {
            None | Some(AuditSwitch::On(false)) => Ok(None),
            Some(AuditSwitch::On(true)) => Ok(Some("medium".into())),
            Some(AuditSwitch::From(level)) => {
                let l = level.trim().to_ascii_lowercase();
                model::Severity::parse(&l).map(|_| Some(l)).ok_or_else(|| {
                    format!("audit: `{level}`: give true, or the lowest severity that fails: low, medium, high or critical")
                })
            }
        }
    }
}

/// `key:` present (even empty) versus absent: `Some(None)` is `audit:` with no value.
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

/// `findings: clean` or `findings: [wildcard-cidr, ...]`.
#[derive(Deserialize)]
#[serde(untagged)]
enum RawFindings {
    Word(String),
    Checks(Vec<String>),
}

/// `value: "> 0"` or `value: 0`.
#[derive(Deserialize)]
#[serde(untagged)]
enum RawValue {
    Number(f64),
    Text(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStep {
    title: String,
    #[serde(default)]
    ship: Option<String>,
    #[serde(default)]
    exec: Option<String>,
    #[serde(default)]
    apply: Option<String>,
    #[serde(default)]
    policy: Option<String>,
    #[serde(default)]
    delete: Option<String>,
    #[serde(default)]
    prefilter: Option<String>,
    /// `audit:` alone audits the lab as it is; with a file (or inline YAML), the lab with it.
    #[serde(default, deserialize_with = "present")]
    audit: Option<Option<String>>,
    #[serde(default)]
    metrics: Option<String>,
    #[serde(default)]
    expect: Option<String>,
    #[serde(default)]
    findings: Option<RawFindings>,
    #[serde(default)]
    value: Option<RawValue>,
    #[serde(default)]
    background: bool,
    /// Seconds, for `exec` (default 10).
    #[serde(default)]
    timeout: Option<f64>,
    #[serde(default)]
    watch: Vec<String>,
    /// Seconds.
    #[serde(default)]
    settle: Option<f64>,
    #[serde(default)]
    flows: Vec<FlowExpect>,
    #[serde(default)]
    output: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProbe {
    says: String,
    ship: String,
    expect: String,
    #[serde(default)]
    hint: Option<String>,
}

/// Default time a step keeps collecting flows after its action.
const DEFAULT_SETTLE_MS: u64 = 400;
const DEFAULT_EXEC_TIMEOUT_MS: u64 = 10_000;

impl Library {
    pub fn new(dir: Option<PathBuf>) -> Self {
        Self { dir }
    }

    /// Every file under `sub` ("" or "exercises") ending in `.md`, keyed by id (the file stem).
    /// The teacher's directory wins over the built-in files with the same id.
    fn markdown(&self, sub: &str, problems: &mut Vec<Problem>) -> BTreeMap<String, FileText> {
        let mut out = BTreeMap::new();
        for name in Builtin::iter() {
            let Some(rest) = strip_dir(&name, sub) else {
                continue;
            };
            let Some(id) = rest.strip_suffix(".md") else {
                continue;
            };
            if id.contains('/') || id.eq_ignore_ascii_case("README") {
                continue;
            }
            if let Some(file) = Builtin::get(&name) {
                out.insert(
                    id.to_owned(),
                    FileText {
                        shown: format!("lessons/{name}"),
                        text: String::from_utf8_lossy(&file.data).into_owned(),
                        from_dir: false,
                    },
                );
            }
        }
        if let Some(dir) = &self.dir {
            let d = if sub.is_empty() {
                dir.clone()
            } else {
                dir.join(sub)
            };
            let Ok(entries) = std::fs::read_dir(&d) else {
                if sub.is_empty() {
                    problems.push(Problem {
                        file: dir.display().to_string(),
                        line: 0,
                        message: "cannot read the lessons directory".into(),
                    });
                }
                return out;
            };
            let mut entries: Vec<_> = entries.flatten().map(|e| e.path()).collect();
            entries.sort();
            for path in entries {
                let (Some(stem), Some("md")) = (
                    path.file_stem().and_then(|s| s.to_str()),
                    path.extension().and_then(|s| s.to_str()),
                ) else {
                    continue;
                };
                if stem.eq_ignore_ascii_case("README") || !path.is_file() {
                    continue;
                }
                match std::fs::read_to_string(&path) {
                    Ok(text) => {
                        out.insert(
                            stem.to_owned(),
                            FileText {
                                shown: path.display().to_string(),
                                text,
                                from_dir: true,
                            },
                        );
                    }
                    Err(e) => problems.push(Problem {
                        file: path.display().to_string(),
                        line: 0,
                        message: format!("cannot read: {e}"),
                    }),
                }
            }
        }
        out.retain(|id, f| {
            let ok = valid_id(id);
            if !ok {
                problems.push(Problem {
                    file: f.shown.clone(),
                    line: 0,
                    message:
                        "file names may use only a-z, 0-9, - and _ (the name is the page's address)"
                            .into(),
                });
            }
            ok
        });
        out
    }

    /// A policy file named by a step (`policies/x.yaml`): from the teacher's directory when the
    /// lesson is from there and the file exists, else built in. Returns (shown name, text).
    fn policy_file(&self, rel: &str, from_dir: bool) -> Result<(String, String), String> {
        let rel = rel.trim();
        let clean = !rel.is_empty()
            && !rel.starts_with('/')
            && Path::new(rel)
                .components()
                .all(|c| matches!(c, std::path::Component::Normal(_)));
        if !clean {
            return Err(format!(
                "`{rel}`: name a file inside the lessons folder, e.g. policies/sw_l3_l4.yaml"
            ));
        }
        if from_dir && let Some(dir) = &self.dir {
            let path = dir.join(rel);
            if path.is_file() {
                return std::fs::read_to_string(&path)
                    .map(|t| (path.display().to_string(), t))
                    .map_err(|e| format!("{}: {e}", path.display()));
            }
        }
        Builtin::get(rel)
            .map(|f| {
                (
                    format!("lessons/{rel}"),
                    String::from_utf8_lossy(&f.data).into_owned(),
                )
            })
            .ok_or_else(|| format!("no policy file `{rel}` in the lessons folder"))
    }

    /// The policy files (`policies/*.yaml`), built in and from the teacher's directory, with a
    /// title taken from each file's first comment line.
    pub fn policy_examples(&self) -> Vec<PolicyExample> {
        let mut files: BTreeMap<String, (String, String)> = BTreeMap::new();
        for name in Builtin::iter() {
            if let Some(file) = name.strip_prefix("policies/")
                && (file.ends_with(".yaml") || file.ends_with(".yml"))
                && let Some(f) = Builtin::get(&name)
            {
                files.insert(
                    file.to_owned(),
                    (
                        format!("lessons/{name}"),
                        String::from_utf8_lossy(&f.data).into_owned(),
                    ),
                );
            }
        }
        if let Some(dir) = &self.dir
            && let Ok(entries) = std::fs::read_dir(dir.join("policies"))
        {
            for e in entries.flatten() {
                let path = e.path();
                let name = e.file_name().to_string_lossy().into_owned();
                if (name.ends_with(".yaml") || name.ends_with(".yml"))
                    && let Ok(text) = std::fs::read_to_string(&path)
                {
                    files.insert(name, (path.display().to_string(), text));
                }
            }
        }
        files
            .into_values()
            .map(|(file, yaml)| {
                let title = yaml
                    .lines()
                    .next()
                    .and_then(|l| l.strip_prefix('#'))
                    .map(|t| t.trim().to_owned())
                    .filter(|t| !t.is_empty())
                    .unwrap_or_else(|| file.clone());
                PolicyExample { file, title, yaml }
            })
            .collect()
    }

    /// Reads and parses everything.
    pub fn catalog(&self) -> Catalog {
        let mut cat = Catalog::default();
        for (id, f) in self.markdown("", &mut cat.problems) {
            cat.lessons
                .push(self.parse_lesson(&id, &f, &mut cat.problems));
        }
        for (id, f) in self.markdown("exercises", &mut cat.problems) {
            if let Some(e) = self.parse_exercise(&id, &f, &mut cat.problems) {
                cat.exercises.push(e);
            }
        }
        cat
    }

    pub fn lesson(&self, id: &str) -> Option<Lesson> {
        self.catalog().lessons.into_iter().find(|l| l.id == id)
    }

    pub fn exercise(&self, id: &str) -> Option<Exercise> {
        self.catalog().exercises.into_iter().find(|e| e.id == id)
    }

    fn parse_lesson(&self, id: &str, f: &FileText, problems: &mut Vec<Problem>) -> Lesson {
        let (front, body, body_line) = front_matter(&f.shown, &f.text, problems);
        let mut steps = Vec::new();
        let html = render(body, |info, text, line| {
            if info != "step" {
                return None;
            }
            let n = steps.len() + 1;
            let line = body_line + line;
            let step = match serde_yaml_ng::from_str::<RawStep>(text) {
                Ok(raw) => {
                    let title = raw.title.clone();
                    let spec = self.step_spec(id, n, raw, f.from_dir);
                    if let Err(e) = &spec {
                        problems.push(Problem {
                            file: f.shown.clone(),
                            line,
                            message: format!("step {n}: {e}"),
                        });
                    }
                    Step {
                        n,
                        title,
                        line,
                        spec,
                    }
                }
                Err(e) => {
                    let p = yaml_problem(&f.shown, line, &e);
                    problems.push(p.clone());
                    Step {
                        n,
                        title: format!("Step {n}"),
                        line,
                        spec: Err(p.message),
                    }
                }
            };
            steps.push(step);
            Some(format!("<!--step:{n}-->"))
        });
        if let Some(fm) = &front
            && (fm.audit.is_some() || fm.reset_prefilter.is_some())
        {
            problems.push(Problem {
                file: f.shown.clone(),
                line: 1,
                message:
                    "`audit` and `reset_prefilter` are for exercises (in exercises/), not lessons"
                        .into(),
            });
        }
        Lesson {
            id: id.to_owned(),
            title: front
                .as_ref()
                .map_or_else(|| id.to_owned(), |f| f.title.clone()),
            summary: front.map(|f| f.summary).unwrap_or_default(),
            file: f.shown.clone(),
            html,
            steps,
        }
    }

    fn step_spec(
        &self,
        lesson: &str,
        n: usize,
        raw: RawStep,
        from_dir: bool,
    ) -> Result<StepSpec, String> {
        let given = [
            raw.ship.is_some(),
            raw.exec.is_some(),
            raw.apply.is_some(),
            raw.policy.is_some(),
            raw.delete.is_some(),
            raw.prefilter.is_some(),
            raw.audit.is_some(),
            raw.metrics.is_some(),
        ];
        if given.iter().filter(|g| **g).count() != 1 {
            return Err(
                "a step does exactly one thing: ship, exec, apply (a file), policy (inline YAML), delete, prefilter, audit or metrics"
                    .into(),
            );
        }
        if raw.background && raw.ship.is_none() && raw.exec.is_none() {
            return Err("only ship and exec steps can run in the background".into());
        }
        if raw.findings.is_some() && raw.audit.is_none() {
            return Err("`findings` goes with an audit step".into());
        }
        if raw.value.is_some() && raw.metrics.is_none() {
            return Err("`value` goes with a metrics step".into());
        }
        let findings = match raw.findings {
            None => None,
            Some(RawFindings::Word(w)) if w.trim() == "clean" => Some(FindingsExpect::Clean),
            Some(RawFindings::Word(w))
                if !w.trim().is_empty() && !w.contains(char::is_whitespace) =>
            {
                Some(FindingsExpect::Include(vec![w.trim().to_owned()]))
            }
            Some(RawFindings::Checks(c)) if !c.is_empty() => Some(FindingsExpect::Include(c)),
            Some(_) => {
                return Err(
                    "findings: `clean`, or the checks that must be reported, e.g. [wildcard-cidr, prefilter-bypass]"
                        .into(),
                );
            }
        };
        let value = match raw.value {
            None => None,
            Some(RawValue::Number(n)) => Some(ValueExpect {
                op: "==".into(),
                value: n,
            }),
            Some(RawValue::Text(t)) => Some(ValueExpect::parse(&t)?),
        };
        // Steps that send no traffic have no flows to wait for.
        let mut quiet = false;
        let (action, cli, default_expect) = if let Some(s) = raw.ship {
            if raw.timeout.is_some() {
                return Err(
                    "for a ship move, put the time limit in the move: `xwing land --timeout 3`"
                        .into(),
                );
            }
            let a = ShipAction::parse(&s)?;
            let cli = a.cli();
            (Action::Ship(a), cli, None)
        } else if let Some(e) = raw.exec {
            let exec = ExecAction::parse(&e)?;
            let cli = exec.cli();
            let timeout_ms = seconds_ms(raw.timeout, DEFAULT_EXEC_TIMEOUT_MS)?;
            (Action::Exec { exec, timeout_ms }, cli, None)
        } else if let Some(rel) = raw.apply {
            let (shown, yaml) = self.policy_file(&rel, from_dir)?;
            let cli = format!("lab policy apply -f {}", crate::actions::quote(&shown));
            (
                Action::Apply {
                    source: shown,
                    yaml,
                },
                cli,
                Some(Expect::Ok),
            )
        } else if let Some(yaml) = raw.policy {
            let cli = format!("lab policy apply -f - <<'EOF'\n{}EOF", with_newline(&yaml));
            (
                Action::Apply {
                    source: format!("lesson {lesson} step {n}"),
                    yaml,
                },
                cli,
                Some(Expect::Ok),
            )
        } else if let Some(what) = raw.delete {
            let what = what.trim();
            let (d, cli) = if what == "all" {
                (DeleteWhat::All, "lab policy delete --all".to_owned())
            } else if what.ends_with(".yaml") || what.ends_with(".yml") || what.ends_with(".json") {
                let (shown, yaml) = self.policy_file(what, from_dir)?;
                let cli = format!("lab policy delete -f {}", crate::actions::quote(&shown));
                (
                    DeleteWhat::File {
                        source: shown,
                        yaml,
                    },
                    cli,
                )
            } else if !what.is_empty() && !what.contains(char::is_whitespace) {
                (
                    DeleteWhat::Name {
                        name: what.to_owned(),
                    },
                    format!("lab policy delete {}", crate::actions::quote(what)),
                )
            } else {
                return Err("delete takes `all`, a policy name, or a policy file".into());
            };
            (Action::Delete(d), cli, Some(Expect::Ok))
        } else if let Some(p) = raw.prefilter {
            quiet = true;
            let p = PrefilterAction::parse(&p)?;
            let cli = p.cli();
            (Action::Prefilter(p), cli, Some(Expect::Ok))
        } else if let Some(m) = raw.metrics {
            quiet = true;
            let q = MetricQuery::parse(&m)?;
            let cli = q.cli();
            (Action::Metrics(q), cli, Some(Expect::Ok))
        } else {
            quiet = true;
            let what = raw.audit.flatten().unwrap_or_default();
            let what = what.trim_end();
            let (files, cli) = if what.is_empty() || what == "lab" {
                (Vec::new(), "lab audit".to_owned())
            } else if what.contains('\n') {
                (
                    vec![AuditFile {
                        source: format!("lesson {lesson} step {n}"),
                        text: with_newline(what),
                    }],
                    format!("lab audit -f - <<'EOF'\n{}EOF", with_newline(what)),
                )
            } else {
                let (shown, text) = self.policy_file(what, from_dir)?;
                let cli = format!("lab audit -f {}", crate::actions::quote(&shown));
                (
                    vec![AuditFile {
                        source: shown,
                        text,
                    }],
                    cli,
                )
            };
            (Action::Audit { files }, cli, Some(Expect::Ok))
        };
        let expect = match (raw.expect, default_expect) {
            (Some(e), _) => Expect::parse(&e)?,
            (None, Some(d)) => d,
            (None, None) => {
                return Err(
                    "say what should happen: `expect: ok`, `http 403`, `timeout`, `refused`, `blocked`, `ftp ok`, `ftp denied` or `any`"
                        .into(),
                );
            }
        };
        if matches!(action, Action::Exec { .. })
            && matches!(
                expect,
                Expect::Http { .. } | Expect::FtpOk | Expect::FtpDenied | Expect::Blocked
            )
        {
            return Err("an exec step knows only the exit status: expect ok, timeout, refused or any (and `output:` for the text)".into());
        }
        if matches!(
            action,
            Action::Apply { .. } | Action::Delete(_) | Action::Prefilter(_) | Action::Audit { .. }
        ) && !matches!(expect, Expect::Ok | Expect::Rejected | Expect::Any)
        {
            return Err(
                "a policy, prefilter or audit step expects ok (done) or rejected (refused by the lab)"
                    .into(),
            );
        }
        if matches!(action, Action::Metrics(_)) && !matches!(expect, Expect::Ok | Expect::Any) {
            return Err(
                "a metrics step expects ok; say what the value must be with `value: \"> 0\"`"
                    .into(),
            );
        }
        Ok(StepSpec {
            action,
            expect,
            watch: raw.watch,
            settle_ms: seconds_ms(raw.settle, if quiet { 0 } else { DEFAULT_SETTLE_MS })?,
            flows: raw.flows,
            output: raw.output,
            findings,
            value,
            background: raw.background,
            cli,
        })
    }

    fn parse_exercise(
        &self,
        id: &str,
        f: &FileText,
        problems: &mut Vec<Problem>,
    ) -> Option<Exercise> {
        let (front, body, body_line) = front_matter(&f.shown, &f.text, problems);
        let mut probes = Vec::new();
        let mut starter = None;
        let mut solution = None;
        let mut seen_expect = false;
        let html = render(body, |info, text, line| {
            let line = body_line + line;
            match info {
                "expect" => {
                    seen_expect = true;
                    match serde_yaml_ng::from_str::<Vec<RawProbe>>(text) {
                        Ok(raw) => {
                            for r in raw {
                                let n = probes.len() + 1;
                                let parsed = ShipAction::parse(&r.ship).and_then(|ship| {
                                    Ok(Probe {
                                        n,
                                        says: r.says.clone(),
                                        cli: ship.cli(),
                                        ship,
                                        expect: Expect::parse(&r.expect)?,
                                        hint: r.hint.clone(),
                                    })
                                });
                                match parsed {
                                    Ok(p) => probes.push(p),
                                    Err(e) => problems.push(Problem {
                                        file: f.shown.clone(),
                                        line,
                                        message: format!("expectation \"{}\": {e}", r.says),
                                    }),
                                }
                            }
                        }
                        Err(e) => problems.push(yaml_problem(&f.shown, line, &e)),
                    }
                    Some("<!--expectations-->".into())
                }
                "starter" => {
                    starter = Some(text.to_owned());
                    Some(String::new())
                }
                "solution" => {
                    solution = Some(text.to_owned());
                    Some(String::new())
                }
                _ => None,
            }
        });
        if !seen_expect || probes.is_empty() {
            problems.push(Problem {
                file: f.shown.clone(),
                line: body_line,
                message: "an exercise needs an ```expect block with at least one expectation"
                    .into(),
            });
            return None;
        }
        let audit = match front.as_ref().map(FrontMatter::audit_level) {
            None => None,
            Some(Ok(level)) => level,
            Some(Err(e)) => {
                problems.push(Problem {
                    file: f.shown.clone(),
                    line: 1,
                    message: e,
                });
                return None;
            }
        };
        let reset_prefilter = front
            .as_ref()
            .and_then(|f| f.reset_prefilter)
            .unwrap_or(false);
        Some(Exercise {
            id: id.to_owned(),
            title: front
                .as_ref()
                .map_or_else(|| id.to_owned(), |f| f.title.clone()),
            summary: front.map(|f| f.summary).unwrap_or_default(),
            file: f.shown.clone(),
            html,
            probes,
            starter: starter.unwrap_or_default(),
            solution,
            audit,
            reset_prefilter,
        })
    }
}

fn strip_dir<'a>(name: &'a str, sub: &str) -> Option<&'a str> {
    if sub.is_empty() {
        (!name.contains('/')).then_some(name)
    } else {
        name.strip_prefix(sub)?.strip_prefix('/')
    }
}

fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

fn seconds_ms(secs: Option<f64>, default: u64) -> Result<u64, String> {
    match secs {
        None => Ok(default),
        Some(s) if (0.0..=120.0).contains(&s) => Ok((s * 1000.0).round() as u64),
        Some(s) => Err(format!("{s} seconds: give 0 to 120")),
    }
}

fn with_newline(s: &str) -> String {
    if s.ends_with('\n') {
        s.to_owned()
    } else {
        format!("{s}\n")
    }
}

/// Splits off `---` front matter (after optional one-line `<!-- -->` comments). Returns it
/// (parsed), the body, and the body's first line number minus one (to add to 1-based lines
/// within the body).
fn front_matter<'a>(
    file: &str,
    text: &'a str,
    problems: &mut Vec<Problem>,
) -> (Option<FrontMatter>, &'a str, usize) {
    // Leading one-line HTML comments (a note on what the file is for) come before the front matter.
    let mut skipped = 0;
    let mut text = text;
    while let Some(line) = text.split_inclusive('\n').next() {
        let t = line.trim();
        if t.is_empty() || (t.starts_with("<!--") && t.ends_with("-->")) {
            text = &text[line.len()..];
            skipped += 1;
        } else {
            break;
        }
    }
    let Some(rest) = text
        .strip_prefix("---\n")
        .or_else(|| text.strip_prefix("---\r\n"))
    else {
        problems.push(Problem {
            file: file.into(),
            line: 1,
            message: "missing front matter: start with ---, a `title:` line, and ---".into(),
        });
        return (None, text, skipped);
    };
    let mut offset = 0;
    for line in rest.split_inclusive('\n') {
        if line.trim_end() == "---" {
            let yaml = &rest[..offset];
            let body = &rest[offset + line.len()..];
            let body_line = skipped + 2 + yaml.lines().count();
            let front = match serde_yaml_ng::from_str::<FrontMatter>(yaml) {
                Ok(f) => Some(f),
                Err(e) => {
                    problems.push(yaml_problem(file, skipped + 1, &e));
                    None
                }
            };
            return (front, body, body_line);
        }
        offset += line.len();
    }
    problems.push(Problem {
        file: file.into(),
        line: skipped + 1,
        message: "the front matter has no closing ---".into(),
    });
    (None, text, skipped)
}

/// A YAML error inside a block whose first line is `block_line` (the fence line).
fn yaml_problem(file: &str, block_line: usize, e: &serde_yaml_ng::Error) -> Problem {
    let msg = e.to_string();
    let msg = msg
        .rfind(" at line ")
        .map_or(msg.as_str(), |i| &msg[..i])
        .to_owned();
    Problem {
        file: file.into(),
        line: block_line + e.location().map_or(0, |l| l.line()),
        message: msg,
    }
}

/// Renders markdown to HTML. `special(info, text, line)` may replace a fenced block (its info
/// string, its content, the 1-based line of its opening fence) with raw HTML.
fn render(body: &str, mut special: impl FnMut(&str, &str, usize) -> Option<String>) -> String {
    let opts = MdOptions::ENABLE_TABLES
        | MdOptions::ENABLE_STRIKETHROUGH
        | MdOptions::ENABLE_HEADING_ATTRIBUTES;
    let mut events = Vec::new();
    let mut capture: Option<(String, String, usize)> = None;
    for (ev, range) in Parser::new_ext(body, opts).into_offset_iter() {
        match (&mut capture, ev) {
            (None, Event::Start(Tag::CodeBlock(CodeBlockKind::Fenced(info)))) => {
                let line = body[..range.start].matches('\n').count() + 1;
                let info = info
                    .split_whitespace()
                    .next()
                    .unwrap_or_default()
                    .to_owned();
                if matches!(info.as_str(), "step" | "expect" | "starter" | "solution") {
                    capture = Some((info, String::new(), line));
                } else {
                    events.push(Event::Start(Tag::CodeBlock(CodeBlockKind::Fenced(
                        info.into(),
                    ))));
                }
            }
            (Some((_, text, _)), Event::Text(t)) => text.push_str(&t),
            (Some(_), Event::End(TagEnd::CodeBlock)) => {
                let (info, text, line) = capture.take().expect("capturing");
                if let Some(html) = special(&info, &text, line) {
                    events.push(Event::Html(html.into()));
                } else {
                    events.push(Event::Html(
                        format!(
                            "<pre><code>{}</code></pre>",
                            crate::pages::escape_html(&text)
                        )
                        .into(),
                    ));
                }
            }
            (Some(_), _) => {}
            (None, ev) => events.push(ev),
        }
    }
    let mut html = String::new();
    pulldown_cmark::html::push_html(&mut html, events.into_iter());
    html
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(text: &str) -> FileText {
        FileText {
            shown: "t.md".into(),
            text: text.into(),
            from_dir: false,
        }
    }

    #[test]
    fn the_built_in_lessons_and_exercises_parse_without_problems() {
        let cat = Library::default().catalog();
        assert!(cat.problems.is_empty(), "{:#?}", cat.problems);
        let ids: Vec<&str> = cat.lessons.iter().map(|l| l.id.as_str()).collect();
        for want in [
            "00-tour",
            "01-l3-ingress",
            "02-egress-by-labels",
            "03-l7-http",
            "04-ports-and-ranges",
            "05-nodeport-exposure",
            "06-connection-limits",
        ] {
            assert!(ids.contains(&want), "{ids:?}");
        }
        for l in &cat.lessons {
            assert!(!l.steps.is_empty(), "{} has no steps", l.id);
            for s in &l.steps {
                assert!(s.spec.is_ok(), "{} step {}: {:?}", l.id, s.n, s.spec);
                assert!(l.html.contains(&format!("<!--step:{}-->", s.n)));
            }
        }
        assert!(cat.exercises.len() >= 4);
        let fix = cat
            .exercises
            .iter()
            .find(|e| e.id == "4-incident-fix")
            .unwrap();
        assert_eq!(fix.audit.as_deref(), Some("medium"));
        assert!(fix.reset_prefilter);
        for e in &cat.exercises {
            assert!(e.html.contains("<!--expectations-->"), "{}", e.id);
            assert!(e.solution.is_some(), "{} has no solution", e.id);
        }
    }

    #[test]
    fn steps_and_their_problems_are_located() {
        let text = "---\ntitle: T\n---\n\nIntro.\n\n```step\ntitle: Land\nship: xwing land\nexpect: ok\n```\n\n```step\ntitle: Bad\nship: xwing jump\nexpect: ok\n```\n\n```step\ntitle: Typo\nshipp: xwing land\n```\n\n```step\ntitle: Inline\npolicy: |\n  apiVersion: cilium.io/v2\n```\n";
        let mut problems = Vec::new();
        let l = Library::default().parse_lesson("t", &file(text), &mut problems);
        assert_eq!(l.title, "T");
        assert_eq!(l.steps.len(), 4);
        assert!(l.steps[0].spec.is_ok());
        assert_eq!(l.steps[0].line, 7);
        assert_eq!(problems.len(), 2, "{problems:#?}");
        assert_eq!(problems[0].line, 13);
        assert!(problems[0].message.contains("unknown move `jump`"));
        assert_eq!(problems[1].line, 21, "{problems:#?}");
        assert!(problems[1].message.contains("shipp"), "{problems:#?}");
        let Ok(inline) = &l.steps[3].spec else {
            panic!()
        };
        assert!(
            inline
                .cli
                .starts_with("lab policy apply -f - <<'EOF'\napiVersion")
        );
        assert!(l.html.contains("<p>Intro.</p>"));
    }

    #[test]
    fn a_teachers_directory_adds_and_overrides() {
        let dir = std::env::temp_dir().join(format!("web-lessons-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("policies")).unwrap();
        std::fs::write(
            dir.join("policies/mine.yaml"),
            "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\n",
        )
        .unwrap();
        std::fs::write(
            dir.join("99-mine.md"),
            "---\ntitle: Mine\n---\n```step\ntitle: Apply mine\napply: policies/mine.yaml\n```\n```step\ntitle: Apply built-in\napply: policies/sw_l3_l4.yaml\n```\n",
        )
        .unwrap();
        std::fs::write(dir.join("Bad Name.md"), "---\ntitle: x\n---\n").unwrap();
        let lib = Library::new(Some(dir.clone()));
        let cat = lib.catalog();
        let mine = cat.lessons.iter().find(|l| l.id == "99-mine").unwrap();
        let Ok(StepSpec {
            action: Action::Apply { source, .. },
            ..
        }) = &mine.steps[0].spec
        else {
            panic!("{:?}", mine.steps[0].spec)
        };
        assert!(source.ends_with("policies/mine.yaml") && source.starts_with('/'));
        let Ok(StepSpec { cli, .. }) = &mine.steps[1].spec else {
            panic!()
        };
        assert_eq!(cli, "lab policy apply -f lessons/policies/sw_l3_l4.yaml");
        assert!(cat.lessons.iter().any(|l| l.id == "01-l3-ingress"));
        assert_eq!(cat.problems.len(), 1, "{:#?}", cat.problems);
        assert!(cat.problems[0].file.ends_with("Bad Name.md"));
        assert!(lib.policy_file("../etc/passwd", true).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn exercises_need_expectations() {
        let text = "---\ntitle: E\n---\nGoal.\n```expect\n- says: x must not land\n  ship: xwing land\n  expect: blocked\n  hint: think\n```\n```starter\napiVersion: cilium.io/v2\n```\n";
        let mut problems = Vec::new();
        let e = Library::default()
            .parse_exercise("e", &file(text), &mut problems)
            .unwrap();
        assert!(problems.is_empty(), "{problems:#?}");
        assert_eq!(e.probes.len(), 1);
        assert_eq!(e.probes[0].expect, Expect::Blocked);
        assert_eq!(e.starter, "apiVersion: cilium.io/v2\n");
        assert!(!e.html.contains("apiVersion"));
        let none =
            Library::default().parse_exercise("f", &file("---\ntitle: F\n---\n"), &mut problems);
        assert!(none.is_none());
        assert_eq!(problems.len(), 1);
    }

    #[test]
    fn prefilter_audit_metrics_and_background_steps() {
        let text = r#"---
title: T
---
```step
title: Bypass
prefilter: bypass --node-port 30007 --unsafe
```
```step
title: Refused
prefilter: bypass --node-port 30007
expect: rejected
```
```step
title: Live audit
audit:
findings: [prefilter-bypass, wildcard-cidr]
```
```step
title: File audit
audit: policies/sw_l3_l4.yaml
findings: clean
```
```step
title: Inline audit
audit: |
  apiVersion: cilium.io/v2
  kind: CiliumNetworkPolicy
findings: wildcard-cidr
```
```step
title: Metric
metrics: lab_nodeport_connections_total{source="internet"}
value: "> 0"
```
```step
title: Zero
metrics: lab_connection_limit_connections
value: 0
```
```step
title: Flood
ship: xwing flood 200 15
background: true
expect: ok
```
"#;
        let mut problems = Vec::new();
        let l = Library::default().parse_lesson("t", &file(text), &mut problems);
        assert!(problems.is_empty(), "{problems:#?}");
        let spec = |i: usize| l.steps[i].spec.clone().unwrap();
        assert_eq!(
            spec(0).cli,
            "lab prefilter bypass --node-port 30007 --unsafe"
        );
        assert_eq!(spec(0).expect, Expect::Ok);
        assert_eq!(spec(0).settle_ms, 0);
        assert_eq!(spec(1).expected(), "is refused by the lab");
        let live = spec(2);
        assert!(matches!(&live.action, Action::Audit { files } if files.is_empty()));
        assert_eq!(live.cli, "lab audit");
        assert_eq!(live.expected(), "finds prefilter-bypass, wildcard-cidr");
        let file_audit = spec(3);
        assert_eq!(
            file_audit.cli,
            "lab audit -f lessons/policies/sw_l3_l4.yaml"
        );
        assert_eq!(file_audit.findings, Some(FindingsExpect::Clean));
        let inline = spec(4);
        assert!(inline.cli.starts_with("lab audit -f - <<'EOF'\napiVersion"));
        let Action::Audit { files } = &inline.action else {
            panic!()
        };
        assert_eq!(files[0].source, "lesson t step 5");
        assert_eq!(
            inline.findings,
            Some(FindingsExpect::Include(vec!["wildcard-cidr".into()]))
        );
        assert_eq!(spec(5).expected(), "shows a total > 0");
        assert!(spec(5).cli.starts_with("lab metrics | grep"));
        assert_eq!(spec(6).value.as_ref().map(|v| v.holds(0.0)), Some(true));
        let flood = spec(7);
        assert!(flood.background);
        assert_eq!(flood.settle_ms, DEFAULT_SETTLE_MS);
        assert_eq!(flood.expected(), "succeeds (it runs in the background)");
        assert_eq!(flood.cli, "lab ship xwing flood 200 15");
    }

    #[test]
    fn new_step_keys_are_checked() {
        for (step, wrong) in [
            (
                "apply: policies/sw_l3_l4.yaml\nbackground: true",
                "background",
            ),
            ("ship: xwing land\nexpect: ok\nfindings: clean", "findings"),
            ("audit:\nvalue: 1", "value"),
            ("audit:\nfindings: []", "findings"),
            ("audit:\nfindings: two words", "findings"),
            ("metrics: m\nexpect: timeout", "metrics step"),
            ("metrics: m{a=b}", "quote"),
            ("metrics: m\nvalue: lots", "compare"),
            ("prefilter: flush", "unknown prefilter"),
            ("prefilter: list\nexpect: timeout", "expects ok"),
            ("audit: policies/nope.yaml", "no policy file"),
            ("prefilter: list\nmetrics: m", "exactly one"),
        ] {
            let text = format!("---\ntitle: T\n---\n```step\ntitle: s\n{step}\n```\n");
            let mut problems = Vec::new();
            let l = Library::default().parse_lesson("t", &file(&text), &mut problems);
            let err = l.steps[0].spec.clone().unwrap_err();
            assert!(err.contains(wrong), "{step}: {err}");
            assert_eq!(problems.len(), 1);
        }
        let mut problems = Vec::new();
        Library::default().parse_lesson(
            "t",
            &file("---\ntitle: T\naudit: true\n---\n```step\ntitle: s\ndelete: all\n```\n"),
            &mut problems,
        );
        assert!(
            problems[0].message.contains("for exercises"),
            "{problems:#?}"
        );
    }

    #[test]
    fn an_exercise_may_ask_for_an_audit_and_a_clean_prefilter() {
        let body = "```expect\n- says: x\n  ship: attacker http GET http://203.0.113.10:30007/\n  expect: blocked\n```\n";
        let parse = |front: &str| {
            let mut problems = Vec::new();
            let e = Library::default().parse_exercise(
                "e",
                &file(&format!("---\ntitle: E\n{front}---\n{body}")),
                &mut problems,
            );
            (e, problems)
        };
        let (e, p) = parse("audit: true\nreset_prefilter: true\n");
        let e = e.unwrap();
        assert!(p.is_empty(), "{p:#?}");
        assert_eq!(e.audit.as_deref(), Some("medium"));
        assert!(e.reset_prefilter);
        let (e, _) = parse("audit: High\n");
        assert_eq!(e.unwrap().audit.as_deref(), Some("high"));
        let (e, _) = parse("audit: false\n");
        let e = e.unwrap();
        assert_eq!(e.audit, None);
        assert!(!e.reset_prefilter);
        let (e, p) = parse("audit: severe\n");
        assert!(e.is_none());
        assert!(p[0].message.contains("severity"), "{p:#?}");
    }
}
