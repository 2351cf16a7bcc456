//! Sender whitelist/blacklist entries: case-insensitive globs over the bare From address.

/// One `whitelist_from` / `blacklist_from` entry. `*` matches any run of characters, `?` one character;
/// an entry without `@` is a domain (`example.org` means `*@example.org`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SenderGlob {
    pattern: Vec<char>,
    pub written: String,
}

impl SenderGlob {
    pub fn new(written: &str) -> Result<SenderGlob, String> {
        let w = written.trim().to_lowercase();
        if w.is_empty() {
            return Err("empty sender pattern".into());
        }
        if w.chars().any(char::is_whitespace) {
            return Err(format!("sender pattern {written:?} contains white space"));
        }
        let full = if w.starts_with('@') {
            format!("*{w}")
        } else if !w.contains('@') {
            format!("*@{w}")
        } else {
            w
        };
        Ok(SenderGlob {
            pattern: full.chars().collect(),
            written: written.to_owned(),
        })
    }

    /// Does the (already lower-cased) address match?
    pub fn matches(&self, address: &str) -> bool {
        let text: Vec<char> = address.chars().collect();
        glob(&self.pattern, &text)
    }
}

/// Iterative wildcard match with single-star backtracking: O(pattern × text), no recursion.
fn glob(p: &[char], t: &[char]) -> bool {
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(p: &str, a: &str) -> bool {
        SenderGlob::new(p).unwrap().matches(a)
    }

    #[test]
    fn globs() {
        assert!(m("*@example.org", "alice@example.org"));
        assert!(!m("*@example.org", "alice@example.org.evil"));
        assert!(!m("*@example.org", "alice@sub.example.org"));
        assert!(m("*@*.example.org", "alice@sub.example.org"));
        assert!(m("Boss@Corp.com", "boss@corp.com"));
        assert!(!m("boss@corp.com", "boss2@corp.com"));
        assert!(m("example.org", "x@example.org"));
        assert!(m("@example.org", "x@example.org"));
        assert!(m("b?ss@corp.com", "boss@corp.com"));
        assert!(!m("*@example.org", ""));
        assert!(SenderGlob::new("  ").is_err());
        assert!(SenderGlob::new("a b@c").is_err());
    }
}
