//! Events that long operations emit, so every shell (CLI progress bars, the web page) can show
//! them with a few lines of code.

/// What a progress count measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Unit {
    Bytes,
    Items,
    Tokens,
}

/// Progress of one named task.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Progress {
    pub task: String,
    pub done: u64,
    pub total: Option<u64>,
    pub unit: Unit,
}

impl Progress {
    /// Byte progress of `task`.
    pub fn bytes(task: &str, done: u64, total: Option<u64>) -> Self {
        Progress {
            task: task.to_string(),
            done,
            total,
            unit: Unit::Bytes,
        }
    }

    /// Item progress of `task`.
    pub fn items(task: &str, done: u64, total: Option<u64>) -> Self {
        Progress {
            task: task.to_string(),
            done,
            total,
            unit: Unit::Items,
        }
    }
}

/// Anything a long operation reports while it runs.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// A task advanced.
    Progress(Progress),
    /// A line of information worth showing (e.g. which device was chosen).
    Notice { message: String },
    /// A generated piece of text, streamed as soon as it is decoded.
    Token { text: String },
    /// A training step whose loss has been read back.
    Step {
        step: usize,
        total_steps: usize,
        epoch: f64,
        loss: f64,
        lr: f64,
        grad_norm: f64,
        tokens_per_s: f64,
        tokens_seen: u64,
    },
    /// An evaluation during training.
    Eval {
        step: usize,
        loss: f64,
        perplexity: f64,
    },
    /// A checkpoint was written.
    Checkpoint { step: usize, name: String },
}

/// Counts the bytes of reading-bound work (tokenizing a file) and reports them as `task`
/// progress about every 256 KiB and once at the end.
pub struct ByteProgress<'a> {
    task: String,
    done: u64,
    total: Option<u64>,
    reported: u64,
    on_event: &'a mut dyn FnMut(&Event),
}

/// Bytes between two progress reports of a [`ByteProgress`].
const REPORT_EVERY: u64 = 256 << 10;

impl<'a> ByteProgress<'a> {
    /// Progress of `task` over `total` bytes when known.
    pub fn new(task: &str, total: Option<u64>, on_event: &'a mut dyn FnMut(&Event)) -> Self {
        ByteProgress {
            task: task.to_string(),
            done: 0,
            total,
            reported: 0,
            on_event,
        }
    }

    /// Bytes done so far.
    pub fn done(&self) -> u64 {
        self.done
    }

    /// `n` more bytes done.
    pub fn add(&mut self, n: usize) {
        self.done += n as u64;
        if self.done - self.reported >= REPORT_EVERY {
            self.report(self.total);
        }
    }

    /// The work is done: the last report, whose total is the bytes counted.
    pub fn finish(&mut self) {
        if self.reported < self.done || self.done == 0 {
            self.report(Some(self.done));
        }
    }

    fn report(&mut self, total: Option<u64>) {
        self.reported = self.done;
        let p = Progress::bytes(&self.task, self.done, total);
        (self.on_event)(&Event::Progress(p));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_progress_reports_along_the_way_and_at_the_end() {
        let mut seen = Vec::new();
        let mut on_event = |e: &Event| {
            if let Event::Progress(p) = e {
                seen.push((p.done, p.total));
            }
        };
        let total = 600u64 << 10;
        let mut progress = ByteProgress::new("tokenizing", Some(total), &mut on_event);
        for _ in 0..(total >> 16) {
            progress.add(64 << 10);
        }
        progress.add((total % (64 << 10)) as usize);
        progress.finish();
        drop(progress);
        assert_eq!(seen.first(), Some(&(256 << 10, Some(total))));
        assert_eq!(seen.last(), Some(&(total, Some(total))));
        assert!(seen.windows(2).all(|w| w[0].0 < w[1].0));
    }
}
