//! A loopback TCP accept loop shared by the token server and the fault proxy.
//!
//! Each accepted connection runs in its own task; dropping the [`Server`] (or refusing
//! connections) aborts the listener and every connection at once, so nothing outlives
//! the value that owns it.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio::task::{JoinHandle, JoinSet};

use crate::error::{Error, Result};

enum Control {
    Refuse(oneshot::Sender<()>),
    Accept(oneshot::Sender<std::io::Result<()>>),
}

/// A running accept loop.
pub(crate) struct Server {
    addr: SocketAddr,
    control: mpsc::Sender<Control>,
    task: JoinHandle<()>,
}

impl Server {
    /// Binds `addr` and serves every connection with `handle`.
    pub(crate) async fn bind<F, Fut>(addr: SocketAddr, handle: F) -> Result<Server>
    where
        F: Fn(TcpStream, SocketAddr) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|e| Error::io(format!("binding {addr}"), e))?;
        Self::serve(listener, handle)
    }

    /// Serves every connection accepted by `listener` with `handle`.
    pub(crate) fn serve<F, Fut>(listener: TcpListener, handle: F) -> Result<Server>
    where
        F: Fn(TcpStream, SocketAddr) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let addr = listener
            .local_addr()
            .map_err(|e| Error::io("reading the listener's address", e))?;
        let (control, rx) = mpsc::channel(4);
        let task = tokio::spawn(accept_loop(listener, addr, rx, handle));
        Ok(Server {
            addr,
            control,
            task,
        })
    }

    /// The bound address.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Closes the listening socket and every open connection: connecting then fails
    /// with "connection refused". Returns once that is the case.
    pub(crate) async fn refuse(&self) {
        let (tx, rx) = oneshot::channel();
        if self.control.send(Control::Refuse(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }

    /// Listens again on the same address after [`Server::refuse`].
    pub(crate) async fn accept(&self) -> Result<()> {
        let (tx, rx) = oneshot::channel();
        let gone = || {
            Error::io(
                "re-opening the listener",
                std::io::Error::other("the server task has stopped"),
            )
        };
        self.control
            .send(Control::Accept(tx))
            .await
            .map_err(|_| gone())?;
        rx.await
            .map_err(|_| gone())?
            .map_err(|e| Error::io(format!("re-binding {}", self.addr), e))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn accept_loop<F, Fut>(
    listener: TcpListener,
    addr: SocketAddr,
    mut control: mpsc::Receiver<Control>,
    handle: F,
) where
    F: Fn(TcpStream, SocketAddr) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut listener = Some(listener);
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            ctl = control.recv() => match ctl {
                None => break,
                Some(Control::Refuse(ack)) => {
                    listener = None;
                    conns.abort_all();
                    while conns.join_next().await.is_some() {}
                    let _ = ack.send(());
                }
                Some(Control::Accept(ack)) => {
                    let result = match listener {
                        Some(_) => Ok(()),
                        None => TcpListener::bind(addr).await.map(|l| {
                            listener = Some(l);
                        }),
                    };
                    let _ = ack.send(result);
                }
            },
            accepted = accept_on(listener.as_ref()), if listener.is_some() => {
                match accepted {
                    Ok((stream, peer)) => {
                        let _ = stream.set_nodelay(true);
                        conns.spawn(handle(stream, peer));
                    }
                    Err(e) => {
                        tracing::warn!("accept on {addr} failed: {e}");
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

async fn accept_on(listener: Option<&TcpListener>) -> std::io::Result<(TcpStream, SocketAddr)> {
    match listener {
        Some(l) => l.accept().await,
        None => std::future::pending().await,
    }
}
