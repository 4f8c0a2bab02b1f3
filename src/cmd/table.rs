//! Text the CLI prints from the network: control characters escaped (a peer's name or an
//! offer's text must not drive the terminal), cells shortened, columns aligned.

/// `text` with every control character (ESC, CR, BEL, …) written as a `\u{..}` escape.
pub fn clean(text: &str) -> String {
    if !text.chars().any(char::is_control) {
        return text.to_owned();
    }
    text.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_unicode().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// [`clean`]ed and cut to `n` characters, the last one `…` when cut.
pub fn short(text: &str, n: usize) -> String {
    let text = clean(text);
    if text.chars().count() <= n {
        text
    } else {
        text.chars()
            .take(n.saturating_sub(1))
            .chain(['…'])
            .collect()
    }
}

/// Rows under a header, columns padded to their widest cell, two spaces apart.
pub fn render<const N: usize>(header: [&str; N], rows: &[[String; N]]) -> String {
    let header = header.map(String::from);
    let mut widths = header.clone().map(|h| h.chars().count());
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    for r in std::iter::once(&header).chain(rows) {
        let cells: Vec<String> = r
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_reach_the_terminal_only_as_text() {
        let evil = "node\x1b[2J\x1b]0;pwned\x07\r";
        let shown = clean(evil);
        assert!(!shown.chars().any(char::is_control), "{shown:?}");
        assert!(shown.starts_with("node\\u{1b}[2J"), "{shown}");
        assert_eq!(clean("plain — ünïcode"), "plain — ünïcode");
    }

    #[test]
    fn short_cuts_with_an_ellipsis_and_render_aligns() {
        assert_eq!(short("abcdef", 4), "abc…");
        assert_eq!(short("abc", 4), "abc");
        let t = render(["A", "LONG"], &[["xx".into(), "y".into()]]);
        assert_eq!(t, "A   LONG\nxx  y\n");
    }
}
