//! Database URLs whose passwords never reach a log line, an error, a `Debug`
//! print of the settings or `--help`: `DatabaseUrl` shows itself redacted and
//! gives the real text only through `expose`.

use std::{convert::Infallible, fmt, str::FromStr};

use sqlx::postgres::PgConnectOptions;

/// What a redacted password is replaced with.
const REDACTED: &str = "***";

/// A database URL from the configuration; `Debug` and `Display` hide its password.
#[derive(Clone, PartialEq, Eq)]
pub struct DatabaseUrl(String);

impl DatabaseUrl {
    /// Wraps `url`.
    pub fn new(url: impl Into<String>) -> Self {
        Self(url.into())
    }

    /// The URL with its password, for connecting only.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The connect options the URL describes.
    pub fn connect_options(&self) -> Result<PgConnectOptions, sqlx::Error> {
        self.0.parse()
    }
}

impl fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&redact_url(&self.0))
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DatabaseUrl({})", redact_url(&self.0))
    }
}

impl FromStr for DatabaseUrl {
    type Err = Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self::new(s))
    }
}

impl From<String> for DatabaseUrl {
    fn from(url: String) -> Self {
        Self(url)
    }
}

impl From<&str> for DatabaseUrl {
    fn from(url: &str) -> Self {
        Self::new(url)
    }
}

/// `url` with the password of its user info and of any `password` parameter
/// replaced by `***`. Text that is no URL (a `key=value` connection string) has
/// its `password=` values replaced. When in doubt it hides too much: a `@`
/// anywhere after `://` ends the user info.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return redact_parameters(url, ' ');
    };
    let (authority, tail) = match rest.rsplit_once('@') {
        Some((userinfo, after)) => {
            let user = userinfo.split_once(':').map_or(userinfo, |(user, _)| user);
            let hidden = if userinfo.contains(':') {
                format!("{user}:{REDACTED}@")
            } else {
                format!("{user}@")
            };
            (hidden, after)
        }
        None => (String::new(), rest),
    };
    let tail = match tail.split_once('?') {
        Some((path, query)) => format!("{path}?{}", redact_parameters(query, '&')),
        None => tail.to_owned(),
    };
    format!("{scheme}://{authority}{tail}")
}

/// `key=value` pairs separated by `separator`, with password values hidden.
fn redact_parameters(text: &str, separator: char) -> String {
    text.split(separator)
        .map(|pair| match pair.split_once('=') {
            Some((key, _)) if key.to_ascii_lowercase().contains("password") => {
                format!("{key}={REDACTED}")
            }
            _ => pair.to_owned(),
        })
        .collect::<Vec<_>>()
        .join(&separator.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_password_of_the_user_info_is_hidden() {
        assert_eq!(
            redact_url("postgres://orders:s3cr3t@db.internal:5432/orders_write"),
            "postgres://orders:***@db.internal:5432/orders_write"
        );
        assert_eq!(
            redact_url("postgres://orders@db/orders"),
            "postgres://orders@db/orders"
        );
        assert_eq!(redact_url("postgres://db/orders"), "postgres://db/orders");
    }

    #[test]
    fn passwords_with_url_delimiters_are_hidden_whole() {
        for url in [
            "postgres://u:pa/ss@db/x",
            "postgres://u:pa?ss@db/x",
            "postgres://u:pa@ss@db/x",
            "postgres://u:pa#ss@db/x",
        ] {
            let redacted = redact_url(url);
            assert!(!redacted.contains("pa"), "{url} → {redacted}");
            assert!(redacted.starts_with("postgres://u:***@"), "{redacted}");
        }
    }

    #[test]
    fn password_parameters_are_hidden() {
        assert_eq!(
            redact_url("postgres://db/x?user=u&password=s3cr3t&sslmode=require"),
            "postgres://db/x?user=u&password=***&sslmode=require"
        );
        assert_eq!(
            redact_url("host=db user=u password=s3cr3t dbname=x"),
            "host=db user=u password=*** dbname=x"
        );
    }

    #[test]
    fn a_database_url_never_prints_its_password() {
        let url = DatabaseUrl::new("postgres://u:s3cr3t@db/x");
        assert!(!format!("{url}").contains("s3cr3t"));
        assert!(!format!("{url:?}").contains("s3cr3t"));
        assert_eq!(url.expose(), "postgres://u:s3cr3t@db/x");
        assert_eq!(url.connect_options().unwrap().get_database(), Some("x"));
    }
}
