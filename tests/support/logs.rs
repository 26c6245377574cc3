//! Every log event of a test binary, formatted as an operator's log would show it and kept in
//! one buffer: the library's `tracing` events and, through `tracing-log`, the `log` records of
//! its dependencies, at every level down to TRACE. The first call installs the binary's only
//! subscriber.
// Each test binary uses the part it needs.
#![allow(dead_code)]

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};

/// Starts capturing (once per binary); returns the buffer.
pub fn capture() -> &'static Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        use tracing_subscriber::util::SubscriberInitExt;
        let logs = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&logs);
        tracing_subscriber::fmt()
            .with_max_level(tracing_subscriber::filter::LevelFilter::TRACE)
            .with_ansi(false)
            .with_writer(move || LogWriter(Arc::clone(&sink)))
            .finish()
            .try_init()
            .expect("the only subscriber of this test binary");
        logs
    })
}

/// Everything captured so far.
pub fn text() -> String {
    String::from_utf8_lossy(&capture().lock().unwrap()).into_owned()
}

struct LogWriter(Arc<Mutex<Vec<u8>>>);

impl Write for LogWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
