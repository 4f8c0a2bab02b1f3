//! Splices a local byte stream (a loopback TCP connection) and an iroh bi-stream: bytes are
//! copied both ways through bounded buffers ([`PIPE_BUFFER`] each way), and each direction's end
//! is passed on (a local EOF finishes the iroh send stream; the iroh stream's end shuts the local
//! write half), so either side may half-close. An error on either direction ends both.
//!
//! Used by split serving (`mesh/rpc/1`, `net::rpc`) to carry llama.cpp's RPC connections; generic
//! so that any TCP-over-iroh tunnel can share it.

use iroh::endpoint::{RecvStream, SendStream};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};

/// Bytes buffered in each direction of one pipe.
pub const PIPE_BUFFER: usize = 64 * 1024;

/// Copies `local` → `send` and `recv` → `local` until both directions ended; the byte counts
/// (up, down). An error in one direction drops the other (the streams reset).
pub async fn splice<S>(
    local: S,
    mut send: SendStream,
    recv: RecvStream,
) -> std::io::Result<(u64, u64)>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (local_read, mut local_write) = tokio::io::split(local);
    let up = async {
        let mut from = BufReader::with_capacity(PIPE_BUFFER, local_read);
        let n = tokio::io::copy_buf(&mut from, &mut send).await?;
        send.finish().map_err(std::io::Error::other)?;
        Ok::<_, std::io::Error>(n)
    };
    let down = async {
        let mut from = BufReader::with_capacity(PIPE_BUFFER, recv);
        let n = tokio::io::copy_buf(&mut from, &mut local_write).await?;
        local_write.shutdown().await?;
        Ok::<_, std::io::Error>(n)
    };
    tokio::try_join!(up, down)
}
