//! What a request says about where it acts: its namespace and its lease.

use molde_api::{DEFAULT_NAMESPACE, LEASE_HEADER, NAMESPACE_HEADER};
use tonic::Request;

use crate::InvalidArgument;

type Result<T> = std::result::Result<T, InvalidArgument>;

/// The namespace and lease a request carries in its gRPC metadata.
#[derive(Debug, Clone)]
pub struct RequestContext {
    pub namespace: String,
    pub lease: Option<String>,
}

impl RequestContext {
    pub fn of<T>(req: &Request<T>) -> Result<Self> {
        let md = req.metadata();
        let namespace = match md.get(NAMESPACE_HEADER) {
            Some(v) => v
                .to_str()
                .map_err(|_| InvalidArgument("namespace header is not text".into()))?
                .to_string(),
            None => DEFAULT_NAMESPACE.to_string(),
        };
        validate_namespace(&namespace)?;
        let lease = md
            .get(LEASE_HEADER)
            .and_then(|v| v.to_str().ok())
            .filter(|s| !s.is_empty())
            .map(str::to_string);
        Ok(Self { namespace, lease })
    }
}

/// Requests to other services in a namespace, under a lease when given
/// (written once, in molde-api's client helpers).
pub use molde_api::client::{namespaced, request};

/// containerd's namespace rule: alphanumeric words joined by single `.`, `_` or `-`,
/// at most 76 characters.
pub fn validate_namespace(ns: &str) -> Result<()> {
    let bad = || {
        InvalidArgument(format!(
            "namespace {ns:?}: must be alphanumeric words joined by '.', '_' or '-', at most 76 characters"
        ))
    };
    if ns.is_empty() || ns.len() > 76 {
        return Err(bad());
    }
    let mut prev_sep = true;
    for c in ns.chars() {
        let sep = matches!(c, '.' | '_' | '-');
        if sep && prev_sep {
            return Err(bad());
        }
        if !sep && !c.is_ascii_alphanumeric() {
            return Err(bad());
        }
        prev_sep = sep;
    }
    if prev_sep {
        return Err(bad());
    }
    Ok(())
}

/// Request metadata of a content.v1 Read (molde's own): with it, a blob
/// that is not committed yet but is being downloaded here is read as the
/// download writes it, up to its end (a cluster node following the node
/// that fetches the blob from the registry).
pub const FOLLOW_INGEST: &str = "molde-follow-ingest";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_carry_their_namespace_or_fail_closed() {
        let r = request("k8s.io", Some("l1"), ());
        assert_eq!(RequestContext::of(&r).unwrap().namespace, "k8s.io");
        assert_eq!(RequestContext::of(&r).unwrap().lease.as_deref(), Some("l1"));
        let bad = namespaced("a\nb", ());
        assert!(RequestContext::of(&bad).is_err(), "never taken as default");
    }

    #[test]
    fn namespace_names() {
        for ok in ["default", "k8s.io", "a-b_c.d", "x1"] {
            assert!(validate_namespace(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-a", "a-", "a..b", "a/b", "A b", &"x".repeat(77)] {
            assert!(validate_namespace(bad).is_err(), "{bad}");
        }
    }
}
