//! Compiled L7 HTTP rules: the `rules.http` list of one (endpoint, port, peer) policy, turned into
//! one multi-pattern automaton per field so that judging a request costs three automaton searches
//! and a few bitset operations, whatever the number of rules.
//!
//! Semantics (CiliumNetworkPolicy, Envoy "safe regex"):
//! - `method`, `path` and `host` are RE2-syntax regular expressions that must match the **whole**
//!   value: each is compiled as `^(?:expr)$`. An absent or empty field matches anything.
//! - `path` is matched against the request target exactly as forwarded, query string included.
//! - `host` is matched against the `Host` header value as sent (port included when the client sent
//!   one). A request without `Host` (possible only in HTTP/1.0) never matches a rule with `host`.
//! - A header entry `"Name"` requires a header with that name (case-insensitive); `"Name: value"`
//!   requires that header to be present and **every** occurrence of it to equal `value` exactly, so
//!   that a server which picks the first or the last duplicate sees the value that was judged.
//! - All fields of one rule AND; rules OR; the first matching rule (in the order given) is reported.
//!
//! How matching stays flat with many rules: each field's distinct patterns form one
//! `regex_automata::meta::Regex` searched for all overlapping matches; every pattern maps to the
//! bitset of rules using it, rules without the field are in an "absent" bitset, and the three
//! per-field candidate sets are intersected. Header checks, which are plain byte comparisons, run
//! only for surviving candidates. Scratch space lives in a thread-local, so `judge` does not
//! allocate after its first call on a thread.

use std::cell::RefCell;

use regex_automata::{
    Input, MatchKind, PatternSet,
    meta::{self, Regex},
};

use super::RequestHead;

/// Identifies a rule; chosen by the caller (for example an index into its policy list).
pub type RuleId = u32;

/// One entry of `rules.http` as written in a policy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HttpRuleSpec {
    pub method: Option<String>,
    pub path: Option<String>,
    pub host: Option<String>,
    pub headers: Vec<String>,
}

impl HttpRuleSpec {
    /// A rule with only method and path, the common case.
    pub fn method_path(method: &str, path: &str) -> Self {
        Self {
            method: Some(method.to_owned()),
            path: Some(path.to_owned()),
            ..Self::default()
        }
    }
}

/// Why a rule list could not be compiled.
#[derive(Debug, thiserror::Error)]
pub enum RuleError {
    #[error("HTTP rule {index}: invalid {field} regular expression {pattern:?}: {reason}")]
    BadRegex {
        index: usize,
        field: &'static str,
        pattern: String,
        reason: String,
    },
    #[error("HTTP rule {index}: invalid header match {entry:?}: {reason}")]
    BadHeader {
        index: usize,
        entry: String,
        reason: &'static str,
    },
    #[error("HTTP rule {index}: {reason}")]
    TooLarge { index: usize, reason: String },
}

/// One field (method, path or host): distinct patterns and the rules that use each.
#[derive(Debug)]
struct FieldSet {
    /// `None` when no rule constrains this field.
    regex: Option<Regex>,
    /// For pattern `i`, the bitset of rules using it.
    pattern_rules: Vec<Vec<u64>>,
    /// Rules that do not constrain this field.
    absent: Vec<u64>,
}

#[derive(Debug, Clone)]
struct HeaderMatch {
    /// Lower-case name.
    name: String,
    /// `None`: presence only.
    value: Option<Vec<u8>>,
}

/// Rules compiled once per (endpoint, port, peer) policy.
#[derive(Debug)]
pub struct CompiledRules {
    ids: Vec<RuleId>,
    words: usize,
    method: FieldSet,
    path: FieldSet,
    host: FieldSet,
    headers: Vec<Vec<HeaderMatch>>,
    /// `Some(id)`: an L4-only allow on the same port, every request is allowed.
    allow_all: Option<RuleId>,
}

struct Scratch {
    patset: PatternSet,
    candidates: Vec<u64>,
    acc: Vec<u64>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch {
        patset: PatternSet::new(0),
        candidates: Vec::new(),
        acc: Vec::new(),
    });
}

fn non_empty(field: &Option<String>) -> Option<&str> {
    field.as_deref().filter(|s| !s.is_empty())
}

fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn parse_header_match(index: usize, entry: &str) -> Result<HeaderMatch, RuleError> {
    let bad = |reason| RuleError::BadHeader {
        index,
        entry: entry.to_owned(),
        reason,
    };
    let (name, value) = match entry.split_once(':') {
        Some((n, v)) => (n.trim(), Some(v.trim_matches([' ', '\t']))),
        None => (entry.trim(), None),
    };
    if name.is_empty() {
        return Err(bad("empty header name"));
    }
    if !name.bytes().all(is_token_byte) {
        return Err(bad("header name has characters not allowed in a token"));
    }
    if let Some(v) = value
        && v.bytes().any(|b| (b < 0x20 && b != b'\t') || b == 0x7f)
    {
        return Err(bad("header value has control characters"));
    }
    Ok(HeaderMatch {
        name: name.to_ascii_lowercase(),
        value: value.map(|v| v.as_bytes().to_vec()),
    })
}

fn set_bit(bits: &mut [u64], i: usize) {
    bits[i / 64] |= 1 << (i % 64);
}

impl FieldSet {
    fn build(
        field: &'static str,
        values: &[Option<&str>],
        words: usize,
        size_limit: usize,
    ) -> Result<Self, RuleError> {
        let mut patterns: Vec<&str> = Vec::new();
        let mut pattern_rules: Vec<Vec<u64>> = Vec::new();
        let mut absent = vec![0u64; words];
        for (rule, value) in values.iter().enumerate() {
            match value {
                None => set_bit(&mut absent, rule),
                Some(p) => {
                    let idx = match patterns.iter().position(|q| q == p) {
                        Some(i) => i,
                        None => {
                            // Validate each pattern on its own first, for an error naming the rule.
                            let anchored = format!("^(?:{p})$");
                            Regex::new(&anchored).map_err(|e| RuleError::BadRegex {
                                index: rule,
                                field,
                                pattern: (*p).to_owned(),
                                reason: e.to_string(),
                            })?;
                            patterns.push(p);
                            pattern_rules.push(vec![0u64; words]);
                            patterns.len() - 1
                        }
                    };
                    set_bit(&mut pattern_rules[idx], rule);
                }
            }
        }
        let regex = if patterns.is_empty() {
            None
        } else {
            let anchored: Vec<String> = patterns.iter().map(|p| format!("^(?:{p})$")).collect();
            let config = meta::Config::new()
                .match_kind(MatchKind::All)
                .nfa_size_limit(Some(size_limit))
                .hybrid_cache_capacity(2 * (1 << 20));
            let regex = Regex::builder()
                .configure(config)
                .build_many(&anchored)
                .map_err(|e| RuleError::TooLarge {
                    index: 0,
                    reason: format!("{field} patterns together: {e}"),
                })?;
            Some(regex)
        };
        Ok(Self {
            regex,
            pattern_rules,
            absent,
        })
    }

    /// Narrows `candidates` to the rules whose pattern for this field matches `value`.
    fn narrow(
        &self,
        value: Option<&str>,
        candidates: &mut [u64],
        scratch_acc: &mut [u64],
        patset: &mut PatternSet,
    ) {
        let Some(regex) = &self.regex else { return };
        scratch_acc.copy_from_slice(&self.absent);
        if let Some(value) = value {
            patset.clear();
            regex.which_overlapping_matches(&Input::new(value), patset);
            for pid in patset.iter() {
                for (a, r) in scratch_acc
                    .iter_mut()
                    .zip(&self.pattern_rules[pid.as_usize()])
                {
                    *a |= *r;
                }
            }
        }
        for (c, a) in candidates.iter_mut().zip(scratch_acc.iter()) {
            *c &= *a;
        }
    }

    fn pattern_len(&self) -> usize {
        self.regex.as_ref().map_or(0, |r| r.pattern_len())
    }
}

impl CompiledRules {
    /// Compiles a rule list. An empty list allows nothing (an L7 rule set with no rules is
    /// a deny-all on that port; use [`CompiledRules::allow_all`] for an L4-only allow).
    pub fn compile(rules: &[(HttpRuleSpec, RuleId)]) -> Result<Self, RuleError> {
        let n = rules.len();
        let words = n.div_ceil(64).max(1);
        // Generous per-field budget; a pathological regex list fails to compile rather than
        // making every request slow.
        let size_limit = 64 << 20;
        let methods: Vec<_> = rules.iter().map(|(r, _)| non_empty(&r.method)).collect();
        let paths: Vec<_> = rules.iter().map(|(r, _)| non_empty(&r.path)).collect();
        let hosts: Vec<_> = rules.iter().map(|(r, _)| non_empty(&r.host)).collect();
        let method = FieldSet::build("method", &methods, words, size_limit)?;
        let path = FieldSet::build("path", &paths, words, size_limit)?;
        let host = FieldSet::build("host", &hosts, words, size_limit)?;
        let mut headers = Vec::with_capacity(n);
        for (index, (rule, _)) in rules.iter().enumerate() {
            let list = rule
                .headers
                .iter()
                .map(|h| parse_header_match(index, h))
                .collect::<Result<Vec<_>, _>>()?;
            headers.push(list);
        }
        Ok(Self {
            ids: rules.iter().map(|(_, id)| *id).collect(),
            words,
            method,
            path,
            host,
            headers,
            allow_all: None,
        })
    }

    /// Every request is allowed and attributed to `rule`: an L4-only allow on the same port lifts
    /// the L7 restrictions.
    pub fn allow_all(rule: RuleId) -> Self {
        let empty = || FieldSet {
            regex: None,
            pattern_rules: Vec::new(),
            absent: vec![0],
        };
        Self {
            ids: Vec::new(),
            words: 1,
            method: empty(),
            path: empty(),
            host: empty(),
            headers: Vec::new(),
            allow_all: Some(rule),
        }
    }

    /// Number of rules (0 for an allow-all set).
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// True when no rule can match (and this is not an allow-all set).
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty() && self.allow_all.is_none()
    }

    /// The first rule matching `req`, or `None` when the request must be denied.
    pub fn judge(&self, req: &RequestHead) -> Option<RuleId> {
        if let Some(id) = self.allow_all {
            return Some(id);
        }
        if self.ids.is_empty() {
            return None;
        }
        SCRATCH.with(|scratch| {
            let mut guard = scratch.borrow_mut();
            let Scratch {
                patset,
                candidates,
                acc,
            } = &mut *guard;
            let need = self
                .method
                .pattern_len()
                .max(self.path.pattern_len())
                .max(self.host.pattern_len());
            if patset.capacity() < need {
                *patset = PatternSet::new(need);
            }
            candidates.clear();
            candidates.resize(self.words, u64::MAX);
            acc.clear();
            acc.resize(self.words, 0);
            // Cheapest field first; stop as soon as nothing is left.
            self.method
                .narrow(Some(&req.method), candidates, acc, patset);
            if candidates.iter().all(|w| *w == 0) {
                return None;
            }
            self.host
                .narrow(req.host.as_deref(), candidates, acc, patset);
            if candidates.iter().all(|w| *w == 0) {
                return None;
            }
            self.path.narrow(Some(&req.target), candidates, acc, patset);
            for (w, word) in candidates.iter().enumerate() {
                let mut bits = *word;
                while bits != 0 {
                    let rule = w * 64 + bits.trailing_zeros() as usize;
                    bits &= bits - 1;
                    if rule >= self.ids.len() {
                        return None;
                    }
                    if headers_match(&self.headers[rule], req) {
                        return Some(self.ids[rule]);
                    }
                }
            }
            None
        })
    }
}

fn headers_match(required: &[HeaderMatch], req: &RequestHead) -> bool {
    required.iter().all(|m| {
        let mut seen = false;
        for (name, value) in &req.headers {
            if name.eq_ignore_ascii_case(&m.name) {
                if let Some(want) = &m.value
                    && value != want
                {
                    return false;
                }
                seen = true;
            }
        }
        seen
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(
        method: &str,
        target: &str,
        host: Option<&str>,
        headers: &[(&str, &str)],
    ) -> RequestHead {
        RequestHead {
            method: method.into(),
            target: target.into(),
            version: 1,
            host: host.map(Into::into),
            headers: headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec()))
                .collect(),
        }
    }

    fn spec(
        method: Option<&str>,
        path: Option<&str>,
        host: Option<&str>,
        headers: &[&str],
    ) -> HttpRuleSpec {
        HttpRuleSpec {
            method: method.map(Into::into),
            path: path.map(Into::into),
            host: host.map(Into::into),
            headers: headers.iter().map(|h| h.to_string()).collect(),
        }
    }

    /// One case: a rule list, a request, and the rule id expected to allow it (None = denied).
    struct Case {
        name: &'static str,
        rules: Vec<HttpRuleSpec>,
        req: RequestHead,
        want: Option<RuleId>,
    }

    fn check(cases: Vec<Case>) {
        let mut failures = Vec::new();
        for case in cases {
            let list: Vec<_> = case
                .rules
                .iter()
                .cloned()
                .enumerate()
                .map(|(i, r)| (r, 100 + i as RuleId))
                .collect();
            let compiled = CompiledRules::compile(&list).expect(case.name);
            let got = compiled.judge(&case.req);
            if got != case.want {
                failures.push(format!(
                    "{}: want {:?}, got {:?}",
                    case.name, case.want, got
                ));
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }

    #[test]
    fn rule_table() {
        let star_wars = vec![
            spec(Some("GET"), Some("/v1"), None, &[]),
            spec(Some("POST"), Some("/v1/request-landing"), None, &[]),
        ];
        let h = Some("deathstar.default.svc.cluster.local");
        let cases = vec![
            Case {
                name: "landing allowed",
                rules: star_wars.clone(),
                req: req("POST", "/v1/request-landing", h, &[]),
                want: Some(101),
            },
            Case {
                name: "exhaust port denied",
                rules: star_wars.clone(),
                req: req("PUT", "/v1/exhaust-port", h, &[]),
                want: None,
            },
            Case {
                name: "GET /v1 allowed",
                rules: star_wars.clone(),
                req: req("GET", "/v1", h, &[]),
                want: Some(100),
            },
            Case {
                name: "path anchored at end",
                rules: star_wars.clone(),
                req: req("GET", "/v1/exhaust-port", h, &[]),
                want: None,
            },
            Case {
                name: "path anchored at start",
                rules: star_wars.clone(),
                req: req("GET", "/x/v1", h, &[]),
                want: None,
            },
            Case {
                name: "method anchored",
                rules: star_wars.clone(),
                req: req("GETX", "/v1", h, &[]),
                want: None,
            },
            Case {
                name: "method case-sensitive",
                rules: star_wars.clone(),
                req: req("get", "/v1", h, &[]),
                want: None,
            },
            Case {
                name: "wrong method for path",
                rules: star_wars.clone(),
                req: req("POST", "/v1", h, &[]),
                want: None,
            },
            Case {
                name: "query is part of the path",
                rules: star_wars.clone(),
                req: req("GET", "/v1?x=1", h, &[]),
                want: None,
            },
            Case {
                name: "query allowed by regex",
                rules: vec![spec(Some("GET"), Some("/search\\?q=[a-z]+"), None, &[])],
                req: req("GET", "/search?q=abc", h, &[]),
                want: Some(100),
            },
            Case {
                name: "query regex anchored",
                rules: vec![spec(Some("GET"), Some("/search\\?q=[a-z]+"), None, &[])],
                req: req("GET", "/search?q=abc&admin=1", h, &[]),
                want: None,
            },
            Case {
                name: "alternation inside anchors",
                rules: vec![spec(Some("GET|HEAD"), Some("/a|/b"), None, &[])],
                req: req("HEAD", "/b", h, &[]),
                want: Some(100),
            },
            Case {
                name: "alternation does not escape anchors",
                rules: vec![spec(None, Some("/a|/b"), None, &[])],
                req: req("GET", "/bc", h, &[]),
                want: None,
            },
            Case {
                name: "prefix regex",
                rules: vec![spec(None, Some("/public/.*"), None, &[])],
                req: req("DELETE", "/public/x/y", h, &[]),
                want: Some(100),
            },
            Case {
                name: "empty fields match all",
                rules: vec![spec(Some(""), Some(""), Some(""), &[])],
                req: req("PATCH", "/anything", None, &[]),
                want: Some(100),
            },
            Case {
                name: "header presence",
                rules: vec![spec(None, None, None, &["X-Token"])],
                req: req("GET", "/", h, &[("x-token", "anything")]),
                want: Some(100),
            },
            Case {
                name: "header presence missing",
                rules: vec![spec(None, None, None, &["X-Token"])],
                req: req("GET", "/", h, &[("x-other", "1")]),
                want: None,
            },
            Case {
                name: "header value equal",
                rules: vec![spec(None, None, None, &["X-Token: s3cret"])],
                req: req("GET", "/", h, &[("X-TOKEN", "s3cret")]),
                want: Some(100),
            },
            Case {
                name: "header value differs",
                rules: vec![spec(None, None, None, &["X-Token: s3cret"])],
                req: req("GET", "/", h, &[("X-Token", "s3cret2")]),
                want: None,
            },
            Case {
                name: "header value is not a regex",
                rules: vec![spec(None, None, None, &["X-Token: s.*"])],
                req: req("GET", "/", h, &[("X-Token", "s3cret")]),
                want: None,
            },
            Case {
                name: "duplicate header must all equal",
                rules: vec![spec(None, None, None, &["X-Token: good"])],
                req: req("GET", "/", h, &[("X-Token", "good"), ("X-Token", "bad")]),
                want: None,
            },
            Case {
                name: "two headers AND",
                rules: vec![spec(None, None, None, &["A: 1", "B"])],
                req: req("GET", "/", h, &[("a", "1")]),
                want: None,
            },
            Case {
                name: "two headers AND ok",
                rules: vec![spec(None, None, None, &["A: 1", "B"])],
                req: req("GET", "/", h, &[("b", ""), ("a", "1")]),
                want: Some(100),
            },
            Case {
                name: "host regex",
                rules: vec![spec(None, None, Some("api\\.example\\.com"), &[])],
                req: req("GET", "/", Some("api.example.com"), &[]),
                want: Some(100),
            },
            Case {
                name: "host regex anchored",
                rules: vec![spec(None, None, Some("api\\.example\\.com"), &[])],
                req: req("GET", "/", Some("api.example.com.evil"), &[]),
                want: None,
            },
            Case {
                name: "host with port must be in regex",
                rules: vec![spec(None, None, Some("api\\.example\\.com"), &[])],
                req: req("GET", "/", Some("api.example.com:80"), &[]),
                want: None,
            },
            Case {
                name: "missing host never matches host rule",
                rules: vec![spec(None, None, Some(".*"), &[])],
                req: req("GET", "/", None, &[]),
                want: None,
            },
            Case {
                name: "fields AND",
                rules: vec![spec(Some("GET"), Some("/a"), Some("h"), &["X"])],
                req: req("GET", "/a", Some("h"), &[]),
                want: None,
            },
            Case {
                name: "rules OR, first wins",
                rules: vec![
                    spec(Some("POST"), None, None, &[]),
                    spec(None, Some("/a"), None, &[]),
                    spec(Some("GET"), None, None, &[]),
                ],
                req: req("GET", "/a", h, &[]),
                want: Some(101),
            },
            Case {
                name: "no rules denies",
                rules: vec![],
                req: req("GET", "/", h, &[]),
                want: None,
            },
            Case {
                name: "RE2 classes",
                rules: vec![spec(None, Some("/v[0-9]+/items/\\d+"), None, &[])],
                req: req("GET", "/v2/items/42", h, &[]),
                want: Some(100),
            },
        ];
        check(cases);
    }

    #[test]
    fn many_rules_pick_the_right_one() {
        let rules: Vec<_> = (0..200)
            .map(|i| {
                (
                    spec(
                        Some(if i % 2 == 0 { "GET" } else { "POST" }),
                        Some(&format!("/api/v{i}/items/[0-9]+")),
                        None,
                        &[],
                    ),
                    i as RuleId,
                )
            })
            .collect();
        let compiled = CompiledRules::compile(&rules).unwrap();
        assert_eq!(
            compiled.judge(&req("GET", "/api/v150/items/7", None, &[])),
            Some(150)
        );
        assert_eq!(
            compiled.judge(&req("POST", "/api/v150/items/7", None, &[])),
            None
        );
        assert_eq!(
            compiled.judge(&req("POST", "/api/v199/items/7", None, &[])),
            Some(199)
        );
        assert_eq!(
            compiled.judge(&req("GET", "/api/v200/items/7", None, &[])),
            None
        );
    }

    #[test]
    fn allow_all_and_errors() {
        assert_eq!(
            CompiledRules::allow_all(7).judge(&req("X", "*", None, &[])),
            Some(7)
        );
        let bad = CompiledRules::compile(&[(spec(None, Some("(unclosed"), None, &[]), 1)]);
        assert!(
            matches!(bad, Err(RuleError::BadRegex { field: "path", .. })),
            "{bad:?}"
        );
        let bad = CompiledRules::compile(&[(spec(None, None, None, &["Bad Name: x"]), 1)]);
        assert!(matches!(bad, Err(RuleError::BadHeader { .. })), "{bad:?}");
        let bad = CompiledRules::compile(&[(spec(None, None, None, &[": x"]), 1)]);
        assert!(matches!(bad, Err(RuleError::BadHeader { .. })), "{bad:?}");
    }
}
