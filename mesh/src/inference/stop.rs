//! Stop strings over streamed text: which part of the text generated so far can be sent, and
//! where it ends. Text that could be the start of a stop string is held back until the next
//! piece shows whether it is; a stop string ends the text before it (it is not part of the
//! answer). Pure: pieces in, text out.

/// The text of one generation, as pieces arrive.
#[derive(Debug, Default)]
pub struct StopScan {
    stops: Vec<String>,
    text: String,
    sent: usize,
}

impl StopScan {
    /// Watches for `stops` (empty ones are ignored).
    pub fn new(stops: &[String]) -> Self {
        Self {
            stops: stops.iter().filter(|s| !s.is_empty()).cloned().collect(),
            ..Self::default()
        }
    }

    /// Watches for `stops` in an answer that starts with `sent`, which was already sent (by a
    /// lost executor): a stop string that begins in it is still found, and it is never sent
    /// again.
    pub fn resumed(stops: &[String], sent: &str) -> Self {
        Self {
            text: sent.to_owned(),
            sent: sent.len(),
            ..Self::new(stops)
        }
    }

    /// Adds `piece`; returns the text that can be sent now, and whether a stop string ended
    /// the generation (the text is then cut before it).
    pub fn push(&mut self, piece: &str) -> (String, bool) {
        let longest = self.stops.iter().map(String::len).max().unwrap_or(0);
        let mut from = self.sent.saturating_sub(longest);
        while !self.text.is_char_boundary(from) {
            from -= 1;
        }
        self.text.push_str(piece);
        let found = (self.stops.iter())
            .filter_map(|stop| self.text[from..].find(stop.as_str()).map(|at| from + at))
            .min();
        if let Some(at) = found {
            // Text already sent cannot be taken back (a resumed answer's start never ends in
            // the beginning of a stop string: that was held back).
            let at = at.max(self.sent);
            self.text.truncate(at);
            return (self.take(at), true);
        }
        let held = (self.stops.iter())
            .flat_map(|stop| {
                (1..stop.len())
                    .filter(|&k| stop.is_char_boundary(k) && self.text.ends_with(&stop[..k]))
            })
            .max()
            .unwrap_or(0);
        let ready = self.text.len() - held.min(self.text.len() - self.sent);
        (self.take(ready), false)
    }

    /// The rest, once generation ended without a stop string.
    pub fn finish(&mut self) -> String {
        self.take(self.text.len())
    }

    /// The whole text so far (held-back text included).
    pub fn text(&self) -> &str {
        &self.text
    }

    fn take(&mut self, until: usize) -> String {
        let ready = self.text[self.sent..until].to_owned();
        self.sent = until;
        ready
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(stops: &[&str], pieces: &[&str]) -> (Vec<String>, bool, String) {
        let stops: Vec<String> = stops.iter().map(|s| (*s).to_owned()).collect();
        let mut scan = StopScan::new(&stops);
        let mut sent = Vec::new();
        for piece in pieces {
            let (ready, stopped) = scan.push(piece);
            sent.push(ready);
            if stopped {
                return (sent, true, scan.text().to_owned());
            }
        }
        sent.push(scan.finish());
        (sent, false, scan.text().to_owned())
    }

    #[test]
    fn without_stop_strings_every_piece_goes_at_once() {
        let (sent, stopped, text) = run(&[], &["Hel", "lo"]);
        assert_eq!(sent, ["Hel", "lo", ""]);
        assert!(!stopped);
        assert_eq!(text, "Hello");
    }

    #[test]
    fn a_stop_string_across_pieces_ends_the_text_before_it() {
        let (sent, stopped, text) = run(&["\nUser:"], &["Sure.", "\nUs", "er: hi"]);
        assert_eq!(sent, ["Sure.", "", ""]);
        assert!(stopped);
        assert_eq!(text, "Sure.");
    }

    #[test]
    fn a_false_start_is_sent_once_it_is_clear() {
        let (sent, stopped, text) = run(&["END"], &["a E", "N", "x", " b"]);
        assert_eq!(sent.concat(), "a ENx b");
        assert_eq!(sent[0], "a ");
        assert_eq!(sent[1], "");
        assert!(!stopped);
        assert_eq!(text, "a ENx b");
    }

    #[test]
    fn the_earliest_stop_string_wins_and_characters_stay_whole() {
        let (sent, stopped, text) = run(&["é!", "b"], &["aé", "é!b"]);
        assert!(stopped);
        assert_eq!(text, "aé");
        assert_eq!(sent.concat(), "aé");
    }

    #[test]
    fn a_resumed_answer_is_watched_from_its_start_and_never_sent_again() {
        let stops = vec!["END".to_owned()];
        let mut scan = StopScan::resumed(&stops, "The story ");
        assert_eq!(scan.push("goes on E"), ("goes on ".to_owned(), false));
        assert_eq!(scan.push("ND here"), (String::new(), true));
        assert_eq!(scan.text(), "The story goes on ");
        let mut scan = StopScan::resumed(&stops, "Done.");
        assert_eq!(scan.push(" More"), (" More".to_owned(), false));
        assert_eq!(scan.finish(), "");
    }
}
