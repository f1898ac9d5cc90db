use std::fmt;

/// Which database a store talks to. The SQL is shared; only connection
/// setup, transaction start and row locking differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn from_url(url: &str) -> Option<Self> {
        if url.starts_with("sqlite:") {
            Some(Self::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Some(Self::Postgres)
        } else {
            None
        }
    }

    /// The database file of a `sqlite://path[?options]` URL.
    pub fn sqlite_file(url: &str) -> Option<std::path::PathBuf> {
        let path = url.split_once('?').map_or(url, |(p, _)| p);
        let file = path
            .strip_prefix("sqlite://")
            .or_else(|| path.strip_prefix("sqlite:"))?;
        (!file.is_empty()).then(|| file.into())
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Sqlite => "sqlite",
            Self::Postgres => "postgres",
        }
    }

    /// SQLite has one writer: taking the write lock up front means a
    /// read-then-write transaction can never fail to upgrade mid-way.
    pub(crate) fn begin_write(&self) -> &'static str {
        match self {
            Self::Sqlite => "BEGIN IMMEDIATE",
            Self::Postgres => "BEGIN",
        }
    }

    /// Row-locking suffix for claim subqueries: on PostgreSQL concurrent
    /// buyers skip each other's rows instead of queueing on them; SQLite's
    /// single writer makes the statement atomic on its own.
    pub(crate) fn skip_locked(&self) -> &'static str {
        match self {
            Self::Sqlite => "",
            Self::Postgres => "FOR UPDATE SKIP LOCKED",
        }
    }

    /// Rows per multi-row INSERT of a group commit. Small on SQLite: sqlx
    /// looks every SQLite parameter up by name, which costs time quadratic in
    /// the parameters of a statement (perf showed `sqlite3_bind_parameter_name`
    /// on top at 64 rows). Large on PostgreSQL, where each statement is a
    /// round trip and parameters are cheap.
    pub(crate) fn insert_chunk(&self) -> usize {
        match self {
            Self::Sqlite => 16,
            Self::Postgres => 128,
        }
    }

    pub(crate) fn for_update(&self) -> &'static str {
        match self {
            Self::Sqlite => "",
            Self::Postgres => "FOR UPDATE",
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A database URL whose `Debug`/`Display` hide the password.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let userinfo = &url[scheme_end + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{}:***{}", &url[..scheme_end + 3], user, &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_passwords() {
        assert_eq!(
            redact_url("postgres://u:secret@h/db"),
            "postgres://u:***@h/db"
        );
        assert_eq!(redact_url("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact_url("sqlite://data/kami.db"), "sqlite://data/kami.db");
    }
}
