//! Full mTLS handshakes per second on one core: a server and a client with workload
//! certificates from one CA, in one process on a single-threaded runtime, each
//! connection a new TCP connection and a full TLS 1.3 handshake with client
//! certificates and SPIFFE ID checks on both sides (resumption is off in the mesh).
//!
//! Both ends share the one core, so the rate is of complete handshakes, client and
//! server work together: a core doing only the server side manages about twice that.
//!
//! `cargo run --release -p trellis-identity --example handshake_rate [SECONDS]`
//! (default 5); `bench/handshakes.sh` runs it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};
use trellis_identity::rustls::pki_types::ServerName;
use trellis_identity::{
    server_config, CertStore, CertificateAuthority, ClientConfigs, Credentials, SpiffeId,
    WorkloadKey,
};

const ALPN: &[&[u8]] = &[b"h2"];

fn store(ca: &CertificateAuthority, id: &SpiffeId) -> Arc<CertStore> {
    let key = WorkloadKey::generate().expect("key");
    let issued = ca
        .sign_csr(&key.csr(id).expect("csr"), id, Duration::from_secs(3600))
        .expect("signed");
    let credentials = Credentials::new(&key, &issued.chain_pem).expect("credentials");
    CertStore::new(credentials, ca.trust_bundle())
}

fn cpu_seconds() -> f64 {
    // utime + stime of this process, from /proc/self/stat (fields 14 and 15).
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // 100 ticks per second on Linux.
    (ticks(11) + ticks(12)) / 100.0
}

fn main() {
    let seconds: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(5);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(run(Duration::from_secs(seconds)));
}

async fn run(duration: Duration) {
    let ca = CertificateAuthority::generate_root("trellis.local", Duration::from_secs(86_400))
        .expect("root");
    let server_id = SpiffeId::in_default_domain("shop", "books").expect("id");
    let client_id = SpiffeId::in_default_domain("shop", "web").expect("id");
    let acceptor = TlsAcceptor::from(server_config(&store(&ca, &server_id), ALPN).expect("server"));
    let configs = ClientConfigs::new(store(&ca, &client_id), ALPN).expect("client");
    let connector = TlsConnector::from(configs.for_peer(&server_id));

    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                if let Ok(mut tls) = acceptor.accept(tcp).await {
                    // One byte each way proves the handshake finished on both sides.
                    let mut byte = [0u8; 1];
                    if tls.read_exact(&mut byte).await.is_ok() {
                        let _ = tls.write_all(&byte).await;
                        let _ = tls.shutdown().await;
                    }
                }
            });
        }
    });

    let name = ServerName::IpAddress(addr.ip().into());
    let started = Instant::now();
    let cpu_start = cpu_seconds();
    let mut done = 0u64;
    let mut failed = 0u64;
    while started.elapsed() < duration {
        let ok = async {
            let tcp = TcpStream::connect(addr).await?;
            tcp.set_nodelay(true)?;
            let mut tls = connector.connect(name.clone(), tcp).await?;
            tls.write_all(b"x").await?;
            let mut byte = [0u8; 1];
            tls.read_exact(&mut byte).await?;
            std::io::Result::Ok(())
        }
        .await;
        match ok {
            Ok(()) => done += 1,
            Err(_) => failed += 1,
        }
    }
    let wall = started.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu_start;
    println!("| measure | value |");
    println!("|---|--:|");
    println!("| complete mTLS handshakes (client + server, one core) | {done} in {wall:.1} s |");
    println!("| handshakes per second | {:.0} |", done as f64 / wall);
    println!(
        "| handshakes per CPU-second (both ends) | {:.0} |",
        done as f64 / cpu.max(0.001)
    );
    println!("| failed | {failed} |");
}
