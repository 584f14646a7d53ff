//! The Grafana dashboards in `dashboards/*.json` as data, for the tests that hold them to the code.
//!
//! Consumes the dashboard JSON files (Grafana's classic JSON model) and Contract 2 of
//! `docs/ARCHITECTURE.md`; produces:
//!
//! - [`load_all`] / [`panels`] / [`targets`]: every dashboard, every panel (children of collapsed rows
//!   included) and every query target with its panel.
//! - [`promql_queries`] / [`all_promql_queries`]: every PromQL expression with its template variables substituted
//!   (`$__rate_interval` → `1m`, `$function` → a given name, a multi-value "All" variable → its
//!   `allValue`, `$datasource` removed), ready for Prometheus's `/api/v1/query`. A variable it cannot
//!   substitute is an error, never sent through as `$x`.
//! - [`selectors`]: a small PromQL scanner naming each metric an expression selects, its range and the
//!   function that directly encloses it (for "counters only under `rate()` over `$__rate_interval`").
//! - [`contract_metrics`] / [`contract_labels`]: Contract 2's metric table (names, types, extra labels
//!   and their listed values), parsed from the Markdown at test time, so the lint follows the
//!   contract rather than a copy of it.
//! - [`queries_without_data`]: runs the queries through Prometheus's HTTP API (`/api/v1/query`) and
//!   names every one that errs or returns no series.
//!
//! Everything here is test support: functions that can meet bad input return `Result<_, String>` with
//! the reason; the loaders panic with the path when a file is missing or not JSON.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

/// What `$__rate_interval` becomes in [`promql_queries`]: one minute covers four 15 s scrapes.
pub const RATE_INTERVAL: &str = "1m";

/// One dashboard file.
#[derive(Debug, Clone)]
pub struct Dashboard {
    /// File stem, e.g. `fleet-slo-overview`.
    pub name: String,
    pub path: PathBuf,
    pub json: Value,
}

/// The directory holding the dashboards (`<repo>/dashboards`).
pub fn dashboards_dir() -> PathBuf {
    crate::repo_root().join("dashboards")
}

/// Reads one dashboard file; panics naming the file when it is unreadable or not JSON.
pub fn load(path: &Path) -> Dashboard {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read dashboard {}: {e}", path.display()));
    let json: Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("dashboard {} is not valid JSON: {e}", path.display()));
    let name = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    Dashboard {
        name,
        path: path.to_path_buf(),
        json,
    }
}

/// Every `*.json` directly in [`dashboards_dir`], sorted by name; panics when there is none.
pub fn load_all() -> Vec<Dashboard> {
    let dir = dashboards_dir();
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json") && p.is_file())
        .collect();
    paths.sort();
    assert!(!paths.is_empty(), "no dashboards in {}", dir.display());
    paths.iter().map(|p| load(p)).collect()
}

/// Every panel of a dashboard in document order, the children of (collapsed) rows included right
/// after their row.
pub fn panels(dashboard: &Value) -> Vec<&Value> {
    fn walk<'a>(list: &'a Value, out: &mut Vec<&'a Value>) {
        for panel in list.as_array().map(Vec::as_slice).unwrap_or_default() {
            out.push(panel);
            if let Some(children) = panel.get("panels") {
                walk(children, out);
            }
        }
    }
    let mut out = Vec::new();
    if let Some(list) = dashboard.get("panels") {
        walk(list, &mut out);
    }
    out
}

/// One query target of one panel.
#[derive(Debug, Clone, PartialEq)]
pub struct Target<'a> {
    pub panel: &'a Value,
    pub panel_title: String,
    pub ref_id: String,
    /// The raw `expr`, template variables and all; empty when the target has none.
    pub expr: String,
    pub target: &'a Value,
}

/// Every target of every panel, in document order.
pub fn targets(dashboard: &Value) -> Vec<Target<'_>> {
    let mut out = Vec::new();
    for panel in panels(dashboard) {
        let title = str_at(panel, "title").to_owned();
        for target in panel
            .get("targets")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default()
        {
            out.push(Target {
                panel,
                panel_title: title.clone(),
                ref_id: str_at(target, "refId").to_owned(),
                expr: str_at(target, "expr").to_owned(),
                target,
            });
        }
    }
    out
}

/// The dashboard's template variables (`templating.list`).
pub fn variables(dashboard: &Value) -> &[Value] {
    dashboard
        .pointer("/templating/list")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
}

/// The query text of a query variable (`query` is a string or `{ "query": "..." }`).
pub fn variable_query(variable: &Value) -> Option<&str> {
    match variable.get("query") {
        Some(Value::String(s)) => Some(s),
        Some(q) => q.get("query").and_then(Value::as_str),
        None => None,
    }
}

fn str_at<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}

/// A PromQL expression ready to send: variables substituted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    pub dashboard: String,
    pub panel_title: String,
    pub ref_id: String,
    pub expr: String,
}

/// Every panel target's PromQL of `dashboard`, with `$function` set to `function` (see the module
/// doc for the other variables). Errors name the panel and the variable that could not be
/// substituted.
pub fn promql_queries(dashboard: &Dashboard, function: &str) -> Result<Vec<Query>, String> {
    let values = substitution_values(&dashboard.json, function);
    targets(&dashboard.json)
        .into_iter()
        .map(|t| {
            let expr = substitute(&t.expr, &values).map_err(|e| {
                format!(
                    "{}: panel {:?} target {}: {e}",
                    dashboard.name, t.panel_title, t.ref_id
                )
            })?;
            Ok(Query {
                dashboard: dashboard.name.clone(),
                panel_title: t.panel_title,
                ref_id: t.ref_id,
                expr,
            })
        })
        .collect()
}

/// [`promql_queries`] of every dashboard in `dashboards/`, for the end-to-end run:
/// `queries_without_data(prometheus_url, &all_promql_queries("my-function"))` must be empty.
/// Panics naming the panel when a variable cannot be substituted.
pub fn all_promql_queries(function: &str) -> Vec<Query> {
    load_all()
        .iter()
        .flat_map(|d| promql_queries(d, function).unwrap_or_else(|e| panic!("{e}")))
        .collect()
}

/// The values [`promql_queries`] substitutes: Grafana's `$__rate_interval`, the datasource
/// variable(s) (removed), `function`, and every multi-value variable with an "All" option as its
/// `allValue`. Anything else is left out, so [`substitute`] reports it.
pub fn substitution_values(dashboard: &Value, function: &str) -> BTreeMap<String, String> {
    let mut values = BTreeMap::new();
    values.insert("__rate_interval".to_owned(), RATE_INTERVAL.to_owned());
    for v in variables(dashboard) {
        let name = str_at(v, "name");
        if str_at(v, "type") == "datasource" {
            values.insert(name.to_owned(), String::new());
        } else if v.get("includeAll").and_then(Value::as_bool) == Some(true)
            && let Some(all) = v.get("allValue").and_then(Value::as_str)
        {
            values.insert(name.to_owned(), all.to_owned());
        }
    }
    values.insert("function".to_owned(), function.to_owned());
    values
}

/// Replaces Grafana template variables (`$name`, `${name}`, `${name:format}`, `[[name]]`) in `text`
/// with `values[name]`; a variable without a value is an error naming it.
pub fn substitute(text: &str, values: &BTreeMap<String, String>) -> Result<String, String> {
    let lookup = |name: &str| {
        values
            .get(name)
            .cloned()
            .ok_or_else(|| format!("no value for template variable `${name}`"))
    };
    let is_name = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(pos) = rest.find(['$', '[']) {
        out.push_str(&rest[..pos]);
        let tail = &rest[pos..];
        if let Some(inner) = tail.strip_prefix("${") {
            let end = inner
                .find('}')
                .ok_or_else(|| format!("unclosed `${{` in {text:?}"))?;
            let name = inner[..end].split(':').next().unwrap_or("");
            out.push_str(&lookup(name)?);
            rest = &inner[end + 1..];
        } else if let Some(inner) = tail.strip_prefix("[[") {
            match inner.find("]]") {
                Some(end) if inner[..end].chars().all(|c| is_name(c) || c == ':') => {
                    let name = inner[..end].split(':').next().unwrap_or("");
                    out.push_str(&lookup(name)?);
                    rest = &inner[end + 2..];
                }
                _ => {
                    out.push('[');
                    rest = &tail[1..];
                }
            }
        } else if let Some(inner) = tail.strip_prefix('$') {
            let len = inner.find(|c: char| !is_name(c)).unwrap_or(inner.len());
            if len == 0 {
                out.push('$');
            } else {
                out.push_str(&lookup(&inner[..len])?);
            }
            rest = &inner[len..];
        } else {
            out.push('[');
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// A metric selected by a PromQL expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selector {
    /// Metric name as written, e.g. `lambdawatch_init_duration_seconds_bucket`.
    pub metric: String,
    /// The range text inside `[...]` right after the selector, e.g. `$__rate_interval`.
    pub range: Option<String>,
    /// The function whose parentheses directly enclose the selector (`rate`, `sum`, ...), if any.
    pub function: Option<String>,
}

const KEYWORDS: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "and",
    "or",
    "unless",
    "offset",
    "atan2",
    "inf",
    "nan",
];
const LABEL_LIST_KEYWORDS: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Ident(String),
    Number,
    Str,
    Open,
    Close,
    /// `{...}` label matchers (contents skipped).
    Matchers,
    /// `[...]` range or subquery, with its text.
    Range(String),
    Other,
}

fn tokenize(expr: &str) -> Result<Vec<Token>, String> {
    let chars: Vec<char> = expr.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    // Skips a quoted string starting at `i`; returns the index after the closing quote.
    let skip_string = |i: usize| -> Result<usize, String> {
        let quote = chars[i];
        let mut j = i + 1;
        while j < chars.len() {
            if chars[j] == '\\' && quote != '`' {
                j += 2;
                continue;
            }
            if chars[j] == quote {
                return Ok(j + 1);
            }
            j += 1;
        }
        Err(format!("unterminated string in {expr:?}"))
    };
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c == '#' {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '"' || c == '\'' || c == '`' {
            i = skip_string(i)?;
            tokens.push(Token::Str);
        } else if c == '{' {
            let mut j = i + 1;
            loop {
                match chars.get(j) {
                    None => return Err(format!("unclosed `{{` in {expr:?}")),
                    Some('}') => break,
                    Some('"' | '\'' | '`') => j = skip_string(j)?,
                    Some(_) => j += 1,
                }
            }
            tokens.push(Token::Matchers);
            i = j + 1;
        } else if c == '[' {
            let end = chars[i..]
                .iter()
                .position(|&c| c == ']')
                .ok_or_else(|| format!("unclosed `[` in {expr:?}"))?;
            tokens.push(Token::Range(chars[i + 1..i + end].iter().collect()));
            i += end + 1;
        } else if c == '(' {
            tokens.push(Token::Open);
            i += 1;
        } else if c == ')' {
            tokens.push(Token::Close);
            i += 1;
        } else if c.is_ascii_digit()
            || (c == '.' && chars.get(i + 1).is_some_and(char::is_ascii_digit))
        {
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                i += 1;
            }
            tokens.push(Token::Number);
        } else if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < chars.len()
                && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':')
            {
                i += 1;
            }
            tokens.push(Token::Ident(chars[start..i].iter().collect()));
        } else if c == '$' {
            return Err(format!(
                "template variable outside a string or range at byte {i} of {expr:?}"
            ));
        } else {
            tokens.push(Token::Other);
            i += 1;
        }
    }
    Ok(tokens)
}

/// The metrics `expr` selects, in order. Understands strings, label matchers, ranges, function
/// calls, aggregation and vector-matching modifiers (`by (...)`, `on (...)`, ...), `offset` and
/// `bool`; a template variable outside a string or range is an error (it would not survive
/// substitution into valid PromQL).
pub fn selectors(expr: &str) -> Result<Vec<Selector>, String> {
    #[derive(Debug)]
    enum Frame {
        Function(String),
        Group,
        LabelList,
    }
    let tokens = tokenize(expr)?;
    let mut stack: Vec<Frame> = Vec::new();
    let mut out = Vec::new();
    // The aggregation of a `sum by (...) (...)` whose label list is being read.
    let mut pending_aggregation: Option<String> = None;
    // The frame the previous token closed, if the previous token was `)`.
    let mut last_closed: Option<Frame> = None;
    let mut i = 0;
    while i < tokens.len() {
        match &tokens[i] {
            Token::Open => {
                let closed_label_list = matches!(last_closed, Some(Frame::LabelList));
                let frame = match i.checked_sub(1).map(|p| &tokens[p]) {
                    // `sum by (labels) (expr)`: the aggregation encloses `expr`.
                    Some(Token::Close) if closed_label_list && pending_aggregation.is_some() => {
                        Frame::Function(pending_aggregation.take().unwrap_or_default())
                    }
                    Some(Token::Ident(name)) if LABEL_LIST_KEYWORDS.contains(&name.as_str()) => {
                        Frame::LabelList
                    }
                    Some(Token::Ident(name)) if !KEYWORDS.contains(&name.as_str()) => {
                        Frame::Function(name.clone())
                    }
                    _ => Frame::Group,
                };
                stack.push(frame);
            }
            Token::Close => {
                last_closed = Some(
                    stack
                        .pop()
                        .ok_or_else(|| format!("unbalanced `)` in {expr:?}"))?,
                );
                i += 1;
                continue;
            }
            Token::Ident(name) => {
                let in_label_list = matches!(stack.last(), Some(Frame::LabelList));
                if matches!(tokens.get(i + 1), Some(Token::Ident(k)) if k == "by" || k == "without")
                {
                    pending_aggregation = Some(name.clone());
                    i += 1;
                    last_closed = None;
                    continue;
                }
                let is_call = matches!(tokens.get(i + 1), Some(Token::Open));
                let after_offset = matches!(
                    i.checked_sub(1).map(|p| &tokens[p]),
                    Some(Token::Ident(k)) if k == "offset"
                );
                if !in_label_list && !is_call && !after_offset && !KEYWORDS.contains(&name.as_str())
                {
                    let mut next = i + 1;
                    if matches!(tokens.get(next), Some(Token::Matchers)) {
                        next += 1;
                    }
                    let range = match tokens.get(next) {
                        Some(Token::Range(r)) => Some(r.trim().to_owned()),
                        _ => None,
                    };
                    let function = match stack.last() {
                        Some(Frame::Function(f)) => Some(f.clone()),
                        _ => None,
                    };
                    out.push(Selector {
                        metric: name.clone(),
                        range,
                        function,
                    });
                }
            }
            Token::Matchers => {
                // A selector without a metric name (`{__name__=~"..."}`) cannot be checked.
                let named = matches!(i.checked_sub(1).map(|p| &tokens[p]), Some(Token::Ident(_)));
                if !named {
                    return Err(format!("selector without a metric name in {expr:?}"));
                }
            }
            Token::Number | Token::Str | Token::Range(_) | Token::Other => {}
        }
        last_closed = None;
        i += 1;
    }
    if !stack.is_empty() {
        return Err(format!("unbalanced `(` in {expr:?}"));
    }
    Ok(out)
}

/// The metric a `label_values(metric{...}, label)` variable query reads, `None` for other queries
/// (and for `label_values(label)`, which reads every series).
pub fn label_values_metric(query: &str) -> Result<Option<String>, String> {
    let Some(inner) = query
        .trim()
        .strip_prefix("label_values(")
        .and_then(|s| s.strip_suffix(')'))
    else {
        return Ok(None);
    };
    let Some((selector, _label)) = inner.rsplit_once(',') else {
        return Ok(None);
    };
    let found = selectors(selector)?;
    match found.as_slice() {
        [one] => Ok(Some(one.metric.clone())),
        _ => Err(format!("cannot read the metric of {query:?}")),
    }
}

/// A Prometheus metric type as Contract 2 names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricType {
    Counter,
    Gauge,
    Histogram,
}

/// Contract 2's metric table, `name → type`, parsed from `docs/ARCHITECTURE.md` (the Markdown table
/// under the `## Contract 2` heading, first column a back-quoted name, second the type).
pub fn contract_metrics(architecture_md: &str) -> Result<BTreeMap<String, MetricType>, String> {
    let text = format!("\n{architecture_md}");
    let section = text
        .split("\n## ")
        .find(|s| s.starts_with("Contract 2"))
        .ok_or("no `## Contract 2` section in docs/ARCHITECTURE.md")?;
    let mut metrics = BTreeMap::new();
    for line in section.lines().filter(|l| l.trim_start().starts_with('|')) {
        let cells: Vec<&str> = line
            .trim()
            .trim_matches('|')
            .split('|')
            .map(str::trim)
            .collect();
        let Some(name) = cells
            .first()
            .and_then(|c| c.strip_prefix('`'))
            .and_then(|c| c.strip_suffix('`'))
        else {
            continue; // header or separator row
        };
        let kind = match cells.get(1).copied() {
            Some("counter") => MetricType::Counter,
            Some("gauge") => MetricType::Gauge,
            Some("histogram") => MetricType::Histogram,
            other => return Err(format!("metric `{name}`: unknown type {other:?}")),
        };
        if metrics.insert(name.to_owned(), kind).is_some() {
            return Err(format!("metric `{name}` listed twice in Contract 2"));
        }
    }
    if metrics.is_empty() {
        return Err("Contract 2 has no metric rows".to_owned());
    }
    Ok(metrics)
}

/// `metric → [(label, listed values)]`, see [`contract_labels`].
pub type ContractLabels = BTreeMap<String, Vec<(String, Vec<String>)>>;

/// The extra labels of each Contract 2 metric with the values the contract lists for them:
/// `metric → [(label, values)]`. Values come from the row's "extra labels" cell (`` `within`
/// (`true`/`false`) ``), else, for a row's only label, from the back-quoted words of its "meaning"
/// cell (`outcome`: `success`, `error`, ...), else from a section line naming the label
/// (``SLO names (`slo` label): `cold_start`, ...``). A label the contract lists no values for gets
/// an empty list.
pub fn contract_labels(architecture_md: &str) -> Result<ContractLabels, String> {
    fn backticked(cell: &str) -> Vec<(String, usize)> {
        // (token, parenthesis depth at the token)
        let mut out = Vec::new();
        let mut depth = 0usize;
        let mut chars = cell.chars();
        while let Some(c) = chars.next() {
            match c {
                '(' => depth += 1,
                ')' => depth = depth.saturating_sub(1),
                '`' => {
                    let token: String = chars.by_ref().take_while(|&c| c != '`').collect();
                    out.push((token, depth));
                }
                _ => {}
            }
        }
        out
    }
    let text = format!("\n{architecture_md}");
    let section = text
        .split("\n## ")
        .find(|s| s.starts_with("Contract 2"))
        .ok_or("no `## Contract 2` section in docs/ARCHITECTURE.md")?;
    // Section lines such as "SLO names (`slo` label): `cold_start`, `error_rate`."
    let mut named_values: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in section.lines().filter(|l| !l.trim_start().starts_with('|')) {
        for part in line.split(". ") {
            if let Some((head, values)) = part.split_once(" label):") {
                let label = head.rsplit('`').nth(1).unwrap_or("").to_owned();
                let values = backticked(values).into_iter().map(|(v, _)| v).collect();
                named_values.insert(label, values);
            }
        }
    }
    let mut out = BTreeMap::new();
    for line in section.lines().filter(|l| l.trim_start().starts_with('|')) {
        let cells: Vec<&str> = line
            .trim()
            .trim_matches('|')
            .split('|')
            .map(str::trim)
            .collect();
        let Some(name) = cells
            .first()
            .and_then(|c| c.strip_prefix('`'))
            .and_then(|c| c.strip_suffix('`'))
        else {
            continue;
        };
        let mut labels: Vec<(String, Vec<String>)> = Vec::new();
        for (token, depth) in backticked(cells.get(2).copied().unwrap_or("")) {
            match labels.last_mut() {
                Some((_, values)) if depth > 0 => values.push(token),
                _ => labels.push((token, Vec::new())),
            }
        }
        if let [(_, values)] = labels.as_mut_slice()
            && values.is_empty()
        {
            *values = backticked(cells.get(3).copied().unwrap_or(""))
                .into_iter()
                .map(|(v, _)| v)
                .collect();
        }
        for (label, values) in &mut labels {
            if values.is_empty()
                && let Some(v) = named_values.get(label)
            {
                values.clone_from(v);
            }
        }
        out.insert(name.to_owned(), labels);
    }
    Ok(out)
}

/// Percent-encodes `s` for a URL query value (RFC 3986 unreserved characters pass through).
pub fn url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Runs every query as an instant query against the Prometheus at `base_url`
/// (`GET /api/v1/query`) and returns one line per query that failed or returned no series: empty
/// when every target of every dashboard has data. For the end-to-end test that scraped the collector.
pub fn queries_without_data(base_url: &str, queries: &[Query]) -> Vec<String> {
    let base = base_url.trim_end_matches('/');
    let mut problems = Vec::new();
    for q in queries {
        let what = format!("{} › {:?} target {}", q.dashboard, q.panel_title, q.ref_id);
        let url = format!("{base}/api/v1/query?query={}", url_encode(&q.expr));
        let response = match crate::http::get(&url, std::time::Duration::from_secs(10)) {
            Ok(r) => r,
            Err(e) => {
                problems.push(format!("{what}: request failed: {e}"));
                continue;
            }
        };
        let body: Value = match serde_json::from_slice(&response.body) {
            Ok(v) => v,
            Err(e) => {
                problems.push(format!("{what}: HTTP {} not JSON ({e})", response.status));
                continue;
            }
        };
        if body.get("status").and_then(Value::as_str) != Some("success") {
            problems.push(format!("{what}: {} — {}", q.expr, body));
            continue;
        }
        let series = body
            .pointer("/data/result")
            .and_then(Value::as_array)
            .map_or(0, Vec::len);
        if series == 0 {
            problems.push(format!("{what}: no data for {}", q.expr));
        }
    }
    problems
}

/// Contract 2 read from the repository's `docs/ARCHITECTURE.md`; panics with the reason when it
/// cannot be read or parsed.
pub fn repo_contract_metrics() -> BTreeMap<String, MetricType> {
    let path = crate::repo_root().join("docs/ARCHITECTURE.md");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    contract_metrics(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The series a selector names, resolved against the contract: `(base metric, type, series kind)`,
/// where a histogram's `_bucket`/`_sum`/`_count` series resolve to the histogram. `None` when the
/// name is not in the contract.
pub fn resolve_metric<'a>(
    contract: &'a BTreeMap<String, MetricType>,
    series: &str,
) -> Option<(&'a str, MetricType)> {
    if let Some((name, kind)) = contract.get_key_value(series) {
        return (*kind != MetricType::Histogram).then_some((name.as_str(), *kind));
    }
    ["_bucket", "_sum", "_count"].iter().find_map(|suffix| {
        let base = series.strip_suffix(suffix)?;
        let (name, kind) = contract.get_key_value(base)?;
        (*kind == MetricType::Histogram).then_some((name.as_str(), *kind))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sel(metric: &str, range: Option<&str>, function: Option<&str>) -> Selector {
        Selector {
            metric: metric.into(),
            range: range.map(Into::into),
            function: function.map(Into::into),
        }
    }

    #[test]
    fn selectors_finds_metrics_ranges_and_enclosing_functions() {
        assert_eq!(
            selectors("max by (slo, window) (b_ratio) + sum without (x) (rate(c_total[1m])) + min(d) by (e)").unwrap(),
            vec![
                sel("b_ratio", None, Some("max")),
                sel("c_total", Some("1m"), Some("rate")),
                sel("d", None, Some("min"))
            ]
        );
        let expr = r#"histogram_quantile(0.99, sum by (function, le) (rate(lambdawatch_init_duration_seconds_bucket{function=~"$function", x="a{b}"}[$__rate_interval])))"#;
        assert_eq!(
            selectors(expr).unwrap(),
            vec![sel(
                "lambdawatch_init_duration_seconds_bucket",
                Some("$__rate_interval"),
                Some("rate")
            )]
        );
        let expr = r#"sum(rate(a_total[5m])) / on (function) group_left (slo) max(b_ratio offset 1h) > bool 0.5 * 86400"#;
        assert_eq!(
            selectors(expr).unwrap(),
            vec![
                sel("a_total", Some("5m"), Some("rate")),
                sel("b_ratio", None, Some("max"))
            ]
        );
        assert_eq!(
            selectors("0.8 * (max without (version) (t_seconds))").unwrap(),
            vec![sel("t_seconds", None, Some("max"))]
        );
    }

    #[test]
    fn selectors_rejects_what_it_cannot_check() {
        assert!(selectors("rate(x[5m]").unwrap_err().contains("unbalanced"));
        assert!(selectors("x{a=\"b\"").unwrap_err().contains("unclosed"));
        assert!(
            selectors("$metric")
                .unwrap_err()
                .contains("template variable")
        );
        assert!(
            selectors("{__name__=~\"lambdawatch_.*\"}")
                .unwrap_err()
                .contains("without a metric name")
        );
    }

    #[test]
    fn substitute_handles_every_variable_form_and_reports_unknown_ones() {
        let values = BTreeMap::from([
            ("__rate_interval".to_owned(), "1m".to_owned()),
            ("function".to_owned(), "orders".to_owned()),
            ("datasource".to_owned(), String::new()),
        ]);
        assert_eq!(
            substitute(r#"rate(x{f="$function",g="${function:regex}",h="[[function]]"}[$__rate_interval])"#, &values).unwrap(),
            r#"rate(x{f="orders",g="orders",h="orders"}[1m])"#
        );
        assert_eq!(
            substitute("a[5m] $ ${datasource}", &values).unwrap(),
            "a[5m] $ "
        );
        assert!(
            substitute("x{v=\"$version\"}", &values)
                .unwrap_err()
                .contains("`$version`")
        );
    }

    #[test]
    fn promql_queries_substitutes_all_values_and_function() {
        let json = json!({
            "templating": {"list": [
                {"name": "datasource", "type": "datasource", "query": "prometheus"},
                {"name": "function", "type": "query", "query": "label_values(m_total, function)"},
                {"name": "version", "type": "query", "includeAll": true, "allValue": ".*", "multi": true},
            ]},
            "panels": [{"id": 1, "title": "P", "targets": [
                {"refId": "A", "expr": "sum(rate(m_total{function=\"$function\", version=~\"$version\"}[$__rate_interval]))"}
            ]}]
        });
        let d = Dashboard {
            name: "d".into(),
            path: "d.json".into(),
            json,
        };
        let q = promql_queries(&d, "orders").unwrap();
        assert_eq!(q.len(), 1);
        assert_eq!(
            q[0].expr,
            "sum(rate(m_total{function=\"orders\", version=~\".*\"}[1m]))"
        );
        assert_eq!(
            (q[0].panel_title.as_str(), q[0].ref_id.as_str()),
            ("P", "A")
        );
    }

    #[test]
    fn contract_table_parses_names_and_types() {
        let md = "# x\n## Contract 1\n| `a_total` | counter | | |\n## Contract 2: metrics\n\n| metric | type | extra | meaning |\n|---|---|---|---|\n| `m_total` | counter | `x` | m |\n| `h_seconds` | histogram | | h |\n| `g` | gauge | | g |\n\n## Contract 3\n| `z` | counter |\n";
        let c = contract_metrics(md).unwrap();
        assert_eq!(c.len(), 3);
        assert_eq!(
            resolve_metric(&c, "h_seconds_bucket"),
            Some(("h_seconds", MetricType::Histogram))
        );
        assert_eq!(
            resolve_metric(&c, "h_seconds"),
            None,
            "a histogram has no bare series"
        );
        assert_eq!(resolve_metric(&c, "m_total_bucket"), None);
        assert_eq!(resolve_metric(&c, "g"), Some(("g", MetricType::Gauge)));
        assert!(
            contract_metrics("## Contract 2\n| `m` | summary |")
                .unwrap_err()
                .contains("unknown type")
        );
    }

    #[test]
    fn contract_labels_reads_values_from_cells_and_section_lines() {
        let md = "## Contract 2\n\n| metric | type | extra labels | meaning |\n|---|---|---|---|\n\
                  | `a_total` | counter | `outcome` | by outcome (`success`, `error`) |\n\
                  | `b_total` | counter | `within` (`true`/`false`) | x |\n\
                  | `c_total` | counter | `protocol` (`grpc`/`http`), `signal`, `result` | |\n\
                  | `d` | gauge | `slo`, `window` | (`not`, `these`) |\n\
                  | `e` | gauge | | |\n\n\
                  SLO names (`slo` label): `cold_start`, `error_rate`.\nWindows (`window` label): `5m`, `1h`.\n";
        let c = contract_labels(md).unwrap();
        let l = |m: &str| {
            c[m].iter()
                .map(|(k, v)| (k.as_str(), v.join("/")))
                .collect::<Vec<_>>()
        };
        assert_eq!(l("a_total"), [("outcome", "success/error".to_owned())]);
        assert_eq!(l("b_total"), [("within", "true/false".to_owned())]);
        assert_eq!(
            l("c_total"),
            [
                ("protocol", "grpc/http".to_owned()),
                ("signal", String::new()),
                ("result", String::new())
            ]
        );
        assert_eq!(
            l("d"),
            [
                ("slo", "cold_start/error_rate".to_owned()),
                ("window", "5m/1h".to_owned())
            ]
        );
        assert!(c["e"].is_empty());
    }

    #[test]
    fn url_encode_escapes_promql() {
        assert_eq!(
            url_encode("sum(rate(a{b=~\"c|d\"}[1m])) * 60"),
            "sum%28rate%28a%7Bb%3D~%22c%7Cd%22%7D%5B1m%5D%29%29%20%2A%2060"
        );
    }

    #[test]
    fn label_values_metric_reads_the_selector() {
        assert_eq!(
            label_values_metric(
                "label_values(lambdawatch_invocations_total{function=\"$function\"}, version)"
            )
            .unwrap(),
            Some("lambdawatch_invocations_total".to_owned())
        );
        assert_eq!(label_values_metric("label_values(function)").unwrap(), None);
        assert_eq!(label_values_metric("query_result(up)").unwrap(), None);
    }
}
