//! Formatting helpers shared by the markdown and HTML writers: percentages, durations, excerpts,
//! file-name slugs, display names, and escaping for HTML and markdown table cells.

/// Longest excerpt of a sample's prompt or answer, in characters.
pub const EXCERPT_CHARS: usize = 160;

/// `0.123` → `12%`; values under 10% keep one decimal (`4.5%`) since small rates matter here.
pub fn pct(v: f64) -> String {
    if !v.is_finite() {
        return "–".into();
    }
    let p = v * 100.0;
    if p != 0.0 && p.abs() < 10.0 { format!("{p:.1}%") } else { format!("{p:.0}%") }
}

/// A share as a percentage number without the sign, rounded as [`pct`] rounds.
pub fn num(v: f64) -> String {
    pct(v).trim_end_matches('%').to_string()
}

/// A 95% interval as `[38–52]` (percent).
pub fn ci(i: crate::eval::interval::Interval) -> String {
    format!("[{}–{}]", num(i.lo), num(i.hi))
}

/// A loss value with four significant-ish digits; NaN and infinities are shown as such.
pub fn loss(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        "∞".into()
    } else if v.abs() >= 100.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.3}")
    }
}

/// Seconds as `0.42 s`, `12.3 s`, `4 min 05 s` or `2 h 03 min`.
pub fn duration(seconds: f64) -> String {
    if !seconds.is_finite() {
        return "–".into();
    }
    if seconds < 10.0 {
        format!("{seconds:.2} s")
    } else if seconds < 60.0 {
        format!("{seconds:.1} s")
    } else if seconds < 3600.0 {
        let s = seconds.round() as u64;
        format!("{} min {:02} s", s / 60, s % 60)
    } else {
        let m = (seconds / 60.0).round() as u64;
        format!("{} h {:02} min", m / 60, m % 60)
    }
}

/// The first [`EXCERPT_CHARS`] characters of `text` with whitespace runs collapsed to one space,
/// ending in `…` when cut.
pub fn excerpt(text: &str) -> String {
    let collapsed = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if collapsed.chars().count() <= EXCERPT_CHARS {
        return collapsed;
    }
    let mut cut: String = collapsed.chars().take(EXCERPT_CHARS - 1).collect();
    cut.push('…');
    cut
}

/// A file-name-safe name: lowercase ASCII letters, digits and single dashes; `plot` when empty.
pub fn slug(name: &str) -> String {
    let mut out = String::new();
    for c in name.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('-') && !out.is_empty() {
            out.push('-');
        }
    }
    let out = out.trim_end_matches('-').to_string();
    if out.is_empty() { "plot".into() } else { out }
}

/// A reader-facing name for a defense: `patcher-k16` → `Patcher (k16)`, `sft` → `SFT alignment`,
/// `none` → `no defense`; anything else unchanged.
pub fn display_defense(defense: &str) -> String {
    match defense {
        "none" => return "no defense".into(),
        "sft" => return "SFT alignment".into(),
        _ => {}
    }
    if let Some(rest) = defense.strip_prefix("patcher") {
        let rest = rest.trim_start_matches('-');
        let (variant, k) = match rest.rsplit_once('-') {
            Some((variant, k)) if is_k(k) => (variant, Some(k)),
            _ if is_k(rest) => ("", Some(rest)),
            _ => (rest, None),
        };
        let mut name = String::from("Patcher");
        if !variant.is_empty() {
            name.push('-');
            name.push_str(variant);
        }
        if let Some(k) = k {
            name.push_str(&format!(" ({k})"));
        }
        return name;
    }
    defense.to_string()
}

fn is_k(s: &str) -> bool {
    s.len() > 1 && s.starts_with('k') && s[1..].chars().all(|c| c.is_ascii_digit())
}

/// Escapes text for HTML element content and attribute values.
pub fn html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Escapes text for HTML, then turns `` `code` `` spans into `<code>` elements (for headlines and
/// notes, which use markdown-style backticks). Every span is closed, so an unmatched backtick
/// only sets the rest of the text as code.
pub fn html_inline(text: &str) -> String {
    let mut out = String::new();
    for (i, part) in text.split('`').enumerate() {
        if i % 2 == 1 {
            out.push_str("<code>");
            out.push_str(&html(part));
            out.push_str("</code>");
        } else {
            out.push_str(&html(part));
        }
    }
    out
}

/// Makes untrusted text safe for one markdown table cell: one line, no table pipes, no raw HTML,
/// no emphasis or code markers, no links.
pub fn md_cell(text: &str) -> String {
    let mut out = String::new();
    for c in text.split_whitespace().collect::<Vec<_>>().join(" ").chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '|' | '\\' | '*' | '_' | '`' | '[' | ']' | '#' | '~' => {
                out.push('\\');
                out.push(c);
            }
            c => out.push(c),
        }
    }
    out
}

/// Markdown prose from the caller (headline, notes): keeps backtick code spans, but stops raw HTML.
pub fn md_prose(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentages() {
        assert_eq!(pct(0.0), "0%");
        assert_eq!(pct(0.045), "4.5%");
        assert_eq!(pct(0.12), "12%");
        assert_eq!(pct(1.0), "100%");
        assert_eq!(pct(f64::NAN), "–");
    }

    #[test]
    fn durations() {
        assert_eq!(duration(0.421), "0.42 s");
        assert_eq!(duration(12.34), "12.3 s");
        assert_eq!(duration(245.0), "4 min 05 s");
        assert_eq!(duration(7380.0), "2 h 03 min");
    }

    #[test]
    fn excerpts_are_cut_on_characters() {
        let long = "é".repeat(400);
        let e = excerpt(&long);
        assert_eq!(e.chars().count(), EXCERPT_CHARS);
        assert!(e.ends_with('…'));
        assert_eq!(excerpt("a\n\n b"), "a b");
    }

    #[test]
    fn slugs_are_file_safe() {
        assert_eq!(slug("LoRA lr=1e-4 / r8"), "lora-lr-1e-4-r8");
        assert_eq!(slug("../../etc"), "etc");
        assert_eq!(slug("***"), "plot");
    }

    #[test]
    fn defense_names() {
        assert_eq!(display_defense("patcher-k16"), "Patcher (k16)");
        assert_eq!(display_defense("patcher-parallel-k16"), "Patcher-parallel (k16)");
        assert_eq!(display_defense("patcher"), "Patcher");
        assert_eq!(display_defense("sft"), "SFT alignment");
        assert_eq!(display_defense("rmu"), "rmu");
    }

    #[test]
    fn escaping() {
        assert_eq!(html("<script>alert('x')</script>"), "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;");
        assert_eq!(html_inline("attack `a<b` ok"), "attack <code>a&lt;b</code> ok");
        assert_eq!(html_inline("odd `x"), "odd <code>x</code>");
        assert_eq!(md_cell("a | <b>\nc"), "a \\| &lt;b&gt; c");
    }
}
