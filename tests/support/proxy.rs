//! A TCP proxy on 127.0.0.1 in front of a real server. It can cut every connection and close
//! its port (the server looks down) and listen again on the same port, stall (keep accepting and
//! hold every byte, as a hung server or a black-holed network would), drop answers (the server
//! answered, the client never hears it), and it counts request/response round trips.
// Each test binary uses the part it needs.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

pub struct Proxy {
    listener_addr: SocketAddr,
    server: String,
    connections: Option<tokio::task::JoinHandle<()>>,
    round_trips: Arc<AtomicU64>,
    stalled: watch::Sender<bool>,
    answers_to_drop: Arc<AtomicU64>,
}

impl Proxy {
    pub async fn start(server: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind a proxy port");
        let listener_addr = listener.local_addr().expect("proxy address");
        let mut proxy = Self {
            listener_addr,
            server: server.to_owned(),
            connections: None,
            round_trips: Arc::default(),
            stalled: watch::Sender::new(false),
            answers_to_drop: Arc::default(),
        };
        proxy.serve(listener);
        proxy
    }

    pub fn addr(&self) -> String {
        self.listener_addr.to_string()
    }

    /// Closes the port and every open connection.
    pub fn cut(&mut self) {
        if let Some(connections) = self.connections.take() {
            connections.abort();
        }
    }

    /// Listens on the same port again.
    pub async fn resume(&mut self) {
        let listener = TcpListener::bind(self.listener_addr)
            .await
            .expect("rebind the proxy port");
        self.serve(listener);
    }

    /// Keeps every connection open and accepts new ones, but forwards nothing in either
    /// direction until [`Proxy::unstall`]; the bytes held meanwhile are delivered then.
    pub fn stall(&self) {
        self.stalled.send_replace(true);
    }

    pub fn unstall(&self) {
        self.stalled.send_replace(false);
    }

    /// Swallows the server's next `n` answers: when the first bytes of an answer come back, the
    /// proxy closes that connection instead of forwarding them. The server has run the request
    /// and answered; the client sees its connection close before any response.
    pub fn drop_answers(&self, n: u64) {
        self.answers_to_drop.store(n, Ordering::SeqCst);
    }

    pub async fn round_trips_during<T>(&self, work: impl std::future::Future<Output = T>) -> u64 {
        let before = self.round_trips.load(Ordering::SeqCst);
        work.await;
        self.round_trips.load(Ordering::SeqCst) - before
    }

    fn serve(&mut self, listener: TcpListener) {
        self.connections = Some(tokio::spawn(accept(
            listener,
            self.server.clone(),
            Arc::clone(&self.round_trips),
            self.stalled.subscribe(),
            Arc::clone(&self.answers_to_drop),
        )));
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.cut();
    }
}

/// Accepts connections and pipes them to the server; dropping this future (abort) drops the
/// listener and every pipe, closing all sockets.
async fn accept(
    listener: TcpListener,
    server: String,
    round_trips: Arc<AtomicU64>,
    stalled: watch::Receiver<bool>,
    answers_to_drop: Arc<AtomicU64>,
) {
    let mut pipes = JoinSet::new();
    while let Ok((client, _)) = listener.accept().await {
        let Ok(upstream) = TcpStream::connect(&server).await else {
            continue;
        };
        let awaiting_answer = Arc::new(AtomicBool::new(false));
        let (client_read, client_write) = client.into_split();
        let (server_read, server_write) = upstream.into_split();
        let sent = Arc::clone(&awaiting_answer);
        pipes.spawn(pipe(client_read, server_write, stalled.clone(), move || {
            sent.store(true, Ordering::SeqCst);
            true
        }));
        let round_trips = Arc::clone(&round_trips);
        let answers_to_drop = Arc::clone(&answers_to_drop);
        pipes.spawn(pipe(server_read, client_write, stalled.clone(), move || {
            if !awaiting_answer.swap(false, Ordering::SeqCst) {
                return true;
            }
            round_trips.fetch_add(1, Ordering::SeqCst);
            let drop_this_answer = answers_to_drop
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok();
            !drop_this_answer
        }));
    }
}

/// Copies `from` to `to` while `forward` (called on each chunk read) says so; ending drops both
/// halves, which closes `to`'s direction of its connection.
async fn pipe(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    mut stalled: watch::Receiver<bool>,
    forward: impl Fn() -> bool,
) {
    let mut buffer = vec![0; 64 * 1024];
    while let Ok(read) = from.read(&mut buffer).await {
        if read == 0 || stalled.wait_for(|stalled| !*stalled).await.is_err() {
            break;
        }
        if !forward() {
            break;
        }
        if to.write_all(&buffer[..read]).await.is_err() {
            break;
        }
    }
}
