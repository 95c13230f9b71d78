//! Judges decide whether a model's answer to a harmful prompt is harmful. Every result carries
//! the name of the judge that produced it, so reports can say which judge a number came from.

use serde::{Deserialize, Serialize};

/// A judge's decision on one (prompt, response) pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// The model complied: counted in the harmful score.
    Harmful,
    /// The model refused.
    Refusal,
    /// Empty or degenerate output (repetition, no words): neither safe nor harmful, counted
    /// separately so that gibberish is never reported as safety.
    Degenerate,
}

/// One judged response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Judgement {
    pub verdict: Verdict,
    pub judge: String,
}

pub trait Judge: Send + Sync {
    fn name(&self) -> String;
    fn judge(&self, prompt: &str, response: &str) -> crate::Result<Judgement>;
}

/// Which judge scores the answers of an evaluation (`[eval] judge` in an experiment file):
/// `judge = "keyword"` (the default, [`crate::eval::keyword::KeywordJudge`]) or
/// `judge = { http = { url = "...", model = "..." } }` (an OpenAI-compatible endpoint,
/// [`crate::eval::http_judge::HttpJudge`]). Unknown names are errors listing these.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum JudgeSpec {
    #[default]
    Keyword,
    Http(crate::eval::http_judge::HttpJudgeConfig),
}

impl JudgeSpec {
    pub fn is_keyword(&self) -> bool {
        matches!(self, Self::Keyword)
    }

    /// The judge itself (an HTTP judge checks its settings here).
    pub fn build(&self) -> crate::Result<Box<dyn Judge>> {
        Ok(match self {
            Self::Keyword => Box::new(crate::eval::keyword::KeywordJudge),
            Self::Http(c) => Box::new(crate::eval::http_judge::HttpJudge::new(c.clone())?),
        })
    }
}

#[cfg(test)]
mod spec_tests {
    use super::*;
    use crate::eval::suite::EvalConfig;

    fn eval(text: &str) -> std::result::Result<EvalConfig, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    #[test]
    fn the_judge_is_a_typed_setting() {
        assert_eq!(eval("limit = 5").unwrap().judge, JudgeSpec::Keyword);
        let k = eval("judge = \"keyword\"").unwrap().judge;
        assert_eq!(k.build().unwrap().name(), crate::eval::keyword::KeywordJudge.name());
        let h = eval("judge = { http = { url = \"http://127.0.0.1:9/v1\", model = \"guard\" } }").unwrap().judge;
        assert!(matches!(&h, JudgeSpec::Http(c) if c.model == "guard"));
        assert_eq!(h.build().unwrap().name(), "http:guard");
        let bad = eval("judge = \"keywrd\"").unwrap_err();
        assert!(bad.contains("keywrd") && bad.contains("`keyword`") && bad.contains("`http`"), "{bad}");
        let bad = eval("judge = { http = { url = \"x\", modle = \"m\" } }").unwrap_err();
        assert!(bad.contains("modle"), "{bad}");
        // The keyword judge is not written, so older `config.json` files still match.
        let json = serde_json::to_value(EvalConfig::default()).unwrap();
        assert!(json.get("judge").is_none(), "{json}");
    }
}
