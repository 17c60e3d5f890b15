//! A scripted TikTok port over the real adapter (real HTTP to the sandbox): the n-th call of an operation
//! can lose its answer after TikTok applied it, hang (a Lambda killed mid-call), fail with a given error,
//! answer "not listed", or run a hook first (an API edit, another upload arriving mid-run).

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;

use audience_core::digests::Digest;
use audience_core::identifiers::KeyKind;
use audience_core::sync::api::{
    Ack, ApiError, ApiErrorKind, AudienceApi, AudienceView, CallCounters, FileAction, MappingAction,
};
use audience_tiktok::AudienceAdapter;
use secrecy::SecretString;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    Upload,
    CreateFile,
    UpdateFile,
    CreateStream,
    Mapping,
    Find,
    Status,
}

pub type Hook = Box<dyn FnOnce() -> Pin<Box<dyn Future<Output = ()> + Send>> + Send>;

pub enum Act {
    /// TikTok applies the call; the answer never arrives (the client's retries ran out).
    LoseAnswer,
    /// TikTok applies the call, then the process dies before it hears the answer.
    ApplyThenHang,
    /// The call fails with this error without reaching TikTok.
    Fail(ApiError),
    /// `get/` answers without the audience.
    NotListed,
    /// Runs the hook, then the call.
    Before(Hook),
}

pub struct Faulty {
    inner: AudienceAdapter,
    script: Mutex<Vec<(Op, usize, Option<Act>)>>,
    seen: Mutex<HashMap<Op, usize>>,
}

impl Faulty {
    pub fn new(inner: AudienceAdapter) -> Faulty {
        Faulty {
            inner,
            script: Mutex::new(Vec::new()),
            seen: Mutex::new(HashMap::new()),
        }
    }

    /// The `nth` call (0-based) of `op` does `act`.
    pub fn on(self, op: Op, nth: usize, act: Act) -> Faulty {
        self.script.lock().expect("lock").push((op, nth, Some(act)));
        self
    }

    pub fn calls(&self, op: Op) -> usize {
        self.seen
            .lock()
            .expect("lock")
            .get(&op)
            .copied()
            .unwrap_or(0)
    }

    fn take(&self, op: Op) -> Option<Act> {
        let n = {
            let mut seen = self.seen.lock().expect("lock");
            let c = seen.entry(op).or_insert(0);
            *c += 1;
            *c - 1
        };
        let mut script = self.script.lock().expect("lock");
        script
            .iter_mut()
            .find(|(o, k, a)| *o == op && *k == n && a.is_some())
            .and_then(|(_, _, a)| a.take())
    }

    async fn run<T, F>(&self, op: Op, call: F) -> Result<Ack<T>, ApiError>
    where
        F: Future<Output = Result<Ack<T>, ApiError>>,
    {
        match self.take(op) {
            None => call.await,
            Some(Act::LoseAnswer) => {
                let _ = call.await;
                Err(err(
                    ApiErrorKind::OutcomeUnknown,
                    None,
                    "the answer was lost",
                ))
            }
            Some(Act::ApplyThenHang) => {
                let _ = call.await;
                std::future::pending().await
            }
            Some(Act::Fail(e)) => Err(e),
            Some(Act::NotListed) => call.await,
            Some(Act::Before(hook)) => {
                hook().await;
                call.await
            }
        }
    }
}

pub fn err(kind: ApiErrorKind, code: Option<i64>, message: &str) -> ApiError {
    ApiError {
        kind,
        endpoint: "scripted".into(),
        code,
        message: message.into(),
        request_id: None,
    }
}

#[async_trait::async_trait]
impl AudienceApi for Faulty {
    async fn upload_digest_file(
        &self,
        t: &SecretString,
        a: &str,
        k: KeyKind,
        f: &std::path::Path,
    ) -> Result<Ack<String>, ApiError> {
        self.run(Op::Upload, self.inner.upload_digest_file(t, a, k, f))
            .await
    }
    async fn create_file_audience(
        &self,
        t: &SecretString,
        a: &str,
        n: &str,
        k: KeyKind,
        p: &[String],
    ) -> Result<Ack<String>, ApiError> {
        self.run(
            Op::CreateFile,
            self.inner.create_file_audience(t, a, n, k, p),
        )
        .await
    }
    async fn update_file_audience(
        &self,
        t: &SecretString,
        a: &str,
        id: &str,
        act: FileAction,
        p: &[String],
    ) -> Result<Ack<()>, ApiError> {
        self.run(
            Op::UpdateFile,
            self.inner.update_file_audience(t, a, id, act, p),
        )
        .await
    }
    async fn create_stream_audience(
        &self,
        t: &SecretString,
        a: &str,
        n: &str,
    ) -> Result<Ack<String>, ApiError> {
        self.run(Op::CreateStream, self.inner.create_stream_audience(t, a, n))
            .await
    }
    async fn stream_mapping(
        &self,
        t: &SecretString,
        a: &str,
        id: &str,
        k: KeyKind,
        act: MappingAction,
        d: &[Digest],
    ) -> Result<Ack<()>, ApiError> {
        self.run(Op::Mapping, self.inner.stream_mapping(t, a, id, k, act, d))
            .await
    }
    async fn find_audiences_by_name(
        &self,
        t: &SecretString,
        a: &str,
        n: &str,
    ) -> Result<Ack<Vec<String>>, ApiError> {
        self.run(Op::Find, self.inner.find_audiences_by_name(t, a, n))
            .await
    }
    async fn audience_status(
        &self,
        t: &SecretString,
        a: &str,
        id: &str,
    ) -> Result<Ack<Option<AudienceView>>, ApiError> {
        let not_listed = {
            let script = self.script.lock().expect("lock");
            let n = self.calls(Op::Status);
            script
                .iter()
                .any(|(o, k, a)| *o == Op::Status && *k == n && matches!(a, Some(Act::NotListed)))
        };
        let r = self
            .run(Op::Status, self.inner.audience_status(t, a, id))
            .await;
        if not_listed {
            return r.map(|ack| Ack {
                value: None,
                request_id: ack.request_id,
            });
        }
        r
    }
    fn counters(&self) -> CallCounters {
        self.inner.counters()
    }
}
