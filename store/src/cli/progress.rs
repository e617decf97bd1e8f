//! Progress bars of the long-running commands (ingest, synth, engram create, demo).

use indicatif::{ProgressBar, ProgressStyle};

/// A bytes progress bar (hidden when stderr is not a terminal).
pub(crate) fn bytes_bar(msg: &str) -> ProgressBar {
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template(
            "{msg} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar.set_message(msg.to_owned());
    bar
}
