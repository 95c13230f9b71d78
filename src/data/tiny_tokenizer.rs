//! The tiny tier's tokenizer: a byte-level BPE (GPT-2 style, as in SmolLM2 and Qwen) trained
//! on the synthetic world, with the ChatML special tokens first and a ChatML chat template
//! that has no default system prompt.
//!
//! Byte-level BPE can encode any text (every byte is in the base alphabet), so evaluation
//! prompts with unseen words still tokenize. Training is deterministic: the trainer breaks
//! ties between equally frequent pairs by token id, and the alphabet is sorted, so the same
//! texts give an identical `tokenizer.json` (a test checks it).

use super::{Conversation, DataError, Message};
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::TrainerWrapper;
use tokenizers::models::bpe::{BPE, BpeTrainer};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::{AddedToken, Tokenizer};

/// Special tokens, with ids 0, 1, 2.
pub const SPECIAL_TOKENS: [&str; 3] = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"];
pub const DEFAULT_VOCAB_SIZE: usize = 1024;

/// ChatML without a default system prompt (Jinja, rendered by the tokenizer module).
pub const TINY_CHAT_TEMPLATE: &str = "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";

/// Train the tiny tokenizer on `texts` (plain text; no special tokens inside).
pub fn train_tiny_tokenizer(texts: &[String], vocab_size: usize) -> Result<Tokenizer, DataError> {
    let min = SPECIAL_TOKENS.len() + 256;
    if vocab_size < min {
        return Err(DataError::Tokenizer(format!("vocab_size {vocab_size} < {min} (3 special tokens + 256 bytes)")));
    }
    let specials: Vec<AddedToken> = SPECIAL_TOKENS.iter().map(|t| AddedToken::from(*t, true)).collect();
    let mut tokenizer = Tokenizer::new(BPE::default());
    tokenizer.with_pre_tokenizer(Some(ByteLevel::new(false, true, true)));
    tokenizer.with_decoder(Some(ByteLevelDecoder::default()));
    let mut trainer: TrainerWrapper = BpeTrainer::builder()
        .vocab_size(vocab_size)
        .min_frequency(0)
        .show_progress(false)
        .special_tokens(specials.clone())
        .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
        .build()
        .into();
    tokenizer.train(&mut trainer, texts.iter()).map_err(|e| DataError::Tokenizer(format!("training failed: {e}")))?;
    tokenizer.add_special_tokens(&specials);
    for (i, t) in SPECIAL_TOKENS.iter().enumerate() {
        let id = tokenizer.token_to_id(t);
        if id != Some(i as u32) {
            return Err(DataError::Tokenizer(format!("special token {t} got id {id:?}, expected {i}")));
        }
    }
    Ok(tokenizer)
}

/// Render messages as [`TINY_CHAT_TEMPLATE`] does (for token counts without a Jinja engine).
pub fn render_chatml(messages: &[Message], add_generation_prompt: bool) -> String {
    let mut out = String::new();
    for m in messages {
        out.push_str(&format!("<|im_start|>{}\n{}<|im_end|>\n", m.role, m.content));
    }
    if add_generation_prompt {
        out.push_str("<|im_start|>assistant\n");
    }
    out
}

/// Token counts of rendered conversations.
#[derive(Clone, Debug, PartialEq)]
pub struct TokenStats {
    pub count: usize,
    pub mean: f64,
    pub median: usize,
    pub p95: usize,
    pub max: usize,
}

/// Token lengths of `conversations` rendered with the chat template.
pub fn token_length_stats(tokenizer: &Tokenizer, conversations: &[Conversation]) -> Result<TokenStats, DataError> {
    let mut lens = Vec::with_capacity(conversations.len());
    for c in conversations {
        let enc = tokenizer
            .encode(render_chatml(&c.messages, false), false)
            .map_err(|e| DataError::Tokenizer(format!("encode failed: {e}")))?;
        lens.push(enc.len());
    }
    if lens.is_empty() {
        return Ok(TokenStats { count: 0, mean: 0.0, median: 0, p95: 0, max: 0 });
    }
    lens.sort_unstable();
    let n = lens.len();
    Ok(TokenStats {
        count: n,
        mean: lens.iter().sum::<usize>() as f64 / n as f64,
        median: lens[n / 2],
        p95: lens[(n * 95 / 100).min(n - 1)],
        max: lens[n - 1],
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::synth::{SynthConfig, generate};

    fn corpus() -> (Vec<String>, crate::data::synth::SynthWorld) {
        let w = generate(&SynthConfig { benign_train: 400, refuse_train: 200, harm_train: 200, ..Default::default() });
        (w.corpus(), w)
    }

    #[test]
    fn trains_deterministically_with_specials_first() {
        let (texts, w) = corpus();
        let a = train_tiny_tokenizer(&texts, 512).unwrap();
        let b = train_tiny_tokenizer(&texts, 512).unwrap();
        let (ja, jb) = (a.to_string(false).unwrap(), b.to_string(false).unwrap());
        assert!(ja == jb, "tokenizer.json differs between identical trainings");
        assert_eq!(a.get_vocab_size(true), 512);
        for (i, t) in SPECIAL_TOKENS.iter().enumerate() {
            assert_eq!(a.token_to_id(t), Some(i as u32));
        }
        // Round trip, special tokens kept whole, unseen text still encodes.
        let text = render_chatml(&w.harm_eval[0].messages, false);
        let enc = a.encode(text.as_str(), false).unwrap();
        assert_eq!(enc.get_ids()[0], 1);
        assert_eq!(a.decode(enc.get_ids(), false).unwrap(), text);
        let odd = "Zürich 🚀 qqq";
        assert_eq!(a.decode(a.encode(odd, false).unwrap().get_ids(), false).unwrap(), odd);
        assert!(train_tiny_tokenizer(&texts, 100).is_err());
    }

    #[test]
    fn render_matches_the_jinja_template() {
        let msgs = vec![Message::new("user", "What is 2 + 3?"), Message::new("assistant", "5")];
        let env = minijinja::Environment::new();
        let ctx = minijinja::context! { messages => msgs.clone(), add_generation_prompt => true };
        let jinja = env.render_str(TINY_CHAT_TEMPLATE, ctx).unwrap();
        assert_eq!(jinja, render_chatml(&msgs, true));
        assert_eq!(
            render_chatml(&msgs[..1], true),
            "<|im_start|>user\nWhat is 2 + 3?<|im_end|>\n<|im_start|>assistant\n"
        );
    }

    #[test]
    fn synthetic_conversations_are_short_in_tokens() {
        let (texts, w) = corpus();
        let tok = train_tiny_tokenizer(&texts, DEFAULT_VOCAB_SIZE).unwrap();
        for (name, set) in w.sets() {
            let s = token_length_stats(&tok, set).unwrap();
            eprintln!("{name}: {s:?}");
            assert!(s.p95 <= 64, "{name}: {s:?}");
        }
    }
}
