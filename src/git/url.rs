//! Remote URLs: what kind of remote a URL names, how it is shown (never with a
//! password, nor a token given as the user name), and the mistakes that no
//! retry can mend.

use std::path::PathBuf;

/// Where a remote is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RemoteKind {
    /// A path or `file://` URL: a repository on this machine.
    Local(PathBuf),
    /// `git://`, `ssh://`, `http(s)://`, or scp-like `[user@]host:path`.
    Network,
}

/// Tells a local remote from a network one.
pub fn remote_kind(url: &str) -> RemoteKind {
    if let Some(rest) = url.strip_prefix("file://") {
        return RemoteKind::Local(PathBuf::from(rest));
    }
    if url.contains("://") || scp_host(url).is_some() {
        return RemoteKind::Network;
    }
    RemoteKind::Local(PathBuf::from(url))
}

/// The host of an scp-like URL (`[user@]host:path`): a colon before any slash.
pub fn scp_host(url: &str) -> Option<&str> {
    if url.contains("://") {
        return None;
    }
    let colon = url.find(':')?;
    let slash = url.find('/').unwrap_or(usize::MAX);
    // A one-letter "host" is a Windows drive letter.
    (colon < slash && colon > 1).then(|| {
        let userhost = &url[..colon];
        userhost.rsplit_once('@').map_or(userhost, |(_, h)| h)
    })
}

/// The host name a URL connects to, if it names one.
pub fn host_of(url: &str) -> Option<String> {
    if let Some(h) = scp_host(url) {
        return Some(h.trim_matches(|c| c == '[' || c == ']').to_string());
    }
    let (_, rest) = url.split_once("://")?;
    let authority = rest.split('/').next()?;
    let hostport = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = if let Some(v6) = hostport.strip_prefix('[') {
        v6.split(']').next()?
    } else {
        hostport.split(':').next()?
    };
    (!host.is_empty()).then(|| host.to_string())
}

/// The schemes git can use.
const SCHEMES: [&str; 6] = ["ssh", "git", "http", "https", "file", "git+ssh"];

/// A URL that cannot work, with what is wrong and the form expected; `None` for a
/// URL worth trying.
pub fn mistake(url: &str) -> Option<String> {
    if url.trim().is_empty() {
        return Some("the remote URL is empty".into());
    }
    if let Some((scheme, _)) = url.split_once("://")
        && !SCHEMES.contains(&scheme.to_ascii_lowercase().as_str())
    {
        return Some(format!(
            "{}: `{scheme}://` is not a scheme git knows; use ssh://, https://, git://, \
                 file:// or an scp-like host:path",
            redact(url)
        ));
    }
    None
}

/// The URL as messages and logs show it: an `http(s)://` URL without its user
/// part (a password, or a token given as the user name), any other without a
/// password.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let end = rest.find('/').unwrap_or(rest.len());
    let Some(at) = rest[..end].rfind('@') else {
        return url.to_string();
    };
    let user = &rest[..at];
    let shown = if scheme.to_ascii_lowercase().starts_with("http") {
        "***".to_string()
    } else {
        match user.split_once(':') {
            Some((u, _)) => format!("{u}:***"),
            None => user.to_string(),
        }
    };
    format!("{scheme}://{shown}{}", &rest[at..])
}

/// `text` with every URL in it redacted as [`redact`] does (git quotes URLs in
/// its messages).
pub fn redact_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("://") {
        // The scheme: letters, digits, `+`, `-`, `.` just before.
        let start = rest[..i]
            .rfind(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.')))
            .map_or(0, |p| p + 1);
        let end = rest[i..]
            .find(|c: char| c.is_whitespace() || matches!(c, '\'' | '"' | '`' | '<' | '>'))
            .map_or(rest.len(), |p| i + p);
        out.push_str(&rest[..start]);
        out.push_str(&redact(&rest[start..end]));
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

/// The `user:password` of a URL, percent-decoded.
pub fn userpass_of(url: &str) -> Option<(String, String)> {
    let (_, rest) = url.split_once("://")?;
    let authority = rest.split('/').next()?;
    let (userinfo, _) = authority.rsplit_once('@')?;
    let (user, pass) = userinfo.split_once(':')?;
    Some((percent_decode(user), percent_decode(pass)))
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16)
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_kinds() {
        assert_eq!(
            remote_kind("/srv/r.git"),
            RemoteKind::Local("/srv/r.git".into())
        );
        assert_eq!(
            remote_kind("file:///srv/r.git"),
            RemoteKind::Local("/srv/r.git".into())
        );
        assert_eq!(
            remote_kind("github.com/me/x.git"),
            RemoteKind::Local("github.com/me/x.git".into())
        );
        for n in [
            "git://h/r",
            "ssh://git@h:22/r",
            "https://h/r",
            "git@github.com:me/r.git",
            "gitbox:r.git",
        ] {
            assert_eq!(remote_kind(n), RemoteKind::Network, "{n}");
        }
        assert_eq!(remote_kind("C:/repo"), RemoteKind::Local("C:/repo".into()));
    }

    #[test]
    fn hosts_of_urls() {
        assert_eq!(
            host_of("gitbox:agent-memory.git").as_deref(),
            Some("gitbox")
        );
        assert_eq!(
            host_of("git@github.com:me/r.git").as_deref(),
            Some("github.com")
        );
        assert_eq!(host_of("ssh://git@[::1]:2222/r").as_deref(), Some("::1"));
        assert_eq!(
            host_of("https://u:p@example.com:8443/r").as_deref(),
            Some("example.com")
        );
        assert_eq!(host_of("/srv/r"), None);
    }

    #[test]
    fn passwords_and_tokens_are_redacted() {
        assert_eq!(redact("https://u:secret@h/r.git"), "https://***@h/r.git");
        assert_eq!(redact("https://ghp_abc@h/r.git"), "https://***@h/r.git");
        assert_eq!(redact("ssh://git@h/r.git"), "ssh://git@h/r.git");
        assert_eq!(redact("ssh://git:pw@h/r.git"), "ssh://git:***@h/r.git");
        assert_eq!(redact("git@github.com:me/r.git"), "git@github.com:me/r.git");
        assert_eq!(
            redact_text("fatal: Authentication failed for 'https://ghp_x@h/r.git/'"),
            "fatal: Authentication failed for 'https://***@h/r.git/'"
        );
    }

    #[test]
    fn mistakes_are_told_before_any_connection() {
        assert!(mistake("htps://x/y.git").unwrap().contains("htps"));
        assert!(mistake("https://x/y.git").is_none());
        assert!(mistake("gitbox:r.git").is_none());
    }

    #[test]
    fn userpass_from_urls() {
        assert_eq!(
            userpass_of("https://a%40b:p%3Aw@h/r"),
            Some(("a@b".into(), "p:w".into()))
        );
        assert_eq!(userpass_of("https://h/r"), None);
    }
}
