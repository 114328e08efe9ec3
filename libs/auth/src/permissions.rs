//! Read and write permissions on documents, as patterns over document ids.

use std::fmt;

use tandem_protocol::DocId;

/// What a caller wants to do with a document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
}

/// One permission pattern: an exact document id, a prefix ending in `*`, or `*` for every document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pattern {
    Exact(String),
    Prefix(String),
}

/// Why a pattern is not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("permission pattern {pattern:?}: {reason}")]
pub struct PatternError {
    pub pattern: String,
    pub reason: &'static str,
}

impl Pattern {
    /// Parses a pattern. `*` may only appear once, at the end: `team-a/*` is a prefix, `team-*-notes`
    /// is refused rather than read as something the token's issuer may not have meant.
    pub fn parse(pattern: &str) -> Result<Self, PatternError> {
        let error = |reason| PatternError { pattern: pattern.to_owned(), reason };
        if pattern.is_empty() {
            return Err(error("is empty"));
        }
        match pattern.strip_suffix('*') {
            Some(prefix) if prefix.contains('*') => Err(error("`*` may only end a pattern")),
            Some(prefix) => Ok(Pattern::Prefix(prefix.to_owned())),
            None if pattern.contains('*') => Err(error("`*` may only end a pattern")),
            None => Ok(Pattern::Exact(pattern.to_owned())),
        }
    }

    pub fn matches(&self, doc: &str) -> bool {
        match self {
            Pattern::Exact(id) => id == doc,
            Pattern::Prefix(prefix) => doc.starts_with(prefix.as_str()),
        }
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Pattern::Exact(id) => f.write_str(id),
            Pattern::Prefix(prefix) => write!(f, "{prefix}*"),
        }
    }
}

/// The documents a caller may read and write. Write implies read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Permissions {
    read: Vec<Pattern>,
    write: Vec<Pattern>,
}

impl Permissions {
    /// Every document, read and write: services, and servers running without authentication.
    pub fn all() -> Self {
        Self { read: Vec::new(), write: vec![Pattern::Prefix(String::new())] }
    }

    /// Parses read and write pattern lists.
    pub fn parse<S: AsRef<str>>(read: &[S], write: &[S]) -> Result<Self, PatternError> {
        let parse =
            |list: &[S]| list.iter().map(|p| Pattern::parse(p.as_ref())).collect::<Result<Vec<_>, _>>();
        Ok(Self { read: parse(read)?, write: parse(write)? })
    }

    pub fn allows(&self, access: Access, doc: &DocId) -> bool {
        let doc = doc.as_str();
        let writes = self.write.iter().any(|p| p.matches(doc));
        match access {
            Access::Write => writes,
            Access::Read => writes || self.read.iter().any(|p| p.matches(doc)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(id: &str) -> DocId {
        DocId::parse(id).unwrap()
    }

    #[test]
    fn exact_prefix_and_everything() {
        let p = Permissions::parse(&["handbook", "team-b/*"], &["team-a/*"]).unwrap();
        assert!(p.allows(Access::Read, &doc("handbook")));
        assert!(!p.allows(Access::Write, &doc("handbook")));
        assert!(!p.allows(Access::Read, &doc("handbook2")));
        assert!(p.allows(Access::Read, &doc("team-b/x")));
        assert!(!p.allows(Access::Write, &doc("team-b/x")));
        assert!(p.allows(Access::Write, &doc("team-a/notes")));
        assert!(p.allows(Access::Read, &doc("team-a/notes")), "write implies read");
        assert!(!p.allows(Access::Read, &doc("team-ab")));
        let all = Permissions::parse(&[] as &[&str], &["*"]).unwrap();
        assert!(all.allows(Access::Write, &doc("anything")));
        assert_eq!(all, Permissions::all());
        assert!(!Permissions::default().allows(Access::Read, &doc("x")));
    }

    #[test]
    fn star_only_at_the_end() {
        assert!(Pattern::parse("team-*-notes").is_err());
        assert!(Pattern::parse("**").is_err());
        assert!(Pattern::parse("").is_err());
        assert_eq!(Pattern::parse("a/*").unwrap().to_string(), "a/*");
    }
}
