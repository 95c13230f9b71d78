//! A Hugging Face `tokenizers` tokenizer rebuilt from GGUF `tokenizer.ggml.*` metadata.
//!
//! Keys follow the GGUF spec (ggml `docs/gguf.md`, "Tokenizer"): `tokenizer.ggml.model`,
//! `.pre`, `.tokens`, `.scores`, `.token_type`, `.merges`, `.{bos,eos,unknown,padding}_token_id`,
//! `.add_{bos,eos}_token`, `.add_space_prefix`, and `tokenizer.chat_template`. Two models are
//! supported:
//!
//! * `gpt2`: byte-level BPE. The pre-tokenizer is chosen by `tokenizer.ggml.pre`, the name
//!   llama.cpp's `convert_hf_to_gguf.py` gives to the original Hugging Face pre-tokenizer; each
//!   supported name is mapped back to the `tokenizer.json` pre-tokenizer of its model family (the
//!   regexes are those of `llama-vocab.cpp` / the original `tokenizer.json` files). An unknown name
//!   is an error: ignoring it would silently split real text differently.
//! * `llama`: SentencePiece BPE with byte fallback, for Gemma files (`general.architecture`
//!   `gemma*`), rebuilt as transformers' GGUF loader does (`gemma_tokenizer` in
//!   `integrations/gguf/gguf_tokenizer_mapping.py`, and `GemmaTokenizer`): normalizer
//!   `Replace(" ", "▁")`, pre-tokenizer `Split(" ", merged_with_previous)`, decoder
//!   `Replace("▁", " ") + ByteFallback + Fuse`, `<unk>` with `fuse_unk`. A Gemma GGUF has no
//!   merges; they are derived from the vocabulary ([`sentencepiece_merges`]), ranked by the
//!   position of the merged token (Gemma's scores do not follow its merge order), and tokens made
//!   only of spaces, which llama.cpp stores as real spaces, are spelled with `▁` again. Other
//!   SentencePiece files (Llama 2 style: a `Metaspace` prefix and score-ranked merges) are refused.
//!
//! Token types (`enum llama_token_type`): 1 normal, 2 unknown, 3 control, 4 user-defined,
//! 5 unused, 6 byte. Control tokens become special added tokens, user-defined ones plain added
//! tokens, so that `<|im_start|>`, `<start_of_turn>` and friends are matched whole in text.
//!
//! A Gemma file without a chat template (a base model) gets Gemma's turn format
//! ([`GEMMA_CHAT_TEMPLATE`]), so that chat fine-tuning and prompting use the format of the
//! instruction-tuned Gemma models.

use tokenizers::decoders::DecoderWrapper;
use tokenizers::decoders::byte_fallback::ByteFallback;
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::decoders::fuse::Fuse;
use tokenizers::decoders::sequence::Sequence as DecoderSequence;
use tokenizers::models::bpe::{BPE, Vocab};
use tokenizers::normalizers::replace::Replace;
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::processors::PostProcessorWrapper;
use tokenizers::processors::template::{SpecialToken, TemplateProcessing};
use tokenizers::{AddedToken, SplitDelimiterBehavior, Tokenizer};

use super::{GgufError, GgufFile};

/// Values of `tokenizer.ggml.pre` this module can rebuild for byte-level BPE (`gpt2`).
pub const SUPPORTED_PRE: &[&str] = &["default", "gpt2", "smollm", "llama-bpe", "qwen2"];

/// GGUF token type of control tokens (`LLAMA_TOKEN_TYPE_CONTROL`).
pub const TOKEN_TYPE_CONTROL: i64 = 3;
/// GGUF token type of user-defined added tokens (`LLAMA_TOKEN_TYPE_USER_DEFINED`).
pub const TOKEN_TYPE_USER_DEFINED: i64 = 4;

/// SentencePiece's word-boundary symbol (U+2581), which stands for a space in its pieces.
const SP_SPACE: &str = "\u{2581}";

/// Gemma's turn format, as the chat template of the instruction-tuned Gemma 3 models writes it
/// (their `tokenizer_config.json`, text-only parts): `<bos>`, then per message
/// `<start_of_turn>{user|model}\n{content}<end_of_turn>\n`, the assistant role rendered as
/// `model` and a system message prepended to the first user turn; with
/// `add_generation_prompt`, `<start_of_turn>model\n`. Roles must alternate user/assistant.
pub const GEMMA_CHAT_TEMPLATE: &str = r#"{{ bos_token }}
{%- if messages[0]['role'] == 'system' -%}
    {%- if messages[0]['content'] is string -%}
        {%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}
    {%- else -%}
        {%- set first_user_prefix = messages[0]['content'][0]['text'] + '\n\n' -%}
    {%- endif -%}
    {%- set loop_messages = messages[1:] -%}
{%- else -%}
    {%- set first_user_prefix = "" -%}
    {%- set loop_messages = messages -%}
{%- endif -%}
{%- for message in loop_messages -%}
    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}
        {{ raise_exception("Conversation roles must alternate user/assistant/user/assistant/...") }}
    {%- endif -%}
    {%- if (message['role'] == 'assistant') -%}
        {%- set role = "model" -%}
    {%- else -%}
        {%- set role = message['role'] -%}
    {%- endif -%}
    {{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else "") }}
    {%- if message['content'] is string -%}
        {{ message['content'] | trim }}
    {%- elif message['content'] is iterable -%}
        {%- for item in message['content'] -%}
            {%- if item['type'] == 'text' -%}
                {{ item['text'] | trim }}
            {%- endif -%}
        {%- endfor -%}
    {%- else -%}
        {{ raise_exception("Invalid content type") }}
    {%- endif -%}
    {{ '<end_of_turn>\n' }}
{%- endfor -%}
{%- if add_generation_prompt -%}
    {{'<start_of_turn>model\n'}}
{%- endif -%}
"#;

/// Llama 3 (`llama-bpe`) split regex, as in Meta's `tokenizer.json`.
const LLAMA3_REGEX: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Qwen2 split regex (single digits), as in Qwen's `tokenizer.json`.
const QWEN2_REGEX: &str =
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// One special token: id and text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRef {
    pub id: u32,
    pub text: String,
}

/// Where the chat template written to `tokenizer_config.json` comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChatTemplateSource {
    /// `tokenizer.chat_template` of the GGUF file.
    File,
    /// The file has none; [`GEMMA_CHAT_TEMPLATE`] was supplied (a Gemma base model).
    GemmaDefault,
    /// None at all.
    Absent,
}

/// The rebuilt tokenizer plus what `tokenizer_config.json` / `config.json` need.
pub struct GgufTokenizer {
    pub tokenizer: Tokenizer,
    /// `tokenizer.ggml.model` (`"gpt2"` or `"llama"`).
    pub model: String,
    /// `tokenizer.ggml.pre` (or `"default"` when absent).
    pub pre: String,
    pub vocab_size: usize,
    /// Merges in the BPE model (from the file, or derived from a SentencePiece vocabulary).
    pub n_merges: usize,
    pub bos: Option<TokenRef>,
    pub eos: Option<TokenRef>,
    pub unk: Option<TokenRef>,
    pub pad: Option<TokenRef>,
    pub add_bos: bool,
    pub add_eos: bool,
    pub chat_template: Option<String>,
    pub chat_template_source: ChatTemplateSource,
}

impl GgufTokenizer {
    /// Id of a token of the vocabulary by its text as the file spells it.
    pub fn token_id(&self, text: &str) -> Option<u32> {
        self.tokenizer.token_to_id(text)
    }
}

/// Build the tokenizer described by `gguf`'s metadata.
pub fn tokenizer_from_gguf(gguf: &GgufFile) -> Result<GgufTokenizer, GgufError> {
    let err = |msg: String| GgufError::Tokenizer { path: gguf.path().to_path_buf(), msg };
    let model = gguf.get_str("tokenizer.ggml.model")?;
    let pre = gguf.get_str_opt("tokenizer.ggml.pre")?.unwrap_or("default").to_string();
    let tokens = gguf.get_str_array("tokenizer.ggml.tokens")?;
    let types = match gguf.get("tokenizer.ggml.token_type") {
        Some(_) => gguf.get_int_array("tokenizer.ggml.token_type")?,
        None => vec![1; tokens.len()],
    };
    if types.len() != tokens.len() {
        return Err(err(format!(
            "tokenizer.ggml.token_type has {} entries but tokenizer.ggml.tokens has {}",
            types.len(),
            tokens.len()
        )));
    }
    u32::try_from(tokens.len()).map_err(|_| err("more than 2^32 tokens".into()))?;
    let special = |key: &str| -> Result<Option<TokenRef>, GgufError> {
        let Some(id) = gguf.get_u32_opt(key)? else {
            return Ok(None);
        };
        match tokens.get(id as usize) {
            Some(text) => Ok(Some(TokenRef { id, text: text.clone() })),
            None => Err(err(format!("{key} = {id} is outside the {}-token vocabulary", tokens.len()))),
        }
    };
    let bos = special("tokenizer.ggml.bos_token_id")?;
    let eos = special("tokenizer.ggml.eos_token_id")?;
    let unk = special("tokenizer.ggml.unknown_token_id")?;
    let pad = special("tokenizer.ggml.padding_token_id")?;
    let add_eos = gguf.get_bool_opt("tokenizer.ggml.add_eos_token")?.unwrap_or(false);
    let mut chat_template = gguf.get_str_opt("tokenizer.chat_template")?.map(str::to_string);
    let mut chat_template_source =
        if chat_template.is_some() { ChatTemplateSource::File } else { ChatTemplateSource::Absent };

    let (mut tokenizer, n_merges, add_bos) = match model {
        "gpt2" => {
            let (tokenizer, n_merges) = byte_level_bpe(gguf, tokens, &pre)?;
            (tokenizer, n_merges, gguf.get_bool_opt("tokenizer.ggml.add_bos_token")?.unwrap_or(false))
        }
        "llama" => {
            let (tokenizer, n_merges) = sentencepiece_bpe(gguf, tokens, &pre, &unk)?;
            if chat_template.is_none() && tokenizer.token_to_id("<start_of_turn>").is_some() {
                chat_template = Some(GEMMA_CHAT_TEMPLATE.to_string());
                chat_template_source = ChatTemplateSource::GemmaDefault;
            }
            // llama.cpp adds BOS to a SentencePiece vocabulary that does not say otherwise
            // (transformers' GGUF loader follows it).
            (tokenizer, n_merges, gguf.get_bool_opt("tokenizer.ggml.add_bos_token")?.unwrap_or(true))
        }
        other => {
            return Err(err(format!(
                "tokenizer.ggml.model = {other:?} is not supported (supported: \"gpt2\", byte-level BPE; \
                 \"llama\", SentencePiece BPE of Gemma files)"
            )));
        }
    };
    tokenizer.with_post_processor(Some(post_processor(&bos, &eos, add_bos, add_eos).map_err(err)?));

    let of_type = |wanted: i64| types.iter().zip(tokens).filter(move |(t, _)| **t == wanted).map(|(_, tok)| tok);
    if model == "gpt2" {
        let added = |wanted: i64, special: bool| -> Vec<AddedToken> {
            of_type(wanted).map(|tok| AddedToken::from(tok.clone(), special)).collect()
        };
        tokenizer.add_special_tokens(&added(TOKEN_TYPE_CONTROL, true));
        tokenizer.add_tokens(&added(TOKEN_TYPE_USER_DEFINED, false));
    } else {
        // As transformers' `add_gguf_special_tokens`: matched on the raw text (not normalized);
        // user-defined tokens only when the vocabulary spells them as the file does (the runs of
        // spaces were respelled with `▁` and are reached by merges instead).
        let added = |wanted: i64, special: bool| -> Vec<AddedToken> {
            let known = of_type(wanted).filter(|tok| special || tokenizer.token_to_id(tok).is_some());
            known.map(|tok| AddedToken::from(tok.clone(), special).normalized(false)).collect()
        };
        let (control, user) = (added(TOKEN_TYPE_CONTROL, true), added(TOKEN_TYPE_USER_DEFINED, false));
        tokenizer.add_special_tokens(&control);
        tokenizer.add_tokens(&user);
    }

    Ok(GgufTokenizer {
        tokenizer,
        model: model.to_string(),
        pre,
        vocab_size: tokens.len(),
        n_merges,
        bos,
        eos,
        unk,
        pad,
        add_bos,
        add_eos,
        chat_template,
        chat_template_source,
    })
}

/// The vocabulary as a token -> id map; a token that appears twice is an error.
fn vocab_of<'a>(tokens: impl IntoIterator<Item = &'a str>) -> Result<Vocab, String> {
    let mut vocab = Vocab::new();
    for (id, tok) in tokens.into_iter().enumerate() {
        if let Some(prev) = vocab.insert(tok.to_string(), id as u32) {
            return Err(format!("token {tok:?} appears twice (ids {prev} and {id})"));
        }
    }
    Ok(vocab)
}

/// `tokenizer.ggml.merges` as pairs.
fn file_merges(gguf: &GgufFile) -> Result<Vec<(String, String)>, GgufError> {
    let err = |msg: String| GgufError::Tokenizer { path: gguf.path().to_path_buf(), msg };
    let merges = gguf.get_str_array("tokenizer.ggml.merges")?;
    merges
        .iter()
        .enumerate()
        .map(|(i, m)| match m.split_once(' ') {
            Some((a, b)) => Ok((a.to_string(), b.to_string())),
            None => Err(err(format!("tokenizer.ggml.merges[{i}] = {m:?} has no space"))),
        })
        .collect()
}

/// Byte-level BPE (`tokenizer.ggml.model = "gpt2"`): the model, pre-tokenizer and decoder, and
/// the number of merges.
fn byte_level_bpe(gguf: &GgufFile, tokens: &[String], pre: &str) -> Result<(Tokenizer, usize), GgufError> {
    let err = |msg: String| GgufError::Tokenizer { path: gguf.path().to_path_buf(), msg };
    let pre_tokenizer = pre_tokenizer_for(pre).map_err(err)?;
    let vocab = vocab_of(tokens.iter().map(String::as_str)).map_err(err)?;
    let merges = file_merges(gguf)?;
    let n_merges = merges.len();
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, merges)
        // Llama 3 looks whole words up in the vocabulary before merging (its tokenizer.json
        // sets ignore_merges, as does llama.cpp for `llama-bpe`).
        .ignore_merges(pre == "llama-bpe")
        .build()
        .map_err(|e| err(format!("BPE model: {e}")))?;
    let mut tokenizer = Tokenizer::new(bpe);
    tokenizer.with_pre_tokenizer(Some(pre_tokenizer));
    tokenizer.with_decoder(Some(ByteLevelDecoder::default()));
    Ok((tokenizer, n_merges))
}

/// The spelling transformers gives a SentencePiece token: llama.cpp writes Gemma's tokens of
/// two or more spaces with real spaces, where the vocabulary (and the `Replace(" ", "▁")`
/// normalizer) needs `▁`.
fn respell(token: &str) -> String {
    if token.contains(' ') && token.trim().is_empty() {
        SP_SPACE.repeat(token.chars().count())
    } else {
        token.to_string()
    }
}

/// Longest token (in characters) that [`sentencepiece_merges`] splits. Looking up every split
/// costs the square of a token's length, so an untrusted file with huge tokens could stall the
/// import; real pieces are short (Gemma 3's longest is 31 characters, a run of spaces).
pub const MAX_MERGED_TOKEN_CHARS: usize = 128;

/// BPE merges implied by a SentencePiece vocabulary, as transformers' `generate_merges` with
/// Gemma's rank (the token's position) derives them: every split `(left, right)` of a token whose
/// halves are both tokens, tokens in id order, and within one token the longest left half first.
/// Tokens longer than [`MAX_MERGED_TOKEN_CHARS`] get no merge (only matched whole, if added).
pub fn sentencepiece_merges(tokens: &[String], vocab: &Vocab) -> Vec<(String, String)> {
    let mut merges = Vec::new();
    for tok in tokens.iter().filter(|t| t.len() <= 4 * MAX_MERGED_TOKEN_CHARS) {
        if tok.chars().nth(MAX_MERGED_TOKEN_CHARS).is_some() {
            continue;
        }
        let splits = tok.char_indices().skip(1).map(|(i, _)| i).collect::<Vec<_>>();
        for &at in splits.iter().rev() {
            let (left, right) = tok.split_at(at);
            if vocab.contains_key(left) && vocab.contains_key(right) {
                merges.push((left.to_string(), right.to_string()));
            }
        }
    }
    merges
}

/// SentencePiece BPE with byte fallback (`tokenizer.ggml.model = "llama"`) in Gemma's form: the
/// model, normalizer, pre-tokenizer and decoder, and the number of merges.
fn sentencepiece_bpe(
    gguf: &GgufFile,
    tokens: &[String],
    pre: &str,
    unk: &Option<TokenRef>,
) -> Result<(Tokenizer, usize), GgufError> {
    let err = |msg: String| GgufError::Tokenizer { path: gguf.path().to_path_buf(), msg };
    let arch = gguf.get_str_opt("general.architecture")?.unwrap_or("");
    if !arch.starts_with("gemma") {
        return Err(err(format!(
            "tokenizer.ggml.model = \"llama\" (SentencePiece) is supported for Gemma files only, not \
             general.architecture = {arch:?} (Llama 2-style vocabularies need a Metaspace prefix and \
             score-ranked merges, not implemented)"
        )));
    }
    if pre != "default" {
        return Err(err(format!(
            "tokenizer.ggml.pre = {pre:?} with a SentencePiece vocabulary (expected \"default\")"
        )));
    }
    if gguf.get_bool_opt("tokenizer.ggml.add_space_prefix")? == Some(true) {
        return Err(err(
            "tokenizer.ggml.add_space_prefix = true is not supported for Gemma (its tokenizer adds no prefix space)"
                .into(),
        ));
    }
    let spelled: Vec<String> = tokens.iter().map(|t| respell(t)).collect();
    let vocab = vocab_of(spelled.iter().map(String::as_str)).map_err(err)?;
    let merges = match gguf.get("tokenizer.ggml.merges") {
        Some(_) => file_merges(gguf)?,
        None => sentencepiece_merges(&spelled, &vocab),
    };
    let n_merges = merges.len();
    let mut builder = BPE::builder().vocab_and_merges(vocab, merges).byte_fallback(true).fuse_unk(true);
    if let Some(unk) = unk {
        builder = builder.unk_token(respell(&unk.text));
    }
    let bpe = builder.build().map_err(|e| err(format!("BPE model: {e}")))?;
    let replace = |from: &str, to: &str| Replace::new(from, to).map_err(|e| err(format!("replace {from:?}: {e}")));
    let split = Split::new(SplitPattern::String(" ".into()), SplitDelimiterBehavior::MergedWithPrevious, false)
        .map_err(|e| err(format!("pre-tokenizer: {e}")))?;
    let decoder = DecoderSequence::new(vec![
        DecoderWrapper::Replace(replace(SP_SPACE, " ")?),
        DecoderWrapper::ByteFallback(ByteFallback::new()),
        DecoderWrapper::Fuse(Fuse::new()),
    ]);
    let mut tokenizer = Tokenizer::new(bpe);
    tokenizer.with_normalizer(Some(replace(" ", SP_SPACE)?));
    tokenizer.with_pre_tokenizer(Some(split));
    tokenizer.with_decoder(Some(decoder));
    // Every byte needs its `<0xXX>` token, or text with an unknown character loses it.
    let missing: Vec<String> =
        (0..=255u8).map(|b| format!("<0x{b:02X}>")).filter(|t| tokenizer.token_to_id(t).is_none()).collect();
    if !missing.is_empty() && missing.len() < 256 {
        // A vocabulary with some byte tokens but not all is unusual; say so rather than guess.
        let shown = &missing[..missing.len().min(4)];
        return Err(err(format!("{} of the 256 byte-fallback tokens are missing, e.g. {shown:?}", missing.len())));
    }
    Ok((tokenizer, n_merges))
}

/// The `tokenizer.json` pre-tokenizer for a `tokenizer.ggml.pre` name.
fn pre_tokenizer_for(pre: &str) -> Result<PreTokenizerWrapper, String> {
    let split = |re: &str| -> Result<PreTokenizerWrapper, String> {
        let s = Split::new(SplitPattern::Regex(re.into()), SplitDelimiterBehavior::Isolated, false);
        s.map(Into::into).map_err(|e| format!("pre-tokenizer regex: {e}"))
    };
    Ok(match pre {
        // GPT-2: the byte-level regex split, no prefix space.
        "default" | "gpt2" => ByteLevel::new(false, true, true).into(),
        // SmolLM / SmolLM2 (StarCoder-style): every digit alone, then GPT-2 byte level.
        "smollm" => Sequence::new(vec![Digits::new(true).into(), ByteLevel::new(false, true, true).into()]).into(),
        "llama-bpe" => Sequence::new(vec![split(LLAMA3_REGEX)?, ByteLevel::new(false, true, false).into()]).into(),
        "qwen2" => Sequence::new(vec![split(QWEN2_REGEX)?, ByteLevel::new(false, false, false).into()]).into(),
        other => {
            return Err(format!(
                "tokenizer.ggml.pre = {other:?} is not supported (supported: {})",
                SUPPORTED_PRE.join(", ")
            ));
        }
    })
}

/// Adds BOS/EOS around each sequence when the GGUF asks for it; otherwise the plain
/// byte-level post-processor (offsets untrimmed), as in GPT-2-style `tokenizer.json` files.
fn post_processor(
    bos: &Option<TokenRef>,
    eos: &Option<TokenRef>,
    add_bos: bool,
    add_eos: bool,
) -> Result<PostProcessorWrapper, String> {
    if !add_bos && !add_eos {
        return Ok(ByteLevel::new(true, false, true).into());
    }
    let wanted = |label: &'static str, tok: &Option<TokenRef>, on: bool| match (on, tok) {
        (false, _) => Ok(None),
        (true, Some(t)) => {
            SpecialToken::new(label.into(), vec![t.id], vec![t.text.clone()]).map(Some).map_err(|e| e.to_string())
        }
        (true, None) => Err(format!("add_{label}_token is set but {label}_token_id is not")),
    };
    // Template pieces refer to special tokens by a label of our choosing ("bos", "eos"), which
    // avoids trouble with token texts containing spaces or ':'.
    let specials: Vec<SpecialToken> =
        [wanted("bos", bos, add_bos)?, wanted("eos", eos, add_eos)?].into_iter().flatten().collect();
    let seq = |s: &str, t: u32| {
        let mut v = Vec::new();
        if add_bos {
            v.push(format!("bos:{t}"));
        }
        v.push(format!("${s}:{t}"));
        if add_eos {
            v.push(format!("eos:{t}"));
        }
        v
    };
    let single = seq("A", 0);
    let pair = [seq("A", 0), seq("B", 1)].concat();
    TemplateProcessing::builder()
        .try_single(single)
        .and_then(|b| b.try_pair(pair))
        .map_err(|e| format!("post-processor template: {e}"))?
        .special_tokens(specials)
        .build()
        .map(Into::into)
        .map_err(|e| format!("post-processor: {e}"))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::io::gguf::test_writer::Writer;
    use crate::io::gguf::{GgufArray, GgufValue};

    /// GPT-2's byte-to-unicode table: printable bytes map to themselves, the rest to U+0100+.
    pub(crate) fn byte_char(b: u8) -> char {
        let printable = matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
        if printable {
            b as char
        } else {
            let n = (0..b).filter(|&x| !matches!(x, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF)).count();
            char::from_u32(256 + n as u32).unwrap_or('?')
        }
    }

    /// A tiny byte-level vocabulary: 3 control tokens, the 256 byte symbols, a few merges.
    pub(crate) fn tiny_tokenizer(w: &mut Writer, pre: &str) {
        let mut tokens: Vec<String> = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"].map(String::from).to_vec();
        tokens.extend((0..=255u8).map(|b| byte_char(b).to_string()));
        let merges = ["Ġ t", "h e", "Ġt he", "1 2"];
        for m in merges {
            tokens.push(m.replace(' ', ""));
        }
        let mut types = vec![3i32; 3];
        types.resize(tokens.len(), 1);
        w.str("tokenizer.ggml.model", "gpt2")
            .str("tokenizer.ggml.pre", pre)
            .kv("tokenizer.ggml.tokens", GgufValue::Array(GgufArray::String(tokens)))
            .kv("tokenizer.ggml.token_type", GgufValue::Array(GgufArray::I32(types)))
            .strs("tokenizer.ggml.merges", &merges)
            .u32("tokenizer.ggml.bos_token_id", 1)
            .u32("tokenizer.ggml.eos_token_id", 2)
            .u32("tokenizer.ggml.unknown_token_id", 0)
            .u32("tokenizer.ggml.padding_token_id", 2)
            .kv("tokenizer.ggml.add_bos_token", GgufValue::Bool(false))
            .str("tokenizer.chat_template", "{{ messages }}");
    }

    fn build(pre: &str) -> Result<GgufTokenizer, GgufError> {
        let mut w = Writer::new();
        tiny_tokenizer(&mut w, pre);
        tokenizer_from_gguf(&GgufFile::from_bytes("tok.gguf", w.to_bytes())?)
    }

    /// Ids in the tiny vocabulary: control 0..3, byte `b` at `3 + b`, then the merges.
    const SPACE: u32 = 3 + 0x20;
    const ONE: u32 = 3 + b'1' as u32;
    const TWO: u32 = 3 + b'2' as u32;
    const THE: u32 = 261; // "Ġthe"
    const TWELVE: u32 = 262; // "12"

    fn ids(t: &GgufTokenizer, text: &str, add_special: bool) -> Vec<u32> {
        t.tokenizer.encode(text, add_special).unwrap().get_ids().to_vec()
    }

    #[test]
    fn smollm_splits_digits_and_keeps_control_tokens_whole() {
        let t = build("smollm").unwrap();
        assert_eq!((t.vocab_size, t.n_merges, t.pre.as_str()), (263, 4, "smollm"));
        assert_eq!(t.bos, Some(TokenRef { id: 1, text: "<|im_start|>".into() }));
        assert_eq!(t.unk.as_ref().map(|u| u.id), Some(0));
        assert_eq!(t.chat_template.as_deref(), Some("{{ messages }}"));
        let text = "<|im_start|> the 12";
        let got = ids(&t, text, true);
        assert_eq!(got, [1, THE, SPACE, ONE, TWO]);
        assert_eq!(t.tokenizer.decode(&got, false).unwrap(), text);
        assert_eq!(t.tokenizer.decode(&got, true).unwrap(), " the 12");
        // Serialized and parsed back, it tokenizes the same.
        let json = t.tokenizer.to_string(false).unwrap();
        let back: Tokenizer = json.parse().unwrap();
        assert_eq!(back.encode(text, true).unwrap().get_ids(), got);
    }

    #[test]
    fn other_pre_tokenizers() {
        assert_eq!(ids(&build("gpt2").unwrap(), " the 12", false), [THE, SPACE, TWELVE]);
        assert_eq!(ids(&build("llama-bpe").unwrap(), " the 12", false), [THE, SPACE, TWELVE]);
        assert_eq!(ids(&build("qwen2").unwrap(), " the 12", false), [THE, SPACE, ONE, TWO]);
    }

    #[test]
    fn add_bos_uses_a_template() {
        let mut w = Writer::new();
        tiny_tokenizer(&mut w, "gpt2");
        w.kv("tokenizer.ggml.add_eos_token", GgufValue::Bool(true));
        let mut b = w.to_bytes();
        // Flip add_bos_token (written false) to true in place: find the key and its value byte.
        let key = b"tokenizer.ggml.add_bos_token";
        let at = b.windows(key.len()).position(|x| x == key).unwrap() + key.len() + 4;
        b[at] = 1;
        let t = tokenizer_from_gguf(&GgufFile::from_bytes("bos.gguf", b).unwrap()).unwrap();
        assert!(t.add_bos && t.add_eos);
        assert_eq!(ids(&t, " the", true), [1, THE, 2]);
        assert_eq!(ids(&t, " the", false), [THE]);
    }

    /// A tiny Gemma-style SentencePiece vocabulary (no merges, as in Gemma GGUFs): control
    /// tokens 0-5 (`<pad>`, `<eos>`, `<bos>`, `<unk>`, `<start_of_turn>`, `<end_of_turn>`),
    /// user-defined `"\n"` (6) and `"  "` (7, stored with real spaces as llama.cpp does), the 256
    /// byte tokens (8-263), then `▁t`, `he`, `▁the`, `▁`, `t`, `h`, `e`, `a` (264-271).
    pub(crate) fn tiny_sentencepiece(w: &mut Writer) {
        let mut tokens: Vec<String> =
            ["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>", "\n", "  "]
                .map(String::from)
                .to_vec();
        let mut types = vec![3i32, 3, 3, 3, 3, 3, 4, 4];
        tokens.extend((0..=255u8).map(|b| format!("<0x{b:02X}>")));
        types.resize(tokens.len(), 6);
        for t in ["\u{2581}t", "he", "\u{2581}the", "\u{2581}", "t", "h", "e", "a"] {
            tokens.push(t.to_string());
            types.push(1);
        }
        let scores: Vec<f32> = (0..tokens.len()).map(|i| -(i as f32)).collect();
        w.str("general.architecture", "gemma3")
            .str("tokenizer.ggml.model", "llama")
            .str("tokenizer.ggml.pre", "default")
            .kv("tokenizer.ggml.tokens", GgufValue::Array(GgufArray::String(tokens)))
            .kv("tokenizer.ggml.scores", GgufValue::Array(GgufArray::F32(scores)))
            .kv("tokenizer.ggml.token_type", GgufValue::Array(GgufArray::I32(types)))
            .u32("tokenizer.ggml.bos_token_id", 2)
            .u32("tokenizer.ggml.eos_token_id", 1)
            .u32("tokenizer.ggml.unknown_token_id", 3)
            .u32("tokenizer.ggml.padding_token_id", 0)
            .kv("tokenizer.ggml.add_bos_token", GgufValue::Bool(true))
            .kv("tokenizer.ggml.add_space_prefix", GgufValue::Bool(false));
    }

    fn build_sp(edit: impl FnOnce(&mut Writer)) -> Result<GgufTokenizer, GgufError> {
        let mut w = Writer::new();
        tiny_sentencepiece(&mut w);
        edit(&mut w);
        tokenizer_from_gguf(&GgufFile::from_bytes("sp.gguf", w.to_bytes())?)
    }

    const BYTE0: u32 = 8; // <0x00>
    const THE_SP: u32 = 266; // "▁the"

    #[test]
    fn merges_are_every_split_in_token_order_longest_left_first() {
        let tokens: Vec<String> = ["a", "b", "c", "ab", "bc", "abc"].map(String::from).to_vec();
        let vocab = vocab_of(tokens.iter().map(String::as_str)).unwrap();
        let pair = |a: &str, b: &str| (a.to_string(), b.to_string());
        let want = [pair("a", "b"), pair("b", "c"), pair("ab", "c"), pair("a", "bc")];
        assert_eq!(sentencepiece_merges(&tokens, &vocab), want);
        // A token too long to split gets no merge (its halves are tokens).
        let long = "a".repeat(MAX_MERGED_TOKEN_CHARS);
        let tokens = vec!["a".to_string(), long[1..].to_string(), long.clone(), format!("{long}a")];
        let vocab = vocab_of(tokens.iter().map(String::as_str)).unwrap();
        let merges = sentencepiece_merges(&tokens, &vocab);
        assert_eq!(merges.len(), 2, "{} merges", merges.len()); // "a"+"a"*127 and "a"*127+"a" only
        assert_eq!(respell("   "), "\u{2581}\u{2581}\u{2581}");
        assert_eq!((respell(" a"), respell("\n")), (" a".to_string(), "\n".to_string()));
    }

    #[test]
    fn gemma_sentencepiece_tokenizes_like_transformers() {
        let t = build_sp(|_| {}).unwrap();
        assert_eq!((t.model.as_str(), t.vocab_size, t.n_merges), ("llama", 272, 4));
        assert!(t.add_bos && !t.add_eos);
        assert_eq!(t.bos, Some(TokenRef { id: 2, text: "<bos>".into() }));
        // No template in the file, but Gemma's turn tokens: its turn format is supplied.
        assert_eq!(t.chat_template.as_deref(), Some(GEMMA_CHAT_TEMPLATE));
        assert_eq!(t.chat_template_source, ChatTemplateSource::GemmaDefault);
        // " the" -> "▁the" by merges (▁ t -> ▁t, h e -> he, ▁t he -> ▁the); "the" cannot start
        // with ▁ and stays t + he.
        assert_eq!(ids(&t, " the", false), [THE_SP]);
        assert_eq!(ids(&t, "the", false), [268, 265]);
        // Two spaces: the respelled "▁▁" (id 7) by merge; "x" falls back to its byte.
        assert_eq!(ids(&t, "a  x", false), [271, 7, BYTE0 + u32::from(b'x')]);
        // Turn tokens and newlines are matched whole; BOS is added with special tokens.
        assert_eq!(ids(&t, "<start_of_turn>the\n", true), [2, 4, 268, 265, 6]);
        let e = ids(&t, "é", false);
        assert_eq!(e, [BYTE0 + 0xC3, BYTE0 + 0xA9]);
        assert_eq!(t.tokenizer.decode(&e, false).unwrap(), "é");
        assert_eq!(t.tokenizer.decode(&[2, THE_SP, 7, 6], false).unwrap(), "<bos> the  \n");
        assert_eq!(t.tokenizer.decode(&[2, THE_SP, 5], true).unwrap(), " the");
        // Serialized and parsed back, it tokenizes the same.
        let back: Tokenizer = t.tokenizer.to_string(false).unwrap().parse().unwrap();
        let text = "a  x <start_of_turn> the";
        assert_eq!(back.encode(text, true).unwrap().get_ids(), ids(&t, text, true));
    }

    #[test]
    fn sentencepiece_outside_gemma_is_refused_with_the_reason() {
        let e = build_sp(|w| {
            w.set("general.architecture", GgufValue::String("llama".into()));
        });
        let e = e.err().unwrap().to_string();
        assert!(e.contains("Gemma files only") && e.contains("\"llama\""), "{e}");
        let e = build_sp(|w| {
            w.set("tokenizer.ggml.add_space_prefix", GgufValue::Bool(true));
        });
        assert!(e.err().unwrap().to_string().contains("add_space_prefix"));
        let e = build_sp(|w| {
            w.set("tokenizer.ggml.model", GgufValue::String("bert".into()));
        });
        let e = e.err().unwrap().to_string();
        assert!(e.contains("\"bert\" is not supported") && e.contains("SentencePiece"), "{e}");
        // A file's own chat template wins over Gemma's default.
        let t = build_sp(|w| {
            w.str("tokenizer.chat_template", "{{ messages }}");
        })
        .unwrap();
        assert_eq!(
            (t.chat_template.as_deref(), t.chat_template_source),
            (Some("{{ messages }}"), ChatTemplateSource::File)
        );
    }

    #[test]
    fn unknown_pre_is_rejected_with_the_supported_list() {
        let e = build("falcon").err().unwrap().to_string();
        assert!(e.contains("\"falcon\"") && e.contains("smollm") && e.contains("llama-bpe"), "{e}");
    }
}
