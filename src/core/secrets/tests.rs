use super::*;

/// Characters a token body is made of.
const BASE62: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
const BASE64: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// `n` characters of `alphabet` from a fixed-seed generator: format-valid,
/// random-looking, and built here so that this file holds no secret-shaped text.
fn fake(alphabet: &[u8], n: usize, seed: u64) -> String {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            alphabet[(x % alphabet.len() as u64) as usize] as char
        })
        .collect()
}

fn upper_alnum(n: usize, seed: u64) -> String {
    fake(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", n, seed)
}

fn b64url(bytes: &[u8]) -> String {
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, &b)| acc | u32::from(b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(alphabet[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

/// An entry's canonical JSON with `observation` among ordinary ones, the way
/// serde_json writes it (a newline inside becomes the two characters `\n`).
fn entry(observation: &str) -> String {
    serde_json::json!({
        "entityType": "project",
        "name": "E17",
        "observations": [
            "user prefers rust tests, deploy on friday",
            observation,
            "CI runs on two cores",
        ],
        "type": "entity",
    })
    .to_string()
}

fn pem(kind: &str, lines: usize, seed: u64) -> String {
    let body: Vec<String> = (0..lines)
        .map(|i| fake(BASE64, 64, seed + i as u64))
        .collect();
    format!(
        "-----BEGIN {kind}-----\n{}\n-----END {kind}-----\n",
        body.join("\n")
    )
}

/// A random assigned value of `n` characters with a digit in it: letters-only
/// values that read as camel case are taken for names (see `is_identifier`).
fn value(n: usize, seed: u64) -> String {
    format!("{}{}", fake(BASE62, n - 1, seed), seed % 10)
}

fn aws_id(seed: u64) -> String {
    format!("AKIA{}", upper_alnum(16, seed))
}

fn aws_secret(seed: u64) -> String {
    fake(BASE64, 40, seed)
}

fn jwt(seed: u64) -> String {
    let header = b64url(br#"{"alg":"HS256","typ":"JWT"}"#);
    let payload = b64url(br#"{"sub":"1234567890","name":"Ada","iat":1516239022}"#);
    format!("{header}.{payload}.{}", fake(BASE62, 43, seed))
}

/// (rule, text holding one secret of that rule), several for every rule, their
/// random parts drawn from seeds offset by `s`: each is to be found by its
/// rule, alone or inside an entry.
fn positives_seeded(s: u64) -> Vec<(&'static str, String)> {
    let gh = |prefix: &str, seed| format!("{prefix}_{}", fake(BASE62, 36, seed));
    vec![
        ("private-key", pem("RSA PRIVATE KEY", 6, 1 + s)),
        ("private-key", pem("PRIVATE KEY", 4, 2 + s)),
        ("private-key", pem("EC PRIVATE KEY", 2, 3 + s)),
        ("private-key", pem("DSA PRIVATE KEY", 3, 4 + s)),
        ("private-key", pem("ENCRYPTED PRIVATE KEY", 5, 5 + s)),
        ("private-key", pem("OPENSSH PRIVATE KEY", 7, 6 + s)),
        (
            "private-key",
            pem("PGP PRIVATE KEY BLOCK", 3, 7 + s).replacen(
                "-----\n",
                "-----\nVersion: GnuPG v2\n\n",
                1,
            ),
        ),
        (
            "private-key",
            pem("RSA PRIVATE KEY", 4, 8 + s).replacen(
                "-----\n",
                "-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-128-CBC,3F17F5316E2BAC89\n\n",
                1,
            ),
        ),
        (
            "aws-access-key",
            format!(
                "[default]\naws_access_key_id = {}\naws_secret_access_key = {}\n",
                aws_id(10 + s),
                aws_secret(11 + s)
            ),
        ),
        (
            "aws-access-key",
            format!(
                "deploy with {} and {} from the vault",
                aws_id(12 + s),
                aws_secret(13 + s)
            ),
        ),
        (
            "aws-access-key",
            format!(
                r#"{{"AccessKeyId":"{}","SecretAccessKey":"{}"}}"#,
                aws_id(14 + s).replacen("AKIA", "ASIA", 1),
                fake(BASE62, 28, 15 + s)
            ),
        ),
        (
            "github-token",
            format!("export GH_TOKEN={}", gh("ghp", 20 + s)),
        ),
        ("github-token", gh("gho", 21 + s)),
        ("github-token", gh("ghu", 22 + s)),
        (
            "github-token",
            format!(
                "https://x-access-token:{}@github.com/o/r",
                gh("ghs", 23 + s)
            ),
        ),
        ("github-token", gh("ghr", 24 + s)),
        (
            "github-fine-grained-token",
            format!(
                "github_pat_{}_{}",
                fake(BASE62, 22, 25 + s),
                fake(BASE62, 59, 26 + s)
            ),
        ),
        (
            "gitlab-token",
            format!("glpat-{}", fake(BASE62, 20, 27 + s)),
        ),
        (
            "slack-token",
            format!(
                "xoxb-{}-{}-{}",
                fake(b"0123456789", 12, 28 + s),
                fake(b"0123456789", 13, 29 + s),
                fake(BASE62, 24, 30 + s)
            ),
        ),
        (
            "slack-token",
            format!(
                "xoxp-{}-{}-{}-{}",
                fake(b"0123456789", 11, 31 + s),
                fake(b"0123456789", 11, 32 + s),
                fake(b"0123456789", 12, 33 + s),
                fake(b"0123456789abcdef", 32, 34 + s)
            ),
        ),
        (
            "slack-token",
            format!(
                "xapp-1-A{}-{}-{}",
                fake(BASE62, 10, 35 + s).to_uppercase(),
                fake(b"0123456789", 13, 36 + s),
                fake(b"0123456789abcdef", 64, 37 + s)
            ),
        ),
        (
            "stripe-secret-key",
            format!("sk_live_{}", fake(BASE62, 24, 40 + s)),
        ),
        (
            "stripe-secret-key",
            format!("STRIPE_KEY=rk_live_{}", fake(BASE62, 99, 41 + s)),
        ),
        (
            "google-api-key",
            format!(
                "maps?key=AIza{}&q=x",
                fake(
                    b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz-_",
                    35,
                    42
                )
            ),
        ),
        ("jwt", format!("Authorization: Bearer {}", jwt(43 + s))),
        (
            "anthropic-api-key",
            format!("sk-ant-api03-{}AA", fake(BASE62, 93, 44 + s)),
        ),
        (
            "anthropic-api-key",
            format!("sk-ant-oat01-{}", fake(BASE62, 95, 45 + s)),
        ),
        (
            "openai-api-key",
            format!(
                "sk-proj-{}T3BlbkFJ{}",
                fake(BASE62, 74, 46 + s),
                fake(BASE62, 74, 47 + s)
            ),
        ),
        (
            "secret-assignment",
            format!("db password={}", value(16, 50 + s)),
        ),
        ("secret-assignment", format!("token: {}", value(24, 51 + s))),
        (
            "secret-assignment",
            format!(r#"{{"password":"{}"}}"#, value(14, 52 + s)),
        ),
        (
            "secret-assignment",
            format!(r#"api_key = "{}""#, value(32, 53 + s)),
        ),
        (
            "secret-assignment",
            format!("APIKEY={}", fake(b"0123456789abcdef", 32, 54 + s)),
        ),
        (
            "secret-assignment",
            format!("accessKey: '{}'", value(20, 55 + s)),
        ),
        (
            "secret-assignment",
            format!("passwd => {}", value(16, 56 + s)),
        ),
        (
            "secret-assignment",
            format!("client_secret := {}", value(44, 57 + s)),
        ),
        (
            "secret-assignment",
            format!("DB_PASSWORD={}&3-{}", "Tr0ub4dor", value(4, 58 + s)),
        ),
    ]
}

fn positives() -> Vec<(&'static str, String)> {
    positives_seeded(0)
}

#[test]
fn positive_samples_are_found_whatever_their_random_part() {
    let scanner = Scanner::new();
    for s in 1..100 {
        for (rule, text) in positives_seeded(s * 1000) {
            let found = scanner.scan(&text);
            assert!(found.iter().any(|f| f.rule == rule), "{rule}, seed {s}");
        }
    }
}

#[test]
fn every_positive_sample_is_found_by_its_rule() {
    let scanner = Scanner::new();
    for (rule, text) in positives() {
        let found = scanner.scan(&text);
        assert!(
            found.iter().any(|f| f.rule == rule),
            "{rule} not found in a sample ({} chars): {:?}",
            text.len(),
            found
        );
        assert!(!scanner.is_clean(&text));
    }
}

#[test]
fn every_positive_sample_is_found_inside_an_entry_with_escaped_newlines() {
    let scanner = Scanner::new();
    for (rule, text) in positives() {
        let json = entry(&text);
        assert_eq!(json.lines().count(), 1);
        let found = scanner.scan(&json);
        assert!(
            found.iter().any(|f| f.rule == rule && f.line == 1),
            "{rule}: {found:?}"
        );
    }
}

#[test]
fn every_rule_has_a_positive_sample() {
    let samples = positives();
    for (id, _) in rules() {
        assert!(samples.iter().any(|(r, _)| *r == id), "{id} has no sample");
    }
}

#[test]
fn rule_ids_are_unique_kebab_case_and_keywords_lowercase() {
    let mut ids: Vec<&str> = rules().map(|(id, _)| id).collect();
    assert!(ids.iter().all(|id| {
        id.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    }));
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), RULES.len());
    assert!(RULES.len() <= 32, "candidates are a u32 bit set");
    for rule in RULES {
        assert!(!rule.keywords.is_empty());
        assert!(rule.keywords.iter().all(|k| *k == k.to_ascii_lowercase()));
    }
}

#[test]
fn a_github_token_in_an_observation_is_found() {
    let token = format!("ghp_{}", fake(BASE62, 36, 99));
    let found = Scanner::new().scan(&entry(&format!("use {token} for the API")));
    assert_eq!(
        found,
        vec![Finding {
            rule: "github-token",
            description: "GitHub personal access, OAuth, app or refresh token",
            line: 1
        }]
    );
}

#[test]
fn a_finding_gives_the_line_it_starts_on_counting_real_newlines_only() {
    let scanner = Scanner::new();
    let text = format!(
        "[\n{}\n{}\n]\n",
        entry("first\nstill the first line"),
        entry(&format!("ghp_{}", fake(BASE62, 36, 7)))
    );
    assert_eq!(scanner.scan(&text)[0].line, 3);
    let key = pem("OPENSSH PRIVATE KEY", 5, 8);
    assert_eq!(scanner.scan(&format!("a\nb\n{key}"))[0].line, 3);
}

#[test]
fn findings_come_in_text_order_one_per_rule() {
    let gh = |seed| format!("ghp_{}", fake(BASE62, 36, seed));
    let text = format!(
        "{}\n{}\n{}\nsk_live_{}",
        gh(1),
        jwt(2),
        gh(3),
        fake(BASE62, 24, 4)
    );
    let found = Scanner::new().scan(&text);
    let rules: Vec<(&str, usize)> = found.iter().map(|f| (f.rule, f.line)).collect();
    assert_eq!(
        rules,
        vec![("github-token", 1), ("jwt", 2), ("stripe-secret-key", 4)]
    );
}

#[test]
fn a_pem_key_inside_a_json_string_is_found() {
    let json = serde_json::to_string(&pem("RSA PRIVATE KEY", 8, 5)).expect("a string");
    assert!(json.contains(r"KEY-----\n"), "newlines are escaped");
    let found = Scanner::new().scan(&json);
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].rule, "private-key");
}

/// Texts that hold no secret: each must scan clean.
fn negatives() -> Vec<String> {
    let mut png = String::from("data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAA");
    png.push_str(&fake(BASE64, 2048, 60));
    png.push_str("==");
    vec![
        // Mentions of the formats.
        "AWS keys start with AKIA".into(),
        "AWS access key ids look like AKIA followed by 16 characters".into(),
        "GitHub tokens begin with ghp_ and fine-grained ones with github_pat_".into(),
        "GitLab tokens start glpat- and Slack bot tokens xoxb-".into(),
        "Stripe secret keys start sk_live_ and Google keys AIza".into(),
        "a PEM file starts -----BEGIN RSA PRIVATE KEY----- and ends with END".into(),
        "-----BEGIN OPENSSH PRIVATE KEY----------END OPENSSH PRIVATE KEY-----".into(),
        "JWTs look like eyJhbGciOi... three base64url parts".into(),
        // An AWS key id alone is an identifier, not a credential.
        format!("the key id is {} (secret rotated)", aws_id(61)),
        // AWS's documented example pair.
        format!(
            "aws_access_key_id={}EXAMPLE aws_secret_access_key={}EXAMPLEKEY",
            "AKIAIOSFODNN7", "wJalrXUtnFEMI/K7MDENG/bPxRfiCY"
        ),
        // Identifiers and digests.
        "id 123e4567-e89b-12d3-a456-426614174000 is a uuid".into(),
        "fixed in 9fceb02d0ae598e95dc970b74767f19372d61af8 on main".into(),
        format!("sha256:{}", fake(b"0123456789abcdef", 64, 62)),
        format!(
            "commit {} next to {}",
            fake(b"0123456789abcdef", 40, 63),
            aws_id(64)
        ),
        // A picture inside an observation.
        png,
        // Prose and code.
        "password is hunter2".into(),
        "token: <your token here>".into(),
        "password=changeme".into(),
        "api_key=YOUR_API_KEY_HERE".into(),
        "password: ${DB_PASSWORD}".into(),
        "token=$GITHUB_TOKEN_FROM_ENV".into(),
        "secret: %APP_SECRET_VALUE%".into(),
        "token=xxxxxxxxxxxxxxxxxxxxxxxx".into(),
        "secret: ****************".into(),
        "password = hunter2hunter2".into(),
        "\"token_count\":123456789012".into(),
        "token_path=/var/run/secrets/kubernetes.io/serviceaccount/token".into(),
        "tokenizer: cl100k_base_v2_2024".into(),
        "api_key = os.environ[\"OPENAI_API_KEY\"]".into(),
        "let password = read_password()?;".into(),
        "let mut token = Vec::with_capacity(b.len() + 2);".into(),
        "apiKey: process.env.STRIPE_SECRET_KEY,".into(),
        "secret_key_base: <%= ENV[\"SECRET_KEY_BASE\"] %>".into(),
        "password_rotated_at=2024-01-15T10:00:00Z".into(),
        "token: gpt-4o-2024-08-06".into(),
        "secret=prod-db-2-replica.internal".into(),
        "the user wants the birthday party kept a secret: tell nobody".into(),
        "the token budget is 200000 tokens per session".into(),
        "fn scan(&self, text: &str) -> Vec<Finding> { self.each(text) }".into(),
        "git clone https://github.com/owner/repo && cargo test --release".into(),
        // Publishable and test-mode Stripe keys are not secrets here.
        format!("pk_live_{}", fake(BASE62, 24, 65)),
        format!("sk_test_{}", fake(BASE62, 24, 66)),
        // Placeholders in token shape.
        format!("ghp_{}", "X".repeat(36)),
        format!("glpat-{}", "x".repeat(20)),
        "xoxb-0000000000-0000000000-xxxxxxxxxxxxxxxxxxxxxxxx".into(),
        // JWT-shaped but the header is no JOSE header.
        format!(
            "{}.{}.{}",
            b64url(br#"{"name":"not a header","x":1}"#),
            b64url(br#"{"sub":"1"}"#),
            fake(BASE62, 43, 67)
        ),
    ]
}

#[test]
fn texts_without_secrets_scan_clean() {
    let scanner = Scanner::new();
    for text in negatives() {
        assert_eq!(scanner.scan(&text), vec![], "flagged: {text:.60}");
        assert!(scanner.is_clean(&text));
        assert!(
            scanner.is_clean(&entry(&text)),
            "flagged in an entry: {text:.60}"
        );
    }
}

#[test]
fn a_uuid_assigned_to_a_token_name_is_a_secret() {
    // Some services issue UUIDs as API keys: named a token, it is one.
    let uuid = "7b946a1e-f45a-4cf8-85b4-d7788440cca2";
    let found = Scanner::new().scan(&format!("HEROKU_API_KEY={uuid}"));
    assert_eq!(found[0].rule, "secret-assignment");
}

#[test]
fn the_scanner_can_be_shared_between_threads() {
    fn shareable<T: Send + Sync>() {}
    shareable::<Scanner>();
}

#[test]
fn a_uuid_is_not_a_secret() {
    assert!(Scanner::new().is_clean(&entry("session 123e4567-e89b-12d3-a456-426614174000")));
}

#[test]
fn a_git_commit_id_and_a_sha256_digest_are_not_secrets() {
    let scanner = Scanner::new();
    for seed in 0..50 {
        let text = format!(
            "commit {} digest sha256:{}",
            fake(b"0123456789abcdef", 40, seed),
            fake(b"0123456789abcdef", 64, seed + 1000)
        );
        assert!(scanner.is_clean(&entry(&text)));
    }
}

#[test]
fn a_base64_png_in_an_observation_is_not_a_secret() {
    let scanner = Scanner::new();
    for seed in 0..50 {
        let png = format!(
            "data:image/png;base64,iVBORw0KGgo{}==",
            fake(BASE64, 2048, 500 + seed)
        );
        assert!(scanner.is_clean(&entry(&png)), "seed {seed}");
    }
}

#[test]
fn an_aws_key_id_is_found_only_with_a_secret_within_the_window() {
    let scanner = Scanner::new();
    let id = aws_id(70);
    let secret = aws_secret(71);
    let near = format!("{id} {} {secret}", "x".repeat(AWS_PAIR_WINDOW - 60));
    let far = format!("{id} {} {secret}", "x ".repeat(AWS_PAIR_WINDOW));
    assert_eq!(scanner.scan(&near)[0].rule, "aws-access-key");
    assert!(scanner.is_clean(&far));
    let before = format!("{secret}\n{id}");
    assert_eq!(scanner.scan(&before)[0].line, 2);
}

#[test]
fn the_documented_aws_example_keys_are_not_secrets() {
    let id = format!("{}{}", "AKIAIOSFODNN7", "EXAMPLE");
    let secret = format!("{}{}", "wJalrXUtnFEMI/K7MDENG/bPxRfiCY", "EXAMPLEKEY");
    let scanner = Scanner::new();
    assert!(scanner.is_clean(&format!(
        "aws_access_key_id={id}\naws_secret_access_key={secret}"
    )));
    // A real id next to the example secret is still no pair.
    assert!(scanner.is_clean(&format!("{} {secret}", aws_id(72))));
}

#[test]
fn few_random_letters_only_values_read_as_names() {
    let n = 2000;
    let missed = (0..n)
        .map(|seed| fake(BASE62, 16, seed))
        .filter(|v| !is_secret_value(v))
        .count();
    // One in 16 is letters only; of those, some look camel-cased.
    assert!(missed * 100 <= n as usize * 3, "{missed} of {n} missed");
    // At the shortest length, one random value in a hundred or so repeats enough
    // characters to fall under the entropy bar.
    let short = (0..n)
        .map(|seed| value(MIN_VALUE_CHARS, seed))
        .filter(|v| !is_secret_value(v))
        .count();
    assert!(short * 100 <= n as usize * 2, "{short} of {n} missed");
    assert!(is_identifier("hashedPassword") && is_identifier("XMLHttpRequest"));
    assert!(!is_identifier("dKgqodrAdERDlotT"));
}

#[test]
fn random_assigned_values_pass_the_entropy_test_and_fillers_do_not() {
    for seed in 0..200 {
        assert!(is_secret_value(&fake(BASE62, 16, seed)), "seed {seed}");
        assert!(is_secret_value(&fake(BASE64, 40, seed)), "seed {seed}");
    }
    for filler in [
        "hunter2hunter2",
        "abc123abc123",
        "aaaa1111bbbb",
        "0000-0000-0000",
    ] {
        assert!(!is_secret_value(filler), "{filler}");
    }
    assert!((entropy("abcd") - 2.0).abs() < 1e-9);
    assert_eq!(entropy(""), 0.0);
}

#[test]
fn scan_and_is_clean_agree_on_every_sample() {
    let scanner = Scanner::new();
    let texts = positives().into_iter().map(|(_, t)| t).chain(negatives());
    for text in texts {
        assert_eq!(scanner.scan(&text).is_empty(), scanner.is_clean(&text));
    }
}

#[test]
fn non_ascii_text_around_a_secret_is_handled() {
    let scanner = Scanner::new();
    let text = format!(
        "clé « {} » près de {} — ok",
        aws_id(80),
        "é".repeat(100) + &aws_secret(81)
    );
    assert_eq!(scanner.scan(&text)[0].rule, "aws-access-key");
    assert!(scanner.is_clean("mot de passe: «très secret» ünïcödé ☃☃☃☃☃☃☃☃☃☃☃☃☃"));
}

/// ~100-450 bytes of English-ish entry text, the common case. With `keywords`,
/// words such as `token`, `password` or `secret` send most entries past the
/// prefilter, the worst case for speed.
fn ordinary_entries(n: usize, keywords: bool) -> Vec<String> {
    const WORDS: &str = "user prefers rust tests deploy friday the project uses postgres \
        and redis review before merge likes short commits works from berlin team lead is \
        Ada meeting on monday build takes four minutes cache warm dark mode editor vim \
        keybindings release notes weekly on-call rotation";
    const KEYWORDS: &str = "rotates the api token monthly keeps a password manager \
        secret santa in december";
    let words: Vec<&str> = WORDS.split_whitespace().collect();
    let keyword_words: Vec<&str> = KEYWORDS.split_whitespace().collect();
    let mut x = 0x2545_F491_4F6C_DD1Du64;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x as usize
    };
    (0..n)
        .map(|i| {
            let observations: Vec<String> = (0..1 + next() % 5)
                .map(|_| {
                    (0..4 + next() % 10)
                        .map(|_| match next() {
                            k if keywords && k % 5 == 0 => {
                                keyword_words[k / 5 % keyword_words.len()]
                            }
                            k => words[k % words.len()],
                        })
                        .collect::<Vec<_>>()
                        .join(" ")
                })
                .collect();
            serde_json::json!({
                "entityType": "person",
                "name": format!("E{i}"),
                "observations": observations,
                "type": "entity",
            })
            .to_string()
        })
        .collect()
}

#[test]
fn ordinary_entries_scan_clean() {
    let scanner = Scanner::new();
    for keywords in [false, true] {
        for e in ordinary_entries(2000, keywords) {
            assert!(scanner.is_clean(&e), "{e}");
        }
    }
}

/// `cargo test --release -- --ignored --nocapture speed`
#[test]
#[ignore]
fn speed_of_100k_ordinary_entries() {
    let scanner = Scanner::new();
    for keywords in [false, true] {
        let entries = ordinary_entries(100_000, keywords);
        let bytes: usize = entries.iter().map(String::len).sum();
        let woken = entries
            .iter()
            .filter(|e| scanner.candidates(e).0 != 0)
            .count();
        let mut times = Vec::new();
        for _ in 0..11 {
            let t = std::time::Instant::now();
            let dirty = entries
                .iter()
                .filter(|e| !scanner.scan(e).is_empty())
                .count();
            times.push(t.elapsed());
            assert_eq!(dirty, 0);
        }
        times.sort();
        println!(
            "100000 entries, {bytes} bytes, {woken} past the prefilter: \
             median {:?} (min {:?}, max {:?})",
            times[times.len() / 2],
            times[0],
            times[times.len() - 1]
        );
    }
}
