//! Connections the simulator can cut: every accepted TCP stream carries a
//! [`ResetSwitch`] that the update handler throws to end the connection with a TCP reset
//! instead of an answer (the [`super::Faults::reset_probability`] fault).
//!
//! Once thrown, the stream fails every read and write without touching the socket, so
//! not one byte of the answer leaves; hyper then drops the connection, and the zero
//! linger set at that moment makes the close a reset (RST) rather than an orderly FIN.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::connect_info::Connected;
use axum::serve::{IncomingStream, Listener};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

/// Thrown by a handler to reset the connection its request came on.
#[derive(Clone, Debug, Default)]
pub(crate) struct ResetSwitch(Arc<AtomicBool>);

impl ResetSwitch {
    /// From now on the connection fails instead of answering.
    pub(crate) fn throw(&self) {
        self.0.store(true, Ordering::Release);
    }

    /// Whether [`ResetSwitch::throw`] was called.
    pub(crate) fn thrown(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// A TCP listener whose connections can be reset from a handler.
#[derive(Debug)]
pub(crate) struct ResettableListener(pub(crate) TcpListener);

impl Listener for ResettableListener {
    type Io = ResettableStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let (stream, addr) = Listener::accept(&mut self.0).await;
        // Small answers must not wait for Nagle; failure only costs latency.
        let _ = stream.set_nodelay(true);
        let stream = ResettableStream {
            stream,
            switch: ResetSwitch::default(),
        };
        (stream, addr)
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.0.local_addr()
    }
}

impl Connected<IncomingStream<'_, ResettableListener>> for ResetSwitch {
    fn connect_info(stream: IncomingStream<'_, ResettableListener>) -> Self {
        stream.io().switch.clone()
    }
}

/// An accepted connection with its switch.
#[derive(Debug)]
pub(crate) struct ResettableStream {
    stream: TcpStream,
    switch: ResetSwitch,
}

impl ResettableStream {
    /// `Some(error)` once the switch is thrown; arms the reset for the close.
    fn cut(&self) -> Option<io::Error> {
        if !self.switch.thrown() {
            return None;
        }
        // A zero linger never blocks: the close discards the buffers and sends RST.
        let _ = socket2::SockRef::from(&self.stream).set_linger(Some(Duration::ZERO));
        Some(io::Error::from(io::ErrorKind::ConnectionReset))
    }
}

impl AsyncRead for ResettableStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if let Some(error) = self.cut() {
            return Poll::Ready(Err(error));
        }
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for ResettableStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if let Some(error) = self.cut() {
            return Poll::Ready(Err(error));
        }
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if let Some(error) = self.cut() {
            return Poll::Ready(Err(error));
        }
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if let Some(error) = self.cut() {
            return Poll::Ready(Err(error));
        }
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}
