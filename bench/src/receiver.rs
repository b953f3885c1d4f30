//! The stand-in receivers' side of HTTP/1.1 (the soak's webhook and CBC receiver, the push benchmark's push
//! service): keep-alive connections whose requests are a head and Content-Length bytes of body, all a server sends.

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// Reads the next request of a keep-alive connection into `buf` (which may already hold its start) and returns its
/// length: the caller looks at `buf[..len]`, answers, and drains it. `None` once the connection ends.
pub async fn next_request(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<usize> {
    let mut chunk = [0u8; 16 * 1024];
    let (head_end, length) = loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            break (end + 4, length);
        }
        read_more(stream, buf, &mut chunk).await?;
    };
    while buf.len() < head_end + length {
        read_more(stream, buf, &mut chunk).await?;
    }
    Some(head_end + length)
}

async fn read_more(stream: &mut TcpStream, buf: &mut Vec<u8>, chunk: &mut [u8]) -> Option<()> {
    match stream.read(chunk).await {
        Ok(0) | Err(_) => None,
        Ok(n) => {
            buf.extend_from_slice(&chunk[..n]);
            Some(())
        }
    }
}
