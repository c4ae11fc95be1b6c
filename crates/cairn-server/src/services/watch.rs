//! The Watch service: one task per stream, watchers that pull their events from history.
//!
//! The stream task wakes on a new revision, a client request, the progress ticker or shutdown.
//! On a new revision each watcher reads the events after the last revision it delivered (see
//! `cairn_mvcc::watch`) and sends them; sending waits when the client is slow, and the watcher
//! simply reads further next time, so no event is dropped and no watcher is evicted.

use std::collections::BTreeMap;

use cairn_mvcc::index::KeyRange;
use cairn_mvcc::watch::{WatchFilter, WatchRead};
use cairn_proto::authpb::permission::Type as PermType;
use cairn_proto::cairnpb::AuthInfo;
use cairn_proto::etcdserverpb::watch_create_request::FilterType;
use cairn_proto::etcdserverpb::watch_request::RequestUnion;
use cairn_proto::etcdserverpb::watch_server::Watch;
use cairn_proto::etcdserverpb::{WatchCreateRequest, WatchRequest, WatchResponse};
use cairn_proto::mvccpb::Event;
use prost::Message;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::limits::{WATCH_EVENTS_PER_RESPONSE_MAX, WATCH_RESPONSES_QUEUED_MAX};
use crate::node::{until_stopping, Node};

/// Id etcd uses for responses that belong to no single watcher (progress replies, refusals).
const NO_WATCH_ID: i64 = -1;
/// etcd puts the text of its gRPC permission error in the refused watch's cancel reason.
const PERMISSION_DENIED_REASON: &str =
    "rpc error: code = PermissionDenied desc = etcdserver: permission denied";

pub struct WatchService {
    node: Node,
}

impl WatchService {
    pub fn new(node: Node) -> WatchService {
        WatchService { node }
    }
}

#[tonic::async_trait]
impl Watch for WatchService {
    type WatchStream = ReceiverStream<Result<WatchResponse, Status>>;

    async fn watch(
        &self,
        request: Request<Streaming<WatchRequest>>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let caller = self.node.caller(request.metadata())?;
        let (out, responses) = mpsc::channel(WATCH_RESPONSES_QUEUED_MAX);
        let stream = WatchStream {
            node: self.node.clone(),
            caller,
            watchers: BTreeMap::new(),
            next_id: 0,
            out,
        };
        tokio::spawn(stream.run(request.into_inner()));
        Ok(Response::new(ReceiverStream::new(responses)))
    }
}

struct Watcher {
    filter: WatchFilter,
    /// First revision not yet delivered.
    next_revision: i64,
    progress_notify: bool,
    fragment: bool,
    /// Events were sent since the last periodic progress notification.
    active: bool,
}

/// The client went away (or the node is stopping): end the stream task.
struct Gone;

struct WatchStream {
    node: Node,
    /// Who opened the stream; each watch it creates needs read permission on its range.
    caller: AuthInfo,
    watchers: BTreeMap<i64, Watcher>,
    next_id: i64,
    out: mpsc::Sender<Result<WatchResponse, Status>>,
}

impl WatchStream {
    async fn run(mut self, mut inbound: Streaming<WatchRequest>) {
        let mut revisions = self.node.revisions();
        let mut stopping = self.node.stopping();
        let period = self.node.config().watch_progress_notify_interval;
        let mut progress = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        loop {
            let step = tokio::select! {
                message = inbound.message() => match message {
                    Ok(Some(request)) => self.handle(request).await,
                    _ => Err(Gone),
                },
                changed = revisions.changed() => match changed {
                    Ok(()) => self.sync_all().await,
                    Err(_) => Err(Gone),
                },
                _ = progress.tick() => self.progress_notify().await,
                _ = until_stopping(&mut stopping) => Err(Gone),
            };
            if step.is_err() {
                return;
            }
        }
    }

    async fn send(&self, response: WatchResponse) -> Result<(), Gone> {
        self.out.send(Ok(response)).await.map_err(|_| Gone)
    }

    fn response(&self, watch_id: i64, revision: i64) -> WatchResponse {
        WatchResponse {
            header: Some(self.node.header(revision)),
            watch_id,
            ..Default::default()
        }
    }

    fn current_revision(&self) -> i64 {
        self.node.store().current_revision()
    }

    async fn handle(&mut self, request: WatchRequest) -> Result<(), Gone> {
        match request.request_union {
            Some(RequestUnion::CreateRequest(create)) => self.create(create).await,
            Some(RequestUnion::CancelRequest(cancel)) => {
                if self.watchers.remove(&cancel.watch_id).is_some() {
                    let mut response = self.response(cancel.watch_id, self.current_revision());
                    response.canceled = true;
                    self.send(response).await?;
                }
                Ok(())
            }
            Some(RequestUnion::ProgressRequest(_)) => {
                // Deliver everything pending first, so the reported revision is a true
                // "nothing older is coming" mark for every watcher of the stream.
                self.sync_all().await?;
                self.send(self.response(NO_WATCH_ID, self.current_revision()))
                    .await
            }
            None => Ok(()),
        }
    }

    async fn create(&mut self, create: WatchCreateRequest) -> Result<(), Gone> {
        let current = self.current_revision();
        let range = KeyRange::new(&create.key, &create.range_end);
        let empty_range =
            matches!(&range, KeyRange::Span { start, end: Some(end) } if start >= end);
        let duplicate = create.watch_id != 0 && self.watchers.contains_key(&create.watch_id);
        let permitted = self
            .node
            .store()
            .auth()
            .check_range(
                &self.caller.user,
                &create.key,
                &create.range_end,
                PermType::Read,
            )
            .is_ok();
        let refusal = if !permitted {
            Some(PERMISSION_DENIED_REASON)
        } else if empty_range {
            Some("mvcc: watcher range is empty")
        } else if duplicate {
            Some("mvcc: duplicate watch ID provided on the WatchStream")
        } else {
            None
        };
        if let Some(reason) = refusal {
            let mut response = self.response(NO_WATCH_ID, current);
            response.created = true;
            response.canceled = true;
            response.cancel_reason = reason.into();
            return self.send(response).await;
        }
        let watch_id = match create.watch_id {
            0 => self.allocate_id(),
            requested => requested,
        };
        let filters = create
            .filters
            .iter()
            .filter_map(|f| FilterType::try_from(*f).ok());
        let filters: Vec<FilterType> = filters.collect();
        let watcher = Watcher {
            filter: WatchFilter {
                range,
                no_put: filters.contains(&FilterType::Noput),
                no_delete: filters.contains(&FilterType::Nodelete),
                prev_kv: create.prev_kv,
            },
            next_revision: if create.start_revision > 0 {
                create.start_revision
            } else {
                current + 1
            },
            progress_notify: create.progress_notify,
            fragment: create.fragment,
            active: false,
        };
        let mut response = self.response(watch_id, current);
        response.created = true;
        self.send(response).await?;
        self.watchers.insert(watch_id, watcher);
        self.sync(watch_id).await
    }

    fn allocate_id(&mut self) -> i64 {
        while self.watchers.contains_key(&self.next_id) {
            self.next_id += 1;
        }
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    async fn sync_all(&mut self) -> Result<(), Gone> {
        let ids: Vec<i64> = self.watchers.keys().copied().collect();
        for id in ids {
            self.sync(id).await?;
        }
        Ok(())
    }

    /// Delivers everything watcher `id` has not seen, up to the current revision.
    async fn sync(&mut self, id: i64) -> Result<(), Gone> {
        loop {
            let Some(watcher) = self.watchers.get(&id) else {
                return Ok(());
            };
            let (read, current) = {
                let store = self.node.store();
                let read = store.watch_events(
                    &watcher.filter,
                    watcher.next_revision,
                    WATCH_EVENTS_PER_RESPONSE_MAX,
                );
                (read, store.current_revision())
            };
            match read {
                WatchRead::Compacted { compact_revision } => {
                    self.watchers.remove(&id);
                    let mut response = self.response(id, current);
                    response.compact_revision = compact_revision;
                    response.canceled = true;
                    return self.send(response).await;
                }
                WatchRead::Events {
                    events,
                    next_revision,
                } => {
                    let fragment = watcher.fragment;
                    let had_events = !events.is_empty();
                    if had_events {
                        self.send_events(id, events, next_revision - 1, fragment)
                            .await?;
                    }
                    let watcher = self.watchers.get_mut(&id).expect("present above");
                    watcher.next_revision = next_revision;
                    watcher.active |= had_events;
                    if next_revision > current {
                        return Ok(());
                    }
                }
            }
        }
    }

    /// Sends one revision-complete batch of events, split into fragments when the watcher
    /// asked for it and the response would exceed `--max-request-bytes`.
    async fn send_events(
        &self,
        id: i64,
        events: Vec<Event>,
        revision: i64,
        fragment: bool,
    ) -> Result<(), Gone> {
        let limit = self.node.config().max_request_bytes;
        let mut response = self.response(id, revision);
        response.events = events;
        if !fragment || response.encoded_len() < limit || response.events.len() < 2 {
            return self.send(response).await;
        }
        let mut chunk = self.response(id, revision);
        for event in std::mem::take(&mut response.events) {
            if !chunk.events.is_empty() && chunk.encoded_len() + event.encoded_len() >= limit {
                let mut full = std::mem::replace(&mut chunk, self.response(id, revision));
                full.fragment = true;
                self.send(full).await?;
            }
            chunk.events.push(event);
        }
        self.send(chunk).await
    }

    /// The periodic notification etcd sends to idle watchers that asked for it.
    async fn progress_notify(&mut self) -> Result<(), Gone> {
        let current = self.current_revision();
        let mut idle = Vec::new();
        for (id, watcher) in &mut self.watchers {
            let synced = watcher.next_revision > current;
            if watcher.progress_notify && synced && !watcher.active {
                idle.push(*id);
            }
            watcher.active = false;
        }
        for id in idle {
            self.send(self.response(id, current)).await?;
        }
        Ok(())
    }
}
