//! HTTP/1.1 message handling shared by the Stoat server, its S3 client and
//! fake_s3: a pure request parser (bytes in, progress out; no IO) and helpers
//! that write responses into a caller's buffer. With the feature `server`,
//! also a small general server built on them ([`server`]), used by fake_s3.
//!
//! Invariants (of the parser and response writer):
//! - Nothing here performs IO or panics on any input; every malformed input
//!   becomes an [`HttpError`] that maps to one status code.
//! - Memory is bounded by the [`Limits`] given: the head never grows past
//!   `head_bytes_max`, a body never past `body_bytes_max`, and a body that
//!   declares itself too large is refused before any of it is read.

pub mod date;
mod parser;
mod response;
#[cfg(feature = "server")]
pub mod server;

pub use parser::{BodyKind, HttpError, Limits, Method, Progress, RequestHead, RequestParser};
pub use response::{reason_phrase, write_continue, write_response_head, ResponseHead};
