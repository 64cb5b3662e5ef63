//! Label and field selectors, parsed and evaluated as the real API server does
//! (`k8s.io/apimachinery/pkg/labels` and `.../fields`).

use std::collections::BTreeSet;

use serde_json::Value;

use crate::resource::ResourceKind;

/// A parsed `labelSelector` query parameter.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct LabelSelector {
    requirements: Vec<Requirement>,
}

#[derive(Debug, Clone, PartialEq)]
struct Requirement {
    key: String,
    op: LabelOp,
    values: BTreeSet<String>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum LabelOp {
    Exists,
    DoesNotExist,
    Equals,
    NotEquals,
    In,
    NotIn,
    GreaterThan,
    LessThan,
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Ident(String),
    Bang,
    Eq,
    DoubleEq,
    NotEq,
    Gt,
    Lt,
    Open,
    Close,
    Comma,
}

fn lex(input: &str) -> Vec<Token> {
    let chars: Vec<char> = input.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    let special = |c: char| matches!(c, '!' | '=' | '(' | ')' | ',' | '>' | '<');
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        let next = chars.get(i + 1).copied();
        match c {
            '!' if next == Some('=') => {
                out.push(Token::NotEq);
                i += 2;
            }
            '!' => {
                out.push(Token::Bang);
                i += 1;
            }
            '=' if next == Some('=') => {
                out.push(Token::DoubleEq);
                i += 2;
            }
            '=' => {
                out.push(Token::Eq);
                i += 1;
            }
            '>' => {
                out.push(Token::Gt);
                i += 1;
            }
            '<' => {
                out.push(Token::Lt);
                i += 1;
            }
            '(' => {
                out.push(Token::Open);
                i += 1;
            }
            ')' => {
                out.push(Token::Close);
                i += 1;
            }
            ',' => {
                out.push(Token::Comma);
                i += 1;
            }
            _ => {
                let start = i;
                while i < chars.len() && !chars[i].is_whitespace() && !special(chars[i]) {
                    i += 1;
                }
                out.push(Token::Ident(chars[start..i].iter().collect()));
            }
        }
    }
    out
}

struct Parser {
    tokens: Vec<Token>,
    pos: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.pos)
    }

    fn next(&mut self) -> Option<Token> {
        let t = self.tokens.get(self.pos).cloned();
        self.pos += 1;
        t
    }

    fn at_term_end(&self) -> bool {
        matches!(self.peek(), None | Some(Token::Comma))
    }

    fn requirement(&mut self) -> Result<Requirement, String> {
        if self.peek() == Some(&Token::Bang) {
            self.pos += 1;
            let key = self.key()?;
            if !self.at_term_end() {
                return Err(format!(
                    "found '{}', expected: ',' or 'end of string'",
                    self.describe()
                ));
            }
            return Ok(Requirement {
                key,
                op: LabelOp::DoesNotExist,
                values: BTreeSet::new(),
            });
        }
        let key = self.key()?;
        if self.at_term_end() {
            return Ok(Requirement {
                key,
                op: LabelOp::Exists,
                values: BTreeSet::new(),
            });
        }
        let op = match self.next() {
            Some(Token::Eq | Token::DoubleEq) => LabelOp::Equals,
            Some(Token::NotEq) => LabelOp::NotEquals,
            Some(Token::Gt) => LabelOp::GreaterThan,
            Some(Token::Lt) => LabelOp::LessThan,
            Some(Token::Ident(s)) if s == "in" => LabelOp::In,
            Some(Token::Ident(s)) if s == "notin" => LabelOp::NotIn,
            other => {
                return Err(format!(
                    "found '{}', expected: in, notin, =, ==, !=, gt, lt",
                    describe(other.as_ref())
                ));
            }
        };
        let values = match op {
            LabelOp::In | LabelOp::NotIn => self.set()?,
            _ => {
                let v = if self.at_term_end() {
                    String::new()
                } else {
                    match self.next() {
                        Some(Token::Ident(v)) => v,
                        other => {
                            return Err(format!(
                                "found '{}', expected: identifier",
                                describe(other.as_ref())
                            ));
                        }
                    }
                };
                if matches!(op, LabelOp::GreaterThan | LabelOp::LessThan) {
                    if v.parse::<i64>().is_err() {
                        return Err(format!(
                            "for 'Gt', 'Lt' operators, the value must be an integer: {v:?}"
                        ));
                    }
                } else {
                    validate_label_value(&v)?;
                }
                BTreeSet::from([v])
            }
        };
        if !self.at_term_end() {
            return Err(format!(
                "found '{}', expected: ',' or 'end of string'",
                self.describe()
            ));
        }
        Ok(Requirement { key, op, values })
    }

    fn describe(&self) -> String {
        describe(self.peek())
    }

    fn key(&mut self) -> Result<String, String> {
        match self.next() {
            Some(Token::Ident(k)) => {
                validate_label_key(&k)?;
                Ok(k)
            }
            other => Err(format!(
                "found '{}', expected: identifier",
                describe(other.as_ref())
            )),
        }
    }

    fn set(&mut self) -> Result<BTreeSet<String>, String> {
        if self.next() != Some(Token::Open) {
            return Err("found something else, expected: '('".to_string());
        }
        let mut values = BTreeSet::new();
        loop {
            match self.next() {
                Some(Token::Ident(v)) => {
                    validate_label_value(&v)?;
                    values.insert(v);
                    match self.next() {
                        Some(Token::Comma) => continue,
                        Some(Token::Close) => break,
                        other => {
                            return Err(format!(
                                "found '{}', expected: ',' or ')'",
                                describe(other.as_ref())
                            ));
                        }
                    }
                }
                Some(Token::Close) => break,
                Some(Token::Comma) => {
                    // `(a,,b)` and `(,a)` carry an empty value, which the real parser accepts.
                    values.insert(String::new());
                }
                other => {
                    return Err(format!(
                        "found '{}', expected: identifier",
                        describe(other.as_ref())
                    ));
                }
            }
        }
        if values.is_empty() {
            return Err("for 'in', 'notin' operators, values set can't be empty".to_string());
        }
        Ok(values)
    }
}

fn describe(t: Option<&Token>) -> String {
    match t {
        None => "end of string".to_string(),
        Some(Token::Ident(s)) => s.clone(),
        Some(Token::Bang) => "!".to_string(),
        Some(Token::Eq) => "=".to_string(),
        Some(Token::DoubleEq) => "==".to_string(),
        Some(Token::NotEq) => "!=".to_string(),
        Some(Token::Gt) => ">".to_string(),
        Some(Token::Lt) => "<".to_string(),
        Some(Token::Open) => "(".to_string(),
        Some(Token::Close) => ")".to_string(),
        Some(Token::Comma) => ",".to_string(),
    }
}

fn is_name_part(s: &str, max: usize) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= max
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

fn validate_label_key(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    let prefix_ok = prefix.is_none_or(|p| {
        !p.is_empty()
            && p.len() <= 253
            && p.split('.').all(|part| {
                let b = part.as_bytes();
                !b.is_empty()
                    && b[0].is_ascii_alphanumeric()
                    && b[b.len() - 1].is_ascii_alphanumeric()
                    && b.iter()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
            })
    });
    if prefix_ok && is_name_part(name, 63) {
        Ok(())
    } else {
        Err(format!(
            "invalid label key {key:?}: name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character"
        ))
    }
}

fn validate_label_value(v: &str) -> Result<(), String> {
    if v.is_empty() || is_name_part(v, 63) {
        Ok(())
    } else {
        Err(format!(
            "invalid label value: {v:?}: a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character"
        ))
    }
}

impl LabelSelector {
    /// Parses the `labelSelector` syntax: `k=v`, `k==v`, `k!=v`, `k`, `!k`,
    /// `k in (a,b)`, `k notin (a,b)`, `k>1`, `k<1`, joined by commas.
    pub(crate) fn parse(input: &str) -> Result<LabelSelector, String> {
        let tokens = lex(input);
        if tokens.is_empty() {
            return Ok(LabelSelector::default());
        }
        let mut p = Parser { tokens, pos: 0 };
        let mut requirements = Vec::new();
        loop {
            requirements.push(
                p.requirement()
                    .map_err(|e| format!("unable to parse requirement: {e}"))?,
            );
            match p.next() {
                None => break,
                Some(Token::Comma) => {
                    if p.peek().is_none() {
                        return Err("unable to parse requirement: found 'end of string', expected: identifier".into());
                    }
                }
                other => {
                    return Err(format!(
                        "found '{}', expected: ',' or 'end of string'",
                        describe(other.as_ref())
                    ));
                }
            }
        }
        Ok(LabelSelector { requirements })
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    /// Whether an object's `metadata.labels` satisfy every requirement.
    pub(crate) fn matches(&self, obj: &Value) -> bool {
        let labels = obj.pointer("/metadata/labels").and_then(Value::as_object);
        self.requirements.iter().all(|r| {
            let v = labels.and_then(|l| l.get(&r.key)).and_then(Value::as_str);
            match r.op {
                LabelOp::Exists => v.is_some(),
                LabelOp::DoesNotExist => v.is_none(),
                LabelOp::Equals | LabelOp::In => v.is_some_and(|v| r.values.contains(v)),
                LabelOp::NotEquals | LabelOp::NotIn => v.is_none_or(|v| !r.values.contains(v)),
                LabelOp::GreaterThan | LabelOp::LessThan => {
                    let Some(have) = v.and_then(|v| v.parse::<i64>().ok()) else {
                        return false;
                    };
                    r.values
                        .iter()
                        .filter_map(|w| w.parse::<i64>().ok())
                        .all(|want| {
                            if r.op == LabelOp::GreaterThan {
                                have > want
                            } else {
                                have < want
                            }
                        })
                }
            }
        })
    }
}

/// A parsed `fieldSelector` query parameter.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct FieldSelector {
    terms: Vec<FieldTerm>,
}

#[derive(Debug, Clone, PartialEq)]
struct FieldTerm {
    field: String,
    negate: bool,
    value: String,
}

fn split_unescaped(s: &str, sep: char) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut escaped = false;
    for c in s.chars() {
        if escaped {
            cur.push('\\');
            cur.push(c);
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == sep {
            out.push(std::mem::take(&mut cur));
        } else {
            cur.push(c);
        }
    }
    if escaped {
        cur.push('\\');
    }
    out.push(cur);
    out
}

fn unescape_field_value(s: &str) -> Result<String, String> {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some(e @ ('\\' | ',' | '=')) => out.push(e),
                Some(e) => return Err(format!("invalid escape sequence: \\{e}")),
                None => return Err("invalid trailing escape sequence".to_string()),
            }
        } else if c == ',' || c == '=' {
            return Err(format!(
                "invalid field selector value {s:?}: unescaped {c:?}"
            ));
        } else {
            out.push(c);
        }
    }
    Ok(out)
}

impl FieldSelector {
    /// Parses the `fieldSelector` syntax: `field=value`, `field==value`,
    /// `field!=value`, joined by commas; `\,`, `\=` and `\\` escape values.
    /// Unsupported fields for `kind` are rejected with the real server's
    /// message, `field label not supported: X`.
    pub(crate) fn parse(input: &str, kind: ResourceKind) -> Result<FieldSelector, String> {
        if input.trim().is_empty() {
            return Ok(FieldSelector::default());
        }
        let mut terms = Vec::new();
        for term in split_unescaped(input, ',') {
            let term = term.trim();
            let (field, negate, raw) = if let Some((f, v)) = term.split_once("!=") {
                (f, true, v)
            } else if let Some((f, v)) = term.split_once("==") {
                (f, false, v)
            } else if let Some((f, v)) = term.split_once('=') {
                (f, false, v)
            } else {
                return Err(format!(
                    "invalid selector: '{term}'; can't understand '{term}'"
                ));
            };
            let field = field.trim();
            if field.is_empty() {
                return Err(format!(
                    "invalid selector: '{term}'; field name must not be empty"
                ));
            }
            let supported = field == "metadata.name"
                || field == "metadata.namespace"
                || kind.extra_field_labels().contains(&field);
            if !supported {
                return Err(format!("field label not supported: {field}"));
            }
            terms.push(FieldTerm {
                field: field.to_string(),
                negate,
                value: unescape_field_value(raw)?,
            });
        }
        Ok(FieldSelector { terms })
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.terms.is_empty()
    }

    /// Whether the object's field values satisfy every term.
    pub(crate) fn matches(&self, obj: &Value) -> bool {
        self.terms.iter().all(|t| {
            let have = field_value(obj, &t.field);
            (have == t.value) != t.negate
        })
    }

    /// A selector for `metadata.name=<name>`.
    pub(crate) fn with_name(name: &str) -> FieldSelector {
        FieldSelector {
            terms: vec![FieldTerm {
                field: "metadata.name".to_string(),
                negate: false,
                value: name.to_string(),
            }],
        }
    }

    pub(crate) fn and(mut self, other: FieldSelector) -> FieldSelector {
        self.terms.extend(other.terms);
        self
    }
}

/// The string form of a field, as the real server's `GetAttrs` produces it:
/// missing strings are `""`, booleans are `"true"`/`"false"`.
fn field_value(obj: &Value, field: &str) -> String {
    // An Event's `source` selects by its component.
    let field = match field {
        "source" => "source.component",
        "deprecatedSource" => "deprecatedSource.component",
        f => f,
    };
    let pointer = format!("/{}", field.replace('.', "/"));
    match obj.pointer(&pointer) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Bool(b)) => b.to_string(),
        Some(Value::Number(n)) => n.to_string(),
        _ => match field {
            "spec.unschedulable" | "spec.hostNetwork" => "false".to_string(),
            _ => String::new(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(labels: Value) -> Value {
        json!({"metadata": {"name": "a", "namespace": "ns", "labels": labels}})
    }

    #[test]
    fn label_selector_forms() {
        let o = obj(json!({"app": "web", "tier": "1"}));
        let cases = [
            ("", true),
            ("app=web", true),
            ("app==web", true),
            ("app = web , tier=1", true),
            ("app!=web", false),
            ("app!=db", true),
            ("missing!=x", true),
            ("app", true),
            ("!app", false),
            ("!missing", true),
            ("app in (web, db)", true),
            ("app notin (web,db)", false),
            ("missing notin (x)", true),
            ("tier>0", true),
            ("tier<1", false),
            ("app=web,tier=2", false),
            ("app=", false),
        ];
        for (sel, want) in cases {
            let s = LabelSelector::parse(sel).unwrap_or_else(|e| panic!("parse {sel:?}: {e}"));
            assert_eq!(s.matches(&o), want, "selector {sel:?}");
        }
    }

    #[test]
    fn label_selector_errors() {
        for bad in [
            "app=web,",
            "=x",
            "app in ()",
            "app in web",
            "app=(x)",
            "a b",
            "tier>x",
            "-bad=1",
            "app=bad value!",
        ] {
            assert!(
                LabelSelector::parse(bad).is_err(),
                "{bad:?} should not parse"
            );
        }
    }

    #[test]
    fn field_selector_forms() {
        let o =
            json!({"metadata": {"name": "a,b", "namespace": "ns"}, "spec": {"type": "NodePort"}});
        let k = ResourceKind::Service;
        let cases = [
            ("metadata.name=a\\,b", true),
            ("metadata.namespace==ns", true),
            ("metadata.namespace!=ns", false),
            ("spec.type=NodePort,metadata.namespace=ns", true),
            ("spec.clusterIP=", true),
        ];
        for (sel, want) in cases {
            let s = FieldSelector::parse(sel, k).unwrap_or_else(|e| panic!("parse {sel:?}: {e}"));
            assert_eq!(s.matches(&o), want, "selector {sel:?}");
        }
        let err = FieldSelector::parse("spec.foo=1", k).expect_err("unsupported field");
        assert_eq!(err, "field label not supported: spec.foo");
        assert!(FieldSelector::parse("metadata.name", k).is_err());
        assert!(FieldSelector::parse("metadata.name=a\\x", k).is_err());
        let node = json!({"metadata": {"name": "n"}});
        let s = FieldSelector::parse("spec.unschedulable=false", ResourceKind::Node)
            .expect("node field");
        assert!(s.matches(&node));
    }
}
