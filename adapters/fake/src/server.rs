//! The service trait, the shared state, the per-request chassis and the handle.

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use serde_json::Value;
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

use crate::chassis::{Chassis, Reply};
use crate::control::{Control, SEED};
use crate::{Fault, FaultRule, LogEntry, Rng};

pub trait Service: Clone + Send + 'static {
    /// The endpoint name of a request: the key of the counters and of fault rules.
    fn endpoint(&self, method: &str, path: &str) -> String;
    /// Serve one request. Sub-requests of a batch count (and draw faults) through `chassis`.
    fn serve(&mut self, req: &Request, chassis: &mut Chassis) -> Reply;
    /// The service's answer to a status fault ([`Fault::is_status`]) on `endpoint`.
    fn fault_reply(&self, fault: &Fault, endpoint: &str) -> Reply;
    /// Expire every access token issued so far.
    fn expire_tokens(&mut self);
    /// Expire every delta / sync token (cursor) handed out so far.
    fn expire_cursors(&mut self);
    /// Called once the server listens on `uri` (e.g. for URLs the service hands out).
    fn started(&mut self, _uri: &str) {}
    /// After a restore from a snapshot: carry over from the state `before` it what outlives
    /// a restore — the access tokens issued, so signed-in clients stay signed in.
    fn keep_sessions(&mut self, _before: Self) {}
    /// The fake's own control routes under `/_crmsync/` (`path` is what follows the prefix,
    /// e.g. `users`), such as creating a mailbox or loading a scenario. `None`: not one of them.
    fn control(&mut self, _method: &str, _path: &str, _body: &[u8]) -> Option<Reply> {
        None
    }
}

/// A fake's state behind a lock, shared by its handle and its server. Cheap to clone.
pub struct Shared<S>(Arc<Mutex<S>>);

impl<S> Shared<S> {
    /// Share `state`.
    pub fn new(state: S) -> Self {
        Self(Arc::new(Mutex::new(state)))
    }

    /// Lock the state. A panic while it was held (a bug in the fake) does not wedge it.
    pub fn lock(&self) -> MutexGuard<'_, S> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl<S> Clone for Shared<S> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<S> std::fmt::Debug for Shared<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Shared(..)")
    }
}

/// Serve one request of `S`: count it, draw its fault, serve or fault it, log it.
fn handle<S: Service>(chassis: &Mutex<Chassis>, state: &Shared<S>, req: &Request) -> ResponseTemplate {
    let started = Instant::now();
    let mut ch = chassis.lock().unwrap_or_else(|e| e.into_inner());
    let mut st = state.lock();
    let (method, path) = (req.method.as_str(), req.url.path());
    let endpoint = st.endpoint(method, path);
    let (seq, fault) = ch.request(method, &endpoint);
    let (mut cut, mut delay_ms) = (false, 0);
    let reply = match &fault {
        None => st.serve(req, &mut ch),
        Some(f @ Fault::ExpiredToken) => {
            st.expire_tokens();
            st.fault_reply(f, &endpoint)
        }
        Some(f) if f.is_status() => st.fault_reply(f, &endpoint),
        Some(Fault::Drop) => {
            cut = true;
            Reply::empty(200)
        }
        Some(Fault::LostReply) => {
            cut = true;
            st.serve(req, &mut ch)
        }
        Some(Fault::Truncated) => Reply::raw(200, b"{\"items\": [{\"id\": \"abc".to_vec(), "application/json"),
        Some(Fault::Latency { ms }) => {
            delay_ms = *ms;
            st.serve(req, &mut ch)
        }
        Some(Fault::ExpiredCursor) => {
            st.expire_cursors();
            st.serve(req, &mut ch)
        }
        Some(_) => st.serve(req, &mut ch),
    };
    drop(st);
    let latency_ms = started.elapsed().as_millis() as u64 + delay_ms;
    ch.log.push(LogEntry {
        seq,
        method: method.to_owned(),
        path: path.to_owned(),
        endpoint,
        status: reply.status,
        latency_ms,
        fault,
    });
    reply.template(cut, delay_ms)
}

/// A fake's state and its snapshots (the seed among them).
struct Fake<S> {
    state: Shared<S>,
    saved: Shared<BTreeMap<String, S>>,
}

impl<S> Clone for Fake<S> {
    fn clone(&self) -> Self {
        Self { state: self.state.clone(), saved: self.saved.clone() }
    }
}

struct Responder<S> {
    chassis: Arc<Mutex<Chassis>>,
    fake: Fake<S>,
}

impl<S: Service> Respond for Responder<S> {
    fn respond(&self, req: &Request) -> ResponseTemplate {
        match crate::control::route(&self.chassis, &self.fake, req) {
            Some(reply) => reply.template(false, 0),
            None => handle(&self.chassis, &self.fake.state, req),
        }
    }
}

impl<S: Service> Control for Fake<S> {
    fn started(&self, uri: &str) {
        self.state.lock().started(uri);
    }
    fn expire_tokens(&self) {
        self.state.lock().expire_tokens();
    }
    fn expire_cursors(&self) {
        self.state.lock().expire_cursors();
    }
    fn save(&self, name: &str) {
        let copy = self.state.lock().clone();
        self.saved.lock().insert(name.to_owned(), copy);
    }
    fn restore(&self, name: &str) -> bool {
        let saved = self.saved.lock();
        let Some(snapshot) = saved.get(name) else { return false };
        let mut st = self.state.lock();
        let before = std::mem::replace(&mut *st, snapshot.clone());
        st.keep_sessions(before);
        true
    }
    fn saved(&self) -> Vec<String> {
        self.saved.lock().keys().cloned().collect()
    }
    fn service_control(&self, method: &str, path: &str, body: &[u8]) -> Option<Reply> {
        self.state.lock().control(method, path, body)
    }
}

/// A running fake: its address, counters, fault rules, request log and snapshots. Cheap to
/// clone; the server stops when the last clone is dropped. Each fake (`FakeSalesforce`,
/// `FakeGraph`, `FakeGoogle`) dereferences to its handle. The same operations are served over
/// HTTP under `/_crmsync/` (the control API).
#[derive(Clone)]
pub struct Handle {
    server: Arc<MockServer>,
    /// The root clients use when it is not the server's own (a TLS proxy in front of it).
    public: Arc<std::sync::OnceLock<String>>,
    chassis: Arc<Mutex<Chassis>>,
    control: Arc<dyn Control>,
}

impl std::fmt::Debug for Handle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handle").field("uri", &self.uri()).finish_non_exhaustive()
    }
}

impl Handle {
    /// Serve `state` on a random loopback port, or on `listener` (a fixed port, for
    /// `crmsync sandbox`). The state it starts with is the seed until [`save_seed`](Self::save_seed).
    pub async fn start<S: Service>(state: Shared<S>, listener: Option<TcpListener>) -> Self {
        let builder = MockServer::builder().disable_request_recording();
        let server = match listener {
            Some(l) => builder.listener(l).start().await,
            None => builder.start().await,
        };
        let chassis = Arc::new(Mutex::new(Chassis::default()));
        let fake = Fake { state: state.clone(), saved: Shared::new(BTreeMap::new()) };
        let responder = Responder { chassis: chassis.clone(), fake: fake.clone() };
        Mock::given(wiremock::matchers::any()).respond_with(responder).mount(&server).await;
        state.lock().started(&server.uri());
        fake.save(SEED);
        Self { server: Arc::new(server), public: Arc::default(), chassis, control: Arc::new(fake) }
    }

    fn lock(&self) -> MutexGuard<'_, Chassis> {
        self.chassis.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The server root, e.g. `http://127.0.0.1:41234` (or the root given to
    /// [`serve_as`](Self::serve_as)).
    pub fn uri(&self) -> String {
        self.public.get().cloned().unwrap_or_else(|| self.server.uri())
    }

    /// The address the fake's own server listens on (plain HTTP).
    pub fn address(&self) -> std::net::SocketAddr {
        *self.server.address()
    }

    /// Tell the fake clients reach it at `uri` (e.g. `https://…` through a TLS proxy in front
    /// of [`address`](Self::address)): `uri()` and the URLs the fake hands out use it. Once.
    pub fn serve_as(&self, uri: &str) {
        if self.public.set(uri.to_owned()).is_ok() {
            self.control.started(uri);
        }
    }

    // ---- counters and log ----

    /// Requests served (token requests and faulted ones included; a batch counts once).
    pub fn requests(&self) -> u64 {
        self.lock().total
    }

    /// Requests served by one endpoint (each fake's docs list its endpoint names).
    pub fn count(&self, endpoint: &str) -> u64 {
        self.lock().counters.get(endpoint).copied().unwrap_or(0)
    }

    /// Every endpoint counter.
    pub fn counts(&self) -> BTreeMap<String, u64> {
        self.lock().counters.clone()
    }

    /// Zero the request total and every endpoint counter (pending faults stay).
    pub fn reset_counts(&self) {
        let mut ch = self.lock();
        ch.total = 0;
        ch.counters.clear();
    }

    /// The newest requests served, oldest first (at most the log's cap, 1,000 by default).
    pub fn request_log(&self) -> Vec<LogEntry> {
        self.lock().log.entries()
    }

    /// Keep at most `cap` requests in the log (0: log nothing).
    pub fn set_log_cap(&self, cap: usize) {
        self.lock().log.set_cap(cap);
    }

    // ---- faults ----

    /// Add a fault rule.
    pub fn inject(&self, rule: FaultRule) {
        self.lock().rules.add(rule);
    }

    /// `fault` on the `n`-th request from now (1 = the next one).
    pub fn fail_next(&self, n: u64, fault: Fault) {
        self.inject(FaultRule::new(fault).nth(n));
    }

    /// `fault` on each request with probability `rate`, drawn from the generator reseeded with
    /// `seed`.
    pub fn fail_rate(&self, rate: f64, seed: u64, fault: Fault) {
        self.seed(seed);
        self.inject(FaultRule::new(fault).rate(rate));
    }

    /// Reseed the fake's generator.
    pub fn seed(&self, seed: u64) {
        self.lock().rng = Rng::new(seed);
    }

    /// The pending fault rules.
    pub fn faults(&self) -> Vec<FaultRule> {
        self.lock().rules.list()
    }

    /// Remove every pending fault rule.
    pub fn clear_faults(&self) {
        self.lock().rules.clear();
    }

    /// Faults injected so far (sub-requests of batches included).
    pub fn faults_fired(&self) -> u64 {
        self.lock().fired
    }

    // ---- state ----

    /// Expire every access token issued so far: the next API request gets the service's 401.
    pub fn expire_tokens(&self) {
        self.control.expire_tokens();
    }

    /// Expire every delta / sync token (cursor) handed out so far.
    pub fn expire_cursors(&self) {
        self.control.expire_cursors();
    }

    // ---- snapshots ----

    /// Make the current state the seed that [`reset`](Self::reset) returns to.
    pub fn save_seed(&self) {
        self.control.save(SEED);
    }

    /// Save the current state as snapshot `name`.
    pub fn save_snapshot(&self, name: &str) {
        self.control.save(name);
    }

    /// Return to snapshot `name` (issued tokens stay valid). False if there is no such snapshot.
    pub fn restore_snapshot(&self, name: &str) -> bool {
        self.control.restore(name)
    }

    /// The snapshot names (the seed is `seed`).
    pub fn snapshot_names(&self) -> Vec<String> {
        self.control.saved()
    }

    /// Load a JSON scenario (the body of the fake's `POST /_crmsync/seed`) and make the result
    /// the seed. Returns what was created, or the error message.
    pub fn load_scenario(&self, scenario: &[u8]) -> Result<Value, String> {
        let reply = crate::control::load_scenario(&*self.control, scenario);
        let body = reply.json_body();
        if reply.status < 300 {
            return Ok(body);
        }
        Err(body["message"].as_str().unwrap_or("the scenario was refused").to_owned())
    }

    /// Add the fault rules of a control-API body (a rule, a list, or `{"seed", "rules"}`).
    pub fn inject_json(&self, rules: &[u8]) -> Result<usize, String> {
        let (rules, seed) = crate::control::fault_rules(rules)?;
        let n = rules.len();
        if let Some(seed) = seed {
            self.seed(seed);
        }
        rules.into_iter().for_each(|r| self.inject(r));
        Ok(n)
    }

    /// Back to the seed: its state, no pending faults, counters zeroed, the request log empty.
    pub fn reset(&self) {
        let mut ch = self.lock();
        self.control.restore(SEED);
        ch.reset();
    }
}

/// Declare a fake's handle type: a struct of the chassis [`Handle`] and the fake's [`Shared`]
/// state that dereferences to the handle, with `start()` (a random loopback port),
/// `start_on(listener)` (a given one) and a private `lock()` of the state.
///
/// `fake_handle!(/// docs  FakeThing, State, State::new());`
#[macro_export]
macro_rules! fake_handle {
    ($(#[$meta:meta])* $name:ident, $state:ty, $init:expr) => {
        $(#[$meta])*
        #[derive(Clone, Debug)]
        pub struct $name {
            handle: $crate::Handle,
            state: $crate::Shared<$state>,
        }

        impl ::std::ops::Deref for $name {
            type Target = $crate::Handle;
            fn deref(&self) -> &$crate::Handle {
                &self.handle
            }
        }

        impl $name {
            /// Start on a random loopback port.
            pub async fn start() -> Self {
                Self::serve(None).await
            }

            /// Start on a given listener (a fixed port, e.g. for `crmsync sandbox`).
            pub async fn start_on(listener: ::std::net::TcpListener) -> Self {
                Self::serve(Some(listener)).await
            }

            async fn serve(listener: Option<::std::net::TcpListener>) -> Self {
                let state = $crate::Shared::new($init);
                Self { handle: $crate::Handle::start(state.clone(), listener).await, state }
            }

            #[allow(dead_code)]
            fn lock(&self) -> ::std::sync::MutexGuard<'_, $state> {
                self.state.lock()
            }
        }
    };
}
