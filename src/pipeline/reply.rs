//! Stage 3: writes each response into its connection and returns the
//! connections to their home reactors, each group of replies in one mail per
//! reactor.

use std::sync::Arc;

use crossbeam_channel::Receiver;

use super::{Replies, Reply, ReplyMessage};
use crate::server::connection::Connection;
use crate::server::response::{write_json_string, write_u64, ByteSink};
use crate::server::ReactorHandles;

pub(super) struct ReplyStage {
    pub inbox: Receiver<Replies>,
    pub reactors: Arc<ReactorHandles>,
    /// [`leader_id_field`] of this server's leader id.
    pub leader_id_field: Vec<u8>,
    pub metrics: Arc<crate::ops::metrics::Metrics>,
    pub published: Arc<super::published::Published>,
}

impl ReplyStage {
    pub fn run(self) {
        let reply_seconds = self.metrics.stage_seconds("reply");
        let mut answered = Vec::new();
        // Ends when every sender (stages 1 and 2) is gone.
        while let Ok(replies) = self.inbox.recv() {
            // Each answer is timed from the end of the one before.
            let mut started = std::time::Instant::now();
            for ReplyMessage { mut connection, reply } in replies {
                self.answer(&mut connection, &reply);
                answered.push(connection);
                let now = std::time::Instant::now();
                reply_seconds.observe(now.saturating_duration_since(started).as_secs_f64());
                started = now;
            }
            self.published.requests_left_pipeline(answered.len());
            self.reactors.return_connections(&mut answered);
        }
    }

    fn answer(&self, connection: &mut Connection, reply: &Reply) {
        match reply {
            Reply::Error(error) => connection.respond_error(error),
            _ => {
                let status = if matches!(reply, Reply::NotCommitted { .. }) { 409 } else { 200 };
                let leader_id_field = &self.leader_id_field;
                connection.respond_json_with(status, None, |body, connection| match reply {
                    Reply::Committed { version, duplicate } => {
                        committed_body(body, *version, *duplicate, connection.commit().request_id(), leader_id_field);
                    }
                    Reply::NotCommitted { reason, conflicts, version } => {
                        let request_id = connection.commit().request_id();
                        not_committed_body(body, reason, conflicts, *version, request_id, leader_id_field);
                    }
                    Reply::Status { committed, version } => {
                        status_body(body, &connection.status_query().request_id, *committed, *version);
                    }
                    Reply::Error(_) => {}
                });
            }
        }
    }
}

/// `,"leader_id":"…"`, the same in every commit answer of this server:
/// written (and escaped) once.
pub(super) fn leader_id_field(leader_id: &str) -> Vec<u8> {
    let mut field = b",\"leader_id\":".to_vec();
    write_json_string(&mut field, leader_id);
    field
}

fn committed_body(body: &mut impl ByteSink, version: u64, duplicate: bool, request_id: &str, leader_id_field: &[u8]) {
    body.put(b"{\"status\":\"committed\",\"version\":");
    write_u64(body, version);
    write_ids(body, request_id, leader_id_field);
    if duplicate {
        body.put(b",\"duplicate\":true");
    }
    body.put(b"}");
}

fn not_committed_body(
    body: &mut impl ByteSink,
    reason: &str,
    conflicts: &[usize],
    version: u64,
    request_id: &str,
    leader_id_field: &[u8],
) {
    body.put(b"{\"status\":\"not_committed\",\"reason\":\"");
    body.put(reason.as_bytes());
    body.put(b"\",\"conflicts\":[");
    for (position, index) in conflicts.iter().enumerate() {
        if position > 0 {
            body.put(b",");
        }
        write_u64(body, *index as u64);
    }
    body.put(b"],\"version\":");
    write_u64(body, version);
    write_ids(body, request_id, leader_id_field);
    body.put(b"}");
}

/// `,"request_id":…,"leader_id":…`, which every commit answer carries
/// (`leader_id_field`: from [`leader_id_field`]).
fn write_ids(body: &mut impl ByteSink, request_id: &str, leader_id_field: &[u8]) {
    body.put(b",\"request_id\":");
    write_json_string(body, request_id);
    body.put(leader_id_field);
}

fn status_body(body: &mut impl ByteSink, request_id: &str, committed: bool, version: u64) {
    body.put(b"{\"request_id\":");
    write_json_string(body, request_id);
    body.put(if committed {
        &b",\"status\":\"committed\",\"version\":"[..]
    } else {
        b",\"status\":\"not_committed\",\"version\":"
    });
    write_u64(body, version);
    body.put(b"}");
}
