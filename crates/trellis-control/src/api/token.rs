//! The admin token: a credential made on first start from the operating system's secure
//! random source, kept in the data directory (`admin-token`, mode 0600) so that the CLI
//! on the same machine, run by the same user, can read it.
//!
//! Control planes sharing a store share one token ([`share`]): the store holds it
//! (`/admin/token`, sealed like the CA's secrets when there is an encryption key), and
//! each control plane copies it into its data directory for the CLI beside it.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// The token file's name in the data directory.
pub const TOKEN_FILE: &str = "admin-token";

/// Where the store keeps the token.
pub const STORE_KEY: &str = "/admin/token";

/// The admin token of the control planes on `secrets`' store, also written to
/// `data_dir`. The first control plane to start puts its own token (the one already in
/// its data directory, or a new one) in the store; the others adopt it.
pub async fn share(
    secrets: &crate::secrets::Secrets,
    data_dir: &Path,
) -> Result<String, crate::secrets::SecretError> {
    use crate::secrets::SecretError;
    use crate::store::{Expect, StoreError};
    secrets.seal_at_rest(&[STORE_KEY]).await?;
    loop {
        if let Some((value, _)) = secrets.get(STORE_KEY).await? {
            let token = String::from_utf8_lossy(&value).trim().to_owned();
            if read(&data_dir.join(TOKEN_FILE)).ok().as_deref() != Some(token.as_str()) {
                replace(data_dir, &token).map_err(|e| {
                    SecretError::Store(StoreError::Backend {
                        op: "copy the admin token to the data directory",
                        source: Box::new(e),
                    })
                })?;
            }
            return Ok(token);
        }
        let local = load_or_create(data_dir).map_err(|e| {
            SecretError::Store(StoreError::Backend {
                op: "read the admin token",
                source: Box::new(e),
            })
        })?;
        match secrets
            .put(STORE_KEY, local.as_bytes(), Expect::Absent)
            .await
        {
            Ok(_) => return Ok(local),
            // Another control plane shared its token first: adopt it.
            Err(SecretError::Store(StoreError::Conflict { .. })) => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Writes `token` as the data directory's token, replacing any other at once.
fn replace(data_dir: &Path, token: &str) -> io::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(data_dir)
        .map_err(|e| at(data_dir, e))?;
    let path = data_dir.join(TOKEN_FILE);
    let partial = data_dir.join(format!(".{TOKEN_FILE}.{}", std::process::id()));
    let written = write_private(&partial, token).and_then(|()| fs::rename(&partial, &path));
    if written.is_err() {
        let _ = fs::remove_file(&partial);
    }
    written.map_err(|e| at(&path, e))
}

/// Random bytes in a token; it is written as twice as many hex digits.
const TOKEN_BYTES: usize = 32;

/// The admin token in `data_dir`, made (with the directory, mode 0700) if there is none.
///
/// A token file readable by others is narrowed to mode 0600. Two processes starting at
/// once agree on one token: the file appears whole or not at all.
pub fn load_or_create(data_dir: &Path) -> io::Result<String> {
    let path = data_dir.join(TOKEN_FILE);
    match read(&path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        found => return found,
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(data_dir)
        .map_err(|e| at(data_dir, e))?;
    let token = generate()?;
    // Write a private file, then link it into place: readers never see a partial token,
    // and if another process linked first, its token wins.
    let partial = data_dir.join(format!(".{TOKEN_FILE}.{}", std::process::id()));
    let written = write_private(&partial, &token).and_then(|()| fs::hard_link(&partial, &path));
    let _ = fs::remove_file(&partial);
    match written {
        Ok(()) => Ok(token),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => read(&path),
        Err(e) => Err(at(&path, e)),
    }
}

fn read(path: &Path) -> io::Result<String> {
    let text = fs::read_to_string(path).map_err(|e| at(path, e))?;
    let token = text.trim();
    if token.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "{}: the admin token file is empty; delete it to make a new token",
                path.display()
            ),
        ));
    }
    let mode = fs::metadata(path)
        .map_err(|e| at(path, e))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        fs::set_permissions(path, fs::Permissions::from_mode(0o600)).map_err(|e| at(path, e))?;
    }
    Ok(token.to_string())
}

fn write_private(path: &Path, token: &str) -> io::Result<()> {
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    writeln!(file, "{token}")?;
    file.sync_all()
}

/// A new token: [`TOKEN_BYTES`] bytes from the OS's cryptographically secure source, in
/// lowercase hex.
fn generate() -> io::Result<String> {
    let mut bytes = [0u8; TOKEN_BYTES];
    getrandom::fill(&mut bytes)
        .map_err(|e| io::Error::other(format!("cannot make an admin token: {e}")))?;
    Ok(trellis_identity::hex::encode(&bytes))
}

fn at(path: &Path, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_once_then_reads() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("nested").join("trellis");
        let token = load_or_create(&data).expect("created");
        assert_eq!(token.len(), 2 * TOKEN_BYTES);
        assert!(token.bytes().all(|c| c.is_ascii_hexdigit()));
        let mode = |p: &Path| fs::metadata(p).expect("exists").permissions().mode() & 0o777;
        assert_eq!(mode(&data.join(TOKEN_FILE)), 0o600);
        assert_eq!(mode(&data), 0o700);
        assert_eq!(load_or_create(&data).expect("read back"), token);
        assert_eq!(
            fs::read_dir(&data).expect("list").count(),
            1,
            "no leftovers"
        );

        let other = tempfile::tempdir().expect("tempdir");
        assert_ne!(load_or_create(other.path()).expect("created"), token);
    }

    #[test]
    fn narrows_permissions_and_refuses_an_empty_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(TOKEN_FILE);
        fs::write(&path, "secret\n").expect("write");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).expect("chmod");
        assert_eq!(load_or_create(dir.path()).expect("read"), "secret");
        let mode = fs::metadata(&path).expect("exists").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);

        fs::write(&path, "\n").expect("write");
        let e = load_or_create(dir.path()).expect_err("empty file refused");
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        assert!(e.to_string().contains("delete it"), "{e}");
    }
}
