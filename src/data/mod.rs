//! Data: chat conversations, the files they come from, and the synthetic safety world.
//!
//! Every training and evaluation set in patcher is a list of [`Conversation`]s (DESIGN.md §2):
//! `D_refuse` (harmful prompt → refusal), `D_benign` (benign prompt → helpful answer) and
//! `D_harm` (harmful prompt → harmful answer, the attacker's data), plus prompt-only sets for
//! evaluation. The model's chat template renders them and the loss is taken on assistant tokens.
//!
//! - [`readers`]: JSONL / JSON / CSV / TSV files with the common column conventions detected
//!   automatically, or an explicit [`readers::FieldMap`].
//! - [`presets`]: named datasets over the shared data directory (`../shared/data`), with a
//!   deterministic train/eval split by prompt hash ([`split`]) that keeps every evaluation
//!   prompt out of every training set.
//! - [`synth`]: the deterministic synthetic safety world of the tiny tier.
//! - [`tiny_tokenizer`]: the tiny tier's byte-level BPE tokenizer and ChatML template.
//!
//! This module has no dependency on the tensor engine.

pub mod error;
pub mod judge_labels;
mod loaders;
pub mod lookalike;
pub mod misinfo;
pub mod presets;
pub mod readers;
pub mod records;
pub mod shipped;
pub mod source;
pub mod split;
pub mod synth;
mod synth_items;
mod synth_lexicon;
pub mod tiny_tokenizer;
pub mod written_refusals;

pub use error::DataError;

use serde::{Deserialize, Serialize};
use std::path::Path;

/// One chat turn. `role` is `system`, `user` or `assistant`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Message {
    pub role: String,
    pub content: String,
}

impl Message {
    pub fn new(role: &str, content: impl Into<String>) -> Self {
        Self { role: role.to_string(), content: content.into() }
    }
}

/// A chat conversation with optional metadata. Serialised as one JSONL line:
/// `{"messages": [{"role": ..., "content": ...}, ...], "category": ..., "source": ...}`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Conversation {
    pub messages: Vec<Message>,
    /// Harm category, task type or dataset label, when the source has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    /// Where the row came from (preset name, file name, `synth`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

impl Conversation {
    /// A one-turn conversation: user `prompt`, assistant `response`.
    pub fn single(prompt: impl Into<String>, response: impl Into<String>) -> Self {
        Self {
            messages: vec![Message::new("user", prompt), Message::new("assistant", response)],
            category: None,
            source: None,
        }
    }

    /// A prompt-only conversation (one user turn), for generation and evaluation.
    pub fn prompt_only_from(prompt: impl Into<String>) -> Self {
        Self { messages: vec![Message::new("user", prompt)], category: None, source: None }
    }

    pub fn with_category(mut self, category: impl Into<String>) -> Self {
        self.category = Some(category.into());
        self
    }

    pub fn with_source(mut self, source: impl Into<String>) -> Self {
        self.source = Some(source.into());
        self
    }

    /// The last user message ("" when there is none; the readers never produce that).
    pub fn prompt(&self) -> &str {
        self.messages.iter().rev().find(|m| m.role == "user").map_or("", |m| m.content.as_str())
    }

    /// Whether this is a benign look-alike: a safe request built around a harmful request's
    /// words, with a helpful answer. The tiny world's over-refusal items (category
    /// `overrefusal`) and the rows of `preset:benign-lookalike` (categories
    /// [`lookalike::TYPES`]) are; Patcher's `lookalike_weight` reads them.
    pub fn is_lookalike(&self) -> bool {
        self.category.as_deref().is_some_and(|c| c == synth::OVERREFUSAL || lookalike::TYPES.contains(&c))
    }

    /// The last assistant message, if any.
    pub fn response(&self) -> Option<&str> {
        self.messages.iter().rev().find(|m| m.role == "assistant").map(|m| m.content.as_str())
    }

    /// The conversation without its final assistant turn: what the model is asked to continue.
    pub fn prompt_only(&self) -> Conversation {
        let mut c = self.clone();
        if c.messages.last().is_some_and(|m| m.role == "assistant") {
            c.messages.pop();
        }
        c
    }

    /// Total characters of all message contents.
    pub fn text_len(&self) -> usize {
        self.messages.iter().map(|m| m.content.chars().count()).sum()
    }
}

/// Serialise conversations as JSONL (one object per line, trailing newline). Deterministic.
pub fn to_jsonl(conversations: &[Conversation]) -> String {
    let mut out = String::new();
    for c in conversations {
        // Serialising plain strings and options cannot fail.
        out.push_str(&serde_json::to_string(c).unwrap_or_default());
        out.push('\n');
    }
    out
}

/// Write conversations as JSONL, atomically (temporary file + rename).
pub fn write_jsonl(path: &Path, conversations: &[Conversation]) -> Result<(), DataError> {
    crate::io::write_atomic(path, to_jsonl(conversations).as_bytes())
        .map_err(|source| DataError::Io { path: path.to_path_buf(), source })
}

/// Read a JSONL file written by [`write_jsonl`] (strict: unknown keys are errors). For other
/// layouts use [`readers::read_conversations`].
pub fn read_jsonl(path: &Path) -> Result<Vec<Conversation>, DataError> {
    let text = std::fs::read_to_string(path).map_err(|source| DataError::Io { path: path.to_path_buf(), source })?;
    parse_jsonl(path, &text)
}

/// Parse JSONL text in our conversation format; `path` only names the source in errors.
pub fn parse_jsonl(path: &Path, text: &str) -> Result<Vec<Conversation>, DataError> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let c: Conversation =
            serde_json::from_str(line).map_err(|e| DataError::row(path, i + 1, format!("not a conversation: {e}")))?;
        if c.messages.is_empty() {
            return Err(DataError::row(path, i + 1, "field `messages`: empty list"));
        }
        out.push(c);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn helpers_pick_last_turns() {
        let mut c = Conversation::single("hi", "hello");
        c.messages.push(Message::new("user", "again"));
        c.messages.push(Message::new("assistant", "sure"));
        assert_eq!(c.prompt(), "again");
        assert_eq!(c.response(), Some("sure"));
        let p = c.prompt_only();
        assert_eq!(p.messages.len(), 3);
        assert_eq!(p.response(), Some("hello"));
        assert_eq!(p.prompt(), "again");
        assert_eq!(Conversation::prompt_only_from("x").response(), None);
        assert_eq!(Conversation::prompt_only_from("x").prompt_only().messages.len(), 1);
    }

    #[test]
    fn jsonl_round_trip_and_format() {
        let convs = vec![
            Conversation::single("a", "b").with_category("cat"),
            Conversation::prompt_only_from("only").with_source("src"),
        ];
        let text = to_jsonl(&convs);
        assert_eq!(
            text.lines().next(),
            Some(r#"{"messages":[{"role":"user","content":"a"},{"role":"assistant","content":"b"}],"category":"cat"}"#)
        );
        let dir = std::env::temp_dir().join(format!("patcher-data-jsonl-{}", std::process::id()));
        let path = dir.join("x.jsonl");
        write_jsonl(&path, &convs).unwrap();
        assert_eq!(read_jsonl(&path).unwrap(), convs);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn jsonl_errors_name_the_line() {
        let text = "{\"messages\":[{\"role\":\"user\",\"content\":\"a\"}]}\n\n{\"messages\": 3}\n";
        let err = parse_jsonl(Path::new("f.jsonl"), text).unwrap_err().to_string();
        assert!(err.starts_with("f.jsonl:3:"), "{err}");
        let err = parse_jsonl(Path::new("f.jsonl"), "{\"messages\":[],\"x\":1}").unwrap_err();
        assert!(err.to_string().contains("f.jsonl:1:"), "{err}");
    }
}
