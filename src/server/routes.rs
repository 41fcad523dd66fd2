//! Routing: (method, path) to a route, with 404 and 405 decided here.
//!
//! Exact paths are looked up in a perfect-hash map built at compile time;
//! the only path with a parameter, `/v1/retention/<policy_id>`, is matched
//! by prefix.

use stoat_http::Method;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Route {
    Version,
    Commit,
    Status,
    Subscribe,
    RetentionList,
    RetentionPolicy,
    Metrics,
    Healthz,
    Readyz,
    /// No route matched; used for requests refused before routing too.
    Unknown,
}

impl Route {
    /// The label used in metrics: a bounded set, whatever clients send.
    pub fn name(self) -> &'static str {
        match self {
            Route::Version => "version",
            Route::Commit => "commit",
            Route::Status => "status",
            Route::Subscribe => "subscribe",
            Route::RetentionList => "retention_list",
            Route::RetentionPolicy => "retention_policy",
            Route::Metrics => "metrics",
            Route::Healthz => "healthz",
            Route::Readyz => "readyz",
            Route::Unknown => "unknown",
        }
    }

    /// How the route is named to people, e.g. in an error message.
    pub fn path_description(self) -> &'static str {
        match self {
            Route::Version => "GET /v1/version",
            Route::Commit => "POST /v1/commit",
            Route::Status => "GET /v1/status",
            Route::Subscribe => "GET /v1/subscribe",
            Route::RetentionList => "GET /v1/retention/",
            Route::RetentionPolicy => "/v1/retention/<policy_id>",
            Route::Metrics => "GET /metrics",
            Route::Healthz => "GET /healthz",
            Route::Readyz => "GET /readyz",
            Route::Unknown => "this path",
        }
    }
}

/// A known path: its route and the methods it takes.
struct Entry {
    route: Route,
    methods: &'static [Method],
    allow: &'static str,
}

const GET: &[Method] = &[Method::Get];

static ROUTES: phf::Map<&'static str, Entry> = phf::phf_map! {
    "/v1/version" => Entry { route: Route::Version, methods: GET, allow: "GET" },
    "/v1/commit" => Entry { route: Route::Commit, methods: &[Method::Post], allow: "POST" },
    "/v1/status" => Entry { route: Route::Status, methods: GET, allow: "GET" },
    "/v1/subscribe" => Entry { route: Route::Subscribe, methods: GET, allow: "GET" },
    "/v1/retention/" => Entry { route: Route::RetentionList, methods: GET, allow: "GET" },
    "/metrics" => Entry { route: Route::Metrics, methods: GET, allow: "GET" },
    "/healthz" => Entry { route: Route::Healthz, methods: GET, allow: "GET" },
    "/readyz" => Entry { route: Route::Readyz, methods: GET, allow: "GET" },
};

static RETENTION_POLICY: Entry = Entry {
    route: Route::RetentionPolicy,
    methods: &[Method::Get, Method::Put, Method::Delete],
    allow: "GET, PUT, DELETE",
};

/// The outcome of routing a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resolved {
    Found(Route),
    NotFound,
    MethodNotAllowed { route: Route, allow: &'static str },
}

pub fn resolve(method: Method, path: &str) -> Resolved {
    let entry = match ROUTES.get(path) {
        Some(entry) => entry,
        None if path.len() > "/v1/retention/".len() && path.starts_with("/v1/retention/") => &RETENTION_POLICY,
        None => return Resolved::NotFound,
    };
    if entry.methods.contains(&method) {
        Resolved::Found(entry.route)
    } else {
        Resolved::MethodNotAllowed { route: entry.route, allow: entry.allow }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_paths_resolve_and_wrong_methods_list_what_is_allowed() {
        assert_eq!(resolve(Method::Get, "/v1/version"), Resolved::Found(Route::Version));
        assert_eq!(resolve(Method::Post, "/v1/commit"), Resolved::Found(Route::Commit));
        assert_eq!(
            resolve(Method::Get, "/v1/commit"),
            Resolved::MethodNotAllowed { route: Route::Commit, allow: "POST" }
        );
        assert_eq!(resolve(Method::Put, "/v1/retention/backup"), Resolved::Found(Route::RetentionPolicy));
        assert_eq!(resolve(Method::Get, "/v1/retention/"), Resolved::Found(Route::RetentionList));
        assert_eq!(
            resolve(Method::Post, "/v1/retention/backup"),
            Resolved::MethodNotAllowed { route: Route::RetentionPolicy, allow: "GET, PUT, DELETE" }
        );
        assert_eq!(resolve(Method::Get, "/v1/versions"), Resolved::NotFound);
        assert_eq!(resolve(Method::Get, "/"), Resolved::NotFound);
    }
}
