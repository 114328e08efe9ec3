//! Validated identifiers. Once constructed, an id is known to follow PROTOCOL.md, so no code past
//! the edge checks it again. Both are cheap to clone (shared string).

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Longest document id, in bytes.
pub const MAX_DOC_ID_BYTES: usize = 256;
/// Longest client id, in characters.
pub const MAX_CLIENT_ID_CHARS: usize = 64;

/// A document id: 1 to 256 bytes of `[A-Za-z0-9._~/-]`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DocId(Arc<str>);

/// A client id: 1 to 64 characters of `[A-Za-z0-9._~-]`, unique to one editing session.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientId(Arc<str>);

/// Why an id was refused; the text is meant for the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidId(String);

impl DocId {
    pub fn parse(s: &str) -> Result<Self, InvalidId> {
        if s.is_empty() || s.len() > MAX_DOC_ID_BYTES {
            return Err(InvalidId(format!(
                "document id must be 1 to {MAX_DOC_ID_BYTES} bytes, got {}",
                s.len()
            )));
        }
        if let Some(bad) = s.chars().find(|&c| !(is_unreserved(c) || c == '/')) {
            return Err(InvalidId(format!(
                "document id may only contain A-Z a-z 0-9 . _ ~ / -, found {bad:?}"
            )));
        }
        Ok(Self(s.into()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl ClientId {
    pub fn parse(s: &str) -> Result<Self, InvalidId> {
        let len = s.chars().count();
        if len == 0 || len > MAX_CLIENT_ID_CHARS {
            return Err(InvalidId(format!(
                "client id must be 1 to {MAX_CLIENT_ID_CHARS} characters, got {len}"
            )));
        }
        if let Some(bad) = s.chars().find(|&c| !is_unreserved(c)) {
            return Err(InvalidId(format!("client id may only contain A-Z a-z 0-9 . _ ~ -, found {bad:?}")));
        }
        Ok(Self(s.into()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn is_unreserved(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '~' | '-')
}

macro_rules! id_impls {
    ($ty:ident) => {
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl fmt::Debug for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{:?}", &*self.0)
            }
        }
        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                $ty::parse(&s).map_err(serde::de::Error::custom)
            }
        }
    };
}
id_impls!(DocId);
id_impls!(ClientId);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doc_ids() {
        assert!(DocId::parse("team-a/notes_1.md~").is_ok());
        assert!(DocId::parse(&"a".repeat(256)).is_ok());
        assert!(DocId::parse(&"a".repeat(257)).unwrap_err().0.contains("1 to 256 bytes"));
        assert!(DocId::parse("").is_err());
        assert!(DocId::parse("a b").unwrap_err().0.contains("' '"));
        assert!(DocId::parse("é").is_err());
    }

    #[test]
    fn client_ids() {
        assert!(ClientId::parse("c-1.x_y~").is_ok());
        assert!(ClientId::parse("a/b").is_err());
        assert!(ClientId::parse(&"a".repeat(65)).is_err());
    }
}
