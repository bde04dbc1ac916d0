//! Connection URLs as they may be shown: in configuration output, errors
//! and logs.

const REDACTED: &str = "[redacted]";

/// Query parameters whose value is a credential (compared
/// case-insensitively); so is any name ending in `password`, `secret` or
/// `token` (`client_secret`, `access_token`).
const SECRET_PARAMS: &[&str] = &[
    "password",
    "sslpassword",
    "pass",
    "passwd",
    "token",
    "secret",
    "key",
];

/// `url` with the password of its userinfo and the values of credential
/// query parameters replaced by `[redacted]`:
/// `postgres://u:pw@h/db?sslmode=require&password=x` becomes
/// `postgres://u:[redacted]@h/db?sslmode=require&password=[redacted]`.
///
/// A comma-separated list of URLs (NATS servers) is redacted URL by URL.
/// A value that is not a URL at all is redacted whole: it may be a bare
/// secret or a `key=value` connection string.
pub fn redact_url(url: &str) -> String {
    if !url.contains("://") {
        return REDACTED.to_owned();
    }
    split_urls(url)
        .iter()
        .map(|one| redact_one(one))
        .collect::<Vec<_>>()
        .join(",")
}

/// Splits at the commas that start another `scheme://`, so that a comma in
/// a password or in a multi-host authority stays inside its URL.
fn split_urls(list: &str) -> Vec<String> {
    let mut urls: Vec<String> = Vec::new();
    for part in list.split(',') {
        match urls.last_mut() {
            Some(last) if !starts_with_scheme(part.trim_start()) => {
                last.push(',');
                last.push_str(part);
            }
            _ => urls.push(part.to_owned()),
        }
    }
    urls
}

fn starts_with_scheme(s: &str) -> bool {
    s.find("://").is_some_and(|end| {
        end > 0
            && s[..end]
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
    })
}

fn redact_one(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return REDACTED.to_owned();
    };
    let (head, rest) = url.split_at(scheme_end);
    // The userinfo ends at the last `@` before the query, so that an `@`,
    // `:` or `/` inside a password is still inside it.
    let query_start = rest.find(['?', '#']).unwrap_or(rest.len());
    let (authority, tail) = match rest[..query_start].rfind('@') {
        Some(at) => {
            let userinfo = &rest[..at];
            let shown = match userinfo.split_once(':') {
                Some((user, _password)) => format!("{user}:{REDACTED}"),
                // A lone userinfo names a PostgreSQL user; elsewhere (NATS)
                // it is a token.
                None if head.starts_with("postgres") => userinfo.to_owned(),
                None => REDACTED.to_owned(),
            };
            (format!("{shown}@"), &rest[at + 1..])
        }
        None => (String::new(), rest),
    };
    format!("{head}{authority}{}", redact_query(tail))
}

fn redact_query(tail: &str) -> String {
    let Some(q) = tail.find('?') else {
        return tail.to_owned();
    };
    let (path, query) = (&tail[..q], &tail[q + 1..]);
    let (query, fragment) = match query.find('#') {
        Some(h) => (&query[..h], &query[h..]),
        None => (query, ""),
    };
    let params: Vec<String> = query
        .split('&')
        .map(|param| match param.split_once('=') {
            Some((name, _)) if is_secret_param(name) => format!("{name}={REDACTED}"),
            _ => param.to_owned(),
        })
        .collect();
    format!("{path}?{}{fragment}", params.join("&"))
}

fn is_secret_param(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    SECRET_PARAMS.contains(&name.as_str())
        || ["password", "secret", "token"]
            .iter()
            .any(|suffix| name.ends_with(suffix))
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn userinfo_passwords_and_credential_parameters_are_redacted() {
        assert_eq!(
            redact_url("postgres://u:hunter2@h/db?sslmode=require&password=x"),
            "postgres://u:[redacted]@h/db?sslmode=require&password=[redacted]"
        );
        assert_eq!(
            redact_url("postgresql://ordo:hunter2@db:5432/ordo"),
            "postgresql://ordo:[redacted]@db:5432/ordo"
        );
        assert_eq!(
            redact_url(
                "postgres://h/db?SSLPassword=a&Pass=b&passwd=c&token=d&Secret=e&key=f&client_secret=g&sslmode=verify-full"
            ),
            "postgres://h/db?SSLPassword=[redacted]&Pass=[redacted]&passwd=[redacted]&token=[redacted]&Secret=[redacted]&key=[redacted]&client_secret=[redacted]&sslmode=verify-full"
        );
    }

    #[test]
    fn awkward_passwords_do_not_leak() {
        for (url, secret) in [
            ("postgres://u:p@ss/w:rd@h/db", "p@ss/w:rd"),
            ("postgres://u:a,b@h1,h2/db?password=zz", "a,b"),
            ("nats://s3cr3t@nats:4222", "s3cr3t"),
            ("nats://u:pw1@a:4222, nats://u:pw2@b:4222", "pw"),
            ("host=h password=kv", "kv"),
            ("postgres://u:pw@h/db#frag?password=x", "pw"),
        ] {
            let shown = redact_url(url);
            assert!(!shown.contains(secret), "{url} shown as {shown}");
        }
        assert_eq!(
            redact_url("nats://u:pw1@a:4222,nats://b:4222"),
            "nats://u:[redacted]@a:4222,nats://b:4222"
        );
        assert_eq!(
            redact_url("postgres://ordo@db/ordo?sslmode=require"),
            "postgres://ordo@db/ordo?sslmode=require"
        );
        assert_eq!(
            redact_url("postgres://db/ordo?application_name=x&keepalives=1"),
            "postgres://db/ordo?application_name=x&keepalives=1"
        );
    }
}
