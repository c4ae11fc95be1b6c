//! The log's control plane in Cairn's KV store, through the etcd API like any client:
//!
//! | key | value |
//! |---|---|
//! | `/cairn/log/topics/<name>` | the topic's `TopicConfig` as JSON (created once) |
//! | `/cairn/log/brokers/<id>` | the broker's client address, under the broker's lease |
//! | `/cairn/log/sequencers/<topic>` | the id of the broker running the topic's sequencer, under its lease |
//! | `/cairn/log/offsets/<topic>/<group>` | a subscriber group's next global position (ORDER 2/5) |
//!
//! A broker that dies stops renewing its lease: its registration and any sequencer role it
//! held disappear, and a standby's `acquire_sequencer` wins.

use std::time::Duration;

use etcd_client::{Client, Compare, CompareOp, GetOptions, PutOptions, Txn, TxnOp};

use crate::error::{LogError, Result};
use crate::topic::{validate_name, TopicConfig};

pub const PREFIX: &str = "/cairn/log/";
const TOPICS: &str = "/cairn/log/topics/";
const BROKERS: &str = "/cairn/log/brokers/";
const SEQUENCERS: &str = "/cairn/log/sequencers/";
const OFFSETS: &str = "/cairn/log/offsets/";

#[derive(Clone)]
pub struct Control {
    client: Client,
}

impl Control {
    pub async fn connect(endpoints: &[String]) -> Result<Control> {
        let options = etcd_client::ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(3))
            .with_timeout(Duration::from_secs(5));
        let client = Client::connect(endpoints, Some(options)).await?;
        Ok(Control { client })
    }

    /// Registers a new topic; refuses an existing name (topics are immutable once created).
    pub async fn create_topic(&self, topic: &TopicConfig) -> Result<()> {
        topic.validate()?;
        let key = format!("{TOPICS}{}", topic.name);
        let json = serde_json::to_string(topic).map_err(|e| LogError::Control(e.to_string()))?;
        let txn = Txn::new()
            .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(key, json, None)]);
        if !self.client.clone().txn(txn).await?.succeeded() {
            return Err(LogError::Control(format!(
                "topic {:?} already exists",
                topic.name
            )));
        }
        Ok(())
    }

    pub async fn topic(&self, name: &str) -> Result<Option<TopicConfig>> {
        validate_name(name)?;
        let response = self
            .client
            .clone()
            .get(format!("{TOPICS}{name}"), None)
            .await?;
        response
            .kvs()
            .first()
            .map(|kv| decode_topic(kv.value()))
            .transpose()
    }

    /// Succeeds once a member answers, with or without a leader (a serializable count of the
    /// topics: nothing to decode, nothing that waits for an election).
    pub async fn ping(&self) -> Result<()> {
        let options = GetOptions::new()
            .with_prefix()
            .with_count_only()
            .with_serializable();
        self.client.clone().get(TOPICS, Some(options)).await?;
        Ok(())
    }

    pub async fn topics(&self) -> Result<Vec<TopicConfig>> {
        let response = self
            .client
            .clone()
            .get(TOPICS, Some(GetOptions::new().with_prefix()))
            .await?;
        response
            .kvs()
            .iter()
            .map(|kv| decode_topic(kv.value()))
            .collect()
    }

    /// Grants the broker's lease and keeps it alive from a background task until the returned
    /// handle is dropped (or the process dies).
    pub async fn register_broker(&self, id: u32, address: &str, ttl_s: i64) -> Result<BrokerLease> {
        let mut client = self.client.clone();
        let lease = client.lease_grant(ttl_s, None).await?.id();
        let key = format!("{BROKERS}{id}");
        client
            .put(key, address, Some(PutOptions::new().with_lease(lease)))
            .await?;
        let (mut keeper, mut responses) = client.lease_keep_alive(lease).await?;
        let period = Duration::from_millis((ttl_s as u64 * 1000 / 3).max(100));
        let renew = tokio::spawn(async move {
            loop {
                tokio::time::sleep(period).await;
                let alive = keeper.keep_alive().await.is_ok()
                    && matches!(responses.message().await, Ok(Some(r)) if r.ttl() > 0);
                if !alive {
                    tracing::error!(
                        lease,
                        "broker lease lost; its registration and roles are gone"
                    );
                    return;
                }
            }
        });
        Ok(BrokerLease { lease, renew })
    }

    /// Live brokers: `(id, address)`, ordered by id.
    pub async fn brokers(&self) -> Result<Vec<(u32, String)>> {
        let response = self
            .client
            .clone()
            .get(BROKERS, Some(GetOptions::new().with_prefix()))
            .await?;
        let mut brokers: Vec<(u32, String)> = response
            .kvs()
            .iter()
            .filter_map(|kv| {
                let id = kv.key_str().ok()?.strip_prefix(BROKERS)?.parse().ok()?;
                Some((id, kv.value_str().ok()?.to_string()))
            })
            .collect();
        brokers.sort();
        Ok(brokers)
    }

    /// Takes the topic's sequencer role if nobody holds it; true if `broker` holds it now.
    pub async fn acquire_sequencer(&self, topic: &str, broker: u32, lease: i64) -> Result<bool> {
        let key = format!("{SEQUENCERS}{topic}");
        let txn = Txn::new()
            .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(
                key.clone(),
                broker.to_string(),
                Some(PutOptions::new().with_lease(lease)),
            )])
            .or_else([TxnOp::get(key, None)]);
        let response = self.client.clone().txn(txn).await?;
        if response.succeeded() {
            return Ok(true);
        }
        let holder = response.op_responses().into_iter().find_map(|op| match op {
            etcd_client::TxnOpResponse::Get(get) => get
                .kvs()
                .first()
                .map(|kv| (kv.value_str().ok().map(str::to_string), kv.lease())),
            _ => None,
        });
        Ok(matches!(holder, Some((Some(id), l)) if id == broker.to_string() && l == lease))
    }
}

impl Control {
    /// Records where subscriber `group` resumes: the next global position it wants.
    pub async fn commit_offset(&self, topic: &str, group: &str, next_position: u64) -> Result<()> {
        validate_name(group)?;
        let key = format!("{OFFSETS}{topic}/{group}");
        self.client
            .clone()
            .put(key, next_position.to_string(), None)
            .await?;
        Ok(())
    }

    /// Where subscriber `group` resumes, if it ever committed.
    pub async fn committed_offset(&self, topic: &str, group: &str) -> Result<Option<u64>> {
        validate_name(group)?;
        self.get_parsed(format!("{OFFSETS}{topic}/{group}")).await
    }

    /// The broker currently holding the topic's sequencer role, if any.
    pub async fn sequencer_holder(&self, topic: &str) -> Result<Option<u32>> {
        self.get_parsed(format!("{SEQUENCERS}{topic}")).await
    }

    /// The value at `key` parsed from text; `None` if absent or not a `T`.
    async fn get_parsed<T: std::str::FromStr>(&self, key: String) -> Result<Option<T>> {
        let response = self.client.clone().get(key, None).await?;
        Ok(response
            .kvs()
            .first()
            .and_then(|kv| kv.value_str().ok()?.parse().ok()))
    }
}

fn decode_topic(value: &[u8]) -> Result<TopicConfig> {
    serde_json::from_slice(value).map_err(|e| LogError::Control(format!("bad topic record: {e}")))
}

/// A broker's lease, renewed until dropped.
pub struct BrokerLease {
    pub lease: i64,
    renew: tokio::task::JoinHandle<()>,
}

impl BrokerLease {
    /// False once renewal failed (the lease is gone or going).
    pub fn alive(&self) -> bool {
        !self.renew.is_finished()
    }
}

impl Drop for BrokerLease {
    fn drop(&mut self) {
        self.renew.abort();
    }
}
