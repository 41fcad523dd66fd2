//! What the reactor does with a routed request: answer it on the spot when
//! it only reads published state, or hand it to its owner.

use super::connection::Connection;
use super::response::{write_json_string, write_u64, ApiError, ByteSink};
use super::routes::Route;
use super::ServerContext;
use crate::ops::metrics;
use crate::retention::policy::{parse_policy_id, parse_put_body};
use crate::retention::worker::PolicyRequest;
use crate::subscribe::event::Prefix;
use crate::subscribe::query;

/// What became of a request.
pub(super) enum Answer {
    /// A response has been written into the connection.
    Written,
    /// The request (and its connection) goes to the commit pipeline.
    ToPipeline,
    /// The connection becomes a subscribe stream.
    Stream(StreamStart),
    /// The request (and its connection) goes to the retention worker.
    ToRetention(PolicyRequest),
}

/// A validated subscribe request.
#[derive(Debug)]
pub(super) struct StreamStart {
    pub after: u64,
    pub durable: bool,
    pub prefix: Option<Prefix>,
}

/// Answers `route` or says where it goes. `queue_depth` is the pipeline
/// queue's current length, reported by `/metrics`.
pub(super) fn answer(
    route: Route,
    connection: &mut Connection,
    context: &ServerContext,
    queue_depth: usize,
    json: &mut crate::commit::parse::JsonScratch,
) -> Answer {
    match route {
        Route::Version => version(connection, context),
        Route::Healthz => connection.respond_json(200, br#"{"status":"ok"}"#),
        Route::Readyz => readyz(connection, context),
        Route::Metrics => {
            context.metrics.pipeline_queue_depth.set(queue_depth as i64);
            let text = context.metrics.encode();
            connection.respond(200, metrics::CONTENT_TYPE, text.as_bytes(), None);
        }
        Route::Commit => {
            let started = std::time::Instant::now();
            let parsed = connection.parse_commit(json, &context.settings.config.limits);
            context.stage_parse_seconds.observe(started.elapsed().as_secs_f64());
            match parsed {
                Ok(()) => return Answer::ToPipeline,
                Err(message) => connection.respond_error(&ApiError::BadRequest(message)),
            }
        }
        Route::Status => match connection.parse_status_query() {
            Ok(()) => return Answer::ToPipeline,
            Err(message) => connection.respond_error(&ApiError::BadRequest(message)),
        },
        Route::Subscribe => match subscribe(connection, context) {
            Ok(start) => return Answer::Stream(start),
            Err(error) => connection.respond_error(&error),
        },
        Route::RetentionList => return Answer::ToRetention(PolicyRequest::List),
        Route::RetentionPolicy => match policy_request(connection) {
            Ok(request) => return Answer::ToRetention(request),
            Err(message) => connection.respond_error(&ApiError::BadRequest(message)),
        },
        Route::Unknown => connection.respond_error(&ApiError::NotFound("no such path".into())),
    }
    Answer::Written
}

/// `GET /v1/version`: the durable version is at least every version
/// acknowledged before this request arrived, because a commit is
/// acknowledged only after the durable version has reached it.
fn version(connection: &mut Connection, context: &ServerContext) {
    let published = &context.published;
    connection.respond_json_with(200, None, |body, _| {
        body.put(b"{\"version\":");
        write_u64(body, published.durable_version());
        body.put(b",\"leader_id\":");
        write_json_string(body, &published.leader_id);
        body.put(b"}");
    });
}

fn readyz(connection: &mut Connection, context: &ServerContext) {
    if context.published.is_ready() {
        connection.respond_json(200, br#"{"status":"ready"}"#);
    } else {
        let error = ApiError::Unavailable("not ready: storage is not reachable yet".into());
        connection.respond_error(&error);
    }
}

/// `GET /v1/subscribe`: checks the parameters against the log; the stream
/// itself is run by the reactor.
fn subscribe(connection: &Connection, context: &ServerContext) -> Result<StreamStart, ApiError> {
    let head = connection.head();
    let query = query::parse(head.query(), head.header("last-event-id")).map_err(ApiError::BadRequest)?;
    let published = &context.published;
    if !published.is_ready() {
        return Err(ApiError::Unavailable("not ready: the log is being recovered or storage is unreachable".into()));
    }
    let committed = published.committed_version();
    let after = query.after.unwrap_or(committed);
    if after > committed {
        return Err(ApiError::BadRequest(format!(
            "after: version {after} is newer than the newest committed version {committed}"
        )));
    }
    let oldest_version = published.oldest_version();
    if after < oldest_version {
        return Err(ApiError::VersionTooOld {
            message: format!(
                "history after version {after} is no longer retained; the oldest version is {oldest_version}"
            ),
            oldest_version,
        });
    }
    Ok(StreamStart { after, durable: query.durable, prefix: query.prefix })
}

/// `/v1/retention/<policy_id>`: the id from the path and, for `PUT`, the
/// version from the body, parsed here so the worker gets a typed request.
fn policy_request(connection: &Connection) -> Result<PolicyRequest, String> {
    let head = connection.head();
    let segment = head.path().strip_prefix("/v1/retention/").unwrap_or_default();
    let policy_id = parse_policy_id(segment)?;
    Ok(match head.method {
        stoat_http::Method::Put => PolicyRequest::Put { policy_id, version: parse_put_body(connection.body())? },
        stoat_http::Method::Delete => PolicyRequest::Delete { policy_id },
        _ => PolicyRequest::Get { policy_id },
    })
}
