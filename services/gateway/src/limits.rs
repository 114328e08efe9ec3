//! Per-caller limits: connections per user and per IP address, and the op rate of one connection.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use tokio::time::Instant;

/// Counts the open connections of each user and each IP address.
#[derive(Debug, Default)]
pub(crate) struct ConnectionCounts {
    users: Counter<String>,
    ips: Counter<IpAddr>,
}

/// Which limit a new connection would cross.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TooManyConnections {
    User { user: String, limit: usize },
    Ip { ip: IpAddr, limit: usize },
}

impl std::fmt::Display for TooManyConnections {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TooManyConnections::User { user, limit } => {
                write!(f, "user {user:?} already has {limit} connections open; the limit is {limit} per user")
            }
            TooManyConnections::Ip { ip, limit } => {
                write!(
                    f,
                    "address {ip} already has {limit} connections open; the limit is {limit} per address"
                )
            }
        }
    }
}

impl ConnectionCounts {
    /// Takes a slot for one more connection of `user` (when counted) from `ip`, or says which limit is
    /// full. The slot is given back when the returned guard is dropped.
    pub(crate) fn admit(
        self: &Arc<Self>,
        user: Option<&str>,
        user_limit: usize,
        ip: IpAddr,
        ip_limit: usize,
    ) -> Result<ConnectionSlot, TooManyConnections> {
        if !self.ips.take(&ip, ip_limit) {
            return Err(TooManyConnections::Ip { ip, limit: ip_limit });
        }
        if let Some(user) = user {
            if !self.users.take(&user.to_owned(), user_limit) {
                self.ips.give_back(&ip);
                return Err(TooManyConnections::User { user: user.to_owned(), limit: user_limit });
            }
        }
        Ok(ConnectionSlot { counts: self.clone(), user: user.map(str::to_owned), ip })
    }
}

/// One admitted connection; dropping it frees its slots.
#[derive(Debug)]
pub(crate) struct ConnectionSlot {
    counts: Arc<ConnectionCounts>,
    user: Option<String>,
    ip: IpAddr,
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.counts.ips.give_back(&self.ip);
        if let Some(user) = &self.user {
            self.counts.users.give_back(user);
        }
    }
}

#[derive(Debug)]
struct Counter<K>(Mutex<HashMap<K, usize>>);

impl<K> Default for Counter<K> {
    fn default() -> Self {
        Self(Mutex::new(HashMap::new()))
    }
}

impl<K: Eq + Hash + Clone> Counter<K> {
    fn take(&self, key: &K, limit: usize) -> bool {
        let mut counts = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let count = counts.entry(key.clone()).or_default();
        if *count >= limit {
            return false;
        }
        *count += 1;
        true
    }

    fn give_back(&self, key: &K) {
        let mut counts = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = counts.get_mut(key) {
            *count -= 1;
            if *count == 0 {
                // No entry per address ever seen: the map holds only addresses with connections.
                counts.remove(key);
            }
        }
    }
}

/// A token bucket: `rate` tokens per second, holding at most `burst`.
#[derive(Debug)]
pub(crate) struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    pub(crate) fn new(rate: u32, burst: u32) -> Self {
        let burst = f64::from(burst.max(1));
        Self { rate: f64::from(rate), burst, tokens: burst, last: Instant::now() }
    }

    /// Takes one token if there is one.
    pub(crate) fn try_take(&mut self) -> bool {
        let now = Instant::now();
        let elapsed = now.duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn slots_are_counted_per_user_and_per_ip_and_given_back() {
        let counts = Arc::new(ConnectionCounts::default());
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let other_ip: IpAddr = "10.0.0.2".parse().unwrap();
        let a = counts.admit(Some("alice"), 2, ip, 3).unwrap();
        let b = counts.admit(Some("alice"), 2, other_ip, 3).unwrap();
        assert_eq!(
            counts.admit(Some("alice"), 2, ip, 3).unwrap_err(),
            TooManyConnections::User { user: "alice".to_owned(), limit: 2 }
        );
        let c = counts.admit(Some("bob"), 2, ip, 3).unwrap();
        let d = counts.admit(None, 2, ip, 3).unwrap();
        assert_eq!(counts.admit(None, 2, ip, 3).unwrap_err(), TooManyConnections::Ip { ip, limit: 3 });
        drop((a, b, c, d));
        assert!(counts.users.0.lock().unwrap().is_empty());
        assert!(counts.ips.0.lock().unwrap().is_empty());
        assert!(counts.admit(Some("alice"), 2, ip, 3).is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn the_bucket_allows_a_burst_then_the_rate() {
        let mut bucket = TokenBucket::new(10, 5);
        assert_eq!((0..20).filter(|_| bucket.try_take()).count(), 5);
        tokio::time::advance(Duration::from_millis(500)).await;
        assert_eq!((0..20).filter(|_| bucket.try_take()).count(), 5);
        tokio::time::advance(Duration::from_secs(60)).await;
        assert_eq!((0..20).filter(|_| bucket.try_take()).count(), 5, "never more than the burst");
    }
}
