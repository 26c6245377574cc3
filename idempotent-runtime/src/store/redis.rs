//! The Redis store: several replicas sharing one Redis or Valkey server, or one Redis Cluster.
//!
//! # Layout
//!
//! A record lives in one hash, `<prefix>{<topic>}`, where the topic is the hex SHA-256 of the
//! record identity:
//!
//! | state | fields | expiry |
//! |---|---|---|
//! | in flight | `t` fencing token, `f` fingerprint | the lease (`PX`) |
//! | completed | `r` the [`Record::encode`] bytes | the ttl (`PX`) |
//!
//! Its fencing counter, `<prefix>{<topic>}:fence`, outlives the claim by a grace period. Both
//! keys share the hash tag `{<topic>}`, so every script touches one slot (Redis Cluster's rule).
//!
//! Every state change is one Lua script, so it is atomic on the server: a claim reads the hash
//! and creates it only if absent (an expired lease is absent: Redis dropped it); renew, complete
//! and release act only if the hash still carries the caller's token. A token is the server's
//! clock in microseconds, or the last token of the key plus one if that is larger: strictly
//! increasing per key while the counter lives, and still larger than any earlier token after it
//! expired (unless the server clock went back by more than the grace period).
//!
//! Complete and release publish the topic on `<prefix>changes`; a listener task holding one
//! pub/sub connection per store wakes the waiters of this process.
//!
//! # Redis Cluster
//!
//! redis-rs' cluster client routes each script by its first key's slot; both keys of a record
//! share that slot. A classic `PUBLISH` on a cluster reaches every node (over the cluster
//! bus), so the listener subscribes on one node with a plain pub/sub connection and moves on
//! to the next configured node when that one fails.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster::{ClusterClient, ClusterConfig};
use redis::cluster_async::ClusterConnection;
use redis::{RedisResult, Script, ScriptInvocation, Value};

use super::cached::ExpiringStore;
use super::remote::{fingerprint_from, reconnect_delay, topic_of, unexpected, Background, RemoteState, Waiters};
use super::{Claim, FencingToken, Lookup, RecordKey, Store, StoreError};
use crate::fingerprint::Fingerprint;
use crate::record::Record;

/// How long a key's fencing counter outlives its last claim or renewal. Within it, a holder
/// whose lease lapsed unseen (nobody claimed the key since) may still complete.
const FENCE_GRACE: Duration = Duration::from_secs(60);

/// How long a released key's fence stays, so that its next claim is `Claim::Reacquired` (a
/// fence exists: an earlier claim of the key did not complete).
const RELEASED_KEPT: Duration = Duration::from_secs(24 * 60 * 60);

/// Lua: what the record hash holds. `{2, record, pttl}` completed, `{1, fingerprint}` in
/// flight, `{3}` absent.
const READ_STATE: &str = r"
local function read_state(key)
  local found = redis.call('HMGET', key, 'r', 'f')
  if found[1] then return {2, found[1], redis.call('PTTL', key)} end
  if found[2] then return {1, found[2]} end
  return {3}
end
";

/// Lua: does `token` hold the record? It does if the in-flight hash carries it, or if its lease
/// lapsed and nobody claimed the key since (the hash is gone, the fence still shows the token).
const HOLDS: &str = r"
local function holds(record, fence, token)
  local held = redis.call('HGET', record, 't')
  if held then return held == token end
  return redis.call('EXISTS', record) == 0 and redis.call('GET', fence) == token
end
";

/// KEYS: record, fence. ARGV: fingerprint, lease ms, fence ttl ms.
const CLAIM: &str = r"
local state = read_state(KEYS[1])
if state[1] ~= 3 then return state end
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local last = tonumber(redis.call('GET', KEYS[2]) or '0')
redis.call('INCRBY', KEYS[2], string.format('%d', math.max(1, now - last)))
local token = redis.call('GET', KEYS[2])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
redis.call('HSET', KEYS[1], 't', token, 'f', ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
if last > 0 then return {4, token} end
return {0, token}
";

/// KEYS: record. Read-only.
const LOOKUP: &str = r"
return read_state(KEYS[1])
";

/// KEYS: record, fence. ARGV: token, lease ms, fence ttl ms.
const RENEW: &str = r"
if redis.call('HGET', KEYS[1], 't') ~= ARGV[1] then return 0 end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
return 1
";

/// KEYS: record, fence. ARGV: token, record bytes, ttl ms, channel, topic.
const COMPLETE: &str = r"
if not holds(KEYS[1], KEYS[2], ARGV[1]) then return 0 end
redis.call('DEL', KEYS[1], KEYS[2])
redis.call('HSET', KEYS[1], 'r', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('PUBLISH', ARGV[4], ARGV[5])
return 1
";

/// KEYS: record, fence. ARGV: token, fence ttl ms, channel, topic. Burns the token, so a
/// released claim can never complete.
const RELEASE: &str = r"
if not holds(KEYS[1], KEYS[2], ARGV[1]) then return 0 end
redis.call('DEL', KEYS[1])
redis.call('INCRBY', KEYS[2], 1)
redis.call('PEXPIRE', KEYS[2], ARGV[2])
redis.call('PUBLISH', ARGV[3], ARGV[4])
return 1
";

/// KEYS: record, fence. ARGV: channel, topic. The key as if never used: its next claim starts
/// a new fence (time-based, so still above every earlier token).
const FORGET: &str = r"
local held = redis.call('DEL', KEYS[1], KEYS[2])
redis.call('PUBLISH', ARGV[1], ARGV[2])
if held > 0 then return 1 end
return 0
";

struct Scripts {
    claim: Script,
    lookup: Script,
    renew: Script,
    complete: Script,
    release: Script,
    forget: Script,
}

impl Scripts {
    fn new() -> Self {
        Self {
            claim: Script::new(&[READ_STATE, CLAIM].concat()),
            lookup: Script::new(&[READ_STATE, LOOKUP].concat()),
            renew: Script::new(RENEW),
            complete: Script::new(&[HOLDS, COMPLETE].concat()),
            release: Script::new(&[HOLDS, RELEASE].concat()),
            forget: Script::new(FORGET),
        }
    }
}

/// The Redis store: several replicas sharing one Redis (6 or later) or Valkey server.
///
/// - **Claim** is one Lua script: atomic on the server, so of any number of concurrent claims
///   on any number of replicas exactly one wins. It returns the holder's fingerprint or the
///   completed record in the same round trip.
/// - **Leases** are key expiries (`PEXPIRE`, in milliseconds): a replica that dies frees the key
///   when its lease runs out. The engine renews the lease while the handler runs.
/// - **Fencing**: renew, complete and release check the caller's token inside their script.
/// - **Waiting**: complete and release publish on a channel; [`Store::wait_for_change`]
///   returns when the key's notification arrives (one pub/sub connection per store, opened on
///   the first claim and re-opened on its own after a disconnection), or after its timeout.
///
/// The connection is a redis-rs [`ConnectionManager`]: one multiplexed connection, created
/// on the first call and re-created on its own after an I/O error. While the server is down,
/// calls fail fast with [`StoreError::Unavailable`]; the engine answers 503 (or runs the handler
/// without protection, if configured to fail open) until it is back.
///
/// [`RedisStore::cluster`] connects to a Redis Cluster instead (redis-rs' cluster client):
/// same scripts, same guarantees, every record on one slot.
///
/// # TLS
///
/// With the `redis-tls` feature, `rediss://` URLs connect through rustls and check the server's
/// certificate and host name against the system's roots (`SSL_CERT_FILE` and `SSL_CERT_DIR`
/// are honoured), or only against the CA of [`RedisStoreBuilder::tls_ca_file`] when set
/// (a private CA, as managed Redis services use). Verification cannot be turned off:
/// redis-rs' `tls-rustls-insecure` feature is not enabled, so a `#insecure` URL is refused.
///
/// Clones share the same connections.
///
/// ```no_run
/// use idempotent_runtime::{CachedStore, Idempotency, RedisStore};
///
/// # fn build() -> Result<(), idempotent_runtime::StoreError> {
/// let redis = RedisStore::builder("redis://127.0.0.1:6379/").key_prefix("orders:idempotency:").build()?;
/// let idempotency = Idempotency::builder().store(CachedStore::new(redis, 64 * 1024 * 1024)).build();
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct RedisStore {
    inner: Arc<Inner>,
}

struct Inner {
    /// The nodes the listener may subscribe on (one for a single server).
    pubsub_clients: Vec<redis::Client>,
    connection: Connection,
    prefix: String,
    channel: String,
    connect_timeout: Duration,
    scripts: Scripts,
    waiters: Arc<Waiters>,
    listener: Background,
}

/// Builds a [`RedisStore`].
#[derive(Debug, Clone)]
pub struct RedisStoreBuilder {
    nodes: Vec<String>,
    cluster: bool,
    #[cfg(feature = "redis-tls")]
    tls_ca_file: Option<std::path::PathBuf>,
    prefix: String,
    connect_timeout: Duration,
    response_timeout: Duration,
}

/// The command connection: one multiplexed connection to a server, or the cluster client's
/// connections to every node.
enum Connection {
    Single(ConnectionManager),
    Cluster(Box<LazyCluster>),
}

/// A cluster connection created by the first call (its tasks need the caller's runtime),
/// connected in the background and reconnected by redis-rs.
struct LazyCluster {
    client: ClusterClient,
    config: ClusterConfig,
    connection: std::sync::OnceLock<ClusterConnection>,
}

impl LazyCluster {
    fn get(&self) -> ClusterConnection {
        self.connection
            .get_or_init(|| {
                self.client
                    .get_pending_async_connection_with_config(self.config.clone())
            })
            .clone()
    }
}

impl Connection {
    async fn invoke(&self, invocation: &ScriptInvocation<'_>) -> RedisResult<Value> {
        match self {
            Self::Single(connection) => invocation.invoke_async(&mut connection.clone()).await,
            Self::Cluster(cluster) => invocation.invoke_async(&mut cluster.get()).await,
        }
    }

    async fn ping(&self) -> RedisResult<()> {
        let ping = redis::cmd("PING");
        match self {
            Self::Single(connection) => ping.query_async(&mut connection.clone()).await,
            Self::Cluster(cluster) => ping.query_async(&mut cluster.get()).await,
        }
    }
}

impl RedisStoreBuilder {
    /// Prefix of every key and of the notification channel (default `"idempotency:"`). Apps
    /// sharing one Redis need distinct prefixes, or distinct namespaces in their configuration.
    pub fn key_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Bound on opening a connection (default 1 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Bound on one command's answer (default 2 s).
    pub fn response_timeout(mut self, timeout: Duration) -> Self {
        self.response_timeout = timeout;
        self
    }

    /// Trusts only the CA certificates in this PEM file for `rediss://` connections, instead
    /// of the system's roots: the usual set-up for a managed Redis with a private CA. The
    /// server's host name is still checked. Read by [`build`](Self::build).
    ///
    /// ```no_run
    /// use idempotent_runtime::RedisStore;
    ///
    /// # fn build() -> Result<(), idempotent_runtime::StoreError> {
    /// let store = RedisStore::builder("rediss://:secret@redis.internal:6380/")
    ///     .tls_ca_file("/etc/ssl/redis-ca.pem")
    ///     .build()?;
    /// # Ok(())
    /// # }
    /// ```
    #[cfg(feature = "redis-tls")]
    pub fn tls_ca_file(mut self, path: impl Into<std::path::PathBuf>) -> Self {
        self.tls_ca_file = Some(path.into());
        self
    }

    #[cfg(feature = "redis-tls")]
    fn tls_certificates(&self) -> Result<Option<redis::TlsCertificates>, StoreError> {
        let Some(path) = &self.tls_ca_file else {
            return Ok(None);
        };
        let pem = std::fs::read(path).map_err(|error| {
            StoreError::Unavailable(format!("cannot read the Redis CA file {}: {error}", path.display()).into())
        })?;
        Ok(Some(redis::TlsCertificates {
            client_tls: None,
            root_cert: Some(pem),
        }))
    }

    fn client(&self, url: &str) -> Result<redis::Client, StoreError> {
        #[cfg(feature = "redis-tls")]
        if let Some(certificates) = self.tls_certificates()? {
            return redis::Client::build_with_tls(url, certificates).map_err(StoreError::unavailable);
        }
        redis::Client::open(url).map_err(StoreError::unavailable)
    }

    fn connection(&self) -> Result<Connection, StoreError> {
        if self.cluster {
            #[allow(unused_mut)] // without redis-tls
            let mut client = redis::cluster::ClusterClientBuilder::new(self.nodes.iter().map(String::as_str));
            #[cfg(feature = "redis-tls")]
            if let Some(certificates) = self.tls_certificates()? {
                client = client.certs(certificates);
            }
            let config = ClusterConfig::new()
                .set_connection_timeout(self.connect_timeout)
                .set_response_timeout(self.response_timeout);
            return Ok(Connection::Cluster(Box::new(LazyCluster {
                client: client.build().map_err(StoreError::unavailable)?,
                config,
                connection: std::sync::OnceLock::new(),
            })));
        }
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.connect_timeout))
            .set_response_timeout(Some(self.response_timeout))
            // Fail fast while the server is down: the next call tries again.
            .set_number_of_retries(1);
        let client = self.client(&self.nodes[0])?;
        ConnectionManager::new_lazy_with_config(client, config)
            .map(Connection::Single)
            .map_err(StoreError::unavailable)
    }

    /// Finishes the store. No connection is opened yet: the first call opens it, so an app can
    /// start while Redis is down (and answer 503 until it is up).
    ///
    /// # Errors
    ///
    /// [`StoreError::Unavailable`] if a URL is not a valid Redis URL, no node is given, or the
    /// CA file cannot be read.
    pub fn build(self) -> Result<RedisStore, StoreError> {
        if self.nodes.is_empty() {
            return Err(StoreError::Unavailable("no Redis Cluster node given".into()));
        }
        let pubsub_clients = self
            .nodes
            .iter()
            .map(|url| self.client(url))
            .collect::<Result<_, _>>()?;
        Ok(RedisStore {
            inner: Arc::new(Inner {
                pubsub_clients,
                connection: self.connection()?,
                channel: format!("{}changes", self.prefix),
                prefix: self.prefix,
                connect_timeout: self.connect_timeout,
                scripts: Scripts::new(),
                waiters: Arc::default(),
                listener: Background::default(),
            }),
        })
    }
}

impl RedisStore {
    /// A store on the server at `url` (`redis://[:password@]host:port/db`), with the defaults of
    /// [`RedisStoreBuilder`].
    ///
    /// # Errors
    ///
    /// [`StoreError::Unavailable`] if the URL is not a valid Redis URL. Nothing is connected yet.
    pub fn new(url: &str) -> Result<Self, StoreError> {
        Self::builder(url).build()
    }

    /// Starts configuring a store on the server at `url`.
    pub fn builder(url: &str) -> RedisStoreBuilder {
        Self::configure(vec![url.to_owned()], false)
    }

    /// A store on the Redis Cluster these nodes belong to (`redis://host:port` each; one
    /// reachable node is enough, the client discovers the others), with the defaults of
    /// [`RedisStoreBuilder`].
    ///
    /// # Errors
    ///
    /// [`StoreError::Unavailable`] if a URL is invalid or none is given. Nothing is connected
    /// yet.
    ///
    /// ```no_run
    /// use idempotent_runtime::RedisStore;
    ///
    /// # fn build() -> Result<(), idempotent_runtime::StoreError> {
    /// let store = RedisStore::cluster(["redis://10.0.0.1:6379", "redis://10.0.0.2:6379", "redis://10.0.0.3:6379"])?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn cluster<I, S>(nodes: I) -> Result<Self, StoreError>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self::cluster_builder(nodes).build()
    }

    /// Starts configuring a store on the Redis Cluster these nodes belong to.
    pub fn cluster_builder<I, S>(nodes: I) -> RedisStoreBuilder
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self::configure(nodes.into_iter().map(Into::into).collect(), true)
    }

    fn configure(nodes: Vec<String>, cluster: bool) -> RedisStoreBuilder {
        RedisStoreBuilder {
            nodes,
            cluster,
            #[cfg(feature = "redis-tls")]
            tls_ca_file: None,
            prefix: "idempotency:".to_owned(),
            connect_timeout: Duration::from_secs(1),
            response_timeout: Duration::from_secs(2),
        }
    }

    /// Checks that the server answers, e.g. at startup to fail fast on a wrong URL.
    ///
    /// # Errors
    ///
    /// [`StoreError::Unavailable`] if it does not.
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.inner.connection.ping().await.map_err(StoreError::unavailable)
    }

    /// The Redis key of a record's hash, for operators inspecting or deleting one record.
    pub fn record_key(&self, key: &RecordKey) -> String {
        self.keys(key).record
    }

    fn keys(&self, key: &RecordKey) -> Keys {
        let topic = topic_of(key);
        let record = format!("{}{{{topic}}}", self.inner.prefix);
        let fence = format!("{record}:fence");
        Keys { record, fence, topic }
    }

    async fn run(&self, script: &Script, keys: &Keys, with_fence: bool, args: &[&[u8]]) -> Result<Value, StoreError> {
        let mut invocation = script.key(&keys.record);
        if with_fence {
            invocation.key(&keys.fence);
        }
        for arg in args {
            invocation.arg(*arg);
        }
        self.inner
            .connection
            .invoke(&invocation)
            .await
            .map_err(StoreError::unavailable)
    }

    fn ensure_listener(&self) {
        let inner = &self.inner;
        inner.listener.ensure(|| {
            listen(
                inner.pubsub_clients.clone(),
                inner.channel.clone(),
                inner.connect_timeout,
                Arc::clone(&inner.waiters),
            )
        });
    }
}

struct Keys {
    record: String,
    fence: String,
    topic: String,
}

/// Keeps one subscription to the store's channel and wakes local waiters, reconnecting after
/// any failure (to the next node of a cluster). Runs until the store is dropped.
async fn listen(clients: Vec<redis::Client>, channel: String, connect_timeout: Duration, waiters: Arc<Waiters>) {
    let mut failures = 0;
    for client in clients.iter().cycle() {
        let subscribed = async {
            let mut pubsub = tokio::time::timeout(connect_timeout, client.get_async_pubsub())
                .await
                .map_err(|_| "timed out".to_owned())?
                .map_err(|e| e.to_string())?;
            pubsub.subscribe(&channel).await.map_err(|e| e.to_string())?;
            Ok::<_, String>(pubsub.into_on_message())
        };
        match subscribed.await {
            Ok(mut messages) => {
                failures = 0;
                // Changes made while no subscription existed were not announced.
                waiters.wake_all();
                while let Some(message) = messages.next().await {
                    if let Ok(topic) = std::str::from_utf8(message.get_payload_bytes()) {
                        waiters.wake(topic);
                    }
                }
                tracing::warn!("idempotency store: Redis notification connection lost; reconnecting");
                waiters.wake_all();
            }
            Err(error) => {
                failures += 1;
                tracing::debug!(%error, "idempotency store: cannot subscribe to Redis notifications yet");
            }
        }
        tokio::time::sleep(reconnect_delay(failures)).await;
    }
}

fn parse_state(reply: Value) -> Result<RemoteState, StoreError> {
    let Value::Array(items) = reply else {
        return Err(unexpected("not an array"));
    };
    let mut items = items.into_iter();
    let kind = match items.next() {
        Some(Value::Int(kind)) => kind,
        _ => return Err(unexpected("no state")),
    };
    match (kind, items.next(), items.next()) {
        (kind @ (0 | 4), Some(Value::BulkString(token)), None) => std::str::from_utf8(&token)
            .ok()
            .and_then(|token| token.parse().ok())
            .map(|token| match kind {
                0 => RemoteState::Acquired(FencingToken(token)),
                _ => RemoteState::Reacquired(FencingToken(token)),
            })
            .ok_or_else(|| unexpected("bad fencing token")),
        (1, Some(Value::BulkString(fingerprint)), None) => fingerprint_from(&fingerprint).map(RemoteState::InFlight),
        (2, Some(Value::BulkString(record)), Some(Value::Int(pttl))) => {
            let record = Record::decode(Bytes::from(record))?;
            let expires_in = u64::try_from(pttl).ok().map(Duration::from_millis);
            Ok(RemoteState::Completed(Arc::new(record), expires_in))
        }
        (3, None, None) => Ok(RemoteState::Absent),
        _ => Err(unexpected("unknown state")),
    }
}

fn parse_flag(reply: Value) -> Result<bool, StoreError> {
    match reply {
        Value::Int(flag) => Ok(flag == 1),
        _ => Err(unexpected("not a flag")),
    }
}

fn millis(duration: Duration) -> Vec<u8> {
    // PX needs at least 1 ms.
    duration.as_millis().max(1).to_string().into_bytes()
}

#[async_trait::async_trait]
impl ExpiringStore for RedisStore {
    async fn claim_expiring(
        &self,
        key: &RecordKey,
        fingerprint: Fingerprint,
        lease: Duration,
    ) -> Result<(Claim, Option<Duration>), StoreError> {
        // Subscribed before the first duplicate has to wait, so its first notification is not missed.
        self.ensure_listener();
        let keys = self.keys(key);
        let args: [&[u8]; 3] = [&fingerprint.0, &millis(lease), &millis(lease + FENCE_GRACE)];
        let reply = self.run(&self.inner.scripts.claim, &keys, true, &args).await?;
        parse_state(reply)?.into_claim()
    }

    async fn lookup_expiring(&self, key: &RecordKey) -> Result<(Lookup, Option<Duration>), StoreError> {
        let keys = self.keys(key);
        let reply = self.run(&self.inner.scripts.lookup, &keys, false, &[]).await?;
        parse_state(reply)?.into_lookup()
    }
}

#[async_trait::async_trait]
impl Store for RedisStore {
    async fn claim(&self, key: &RecordKey, fingerprint: Fingerprint, lease: Duration) -> Result<Claim, StoreError> {
        Ok(self.claim_expiring(key, fingerprint, lease).await?.0)
    }

    async fn renew(&self, key: &RecordKey, token: FencingToken, lease: Duration) -> Result<bool, StoreError> {
        let keys = self.keys(key);
        let token = token.0.to_string();
        let args: [&[u8]; 3] = [token.as_bytes(), &millis(lease), &millis(lease + FENCE_GRACE)];
        parse_flag(self.run(&self.inner.scripts.renew, &keys, true, &args).await?)
    }

    async fn complete(
        &self,
        key: &RecordKey,
        token: FencingToken,
        record: Arc<Record>,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let keys = self.keys(key);
        let token = token.0.to_string();
        let encoded = record.encode();
        let args: [&[u8]; 5] = [
            token.as_bytes(),
            &encoded,
            &millis(ttl),
            self.inner.channel.as_bytes(),
            keys.topic.as_bytes(),
        ];
        parse_flag(self.run(&self.inner.scripts.complete, &keys, true, &args).await?)
    }

    async fn release(&self, key: &RecordKey, token: FencingToken) -> Result<bool, StoreError> {
        let keys = self.keys(key);
        let token = token.0.to_string();
        let args: [&[u8]; 4] = [
            token.as_bytes(),
            &millis(RELEASED_KEPT),
            self.inner.channel.as_bytes(),
            keys.topic.as_bytes(),
        ];
        parse_flag(self.run(&self.inner.scripts.release, &keys, true, &args).await?)
    }

    async fn lookup(&self, key: &RecordKey) -> Result<Lookup, StoreError> {
        Ok(self.lookup_expiring(key).await?.0)
    }

    /// Deletes the key's hash and fence: the next claim is [`Claim::Acquired`]. Waiters on
    /// other replicas are notified and claim again.
    async fn forget(&self, key: &RecordKey) -> Result<bool, StoreError> {
        let keys = self.keys(key);
        let args: [&[u8]; 2] = [self.inner.channel.as_bytes(), keys.topic.as_bytes()];
        parse_flag(self.run(&self.inner.scripts.forget, &keys, true, &args).await?)
    }

    /// Returns when the key's completion or release is announced, or after `timeout`.
    ///
    /// # Errors
    ///
    /// None: while the notification connection is down, this simply waits for the timeout
    /// (the caller's next lookup reports the outage).
    async fn wait_for_change(&self, key: &RecordKey, timeout: Duration) -> Result<(), StoreError> {
        self.ensure_listener();
        self.inner.waiters.wait(&topic_of(key), timeout).await;
        Ok(())
    }
}
