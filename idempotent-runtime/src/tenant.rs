//! Who the tenant of a `scope = "tenant"` request is, and why it could not be found.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use actix_web::http::header::HeaderName;
use actix_web::{HttpMessage, HttpRequest};

type Resolve = Arc<dyn Fn(&HttpRequest) -> Option<String> + Send + Sync>;

/// Where the configured resolver looks for the tenant.
#[derive(Clone)]
pub(crate) enum TenantSource {
    Header(HeaderName),
    Extension { type_name: &'static str, resolve: Resolve },
    Custom(Resolve),
}

impl TenantSource {
    pub(crate) fn header(name: HeaderName) -> Self {
        Self::Header(name)
    }

    pub(crate) fn extension<T, F>(tenant_of: F) -> Self
    where
        T: 'static,
        F: Fn(&T) -> String + Send + Sync + 'static,
    {
        Self::Extension {
            type_name: std::any::type_name::<T>(),
            resolve: Arc::new(move |req| req.extensions().get::<T>().map(&tenant_of)),
        }
    }

    pub(crate) fn custom<F>(resolve: F) -> Self
    where
        F: Fn(&HttpRequest) -> Option<String> + Send + Sync + 'static,
    {
        Self::Custom(Arc::new(resolve))
    }

    fn resolve(&self, req: &HttpRequest, by_middleware: bool) -> Result<String, MissingTenant> {
        let tenant = match self {
            Self::Header(name) => req
                .headers()
                .get(name)
                .and_then(|value| value.to_str().ok())
                .map(str::to_owned)
                .ok_or_else(|| MissingTenant::HeaderAbsent { header: name.clone() })?,
            Self::Extension { type_name, resolve } => resolve(req).ok_or(MissingTenant::ExtensionAbsent {
                extension: type_name,
                by_middleware,
            })?,
            Self::Custom(resolve) => resolve(req).ok_or(MissingTenant::Unresolved)?,
        };
        match tenant.is_empty() {
            true => Err(MissingTenant::Unresolved),
            false => Ok(tenant),
        }
    }
}

/// Why a tenant-scoped request has no tenant: the `reason` of
/// [`IdempotencyError::TenantMissing`](crate::IdempotencyError::TenantMissing).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum MissingTenant {
    /// The app configures no tenant resolver: a mistake of the app, not of the client. Set one
    /// with [`tenant`](crate::IdempotencyBuilder::tenant),
    /// [`tenant_from_header`](crate::IdempotencyBuilder::tenant_from_header) or
    /// [`tenant_from_extension`](crate::IdempotencyBuilder::tenant_from_extension).
    NoResolver,
    /// The header the tenant is read from is absent (or not visible ASCII).
    HeaderAbsent {
        /// That header.
        header: HeaderName,
    },
    /// The request extension the tenant is read from is absent: the authentication that
    /// inserts it did not run before the engine. With `by_middleware`, the likely cause is an
    /// [`IdempotentMiddleware`](crate::IdempotentMiddleware) wrapped *outside* the
    /// authentication middleware (actix-web runs the last `.wrap()` first).
    ExtensionAbsent {
        /// The extension's Rust type.
        extension: &'static str,
        /// Whether the middleware (rather than an annotated handler) looked for it.
        by_middleware: bool,
    },
    /// The app's resolver found no tenant (or an empty one) for this request.
    Unresolved,
}

impl MissingTenant {
    /// What the client is told: the cause, without the app's internals.
    pub(crate) fn detail(&self) -> String {
        match self {
            Self::NoResolver => "this route is tenant-scoped, but the server resolves no tenant: the server's \
                configuration is incomplete"
                .into(),
            Self::HeaderAbsent { header } => format!("the `{header}` header, which identifies the tenant, is missing"),
            Self::ExtensionAbsent { .. } => "the request could not be attributed to a tenant: it was not \
                authenticated before its idempotency key was read"
                .into(),
            Self::Unresolved => "the request could not be attributed to a tenant".into(),
        }
    }

    fn index(&self) -> usize {
        match self {
            Self::NoResolver => 0,
            Self::HeaderAbsent { .. } => 1,
            Self::ExtensionAbsent { .. } => 2,
            Self::Unresolved => 3,
        }
    }

    /// What the operator is told, once: the cause and the fix.
    fn warning(&self) -> String {
        match self {
            Self::NoResolver => "a tenant-scoped route has no tenant resolver: every keyed request to it gets 400 \
                idempotency_tenant_missing; configure one with IdempotencyBuilder::tenant, tenant_from_header \
                or tenant_from_extension"
                .into(),
            Self::HeaderAbsent { header } => {
                format!("a tenant-scoped request arrived without the `{header}` tenant header: answered 400")
            }
            Self::ExtensionAbsent {
                extension,
                by_middleware: true,
            } => format!(
                "a tenant-scoped request reached IdempotentMiddleware without the `{extension}` extension: the \
                 middleware runs before the authentication that inserts it; actix-web runs the last .wrap() \
                 first, so call .wrap(IdempotentMiddleware::..) before .wrap(<authentication>)"
            ),
            Self::ExtensionAbsent { extension, .. } => format!(
                "a tenant-scoped request reached its handler without the `{extension}` extension: the \
                 authentication that inserts it did not run for this route"
            ),
            Self::Unresolved => "the tenant resolver found no tenant for a tenant-scoped request: answered 400".into(),
        }
    }
}

/// The configured resolver, and which of its failures were already logged.
#[derive(Default)]
pub(crate) struct Tenants {
    source: Option<TenantSource>,
    warned: [AtomicBool; 4],
}

impl Tenants {
    pub(crate) fn new(source: Option<TenantSource>) -> Self {
        Self {
            source,
            warned: Default::default(),
        }
    }

    pub(crate) fn is_configured(&self) -> bool {
        self.source.is_some()
    }

    /// The request's tenant; a failure is logged once per kind.
    pub(crate) fn of(&self, req: &HttpRequest, by_middleware: bool) -> Result<String, MissingTenant> {
        let resolved = match &self.source {
            Some(source) => source.resolve(req, by_middleware),
            None => Err(MissingTenant::NoResolver),
        };
        if let Err(missing) = &resolved {
            if !self.warned[missing.index()].swap(true, Ordering::Relaxed) {
                tracing::warn!("{} (logged once)", missing.warning());
            }
        }
        resolved
    }
}
