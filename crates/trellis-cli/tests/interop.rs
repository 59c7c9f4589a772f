//! The interoperability suite: widely used clients and servers that no Trellis code
//! wrote (curl, Java's `HttpClient`, Python's `http.server`, `websockets` and `grpcio`,
//! redis and MariaDB) talking through two sidecars with strict mTLS under a real
//! control plane, each case checking what arrives end to end (checksums, message
//! counts, status codes, trailers). The peers' own scripts are in interop/peers;
//! docs/interop.md says what each case checks.

mod support;

mod interop {
    pub mod mesh;

    mod grpc;
    mod http;
    mod long_lived;
    mod mariadb;
    mod redis;
    mod websocket;
}
