use trellis_testkit::tls::client_hello;

use super::*;

#[test]
fn reads_the_server_name_of_a_real_client_hello() {
    let hello = client_hello("Books.Example");
    assert_eq!(parse(&hello), Hello::ServerName("books.example".into()));
    // Followed by more bytes (early data, the next record): still the same.
    let mut longer = hello.clone();
    longer.extend_from_slice(b"\x17\x03\x03\x00\x01x");
    assert_eq!(parse(&longer), Hello::ServerName("books.example".into()));
}

#[test]
fn a_hello_to_an_address_names_no_server() {
    // rustls sends no SNI for an IP address, as RFC 6066 says.
    assert_eq!(parse(&client_hello("10.0.0.7")), Hello::NoServerName);
}

#[test]
fn every_prefix_of_a_hello_is_incomplete() {
    let hello = client_hello("ratings.shop.svc.trellis.local");
    for len in 0..hello.len() {
        assert_eq!(parse(&hello[..len]), Hello::Incomplete, "{len} bytes");
    }
}

#[test]
fn other_protocols_are_not_tls() {
    for bytes in [
        &b"GET / HTTP/1.1\r\n"[..],
        b"PRI * HTTP/2.0\r\n",
        b"\x16\x01\x00\x00",
    ] {
        assert_eq!(parse(bytes), Hello::NotTls, "{bytes:?}");
    }
    // A handshake record that is not a ClientHello.
    assert_eq!(
        parse(b"\x16\x03\x01\x00\x04\x02\x00\x00\x00"),
        Hello::NotTls
    );
}

#[test]
fn damaged_hellos_never_panic() {
    let hello = client_hello("books.example");
    let mut rng = fastrand::Rng::with_seed(7);
    for _ in 0..5000 {
        let mut bytes = hello.clone();
        for _ in 0..rng.usize(1..8) {
            let i = rng.usize(5..bytes.len());
            bytes[i] = rng.u8(..);
        }
        bytes.truncate(rng.usize(0..=bytes.len()));
        // Any answer will do; it must come without a panic.
        let _ = parse(&bytes);
    }
}

#[tokio::test]
async fn reading_waits_for_the_whole_hello_and_keeps_its_bytes() {
    let hello = client_hello("books.example");
    let (mut client, mut server) = tokio::io::duplex(64 * 1024);
    let (first, rest) = hello.split_at(10);
    let (first, rest) = (first.to_vec(), rest.to_vec());
    let writer = tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        client.write_all(&first).await.expect("write");
        tokio::time::sleep(Duration::from_millis(20)).await;
        client.write_all(&rest).await.expect("write");
        client
    });
    let mut prefix = BytesMut::new();
    let got = read(&mut server, &mut prefix, Duration::from_secs(10))
        .await
        .expect("read");
    assert_eq!(got, Hello::ServerName("books.example".into()));
    assert_eq!(&prefix[..], &hello[..]);
    drop(writer.await);

    // A client that sends half a hello and stops is given up on at the deadline.
    let (mut client, mut server) = tokio::io::duplex(1024);
    tokio::io::AsyncWriteExt::write_all(&mut client, &hello[..10])
        .await
        .expect("write");
    let mut prefix = BytesMut::new();
    let err = read(&mut server, &mut prefix, Duration::from_millis(50))
        .await
        .expect_err("times out");
    assert_eq!(err.kind(), std::io::ErrorKind::TimedOut);
}
