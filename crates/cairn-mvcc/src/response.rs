//! Response helpers shared by every request. The state machine fills only the revision of a
//! header; the server adds cluster id, member id and raft term.

use cairn_proto::etcdserverpb::ResponseHeader;

pub(crate) fn header(revision: i64) -> Option<ResponseHeader> {
    Some(ResponseHeader {
        revision,
        ..Default::default()
    })
}
