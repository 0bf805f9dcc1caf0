//! Names from other processes or the network, made safe to print on a terminal.
use std::fmt::Write as _;

/// Escapes a process or client name for printing to a terminal: control chars (incl. ESC,
/// \r, \n, DEL, C1 controls) become \x1b-style escapes; backslash becomes \\; printable
/// Unicode stays.
///
/// Names come from other processes or from the network, so they must not be able to move
/// the cursor, rewrite earlier lines or change the terminal's state. For the same reason the
/// invisible bidirectional-text and line-separator characters, which can make a name display
/// as something else, become `\u{202e}`-style escapes.
pub fn escape_name(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c == '\\' {
            out.push_str("\\\\");
        } else if c.is_control() {
            // Unicode's control characters are exactly C0, DEL and C1: all below 0x100.
            let _ = write!(out, "\\x{:02x}", u32::from(c));
        } else if is_invisible_reordering(c) {
            let _ = write!(out, "\\u{{{:04x}}}", u32::from(c));
        } else {
            out.push(c);
        }
    }
    out
}

/// Format characters that reorder or break the displayed text (Trojan Source, CVE-2021-42574):
/// the Arabic letter mark, the left-to-right and right-to-left marks, the line and paragraph
/// separators, the bidi embeddings and overrides, and the bidi isolates.
fn is_invisible_reordering(c: char) -> bool {
    matches!(
        c,
        '\u{061c}'
            | '\u{200e}'
            | '\u{200f}'
            | '\u{2028}'
            | '\u{2029}'
            | '\u{202a}'..='\u{202e}'
            | '\u{2066}'..='\u{2069}'
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_name_escapes_terminal_controls() {
        assert_eq!(escape_name("\x1b[2Jevil"), "\\x1b[2Jevil");
        assert_eq!(escape_name("a\nb\rc\td"), "a\\x0ab\\x0dc\\x09d");
        assert_eq!(escape_name("\0\x7f\u{9b}31m"), "\\x00\\x7f\\x9b31m");
        assert_eq!(escape_name("back\\slash"), "back\\\\slash");
        // An escaped name cannot be confused with one that literally contains "\x1b".
        assert_ne!(escape_name("\x1b"), escape_name("\\x1b"));
    }

    #[test]
    fn escape_name_keeps_printable_unicode() {
        assert_eq!(escape_name("redis-server *:6379"), "redis-server *:6379");
        assert_eq!(escape_name("клиент-名前-🦀"), "клиент-名前-🦀");
        assert_eq!(escape_name(""), "");
        // Zero-width joiner is part of emoji sequences, not a trick.
        assert_eq!(escape_name("👩\u{200d}💻"), "👩\u{200d}💻");
        assert_eq!(escape_name("abc\u{202e}fed"), "abc\\u{202e}fed");
    }
}
