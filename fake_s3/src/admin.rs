//! The admin endpoint, for tests that change faults while the server runs.
//! Not part of S3 (bucket names cannot start with `_`), never signed,
//! never subject to faults:
//!
//! - `GET /_fake_s3/faults`: the fault configuration as JSON.
//! - `PUT /_fake_s3/faults`: replace it (body: JSON, see `FaultConfig`);
//!   counters restart, so draws repeat from the seed.
//! - `DELETE /_fake_s3/faults`: no faults.
//! - `GET /_fake_s3/stats`: requests per operation and faults injected.
//! - `GET /_fake_s3/health`: 200 `ok`.

use stoat_http::server::{Body, Request, Response};
use stoat_http::Method;

use crate::faults::FaultConfig;
use crate::service::Service;

pub const PREFIX: &str = "/_fake_s3/";

fn json(status: u16, body: Vec<u8>) -> Response {
    Response::new(status).header("Content-Type", "application/json").body(Body::Bytes(body))
}

fn json_error(status: u16, message: &str) -> Response {
    json(status, serde_json::json!({ "error": message }).to_string().into_bytes())
}

pub fn handle(service: &Service, request: Request<'_>) -> Response {
    let path = request.head.path();
    match (request.head.method, &path[PREFIX.len()..]) {
        (Method::Get, "health") => {
            Response::new(200).header("Content-Type", "text/plain").body(Body::Bytes(b"ok".to_vec()))
        }
        (Method::Get, "faults") => json(200, serde_json::to_vec(&service.faults.config()).unwrap_or_default()),
        (Method::Put | Method::Post, "faults") => match FaultConfig::from_json(request.body) {
            Ok(config) => {
                let body = serde_json::to_vec(&config).unwrap_or_default();
                service.faults.set(config);
                json(200, body)
            }
            Err(error) => json_error(400, &error),
        },
        (Method::Delete, "faults") => {
            service.faults.set(FaultConfig::default());
            Response::new(204)
        }
        (Method::Get, "stats") => json(200, serde_json::to_vec(&service.faults.stats()).unwrap_or_default()),
        (_, "health" | "faults" | "stats") => json_error(405, "method not allowed"),
        _ => json_error(404, "unknown admin path; see /_fake_s3/faults, /_fake_s3/stats, /_fake_s3/health"),
    }
}
