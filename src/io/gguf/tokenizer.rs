//! A Hugging Face `tokenizers` tokenizer rebuilt from GGUF `tokenizer.ggml.*` metadata.
//!
//! Keys follow the GGUF spec (ggml `docs/gguf.md`, "Tokenizer"): `tokenizer.ggml.model`,
//! `.pre`, `.tokens`, `.token_type`, `.merges`, `.{bos,eos,unknown,padding}_token_id`,
//! `.add_{bos,eos}_token`, and `tokenizer.chat_template`. Only byte-level BPE
//! (`model = "gpt2"`) is supported. The pre-tokenizer is chosen by `tokenizer.ggml.pre`, the
//! name llama.cpp's `convert_hf_to_gguf.py` gives to the original Hugging Face pre-tokenizer;
//! each supported name is mapped back to the `tokenizer.json` pre-tokenizer of its model family
//! (the regexes are those of `llama-vocab.cpp` / the original `tokenizer.json` files). An
//! unknown name is an error: ignoring it would silently split real text differently.
//!
//! Token types (`enum llama_token_type`): 1 normal, 2 unknown, 3 control, 4 user-defined,
//! 5 unused, 6 byte. Control tokens become special added tokens, user-defined ones plain added
//! tokens, so that `<|im_start|>` and friends are matched whole in text.

use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::{BPE, Vocab};
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::processors::PostProcessorWrapper;
use tokenizers::processors::template::{SpecialToken, TemplateProcessing};
use tokenizers::{AddedToken, SplitDelimiterBehavior, Tokenizer};

use super::{GgufError, GgufFile};

/// Values of `tokenizer.ggml.pre` this module can rebuild.
pub const SUPPORTED_PRE: &[&str] = &["default", "gpt2", "smollm", "llama-bpe", "qwen2"];

/// GGUF token type of control tokens (`LLAMA_TOKEN_TYPE_CONTROL`).
pub const TOKEN_TYPE_CONTROL: i64 = 3;
/// GGUF token type of user-defined added tokens (`LLAMA_TOKEN_TYPE_USER_DEFINED`).
pub const TOKEN_TYPE_USER_DEFINED: i64 = 4;

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

/// The rebuilt tokenizer plus what `tokenizer_config.json` / `config.json` need.
pub struct GgufTokenizer {
    pub tokenizer: Tokenizer,
    /// `tokenizer.ggml.pre` (or `"default"` when absent).
    pub pre: String,
    pub vocab_size: usize,
    pub n_merges: usize,
    pub bos: Option<TokenRef>,
    pub eos: Option<TokenRef>,
    pub unk: Option<TokenRef>,
    pub pad: Option<TokenRef>,
    pub add_bos: bool,
    pub add_eos: bool,
    pub chat_template: Option<String>,
}

/// Build the tokenizer described by `gguf`'s metadata.
pub fn tokenizer_from_gguf(gguf: &GgufFile) -> Result<GgufTokenizer, GgufError> {
    let err = |msg: String| GgufError::Tokenizer { path: gguf.path().to_path_buf(), msg };
    let model = gguf.get_str("tokenizer.ggml.model")?;
    if model != "gpt2" {
        return Err(err(format!(
            "tokenizer.ggml.model = {model:?} is not supported (supported: \"gpt2\", byte-level BPE)"
        )));
    }
    let pre = gguf.get_str_opt("tokenizer.ggml.pre")?.unwrap_or("default").to_string();
    let pre_tokenizer = pre_tokenizer_for(&pre).map_err(err)?;

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
    let mut vocab = Vocab::with_capacity(tokens.len());
    for (id, tok) in tokens.iter().enumerate() {
        let id = u32::try_from(id).map_err(|_| err("more than 2^32 tokens".into()))?;
        if let Some(prev) = vocab.insert(tok.clone(), id) {
            return Err(err(format!("token {tok:?} appears twice (ids {prev} and {id})")));
        }
    }
    let merges = gguf.get_str_array("tokenizer.ggml.merges")?;
    let merges = merges
        .iter()
        .enumerate()
        .map(|(i, m)| match m.split_once(' ') {
            Some((a, b)) => Ok((a.to_string(), b.to_string())),
            None => Err(err(format!("tokenizer.ggml.merges[{i}] = {m:?} has no space"))),
        })
        .collect::<Result<Vec<_>, _>>()?;
    let n_merges = merges.len();

    let bpe = BPE::builder()
        .vocab_and_merges(vocab, merges)
        // Llama 3 looks whole words up in the vocabulary before merging (its tokenizer.json
        // sets ignore_merges, as does llama.cpp for `llama-bpe`).
        .ignore_merges(pre == "llama-bpe")
        .build()
        .map_err(|e| err(format!("BPE model: {e}")))?;

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
    let add_bos = gguf.get_bool_opt("tokenizer.ggml.add_bos_token")?.unwrap_or(false);
    let add_eos = gguf.get_bool_opt("tokenizer.ggml.add_eos_token")?.unwrap_or(false);

    let mut tokenizer = Tokenizer::new(bpe);
    tokenizer.with_pre_tokenizer(Some(pre_tokenizer));
    tokenizer.with_decoder(Some(ByteLevelDecoder::default()));
    tokenizer.with_post_processor(Some(post_processor(&bos, &eos, add_bos, add_eos).map_err(err)?));

    let added = |wanted: i64, special: bool| -> Vec<AddedToken> {
        let ids = types.iter().zip(tokens).filter(|(t, _)| **t == wanted);
        ids.map(|(_, tok)| AddedToken::from(tok.clone(), special)).collect()
    };
    tokenizer.add_special_tokens(&added(TOKEN_TYPE_CONTROL, true));
    tokenizer.add_tokens(&added(TOKEN_TYPE_USER_DEFINED, false));

    Ok(GgufTokenizer {
        tokenizer,
        pre,
        vocab_size: tokens.len(),
        n_merges,
        bos,
        eos,
        unk,
        pad,
        add_bos,
        add_eos,
        chat_template: gguf.get_str_opt("tokenizer.chat_template")?.map(str::to_string),
    })
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

    #[test]
    fn unknown_pre_is_rejected_with_the_supported_list() {
        let e = build("falcon").err().unwrap().to_string();
        assert!(e.contains("\"falcon\"") && e.contains("smollm") && e.contains("llama-bpe"), "{e}");
    }
}
