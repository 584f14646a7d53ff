//! Masking secrets in log bodies and string attributes (`LAMBDAWATCH_REDACT`).
//!
//! Consumes a string, produces it with every match replaced by [`MASK`]. A rule whose regex has a
//! capture group named `secret` masks only that group (so `https://user:pw@host` keeps its shape);
//! otherwise the whole match is masked. The default rules carry a cheap literal pre-filter so a
//! line that cannot match costs a substring search, not a regex run.
//!
//! The default set also masks by key name: in a JSON log record (fields become attributes, so
//! the key and the value are no longer one string) the whole value of a field whose key names a
//! secret ([`is_sensitive_key`]: case-insensitive, `_`/`-`/`.` ignored; `token` and `secret` only as
//! the ending of the key, so `tokens_used` or `secret_name` stay visible) is replaced by [`MASK`].

use regex_lite::Regex;

pub const MASK: &str = "[REDACTED]";

/// The default set: AWS secret access keys (by their key name), AWS access key ids, bearer tokens,
/// passwords in URLs. Each with the literals one of which every match contains.
pub const DEFAULT_RULES: &[(&str, &[&str])] = &[
    (
        r#"(?i)secret_?access_?key["']?\s*[:=]\s*["']?(?P<secret>[A-Za-z0-9/+=]{40})"#,
        &["ccess", "CCESS"],
    ),
    (r"\b(?:AKIA|ASIA)[A-Z0-9]{16}\b", &["AKIA", "ASIA"]),
    (
        r"(?i)\bbearer\s+(?P<secret>[A-Za-z0-9\-._~+/]{8,}=*)",
        &["earer", "EARER"],
    ),
    (r"://[^/\s:@]+:(?P<secret>[^/\s@]+)@", &["://"]),
];

/// Key-name fragments (lowercase, separators removed) whose field value is masked whole when
/// they occur anywhere in the key (`db_password_value`, `x-api-key-id`).
pub const SENSITIVE_KEYS: &[&str] = &[
    "secretaccesskey",
    "password",
    "passwd",
    "authorization",
    "apikey",
    "privatekey",
];

/// Key-name endings (lowercase, separators removed) whose field value is masked whole: the key
/// names the token or secret itself (`token`, `access_token`, `X-Amz-Security-Token`,
/// `sessionToken`, `client_secret`). Only as the ending, because the same words start or sit
/// inside names of harmless fields users log all the time: `tokenizer_version`, `tokens_used`,
/// `max_tokens`, `token_count`, `token_type`, `secret_name`, `secret_arn`.
pub const SENSITIVE_KEY_ENDINGS: &[&str] = &["token", "secret"];

/// True when `key` names a secret: once lowercased with `_`, `-`, `.` and spaces removed, it
/// contains one of [`SENSITIVE_KEYS`] or ends with one of [`SENSITIVE_KEY_ENDINGS`]
/// (`aws_secret_access_key`, `SecretAccessKey`, `X-Api-Key`, `refresh_token`).
pub fn is_sensitive_key(key: &str) -> bool {
    let norm: String = key
        .chars()
        .filter(|c| !matches!(c, '_' | '-' | '.' | ' '))
        .map(|c| c.to_ascii_lowercase())
        .collect();
    SENSITIVE_KEYS.iter().any(|k| norm.contains(k))
        || SENSITIVE_KEY_ENDINGS.iter().any(|k| norm.ends_with(k))
}

#[derive(Debug, Clone)]
struct Rule {
    re: Regex,
    /// Every match contains one of these substrings (exact; `str::contains` is fast), so a line
    /// without any of them skips the regex.
    prefilter: Option<&'static [&'static str]>,
    has_secret_group: bool,
}

#[derive(Debug, Clone, Default)]
pub struct Redactor {
    rules: Vec<Rule>,
    /// Mask whole values of fields whose key is [`is_sensitive_key`] (on with the defaults).
    mask_keys: bool,
}

impl Redactor {
    /// No masking.
    pub fn none() -> Self {
        Self::default()
    }

    /// The default rule set.
    pub fn defaults() -> Self {
        let mut r = Self::none();
        r.mask_keys = true;
        for (pat, pre) in DEFAULT_RULES {
            // The defaults are tested to compile; a failure here would only lose that rule.
            if let Ok(re) = Regex::new(pat) {
                r.push(re, Some(pre));
            }
        }
        r
    }

    /// Adds a user rule; the error is the regex error text.
    pub fn add(&mut self, pattern: &str) -> Result<(), String> {
        let re = Regex::new(pattern).map_err(|e| e.to_string())?;
        self.push(re, None);
        Ok(())
    }

    fn push(&mut self, re: Regex, prefilter: Option<&'static [&'static str]>) {
        let has_secret_group = re.capture_names().any(|n| n == Some("secret"));
        self.rules.push(Rule {
            re,
            prefilter,
            has_secret_group,
        });
    }

    /// Appends `other`'s rules after ours.
    pub fn extend(&mut self, other: Redactor) {
        self.rules.extend(other.rules);
        self.mask_keys |= other.mask_keys;
    }

    /// True when a field named `key` must have its whole value masked.
    pub fn masks_key(&self, key: &str) -> bool {
        self.mask_keys && is_sensitive_key(key)
    }

    /// Bit `i` set when rule `i` may match: it has no pre-filter, or one of its literals occurs
    /// (`str::contains` is vectorised in std, so a few literal searches beat a byte loop).
    fn candidates(&self, s: &str) -> u64 {
        let mut bits = 0u64;
        for (i, r) in self.rules.iter().enumerate().take(64) {
            let maybe = match r.prefilter {
                None => true,
                Some(p) => p.iter().any(|n| s.contains(n)),
            };
            if maybe {
                bits |= 1 << i;
            }
        }
        bits
    }

    /// True when nothing is masked at all (no rules, no key masking).
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty() && !self.mask_keys
    }

    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// Masks `s` in place; true when something was masked.
    pub fn apply(&self, s: &mut String) -> bool {
        if self.rules.is_empty() {
            return false;
        }
        let candidates = self.candidates(s);
        let mut changed = false;
        for (i, rule) in self.rules.iter().enumerate() {
            // Rules past the 64th are always tried.
            if i < 64 && candidates & (1 << i) == 0 {
                continue;
            }
            if !rule.re.is_match(s) {
                continue;
            }
            let mut out = String::with_capacity(s.len());
            let mut last = 0;
            for caps in rule.re.captures_iter(s) {
                let m = if rule.has_secret_group {
                    caps.name("secret").or_else(|| caps.get(0))
                } else {
                    caps.get(0)
                };
                let Some(m) = m else { continue };
                if m.start() < last {
                    continue;
                }
                out.push_str(&s[last..m.start()]);
                out.push_str(MASK);
                last = m.end();
            }
            out.push_str(&s[last..]);
            *s = out;
            changed = true;
        }
        changed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_rules_all_compile() {
        assert_eq!(Redactor::defaults().len(), DEFAULT_RULES.len());
    }

    #[test]
    fn redaction_table() {
        let r = Redactor::defaults();
        let cases = [
            (
                "aws_secret_access_key=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY done",
                "aws_secret_access_key=[REDACTED] done",
            ),
            (
                r#"{"SecretAccessKey": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"}"#,
                r#"{"SecretAccessKey": "[REDACTED]"}"#,
            ),
            (
                "SECRET_ACCESS_KEY: wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
                "SECRET_ACCESS_KEY: [REDACTED]",
            ),
            (
                "AUTHORIZATION: BEARER abcdefgh12345678",
                "AUTHORIZATION: BEARER [REDACTED]",
            ),
            ("key id AKIAIOSFODNN7EXAMPLE used", "key id [REDACTED] used"),
            (
                "Authorization: Bearer eyJhbGciOi.J9eyJzdWIi.Ok-_x= next",
                "Authorization: Bearer [REDACTED] next",
            ),
            (
                "connecting to postgres://app:s3cr3t@db.internal:5432/x",
                "connecting to postgres://app:[REDACTED]@db.internal:5432/x",
            ),
            (
                "two: https://a:b@x and https://c:d@y",
                "two: https://a:[REDACTED]@x and https://c:[REDACTED]@y",
            ),
            (
                "nothing secret here, bearer of news",
                "nothing secret here, bearer of news",
            ),
            ("https://example.com/path", "https://example.com/path"),
        ];
        for (input, want) in cases {
            let mut s = input.to_owned();
            let changed = r.apply(&mut s);
            assert_eq!(s, want, "input {input:?}");
            assert_eq!(changed, input != want, "changed flag for {input:?}");
        }
    }

    #[test]
    fn sensitive_keys_are_case_and_separator_insensitive() {
        for k in [
            "SecretAccessKey",
            "aws_secret_access_key",
            "password",
            "DB_PASSWORD",
            "passwd",
            "Authorization",
            "x-api-key",
            "apiKey",
            "private_key",
            "sessionToken",
            "token",
            "access_token",
            "X-Amz-Security-Token",
            "id_token",
            "refreshToken",
            "client_secret",
            "secret",
        ] {
            assert!(is_sensitive_key(k), "{k}");
        }
        for k in [
            "user",
            "message",
            "path",
            "accessKeyId",
            "secret_name",
            "secret_arn",
            "tokenizer_version",
            "tokens_used",
            "max_tokens",
            "token_count",
            "token_type",
            "prompt_tokens",
        ] {
            assert!(!is_sensitive_key(k), "{k}");
        }
        assert!(Redactor::defaults().masks_key("Password"));
        assert!(!Redactor::none().masks_key("Password"));
        let mut user = Redactor::none();
        user.add("x").unwrap();
        assert!(!user.masks_key("Password"));
        user.extend(Redactor::defaults());
        assert!(user.masks_key("Password"));
    }

    #[test]
    fn user_rules_mask_whole_match_or_secret_group() {
        let mut r = Redactor::none();
        r.add(r"\d{4}-\d{4}-\d{4}-\d{4}").unwrap();
        r.add(r"token=(?P<secret>\w+)").unwrap();
        assert!(r.add("(unclosed").is_err());
        let mut s = "card 1234-5678-9012-3456 token=abc".to_owned();
        r.apply(&mut s);
        assert_eq!(s, "card [REDACTED] token=[REDACTED]");
    }
}
