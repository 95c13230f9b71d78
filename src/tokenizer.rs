//! Tokenization and chat templates.
//!
//! Wraps a Hugging Face `tokenizers` tokenizer (from `tokenizer.json`) and renders the model's
//! Jinja chat template (from `tokenizer_config.json`) with `minijinja`, which renders the
//! SmolLM2 (ChatML) and Gemma (`<start_of_turn>` ... `<end_of_turn>`) templates identically to
//! Python's jinja2. [`ChatTokenizer::encode_chat`] returns the token ids of a conversation and a
//! mask marking the assistant tokens (each assistant message plus its end-of-turn token), which
//! is where the training loss is taken. Templates write their own BOS (`<bos>` for Gemma), so
//! rendered text is encoded without adding special tokens: BOS appears once.

use std::path::Path;

use minijinja::{Environment, context};

use crate::error::{Error, IoContext, Result};

/// One chat message (`role`, `content`), as in a chat template's `messages` list.
pub use crate::data::Message as ChatMessage;

/// A tokenizer with its chat template and special tokens.
#[derive(Clone)]
pub struct ChatTokenizer {
    pub tokenizer: tokenizers::Tokenizer,
    pub chat_template: Option<String>,
    pub bos_token: Option<String>,
    pub eos_token: Option<String>,
    /// Token ids that end an assistant turn (eos, `<|im_end|>`, `<|eot_id|>`, Gemma's
    /// `<end_of_turn>`, ... when present).
    pub stop_ids: Vec<u32>,
    pub pad_id: u32,
}

impl std::fmt::Debug for ChatTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTokenizer")
            .field("vocab", &self.tokenizer.get_vocab_size(true))
            .field("stop_ids", &self.stop_ids)
            .finish()
    }
}

/// A token string from `tokenizer_config.json`: either `"<s>"` or `{"content": "<s>", ...}`.
fn token_str(v: Option<&serde_json::Value>) -> Option<String> {
    match v? {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Object(o) => o.get("content").and_then(|c| c.as_str()).map(String::from),
        _ => None,
    }
}

impl ChatTokenizer {
    /// Load `tokenizer.json` and (optionally) `tokenizer_config.json` from a model directory.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        crate::io::hf::check_model_dir(dir)?;
        let tj = dir.join("tokenizer.json");
        if !tj.exists() {
            return Err(Error::Tokenizer(format!("{}: not found", tj.display())));
        }
        let tokenizer =
            tokenizers::Tokenizer::from_file(&tj).map_err(|e| Error::Tokenizer(format!("{}: {e}", tj.display())))?;
        let tc = dir.join("tokenizer_config.json");
        let cfg: serde_json::Value = if tc.exists() {
            let text = std::fs::read_to_string(&tc).at(&tc)?;
            serde_json::from_str(&text)
                .map_err(|e| Error::Format { file: tc.display().to_string(), why: e.to_string() })?
        } else {
            serde_json::Value::Null
        };
        let chat_template = match cfg.get("chat_template") {
            Some(serde_json::Value::String(s)) => Some(s.clone()),
            // A list of named templates: take "default".
            Some(serde_json::Value::Array(list)) => list
                .iter()
                .find(|t| t.get("name").and_then(|n| n.as_str()) == Some("default"))
                .and_then(|t| t.get("template"))
                .and_then(|t| t.as_str())
                .map(String::from),
            _ => None,
        };
        let bos_token = token_str(cfg.get("bos_token"));
        let eos_token = token_str(cfg.get("eos_token"));
        let pad_token = token_str(cfg.get("pad_token"));
        Ok(Self::new(tokenizer, chat_template, bos_token, eos_token, pad_token))
    }

    pub fn new(
        tokenizer: tokenizers::Tokenizer,
        chat_template: Option<String>,
        bos_token: Option<String>,
        eos_token: Option<String>,
        pad_token: Option<String>,
    ) -> Self {
        let mut stop_ids = Vec::new();
        let candidates = [
            eos_token.as_deref(),
            Some("<|im_end|>"),
            Some("<|eot_id|>"),
            Some("<end_of_turn>"),
            Some("<|endoftext|>"),
        ];
        for name in candidates.into_iter().flatten() {
            if let Some(id) = tokenizer.token_to_id(name)
                && !stop_ids.contains(&id)
            {
                stop_ids.push(id);
            }
        }
        let pad_id = pad_token
            .as_deref()
            .and_then(|p| tokenizer.token_to_id(p))
            .or_else(|| eos_token.as_deref().and_then(|e| tokenizer.token_to_id(e)))
            .unwrap_or(0);
        Self { tokenizer, chat_template, bos_token, eos_token, stop_ids, pad_id }
    }

    /// Token ids of plain text (special tokens in the text are recognised, none are added).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self.tokenizer.encode(text, false).map_err(|e| Error::Tokenizer(e.to_string()))?;
        Ok(enc.get_ids().to_vec())
    }

    /// Token ids of plain `text` with the tokenizer's own special tokens added, as
    /// transformers' `tokenizer(text)` gives them (Gemma's `<bos>` first; nothing for SmolLM2):
    /// the prompt of a plain completion, without the chat template.
    pub fn encode_text(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self.tokenizer.encode(text, true).map_err(|e| Error::Tokenizer(e.to_string()))?;
        Ok(enc.get_ids().to_vec())
    }

    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String> {
        self.tokenizer.decode(ids, skip_special).map_err(|e| Error::Tokenizer(e.to_string()))
    }

    /// Render `messages` with the chat template (ChatML when the model has none).
    pub fn render(&self, messages: &[ChatMessage], add_generation_prompt: bool) -> Result<String> {
        const CHATML: &str = "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";
        let template = self.chat_template.as_deref().unwrap_or(CHATML);
        let mut env = Environment::new();
        env.add_function("raise_exception", |msg: String| -> std::result::Result<String, minijinja::Error> {
            Err(minijinja::Error::new(minijinja::ErrorKind::InvalidOperation, msg))
        });
        env.add_template("chat", template).map_err(|e| Error::Template(e.to_string()))?;
        let tmpl = env.get_template("chat").map_err(|e| Error::Template(e.to_string()))?;
        tmpl.render(context! {
            messages => messages,
            add_generation_prompt => add_generation_prompt,
            bos_token => self.bos_token.clone().unwrap_or_default(),
            eos_token => self.eos_token.clone().unwrap_or_default(),
        })
        .map_err(|e| Error::Template(e.to_string()))
    }

    /// Ids of the conversation and a 0/1 mask over them marking assistant tokens: the content
    /// of every assistant message and the end-of-turn token that follows it. System, user,
    /// role-header and template tokens get 0.
    pub fn encode_chat(&self, messages: &[ChatMessage]) -> Result<(Vec<u32>, Vec<u8>)> {
        let full = self.render(messages, false)?;
        // Character spans of assistant replies: render the prefix with a generation prompt,
        // then the prefix including the reply; the difference is the reply (and its end tag).
        let mut spans = Vec::new();
        for (i, m) in messages.iter().enumerate() {
            if m.role != "assistant" {
                continue;
            }
            let before = self.render(&messages[..i], true)?;
            let after = self.render(&messages[..=i], false)?;
            if !full.starts_with(&before) || !full.starts_with(&after) {
                return Err(Error::Template(format!(
                    "the chat template does not render message {i} as a prefix of the conversation; cannot locate the assistant tokens"
                )));
            }
            // Drop the trailing whitespace after the end-of-turn tag (ChatML's and Gemma's "\n").
            let end = after.trim_end().len();
            spans.push((before.len(), end));
        }
        let enc = self.tokenizer.encode(full.as_str(), false).map_err(|e| Error::Tokenizer(e.to_string()))?;
        let ids = enc.get_ids().to_vec();
        let mask = enc
            .get_offsets()
            .iter()
            .map(|&(s, e)| u8::from(e > s && spans.iter().any(|&(a, b)| s >= a && e <= b)))
            .collect();
        Ok((ids, mask))
    }

    /// Ids of a prompt ready for generation (template applied, generation prompt added).
    pub fn encode_prompt(&self, messages: &[ChatMessage]) -> Result<Vec<u32>> {
        self.encode(&self.render(messages, true)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::gguf::GgufFile;
    use crate::io::gguf::test_writer::Writer;
    use crate::io::gguf::tokenizer::tests::tiny_sentencepiece;
    use crate::io::gguf::tokenizer::tokenizer_from_gguf;

    /// A Gemma-style tokenizer (tiny SentencePiece vocabulary, Gemma's turn template, as the
    /// GGUF import builds it).
    fn gemma_style() -> ChatTokenizer {
        let mut w = Writer::new();
        tiny_sentencepiece(&mut w);
        let t = tokenizer_from_gguf(&GgufFile::from_bytes("sp.gguf", w.to_bytes()).unwrap()).unwrap();
        let s = |x: &str| Some(x.to_string());
        ChatTokenizer::new(t.tokenizer, t.chat_template, s("<bos>"), s("<eos>"), s("<pad>"))
    }

    #[test]
    fn gemma_turns_mask_replies_and_end_of_turn_with_one_bos() {
        let tok = gemma_style();
        let (bos, eos, sot, eot) = (2, 1, 4, 5);
        assert_eq!(tok.stop_ids, [eos, eot], "<eos> and <end_of_turn> stop generation");
        assert_eq!(tok.pad_id, 0);
        let msgs = vec![
            ChatMessage::new("system", "a"),
            ChatMessage::new("user", "the"),
            ChatMessage::new("assistant", " the the "),
            ChatMessage::new("user", "a"),
            ChatMessage::new("assistant", "he"),
        ];
        let text = tok.render(&msgs, false).unwrap();
        assert_eq!(
            text,
            "<bos><start_of_turn>user\na\n\nthe<end_of_turn>\n<start_of_turn>model\nthe the<end_of_turn>\n\
             <start_of_turn>user\na<end_of_turn>\n<start_of_turn>model\nhe<end_of_turn>\n"
        );
        let (ids, mask) = tok.encode_chat(&msgs).unwrap();
        assert_eq!(ids.len(), mask.len());
        assert_eq!((ids[0], ids[1]), (bos, sot));
        assert_eq!(ids.iter().filter(|&&i| i == bos).count(), 1, "BOS once: {ids:?}");
        let masked: Vec<u32> = ids.iter().zip(&mask).filter(|(_, m)| **m == 1).map(|(i, _)| *i).collect();
        let mut want = tok.encode("the the").unwrap();
        want.push(eot);
        want.extend(tok.encode("he").unwrap());
        want.push(eot);
        assert_eq!(masked, want, "masked tokens are exactly the (trimmed) replies and their <end_of_turn>");
        // The generation prompt ends with the model's turn header; one BOS.
        let prompt = tok.encode_prompt(&msgs[..2]).unwrap();
        assert_eq!(prompt.iter().filter(|&&i| i == bos).count(), 1);
        assert_eq!(prompt[..2], [bos, sot]);
        assert!(tok.render(&msgs[..2], true).unwrap().ends_with("<end_of_turn>\n<start_of_turn>model\n"));
        // A plain completion's prompt: BOS, then the text.
        let plain = tok.encode_text("the the").unwrap();
        assert_eq!(plain[0], bos);
        assert_eq!(plain[1..], tok.encode("the the").unwrap()[..]);
        // Roles must alternate, as in Gemma's own template.
        let bad = [ChatMessage::new("user", "a"), ChatMessage::new("user", "b")];
        let e = tok.render(&bad, false).unwrap_err().to_string();
        assert!(e.contains("alternate"), "{e}");
    }
}
