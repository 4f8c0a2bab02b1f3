//! sha256 on a thread of its own, fed through a bounded channel, so hashing a download overlaps
//! with receiving and writing it instead of adding to the time of each chunk.

use std::sync::mpsc::{sync_channel, SyncSender};
use std::thread::JoinHandle;

use bytes::Bytes;
use sha2::{Digest, Sha256};

/// Batches in flight between the writer and the hashing thread (backpressure beyond this).
const QUEUE: usize = 32;
/// Chunks are handed over in batches of about this many bytes: fewer thread wake-ups.
const BATCH: usize = 1 << 20;

enum Msg {
    Data(Vec<Bytes>),
    Reset,
}

/// A sha256 computed in the background. `finalize` waits for every chunk sent so far.
pub struct BackgroundHasher {
    tx: SyncSender<Msg>,
    handle: JoinHandle<Sha256>,
    batch: Vec<Bytes>,
    batch_len: usize,
}

impl BackgroundHasher {
    pub fn new() -> std::io::Result<Self> {
        let (tx, rx) = sync_channel::<Msg>(QUEUE);
        let handle = std::thread::Builder::new()
            .name("mesh-sha256".into())
            .spawn(move || {
                let mut hasher = Sha256::new();
                for msg in rx {
                    match msg {
                        Msg::Data(batch) => batch.iter().for_each(|b| hasher.update(b)),
                        Msg::Reset => hasher = Sha256::new(),
                    }
                }
                hasher
            })?;
        Ok(Self {
            tx,
            handle,
            batch: Vec::new(),
            batch_len: 0,
        })
    }

    /// Queues `chunk` (blocks briefly when the hashing thread is behind).
    pub fn update(&mut self, chunk: Bytes) {
        self.batch_len += chunk.len();
        self.batch.push(chunk);
        if self.batch_len >= BATCH {
            self.flush();
        }
    }

    fn flush(&mut self) {
        if !self.batch.is_empty() {
            self.batch_len = 0;
            // The thread only stops when `tx` is dropped, so sending cannot fail while `self`
            // lives.
            let _ = self.tx.send(Msg::Data(std::mem::take(&mut self.batch)));
        }
    }

    /// Forgets everything hashed so far.
    pub fn reset(&mut self) {
        self.batch.clear();
        self.batch_len = 0;
        let _ = self.tx.send(Msg::Reset);
    }

    /// Lowercase hex sha256 of everything sent since the last reset.
    pub fn finalize(mut self) -> std::io::Result<String> {
        self.flush();
        drop(self.tx);
        let hasher = self
            .handle
            .join()
            .map_err(|_| std::io::Error::other("sha256 thread panicked"))?;
        Ok(super::disk::hex(&hasher.finalize()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_a_one_shot_sha256_and_resets() {
        let mut h = BackgroundHasher::new().unwrap();
        h.update(Bytes::from_static(b"garbage"));
        h.reset();
        for part in [&b"a"[..], b"b", b"c"] {
            h.update(Bytes::copy_from_slice(part));
        }
        assert_eq!(
            h.finalize().unwrap(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
