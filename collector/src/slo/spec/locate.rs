//! Finds where a node of the spec was written, for errors found after deserialisation.
//!
//! `serde_yaml` reports locations for syntax and type errors but keeps no spans on the values it
//! builds, so semantic checks ("this objective can never fire") would otherwise have no line. This
//! module parses the same text a second time with an event-level YAML parser (`saphyr-parser`,
//! which carries a span on every event) and records, for every mapping key and sequence item,
//! its path (`slos[2].sli.threshold`) and position. A check then names the path of the offending
//! node; if that exact node is absent (the value came from a default), the nearest written
//! ancestor is reported instead, so every error still has a line.

use saphyr_parser::{Event, Parser};
use std::collections::HashMap;

/// One step of a path into the document.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Seg {
    Key(String),
    Index(usize),
}

/// Renders `slos[2].sli.threshold`.
pub fn render(path: &[Seg]) -> String {
    let mut out = String::new();
    for seg in path {
        match seg {
            Seg::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(k);
            }
            Seg::Index(i) => {
                out.push('[');
                out.push_str(&i.to_string());
                out.push(']');
            }
        }
    }
    out
}

/// Parses what [`render`] (and serde_yaml's error paths) print: `slos[2].sli`. Unparseable
/// pieces end the path early (the caller then reports the nearest ancestor).
pub fn parse_path(text: &str) -> Vec<Seg> {
    let mut out = Vec::new();
    for part in text.split('.').filter(|p| !p.is_empty()) {
        let (name, mut indexes) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        if !name.is_empty() {
            out.push(Seg::Key(name.to_owned()));
        }
        while let Some(stripped) = indexes.strip_prefix('[') {
            let Some(end) = stripped.find(']') else {
                return out;
            };
            let Ok(i) = stripped[..end].parse() else {
                return out;
            };
            out.push(Seg::Index(i));
            indexes = &stripped[end + 1..];
        }
    }
    out
}

/// 1-based line and column.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pos {
    pub line: usize,
    pub column: usize,
}

/// Positions of every key and sequence item of the first document.
#[derive(Debug, Default)]
pub struct Locator {
    positions: HashMap<Vec<Seg>, Pos>,
}

enum Frame {
    /// In a mapping; `key` is the pending key whose value comes next (None: a key comes next).
    Map {
        key: Option<Seg>,
    },
    Seq {
        next: usize,
    },
}

impl Locator {
    /// Indexes `text`. A text the parser rejects yields a locator that knows only the root
    /// (serde_yaml will have reported the syntax error with its own position first).
    pub fn new(text: &str) -> Self {
        let mut positions = HashMap::new();
        positions.insert(Vec::new(), Pos { line: 1, column: 1 });
        let mut path: Vec<Seg> = Vec::new();
        let mut stack: Vec<Frame> = Vec::new();
        let mut parser = Parser::new_from_str(text);
        while let Some(Ok((event, span))) = parser.next_event() {
            let pos = Pos {
                line: span.start.line(),
                column: span.start.col() + 1,
            };
            let starts_node = matches!(
                event,
                Event::Scalar(..)
                    | Event::MappingStart(..)
                    | Event::SequenceStart(..)
                    | Event::Alias(..)
            );
            if starts_node {
                // Is this node a mapping key? Then remember it and wait for the value.
                if let Some(Frame::Map { key }) = stack.last_mut()
                    && key.is_none()
                {
                    {
                        let name = match &event {
                            Event::Scalar(value, ..) => value.to_string(),
                            _ => "<complex key>".to_owned(),
                        };
                        let seg = Seg::Key(name);
                        let mut key_path = path.clone();
                        key_path.push(seg.clone());
                        positions.entry(key_path).or_insert(pos);
                        *key = Some(seg);
                        if matches!(event, Event::MappingStart(..) | Event::SequenceStart(..)) {
                            // A complex key: skip its content by tracking depth.
                            skip_complex(&mut parser);
                        }
                        continue;
                    }
                }
                // A value (in a mapping) or an item (in a sequence): enter its path.
                match stack.last_mut() {
                    Some(Frame::Map { key }) => {
                        if let Some(seg) = key.clone() {
                            path.push(seg);
                        }
                    }
                    Some(Frame::Seq { next }) => {
                        path.push(Seg::Index(*next));
                        *next += 1;
                        positions.entry(path.clone()).or_insert(pos);
                    }
                    None => {}
                }
                match event {
                    Event::MappingStart(..) => stack.push(Frame::Map { key: None }),
                    Event::SequenceStart(..) => stack.push(Frame::Seq { next: 0 }),
                    _ => finish_value(&mut stack, &mut path),
                }
                continue;
            }
            if matches!(event, Event::MappingEnd | Event::SequenceEnd) {
                stack.pop();
                finish_value(&mut stack, &mut path);
            }
            if matches!(event, Event::DocumentEnd) {
                break;
            }
        }
        Self { positions }
    }

    /// Position of `path`, or of its nearest ancestor that was written.
    pub fn locate(&self, path: &[Seg]) -> Pos {
        for len in (0..=path.len()).rev() {
            if let Some(pos) = self.positions.get(&path[..len]) {
                return *pos;
            }
        }
        Pos { line: 1, column: 1 }
    }

    /// Position of exactly `path`, if it was written.
    #[cfg(test)]
    pub fn exact(&self, path: &[Seg]) -> Option<Pos> {
        self.positions.get(path).copied()
    }
}

/// After a value node ends: leave its path segment and reset the parent mapping to expect a key.
fn finish_value(stack: &mut [Frame], path: &mut Vec<Seg>) {
    match stack.last_mut() {
        Some(Frame::Map { key }) => {
            let had_key = key.take().is_some();
            if had_key {
                path.pop();
            }
        }
        Some(Frame::Seq { .. }) => {
            path.pop();
        }
        None => {}
    }
}

fn skip_complex(parser: &mut Parser<'_, saphyr_parser::StrInput<'_>>) {
    let mut depth = 1usize;
    while depth > 0 {
        match parser.next_event() {
            Some(Ok((Event::MappingStart(..) | Event::SequenceStart(..), _))) => depth += 1,
            Some(Ok((Event::MappingEnd | Event::SequenceEnd, _))) => depth -= 1,
            Some(Ok(_)) => {}
            Some(Err(_)) | None => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(k: &str) -> Seg {
        Seg::Key(k.to_owned())
    }

    #[test]
    fn locates_keys_items_and_falls_back_to_ancestors() {
        let text = "version: 1\n\
                    slos:\n  \
                      - name: a\n    \
                        sli:\n      \
                          type: error_rate\n    \
                        objective: 0.999\n  \
                      - name: b\n    \
                        sli: {type: cold_start, threshold: 20s}\n    \
                        objective: 0.99\n";
        let loc = Locator::new(text);
        assert_eq!(loc.locate(&[key("version")]), Pos { line: 1, column: 1 });
        assert_eq!(
            loc.locate(&[key("slos"), Seg::Index(0), key("objective")])
                .line,
            6
        );
        assert_eq!(
            loc.locate(&[key("slos"), Seg::Index(0), key("sli"), key("type")])
                .line,
            5
        );
        assert_eq!(
            loc.locate(&[key("slos"), Seg::Index(1), key("name")]),
            Pos { line: 7, column: 5 }
        );
        assert_eq!(
            loc.locate(&[key("slos"), Seg::Index(1), key("objective")])
                .line,
            9
        );
        // Flow mapping on one line: exact key column.
        let threshold = loc.locate(&[key("slos"), Seg::Index(1), key("sli"), key("threshold")]);
        assert_eq!(threshold.line, 8);
        assert_eq!(
            &text.lines().nth(7).unwrap_or("")[threshold.column - 1..][..9],
            "threshold"
        );
        // Not written (defaulted): nearest ancestor, the item itself.
        assert_eq!(
            loc.locate(&[key("slos"), Seg::Index(1), key("window")])
                .line,
            7
        );
        assert_eq!(
            loc.exact(&[key("slos"), Seg::Index(1), key("window")]),
            None
        );
        assert_eq!(
            render(&[key("slos"), Seg::Index(1), key("sli"), key("threshold")]),
            "slos[1].sli.threshold"
        );
    }

    #[test]
    fn comments_anchors_and_quoted_keys_do_not_confuse_it() {
        let text = "# header comment\n\
                    defaults: &d\n  \
                      burn_rules:\n    # a comment\n    \
                        - {severity: page, factor: 14.4, long: 1h, short: 5m}\n    \
                        - severity: ticket\n      \
                          \"factor\": 1\n";
        let loc = Locator::new(text);
        assert_eq!(loc.locate(&[key("defaults")]).line, 2);
        assert_eq!(
            loc.locate(&[
                key("defaults"),
                key("burn_rules"),
                Seg::Index(0),
                key("long")
            ])
            .line,
            5
        );
        assert_eq!(
            loc.locate(&[key("defaults"), key("burn_rules"), Seg::Index(1)])
                .line,
            6
        );
        assert_eq!(
            loc.locate(&[
                key("defaults"),
                key("burn_rules"),
                Seg::Index(1),
                key("factor")
            ])
            .line,
            7
        );
    }
}
