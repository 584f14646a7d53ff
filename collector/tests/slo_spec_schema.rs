//! `docs/slo-spec.schema.json` against the parser: the embedded default and every example in
//! `docs/slo-spec.md` validate against the schema and parse; bad inputs are refused by both; the
//! documented embedded default is the real one.
//!
//! Uses the `jsonschema` crate (dev-dependency only, default features off: no HTTP resolver), a
//! real draft 2020-12 validator, rather than a hand-written structural check that could agree
//! with our own misreading of the schema.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests panic to report failure

use lambdawatch_collector::slo::spec::{DURATION_PATTERN, SloSpec, parse_duration};
use std::path::PathBuf;

fn repo_file(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(rel)
}

fn validator() -> jsonschema::Validator {
    let text =
        std::fs::read_to_string(repo_file("docs/slo-spec.schema.json")).expect("schema file");
    let schema: serde_json::Value = serde_json::from_str(&text).expect("schema is JSON");
    jsonschema::draft202012::new(&schema).expect("schema compiles")
}

fn schema_errors(v: &jsonschema::Validator, instance: &serde_json::Value) -> Vec<String> {
    v.iter_errors(instance)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect()
}

/// (info string, body) of every fenced code block in the doc.
fn code_blocks(markdown: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut current: Option<(String, String)> = None;
    for line in markdown.lines() {
        match (&mut current, line.strip_prefix("```")) {
            (None, Some(info)) => current = Some((info.trim().to_owned(), String::new())),
            (Some(_), Some(_)) => out.extend(current.take()),
            (Some((_, body)), None) => {
                body.push_str(line);
                body.push('\n');
            }
            (None, None) => {}
        }
    }
    out
}

fn doc() -> String {
    std::fs::read_to_string(repo_file("docs/slo-spec.md")).expect("docs/slo-spec.md")
}

#[test]
fn embedded_default_validates_against_the_schema() {
    let v = validator();
    let json = serde_json::to_value(SloSpec::embedded_default()).expect("serialise");
    assert_eq!(schema_errors(&v, &json), Vec::<String>::new());
    // And its YAML rendering, read back as plain data.
    let yaml: serde_json::Value =
        serde_yaml::from_str(&SloSpec::embedded_default().to_yaml()).expect("yaml");
    assert_eq!(schema_errors(&v, &yaml), Vec::<String>::new());
}

#[test]
fn every_doc_example_validates_and_parses() {
    let v = validator();
    let blocks = code_blocks(&doc());
    let yaml: Vec<&(String, String)> = blocks
        .iter()
        .filter(|(info, _)| info.starts_with("yaml"))
        .collect();
    assert!(
        yaml.len() >= 4,
        "expected the doc's YAML examples, found {}",
        yaml.len()
    );
    let mut checked = 0;
    for (info, body) in yaml {
        let data: serde_json::Value = serde_yaml::from_str(body).expect("example is YAML");
        let parsed = SloSpec::from_yaml_str(body);
        if info == "yaml invalid" {
            let errors = parsed
                .err()
                .unwrap_or_else(|| panic!("invalid example accepted:\n{body}"));
            assert!(errors.to_string().contains("can never fire"), "{errors}");
            continue;
        }
        if let Err(e) = &parsed {
            panic!("doc example rejected by the parser: {e}\n{body}");
        }
        assert_eq!(schema_errors(&v, &data), Vec::<String>::new(), "{body}");
        checked += 1;
    }
    assert!(checked >= 3);
}

#[test]
fn the_documented_default_is_the_embedded_default() {
    let doc = doc();
    let section = &doc[doc.find("## The embedded default").expect("section")..];
    let (_, body) = code_blocks(section)
        .into_iter()
        .next()
        .expect("a YAML block");
    let documented = SloSpec::from_yaml_str(&body).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(documented, SloSpec::embedded_default());
}

#[test]
fn schema_and_parser_both_refuse_bad_specs() {
    let v = validator();
    let cases: &[(&str, &str)] = &[
        (
            "unknown key",
            "version: 1\nslos:\n  - {name: a, sli: {type: error_rate}, objective: 0.99, objectve: 1}\n",
        ),
        (
            "bad duration",
            "version: 1\nslos:\n  - {name: a, sli: {type: error_rate}, objective: 0.99, window: 30 days}\n",
        ),
        (
            "ratio objective above 1",
            "version: 1\nslos:\n  - {name: a, sli: {type: error_rate}, objective: 99.9}\n",
        ),
        (
            "fractional throttle budget",
            "version: 1\nslos:\n  - {name: a, sli: {type: throttles}, objective: 2.5}\n",
        ),
        (
            "reserved label",
            "version: 1\nslos:\n  - {name: a, sli: {type: error_rate}, objective: 0.99, labels: {severity: x}}\n",
        ),
        (
            "bad name",
            "version: 1\nslos:\n  - {name: Errors, sli: {type: error_rate}, objective: 0.99}\n",
        ),
        (
            "missing threshold",
            "version: 1\nslos:\n  - {name: a, sli: {type: cold_start}, objective: 0.99}\n",
        ),
        (
            "key of another SLI",
            "version: 1\nslos:\n  - {name: a, sli: {type: error_rate, fraction: 0.5}, objective: 0.99}\n",
        ),
        (
            "fraction 1",
            "version: 1\nslos:\n  - {name: a, sli: {type: timeout_budget, fraction: 1}, objective: 0.99}\n",
        ),
        (
            "unknown init type",
            "version: 1\nslos:\n  - {name: a, sli: {type: cold_start, threshold: 1s, init_types: [warm]}, objective: 0.99}\n",
        ),
        (
            "version 2",
            "version: 2\nslos:\n  - {name: a, sli: {type: error_rate}, objective: 0.99}\n",
        ),
        ("no SLOs", "version: 1\nslos: []\n"),
        (
            "runbook URL",
            "version: 1\ndefaults: {runbook_base_url: docs/runbooks}\nslos:\n  - {name: a, sli: {type: error_rate}, objective: 0.99}\n",
        ),
    ];
    for (name, yaml) in cases {
        let data: serde_json::Value = serde_yaml::from_str(yaml).unwrap_or(serde_json::Value::Null);
        assert!(!v.is_valid(&data), "{name}: the schema accepts it");
        assert!(
            SloSpec::from_yaml_str(yaml).is_err(),
            "{name}: the parser accepts it"
        );
    }
}

#[test]
fn schema_duration_pattern_agrees_with_the_parser() {
    let schema: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(repo_file("docs/slo-spec.schema.json")).expect("schema"),
    )
    .expect("json");
    assert_eq!(schema["$defs"]["duration"]["pattern"], DURATION_PATTERN);
    let duration =
        serde_json::json!({"$ref": "#/$defs/duration", "$defs": schema["$defs"].clone()});
    let v = jsonschema::draft202012::new(&duration).expect("compiles");
    for text in [
        "500ms", "5m", "1h30m", "30d", "1w", "1s500ms", "0s", "", "5", "5 m", "5m1h", "1.5h", "1y",
        "m", "-5m",
    ] {
        assert_eq!(
            v.is_valid(&serde_json::json!(text)),
            parse_duration(text).is_ok(),
            "{text:?}: schema and parser disagree"
        );
    }
}
