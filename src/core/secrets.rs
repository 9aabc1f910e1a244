//! The secret scanner (section 15): finds credentials in an entry's canonical JSON, or
//! in a whole file, before anything is committed. Pure: text in, findings out. The
//! rules are data (`RULES`); clean text, the common case, costs one literal pass.

use regex::Regex;

/// One credential found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// The rule's id, e.g. "github-token".
    pub rule: &'static str,
    /// What it is, for messages, e.g. "GitHub personal access token".
    pub description: &'static str,
    /// 1-based line of `text` where the match starts (text may hold several lines,
    /// e.g. a JSON array file, or escaped "\n" inside JSON strings: count real newlines only).
    pub line: usize,
}

/// How a rule's match is confirmed once its pattern matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Check {
    /// The pattern is enough.
    Shape,
    /// Group `body` looks random ([`looks_random`]): placeholders such as
    /// `ghp_XXXX…` are not tokens.
    Random,
    /// An AWS key id is only an identifier: a secret access key must be near it.
    AwsPair,
    /// Group `body`, the first part of a JWT, decodes to a JSON header naming `alg`.
    Jwt,
    /// Group `body` is the assigned value of a password-like name ([`is_secret_value`]).
    Assignment,
}

/// One rule. Group `at` of `pattern` (or the whole match) is where the finding
/// starts; group `body` (or `at`) is what `check` looks at.
struct Rule {
    id: &'static str,
    description: &'static str,
    /// Lowercase literals: wherever `pattern` matches, one of them occurs (in any
    /// case), so text holding none of them skips the rule.
    keywords: &'static [&'static str],
    pattern: &'static str,
    check: Check,
    /// Whether `pattern` starts with one of `keywords`: it is then tried anchored at
    /// each keyword found rather than over the whole text, which matters when the
    /// keywords are common words (`token`, `secret`).
    at_keyword: bool,
}

/// The rules, in the order `--help` lists them.
const RULES: &[Rule] = &[
    // gitleaks `private-key` (config/gitleaks.toml). The key's first base64 line
    // must follow within a few header lines: prose that names the marker is not a key.
    Rule {
        id: "private-key",
        description: "private key block (PEM or OpenSSH)",
        keywords: &["-----begin"],
        pattern: concat!(
            r#"(?P<at>-----BEGIN[ A-Z0-9_-]{0,100}PRIVATE KEY(?: BLOCK)?-----"#,
            r#"[A-Za-z0-9+/=:,._ \t\r\n\\-]{0,300}?[A-Za-z0-9+/=]{40})"#
        ),
        check: Check::Shape,
        at_keyword: false,
    },
    // gitleaks `aws-access-token` (prefixes from AWS IAM "unique identifiers"), plus
    // the secret access key that makes it usable; see `aws_secret_near`.
    Rule {
        id: "aws-access-key",
        description: "AWS access key id with a secret key nearby",
        keywords: &["akia", "asia", "abia", "acca"],
        pattern: concat!(
            r#"(?:^|[^0-9A-Za-z+/_-]|\\[nrt])(?P<at>(?:AKIA|ASIA|ABIA|ACCA)[A-Z0-9]{16})"#,
            r#"(?:[^0-9A-Za-z+/_-]|$)"#
        ),
        check: Check::AwsPair,
        at_keyword: false,
    },
    // GitHub changelog 2021-03-31 "Authentication token format updates" and gitleaks
    // `github-pat`, `github-oauth`, `github-app-token`, `github-refresh-token`:
    // prefix, then 36 characters (GitHub may lengthen them, so at least 36).
    Rule {
        id: "github-token",
        description: "GitHub personal access, OAuth, app or refresh token",
        keywords: &["ghp_", "gho_", "ghu_", "ghs_", "ghr_"],
        pattern: r#"(?P<at>gh[pousr]_(?P<body>[0-9A-Za-z]{36,}))"#,
        check: Check::Random,
        at_keyword: false,
    },
    // GitHub "About authentication: GitHub's token formats" (github_pat_) and gitleaks
    // `github-fine-grained-pat`: 22 characters, `_`, 59 characters.
    Rule {
        id: "github-fine-grained-token",
        description: "GitHub fine-grained personal access token",
        keywords: &["github_pat_"],
        pattern: r#"(?P<at>github_pat_(?P<body>[0-9A-Za-z]{22}_[0-9A-Za-z]{59}))"#,
        check: Check::Random,
        at_keyword: false,
    },
    // gitleaks `gitlab-pat` (and the longer `gitlab-pat-routable`, whose start this is).
    Rule {
        id: "gitlab-token",
        description: "GitLab personal access token",
        keywords: &["glpat-"],
        pattern: r#"(?P<at>glpat-(?P<body>[0-9A-Za-z_-]{20,}))"#,
        check: Check::Random,
        at_keyword: false,
    },
    // gitleaks `slack-bot-token`, `slack-user-token`, `slack-legacy-*`,
    // `slack-config-*`, `slack-app-token`: a type, then numeric ids and a random tail.
    Rule {
        id: "slack-token",
        description: "Slack API token",
        keywords: &["xox", "xapp-"],
        pattern: r#"(?P<at>(?:xox[abeoprs]|xapp)-(?P<body>[0-9]+-[0-9A-Za-z-]{16,}))"#,
        check: Check::Random,
        at_keyword: false,
    },
    // gitleaks `stripe-access-token`, live keys only: `pk_live_` is a publishable key,
    // made to be shipped in web pages, and test-mode keys reach no real money or data.
    Rule {
        id: "stripe-secret-key",
        description: "Stripe live secret or restricted key",
        keywords: &["k_live_"],
        pattern: r#"(?:^|[^0-9A-Za-z_]|\\[nrt])(?P<at>[sr]k_live_(?P<body>[0-9A-Za-z]{16,}))"#,
        check: Check::Random,
        at_keyword: false,
    },
    // gitleaks `gcp-api-key`: `AIza` and 35 characters.
    Rule {
        id: "google-api-key",
        description: "Google API key",
        keywords: &["aiza"],
        pattern: concat!(
            r#"(?:^|[^0-9A-Za-z+/_-]|\\[nrt])(?P<at>AIza(?P<body>[0-9A-Za-z_-]{35}))"#,
            r#"(?:[^0-9A-Za-z_-]|$)"#
        ),
        check: Check::Random,
        at_keyword: false,
    },
    // gitleaks `jwt` (RFC 7519): header and payload are base64url JSON objects, so
    // both start `eyJ`; the header must decode and name its `alg`, and the token must
    // be signed (an unsigned one authenticates nothing).
    Rule {
        id: "jwt",
        description: "JSON Web Token",
        keywords: &["eyj"],
        pattern: concat!(
            r#"(?:^|[^0-9A-Za-z_-]|\\[nrt])(?P<at>(?P<body>eyJ[0-9A-Za-z_-]{8,})"#,
            r#"\.eyJ[0-9A-Za-z_-]{8,}\.[0-9A-Za-z_-]{16,})"#
        ),
        check: Check::Jwt,
        at_keyword: false,
    },
    // gitleaks `anthropic-api-key` and `anthropic-admin-api-key`, widened to the
    // `sk-ant-<kind><nn>-` family (OAuth tokens that coding agents hold use it too).
    Rule {
        id: "anthropic-api-key",
        description: "Anthropic API key or OAuth token",
        keywords: &["sk-ant-"],
        pattern: r#"(?P<at>sk-ant-(?P<body>[a-z]{3,6}[0-9]{2}-[0-9A-Za-z_-]{32,}))"#,
        check: Check::Random,
        at_keyword: false,
    },
    // gitleaks `openai-api-key`: every OpenAI key holds `T3BlbkFJ`, base64 of "OpenAI".
    Rule {
        id: "openai-api-key",
        description: "OpenAI API key",
        keywords: &["t3blbkfj"],
        pattern: r#"(?P<at>sk-(?P<body>[0-9A-Za-z_-]{20,}T3BlbkFJ[0-9A-Za-z_-]{20,}))"#,
        check: Check::Random,
        at_keyword: false,
    },
    // gitleaks `generic-api-key`, narrowed to the names SPEC section 15 lists: a
    // password-like name, an assignment (`=`, `:`, `=>`, `:=`, JSON `"name":"value"`,
    // escaped or not), and a value that is long and random ([`is_secret_value`]).
    Rule {
        id: "secret-assignment",
        description: "password, secret, token or API key assigned a long random value",
        keywords: &[
            "passw",
            "secret",
            "token",
            "apikey",
            "api_key",
            "api-key",
            "accesskey",
            "access_key",
            "access-key",
            "privatekey",
            "private_key",
            "private-key",
        ],
        pattern: concat!(
            r#"(?i:passw(?:or)?d|secret|token|api[_-]?key|access[_-]?key|private[_-]?key)"#,
            r#"(?P<suffix>[0-9A-Za-z_.-]{0,20})(?:\\?["'])?[ \t]*(?:=>|:=|[:=])[ \t]*(?:\\?["'])?"#,
            r#"(?P<at>[^\s"'`\\,;<>(){}\[\]]{12,})"#
        ),
        check: Check::Assignment,
        at_keyword: true,
    },
];

/// The rules, as data: (id, description) of each, for documentation and `--help`.
pub fn rules() -> impl Iterator<Item = (&'static str, &'static str)> {
    RULES.iter().map(|r| (r.id, r.description))
}

/// Shortest assigned value taken for a secret: shorter ones are human passwords or
/// placeholders far more often than keys (SPEC section 15 asks for long values).
pub const MIN_VALUE_CHARS: usize = 12;

/// Least Shannon entropy, in bits per character, of a random-looking value. The most
/// a 12-character value can have is log2(12) = 3.58, so gitleaks' 3.5 would miss two
/// in three random 12-character keys; 3.0 keeps 99 % of random 12-character strings
/// over letters and digits (97 % of 20-digit hex) and drops repetitive fillers such
/// as `hunter2hunter2` (2.8), `abc123abc123` (2.6) or a timestamp (2.8).
pub const MIN_ENTROPY_BITS: f64 = 3.0;

/// How far (bytes, each side) from an AWS key id its secret key may be: the pair
/// sits together in a credentials file, an environment block or one observation.
const AWS_PAIR_WINDOW: usize = 400;

/// The AWS secret access key: exactly 40 base64 characters standing alone.
const AWS_SECRET_SHAPE: &str = concat!(
    r#"(?:^|[^0-9A-Za-z+/]|\\[nrt])(?P<at>[0-9A-Za-z+/]{40})"#,
    r#"(?:[^0-9A-Za-z+/=]|$)"#
);

/// A value assigned to a name such as `aws_secret_access_key` or `SecretAccessKey`.
const AWS_SECRET_NAMED: &str = concat!(
    r#"(?i:secret_?access_?key|aws_?secret(?:_?key)?)"#,
    r#"(?:\\?["'])?[ \t]*(?:=>|:=|[:=])[ \t]*(?:\\?["'])?(?P<at>[0-9A-Za-z+/=]{16,})"#
);

/// Name endings that make a password-like name about something else: where the
/// secret lives, what it is called, how long it is.
const NOT_SECRET_SUFFIXES: &[&str] = &[
    "path", "file", "dir", "url", "uri", "endpoint", "name", "id", "count", "len", "size", "limit",
    "type", "ttl", "expir", "izer", "field", "header", "env",
];

/// Words that mark a value as a stand-in for a secret rather than one.
const PLACEHOLDERS: &[&str] = &[
    "example",
    "placeholder",
    "changeme",
    "change_me",
    "redacted",
    "replace",
    "insert",
    "your",
    "dummy",
    "sample",
    "xxxx",
    "****",
    "....",
    "todo",
];

/// The compiled rules, built once (compiling is the costly part).
pub struct Scanner {
    /// Every rule's keywords, lowercase, as one alternation of literals: over the
    /// ASCII-lowercased text, a single multi-literal pass.
    prefilter: Regex,
    /// Each keyword of `prefilter`, with the index of its rule in [`RULES`].
    keywords: Vec<(&'static str, usize)>,
    /// [`RULES`]' patterns, compiled, in the same order (anchored at their start
    /// for the rules `at_keyword`).
    patterns: Vec<Regex>,
    aws_secret_shape: Regex,
    aws_secret_named: Regex,
}

impl Default for Scanner {
    fn default() -> Scanner {
        Scanner::new()
    }
}

impl Scanner {
    pub fn new() -> Scanner {
        let keywords: Vec<(&'static str, usize)> = RULES
            .iter()
            .enumerate()
            .flat_map(|(i, r)| r.keywords.iter().map(move |k| (*k, i)))
            .collect();
        let alternation = keywords
            .iter()
            .map(|(k, _)| regex::escape(k))
            .collect::<Vec<_>>()
            .join("|");
        Scanner {
            prefilter: Regex::new(&alternation).expect("keywords are escaped literals"),
            keywords,
            patterns: RULES
                .iter()
                .map(|r| {
                    let pattern = if r.at_keyword {
                        format!("^(?:{})", r.pattern)
                    } else {
                        r.pattern.to_owned()
                    };
                    Regex::new(&pattern).expect("rule patterns are constant and valid")
                })
                .collect(),
            aws_secret_shape: Regex::new(AWS_SECRET_SHAPE).expect("constant pattern"),
            aws_secret_named: Regex::new(AWS_SECRET_NAMED).expect("constant pattern"),
        }
    }

    /// Every rule that matches `text` (at most one finding per rule), in text order.
    /// `text` is the canonical JSON of one entry, or a whole file. Never returns or
    /// logs the matched secret itself.
    pub fn scan(&self, text: &str) -> Vec<Finding> {
        let mut found = Vec::new();
        self.each(text, |rule, at| {
            found.push((at, rule));
            true
        });
        found.sort_by_key(|&(at, _)| at);
        found
            .into_iter()
            .map(|(at, rule)| Finding {
                rule: rule.id,
                description: rule.description,
                line: line_of(text, at),
            })
            .collect()
    }

    /// Whether nothing matches: stops at the first finding.
    pub fn is_clean(&self, text: &str) -> bool {
        let mut clean = true;
        self.each(text, |_, _| {
            clean = false;
            false
        });
        clean
    }

    /// Calls `found` with each rule that matches and the byte offset of its first
    /// confirmed match, while `found` returns true.
    fn each(&self, text: &str, mut found: impl FnMut(&'static Rule, usize) -> bool) {
        let (candidates, anchors) = self.candidates(text);
        if candidates == 0 {
            return;
        }
        for (i, (rule, pattern)) in RULES.iter().zip(&self.patterns).enumerate() {
            if candidates & (1 << i) == 0 {
                continue;
            }
            let at = if rule.at_keyword {
                anchors
                    .iter()
                    .filter(|&&(r, _)| r == i)
                    .find_map(|&(_, start)| {
                        let caps = pattern.captures(&text[start..])?;
                        self.confirm(rule, &caps, start, text)
                    })
            } else {
                pattern
                    .captures_iter(text)
                    .find_map(|caps| self.confirm(rule, &caps, 0, text))
            };
            if let Some(at) = at
                && !found(rule, at)
            {
                return;
            }
        }
    }

    /// The rules (bit i for `RULES[i]`) whose keywords occur in `text`, in any case,
    /// and for the rules `at_keyword`, (rule, offset) of each keyword found.
    fn candidates(&self, text: &str) -> (u32, Vec<(usize, usize)>) {
        // Lowercasing ASCII keeps every offset and the text valid UTF-8, and lets a
        // case-sensitive literal search (faster than a case-insensitive one here)
        // stand for a case-insensitive one.
        let lower = text.to_ascii_lowercase();
        let mut bits = 0u32;
        let mut anchors = Vec::new();
        for m in self.prefilter.find_iter(&lower) {
            let hit = m.as_str();
            if let Some(&(_, rule)) = self.keywords.iter().find(|(k, _)| *k == hit) {
                bits |= 1 << rule;
                if RULES[rule].at_keyword {
                    anchors.push((rule, m.start()));
                }
            }
        }
        (bits, anchors)
    }

    /// Where the finding of `rule` starts if its check holds for `caps`, a match in
    /// `text[offset..]`.
    fn confirm(
        &self,
        rule: &Rule,
        caps: &regex::Captures<'_>,
        offset: usize,
        text: &str,
    ) -> Option<usize> {
        let at = caps.name("at").or_else(|| caps.get(0))?;
        let body = caps.name("body").unwrap_or(at);
        let confirmed = match rule.check {
            Check::Shape => true,
            Check::Random => looks_random(body.as_str()),
            Check::Jwt => jwt_header_names_alg(body.as_str()),
            Check::AwsPair => {
                let id = offset + at.start()..offset + at.end();
                !at.as_str().ends_with("EXAMPLE") && self.aws_secret_near(text, id)
            }
            Check::Assignment => {
                let suffix = caps.name("suffix").map_or("", |s| s.as_str());
                !names_something_else(suffix) && is_secret_value(body.as_str())
            }
        };
        confirmed.then_some(offset + at.start())
    }

    /// Whether an AWS secret access key sits within [`AWS_PAIR_WINDOW`] bytes of the
    /// key id at `id`: 40 random base64 characters, or a value assigned to a name
    /// like `aws_secret_access_key`. AWS's documented example key is not a secret.
    fn aws_secret_near(&self, text: &str, id: std::ops::Range<usize>) -> bool {
        let mut start = id.start.saturating_sub(AWS_PAIR_WINDOW);
        while !text.is_char_boundary(start) {
            start -= 1;
        }
        let mut end = (id.end + AWS_PAIR_WINDOW).min(text.len());
        while !text.is_char_boundary(end) {
            end += 1;
        }
        let window = &text[start..end];
        let shaped = self.aws_secret_shape.captures_iter(window).any(|caps| {
            caps.name("at")
                .is_some_and(|s| is_aws_secret_shape(s.as_str()))
        });
        shaped
            || self.aws_secret_named.captures_iter(window).any(|caps| {
                caps.name("at")
                    .is_some_and(|s| is_secret_value(s.as_str()) && !s.as_str().contains("EXAMPLE"))
            })
    }
}

/// 1-based line of byte offset `at`: real newlines only, not JSON's `\n` escapes.
fn line_of(text: &str, at: usize) -> usize {
    text.as_bytes()[..at]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// Shannon entropy of `s` in bits per character: -Σ p·log2(p) over its characters.
fn entropy(s: &str) -> f64 {
    let mut chars: Vec<char> = s.chars().collect();
    if chars.is_empty() {
        return 0.0;
    }
    chars.sort_unstable();
    let n = chars.len() as f64;
    chars
        .chunk_by(|a, b| a == b)
        .map(|run| {
            let p = run.len() as f64 / n;
            -p * p.log2()
        })
        .sum()
}

/// Whether a token's random part looks random: characters of at least two kinds
/// (lowercase, uppercase, digits) and [`MIN_ENTROPY_BITS`]. Placeholders such as
/// `XXXXXXXX…`, `00000000…` or `abcabcabc…` fail.
fn looks_random(s: &str) -> bool {
    let kinds = [
        s.bytes().any(|b| b.is_ascii_lowercase()),
        s.bytes().any(|b| b.is_ascii_uppercase()),
        s.bytes().any(|b| b.is_ascii_digit()),
    ];
    kinds.iter().filter(|&&k| k).count() >= 2 && entropy(s) >= MIN_ENTROPY_BITS
}

/// Whether a name's ending (after `password`, `token`…) says the value is not the
/// secret itself: `token_path`, `api_key_name`, `password_file`, `tokenizer`.
fn names_something_else(suffix: &str) -> bool {
    let rest = suffix
        .trim_start_matches(['_', '.', '-'])
        .to_ascii_lowercase();
    !rest.is_empty() && NOT_SECRET_SUFFIXES.iter().any(|s| rest.starts_with(s))
}

/// Whether an assigned value is a secret rather than a reference, a placeholder or a
/// plain word: long ([`MIN_VALUE_CHARS`]), not a variable (`$DB_PASSWORD`,
/// `%TOKEN%`), not a path or URL, not a name ([`is_identifier`], [`is_slug`]) nor
/// only digits (a count, a date), no placeholder word, and random by
/// [`MIN_ENTROPY_BITS`].
fn is_secret_value(v: &str) -> bool {
    if v.chars().count() < MIN_VALUE_CHARS {
        return false;
    }
    let reference = v.starts_with('$')
        || (v.starts_with('%') && v.ends_with('%'))
        || is_path(v)
        || v.contains("://");
    let word = is_identifier(v) || is_slug(v);
    let number = v
        .bytes()
        .all(|b| b.is_ascii_digit() || matches!(b, b'_' | b'.' | b'-' | b':' | b'+'));
    let lower = v.to_ascii_lowercase();
    let placeholder = PLACEHOLDERS.iter().any(|p| lower.contains(p));
    !reference && !word && !number && !placeholder && entropy(v) >= MIN_ENTROPY_BITS
}

/// Whether a value is a file path (`/var/run/secrets/token`, `~/.aws/credentials`):
/// rooted, two slashes at least, none of base64's `+` and `=` (a random base64 key
/// starts with `/` once in 64).
fn is_path(v: &str) -> bool {
    ["/", "~/", "./", "../"].iter().any(|p| v.starts_with(p))
        && v.bytes().filter(|&b| b == b'/').count() >= 2
        && !v.contains(['+', '='])
}

/// Whether a value of letters only is a name in code or prose rather than a random
/// string: `your_token_here`, `process.env.KEY`, `Vec::with_capacity`,
/// `hashedPassword`, `XMLHttpRequest`.
/// gitleaks takes every letters-only value for a name; that would miss one random
/// 16-character key in 16, so mixed case counts as a name only when it is camel
/// case: every word after the first has two lowercase letters at least, but a last
/// all-capitals one (`userID`).
fn is_identifier(v: &str) -> bool {
    let b = v.as_bytes();
    let separator = |c: u8| matches!(c, b'_' | b'.' | b'-' | b':');
    if !b.iter().all(|&c| c.is_ascii_alphabetic() || separator(c)) {
        return false;
    }
    if b.iter().any(|&c| separator(c))
        || !b.iter().any(u8::is_ascii_uppercase)
        || !b.iter().any(u8::is_ascii_lowercase)
    {
        return true;
    }
    // Words start where a lowercase letter is followed by an uppercase one.
    let starts: Vec<usize> = (1..b.len())
        .filter(|&i| b[i - 1].is_ascii_lowercase() && b[i].is_ascii_uppercase())
        .collect();
    let mut bounds = starts.clone();
    bounds.push(b.len());
    starts.iter().zip(&bounds[1..]).all(|(&start, &end)| {
        let lower = b[start..end]
            .iter()
            .filter(|c| c.is_ascii_lowercase())
            .count();
        lower >= 2 || (lower == 0 && end == b.len())
    })
}

/// Whether a value is lowercase words and numbers joined by `-`, `_` or `.`
/// (`prod-db-2-replica`, `gpt-4o-2024-08-06`, `cl100k_base`): one part at least is a
/// word, three letters or more with one past `f`, which no part of a hex id (a UUID)
/// is. Entropy cannot tell these from keys: their characters are varied enough.
fn is_slug(v: &str) -> bool {
    let b = v.as_bytes();
    b.iter().any(|&c| matches!(c, b'_' | b'.' | b'-'))
        && b.iter().all(|&c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'_' | b'.' | b'-')
        })
        && v.split(['_', '.', '-']).any(|part| {
            part.len() >= 3
                && part.bytes().all(|c| c.is_ascii_lowercase())
                && part.bytes().any(|c| c > b'f')
        })
}

/// Whether 40 base64 characters look like an AWS secret access key: both cases of
/// letters, not only hex (a git commit id is 40 hex digits), high entropy, and not
/// AWS's documented example key.
fn is_aws_secret_shape(s: &str) -> bool {
    let upper = s.bytes().any(|b| b.is_ascii_uppercase());
    let lower = s.bytes().any(|b| b.is_ascii_lowercase());
    let hex = s.bytes().all(|b| b.is_ascii_hexdigit());
    // Random base64 of 40 characters has about 4.8 bits; prose run together or a
    // repeated pattern has far less.
    upper && lower && !hex && entropy(s) >= 4.0 && !s.contains("EXAMPLEKEY")
}

/// Whether the first part of a JWT decodes (base64url) to a JSON object that names
/// its `alg`, as every JWS header must (RFC 7515 section 4.1.1).
fn jwt_header_names_alg(part: &str) -> bool {
    let Some(header) = base64url_decode(part) else {
        return false;
    };
    let header = String::from_utf8_lossy(&header);
    header.trim_start().starts_with('{') && header.contains("\"alg\"")
}

/// Decodes unpadded base64url; None on a character outside its alphabet.
fn base64url_decode(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let mut acc = 0u32;
    let mut bits = 0u32;
    for b in s.bytes() {
        let v = match b {
            b'A'..=b'Z' => b - b'A',
            b'a'..=b'z' => b - b'a' + 26,
            b'0'..=b'9' => b - b'0' + 52,
            b'-' => 62,
            b'_' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests;
