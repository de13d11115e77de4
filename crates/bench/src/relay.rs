//! A loopback TCP relay that timestamps what a client sends, to measure process start → first
//! request without touching the client.
//!
//! Put between a client and the TLS API server, it sees the ClientHello (the first byte: the
//! first connection) and follows the TLS record framing of what the client sends: in TLS 1.3
//! the first `application_data` record is the client's encrypted Finished, the second one
//! carries the first HTTP request. When that second record starts arriving is "first request"
//! (so a request held back by Nagle's algorithm counts when it is really sent).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// When the relay first saw client traffic (since the last [`Relay::reset`]).
#[derive(Clone, Copy, Debug, Default)]
pub struct Seen {
    /// First byte from any client (TLS ClientHello, or a plain HTTP request line).
    pub first_byte: Option<Instant>,
    /// Start of the second TLS application_data record a client sent on any connection (the
    /// first one is its Finished): the first HTTP request.
    pub first_request: Option<Instant>,
    /// Connections accepted.
    pub connections: u64,
}

/// A running relay; stops on drop.
pub struct Relay {
    addr: SocketAddr,
    seen: Arc<Mutex<Seen>>,
    task: JoinHandle<()>,
}

impl Relay {
    /// Listen on 127.0.0.1:0 and relay every connection to `upstream`.
    pub async fn start(upstream: SocketAddr) -> std::io::Result<Relay> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let seen = Arc::new(Mutex::new(Seen::default()));
        let s = seen.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let _ = client.set_nodelay(true);
                lock(&s).connections += 1;
                let s = s.clone();
                tokio::spawn(async move {
                    if let Ok(server) = TcpStream::connect(upstream).await {
                        let _ = server.set_nodelay(true);
                        relay(client, server, s).await;
                    }
                });
            }
        });
        Ok(Relay { addr, seen, task })
    }

    /// The relay's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Forget what was seen.
    pub fn reset(&self) {
        *lock(&self.seen) = Seen::default();
    }

    /// What was seen since start or the last reset.
    pub fn seen(&self) -> Seen {
        *lock(&self.seen)
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn lock(m: &Mutex<Seen>) -> std::sync::MutexGuard<'_, Seen> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Follows TLS record framing (5-byte headers: type, version, length) across reads.
#[derive(Default)]
pub struct Records {
    header: Vec<u8>,
    remaining: usize,
    app_data: u32,
}

impl Records {
    /// Feed the next chunk; true when the second application_data record starts in it.
    pub fn feed(&mut self, mut chunk: &[u8]) -> bool {
        let mut hit = false;
        while !chunk.is_empty() {
            if self.remaining > 0 {
                let skip = self.remaining.min(chunk.len());
                self.remaining -= skip;
                chunk = &chunk[skip..];
                continue;
            }
            let need = 5 - self.header.len();
            let take = need.min(chunk.len());
            self.header.extend_from_slice(&chunk[..take]);
            chunk = &chunk[take..];
            if self.header.len() == 5 {
                if self.header[0] == 0x17 {
                    self.app_data += 1;
                    hit |= self.app_data == 2;
                }
                self.remaining = usize::from(u16::from_be_bytes([self.header[3], self.header[4]]));
                self.header.clear();
            }
        }
        hit
    }
}

async fn relay(client: TcpStream, server: TcpStream, seen: Arc<Mutex<Seen>>) {
    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = server.into_split();
    let up = async move {
        let mut buf = vec![0u8; 64 * 1024];
        let mut records = Records::default();
        loop {
            let n = match cr.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let now = Instant::now();
            let request = records.feed(&buf[..n]);
            {
                let mut s = lock(&seen);
                s.first_byte.get_or_insert(now);
                if request {
                    s.first_request.get_or_insert(now);
                }
            }
            if sw.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
        let _ = sw.shutdown().await;
    };
    let down = async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match sr.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if cw.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
        let _ = cw.shutdown().await;
    };
    tokio::join!(up, down);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(kind: u8, len: usize) -> Vec<u8> {
        let mut r = vec![kind, 3, 3, (len >> 8) as u8, len as u8];
        r.resize(5 + len, 0xaa);
        r
    }

    #[test]
    fn follows_records_across_reads() {
        let mut stream = record(0x16, 300); // ClientHello
        stream.extend(record(0x14, 1)); // ChangeCipherSpec (compat)
        stream.extend(record(0x17, 53)); // Finished
        let request_at = stream.len();
        stream.extend(record(0x17, 190)); // first request
        stream.extend(record(0x17, 40));
        for split in [1, 2, 3, 5, 7, 64, 1000] {
            let mut r = Records::default();
            let mut hits = Vec::new();
            let mut pos = 0;
            for c in stream.chunks(split) {
                if r.feed(c) {
                    hits.push(pos);
                }
                pos += c.len();
            }
            assert_eq!(hits.len(), 1, "split {split}");
            // Detected in the read that completes the record's 5-byte header.
            assert!(hits[0] <= request_at + 4 && request_at + 4 < hits[0] + split, "split {split}: {hits:?}");
        }
    }

    #[tokio::test]
    async fn relays_and_timestamps() {
        // Echoes everything back.
        let server = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let upstream = server.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = server.accept().await.unwrap();
            let mut buf = [0u8; 4096];
            while let Ok(n) = s.read(&mut buf).await {
                if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                    break;
                }
            }
        });
        let relay = Relay::start(upstream).await.unwrap();
        let start = Instant::now();
        let mut c = TcpStream::connect(relay.addr()).await.unwrap();
        let hello = record(0x16, 10);
        c.write_all(&hello).await.unwrap();
        let mut back = vec![0u8; hello.len()];
        c.read_exact(&mut back).await.unwrap();
        assert_eq!(back, hello);
        assert!(relay.seen().first_byte.unwrap() >= start);
        assert!(relay.seen().first_request.is_none());
        let mut flight = record(0x17, 20);
        flight.extend(record(0x17, 30));
        c.write_all(&flight).await.unwrap();
        let mut back = vec![0u8; flight.len()];
        c.read_exact(&mut back).await.unwrap();
        let s = relay.seen();
        assert!(s.first_request.unwrap() >= s.first_byte.unwrap());
        assert_eq!(s.connections, 1);
        relay.reset();
        assert!(relay.seen().first_byte.is_none());
    }
}
