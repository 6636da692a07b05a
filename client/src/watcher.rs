//! `watcher`: a stream that lists, then watches, and keeps doing so through disconnects,
//! API server restarts and compaction, without losing or repeating an event.
//!
//! The stream is driven by a small state machine:
//!
//! ```text
//! Empty ──list pages──► Listing ──last page──► Connect(rv) ──watch──► Watching(rv)
//!   ▲                                              ▲                      │
//!   └────────── 410 Gone (rv compacted) ───────────┼──────────────────────┤
//!                                                  └── stream ended/broke ┘ (resume from rv)
//! ```
//!
//! A re-list is announced with [`Event::Init`] ... [`Event::InitDone`], so a consumer
//! (such as [`crate::reflector`]) replaces its whole view at once; between re-lists every
//! change arrives exactly once, in order, as [`Event::Apply`] or [`Event::Delete`].

use std::collections::VecDeque;
use std::time::Duration;

use futures::stream::BoxStream;
use futures::{Stream, StreamExt};

use crate::api::{Api, ListParams, WatchEvent, WatchParams};
use crate::backoff::Backoff;
use crate::error::{Error, Result};
use crate::resource::Resource;

/// What a watcher reports.
#[derive(Debug, Clone)]
pub enum Event<K> {
    /// The object was created or changed.
    Apply(K),
    /// The object was deleted (its last state).
    Delete(K),
    /// A (re-)list begins: the objects up to [`Event::InitDone`] are the whole state.
    Init,
    /// An object of the list.
    InitApply(K),
    /// The list is complete; changes follow.
    InitDone,
}

/// How a watcher lists and watches.
#[derive(Debug, Clone)]
pub struct Config {
    /// Only objects whose labels match.
    pub label_selector: Option<String>,
    /// Only objects whose fields match.
    pub field_selector: Option<String>,
    /// Objects per list page (0: one page).
    pub page_size: u32,
    /// Seconds each watch call lasts before the watcher renews it.
    pub watch_timeout: u32,
    /// Back-off between failed attempts.
    pub backoff: Backoff,
    /// Drop `metadata.managedFields` from every object as it arrives. Caches rarely need
    /// them and they are often the largest part of an object in memory (Kubernetes' own
    /// scheduler and controllers strip them from their informers too).
    pub strip_managed_fields: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            label_selector: None,
            field_selector: None,
            page_size: 500,
            watch_timeout: 290,
            backoff: Backoff::default(),
            strip_managed_fields: false,
        }
    }
}

impl Config {
    /// Only objects whose labels match `selector`.
    pub fn labels(mut self, selector: &str) -> Self {
        self.label_selector = Some(selector.into());
        self
    }

    /// Only objects whose fields match `selector`.
    pub fn fields(mut self, selector: &str) -> Self {
        self.field_selector = Some(selector.into());
        self
    }

    /// Drop `metadata.managedFields` from every object.
    pub fn strip_managed_fields(mut self) -> Self {
        self.strip_managed_fields = true;
        self
    }
}

type Raw<K> = BoxStream<'static, Result<WatchEvent<K>>>;

enum State<K> {
    /// Nothing known: list from scratch.
    Empty,
    /// Listing, with the next page's token.
    Listing { continue_token: String },
    /// Listed or disconnected: (re)start the watch from `rv`.
    Connect { rv: String },
    /// Following changes.
    Watching { rv: String, stream: Raw<K> },
}

struct Machine<K: Resource> {
    api: Api<K>,
    config: Config,
    state: State<K>,
    out: VecDeque<Event<K>>,
    backoff: Backoff,
    delay: Option<Duration>,
}

/// Lists and then watches `api`'s objects, forever: resumes from the last resourceVersion
/// after a disconnect, lists again when that version has been compacted (410 Gone), and
/// backs off with jitter between failed attempts. Errors are reported as `Err` items; the
/// stream carries on after them.
pub fn watcher<K: Resource>(
    api: Api<K>,
    config: Config,
) -> impl Stream<Item = Result<Event<K>>> + Send {
    let backoff = config.backoff.clone();
    let m = Machine {
        api,
        config,
        state: State::Empty,
        out: VecDeque::new(),
        backoff,
        delay: None,
    };
    futures::stream::unfold(m, |mut m| async move {
        let item = m.next().await;
        Some((item, m))
    })
}

impl<K: Resource> Machine<K> {
    fn list_params(&self, continue_token: Option<String>) -> ListParams {
        ListParams {
            label_selector: self.config.label_selector.clone(),
            field_selector: self.config.field_selector.clone(),
            limit: self.config.page_size,
            continue_token,
            resource_version: None,
        }
    }

    fn fail(&mut self, e: Error, next: State<K>) -> Result<Event<K>> {
        self.delay = Some(self.backoff.next_delay());
        self.state = next;
        tracing::debug!(resource = self.api.plural(), error = %e, "watcher retrying");
        Err(e)
    }

    async fn next(&mut self) -> Result<Event<K>> {
        loop {
            if let Some(e) = self.out.pop_front() {
                return Ok(e);
            }
            if let Some(d) = self.delay.take() {
                tokio::time::sleep(d).await;
            }
            match std::mem::replace(&mut self.state, State::Empty) {
                State::Empty => {
                    self.state = State::Listing {
                        continue_token: String::new(),
                    };
                    return Ok(Event::Init);
                }
                State::Listing { continue_token } => {
                    let token = Some(continue_token.clone()).filter(|t| !t.is_empty());
                    match self.api.list(&self.list_params(token)).await {
                        Ok(page) => {
                            self.backoff.reset();
                            let strip = self.config.strip_managed_fields;
                            self.out.extend(
                                page.items
                                    .into_iter()
                                    .map(|o| Event::InitApply(trim(o, strip))),
                            );
                            match page.continue_token {
                                Some(t) => self.state = State::Listing { continue_token: t },
                                None => {
                                    self.out.push_back(Event::InitDone);
                                    self.state = State::Connect {
                                        rv: page.resource_version,
                                    };
                                }
                            }
                        }
                        // The continue token's revision was compacted: start over.
                        Err(e) if e.is_gone() => return self.fail(e, State::Empty),
                        Err(e) => return self.fail(e, State::Listing { continue_token }),
                    }
                }
                State::Connect { rv } => {
                    let wp = WatchParams {
                        label_selector: self.config.label_selector.clone(),
                        field_selector: self.config.field_selector.clone(),
                        bookmarks: true,
                        timeout_seconds: Some(self.config.watch_timeout),
                        ..Default::default()
                    };
                    match self.api.watch(&wp, &rv).await {
                        Ok(s) => {
                            self.state = State::Watching {
                                rv,
                                stream: s.boxed(),
                            }
                        }
                        Err(e) if e.is_gone() => return self.fail(e, State::Empty),
                        Err(e) => return self.fail(e, State::Connect { rv }),
                    }
                }
                State::Watching { rv, mut stream } => match stream.next().await {
                    Some(Ok(ev)) => {
                        self.backoff.reset();
                        let strip = self.config.strip_managed_fields;
                        let (rv, out) = match ev {
                            WatchEvent::Added(o) | WatchEvent::Modified(o) => {
                                let rv = version_of(&o).unwrap_or(rv);
                                (rv, Some(Event::Apply(trim(o, strip))))
                            }
                            WatchEvent::Deleted(o) => {
                                let rv = version_of(&o).unwrap_or(rv);
                                (rv, Some(Event::Delete(trim(o, strip))))
                            }
                            WatchEvent::Bookmark {
                                resource_version, ..
                            } => (resource_version, None),
                        };
                        self.state = State::Watching { rv, stream };
                        if let Some(out) = out {
                            return Ok(out);
                        }
                    }
                    Some(Err(e)) if e.is_gone() => return self.fail(e, State::Empty),
                    Some(Err(e)) => return self.fail(e, State::Connect { rv }),
                    // The server ended the watch (its timeout, or it is shutting down):
                    // carry on from where it stopped.
                    None => self.state = State::Connect { rv },
                },
            }
        }
    }
}

/// An object's metadata.resourceVersion.
fn version_of<K: Resource>(o: &K) -> Option<String> {
    o.meta().resource_version.clone()
}

fn trim<K: Resource>(mut o: K, strip_managed_fields: bool) -> K {
    if strip_managed_fields {
        o.meta_mut().managed_fields = None;
    }
    o
}
