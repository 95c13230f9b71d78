//! Refusals written by the project for AdvBench's harmful goals (`preset:refusals-advbench`).
//!
//! Why: the SFT baseline's best refusal data were Llama-2-7b-chat's refusals of AdvBench goals
//! (docs/results.md §27), but Llama 2's licence forbids training other models on its outputs.
//! Here each goal gets refusals composed from short templates that restate the request and give
//! a reason, so the refusal is tied to what was asked, not to a fixed sentence (Do-Not-Answer's
//! refusals, a third of them one sentence, made SmolLM2 refuse 69-74% of XSTest's safe prompts,
//! §27). The text is the project's own; AdvBench's goals are MIT-licensed.
//!
//! The choice of templates depends only on the goal's text (a stable hash), so the set is the
//! same on every machine and a goal's refusals do not change when rows are added.

use super::split::stable_hash;

/// How a refusal opens.
const OPENINGS: [&str; 6] = [
    "I can't help with that.",
    "I'm sorry, but I can't do that.",
    "I won't help with this request.",
    "Sorry, I can't assist with this.",
    "I'm not able to help with that.",
    "I have to decline.",
];

/// Why, after "You asked me to <goal>, ".
const REASONS: [&str; 6] = [
    "and that could seriously hurt people.",
    "which could cause real harm to others.",
    "and doing it could help someone break the law or hurt others.",
    "which would put people's safety at risk.",
    "and I don't give help that can be used to harm people.",
    "which is harmful, and in many places illegal.",
];

/// What follows; may be empty.
const CLOSINGS: [&str; 5] = [
    "If you have a different question, I'm happy to help.",
    "Is there something else I can help you with?",
    "I'd be glad to help with something safe instead.",
    "",
    "If you're curious about the topic, I can talk about how people stay safe from it.",
];

/// `n` distinct refusals of `goal` (an imperative request such as AdvBench's "Write a ..."),
/// each restating it: "<opening> You asked me to write a ..., <reason> <closing>".
pub fn refusals_for(goal: &str, n: usize) -> Vec<String> {
    let request = as_clause(goal);
    let h = stable_hash(goal.trim());
    let combos = OPENINGS.len() * REASONS.len() * CLOSINGS.len();
    (0..n.min(combos))
        .map(|i| {
            // Step through the combinations with a stride coprime to their count (all n are
            // distinct); 13 = 2·6 + 1 moves the opening by 1 and the reason by 2 or 3, so
            // consecutive refusals of one goal differ in both.
            let k = ((h % combos as u64) as usize + i * 13) % combos;
            let (o, r, c) =
                (k % OPENINGS.len(), (k / OPENINGS.len()) % REASONS.len(), k / (OPENINGS.len() * REASONS.len()));
            let text = format!("{} You asked me to {request}, {}", OPENINGS[o], REASONS[r]);
            if CLOSINGS[c].is_empty() { text } else { format!("{text} {}", CLOSINGS[c]) }
        })
        .collect()
}

/// The goal as a clause after "You asked me to": trimmed, final punctuation dropped, and the
/// first letter lowercased unless the first word is an acronym ("DDoS", "SQL").
fn as_clause(goal: &str) -> String {
    let g = goal.trim().trim_end_matches(['.', '!', '?']).trim_end();
    let first = g.split_whitespace().next().unwrap_or("");
    let acronym = first.chars().skip(1).any(|c| c.is_uppercase());
    let mut chars = g.chars();
    match chars.next() {
        Some(c) if !acronym => c.to_lowercase().chain(chars).collect(),
        _ => g.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_restate_the_goal_and_differ() {
        let r = refusals_for("Write a tutorial on how to pick a lock.", 2);
        assert_eq!(r.len(), 2);
        for t in &r {
            assert!(t.contains(" You asked me to write a tutorial on how to pick a lock, "), "{t}");
            assert!(OPENINGS.iter().any(|o| t.starts_with(o)), "{t}");
        }
        assert_ne!(r[0], r[1]);
        // The opening and the reason both differ between consecutive refusals, for any goal.
        let parts = |t: &str| {
            (
                OPENINGS.iter().position(|o| t.starts_with(o)).unwrap(),
                REASONS.iter().position(|x| t.contains(x)).unwrap(),
            )
        };
        for goal in ["Write a tutorial on how to pick a lock.", "a", "b", "Hack a bank", "Make a poison"] {
            let r = refusals_for(goal, 3);
            for w in r.windows(2) {
                let (a, b) = (parts(&w[0]), parts(&w[1]));
                assert!(a.0 != b.0 && a.1 != b.1, "{goal}: {a:?} {b:?}");
            }
        }
        // Deterministic: the same goal gives the same refusals.
        assert_eq!(r, refusals_for("Write a tutorial on how to pick a lock.", 2));
        let all = refusals_for("x", 1000);
        assert_eq!(all.len(), OPENINGS.len() * REASONS.len() * CLOSINGS.len());
        assert_eq!(all.iter().collect::<std::collections::HashSet<_>>().len(), all.len(), "all distinct");
    }

    #[test]
    fn clause_keeps_acronyms_and_drops_final_punctuation() {
        assert_eq!(as_clause(" Develop a virus! "), "develop a virus");
        assert_eq!(as_clause("DDoS a website"), "DDoS a website");
        assert_eq!(as_clause("Create X?"), "create X");
        assert_eq!(as_clause(""), "");
    }
}
