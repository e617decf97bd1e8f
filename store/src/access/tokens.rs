//! The bearer tokens a server accepts (`--auth-tokens FILE`): one per line, `read:TOKEN` or
//! `admin:TOKEN`; blank lines and lines starting with `#` are skipped. A presented token is
//! compared with every known one in constant time (no early exit on the first differing byte,
//! nor on the first match), so timing tells nothing about a token's bytes.

use std::path::{Path, PathBuf};

use subtle::{Choice, ConstantTimeEq};

/// What a token allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// Lookups, table listing and description, Stats.
    Read,
    /// Everything: also regions, LookupInto, Prefetch, channels and reloads.
    Admin,
}

impl Role {
    /// `"read"` or `"admin"`.
    pub fn name(self) -> &'static str {
        match self {
            Role::Read => "read",
            Role::Admin => "admin",
        }
    }
}

/// A token file that cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TokenFileError {
    /// The file could not be read.
    #[error("read token file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A line is not `read:TOKEN` or `admin:TOKEN`.
    #[error("token file line {line}: expected read:TOKEN or admin:TOKEN, {problem}")]
    Line {
        /// 1-based line number.
        line: usize,
        /// What is wrong (never the token itself).
        problem: &'static str,
    },
    /// The file names no token: every request would be refused.
    #[error("token file has no token")]
    Empty,
}

/// The tokens a server accepts and the role of each.
pub struct TokenSet {
    tokens: Vec<(Vec<u8>, Role)>,
}

impl std::fmt::Debug for TokenSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the tokens themselves.
        f.debug_struct("TokenSet")
            .field("read", &self.count(Role::Read))
            .field("admin", &self.count(Role::Admin))
            .finish()
    }
}

impl TokenSet {
    /// Reads a token file.
    pub fn load(path: &Path) -> Result<Self, TokenFileError> {
        let text = std::fs::read_to_string(path).map_err(|source| TokenFileError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text)
    }

    /// Parses a token file's text.
    pub fn parse(text: &str) -> Result<Self, TokenFileError> {
        let mut tokens: Vec<(Vec<u8>, Role)> = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = |problem| TokenFileError::Line {
                line: i + 1,
                problem,
            };
            let (role, token) = line.split_once(':').ok_or(bad("found no ':'"))?;
            let role = match role.trim() {
                "read" => Role::Read,
                "admin" => Role::Admin,
                _ => return Err(bad("the role is neither read nor admin")),
            };
            let token = token.trim();
            if token.is_empty() {
                return Err(bad("the token is empty"));
            }
            // What an HTTP/2 header value can carry after "Bearer ".
            if !token.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(bad("the token has a character other than printable ASCII"));
            }
            if tokens.iter().any(|(t, _)| t == token.as_bytes()) {
                return Err(bad("the token is listed twice"));
            }
            tokens.push((token.as_bytes().to_vec(), role));
        }
        if tokens.is_empty() {
            return Err(TokenFileError::Empty);
        }
        Ok(Self { tokens })
    }

    /// Tokens of `role`.
    pub fn count(&self, role: Role) -> usize {
        self.tokens.iter().filter(|(_, r)| *r == role).count()
    }

    /// The role of `presented`, or `None` for a token not in the set. Takes the same time
    /// whichever token matches, or none: every token is compared in full.
    pub fn role_of(&self, presented: &[u8]) -> Option<Role> {
        let mut read = Choice::from(0);
        let mut admin = Choice::from(0);
        for (token, role) in &self.tokens {
            let hit = ct_eq(presented, token);
            match role {
                Role::Read => read |= hit,
                Role::Admin => admin |= hit,
            }
        }
        if bool::from(admin) {
            Some(Role::Admin)
        } else if bool::from(read) {
            Some(Role::Read)
        } else {
            None
        }
    }
}

/// `presented == known` in time that depends only on `known`'s length.
fn ct_eq(presented: &[u8], known: &[u8]) -> Choice {
    let mut eq = (presented.len() as u64).ct_eq(&(known.len() as u64));
    for (i, k) in known.iter().enumerate() {
        // Past the end of a shorter presented token, compare with a byte no token has.
        let p = presented.get(i).copied().unwrap_or(0);
        eq &= p.ct_eq(k);
    }
    eq
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_roles_and_refuses_bad_lines() {
        let t = TokenSet::parse("# ops\nread:r-123\n\nadmin: a-456 \n").expect("parse");
        assert_eq!(t.role_of(b"r-123"), Some(Role::Read));
        assert_eq!(t.role_of(b"a-456"), Some(Role::Admin));
        assert_eq!(t.role_of(b"a-45"), None);
        assert_eq!(t.role_of(b"a-4567"), None);
        assert_eq!(t.role_of(b""), None);
        assert_eq!(t.count(Role::Read), 1);
        assert!(!format!("{t:?}").contains("r-123"));
        for bad in ["read", "write:x", "read:", "read:a b", "read:x\nadmin:x"] {
            assert!(TokenSet::parse(bad).is_err(), "{bad:?}");
        }
        match TokenSet::parse("read:ok\nadmin:") {
            Err(TokenFileError::Line { line: 2, .. }) => {}
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            TokenSet::parse("# nothing\n"),
            Err(TokenFileError::Empty)
        ));
    }
}
