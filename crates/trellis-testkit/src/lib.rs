//! Test harness for the Trellis proxy: real servers on loopback port 0.
//!
//! This crate owns the sample backends that integration tests put behind a
//! proxy — an HTTP service ([`http`]), raw TCP servers ([`tcp`]) and a gRPC
//! echo service ([`grpc`]), an HTTPS server with a CA of its own ([`tls::https`]), a
//! DNS server with one answer ([`dns`]) — the clients that talk to them, a bounded load
//! generator ([`load`]), hosts as network namespaces on a bridge ([`netns`]), real
//! etcd clusters for the control plane's etcd store ([`etcd`]), simulated proxies for
//! the control plane's push benchmarks ([`proxies`]) and the
//! [`assert_eventually!`] macro that replaces sleeps in tests. Every server binds
//! `127.0.0.1:0`, runs on the caller's tokio runtime and stops when its handle is
//! dropped; etcd members and namespace hosts go when theirs are.
//!
//! It must not depend on `trellis-proxy`: the proxy's tests depend on it.

pub mod dns;
pub mod echo;
pub mod etcd;
pub mod grpc;
pub mod http;
pub mod kube;
pub mod load;
pub mod netns;
pub mod proxies;
pub mod tcp;
pub mod tls;

mod shutdown;

/// The boxed error the clients in this crate return.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[doc(hidden)]
pub use tokio as __tokio;

/// Polls an async condition every 10 ms until it is true, panicking with the
/// message after 10 s.
///
/// Use it inside async tests instead of a fixed sleep:
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> std::io::Result<()> {
/// use tokio::net::TcpStream;
/// use trellis_testkit::{assert_eventually, tcp::TcpEchoServer};
///
/// let server = TcpEchoServer::start().await?;
/// let _conn = TcpStream::connect(server.addr()).await?;
/// let n = 1;
/// assert_eventually!(server.connections() == n, "server never saw {} connections", n);
/// assert_eventually!(TcpStream::connect(server.addr()).await.is_ok());
/// # Ok(())
/// # }
/// ```
///
/// The condition is re-evaluated on every poll and may contain `.await`.
/// The deadline follows tokio's clock, so it also works under a paused clock.
#[macro_export]
macro_rules! assert_eventually {
    ($cond:expr $(,)?) => {
        $crate::assert_eventually!($cond, "condition never became true: {}", stringify!($cond))
    };
    ($cond:expr, $($arg:tt)+) => {{
        let deadline = $crate::__tokio::time::Instant::now() + ::std::time::Duration::from_secs(10);
        loop {
            if $cond {
                break;
            }
            if $crate::__tokio::time::Instant::now() >= deadline {
                panic!($($arg)+);
            }
            $crate::__tokio::time::sleep(::std::time::Duration::from_millis(10)).await;
        }
    }};
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};

    #[tokio::test]
    async fn assert_eventually_waits_for_the_condition() {
        let polls = AtomicU64::new(0);
        let ready = || async { polls.fetch_add(1, Ordering::SeqCst) >= 3 };
        assert_eventually!(ready().await);
        assert_eq!(polls.load(Ordering::SeqCst), 4);
    }

    #[tokio::test(start_paused = true)]
    #[should_panic(expected = "never saw 7")]
    async fn assert_eventually_panics_with_the_message() {
        let n = 7;
        assert_eventually!(n == 8, "never saw {}", n);
    }
}
