//! The SDK's errors: what the server refused (with its Kubernetes `Status`), and what went
//! wrong on the way there.

use serde_json::Value;

/// A `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything an SDK call can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The server answered with an error.
    // Transparent: the server's error is this error, not its cause, so a report of the
    // chain (anyhow's `{:#}`, `Caused by:`) says it once.
    #[error(transparent)]
    Api(#[from] Box<ApiError>),
    /// The kubeconfig could not be read or used.
    #[error("kubeconfig: {0}")]
    Kubeconfig(String),
    /// The in-cluster configuration (a pod's ServiceAccount) could not be read.
    #[error("in-cluster configuration: {0}")]
    InCluster(String),
    /// The connection could not be set up.
    #[error("connecting: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// An object could not be encoded or decoded.
    #[error("{context}: {source}")]
    Json {
        /// What was being encoded or decoded.
        context: String,
        /// Why it failed.
        #[source]
        source: serde_json::Error,
    },
    /// A request was invalid before it was sent.
    #[error("invalid request: {0}")]
    Invalid(String),
}

/// An error the server returned: the gRPC status and, when the server sent one, the
/// Kubernetes `Status` behind it.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message} ({reason}, {grpc_code:?})")]
pub struct ApiError {
    /// The gRPC status code.
    pub grpc_code: tonic::Code,
    /// The HTTP code of the Kubernetes error (404, 409, 410, 422 ...); 0 when the server
    /// sent no Kubernetes status (a transport failure).
    pub code: u16,
    /// The Kubernetes reason: `NotFound`, `AlreadyExists`, `Conflict`, `Invalid`, `Expired`
    /// ... or the gRPC code's name when the server sent no Kubernetes status.
    pub reason: String,
    /// The message.
    pub message: String,
    /// The whole Kubernetes `Status` object, when the server sent one.
    pub status: Option<Value>,
}

impl From<tonic::Status> for Error {
    fn from(s: tonic::Status) -> Self {
        Error::Api(Box::new(ApiError::from(s)))
    }
}

impl From<tonic::Status> for ApiError {
    fn from(s: tonic::Status) -> Self {
        match skiff_proto::v1::Status::from_details(s.details()) {
            Some(k) => ApiError {
                grpc_code: s.code(),
                code: u16::try_from(k.code).unwrap_or(0),
                reason: k.reason,
                message: k.message,
                status: serde_json::from_slice(&k.json).ok(),
            },
            None => ApiError {
                grpc_code: s.code(),
                code: 0,
                reason: format!("{:?}", s.code()),
                message: s.message().to_string(),
                status: None,
            },
        }
    }
}

impl Error {
    /// The server's error, if this is one.
    pub fn api(&self) -> Option<&ApiError> {
        match self {
            Error::Api(a) => Some(a),
            _ => None,
        }
    }

    fn code_is(&self, c: tonic::Code) -> bool {
        self.api().is_some_and(|a| a.grpc_code == c)
    }

    /// The object does not exist.
    pub fn is_not_found(&self) -> bool {
        self.code_is(tonic::Code::NotFound)
    }

    /// A create found the name taken.
    pub fn is_already_exists(&self) -> bool {
        self.code_is(tonic::Code::AlreadyExists)
    }

    /// A write lost a race (stale resourceVersion or failed precondition): read and retry.
    pub fn is_conflict(&self) -> bool {
        self.code_is(tonic::Code::Aborted)
    }

    /// The resourceVersion asked for is too old (410 Gone): list again.
    pub fn is_gone(&self) -> bool {
        self.code_is(tonic::Code::OutOfRange)
    }

    /// The request was invalid (400 or 422).
    pub fn is_invalid(&self) -> bool {
        self.code_is(tonic::Code::InvalidArgument)
    }

    /// The server could not be reached or the connection broke: worth retrying.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Transport(_) => true,
            Error::Api(a) => matches!(
                a.grpc_code,
                tonic::Code::Unavailable
                    | tonic::Code::Unknown
                    | tonic::Code::Cancelled
                    | tonic::Code::DeadlineExceeded
                    | tonic::Code::Internal
                    | tonic::Code::ResourceExhausted
            ),
            _ => false,
        }
    }

    pub(crate) fn json(context: impl Into<String>, source: serde_json::Error) -> Self {
        Error::Json {
            context: context.into(),
            source,
        }
    }
}
