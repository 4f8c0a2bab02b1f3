//! The [`Mesh`] handle's side of TCP sharing (`mesh/tcp/1`): offering a local service under a
//! name (announced to the members at once), withdrawing it, listing shares and `mesh connect`
//! listeners, and opening a listener that carries connections to a member's share. The bytes
//! move in `net::tcp_share`.

use std::net::SocketAddr;

use iroh::EndpointId;

use super::net::tcp_share::{ConnectInfo, Connector, ShareInfo};
use super::proto::share::{self, ShareError};
use super::Mesh;

impl Mesh {
    /// Offers `target` to the members under `name`. `target` must be on this machine unless
    /// `allow_remote` (a member could otherwise reach this node's network through it).
    pub fn share(
        &self,
        name: &str,
        target: SocketAddr,
        allow_remote: bool,
    ) -> Result<(), ShareError> {
        share::check_target(target, allow_remote)?;
        self.shared.shares.add(name, target)?;
        tracing::info!(share = %name, %target, "sharing a TCP service with the mesh");
        self.shared.announce_now.notify_one();
        Ok(())
    }

    /// Stops sharing `name`; its connections end.
    pub fn unshare(&self, name: &str) -> Result<(), ShareError> {
        self.shared.shares.remove(name)?;
        tracing::info!(share = %name, "no longer sharing");
        self.shared.announce_now.notify_one();
        Ok(())
    }

    /// This node's shares.
    pub fn shares(&self) -> Vec<ShareInfo> {
        self.shared.shares.list()
    }

    /// This node's `mesh connect` listeners.
    pub fn connects(&self) -> Vec<ConnectInfo> {
        self.shared.shares.connects()
    }

    /// Listens on `bind` and carries each connection to `peer`'s share `name` until the
    /// returned [`Connector`] is dropped (or the node stops).
    pub async fn connect_share(
        &self,
        peer: EndpointId,
        name: &str,
        bind: SocketAddr,
    ) -> Result<Connector, ShareError> {
        self.shared
            .shares
            .connect(self.shared.endpoint.clone(), peer, name, bind)
            .await
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    use super::*;
    use crate::mesh::ConnectEvent;

    use crate::mesh::hostile_tests::start;

    /// An echo server on loopback: its address.
    async fn echo() -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = s.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        addr
    }

    #[tokio::test]
    async fn a_share_is_announced_carried_and_ends_when_removed() {
        let a = start(vec![]).await;
        let b = start(vec![a.ticket()]).await;
        let target = echo().await;
        let lan: SocketAddr = "192.168.77.1:80".parse().unwrap();
        assert!(matches!(
            a.share("echo", lan, false),
            Err(ShareError::RemoteTarget(_))
        ));
        a.share("echo", target, false).unwrap();
        // B sees the share in A's announcement.
        let mut roster = b.watch_roster();
        let seen = roster.wait_for(|_| b.peers().iter().any(|p| p.shares == ["echo"]));
        let _ = tokio::time::timeout(Duration::from_secs(10), seen).await;
        assert!(
            b.peers().iter().any(|p| p.shares == ["echo"]),
            "{:?}",
            b.peers()
        );

        let mut conn = b
            .connect_share(a.node_id(), "echo", "127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let mut tcp = TcpStream::connect(conn.addr).await.unwrap();
        tcp.write_all(b"ping").await.unwrap();
        let mut got = [0u8; 4];
        tcp.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"ping");
        assert_eq!(a.shares()[0].active, 1);
        assert_eq!(b.connects()[0].active, 1);

        // Removed: the open connection ends, a new one is refused with a clear error.
        a.unshare("echo").unwrap();
        let mut rest = Vec::new();
        let ended = tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut rest));
        assert!(ended.await.is_ok(), "the connection ended");
        let _new = TcpStream::connect(conn.addr).await.unwrap();
        let refused = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                match conn.events.recv().await {
                    Some(ConnectEvent::Refused { error, .. }) => break error,
                    Some(_) => continue,
                    None => panic!("events ended"),
                }
            }
        })
        .await
        .expect("a refusal event");
        assert!(refused.contains("no longer shares \"echo\""), "{refused}");
        assert!(matches!(a.unshare("echo"), Err(ShareError::NoSuchShare(_))));
        drop(conn);
        assert!(b.connects().is_empty());
        b.abort().await;
        a.abort().await;
    }
    /// The next event that is not `Opened`/`Closed`/`Listening`: a refusal's text.
    async fn refusal(conn: &mut Connector) -> String {
        let wait = async {
            loop {
                match conn.events.recv().await {
                    Some(ConnectEvent::Refused { error, .. }) => break error,
                    Some(_) => continue,
                    None => panic!("events ended"),
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(10), wait)
            .await
            .expect("a refusal event")
    }

    #[tokio::test]
    async fn a_member_over_its_connection_cap_is_refused_until_one_closes() {
        let a = start(vec![]).await;
        let b = start(vec![a.ticket()]).await;
        a.share("echo", echo().await, false).unwrap();
        let mut conn = b
            .connect_share(a.node_id(), "echo", "127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let mut open = Vec::new();
        for i in 0..share::CONNS_PER_PEER {
            let mut tcp = TcpStream::connect(conn.addr).await.unwrap();
            tcp.write_all(&[i as u8]).await.unwrap();
            let mut b = [0u8; 1];
            tcp.read_exact(&mut b).await.unwrap();
            open.push(tcp);
        }
        assert_eq!(a.shares()[0].active, share::CONNS_PER_PEER);
        let mut extra = TcpStream::connect(conn.addr).await.unwrap();
        assert!(refusal(&mut conn).await.contains("too many connections"));
        let mut rest = Vec::new();
        let _ = extra.read_to_end(&mut rest).await;
        assert!(rest.is_empty(), "nothing carried over the cap");
        // One closes: its slot is given back.
        drop(open.pop());
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while a.shares()[0].active == share::CONNS_PER_PEER {
            assert!(
                tokio::time::Instant::now() < deadline,
                "slot never given back"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let mut tcp = TcpStream::connect(conn.addr).await.unwrap();
        tcp.write_all(b"x").await.unwrap();
        let mut got = [0u8; 1];
        tcp.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"x");
        b.abort().await;
        a.abort().await;
    }
}
