//! SDK errors -> `PortError`. Messages carry the service's error code and message, never request payloads.

use audience_core::ports::PortError;
use aws_smithy_types::error::display::DisplayErrorContext;

pub(crate) fn unavailable<E>(service: &'static str, err: E) -> PortError
where
    E: std::error::Error + Send + Sync + 'static,
{
    PortError::Unavailable {
        service,
        message: format!("{}", DisplayErrorContext(err)),
    }
}

pub(crate) fn corrupt(what: impl std::fmt::Display) -> PortError {
    PortError::Corrupt(what.to_string())
}
