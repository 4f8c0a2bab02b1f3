//! Join codes: `7-plasma-quiver-lantern`, a rendezvous channel number and a few words. Pure:
//! making one from random numbers, parsing what a person typed, and the two things the
//! rendezvous derives from it (the channel tag relays filter on, the SPAKE2 password).
//!
//! The words come from the BIP-39 English wordlist (2048 words, their first four letters
//! unique), compiled into the binary from `words.txt`: the list of the BIP-39 specification
//! (BSD-2-Clause), as shipped in the `bip39` crate (CC0-1.0).

use std::fmt;

use sha2::{Digest, Sha256};

/// The wordlist, one word a line.
const WORDS_TXT: &str = include_str!("words.txt");
/// Words in a code: 3 × 11 bits. An online guess burns the code, so 2^33 is plenty; offline
/// guessing is what SPAKE2 rules out.
pub const WORDS_PER_CODE: usize = 3;
/// Channel numbers run 1..=MAX_CHANNEL. The number is public (relays see its tag): it only
/// keeps concurrent invites apart, like magic-wormhole's nameplate.
pub const MAX_CHANNEL: u16 = 999;

/// Why a string is not a join code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodeError {
    #[error("not a join code: expected NUMBER-WORD-WORD-WORD, like 7-plasma-quiver-lantern")]
    Shape,
    #[error("not a join code: the number must be 1 to {MAX_CHANNEL}")]
    Channel,
    #[error("not a join code: {0:?} is not in the code wordlist (a typo?)")]
    Word(String),
}

/// A join code: channel number and words (lower case, all in the wordlist).
#[derive(Clone, PartialEq, Eq)]
pub struct Code {
    pub channel: u16,
    pub words: Vec<String>,
}

// The words are the secret: never in logs by accident.
impl fmt::Debug for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Code({}-…)", self.channel)
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.channel)?;
        for w in &self.words {
            write!(f, "-{w}")?;
        }
        Ok(())
    }
}

/// The compiled-in wordlist.
pub fn words() -> impl Iterator<Item = &'static str> {
    WORDS_TXT.lines().filter(|w| !w.is_empty())
}

fn word_at(i: usize) -> &'static str {
    words().nth(i).unwrap_or("abandon")
}

impl Code {
    /// A code on `channel` with words picked by `pick(n)` (a uniform index below `n`).
    pub fn generate(channel: u16, mut pick: impl FnMut(usize) -> usize) -> Code {
        let n = words().count();
        Code {
            channel: channel.clamp(1, MAX_CHANNEL),
            words: (0..WORDS_PER_CODE)
                .map(|_| word_at(pick(n) % n).to_string())
                .collect(),
        }
    }

    /// Reads a code as typed: any case, `-` or spaces between the parts.
    pub fn parse(s: &str) -> Result<Code, CodeError> {
        let lower = s.trim().to_ascii_lowercase();
        let mut parts = lower
            .split(|c: char| c == '-' || c.is_whitespace())
            .filter(|p| !p.is_empty());
        let channel: u16 = parts
            .next()
            .ok_or(CodeError::Shape)?
            .parse()
            .map_err(|_| CodeError::Shape)?;
        if !(1..=MAX_CHANNEL).contains(&channel) {
            return Err(CodeError::Channel);
        }
        let typed: Vec<String> = parts.map(str::to_owned).collect();
        if typed.len() != WORDS_PER_CODE {
            return Err(CodeError::Shape);
        }
        if let Some(bad) = typed.iter().find(|w| !words().any(|k| k == w.as_str())) {
            return Err(CodeError::Word(bad.clone()));
        }
        Ok(Code {
            channel,
            words: typed,
        })
    }

    /// Whether `s` looks like a code rather than a ticket (starts with a number and a dash).
    pub fn looks_like(s: &str) -> bool {
        let s = s.trim();
        let digits = s.chars().take_while(char::is_ascii_digit).count();
        digits > 0 && s[digits..].starts_with('-')
    }

    /// The tag relays filter rendezvous events on: derived from the number only, so it says
    /// nothing of the words or of who invites.
    pub fn channel_tag(&self) -> String {
        channel_tag(self.channel)
    }

    /// The SPAKE2 password: the whole code, normalised.
    pub fn password(&self) -> Vec<u8> {
        self.to_string().into_bytes()
    }
}

/// The rendezvous tag of channel `n`.
pub fn channel_tag(n: u16) -> String {
    let digest = Sha256::digest(format!("mesh/invite/1 channel {n}").as_bytes());
    data_encoding::HEXLOWER.encode(&digest[..16])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wordlist_has_2048_distinct_words_with_unique_four_letter_prefixes() {
        let all: Vec<&str> = words().collect();
        assert_eq!(all.len(), 2048);
        let prefixes: std::collections::BTreeSet<&str> =
            all.iter().map(|w| &w[..w.len().min(4)]).collect();
        assert_eq!(prefixes.len(), 2048);
    }

    #[test]
    fn codes_print_and_parse_back_whatever_the_case_and_separators() {
        let mut i = 0;
        let code = Code::generate(7, |n| {
            i += 700;
            i % n
        });
        let text = code.to_string();
        assert!(
            text.starts_with("7-") && text.split('-').count() == 4,
            "{text}"
        );
        assert_eq!(Code::parse(&text).unwrap(), code);
        let shouted = text.to_uppercase().replace('-', " ");
        assert_eq!(Code::parse(&format!("  {shouted} ")).unwrap(), code);
        assert!(Code::looks_like(&text) && !Code::looks_like("mesh1abc"));
    }

    #[test]
    fn malformed_codes_say_what_is_wrong() {
        assert_eq!(Code::parse("plasma-quiver"), Err(CodeError::Shape));
        assert_eq!(Code::parse("7-abandon-ability"), Err(CodeError::Shape));
        assert_eq!(
            Code::parse("0-abandon-ability-able"),
            Err(CodeError::Channel)
        );
        assert_eq!(
            Code::parse("7-abandon-ability-zzzz"),
            Err(CodeError::Word("zzzz".into()))
        );
    }

    #[test]
    fn the_channel_tag_depends_on_the_number_only() {
        let a = Code::parse("7-abandon-ability-able").unwrap();
        let b = Code::parse("7-zoo-zoo-zoo").unwrap();
        let c = Code::parse("8-abandon-ability-able").unwrap();
        assert_eq!(a.channel_tag(), b.channel_tag());
        assert_ne!(a.channel_tag(), c.channel_tag());
        assert!(!a.channel_tag().contains("abandon"));
        assert!(
            !format!("{a:?}").contains("abandon"),
            "Debug hides the words"
        );
    }
}
