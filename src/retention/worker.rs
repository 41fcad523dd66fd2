//! The retention worker: one thread that owns the policies, answers the
//! `/v1/retention/` requests, and runs the truncation rounds.
//!
//! Policy requests arrive from the reactors as `Box<Connection>` with the
//! request already parsed (bounded queue; full: 429); the answer is written
//! into the connection, which goes back to its reactor like a pipeline
//! reply. Policies are stored one object each under `retention/` (written
//! with `Put`, last writer wins) and loaded when stage 2 hands over the
//! store after recovering the log; until then every request is 503.
//!
//! Invariants:
//! - policies and truncation live on this one thread, so a `PUT` checked
//!   against the oldest version cannot race a round that moves it;
//! - a policy change is in memory (and used by truncation) only after it is
//!   durable in the store;
//! - a round publishes the new oldest version *before* deleting the batch
//!   that ends at it, deletes one object at a time, oldest first, and stops
//!   at the first error or at a batch that does not chain to its successor,
//!   so storage never holds a hole and readers never find one;
//! - no round runs until the policies are loaded (with none, nothing is
//!   deleted anyway), and nothing runs on a reactor.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};

use super::policy::{self, Policies, Policy, PutRefused, POLICY_PREFIX};
use super::truncate;
use crate::config::RetentionConfig;
use crate::log::chain;
use crate::log::format::{BatchVersions, VERSIONS_PREFIX_BYTES};
use crate::log::names::{batch_name, parse_batch_name, LOG_PREFIX};
use crate::log::store::{Blocking, ObjectStore, StoreError};
use crate::ops::metrics::Metrics;
use crate::pipeline::published::Published;
use crate::server::connection::Connection;
use crate::server::response::{write_json_string, write_u64, ApiError, ByteSink};
use crate::server::ReactorHandles;

/// Policy requests that may wait for the worker; more are answered 429.
pub const QUEUE_DEPTH: usize = 256;
/// Names listed per page when loading policies.
const LIST_PAGE_SIZE: usize = 1000;

/// A parsed `/v1/retention/` request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PolicyRequest {
    List,
    Get { policy_id: String },
    Put { policy_id: String, version: u64 },
    Delete { policy_id: String },
}

/// The one message type the worker takes.
pub enum RetentionMessage {
    Request {
        connection: Box<Connection>,
        request: PolicyRequest,
    },
    /// The log's store, handed over by stage 2 once the log is recovered.
    Start(Arc<dyn ObjectStore>),
    Shutdown,
}

pub struct RetentionWorker {
    pub inbox: Receiver<RetentionMessage>,
    pub reactors: Arc<ReactorHandles>,
    pub published: Arc<Published>,
    pub metrics: Arc<Metrics>,
    pub config: RetentionConfig,
}

/// The worker's state once the store is known.
struct Running {
    store: Arc<dyn ObjectStore>,
    /// `None` until loaded from the store.
    policies: Option<Policies>,
}

impl RetentionWorker {
    pub fn run(self) {
        let interval = Duration::from_millis(self.config.truncate_interval_ms);
        let mut running: Option<Running> = None;
        let mut next_round = Instant::now() + interval;
        loop {
            match self.inbox.recv_deadline(next_round) {
                Ok(RetentionMessage::Request { mut connection, request }) => {
                    match running.as_mut() {
                        Some(Running { store, policies: Some(policies) }) => {
                            self.answer(&mut connection, request, &**store, policies);
                        }
                        _ => connection.respond_error(&ApiError::Unavailable(
                            "not ready: the log and its retention policies are being recovered".into(),
                        )),
                    }
                    self.reactors.return_connection(connection);
                }
                Ok(RetentionMessage::Start(store)) => {
                    // Loaded at once: stage 2 sends this before it reports
                    // the log recovered, so requests sent after that find
                    // the policies (unless storage fails; then ticks retry).
                    let mut started = Running { store, policies: None };
                    self.tick(&mut started);
                    running = Some(started);
                    next_round = Instant::now() + interval;
                }
                Ok(RetentionMessage::Shutdown) | Err(RecvTimeoutError::Disconnected) => return,
                Err(RecvTimeoutError::Timeout) => {
                    if let Some(running) = running.as_mut() {
                        self.tick(running);
                    }
                    next_round = Instant::now() + interval;
                }
            }
        }
    }

    /// Loads the policies if they are not yet, else runs a truncation round.
    fn tick(&self, running: &mut Running) {
        let Some(policies) = &running.policies else {
            match self.load(&*running.store) {
                Ok(policies) => {
                    tracing::info!(policies = policies.len(), "retention policies loaded");
                    self.metrics.retention_policies.set(policies.len() as i64);
                    running.policies = Some(policies);
                }
                Err(error) => tracing::warn!(%error, "cannot load the retention policies; retrying"),
            }
            return;
        };
        self.update_lag_metrics(policies);
        if let Err(error) = self.truncate_round(&*running.store, policies.min_version()) {
            tracing::warn!(%error, "truncation round stopped; the next round retries");
        }
    }

    /// Reads every policy object. A damaged one stops the load (retried):
    /// skipping it could delete history it pins.
    fn load(&self, store: &dyn ObjectStore) -> Result<Policies, String> {
        let blocking = Blocking::new(store);
        let names = blocking.list_all(POLICY_PREFIX, None, LIST_PAGE_SIZE).map_err(|error| error.to_string())?;
        let mut policies = Policies::new(self.config.policies_max);
        for name in names {
            if policy::policy_id_of(&name).is_none() {
                tracing::warn!(%name, "ignoring an object under retention/ that is not a policy");
                continue;
            }
            let bytes = match blocking.get(&name, None) {
                Ok(bytes) => bytes,
                // Deleted between the listing and the read.
                Err(StoreError::NotFound { .. }) => continue,
                Err(error) => return Err(error.to_string()),
            };
            policies.insert(policy::decode(&name, &bytes).map_err(|error| error.to_string())?);
        }
        Ok(policies)
    }

    fn update_lag_metrics(&self, policies: &Policies) {
        let committed = self.published.committed_version();
        for policy in policies.iter() {
            self.metrics.set_policy_lag(&policy.policy_id, committed.saturating_sub(policy.version));
        }
    }

    /// One bounded round: lists the oldest batches and deletes those no
    /// policy pins, oldest first, publishing the oldest version before each.
    fn truncate_round(&self, store: &dyn ObjectStore, min_policy_version: Option<u64>) -> Result<(), StoreError> {
        let Some(min_policy_version) = min_policy_version else { return Ok(()) };
        if min_policy_version <= self.published.oldest_version().saturating_add(1) {
            // No batch can end before the smallest policy any more.
            return Ok(());
        }
        let blocking = Blocking::new(store);
        let limit = self.config.objects_deleted_per_round_max + 1 + chain::ORPHANS_PER_BATCH_MAX;
        let page = blocking.list(LOG_PREFIX, None, limit)?;
        let mut sizes = std::collections::HashMap::with_capacity(page.names.len());
        let mut start_versions = Vec::with_capacity(page.names.len());
        for (index, name) in page.names.iter().enumerate() {
            if let Some(start_version) = parse_batch_name(name) {
                start_versions.push(start_version);
                sizes.insert(start_version, page.sizes.get(index).copied().unwrap_or(0));
            }
        }
        let mut index = 0;
        let mut deleted = 0;
        while deleted < self.config.objects_deleted_per_round_max && index < start_versions.len() {
            let Some(versions) = self.versions(&blocking, start_versions[index])? else { return Ok(()) };
            let Some(deletion) = truncate::next_deletion(&start_versions[index..], versions, min_policy_version) else {
                return Ok(());
            };
            self.publish_oldest(deletion.oldest_version);
            // Orphans first: none is ever left without its container.
            let mut names: Vec<u64> = deletion.orphans.clone();
            names.push(deletion.start_version);
            for start_version in names {
                blocking.delete(vec![batch_name(start_version)])?;
                self.metrics.retention_objects_deleted.inc();
                self.metrics.history_objects.dec();
                let size_bytes = sizes.get(&start_version).copied().unwrap_or(0);
                self.metrics.history_bytes.dec_by(i64::try_from(size_bytes).unwrap_or(i64::MAX));
            }
            tracing::debug!(start_version = deletion.start_version, oldest = deletion.oldest_version, "deleted");
            deleted += 1 + deletion.orphans.len();
            index += 1 + deletion.orphans.len();
        }
        Ok(())
    }

    /// The versions in a batch's header; `None` (and a warning) when it
    /// cannot be read: deleting on doubt could remove history still needed.
    fn versions(&self, blocking: &Blocking<'_>, start_version: u64) -> Result<Option<BatchVersions>, StoreError> {
        let name = batch_name(start_version);
        let prefix = blocking.get(&name, Some(0..VERSIONS_PREFIX_BYTES))?;
        match BatchVersions::peek(&prefix) {
            Ok(versions) => Ok(Some(versions)),
            Err(error) => {
                tracing::warn!(%name, %error, "truncation stops: the batch header cannot be read");
                Ok(None)
            }
        }
    }

    fn publish_oldest(&self, oldest_version: u64) {
        if oldest_version > self.published.oldest_version() {
            self.published.set_oldest_version(oldest_version);
            self.metrics.retention_oldest_version.set(i64::try_from(oldest_version).unwrap_or(i64::MAX));
        }
    }

    fn answer(
        &self,
        connection: &mut Connection,
        request: PolicyRequest,
        store: &dyn ObjectStore,
        policies: &mut Policies,
    ) {
        let result = match request {
            PolicyRequest::List => {
                let oldest_version = self.published.oldest_version();
                connection.respond_json_with(200, None, |body, _| list_body(body, policies, oldest_version));
                return;
            }
            PolicyRequest::Get { policy_id } => policies.get(&policy_id).cloned().ok_or_else(|| not_found(&policy_id)),
            PolicyRequest::Put { policy_id, version } => self.put(store, policies, policy_id, version),
            PolicyRequest::Delete { policy_id } => match self.delete(store, policies, &policy_id) {
                Ok(()) => {
                    connection.respond(204, "application/json", b"", None);
                    return;
                }
                Err(error) => Err(error),
            },
        };
        match result {
            Ok(policy) => connection.respond_json_with(200, None, |body, _| policy_body(body, &policy)),
            Err(error) => connection.respond_error(&error),
        }
    }

    fn put(
        &self,
        store: &dyn ObjectStore,
        policies: &mut Policies,
        policy_id: String,
        version: u64,
    ) -> Result<Policy, ApiError> {
        self.check_leading()?;
        let committed = self.published.committed_version();
        let oldest = self.published.oldest_version();
        policies.check_put(&policy_id, version, committed, oldest).map_err(put_refused)?;
        let policy = Policy { policy_id, version, updated_at_ms: unix_ms() };
        Blocking::new(store)
            .put(&policy::object_name(&policy.policy_id), policy::encode(&policy))
            .map_err(|error| storage_unavailable("store the policy", &error))?;
        policies.insert(policy.clone());
        self.metrics.retention_policies.set(policies.len() as i64);
        self.metrics.set_policy_lag(&policy.policy_id, committed.saturating_sub(version));
        Ok(policy)
    }

    fn delete(&self, store: &dyn ObjectStore, policies: &mut Policies, policy_id: &str) -> Result<(), ApiError> {
        if policies.get(policy_id).is_none() {
            return Err(not_found(policy_id));
        }
        self.check_leading()?;
        Blocking::new(store)
            .delete(vec![policy::object_name(policy_id)])
            .map_err(|error| storage_unavailable("delete the policy", &error))?;
        policies.remove(policy_id);
        self.metrics.retention_policies.set(policies.len() as i64);
        self.metrics.remove_policy_lag(policy_id);
        Ok(())
    }

    fn check_leading(&self) -> Result<(), ApiError> {
        if self.published.is_leading() {
            Ok(())
        } else {
            Err(ApiError::Unavailable(
                "this server is no longer the leader; change policies on the current leader".into(),
            ))
        }
    }
}

/// The one place a refused `PUT` becomes an API error.
fn put_refused(refused: PutRefused) -> ApiError {
    match refused {
        PutRefused::InTheFuture { version, committed_version } => ApiError::BadRequest(format!(
            "version: {version} is newer than the newest committed version {committed_version}"
        )),
        PutRefused::AlreadyDeleted { version, oldest_version } => ApiError::RetentionTooOld {
            message: format!(
                "version: history up to version {oldest_version} is already deleted, so version {version} cannot \
                 be pinned; the smallest version accepted is {}",
                oldest_version + 1
            ),
            oldest_version,
        },
        PutRefused::TooManyPolicies { max } => ApiError::TooManyRequests(format!(
            "there are already {max} retention policies (retention.policies_max); delete one first"
        )),
    }
}

fn not_found(policy_id: &str) -> ApiError {
    ApiError::NotFound(format!("no retention policy {policy_id:?}"))
}

fn storage_unavailable(what: &str, error: &StoreError) -> ApiError {
    tracing::warn!(%error, "retention: cannot {what}");
    ApiError::Unavailable(format!("cannot {what}: storage error: {error}"))
}

fn policy_body(body: &mut impl ByteSink, policy: &Policy) {
    body.put(b"{\"policy_id\":");
    write_json_string(body, &policy.policy_id);
    body.put(b",\"version\":");
    write_u64(body, policy.version);
    body.put(b",\"updated_at\":\"");
    let mut timestamp = Vec::with_capacity(24);
    stoat_http::date::write_rfc3339_millis(&mut timestamp, policy.updated_at_ms);
    body.put(&timestamp);
    body.put(b"\"}");
}

fn list_body(body: &mut impl ByteSink, policies: &Policies, oldest_version: u64) {
    body.put(b"{\"policies\":[");
    for (index, policy) in policies.iter().enumerate() {
        if index > 0 {
            body.put(b",");
        }
        policy_body(body, policy);
    }
    body.put(b"],\"oldest_version\":");
    write_u64(body, oldest_version);
    body.put(b"}");
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}
