//! The Kafka listener: accepts connections (up to `kafka.max_connections`),
//! reads length-prefixed request frames with bounded size, memory and time,
//! and writes responses in request order.
//!
//! A connection handles one request at a time, as Kafka does, so responses
//! keep request order and a producer's batches reach a partition in order.
//! Bad input closes only the connection that sent it.
//!
//! Connections are served on the partition threads, spread round robin:
//! asking a partition actor on the connection's own thread wakes no other
//! thread, and thread wake-ups were most of a small produce request's cost.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{broadcast, Semaphore};

use crate::broker::Broker;
use crate::protocol::{self, Outcome};

/// Smallest possible request: api key, version, correlation id.
const REQUEST_HEADER_MIN_BYTES: usize = 8;

/// Accepts connections until `shutdown` fires; each connection runs on its own task.
pub async fn serve(listener: TcpListener, broker: Arc<Broker>, shutdown: broadcast::Sender<()>) {
    let connections = Arc::new(Semaphore::new(broker.config.kafka.max_connections));
    let mut stop = shutdown.subscribe();
    let mut next_thread = 0usize;
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.recv() => break,
        };
        let (stream, peer) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                // Out of file descriptors and similar: back off instead of spinning.
                tracing::warn!(cause = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            broker.metrics.connections_rejected.inc();
            tracing::warn!(%peer, max = broker.config.kafka.max_connections, "refusing connection: kafka.max_connections reached");
            drop(stream);
            continue;
        };
        broker.metrics.connections_accepted.inc();
        // The socket moves to a partition thread: it must leave this runtime's reactor first.
        let stream = match stream.into_std() {
            Ok(stream) => stream,
            Err(e) => {
                tracing::warn!(%peer, cause = %e, "cannot hand over an accepted connection");
                continue;
            }
        };
        let thread = broker.node.partition_thread(next_thread);
        next_thread = next_thread.wrapping_add(1);
        let broker = broker.clone();
        let stop = shutdown.subscribe();
        thread.spawn(async move {
            broker.metrics.connections.inc();
            let served = match TcpStream::from_std(stream) {
                Ok(stream) => connection(stream, &broker, stop).await,
                Err(e) => Err(e),
            };
            if let Err(e) = served {
                tracing::debug!(%peer, cause = %e, "connection ended with an error");
            }
            broker.metrics.connections.dec();
            drop(permit);
        });
    }
}

/// Why a connection stops reading.
enum ReadFrame {
    Frame(bytes::Bytes, tokio::sync::OwnedSemaphorePermit),
    Closed,
    Refused(&'static str, String),
}

async fn read_frame<R: AsyncReadExt + Unpin>(reader: &mut R, broker: &Broker) -> std::io::Result<ReadFrame> {
    let kafka = &broker.config.kafka;
    let mut prefix = [0u8; 4];
    let idle = Duration::from_millis(kafka.connections_max_idle_ms);
    match tokio::time::timeout(idle, reader.read_exact(&mut prefix)).await {
        Err(_) => return Ok(ReadFrame::Refused("idle", format!("no request for {idle:?}"))),
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(ReadFrame::Closed),
        Ok(Err(e)) => return Err(e),
        Ok(Ok(_)) => {}
    }
    let size = i32::from_be_bytes(prefix);
    if size < 0 {
        return Ok(ReadFrame::Refused("negative_size", format!("request size {size}")));
    }
    let size = size as usize;
    if size > kafka.socket_request_max_bytes as usize {
        return Ok(ReadFrame::Refused(
            "request_too_large",
            format!("request of {size} bytes exceeds kafka.socket_request_max_bytes {}", kafka.socket_request_max_bytes),
        ));
    }
    if size < REQUEST_HEADER_MIN_BYTES {
        return Ok(ReadFrame::Refused("short_frame", format!("request size {size}")));
    }
    // Account for the request in the node-wide memory budget before buffering it.
    let permit = match broker.request_memory.clone().acquire_many_owned(size as u32).await {
        Ok(p) => p,
        Err(_) => return Ok(ReadFrame::Closed),
    };
    // The whole frame at once: growing the buffer as bytes arrive copied
    // large produce requests several times. The memory is already counted
    // in the budget above, and pages a stalled client never sends are never
    // touched.
    let mut buf = Vec::with_capacity(size);
    let timeout = Duration::from_millis(kafka.request_read_timeout_ms);
    match tokio::time::timeout(timeout, reader.take(size as u64).read_to_end(&mut buf)).await {
        Err(_) => return Ok(ReadFrame::Refused("slow_request", format!("request not complete after {timeout:?}"))),
        Ok(Err(e)) => return Err(e),
        Ok(Ok(n)) if n < size => return Ok(ReadFrame::Closed),
        Ok(Ok(_)) => {}
    }
    Ok(ReadFrame::Frame(bytes::Bytes::from(buf), permit))
}

async fn connection(stream: TcpStream, broker: &Arc<Broker>, mut stop: broadcast::Receiver<()>) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let peer = stream.peer_addr()?;
    let (read, write) = stream.into_split();
    let mut reader = BufReader::new(read);
    let mut writer = BufWriter::new(write);
    loop {
        let next = tokio::select! {
            next = read_frame(&mut reader, broker) => next?,
            // Stop between requests; a request already read is answered first.
            _ = stop.recv() => return Ok(()),
        };
        let (frame, permit) = match next {
            ReadFrame::Frame(frame, permit) => (frame, permit),
            ReadFrame::Closed => return Ok(()),
            ReadFrame::Refused(reason, detail) => {
                broker.metrics.protocol_errors.with_label_values(&[reason]).inc();
                tracing::warn!(%peer, reason, %detail, "closing connection");
                return Ok(());
            }
        };
        match protocol::handle_frame(broker, frame, Some(peer)).await {
            Outcome::Respond(response) => {
                writer.write_all(&response).await?;
                writer.flush().await?;
            }
            Outcome::RespondParts(parts) => {
                // Small parts gather in the writer's buffer; large ones (record
                // batches) go to the socket without another copy.
                for part in &parts {
                    writer.write_all(part).await?;
                }
                writer.flush().await?;
            }
            Outcome::NoResponse => {}
            Outcome::Close { reason, detail } => {
                broker.metrics.protocol_errors.with_label_values(&[reason]).inc();
                tracing::warn!(%peer, reason, %detail, "closing connection");
                return Ok(());
            }
        }
        drop(permit);
    }
}
