//! Carries bytes both ways between two byte streams (a TCP connection and a QUIC bi-stream) until
//! both directions end: the end of one direction (EOF) is passed on as a shutdown of the other
//! side's writer (TCP half-close ↔ QUIC finish), so a client may stop writing and still read
//! the rest. One fixed buffer per direction and no queue: a slow reader slows the writer
//! (backpressure). Closed when nothing moves in either direction for `idle`. Generic, so any
//! pair of streams can use it.

use std::io;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::Notify;

/// Bytes carried each way: `(a_to_b, b_to_a)`.
pub type Carried = (u64, u64);

/// Copies `a_read → b_write` and `b_read → a_write` with buffers of `buf` bytes; returns the
/// bytes carried when both directions have ended, the first error, or `TimedOut` after `idle`
/// without a byte.
pub async fn splice<AR, AW, BR, BW>(
    (a_read, a_write): (AR, AW),
    (b_read, b_write): (BR, BW),
    buf: usize,
    idle: Duration,
) -> io::Result<Carried>
where
    AR: AsyncRead + Unpin,
    AW: AsyncWrite + Unpin,
    BR: AsyncRead + Unpin,
    BW: AsyncWrite + Unpin,
{
    let activity = Notify::new();
    let both = futures::future::try_join(
        one_way(a_read, b_write, buf, &activity),
        one_way(b_read, a_write, buf, &activity),
    );
    let watchdog = async {
        while tokio::time::timeout(idle, activity.notified())
            .await
            .is_ok()
        {}
    };
    tokio::select! {
        r = both => r,
        () = watchdog => Err(io::Error::new(io::ErrorKind::TimedOut, "idle")),
    }
}

/// Copies until EOF, then shuts `to` down (passes the end on).
async fn one_way<R, W>(mut from: R, mut to: W, buf: usize, activity: &Notify) -> io::Result<u64>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut b = vec![0u8; buf];
    let mut total = 0u64;
    loop {
        let n = from.read(&mut b).await?;
        if n == 0 {
            to.shutdown().await?;
            return Ok(total);
        }
        activity.notify_one();
        to.write_all(&b[..n]).await?;
        total += n as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn carries_both_ways_and_passes_half_close_on() {
        // client ⇄ (c1|c2) splice (s1|s2) ⇄ server, over in-memory pipes.
        let (client, c_side) = tokio::io::duplex(1024);
        let (s_side, server) = tokio::io::duplex(1024);
        let task = tokio::spawn(async move {
            splice(
                tokio::io::split(c_side),
                tokio::io::split(s_side),
                256,
                Duration::from_secs(5),
            )
            .await
        });
        let (mut cr, mut cw) = tokio::io::split(client);
        let (mut sr, mut sw) = tokio::io::split(server);
        let data = vec![7u8; 100_000];
        let send = data.clone();
        let writer = tokio::spawn(async move {
            cw.write_all(&send).await.unwrap();
            cw.shutdown().await.unwrap(); // half-close: the client still reads afterwards
        });
        let mut got = Vec::new();
        sr.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, data, "the server saw all and then EOF");
        writer.await.unwrap();
        sw.write_all(b"answer after the client's EOF")
            .await
            .unwrap();
        sw.shutdown().await.unwrap();
        let mut back = Vec::new();
        cr.read_to_end(&mut back).await.unwrap();
        assert_eq!(back, b"answer after the client's EOF");
        assert_eq!(task.await.unwrap().unwrap(), (100_000, 29));
    }

    #[tokio::test]
    async fn nothing_moving_for_the_idle_time_ends_it() {
        let (_client, c_side) = tokio::io::duplex(64);
        let (s_side, _server) = tokio::io::duplex(64);
        let r = splice(
            tokio::io::split(c_side),
            tokio::io::split(s_side),
            64,
            Duration::from_millis(100),
        )
        .await;
        assert_eq!(r.unwrap_err().kind(), io::ErrorKind::TimedOut);
    }
}
