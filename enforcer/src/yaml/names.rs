//! Kubernetes name rules (DNS-1123 labels and subdomains, IANA port names), each returning a
//! message and, when it can, a hint with a valid spelling.

/// A rule violation: the message and a hint (often a corrected spelling).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NameError {
    pub message: String,
    pub hint: Option<String>,
}

fn fail(message: String, hint: Option<String>) -> Result<(), NameError> {
    Err(NameError { message, hint })
}

/// Lowercase, with runs of invalid characters replaced by `-` and trimmed: a valid
/// spelling to suggest.
fn sanitized(name: &str, allow_dot: bool) -> String {
    let mut out = String::new();
    for c in name.chars().flat_map(char::to_lowercase) {
        let ok = c.is_ascii_lowercase() || c.is_ascii_digit() || (allow_dot && c == '.');
        if ok {
            out.push(c);
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    out.trim_matches(['-', '.']).to_owned()
}

fn check_label_chars(name: &str, what: &str, allow_dot: bool) -> Result<(), NameError> {
    let fix = |n: &str| {
        let s = sanitized(n, allow_dot);
        (!s.is_empty()).then(|| format!("for example `{s}`"))
    };
    if let Some(c) = name.chars().find(|c| c.is_ascii_uppercase()) {
        return fail(
            format!(
                "{what} `{name}` contains the uppercase letter `{c}`; only lowercase is allowed"
            ),
            fix(name),
        );
    }
    if let Some(c) = name.chars().find(|c| {
        !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-' || (allow_dot && *c == '.'))
    }) {
        let allowed = if allow_dot {
            "lowercase letters, digits, `-` and `.`"
        } else {
            "lowercase letters, digits and `-`"
        };
        return fail(
            format!("{what} `{name}` contains `{c}`; only {allowed} are allowed"),
            fix(name),
        );
    }
    let first = name.chars().next().unwrap_or('-');
    let last = name.chars().last().unwrap_or('-');
    if !first.is_ascii_alphanumeric() || !last.is_ascii_alphanumeric() {
        return fail(
            format!("{what} `{name}` must start and end with a letter or digit"),
            fix(name),
        );
    }
    Ok(())
}

/// A DNS-1123 label (namespaces, container names, port names): at most 63 characters of
/// lowercase letters, digits and `-`, starting and ending with a letter or digit.
pub fn dns1123_label(name: &str, what: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return fail(format!("{what} must not be empty"), None);
    }
    if name.len() > 63 {
        return fail(
            format!(
                "{what} `{name}` is {} characters long; the limit is 63",
                name.len()
            ),
            None,
        );
    }
    check_label_chars(name, what, false)
}

/// A DNS-1123 subdomain (object names): at most 253 characters; dot-separated labels of
/// lowercase letters, digits and `-`.
pub fn dns1123_subdomain(name: &str, what: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return fail(format!("{what} must not be empty"), None);
    }
    if name.len() > 253 {
        return fail(
            format!("{what} is {} characters long; the limit is 253", name.len()),
            None,
        );
    }
    check_label_chars(name, what, true)?;
    if name.split('.').any(|part| {
        part.is_empty()
            || !part.starts_with(|c: char| c.is_ascii_alphanumeric())
            || !part.ends_with(|c: char| c.is_ascii_alphanumeric())
    }) {
        return fail(
            format!(
                "{what} `{name}`: each dot-separated part must start and end with a letter or digit"
            ),
            None,
        );
    }
    Ok(())
}

/// An IANA service name, as Kubernetes and Cilium use for named ports: 1 to 15 characters
/// of letters, digits and `-`, at least one letter, no `-` at either end and no `--`.
/// Kubernetes requires lowercase (`lowercase_only`); Cilium folds case.
pub fn port_name(name: &str, lowercase_only: bool) -> Result<(), NameError> {
    let what = "port name";
    // A valid spelling to suggest: lowercase, other characters as single `-`, 15 at most.
    let fixed = {
        let mut f = sanitized(name, false);
        f.truncate(15);
        let f = f.trim_end_matches('-').to_owned();
        (!f.is_empty() && f.chars().any(|c| c.is_ascii_alphabetic()) && f != name)
            .then(|| format!("for example `{f}`"))
    };
    if name.is_empty() || name.len() > 15 {
        return fail(
            format!("{what} `{name}` must be 1 to 15 characters long"),
            fixed,
        );
    }
    if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
        return fail(
            format!("{what} `{name}` may contain only letters, digits and `-`"),
            fixed,
        );
    }
    if lowercase_only && name.chars().any(|c| c.is_ascii_uppercase()) {
        return fail(format!("{what} `{name}` must be lowercase"), fixed);
    }
    if !name.chars().any(|c| c.is_ascii_alphabetic()) {
        return fail(
            format!("{what} `{name}` must contain at least one letter"),
            None,
        );
    }
    if name.starts_with('-') || name.ends_with('-') || name.contains("--") {
        return fail(
            format!("{what} `{name}` must not start or end with `-` or contain `--`"),
            fixed,
        );
    }
    Ok(())
}

/// Whether `s` is a valid IANA service name (letters allowed in either case).
pub fn is_port_name(s: &str) -> bool {
    port_name(s, false).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(dns1123_subdomain("rule1.example", "name").is_ok());
        let e = dns1123_subdomain("Rule_1", "name").unwrap_err();
        assert_eq!(
            e.message,
            "name `Rule_1` contains the uppercase letter `R`; only lowercase is allowed"
        );
        assert_eq!(e.hint.as_deref(), Some("for example `rule-1`"));
        assert!(dns1123_label("a.b", "namespace").is_err());
        assert!(is_port_name("http-alt"));
        assert!(!is_port_name("8080"));
        assert!(!is_port_name("a--b"));
    }
}
