//! What a conformance case is made of: the manifest it applies, the requests a client
//! Pod makes and what each answer must say, and what Trellis is known not to do yet.

/// The conformance profile a case belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    MeshHttp,
    MeshGrpc,
}

impl Profile {
    pub fn name(self) -> &'static str {
        match self {
            Profile::MeshHttp => "MESH-HTTP",
            Profile::MeshGrpc => "MESH-GRPC",
        }
    }
}

/// The mesh conformance namespaces and their clients: the `echo-v1` Pod of each.
pub const MESH: &str = "gateway-conformance-mesh";
pub const CONSUMER: &str = "gateway-conformance-mesh-consumer";

/// Where a request goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A Service by the name the client uses (`echo`, `echo-v1:8080`,
    /// `echo-v1.gateway-conformance-mesh`), reached at its ClusterIP; the name is the
    /// request's `Host`.
    Service(&'static str),
    /// The first Pod of the `echo` app at this version (`v2`), on a port: by its IP,
    /// outside any Service.
    Pod(&'static str, u16),
}

/// Parts of a redirect's `Location`; the ones given must match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Location {
    pub scheme: Option<&'static str>,
    pub host: Option<&'static str>,
    pub port: Option<u16>,
    pub path: Option<&'static str>,
}

/// A request and the answer it must get.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub target: Target,
    pub path: &'static str,
    pub headers: Vec<(&'static str, &'static str)>,
    pub grpc: bool,
    pub status: u16,
    /// The prefix of the answering Pod's name (`echo-v1`), or "" for any.
    pub backend: &'static str,
    /// The path (and query) the backend must receive.
    pub received_path: Option<&'static str>,
    pub received_headers: Vec<(&'static str, &'static str)>,
    pub absent_received_headers: Vec<&'static str>,
    pub response_headers: Vec<(&'static str, &'static str)>,
    pub absent_response_headers: Vec<&'static str>,
    pub location: Option<Location>,
    /// How many times the request is made in one go: every answer must be right.
    pub repeat: usize,
}

/// `GET path` to a Service by name, expecting 200 from any backend.
pub fn get(service: &'static str, path: &'static str) -> Request {
    Request {
        target: Target::Service(service),
        path,
        headers: Vec::new(),
        grpc: false,
        status: 200,
        backend: "",
        received_path: None,
        received_headers: Vec::new(),
        absent_received_headers: Vec::new(),
        response_headers: Vec::new(),
        absent_response_headers: Vec::new(),
        location: None,
        repeat: 1,
    }
}

/// `GET /` to a Pod of the echo app by its IP, 20 times: that Pod must answer each,
/// where a call balanced over a Service's Pods would reach others.
pub fn get_pod(version: &'static str, port: u16) -> Request {
    Request {
        target: Target::Pod(version, port),
        repeat: 20,
        ..get("", "/")
    }
}

/// A unary gRPC call to a Service by name.
pub fn grpc(service: &'static str) -> Request {
    Request {
        grpc: true,
        ..get(service, "")
    }
}

impl Request {
    pub fn header(mut self, name: &'static str, value: &'static str) -> Self {
        self.headers.push((name, value));
        self
    }

    pub fn backend(mut self, prefix: &'static str) -> Self {
        self.backend = prefix;
        self
    }

    pub fn status(mut self, status: u16) -> Self {
        self.status = status;
        self
    }

    pub fn received_path(mut self, path: &'static str) -> Self {
        self.received_path = Some(path);
        self
    }

    pub fn received(mut self, name: &'static str, value: &'static str) -> Self {
        self.received_headers.push((name, value));
        self
    }

    pub fn not_received(mut self, name: &'static str) -> Self {
        self.absent_received_headers.push(name);
        self
    }

    pub fn response_header(mut self, name: &'static str, value: &'static str) -> Self {
        self.response_headers.push((name, value));
        self
    }

    pub fn no_response_header(mut self, name: &'static str) -> Self {
        self.absent_response_headers.push(name);
        self
    }

    /// A redirect with `status`, its `Location` as `location` says.
    pub fn redirect(mut self, status: u16, location: Location) -> Self {
        self.status = status;
        self.location = Some(location);
        self
    }

    /// The request for messages: `GET echo/path [Host: x]`.
    pub fn describe(&self) -> String {
        let target = match &self.target {
            Target::Service(name) => name.to_string(),
            Target::Pod(version, port) => format!("pod of echo-{version}:{port}"),
        };
        let kind = if self.grpc { "gRPC" } else { "GET" };
        let headers: Vec<String> = self
            .headers
            .iter()
            .map(|(n, v)| format!(" [{n}: {v}]"))
            .collect();
        format!("{kind} {target}{}{}", self.path, headers.concat())
    }
}

/// Traffic shares each backend must get, within `tolerance`, over `requests` calls.
#[derive(Debug, Clone, PartialEq)]
pub struct Weights {
    pub request: Request,
    pub shares: Vec<(&'static str, f64)>,
    pub requests: usize,
    pub tolerance: f64,
}

/// One conformance test of the Gateway API's mesh suite, as Trellis runs it.
#[derive(Debug, Clone)]
pub struct Case {
    /// The conformance test's short name.
    pub name: &'static str,
    pub profile: Profile,
    /// Its manifest under `conformance/tests/mesh/`, if any.
    pub manifest: Option<&'static str>,
    /// Each `(client namespace, request)`: most cases call from [`MESH`] only.
    pub requests: Vec<(&'static str, Request)>,
    pub weights: Option<Weights>,
    /// Why Trellis does not pass the case yet, and a piece of the failure it gives:
    /// the run checks that the case still fails with it, so a fix is noticed.
    pub known_gap: Option<Gap>,
}

/// A case Trellis fails: why, and a piece of the failure message that shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gap {
    pub why: &'static str,
    pub shows: &'static str,
}

impl Case {
    pub fn new(name: &'static str, profile: Profile, manifest: Option<&'static str>) -> Self {
        Self {
            name,
            profile,
            manifest,
            requests: Vec::new(),
            weights: None,
            known_gap: None,
        }
    }

    /// Requests made from the [`MESH`] namespace's client.
    pub fn requests(mut self, requests: impl IntoIterator<Item = Request>) -> Self {
        self.requests
            .extend(requests.into_iter().map(|r| (MESH, r)));
        self
    }

    /// Requests made from another namespace's client.
    pub fn requests_from(
        mut self,
        namespace: &'static str,
        requests: impl IntoIterator<Item = Request>,
    ) -> Self {
        self.requests
            .extend(requests.into_iter().map(|r| (namespace, r)));
        self
    }

    pub fn weights(mut self, weights: Weights) -> Self {
        self.weights = Some(weights);
        self
    }

    pub fn known_gap(mut self, why: &'static str, shows: &'static str) -> Self {
        self.known_gap = Some(Gap { why, shows });
        self
    }
}
