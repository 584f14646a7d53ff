//! Shell-style globs for selectors: `*` (any run of characters, including none), `?` (one
//! character), `[abc]`, `[a-z]`, `[!abc]` (one character in / not in the set), and `\x` (a literal
//! `x`). Matching is on whole strings, case-sensitive, like Lambda function names.
//!
//! Written here rather than taken from a crate because the same pattern must also become an RE2
//! regular expression for the generated Prometheus rules ([`Glob::to_regex`]); owning both
//! translations keeps them in step, and a property test checks that they agree.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

#[derive(Clone, Debug, PartialEq, Eq)]
enum Token {
    Literal(char),
    AnyOne,
    AnyRun,
    Class {
        negated: bool,
        ranges: Vec<(char, char)>,
    },
}

/// A compiled glob; keeps its source text for display and serialisation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Glob {
    pattern: String,
    tokens: Vec<Token>,
}

impl Glob {
    /// Compiles `pattern`. Errors on an unterminated `[`, an empty class, a reversed range or a
    /// trailing `\`.
    pub fn new(pattern: &str) -> Result<Self, String> {
        let chars: Vec<char> = pattern.chars().collect();
        let mut tokens = Vec::new();
        let mut i = 0;
        while i < chars.len() {
            match chars[i] {
                '*' => {
                    if tokens.last() != Some(&Token::AnyRun) {
                        tokens.push(Token::AnyRun);
                    }
                    i += 1;
                }
                '?' => {
                    tokens.push(Token::AnyOne);
                    i += 1;
                }
                '\\' => {
                    let c = chars
                        .get(i + 1)
                        .ok_or_else(|| format!("glob {pattern:?} ends with a lone '\\'"))?;
                    tokens.push(Token::Literal(*c));
                    i += 2;
                }
                '[' => {
                    let (token, next) = parse_class(pattern, &chars, i)?;
                    tokens.push(token);
                    i = next;
                }
                c => {
                    tokens.push(Token::Literal(c));
                    i += 1;
                }
            }
        }
        Ok(Self {
            pattern: pattern.to_owned(),
            tokens,
        })
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.pattern
    }

    /// True for a pattern that matches every string (`*`).
    pub fn matches_everything(&self) -> bool {
        self.tokens == [Token::AnyRun]
    }

    /// Whole-string match. No allocation: selectors are matched for every function on every
    /// evaluation round.
    pub fn matches(&self, text: &str) -> bool {
        if self.matches_everything() {
            return true;
        }
        // Iterative matcher with single-star backtracking over byte offsets of `text`:
        // O(pattern × text) worst case.
        let next_char = |at: usize| text.get(at..).and_then(|rest| rest.chars().next());
        let (mut p, mut t) = (0usize, 0usize);
        let mut star: Option<(usize, usize)> = None;
        while let Some(c) = next_char(t) {
            match self.tokens.get(p) {
                Some(Token::AnyRun) => {
                    star = Some((p, t));
                    p += 1;
                }
                Some(token) if token_matches(token, c) => {
                    p += 1;
                    t += c.len_utf8();
                }
                _ => match star {
                    Some((sp, st)) => {
                        let Some(skipped) = next_char(st) else {
                            return false;
                        };
                        let resume = st + skipped.len_utf8();
                        p = sp + 1;
                        t = resume;
                        star = Some((sp, resume));
                    }
                    None => return false,
                },
            }
        }
        self.tokens[p..].iter().all(|tok| *tok == Token::AnyRun)
    }

    /// The equivalent RE2 expression (unanchored text; PromQL `=~` anchors it), e.g.
    /// `checkout-*` → `checkout-.*`.
    pub fn to_regex(&self) -> String {
        let mut out = String::new();
        for token in &self.tokens {
            match token {
                Token::Literal(c) => push_regex_literal(&mut out, *c),
                Token::AnyOne => out.push('.'),
                Token::AnyRun => out.push_str(".*"),
                Token::Class { negated, ranges } => {
                    out.push('[');
                    if *negated {
                        out.push('^');
                    }
                    for (lo, hi) in ranges {
                        push_class_char(&mut out, *lo);
                        if lo != hi {
                            out.push('-');
                            push_class_char(&mut out, *hi);
                        }
                    }
                    out.push(']');
                }
            }
        }
        out
    }

    /// True when the pattern has no wildcard, so it equals exactly one string.
    pub fn literal(&self) -> Option<String> {
        self.tokens
            .iter()
            .map(|t| match t {
                Token::Literal(c) => Some(*c),
                _ => None,
            })
            .collect()
    }
}

fn parse_class(pattern: &str, chars: &[char], open: usize) -> Result<(Token, usize), String> {
    let mut i = open + 1;
    let negated = matches!(chars.get(i), Some('!') | Some('^'));
    if negated {
        i += 1;
    }
    let mut ranges = Vec::new();
    let mut first = true;
    loop {
        let c = *chars
            .get(i)
            .ok_or_else(|| format!("glob {pattern:?} has an unterminated '['"))?;
        if c == ']' && !first {
            i += 1;
            break;
        }
        first = false;
        let lo = if c == '\\' {
            i += 1;
            *chars
                .get(i)
                .ok_or_else(|| format!("glob {pattern:?} ends with a lone '\\'"))?
        } else {
            c
        };
        i += 1;
        if chars.get(i) == Some(&'-') && chars.get(i + 1).is_some_and(|n| *n != ']') {
            let hi = chars[i + 1];
            if hi < lo {
                return Err(format!("glob {pattern:?} has a reversed range {lo}-{hi}"));
            }
            ranges.push((lo, hi));
            i += 2;
        } else {
            ranges.push((lo, lo));
        }
    }
    if ranges.is_empty() {
        return Err(format!("glob {pattern:?} has an empty character class"));
    }
    Ok((Token::Class { negated, ranges }, i))
}

fn token_matches(token: &Token, c: char) -> bool {
    match token {
        Token::Literal(l) => *l == c,
        Token::AnyOne => true,
        Token::AnyRun => true,
        Token::Class { negated, ranges } => {
            ranges.iter().any(|(lo, hi)| *lo <= c && c <= *hi) != *negated
        }
    }
}

fn push_regex_literal(out: &mut String, c: char) {
    if "\\.+*?()|[]{}^$".contains(c) {
        out.push('\\');
    }
    out.push(c);
}

fn push_class_char(out: &mut String, c: char) {
    if "\\]^-[".contains(c) {
        out.push('\\');
    }
    out.push(c);
}

impl fmt::Display for Glob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.pattern)
    }
}

impl Serialize for Glob {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.pattern)
    }
}

/// Compiles inside the scalar's own `deserialize_str`, so a bad glob is reported at its line.
struct GlobVisitor;

impl serde::de::Visitor<'_> for GlobVisitor {
    type Value = Glob;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a glob such as \"checkout-*\"")
    }

    fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Glob, E> {
        Glob::new(text).map_err(E::custom)
    }
}

impl<'de> Deserialize<'de> for Glob {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_str(GlobVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_match_table() {
        let table: &[(&str, &str, bool)] = &[
            ("*", "", true),
            ("*", "anything-at-all", true),
            ("checkout-*", "checkout-api", true),
            ("checkout-*", "checkout-", true),
            ("checkout-*", "xcheckout-api", false),
            ("*-prod", "orders-prod", true),
            ("*-prod", "orders-prod-2", false),
            ("a*b*c", "aXXbYYc", true),
            ("a*b*c", "aXXcYYb", false),
            ("a*a*a", "aaa", true),
            ("a*a*a", "aa", false),
            ("fn-?", "fn-1", true),
            ("fn-?", "fn-12", false),
            ("fn-[0-9]", "fn-7", true),
            ("fn-[0-9]", "fn-x", false),
            ("fn-[!0-9]", "fn-x", true),
            ("fn-[!0-9]", "fn-7", false),
            ("[]]", "]", true),
            ("v\\*", "v*", true),
            ("v\\*", "v1", false),
            ("$LATEST", "$LATEST", true),
            ("eu-*-1", "eu-west-1", true),
            ("eu-*-1", "us-east-1", false),
            ("ü*", "über", true),
            ("**x", "abx", true),
        ];
        for (pattern, text, expected) in table {
            let glob = Glob::new(pattern).unwrap_or_else(|e| panic!("{pattern}: {e}"));
            assert_eq!(glob.matches(text), *expected, "{pattern} vs {text}");
        }
    }

    #[test]
    fn bad_globs_are_rejected() {
        for pattern in ["fn-[0-9", "fn-[]", "trailing\\", "[z-a]", "["] {
            assert!(
                Glob::new(pattern).is_err(),
                "{pattern:?} should be rejected"
            );
        }
    }

    #[test]
    fn literal_and_match_all() {
        assert_eq!(
            Glob::new("orders")
                .map(|g| g.literal())
                .ok()
                .flatten()
                .as_deref(),
            Some("orders")
        );
        assert_eq!(Glob::new("ord*").map(|g| g.literal()).ok().flatten(), None);
        assert!(Glob::new("*").is_ok_and(|g| g.matches_everything()));
        assert!(Glob::new("**").is_ok_and(|g| g.matches_everything()));
        assert!(!Glob::new("a*").is_ok_and(|g| g.matches_everything()));
    }

    #[test]
    fn regex_translation_table() {
        let table: &[(&str, &str)] = &[
            ("*", ".*"),
            ("checkout-*", "checkout-.*"),
            ("fn.v?", "fn\\.v."),
            ("$LATEST", "\\$LATEST"),
            ("[!a-c]x", "[^a-c]x"),
            ("a+b", "a\\+b"),
        ];
        for (glob, regex) in table {
            let g = Glob::new(glob).unwrap_or_else(|e| panic!("{glob}: {e}"));
            assert_eq!(g.to_regex(), *regex, "{glob}");
        }
    }

    mod prop {
        use super::super::*;
        use proptest::prelude::*;

        /// A tiny anchored matcher for the regex subset `to_regex` emits, used as an independent
        /// oracle: `.`, `.*`, literals (with `\` escapes), `[...]`/`[^...]` classes with ranges.
        fn regex_matches(re: &str, text: &str) -> bool {
            #[derive(Debug)]
            enum R {
                Lit(char),
                Dot,
                DotStar,
                Class(bool, Vec<(char, char)>),
            }
            let c: Vec<char> = re.chars().collect();
            let mut items = Vec::new();
            let mut i = 0;
            while i < c.len() {
                match c[i] {
                    '\\' => {
                        items.push(R::Lit(c[i + 1]));
                        i += 2;
                    }
                    '.' if c.get(i + 1) == Some(&'*') => {
                        items.push(R::DotStar);
                        i += 2;
                    }
                    '.' => {
                        items.push(R::Dot);
                        i += 1;
                    }
                    '[' => {
                        i += 1;
                        let neg = c[i] == '^';
                        if neg {
                            i += 1;
                        }
                        let mut ranges = Vec::new();
                        while c[i] != ']' {
                            let lo = if c[i] == '\\' {
                                i += 1;
                                c[i]
                            } else {
                                c[i]
                            };
                            i += 1;
                            if c[i] == '-' {
                                let hi = if c[i + 1] == '\\' {
                                    i += 1;
                                    c[i + 1]
                                } else {
                                    c[i + 1]
                                };
                                ranges.push((lo, hi));
                                i += 2;
                            } else {
                                ranges.push((lo, lo));
                            }
                        }
                        i += 1;
                        items.push(R::Class(neg, ranges));
                    }
                    other => {
                        items.push(R::Lit(other));
                        i += 1;
                    }
                }
            }
            fn m(items: &[R], t: &[char]) -> bool {
                match items.first() {
                    None => t.is_empty(),
                    Some(R::DotStar) => (0..=t.len()).any(|k| m(&items[1..], &t[k..])),
                    Some(item) => {
                        let Some(ch) = t.first() else { return false };
                        let ok = match item {
                            R::Lit(l) => l == ch,
                            R::Dot => true,
                            R::Class(neg, r) => {
                                r.iter().any(|(lo, hi)| lo <= ch && ch <= hi) != *neg
                            }
                            R::DotStar => unreachable!(),
                        };
                        ok && m(&items[1..], &t[1..])
                    }
                }
            }
            m(&items, &text.chars().collect::<Vec<_>>())
        }

        proptest! {
            #[test]
            fn glob_and_its_regex_agree(pattern in "[ab*?.$+\\-]{0,7}|[ab]{0,2}\\[!?a-b\\][ab*]{0,3}", text in "[ab.$+\\-]{0,8}") {
                let glob = Glob::new(&pattern).unwrap();
                prop_assert_eq!(glob.matches(&text), regex_matches(&glob.to_regex(), &text), "glob {} regex {}", pattern, glob.to_regex());
            }
        }
    }
}
