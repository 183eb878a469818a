//! "Did you mean": the candidate closest to a misspelt field, value or kind.

/// The candidate closest to `input`, if one is close enough to be a likely typo: the same word
/// in another case, a small edit distance (at most 2, or a third of the length), or one
/// containing the other (`endpoints` → `fromEndpoints`).
pub fn suggest<'a>(input: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let lower = input.to_lowercase();
    let mut best: Option<(usize, &'a str)> = None;
    for c in candidates {
        let cl = c.to_lowercase();
        let d = if cl == lower {
            0
        } else {
            let d = strsim::levenshtein(&lower, &cl);
            let limit = 2.max(input.chars().count() / 3);
            if d <= limit {
                d
            } else if lower.len() >= 4 && (cl.contains(&lower) || lower.contains(&cl)) {
                limit + 1
            } else {
                continue;
            }
        };
        if best.is_none_or(|(bd, _)| d < bd) {
            best = Some((d, c));
        }
    }
    best.map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions() {
        assert_eq!(
            suggest("fromEndpoint", ["fromEndpoints", "fromCIDR"]),
            Some("fromEndpoints")
        );
        assert_eq!(suggest("tcp", ["TCP", "UDP"]), Some("TCP"));
        assert_eq!(suggest("zzzzzz", ["TCP", "UDP"]), None);
        assert_eq!(
            suggest("endpoints", ["fromEndpoints", "toPorts"]),
            Some("fromEndpoints")
        );
    }
}
