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

/// A buffered reader that reports how many bytes have been consumed as `task` progress (about
/// every 256 KiB and at the end), so reading-bound work such as tokenizing shows a bar.
pub struct ProgressReader<'a, R> {
    inner: R,
    task: String,
    done: u64,
    total: Option<u64>,
    reported: u64,
    on_event: &'a mut dyn FnMut(&Event),
}

impl<'a, R: std::io::BufRead> ProgressReader<'a, R> {
    /// Wrap `inner` (of `total` bytes when known).
    pub fn new(
        inner: R,
        task: &str,
        total: Option<u64>,
        on_event: &'a mut dyn FnMut(&Event),
    ) -> Self {
        ProgressReader {
            inner,
            task: task.to_string(),
            done: 0,
            total,
            reported: 0,
            on_event,
        }
    }
}

/// Bytes between two progress reports of a [`ProgressReader`].
const REPORT_EVERY: u64 = 256 << 10;

impl<R: std::io::BufRead> std::io::Read for ProgressReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let available = std::io::BufRead::fill_buf(self)?;
        let n = available.len().min(buf.len());
        buf[..n].copy_from_slice(&available[..n]);
        std::io::BufRead::consume(self, n);
        Ok(n)
    }
}

impl<R: std::io::BufRead> std::io::BufRead for ProgressReader<'_, R> {
    fn fill_buf(&mut self) -> std::io::Result<&[u8]> {
        let buf = self.inner.fill_buf()?;
        if buf.is_empty() && self.reported < self.done {
            self.reported = self.done;
            (self.on_event)(&Event::Progress(Progress::bytes(
                &self.task,
                self.done,
                Some(self.done),
            )));
        }
        Ok(buf)
    }

    fn consume(&mut self, n: usize) {
        self.inner.consume(n);
        self.done += n as u64;
        if self.done - self.reported >= REPORT_EVERY {
            self.reported = self.done;
            (self.on_event)(&Event::Progress(Progress::bytes(
                &self.task, self.done, self.total,
            )));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::BufRead;

    #[test]
    fn progress_reader_reports_along_the_way_and_at_the_end() {
        let data = vec![b'x'; 600 << 10];
        let mut seen = Vec::new();
        let mut on_event = |e: &Event| {
            if let Event::Progress(p) = e {
                seen.push((p.done, p.total));
            }
        };
        let mut reader = ProgressReader::new(
            std::io::BufReader::with_capacity(64 << 10, &data[..]),
            "tokenizing",
            Some(data.len() as u64),
            &mut on_event,
        );
        let lines = (&mut reader).lines().count();
        drop(reader);
        assert_eq!(lines, 1);
        let total = data.len() as u64;
        assert_eq!(seen.first(), Some(&(256 << 10, Some(total))));
        assert_eq!(seen.last(), Some(&(total, Some(total))));
        assert!(seen.windows(2).all(|w| w[0].0 < w[1].0));
    }
}
