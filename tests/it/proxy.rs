//! A TCP proxy of the test's own, put between the application and PostgreSQL so that a test can
//! take the database away from one server without touching the PostgreSQL that other tests share.
//!
//! `cut` closes every connection through the proxy and its listener, so new connections are
//! refused: the server looks down or unreachable. `restore` listens on the same port again: the
//! server looks restarted, and every connection the application held before is dead.

use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

pub struct Proxy {
    /// Where the application connects.
    pub addr: SocketAddr,
    upstream: SocketAddr,
    /// The accept loop, which owns every forwarded connection: aborting it drops them all.
    task: Option<JoinHandle<()>>,
}

impl Proxy {
    /// A proxy on a free loopback port, forwarding to `upstream`.
    pub async fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a free loopback port");
        let addr = listener
            .local_addr()
            .expect("a bound listener has an address");
        Proxy {
            addr,
            upstream,
            task: Some(tokio::spawn(forward(listener, upstream))),
        }
    }

    /// Drops every open connection and stops listening: connecting is refused until `restore`.
    pub async fn cut(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }

    /// Listens on the same port again.
    pub async fn restore(&mut self) {
        assert!(self.task.is_none(), "the proxy is not cut");
        let socket = TcpSocket::new_v4().expect("a socket");
        // The connections closed by `cut` linger in TIME_WAIT on this port.
        socket.set_reuseaddr(true).expect("SO_REUSEADDR");
        socket
            .bind(self.addr)
            .expect("the proxy's port is still free");
        let listener = socket.listen(128).expect("listening");
        self.task = Some(tokio::spawn(forward(listener, self.upstream)));
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Accepts connections and copies bytes both ways; dropping this future closes every one.
async fn forward(listener: TcpListener, upstream: SocketAddr) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((mut client, _)) = accepted else { continue };
                connections.spawn(async move {
                    let Ok(mut server) = TcpStream::connect(upstream).await else { return };
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                });
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}
