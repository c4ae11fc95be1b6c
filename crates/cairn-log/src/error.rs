//! Errors of the ordered log. Client-visible ones map to a `logpb::ErrorCode` on the wire.

use cairn_proto::logpb::ErrorCode;

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// The topic is not registered (or not yet mapped by this broker).
    #[error("unknown topic {0:?}")]
    UnknownTopic(String),
    /// A batch header announced more bytes than `BATCH_BYTES_MAX`.
    #[error("batch of {size} bytes is larger than the limit of {max} bytes")]
    BatchTooLarge { size: u32, max: u32 },
    /// A frame or a batch's message framing did not parse.
    #[error("malformed: {0}")]
    Malformed(String),
    /// A topic was asked for an order level this log does not implement (3, 4, >5) or an ack
    /// level it cannot give with that order.
    #[error("{0}")]
    BadOrderLevel(String),
    /// A subscriber asked for a position that is no longer (or not yet) in memory.
    #[error("position {position} is out of range (retained {first}..{end})")]
    OutOfRange { position: u64, first: u64, end: u64 },
    /// The peer broke the protocol (wrong first frame, unexpected frame).
    #[error("protocol: {0}")]
    Protocol(String),
    /// The broker is stopping.
    #[error("broker is shutting down")]
    ShuttingDown,
    /// The broker answered with an error frame.
    #[error("broker error {code:?}: {message}")]
    Remote { code: ErrorCode, message: String },
    /// The shared-memory file exists but is not a topic file of this layout version.
    #[error("shared memory {path}: {reason}")]
    BadShm { path: String, reason: String },
    /// The control plane (Cairn's KV store) failed.
    #[error("control plane: {0}")]
    Control(String),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

impl LogError {
    /// The wire code a broker sends for this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            LogError::UnknownTopic(_) => ErrorCode::UnknownTopic,
            LogError::BatchTooLarge { .. } => ErrorCode::BatchTooLarge,
            LogError::Malformed(_) => ErrorCode::Malformed,
            LogError::BadOrderLevel(_) => ErrorCode::BadOrderLevel,
            LogError::OutOfRange { .. } => ErrorCode::OutOfRange,
            LogError::ShuttingDown => ErrorCode::ShuttingDown,
            LogError::Remote { code, .. } => *code,
            _ => ErrorCode::Protocol,
        }
    }
}

impl From<etcd_client::Error> for LogError {
    fn from(e: etcd_client::Error) -> Self {
        LogError::Control(e.to_string())
    }
}

pub type Result<T, E = LogError> = std::result::Result<T, E>;
