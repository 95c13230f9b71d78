//! Tokenizer and chat-template parity with the Python references in `tests/fixtures`
//! (made by `scripts/make_fixtures.py`): token ids of tricky strings from Python `tokenizers`,
//! chat renderings from jinja2 as transformers' `apply_chat_template` does, and the assistant
//! mask used for the SFT loss. For Gemma: the turn format the GGUF import supplies, on the tiny
//! fixture and, when `models/gemma3-270m` exists (`patcher fetch gemma3-270m`), the real
//! tokenizer's ids against transformers' conversion of the same GGUF.

use std::path::{Path, PathBuf};

use patcher::io::gguf::import::import_gguf;
use patcher::io::gguf::tokenizer::GEMMA_CHAT_TEMPLATE;
use patcher::tokenizer::{ChatMessage, ChatTokenizer};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn tokenizer_json_matches_python_ids_on_tricky_strings() {
    let tok = ChatTokenizer::from_dir(&fixture("tokenizer")).unwrap();
    let cases = json(&fixture("tokenizer/cases.json"));
    let cases = cases.as_array().unwrap();
    for c in cases {
        let text = c["text"].as_str().unwrap();
        let want: Vec<u32> = serde_json::from_value(c["ids"].clone()).unwrap();
        assert_eq!(tok.encode(text).unwrap(), want, "ids of {text:?}");
        let decoded = c["decoded"].as_str().unwrap();
        assert_eq!(tok.decode(&want, false).unwrap(), decoded, "decode of {text:?}");
    }
    println!("{} tokenizer cases match", cases.len());
}

#[test]
fn chat_template_renders_like_jinja2() {
    let tok = ChatTokenizer::from_dir(&fixture("tokenizer")).unwrap();
    let f = json(&fixture("chat_template.json"));
    assert_eq!(tok.chat_template.as_deref(), f["template"].as_str());
    for case in f["cases"].as_array().unwrap() {
        let msgs: Vec<ChatMessage> = serde_json::from_value(case["messages"].clone()).unwrap();
        let add_gen = case["add_generation_prompt"].as_bool().unwrap();
        assert_eq!(tok.render(&msgs, add_gen).unwrap(), case["expected"].as_str().unwrap());
    }
}

#[test]
fn assistant_mask_covers_only_replies_and_their_end_token() {
    let tok = ChatTokenizer::from_dir(&fixture("tokenizer")).unwrap();
    let msgs = vec![
        ChatMessage::new("system", "Be brief."),
        ChatMessage::new("user", "Say hi"),
        ChatMessage::new("assistant", "hi there"),
        ChatMessage::new("user", "Again"),
        ChatMessage::new("assistant", "hello"),
    ];
    let (ids, mask) = tok.encode_chat(&msgs).unwrap();
    assert_eq!(ids.len(), mask.len());
    let im_end = tok.tokenizer.token_to_id("<|im_end|>").unwrap();
    let masked: Vec<u32> = ids.iter().zip(&mask).filter(|(_, m)| **m == 1).map(|(i, _)| *i).collect();
    let mut want = tok.encode("hi there").unwrap();
    want.push(im_end);
    want.extend(tok.encode("hello").unwrap());
    want.push(im_end);
    assert_eq!(masked, want, "masked tokens are exactly the replies and their <|im_end|>");
    // Nothing of the system or user turns is in the mask.
    let text = tok.decode(&masked, false).unwrap();
    assert!(!text.contains("Say hi") && !text.contains("Be brief") && !text.contains("user"), "{text}");
}

/// `tiny-gemma3.gguf` imported into a temporary directory (removed by the caller).
fn tiny_gemma3_dir(tag: &str) -> PathBuf {
    let out = std::env::temp_dir().join(format!("patcher-tokparity-gemma3-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    import_gguf(&fixture("tiny-gemma3.gguf"), &out).unwrap();
    out
}

fn conversation() -> Vec<ChatMessage> {
    vec![
        ChatMessage::new("system", "Be brief."),
        ChatMessage::new("user", "Say hi"),
        ChatMessage::new("assistant", "hi there"),
        ChatMessage::new("user", "Again"),
        ChatMessage::new("assistant", "hello"),
    ]
}

/// The assistant mask of [`conversation`] is exactly each reply and its `<end_of_turn>`, and
/// the conversation starts with a single `<bos>`.
fn check_gemma_mask(tok: &ChatTokenizer) {
    let (bos, eot) = (tok.tokenizer.token_to_id("<bos>").unwrap(), tok.tokenizer.token_to_id("<end_of_turn>").unwrap());
    assert!(tok.stop_ids.contains(&eot) && tok.stop_ids.contains(&tok.tokenizer.token_to_id("<eos>").unwrap()));
    let (ids, mask) = tok.encode_chat(&conversation()).unwrap();
    assert_eq!(ids[0], bos);
    assert_eq!(ids.iter().filter(|&&i| i == bos).count(), 1, "one <bos>");
    let masked: Vec<u32> = ids.iter().zip(&mask).filter(|(_, m)| **m == 1).map(|(i, _)| *i).collect();
    let mut want = tok.encode("hi there").unwrap();
    want.push(eot);
    want.extend(tok.encode("hello").unwrap());
    want.push(eot);
    assert_eq!(masked, want, "masked tokens are exactly the replies and their <end_of_turn>");
    let text = tok.decode(&masked, false).unwrap();
    assert!(!text.contains("Say hi") && !text.contains("Be brief") && !text.contains("model"), "{text}");
}

#[test]
fn gemma_chat_template_renders_like_jinja2() {
    let dir = tiny_gemma3_dir("template");
    let tok = ChatTokenizer::from_dir(&dir).unwrap();
    let f = json(&fixture("gemma_chat_template.json"));
    assert_eq!(f["template"].as_str(), Some(GEMMA_CHAT_TEMPLATE), "regenerate the fixture (make_fixtures.py)");
    assert_eq!(tok.chat_template.as_deref(), Some(GEMMA_CHAT_TEMPLATE));
    let cases = f["cases"].as_array().unwrap();
    for case in cases {
        let msgs: Vec<ChatMessage> = serde_json::from_value(case["messages"].clone()).unwrap();
        let add_gen = case["add_generation_prompt"].as_bool().unwrap();
        assert_eq!(tok.render(&msgs, add_gen).unwrap(), case["expected"].as_str().unwrap());
    }
    check_gemma_mask(&tok);
    let _ = std::fs::remove_dir_all(&dir);
    println!("{} Gemma chat renderings match", cases.len());
}

/// The real Gemma 3 tokenizer, when `patcher fetch gemma3-270m` has run: ids and decodings of
/// `tests/fixtures/gemma3-270m.tokenizer_cases.json` (transformers' GGUF conversion), one
/// `<bos>` per prompt, and the assistant mask. Skipped without the model (CI does not fetch it).
#[test]
fn real_gemma3_tokenizer_matches_transformers() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/gemma3-270m");
    if !dir.join("tokenizer.json").is_file() {
        println!("skipped: models/gemma3-270m is missing (`cargo run --release -- fetch gemma3-270m`)");
        return;
    }
    let tok = ChatTokenizer::from_dir(&dir).unwrap();
    let cases = json(&fixture("gemma3-270m.tokenizer_cases.json"));
    let cases = cases.as_array().unwrap();
    for c in cases {
        let text = c["text"].as_str().unwrap();
        let want: Vec<u32> = serde_json::from_value(c["ids"].clone()).unwrap();
        assert_eq!(tok.encode(text).unwrap(), want, "ids of {text:?}");
        assert_eq!(tok.decode(&want, false).unwrap(), c["decoded"].as_str().unwrap(), "decode of {text:?}");
    }
    let prompt = tok.encode_prompt(&[ChatMessage::new("user", "What is the capital of France?")]).unwrap();
    assert_eq!(prompt[..2], [2, 105], "<bos><start_of_turn>");
    assert_eq!(prompt.iter().filter(|&&i| i == 2).count(), 1, "one <bos>: {prompt:?}");
    assert_eq!(tok.decode(&prompt[prompt.len() - 3..], false).unwrap(), "<start_of_turn>model\n");
    check_gemma_mask(&tok);
    println!("{} real Gemma 3 tokenizer cases match transformers", cases.len());
}
