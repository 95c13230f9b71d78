//! Read conversation datasets from JSONL, JSON and CSV/TSV files.
//!
//! The column convention is detected once per file, from the CSV header or the first JSON
//! object, by these keys (matched case-insensitively, first match wins):
//!
//! | keys | prompt | response |
//! |---|---|---|
//! | `messages` | list of `{role, content}` | the assistant turns |
//! | `conversations` | ShareGPT list of `{from, value}` (`human`/`gpt`/`system`) | the `gpt` turns |
//! | `instruction` (+ `input` or `context`) | instruction, then a blank line and the input when non-empty | `output`, `response` or `completion` |
//! | `prompt` | prompt | `response`, `chosen`, `completion` or `output` |
//! | `goal` | goal | `target` |
//! | `question` | question | `answer` |
//!
//! A `system` key becomes a system message and `category` the conversation's category. The
//! response is optional: prompt-only files (evaluation prompts) give one-turn conversations.
//! Anything else takes an explicit [`FieldMap`]. Once the layout is fixed, every row must
//! follow it: a malformed row (bad JSON, missing field, wrong type, empty prompt or response)
//! is a [`DataError::Row`] naming the file and the 1-based line, unless
//! [`ReadOptions::skip_bad_rows`] is set, in which case [`ReadReport`] counts it. A JSON
//! document that does not parse at all fails as a whole (its rows cannot be told apart).

pub use super::records::Format;
use super::records::{Record, read_records};
use super::{Conversation, DataError, Message};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::path::Path;

/// Explicit column names for files that follow none of the detected conventions.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(deny_unknown_fields)]
pub struct FieldMap {
    pub prompt: String,
    #[serde(default)]
    pub response: Option<String>,
    #[serde(default)]
    pub system: Option<String>,
    #[serde(default)]
    pub category: Option<String>,
}

/// How to read a file. The default detects the format from the extension and the columns from
/// the conventions, fails on the first bad row and reads everything.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct ReadOptions {
    pub format: Option<Format>,
    pub fields: Option<FieldMap>,
    pub skip_bad_rows: bool,
    /// Stop after this many good conversations.
    pub limit: Option<usize>,
}

/// What a read produced.
#[derive(Clone, Debug, PartialEq)]
pub struct ReadReport {
    pub conversations: Vec<Conversation>,
    /// Rows skipped as malformed (only with `skip_bad_rows`).
    pub skipped: usize,
    /// The messages of the first few skipped rows (at most [`MAX_REPORTED_ERRORS`]).
    pub first_errors: Vec<String>,
}

pub const MAX_REPORTED_ERRORS: usize = 5;

/// The resolved column layout of one file.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Layout {
    Messages {
        key: String,
        category: Option<String>,
    },
    ShareGpt {
        key: String,
        category: Option<String>,
    },
    Fields {
        prompt: String,
        input: Option<String>,
        response: Option<String>,
        system: Option<String>,
        category: Option<String>,
    },
}

/// Read a file with default options: detect everything, fail on the first bad row.
pub fn read_file(path: &Path) -> Result<Vec<Conversation>, DataError> {
    Ok(read_conversations(path, &ReadOptions::default())?.conversations)
}

/// Read a file into conversations; see the module docs for the conventions.
pub fn read_conversations(path: &Path, opts: &ReadOptions) -> Result<ReadReport, DataError> {
    let records = read_records(path, opts.format)?;
    convert_records(path, records, opts)
}

/// [`read_conversations`] on text in memory (tests, stdin); `path` names it in errors.
pub fn parse_conversations(
    path: &Path,
    text: &str,
    format: Format,
    opts: &ReadOptions,
) -> Result<ReadReport, DataError> {
    let records = super::records::parse_records(path, text, format)?;
    convert_records(path, records, opts)
}

fn convert_records(
    path: &Path,
    records: Vec<Result<Record, DataError>>,
    opts: &ReadOptions,
) -> Result<ReadReport, DataError> {
    let mut layout = opts.fields.as_ref().map(|f| Layout::Fields {
        prompt: f.prompt.clone(),
        input: None,
        response: f.response.clone(),
        system: f.system.clone(),
        category: f.category.clone(),
    });
    let mut report = ReadReport { conversations: Vec::new(), skipped: 0, first_errors: Vec::new() };
    for rec in records {
        if opts.limit.is_some_and(|n| report.conversations.len() >= n) {
            break;
        }
        let converted = match rec {
            Ok(rec) => {
                if layout.is_none() {
                    // A file whose columns match no convention is a file error, not a row error.
                    layout = Some(detect_layout(path, &rec)?);
                }
                layout.as_ref().map_or_else(|| Err(rec.error(path, "no layout")), |l| convert(path, &rec, l))
            }
            Err(e) => Err(e),
        };
        match converted {
            Ok(c) => report.conversations.push(c),
            Err(e) if opts.skip_bad_rows => {
                report.skipped += 1;
                if report.first_errors.len() < MAX_REPORTED_ERRORS {
                    report.first_errors.push(e.to_string());
                }
            }
            Err(e) => return Err(e),
        }
    }
    Ok(report)
}

/// The actual key in `rec` matching one of `names` case-insensitively (first name wins).
fn find_key(rec: &Record, names: &[&str]) -> Option<String> {
    names.iter().find_map(|n| rec.fields.keys().find(|k| k.eq_ignore_ascii_case(n)).cloned())
}

fn detect_layout(path: &Path, rec: &Record) -> Result<Layout, DataError> {
    let category = find_key(rec, &["category"]);
    let system = find_key(rec, &["system"]);
    if let Some(key) = find_key(rec, &["messages"]) {
        return Ok(Layout::Messages { key, category });
    }
    if let Some(key) = find_key(rec, &["conversations"]) {
        return Ok(Layout::ShareGpt { key, category });
    }
    let conventions: [(&str, &[&str], &[&str]); 4] = [
        ("instruction", &["output", "response", "completion"], &["input", "context"]),
        ("prompt", &["response", "chosen", "completion", "output"], &[]),
        ("goal", &["target"], &[]),
        ("question", &["answer"], &[]),
    ];
    for (prompt, responses, inputs) in conventions {
        if let Some(prompt) = find_key(rec, &[prompt]) {
            return Ok(Layout::Fields {
                prompt,
                input: find_key(rec, inputs),
                response: find_key(rec, responses),
                system,
                category,
            });
        }
    }
    let keys: Vec<&str> = rec.fields.keys().map(String::as_str).collect();
    Err(DataError::file(
        path,
        format!(
            "no known column convention in keys {keys:?} (expected messages, conversations, \
             instruction, prompt, goal or question); give an explicit field mapping"
        ),
    ))
}

fn convert(path: &Path, rec: &Record, layout: &Layout) -> Result<Conversation, DataError> {
    match layout {
        Layout::Messages { key, category } => {
            let messages = chat_list(path, rec, key, "role", "content", |r| Some(r.to_string()))?;
            finish(path, rec, messages, category.as_deref())
        }
        Layout::ShareGpt { key, category } => {
            let messages = chat_list(path, rec, key, "from", "value", sharegpt_role)?;
            finish(path, rec, messages, category.as_deref())
        }
        Layout::Fields { prompt, input, response, system, category } => {
            let mut text = rec.string(path, prompt)?.to_string();
            if let Some(input) = input
                && let Some(extra) = rec.opt_string(path, input)?
                && !extra.trim().is_empty()
            {
                text = format!("{text}\n\n{extra}");
            }
            let mut messages = Vec::new();
            if let Some(system) = system
                && let Some(s) = rec.opt_string(path, system)?
                && !s.trim().is_empty()
            {
                messages.push(Message::new("system", s));
            }
            messages.push(Message::new("user", text));
            if let Some(response) = response {
                messages.push(Message::new("assistant", rec.string(path, response)?));
            }
            finish(path, rec, messages, category.as_deref())
        }
    }
}

fn sharegpt_role(from: &str) -> Option<String> {
    match from.to_ascii_lowercase().as_str() {
        "human" | "user" => Some("user".into()),
        "gpt" | "assistant" | "bot" | "chatgpt" => Some("assistant".into()),
        "system" => Some("system".into()),
        _ => None,
    }
}

/// Parse a list of chat turns stored under `key`, each an object with a role and a content.
fn chat_list(
    path: &Path,
    rec: &Record,
    key: &str,
    role_key: &str,
    content_key: &str,
    map_role: impl Fn(&str) -> Option<String>,
) -> Result<Vec<Message>, DataError> {
    let items = match rec.fields.get(key) {
        None => return Err(rec.error(path, format!("missing field `{key}`"))),
        Some(Value::Array(items)) => items,
        // A CSV cell may hold the list as JSON text.
        Some(Value::String(s)) => {
            return match serde_json::from_str::<Value>(s) {
                Ok(v @ Value::Array(_)) => {
                    let mut r = rec.clone();
                    r.fields.insert(key.to_string(), v);
                    chat_list(path, &r, key, role_key, content_key, map_role)
                }
                _ => Err(rec.error(path, format!("field `{key}`: expected a list of turns"))),
            };
        }
        Some(v) => {
            let found = super::records::type_name(v);
            return Err(rec.error(path, format!("field `{key}`: expected a list, found {found}")));
        }
    };
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let field = |k: &str| match item.get(k) {
            Some(Value::String(s)) => Ok(s.as_str()),
            Some(v) => Err(rec.error(
                path,
                format!("field `{key}[{i}].{k}`: expected a string, found {}", super::records::type_name(v)),
            )),
            None => Err(rec.error(path, format!("missing field `{key}[{i}].{k}`"))),
        };
        let raw_role = field(role_key)?;
        let role = map_role(raw_role)
            .ok_or_else(|| rec.error(path, format!("field `{key}[{i}].{role_key}`: unknown role `{raw_role}`")))?;
        out.push(Message { role, content: field(content_key)?.to_string() });
    }
    Ok(out)
}

/// Check the conversation has a non-empty user prompt, no empty assistant turn, and attach
/// the category.
fn finish(
    path: &Path,
    rec: &Record,
    messages: Vec<Message>,
    category_key: Option<&str>,
) -> Result<Conversation, DataError> {
    if !messages.iter().any(|m| m.role == "user") {
        return Err(rec.error(path, "no user message"));
    }
    if let Some(m) = messages.iter().find(|m| m.role != "system" && m.content.trim().is_empty()) {
        let what = if m.role == "user" { "empty prompt" } else { "empty response" };
        return Err(rec.error(path, what));
    }
    let category = match category_key {
        Some(k) => rec.opt_string(path, k)?.filter(|s| !s.is_empty()).map(str::to_string),
        None => None,
    };
    Ok(Conversation { messages, category, source: None })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &str, format: Format) -> Result<ReadReport, DataError> {
        parse_conversations(Path::new("t"), text, format, &ReadOptions::default())
    }

    fn pairs(r: &ReadReport) -> Vec<(String, Option<String>)> {
        r.conversations.iter().map(|c| (c.prompt().to_string(), c.response().map(String::from))).collect()
    }

    fn p(a: &str, b: Option<&str>) -> (String, Option<String>) {
        (a.to_string(), b.map(String::from))
    }

    #[test]
    fn messages_and_sharegpt() {
        let r = read(
            r#"{"messages":[{"role":"system","content":"s"},{"role":"user","content":"q"},{"role":"assistant","content":"a"}],"category":"c"}"#,
            Format::Jsonl,
        )
        .unwrap();
        assert_eq!(r.conversations[0].messages.len(), 3);
        assert_eq!(pairs(&r), vec![p("q", Some("a"))]);
        assert_eq!(r.conversations[0].category.as_deref(), Some("c"));
        let r = read(r#"[{"conversations":[{"from":"human","value":"q"},{"from":"gpt","value":"a"}]}]"#, Format::Json)
            .unwrap();
        assert_eq!(pairs(&r), vec![p("q", Some("a"))]);
    }

    #[test]
    fn field_conventions() {
        let r = read("[{\"instruction\":\"Do\",\"input\":\"this\",\"output\":\"ok\"},{\"instruction\":\"Go\",\"input\":\"\",\"output\":\"k\"}]", Format::Json).unwrap();
        assert_eq!(pairs(&r), vec![p("Do\n\nthis", Some("ok")), p("Go", Some("k"))]);
        let r = read("{\"instruction\":\"Q\",\"context\":\"C\",\"response\":\"R\",\"category\":\"qa\"}", Format::Jsonl)
            .unwrap();
        assert_eq!(pairs(&r), vec![p("Q\n\nC", Some("R"))]);
        assert_eq!(r.conversations[0].category.as_deref(), Some("qa"));
        let r = read("prompt,response\nhi,there\n", Format::Csv).unwrap();
        assert_eq!(pairs(&r), vec![p("hi", Some("there"))]);
        let r = read("prompt,chosen,rejected\nhi,good,bad\n", Format::Csv).unwrap();
        assert_eq!(pairs(&r), vec![p("hi", Some("good"))]);
        let r = read("Goal,Target\ng,t\n", Format::Csv).unwrap();
        assert_eq!(pairs(&r), vec![p("g", Some("t"))]);
        let r = read("question\tanswer\n2+2?\t4\n", Format::Tsv).unwrap();
        assert_eq!(pairs(&r), vec![p("2+2?", Some("4"))]);
        let r = read("{\"prompt\":\"only\",\"system\":\"be nice\"}", Format::Jsonl).unwrap();
        assert_eq!(pairs(&r), vec![p("only", None)]);
        assert_eq!(r.conversations[0].messages[0], Message::new("system", "be nice"));
    }

    #[test]
    fn explicit_field_map() {
        let opts = ReadOptions {
            fields: Some(FieldMap {
                prompt: "Behavior".into(),
                response: Some("reply".into()),
                system: None,
                category: Some("SemanticCategory".into()),
            }),
            ..Default::default()
        };
        let text = "Behavior,reply,SemanticCategory\nb1,r1,cyber\n";
        let r = parse_conversations(Path::new("t.csv"), text, Format::Csv, &opts).unwrap();
        assert_eq!(pairs(&r), vec![p("b1", Some("r1"))]);
        assert_eq!(r.conversations[0].category.as_deref(), Some("cyber"));
        let err = read("a,b\n1,2\n", Format::Csv).unwrap_err().to_string();
        assert!(err.contains("no known column convention"), "{err}");
    }

    #[test]
    fn malformed_rows_name_the_line() {
        let jsonl = "{\"prompt\":\"a\",\"response\":\"b\"}\n{\"prompt\":\"a\"\n";
        let e = read(jsonl, Format::Jsonl).unwrap_err().to_string();
        assert!(e.starts_with("t:2: bad JSON"), "{e}");
        let jsonl = "{\"prompt\":\"a\",\"response\":\"b\"}\n\n{\"prompt\":\"c\"}\n";
        assert_eq!(read(jsonl, Format::Jsonl).unwrap_err().to_string(), "t:3: missing field `response`");
        let jsonl = "{\"prompt\":\"a\",\"response\":\"b\"}\n{\"prompt\":5,\"response\":\"b\"}\n";
        assert_eq!(
            read(jsonl, Format::Jsonl).unwrap_err().to_string(),
            "t:2: field `prompt`: expected a string, found a number"
        );
        let csv = "prompt,response\na,b\n\"multi\nline\",c\n  ,d\n";
        assert_eq!(read(csv, Format::Csv).unwrap_err().to_string(), "t:5: field `prompt`: empty");
        let json = "[\n {\"goal\": \"g\", \"target\": \"t\"},\n {\"goal\": \"g\",\n  \"target\": null}\n]";
        assert_eq!(
            read(json, Format::Json).unwrap_err().to_string(),
            "t:3: array element 1: field `target`: expected a string, found null"
        );
        let msgs = "{\"messages\":[{\"role\":\"user\",\"content\":\"\"}]}";
        assert_eq!(read(msgs, Format::Jsonl).unwrap_err().to_string(), "t:1: empty prompt");
        let msgs = "{\"messages\":[{\"role\":\"user\",\"content\":\"q\"},{\"role\":\"assistant\"}]}";
        assert_eq!(read(msgs, Format::Jsonl).unwrap_err().to_string(), "t:1: missing field `messages[1].content`");
        let e = read("[{\"goal\": \"g\"}, ]", Format::Json).unwrap_err().to_string();
        assert!(e.starts_with("t:1: bad JSON document"), "{e}");
    }

    #[test]
    fn skip_mode_counts_and_limit_stops() {
        let jsonl = "{\"prompt\":\"a\",\"response\":\"b\"}\n{bad\n{\"prompt\":\"\",\"response\":\"b\"}\n{\"prompt\":\"c\",\"response\":\"d\"}\n{\"prompt\":\"e\",\"response\":3}\n";
        let opts = ReadOptions { skip_bad_rows: true, ..Default::default() };
        let r = parse_conversations(Path::new("t"), jsonl, Format::Jsonl, &opts).unwrap();
        assert_eq!(pairs(&r), vec![p("a", Some("b")), p("c", Some("d"))]);
        assert_eq!(r.skipped, 3);
        assert!(r.first_errors[0].starts_with("t:2:"), "{:?}", r.first_errors);
        assert!(r.first_errors[1].starts_with("t:3:"), "{:?}", r.first_errors);
        assert!(r.first_errors[2].starts_with("t:5:"), "{:?}", r.first_errors);
        let opts = ReadOptions { skip_bad_rows: true, limit: Some(1), ..Default::default() };
        let r = parse_conversations(Path::new("t"), jsonl, Format::Jsonl, &opts).unwrap();
        assert_eq!((r.conversations.len(), r.skipped), (1, 0));
    }

    #[test]
    fn reads_real_files_by_extension() {
        let dir = std::env::temp_dir().join(format!("patcher-readers-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("x.csv");
        std::fs::write(&path, "question,answer\nq,a\n").unwrap();
        assert_eq!(read_file(&path).unwrap(), vec![Conversation::single("q", "a")]);
        let err = read_file(&dir.join("x.parquet")).unwrap_err().to_string();
        assert!(err.contains("unknown file format"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
