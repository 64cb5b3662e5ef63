//! Errors of the test-control API.

use crate::resource::ResourceKind;

/// An error from the test-control API ([`TestServer`](crate::TestServer) methods).
///
/// HTTP clients never see this type: they get `Status` objects, as from a real
/// API server.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Binding the listening socket, or writing a kubeconfig, failed.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),

    /// A value could not be converted to or from JSON.
    #[error("JSON error: {0}")]
    Json(#[from] serde_json::Error),

    /// The object's `apiVersion`/`kind` is not one of the served [`ResourceKind`]s.
    #[error("unsupported resource type: apiVersion {api_version:?}, kind {kind:?}")]
    UnsupportedKind {
        /// The object's `apiVersion`.
        api_version: String,
        /// The object's `kind`.
        kind: String,
    },

    /// The object is not acceptable (no name, not a JSON object, ...); the real
    /// API server would answer `422 Invalid`.
    #[error("invalid {kind} object: {message}")]
    Invalid {
        /// The resource type.
        kind: ResourceKind,
        /// What is wrong.
        message: String,
    },

    /// No object of that type, namespace and name exists.
    #[error("{kind} {namespace}/{name} not found")]
    NotFound {
        /// The resource type.
        kind: ResourceKind,
        /// The namespace (empty for cluster-scoped types).
        namespace: String,
        /// The object name.
        name: String,
    },

    /// A manifest given to [`TestServer::apply_manifest`](crate::TestServer::apply_manifest)
    /// is neither JSON nor YAML.
    #[error("cannot parse manifest: {0}")]
    Manifest(String),

    /// There is no current tokio runtime to start the server on.
    #[error("no current tokio runtime: {0}")]
    NoRuntime(String),

    /// The server's background runtime or accept loop is gone.
    #[error("the test server is shut down")]
    ShutDown,
}
