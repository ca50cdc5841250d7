//! A minimal HTTP/1.1 file server on 127.0.0.1 for download tests (never the internet).
//!
//! Routes: `/good/NAME` serves the body and honours `Range: bytes=N-` (206);
//! `/norange/NAME` always answers 200 with the whole body; `/cut/NAME` announces
//! the whole length but closes after half of it; anything else is 404.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

/// A running server: its base URL and the log of request lines with their Range header.
pub struct Server {
    pub base: String,
    pub log: Arc<Mutex<Vec<String>>>,
}

/// Serve `body` on a fresh port. The thread ends with the test process; it
/// handles at most 64 connections.
pub fn serve(body: Vec<u8>) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    let base = format!("http://{}", listener.local_addr().unwrap());
    let log = Arc::new(Mutex::new(Vec::new()));
    let log2 = log.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(64) {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request = String::new();
            if reader.read_line(&mut request).is_err() {
                continue;
            }
            let mut range_from = None;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                let lower = line.to_ascii_lowercase();
                if let Some(v) = lower.strip_prefix("range: bytes=") {
                    range_from = v.trim().trim_end_matches('-').parse::<usize>().ok();
                }
            }
            let path = request.split_whitespace().nth(1).unwrap_or("/").to_string();
            log2.lock().unwrap().push(format!("{path} range={range_from:?}"));
            let head = |status: &str, len: usize, extra: &str| {
                format!("HTTP/1.1 {status}\r\nContent-Length: {len}\r\nConnection: close\r\n{extra}\r\n")
            };
            let _ = if path.starts_with("/good/") {
                match range_from {
                    Some(from) if from < body.len() => {
                        let extra = format!("Content-Range: bytes {from}-{}/{}\r\n", body.len() - 1, body.len());
                        stream
                            .write_all(head("206 Partial Content", body.len() - from, &extra).as_bytes())
                            .and_then(|_| stream.write_all(&body[from..]))
                    }
                    Some(_) => stream.write_all(head("416 Range Not Satisfiable", 0, "").as_bytes()),
                    None => stream
                        .write_all(head("200 OK", body.len(), "").as_bytes())
                        .and_then(|_| stream.write_all(&body)),
                }
            } else if path.starts_with("/norange/") {
                stream.write_all(head("200 OK", body.len(), "").as_bytes()).and_then(|_| stream.write_all(&body))
            } else if path.starts_with("/cut/") {
                stream
                    .write_all(head("200 OK", body.len(), "").as_bytes())
                    .and_then(|_| stream.write_all(&body[..body.len() / 2]))
            } else {
                stream.write_all(head("404 Not Found", 0, "").as_bytes())
            };
            let _ = stream.flush();
        }
    });
    Server { base, log }
}

/// A small archive in the official CIFAR-10 layout: every official member with
/// `records` records each (label r % 10), plus `batches.meta.txt`.
/// `cut_member` truncates `test_batch.bin` by 100 bytes.
pub fn cifar10_archive(records: usize, cut_member: bool) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    {
        let mut tar = tar::Builder::new(&mut gz);
        let mut add = |name: &str, data: &[u8]| {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            tar.append_data(&mut h, format!("cifar-10-batches-bin/{name}"), data).unwrap();
        };
        for name in [
            "data_batch_1.bin",
            "data_batch_2.bin",
            "data_batch_3.bin",
            "data_batch_4.bin",
            "data_batch_5.bin",
            "test_batch.bin",
        ] {
            let mut data = Vec::new();
            for r in 0..records {
                data.push((r % 10) as u8);
                data.extend((0..3072).map(|p| ((p * 7 + r) % 256) as u8));
            }
            if cut_member && name == "test_batch.bin" {
                data.truncate(data.len() - 100);
            }
            add(name, &data);
        }
        add("batches.meta.txt", b"airplane\nautomobile\nbird\ncat\ndeer\ndog\nfrog\nhorse\nship\ntruck\n");
        tar.finish().unwrap();
    }
    gz.finish().unwrap()
}

/// md5 of bytes, lower-case hex.
pub fn md5_hex(bytes: &[u8]) -> String {
    use md5::Digest;
    robal_data::download::hex(&md5::Md5::digest(bytes))
}
