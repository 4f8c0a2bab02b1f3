//! Turning generated token bytes into text deltas: incremental UTF-8 decoding and stop strings.
//!
//! Pure logic, no llama.cpp: the scheduler pushes each token's bytes and forwards what comes out.
//! Text that might still become a stop string is held back until it is known not to be one, so
//! a client never sees a stop string or a part of one.

/// Decodes a stream of byte pieces into UTF-8 text, holding incomplete characters back.
#[derive(Debug, Default)]
pub struct Utf8Stream {
    pending: Vec<u8>,
}

impl Utf8Stream {
    /// Appends bytes and returns the text that is complete so far.
    /// Invalid sequences become U+FFFD rather than an error: model output is never rejected.
    pub fn push(&mut self, bytes: &[u8]) -> String {
        self.pending.extend_from_slice(bytes);
        let mut out = String::new();
        loop {
            match std::str::from_utf8(&self.pending) {
                Ok(s) => {
                    out.push_str(s);
                    self.pending.clear();
                    return out;
                }
                Err(e) => {
                    let valid = e.valid_up_to();
                    out.push_str(std::str::from_utf8(&self.pending[..valid]).unwrap_or_default());
                    match e.error_len() {
                        // Incomplete character at the end: wait for more bytes.
                        None => {
                            self.pending.drain(..valid);
                            return out;
                        }
                        Some(bad) => {
                            out.push(char::REPLACEMENT_CHARACTER);
                            self.pending.drain(..valid + bad);
                        }
                    }
                }
            }
        }
    }

    /// Whatever is left at the end of generation (an incomplete character) as replacement text.
    pub fn finish(&mut self) -> String {
        let rest = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        rest
    }
}

/// Result of feeding text to a [`StopMatcher`].
#[derive(Debug, PartialEq, Eq)]
pub enum StopScan {
    /// Text that is safe to send; generation goes on.
    Continue(String),
    /// A stop string was found: send this text (everything before the stop string) and finish.
    Stopped(String),
}

/// Finds stop strings in streamed text, holding back any suffix that could start one.
#[derive(Debug, Default)]
pub struct StopMatcher {
    stops: Vec<String>,
    held: String,
}

impl StopMatcher {
    pub fn new(stops: Vec<String>) -> Self {
        let stops = stops.into_iter().filter(|s| !s.is_empty()).collect();
        Self {
            stops,
            held: String::new(),
        }
    }

    /// Feeds newly decoded text.
    pub fn push(&mut self, text: &str) -> StopScan {
        if self.stops.is_empty() {
            return StopScan::Continue(text.to_owned());
        }
        self.held.push_str(text);
        // Earliest stop string occurrence wins.
        let found = self
            .stops
            .iter()
            .filter_map(|s| self.held.find(s.as_str()))
            .min();
        if let Some(at) = found {
            let out = self.held[..at].to_owned();
            self.held.clear();
            return StopScan::Stopped(out);
        }
        let keep = self.partial_suffix_len();
        let cut = self.held.len() - keep;
        let out = self.held[..cut].to_owned();
        self.held.drain(..cut);
        StopScan::Continue(out)
    }

    /// Text still held back when generation ends for another reason: it was no stop string.
    pub fn finish(&mut self) -> String {
        std::mem::take(&mut self.held)
    }

    /// Length in bytes of the longest suffix of `held` that is a proper prefix of a stop string.
    fn partial_suffix_len(&self) -> usize {
        let held = self.held.as_str();
        let mut best = 0;
        for stop in &self.stops {
            let max = stop.len().saturating_sub(1).min(held.len());
            for len in (best + 1..=max).rev() {
                let start = held.len() - len;
                if held.is_char_boundary(start) && stop.starts_with(&held[start..]) {
                    best = len;
                    break;
                }
            }
        }
        best
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf8_holds_split_characters_until_complete() {
        let mut s = Utf8Stream::default();
        let bytes = "é€".as_bytes();
        assert_eq!(s.push(&bytes[..1]), "");
        assert_eq!(s.push(&bytes[1..3]), "é");
        assert_eq!(s.push(&bytes[3..]), "€");
        assert_eq!(s.finish(), "");
    }

    #[test]
    fn utf8_replaces_invalid_bytes_and_goes_on() {
        let mut s = Utf8Stream::default();
        assert_eq!(s.push(b"a\xffb"), "a\u{FFFD}b");
        assert_eq!(s.push(b"\xe2\x82"), "");
        assert_eq!(s.finish(), "\u{FFFD}");
    }

    #[test]
    fn stop_string_inside_one_piece_cuts_the_text() {
        let mut m = StopMatcher::new(vec!["END".into()]);
        assert_eq!(
            m.push("hello END world"),
            StopScan::Stopped("hello ".into())
        );
    }

    #[test]
    fn stop_string_split_over_pieces_is_never_sent() {
        let mut m = StopMatcher::new(vec!["</s>".into()]);
        assert_eq!(m.push("abc<"), StopScan::Continue("abc".into()));
        assert_eq!(m.push("/"), StopScan::Continue("".into()));
        assert_eq!(m.push("s>tail"), StopScan::Stopped("".into()));
    }

    #[test]
    fn held_prefix_is_released_when_it_stops_matching() {
        let mut m = StopMatcher::new(vec!["###".into()]);
        assert_eq!(m.push("a##"), StopScan::Continue("a".into()));
        assert_eq!(m.push("b"), StopScan::Continue("##b".into()));
        assert_eq!(m.push("#"), StopScan::Continue("".into()));
        assert_eq!(m.finish(), "#");
    }

    #[test]
    fn earliest_of_several_stops_wins() {
        let mut m = StopMatcher::new(vec!["zz".into(), "b".into()]);
        assert_eq!(m.push("abzz"), StopScan::Stopped("a".into()));
    }

    #[test]
    fn no_stops_passes_text_through() {
        let mut m = StopMatcher::new(vec![String::new()]);
        assert_eq!(m.push("x"), StopScan::Continue("x".into()));
    }

    #[test]
    fn multibyte_suffix_is_cut_on_char_boundaries() {
        let mut m = StopMatcher::new(vec!["éa".into()]);
        assert_eq!(m.push("xé"), StopScan::Continue("x".into()));
        assert_eq!(m.push("b"), StopScan::Continue("éb".into()));
    }
}
