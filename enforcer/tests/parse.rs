//! Data-driven tests of the policy parser, at its boundary: YAML in, policies or errors out.
//!
//! - `tests/data/policies/valid/NAME.{yaml,json}` must parse; `NAME.expected` holds the parsed
//!   policies as JSON.
//! - `tests/data/policies/invalid/NAME.{yaml,json}` must fail; `NAME.expected` holds every error
//!   exactly as the CLI prints it (`FILE:LINE:COL: FIELD: MESSAGE` and the hint line).
//!
//! Run with `UPDATE_EXPECT=1` to rewrite the `.expected` files after an intended change, then
//! review the diff.

use std::{
    fs,
    path::{Path, PathBuf},
};

use enforcer::{
    policy::api::{PolicyKind, check_policies, parse_policies},
    yaml::{ErrorKind, Source, parse_documents},
};

fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/policies")
}

/// The fixture files of one directory (`valid` or `invalid`), sorted.
fn fixtures(dir: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(data_dir().join(dir))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            matches!(
                p.extension().and_then(|e| e.to_str()),
                Some("yaml" | "json")
            )
        })
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no fixtures in {dir}");
    files
}

/// The source of a fixture, named `DIR/FILE` so expected output does not depend on where the
/// repository is.
fn source(path: &Path) -> Source {
    let dir = path
        .parent()
        .unwrap()
        .file_name()
        .unwrap()
        .to_str()
        .unwrap();
    let name = path.file_name().unwrap().to_str().unwrap();
    Source::new(format!("{dir}/{name}"), fs::read_to_string(path).unwrap())
}

/// Renders every fixture of `dir` with `render` and compares with its `.expected` file.
fn check(dir: &str, render: impl Fn(&Source) -> String) {
    let update = std::env::var_os("UPDATE_EXPECT").is_some();
    let mut failures = Vec::new();
    for path in fixtures(dir) {
        let actual = render(&source(&path));
        let expected_path = path.with_extension("expected");
        if update {
            fs::write(&expected_path, &actual).unwrap();
            continue;
        }
        let expected = fs::read_to_string(&expected_path).unwrap_or_default();
        if expected != actual {
            failures.push(format!(
                "--- {}\n--- expected:\n{expected}\n--- actual:\n{actual}",
                expected_path.display()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} fixture(s) differ (UPDATE_EXPECT=1 rewrites them):\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn valid_policies() {
    check("valid", |src| match parse_policies(src) {
        Ok(policies) => {
            assert!(!policies.is_empty(), "{}: no policies", src.name);
            serde_json::to_string_pretty(&policies).unwrap() + "\n"
        }
        Err(errors) => panic!(
            "{} should parse:\n{}",
            src.name,
            errors
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n")
        ),
    });
}

#[test]
fn invalid_policies() {
    check("invalid", |src| match parse_policies(src) {
        Ok(_) => panic!("{} should not parse", src.name),
        Err(errors) => errors.iter().map(|e| format!("{e}\n")).collect(),
    });
}

/// Every error of an invalid fixture points inside the file, and unsupported features are
/// classified as such.
#[test]
fn errors_point_into_the_file_and_are_classified() {
    for path in fixtures("invalid") {
        let src = source(&path);
        let lines = src.text.lines().count();
        let check = check_policies(&src);
        assert!(!check.errors.is_empty(), "{}", src.name);
        for e in &check.errors {
            assert!(
                e.line >= 1 && e.line <= lines.max(1),
                "{e}: line outside the file"
            );
            assert!(e.column >= 1, "{e}");
            let says_unsupported = e.message.contains("not supported by the lab yet");
            assert_eq!(says_unsupported, e.kind == ErrorKind::Unsupported, "{e}");
        }
    }
}

/// A policy whose only problems are unsupported features is still returned in check mode; one
/// that had to be repaired to decode (a typo) is not.
#[test]
fn check_mode_keeps_policies_with_unsupported_features() {
    for name in ["unsupported_fqdns.yaml", "unsupported_misc.yaml"] {
        let check = check_policies(&source(&data_dir().join("invalid").join(name)));
        assert_eq!(check.policies.len(), 1, "{name}");
        assert!(
            check
                .errors
                .iter()
                .all(|e| e.kind == ErrorKind::Unsupported),
            "{name}"
        );
    }
    let check = check_policies(&source(&data_dir().join("invalid/typo_field.yaml")));
    assert!(check.policies.is_empty());
}

/// The located values built from saphyr's events agree with serde_yaml_ng on every fixture.
#[test]
fn values_agree_with_serde_yaml_ng() {
    for path in fixtures("valid").into_iter().chain(fixtures("invalid")) {
        let src = source(&path);
        let Ok(docs) = parse_documents(&src) else {
            continue;
        };
        let theirs: Vec<serde_json::Value> = serde_yaml_ng::Deserializer::from_str(&src.text)
            .map(|d| serde::Deserialize::deserialize(d).unwrap())
            .filter(|v: &serde_json::Value| !v.is_null())
            .flat_map(
                |v| match (v.get("kind").and_then(|k| k.as_str()), v.get("items")) {
                    (Some("List"), Some(serde_json::Value::Array(items))) => items.clone(),
                    _ => vec![v],
                },
            )
            .collect();
        let ours: Vec<_> = docs.into_iter().map(|d| d.value).collect();
        assert_eq!(ours, theirs, "{}", src.name);
    }
}

#[test]
fn kinds_and_sources() {
    let policies = parse_policies(&source(&data_dir().join("valid/list.yaml"))).unwrap();
    assert_eq!(policies.len(), 2);
    assert_eq!(policies[0].kind, PolicyKind::Namespaced);
    assert_eq!(policies[0].source.line, 6);
    assert_eq!(policies[1].kind, PolicyKind::Clusterwide);
    assert_eq!(policies[1].namespace, None);
    assert_eq!(
        (policies[1].source.document, policies[1].source.line),
        (1, 25)
    );
}

/// Mangled fixtures (bytes deleted, lines repeated, stray indicators inserted) never panic, and
/// every error still points inside the text.
#[test]
fn mangled_input_never_panics() {
    let mut seed: u64 = 0x5eed;
    let mut next = move |n: usize| {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((seed >> 33) as usize) % n.max(1)
    };
    let pieces = [
        ":", "- ", "\t", "{", "]", "'", "&a ", "*a", "!!int ", "\n  ", "---\n", "0x",
    ];
    for path in fixtures("valid").into_iter().chain(fixtures("invalid")) {
        let original = fs::read_to_string(&path).unwrap();
        for _ in 0..150 {
            let mut text = original.clone();
            let mut at = next(text.len());
            while !text.is_char_boundary(at) {
                at -= 1;
            }
            match next(3) {
                0 => {
                    let mut end = (at + 1 + next(8)).min(text.len());
                    while !text.is_char_boundary(end) {
                        end += 1;
                    }
                    text.replace_range(at..end, "");
                }
                1 => text.insert_str(at, pieces[next(pieces.len())]),
                _ => {
                    let lines: Vec<&str> = original.lines().collect();
                    let i = next(lines.len());
                    let mut l = lines.clone();
                    l.insert(i, lines[i]);
                    text = l.join("\n");
                }
            }
            let lines = text.lines().count().max(1) + 1;
            let check = check_policies(&Source::new("m.yaml", text.clone()));
            for e in &check.errors {
                assert!(e.line >= 1 && e.line <= lines, "{e}\n--- in:\n{text}");
            }
        }
    }
}
