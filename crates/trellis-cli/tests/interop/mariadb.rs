//! A MySQL-protocol database through the mesh: a throwaway MariaDB server (its own
//! data directory, loopback only) behind one sidecar, the `mariadb` client in front of
//! the other. The server speaks first, so the sidecars must carry the connection as
//! opaque TCP from its first byte.

use std::ffi::OsStr;
use std::path::Path;

use tokio::process::Command;

use super::http::random_bytes;
use super::mesh::{inbound_mtls_handshakes, require_programs, run_client, run_client_fed, Mesh};

const ROWS: usize = 2_000;

/// `mariadb` running `sql` as root against `address`, one tab-separated row a line.
async fn mariadb(address: &str, sql: &str) -> String {
    let (host, port) = address.split_once(':').expect("host:port");
    let mut command = Command::new("mariadb");
    command
        .args(["--no-defaults", "-h", host, "-P", port, "-u", "root"])
        .args(["--batch", "--skip-column-names", "--max-allowed-packet=64M"])
        .args(["-e", sql]);
    run_client(command).await
}

/// `mariadb` running the statements of the file `script` as root against `address`.
async fn mariadb_script(address: &str, script: &Path) -> String {
    let (host, port) = address.split_once(':').expect("host:port");
    let mut command = Command::new("mariadb");
    command
        .args(["--no-defaults", "-h", host, "-P", port, "-u", "root"])
        .args(["--batch", "--max-allowed-packet=64M"]);
    run_client_fed(command, Some(script)).await
}

#[tokio::test]
async fn mariadb_rows_written_and_read_through_the_mesh_match() {
    require_programs(
        &["mariadbd", "mariadb-install-db", "mariadb"],
        "mariadb-server mariadb-client",
    );
    let mut mesh = Mesh::start().await;
    let data = mesh.dir.path().join("mariadb");
    let mut install = Command::new("mariadb-install-db");
    install
        .arg("--no-defaults")
        .arg(format!("--datadir={}", data.display()))
        .args([
            "--user=root",
            "--auth-root-authentication-method=normal",
            "--skip-test-db",
        ]);
    run_client(install).await;
    let serve = format!(
        "exec mariadbd --no-defaults --datadir={0} --socket={0}/socket --pid-file={0}/pid \
         --port=\"$PORT\" --bind-address=127.0.0.1 --user=root --skip-log-bin \
         --innodb-buffer-pool-size=16M --max-allowed-packet=64M",
        data.display()
    );
    let server = mesh
        .serve(
            "db",
            "tcp",
            &[OsStr::new("sh"), OsStr::new("-c"), OsStr::new(&serve)],
        )
        .await;
    let caller = mesh.caller(&["db"]).await;
    let db = caller.upstream("db");

    // Rows of every size up to 2 MiB, written through the mesh in one session.
    let rows: Vec<(usize, String)> = (0..ROWS)
        .map(|i| {
            let len = if i == ROWS - 1 { 1024 * 1024 } else { i % 300 };
            (i, trellis_identity::hex::encode(&random_bytes(len)))
        })
        .collect();
    let mut sql = String::from(
        "CREATE DATABASE interop; CREATE TABLE interop.t (id INT PRIMARY KEY, body LONGTEXT NOT NULL) ENGINE=InnoDB;",
    );
    for chunk in rows.chunks(100) {
        let values: Vec<String> = chunk
            .iter()
            .map(|(i, body)| format!("({i},'{body}')"))
            .collect();
        sql.push_str(&format!(
            "INSERT INTO interop.t VALUES {};",
            values.join(",")
        ));
    }
    let script = mesh.dir.path().join("rows.sql");
    std::fs::write(&script, sql).expect("write script");
    assert_eq!(mariadb_script(&db, &script).await, "");

    // Read back through the mesh: every row, byte for byte.
    let read = mariadb(&db, "SELECT id, body FROM interop.t ORDER BY id").await;
    let expected: String = rows
        .iter()
        .map(|(i, body)| format!("{i}\t{body}\n"))
        .collect();
    assert!(
        read == expected,
        "{} of {ROWS} rows read back",
        read.lines().count()
    );
    // The server's own checksum, asked through the mesh and directly, agrees.
    let checksum = "CHECKSUM TABLE interop.t EXTENDED";
    let through = mariadb(&db, checksum).await;
    let direct = mariadb(&server.app.to_string(), checksum).await;
    assert_eq!(through, direct);
    assert!(
        through.starts_with("interop.t\t") && !through.contains("NULL"),
        "{through}"
    );
    let count = mariadb(&db, "SELECT COUNT(*), SUM(LENGTH(body)) FROM interop.t").await;
    let total: usize = rows.iter().map(|(_, body)| body.len()).sum();
    assert_eq!(count, format!("{ROWS}\t{total}\n"));
    assert!(inbound_mtls_handshakes(server.admin).await > 0);
}
