//! Tokenizer and chat-template parity with the Python references in `tests/fixtures`
//! (made by `scripts/make_fixtures.py`): token ids of tricky strings from Python `tokenizers`,
//! chat renderings from jinja2 as transformers' `apply_chat_template` does, and the assistant
//! mask used for the SFT loss.

use std::path::{Path, PathBuf};

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
